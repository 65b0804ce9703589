//! Credentials under concurrency (contract §4): sessions bound to the credentials they were
//! made with, compare-and-set password changes, attempts reserved before the check, and
//! growing locks. Races are started together (`tokio::sync::Barrier`) against the real
//! server, and every answer is checked.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Response;
use serde_json::{Value, json};
use tokio::sync::Barrier;
use utoipa_axum::router::OpenApiRouter;

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem};
use crate::identity::{PASSWORD, refresh_cookie, set_hash, unique_email};
use crate::mfa::reset_token;

backend_tests!(
    login_racing_a_password_reset_never_yields_a_working_token,
    logins_racing_a_password_change_never_yield_a_working_token,
    concurrent_password_changes_have_exactly_one_winner,
    concurrent_reset_confirms_have_exactly_one_winner,
    parallel_wrong_passwords_are_checked_at_most_max_failures_times,
    a_right_password_in_flight_never_lifts_a_lock,
    consecutive_locks_grow_up_to_the_maximum_and_the_streak_resets,
);

/// What a login in a race answered: its status and, on 200, its tokens.
struct Answer {
    status: u16,
    code: Option<String>,
    tokens: Option<(String, String)>,
}

async fn answer(r: Response) -> Answer {
    let status = r.status().as_u16();
    let refresh = refresh_cookie(&r);
    let body: Value = r.json().await.unwrap();
    let tokens = (status == 200).then(|| {
        (
            body["accessToken"].as_str().unwrap().to_owned(),
            refresh.expect("a refresh cookie with the access token"),
        )
    });
    Answer {
        status,
        code: body["code"].as_str().map(str::to_owned),
        tokens,
    }
}

/// A login started on its own task, so it can race something else.
fn spawn_login(app: &TestApp, email: &str, password: &str, barrier: Arc<Barrier>) -> Spawned {
    let client = app.client.clone();
    let url = app.url("/api/v1/auth/login");
    let body = json!({"email": email, "password": password});
    tokio::spawn(async move {
        barrier.wait().await;
        answer(client.post(url).json(&body).send().await.unwrap()).await
    })
}

type Spawned = tokio::task::JoinHandle<Answer>;

/// Once a credential change has been answered, no token any racing login got works.
async fn assert_every_token_is_refused(app: &TestApp, logins: Vec<Spawned>) {
    for login in logins {
        let a = login.await.unwrap();
        match (a.status, a.code.as_deref(), a.tokens) {
            (200, _, Some((access, refresh))) => {
                problem(
                    app.get_auth("/api/v1/users/me", &access).await,
                    401,
                    "unauthenticated",
                )
                .await;
                problem(app.refresh(&refresh).await, 401, "unauthenticated").await;
            }
            (401, Some("invalid_credentials"), None) => {}
            (status, code, _) => panic!("unexpected login answer {status} {code:?}"),
        }
    }
}

async fn login_racing_a_password_reset_never_yields_a_working_token(backend: Backend) {
    // One hashing thread, so jobs run in the order they were queued.
    let app = TestApp::spawn_with(
        backend,
        &[("RAMPART_HASH_WORKERS", "1")],
        OpenApiRouter::new(),
    )
    .await;
    for round in 0..3 {
        let email = unique_email("resetrace");
        assert_eq!(app.register(&email, PASSWORD).await.status(), 201);
        // An imported bcrypt hash: the login's check is slow and is followed by a rehash.
        // The reset's own hashing is queued during the check, so it runs (and the reset
        // commits) between the login's check of the old password and its session.
        set_hash(&app, &email, &bcrypt::hash(PASSWORD, 10).unwrap()).await;
        app.post_json(
            "/api/v1/auth/password-reset/request",
            json!({"email": email}),
        )
        .await;
        let token = reset_token(&app.wait_for_mail(round + 1).await[round]);
        let go = Arc::new(Barrier::new(1));
        let login = spawn_login(&app, &email, PASSWORD, go);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = app
            .post_json(
                "/api/v1/auth/password-reset/confirm",
                json!({"token": token, "newPassword": "the new passphrase 12"}),
            )
            .await;
        assert_eq!(r.status(), 204);
        assert_every_token_is_refused(&app, vec![login]).await;
        assert_eq!(
            app.login(&email, "the new passphrase 12").await.status(),
            200
        );
    }
    app.finish().await;
}

async fn logins_racing_a_password_change_never_yield_a_working_token(backend: Backend) {
    const LOGINS: usize = 8;
    // Right passwords racing: lockout is not what this is about.
    let app = TestApp::spawn_with(
        backend,
        &[
            ("RAMPART_HASH_WORKERS", "2"),
            ("RAMPART_LOGIN_MAX_FAILURES", "100"),
        ],
        OpenApiRouter::new(),
    )
    .await;
    for round in 0..3 {
        let s = app.new_session("changerace").await;
        let new = format!("changed passphrase number {round}");
        let barrier = Arc::new(Barrier::new(LOGINS + 1));
        let logins: Vec<Spawned> = (0..LOGINS)
            .map(|_| spawn_login(&app, &s.email, PASSWORD, barrier.clone()))
            .collect();
        barrier.wait().await;
        let r = app
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/password",
                &s.access,
                Some(json!({"currentPassword": PASSWORD, "newPassword": new})),
            )
            .await;
        assert_eq!(r.status(), 204);
        assert_every_token_is_refused(&app, logins).await;
        assert_eq!(app.login(&s.email, &new).await.status(), 200);
    }
    app.finish().await;
}

async fn concurrent_password_changes_have_exactly_one_winner(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("RAMPART_HASH_WORKERS", "2")],
        OpenApiRouter::new(),
    )
    .await;
    for round in 0..3 {
        let a = app.new_session("twochanges").await;
        let b = app.session_for(&a.email, PASSWORD).await;
        let barrier = Arc::new(Barrier::new(2));
        let changes: Vec<_> = [(a.access.clone(), "first"), (b.access.clone(), "second")]
            .into_iter()
            .map(|(access, which)| {
                let client = app.client.clone();
                let url = app.url("/api/v1/auth/password");
                let barrier = barrier.clone();
                let new = format!("the {which} new passphrase {round}");
                tokio::spawn(async move {
                    barrier.wait().await;
                    let r = client
                        .post(url)
                        .bearer_auth(access)
                        .json(&json!({"currentPassword": PASSWORD, "newPassword": new}))
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    let code = if status == 204 {
                        None
                    } else {
                        r.json::<Value>().await.unwrap()["code"]
                            .as_str()
                            .map(str::to_owned)
                    };
                    (status, code, new)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for change in changes {
            match change.await.unwrap() {
                (204, None, new) => winners.push(new),
                (403, Some(code), new) if code == "reauthentication_failed" => losers.push(new),
                (401, Some(code), new) if code == "unauthenticated" => losers.push(new),
                other => panic!("unexpected answer {other:?}"),
            }
        }
        assert_eq!(
            (winners.len(), losers.len()),
            (1, 1),
            "{winners:?} {losers:?}"
        );
        // Only the winner's password works; the old one and the loser's do not.
        assert_eq!(app.login(&a.email, &winners[0]).await.status(), 200);
        for dead in [PASSWORD, losers[0].as_str()] {
            problem(app.login(&a.email, dead).await, 401, "invalid_credentials").await;
        }
        let changed = app
            .audit_events()
            .await
            .iter()
            .filter(|e| e.action == "auth.password_changed")
            .count();
        assert_eq!(changed, round + 1);
    }
    app.finish().await;
}

async fn concurrent_reset_confirms_have_exactly_one_winner(backend: Backend) {
    const CONFIRMS: usize = 4;
    let app = TestApp::spawn_with(
        backend,
        &[("RAMPART_HASH_WORKERS", "2")],
        OpenApiRouter::new(),
    )
    .await;
    let s = app.new_session("tworesets").await;
    app.post_json(
        "/api/v1/auth/password-reset/request",
        json!({"email": s.email}),
    )
    .await;
    let token = reset_token(&app.wait_for_mail(1).await[0]);
    let barrier = Arc::new(Barrier::new(CONFIRMS));
    let confirms: Vec<_> = (0..CONFIRMS)
        .map(|n| {
            let client = app.client.clone();
            let url = app.url("/api/v1/auth/password-reset/confirm");
            let barrier = barrier.clone();
            let body =
                json!({"token": token, "newPassword": format!("reset passphrase number {n}")});
            tokio::spawn(async move {
                barrier.wait().await;
                let r = client.post(url).json(&body).send().await.unwrap();
                let status = r.status().as_u16();
                let field = if status == 204 {
                    None
                } else {
                    r.json::<Value>().await.unwrap()["errors"][0]["field"]
                        .as_str()
                        .map(str::to_owned)
                };
                (n, status, field)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for confirm in confirms {
        match confirm.await.unwrap() {
            (n, 204, None) => winners.push(n),
            (_, 400, Some(field)) if field == "token" => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = format!("reset passphrase number {}", winners[0]);
    assert_eq!(app.login(&s.email, &winner).await.status(), 200);
    for n in (0..CONFIRMS).filter(|n| *n != winners[0]) {
        let loser = format!("reset passphrase number {n}");
        problem(
            app.login(&s.email, &loser).await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    app.finish().await;
}

/// `count` logins for `email` with `password`, started together; their answers.
async fn parallel_logins(app: &TestApp, email: &str, password: &str, count: usize) -> Vec<Answer> {
    let barrier = Arc::new(Barrier::new(count));
    let logins: Vec<Spawned> = (0..count)
        .map(|_| spawn_login(app, email, password, barrier.clone()))
        .collect();
    let mut answers = Vec::new();
    for login in logins {
        answers.push(login.await.unwrap());
    }
    answers
}

async fn parallel_wrong_passwords_are_checked_at_most_max_failures_times(backend: Backend) {
    const ATTEMPTS: usize = 50;
    let app = TestApp::spawn(backend).await;
    let known = unique_email("flood");
    app.register(&known, PASSWORD).await;
    let unknown = unique_email("flood-ghost");
    for email in [&known, &unknown] {
        let answers = parallel_logins(&app, email, "wrong wrong wrong", ATTEMPTS).await;
        let checked = answers
            .iter()
            .filter(|a| a.status == 401 && a.code.as_deref() == Some("invalid_credentials"))
            .count();
        let refused = answers
            .iter()
            .filter(|a| a.status == 429 && a.code.as_deref() == Some("rate_limited"))
            .count();
        assert_eq!((checked, refused), (5, ATTEMPTS - 5), "{email}");
    }
    // Each check is one password verification, audited as one failed login.
    let events = app.audit_events().await;
    let failed = events
        .iter()
        .filter(|e| e.action == "auth.login_failed")
        .count();
    let locks = events.iter().filter(|e| e.action == "auth.lockout").count();
    assert_eq!((failed, locks), (10, 2));
    // Locked for the full RAMPART_LOCKOUT_SECONDS.
    let r = app.login(&known, PASSWORD).await;
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((899..=900).contains(&secs), "{secs}");
    problem(r, 429, "rate_limited").await;
    app.finish().await;
}

async fn a_right_password_in_flight_never_lifts_a_lock(backend: Backend) {
    const WRONG: usize = 12;
    let app = TestApp::spawn(backend).await;
    for _ in 0..3 {
        let email = unique_email("inflight");
        let r = app.register(&email, PASSWORD).await;
        let user_id: uuid::Uuid = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let barrier = Arc::new(Barrier::new(WRONG + 1));
        let mut logins: Vec<Spawned> = (0..WRONG)
            .map(|_| spawn_login(&app, &email, "wrong wrong wrong", barrier.clone()))
            .collect();
        logins.push(spawn_login(&app, &email, PASSWORD, barrier.clone()));
        let mut statuses = Vec::new();
        for login in logins {
            statuses.push(login.await.unwrap().status);
        }
        assert!(
            statuses[..WRONG].iter().all(|s| matches!(s, 401 | 429)),
            "{statuses:?}"
        );
        assert!(matches!(statuses[WRONG], 200 | 429), "{statuses:?}");
        // Whenever the wrong ones locked the email, it is still locked now, however late
        // the right password's success committed: a success never lifts a lock in force.
        let locks = app
            .audit_events()
            .await
            .iter()
            .filter(|e| e.action == "auth.lockout" && e.actor_id == Some(user_id))
            .count();
        if locks > 0 {
            problem(app.login(&email, PASSWORD).await, 429, "rate_limited").await;
        }
    }
    app.finish().await;
}

/// Five wrong passwords for `email`, then the `Retry-After` of the lock they caused.
async fn lock_seconds(app: &TestApp, email: &str) -> u64 {
    for _ in 0..5 {
        problem(
            app.login(email, "wrong wrong wrong").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    let r = app.login(email, PASSWORD).await;
    let secs = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    problem(r, 429, "rate_limited").await;
    secs
}

async fn consecutive_locks_grow_up_to_the_maximum_and_the_streak_resets(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("RAMPART_LOCKOUT_SECONDS", "900"),
            ("RAMPART_LOCKOUT_MAX_SECONDS", "3600"),
        ],
        OpenApiRouter::new(),
    )
    .await;
    let email = unique_email("streak");
    app.register(&email, PASSWORD).await;
    let wait = |secs: u64| {
        app.clock
            .advance(time::Duration::seconds(i64::try_from(secs).unwrap() + 1))
    };
    // Each lock lasts twice the previous, up to the maximum (Retry-After rounds up, and a
    // moment passes between the lock and the next request).
    let mut seen = Vec::new();
    for _ in 0..4 {
        let secs = lock_seconds(&app, &email).await;
        seen.push(secs);
        wait(secs);
    }
    assert_eq!(seen, [900, 1800, 3600, 3600]);
    // A successful login ends the streak: the next lock is back to 900 s.
    assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
    let secs = lock_seconds(&app, &email).await;
    assert_eq!(secs, 900);
    // 24 hours after a lock ended without a new one, the streak restarts too.
    wait(secs);
    let secs = lock_seconds(&app, &email).await;
    assert_eq!(secs, 1800, "still within 24 h of the last lock");
    app.clock.advance(time::Duration::hours(24));
    wait(secs);
    assert_eq!(lock_seconds(&app, &email).await, 900);
    app.finish().await;
}
