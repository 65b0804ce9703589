//! Barrier-started races over HTTP for every rule that concurrent requests could break
//! (issue 11, item 1a; contract §1, §4, §5). Each rule is one function, run three ways:
//! on one instance on SQLite and on PostgreSQL (`races::one_instance::{sqlite,postgres}`),
//! and on PostgreSQL with the racing requests spread over two instances sharing the
//! database, signing keys and Redis (`races::two_instances::postgres`; it needs
//! `TEST_REDIS_URL` and, like every PostgreSQL test, fails instead of skipping under `CI`).
//! The racing requests are built first, then released together by one
//! `tokio::sync::Barrier`; the i-th goes to instance i mod n. Every answer is held to the
//! contract's exact status and code (and the problem document's shape), and the effect is
//! then asked of the API, on every instance. Races are probabilistic: each runs
//! [`ROUNDS`] rounds.
//!
//! Which test covers which rule. "Here" runs on all three setups; the older tests run on
//! one instance, on both stores.
//!
//! - Lockout, at most `RAMPART_LOGIN_MAX_FAILURES` attempts checked (§4 Lockout): here
//!   `lockout_checks_exactly_max_failures`; older
//!   `credentials::parallel_wrong_passwords_are_checked_at_most_max_failures_times` (an
//!   unknown email too), `credentials::a_right_password_in_flight_never_lifts_a_lock`,
//!   `mfa::parallel_wrong_codes_across_tokens_of_one_email_are_limited` (codes).
//! - Refresh rotation and reuse detection (§4 `/refresh`): here
//!   `refresh_rotation_has_one_winner_and_reuse_ends_the_session`; older
//!   `identity::concurrent_refreshes_have_one_winner` (no barrier, 200 or 401).
//! - Concurrent password changes (§4 credential-bound sessions): here
//!   `password_changes_have_one_winner`; older
//!   `credentials::concurrent_password_changes_have_exactly_one_winner`.
//! - Logins racing a credential change: here
//!   `logins_racing_a_password_change_leave_no_working_token`; older
//!   `credentials::logins_racing_a_password_change_never_yield_a_working_token`,
//!   `credentials::login_racing_a_password_reset_never_yields_a_working_token`.
//! - The last active holder of `roles:assign` (§5): here `last_admin_guard_keeps_one_admin`
//!   (by roles, by disabling, by deleting); older `admin::role_*_racing_the_loss_of_*`
//!   (anti-escalation, not the guard).
//! - A reset token works once (§4 Recovery): here `reset_confirms_have_one_winner`; older
//!   `credentials::concurrent_reset_confirms_have_exactly_one_winner`.
//! - A recovery code works once (§4 MFA): here `recovery_code_verifies_once`.
//! - A TOTP step is accepted once (§4 MFA, RFC 6238 §5.2): here `totp_step_verifies_once`.
//! - An `mfaToken` works once (§4 `/mfa/verify`): here `mfa_token_verifies_once`; older
//!   `mfa::parallel_guesses_cannot_exceed_five_codes_per_token` (wrong codes only).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use utoipa_axum::router::OpenApiRouter;

use crate::harness::{Backend, TestApp, check_problem, problem, redis_url};
use crate::identity::{PASSWORD, Session, refresh_cookie_in, set_hash, unique_email};
use crate::mfa::{Enrolled, reset_token};

/// Expands each `async fn rule(backend: Backend, spread: Spread)` into three tests.
macro_rules! race_tests {
    ($($name:ident),* $(,)?) => {
        mod one_instance {
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        $crate::harness::run($crate::harness::Backend::Sqlite, |backend| {
                            super::super::$name(backend, super::super::Spread::One)
                        })
                        .await;
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        $crate::harness::run($crate::harness::Backend::Postgres, |backend| {
                            super::super::$name(backend, super::super::Spread::One)
                        })
                        .await;
                    }
                )*
            }
        }
        mod two_instances {
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        $crate::harness::run($crate::harness::Backend::Postgres, |backend| {
                            super::super::$name(backend, super::super::Spread::Two)
                        })
                        .await;
                    }
                )*
            }
        }
    };
}

race_tests!(
    lockout_checks_exactly_max_failures,
    refresh_rotation_has_one_winner_and_reuse_ends_the_session,
    password_changes_have_one_winner,
    logins_racing_a_password_change_leave_no_working_token,
    last_admin_guard_keeps_one_admin,
    reset_confirms_have_one_winner,
    recovery_code_verifies_once,
    totp_step_verifies_once,
    mfa_token_verifies_once,
);

/// Rounds of each race.
const ROUNDS: usize = 3;

/// Settings of every race: the per-IP limits would refuse some of the many requests one
/// test makes from one address, and have tests of their own; two hashing threads on two
/// cores, so the hashes of a race run side by side.
const RACE_ENV: &[(&str, &str)] = &[
    ("RAMPART_RATE_LIMIT_PER_MINUTE", "100000"),
    ("RAMPART_RESET_RATE_PER_HOUR", "1000"),
    ("RAMPART_HASH_WORKERS", "2"),
];

/// Right passwords (or codes) racing: lockout is not what the race is about, and its
/// reservations must not turn a racing request into a 429.
const NO_LOCKOUT: (&str, &str) = ("RAMPART_LOGIN_MAX_FAILURES", "100");

/// Where the racing requests of a test go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spread {
    One,
    Two,
}

/// The instances of one deployment: the first owns the database; with two, the second is
/// its `sibling` (same database, keys, Redis prefix) and both use Redis.
struct Cluster {
    apps: Vec<TestApp>,
}

impl Cluster {
    /// `None` (skip) for two instances without `TEST_REDIS_URL` outside CI.
    async fn start(backend: Backend, spread: Spread, env: &[(&str, &str)]) -> Option<Self> {
        let mut all: Vec<(&str, &str)> = RACE_ENV.to_vec();
        all.extend_from_slice(env);
        let apps = match spread {
            Spread::One => vec![TestApp::spawn_with(backend, &all, OpenApiRouter::new()).await],
            Spread::Two => {
                let url = redis_url()?;
                all.push(("REDIS_URL", &url));
                let first = TestApp::spawn_with(backend, &all, OpenApiRouter::new()).await;
                let second = first.sibling(backend, &all).await;
                // Subscribed to invalidations: an ended session is refused on both at once.
                first.until_ready().await;
                second.until_ready().await;
                vec![first, second]
            }
        };
        Some(Self { apps })
    }

    fn first(&self) -> &TestApp {
        &self.apps[0]
    }

    /// The instance the i-th request of a race goes to.
    fn at(&self, i: usize) -> &TestApp {
        &self.apps[i % self.apps.len()]
    }

    /// Sends `count` requests, the i-th built by `build(i, instance i mod n)`, all released
    /// by one barrier once every one is ready; their answers, in order.
    async fn race<F>(&self, count: usize, build: F) -> Vec<Answer>
    where
        F: Fn(usize, &TestApp) -> RequestBuilder,
    {
        self.race_staggered(count, Duration::ZERO, build).await
    }

    /// As [`Cluster::race`], but after the barrier the i-th request waits `i × stagger`: the
    /// requests arrive all through the life of a slower one sent first.
    async fn race_staggered<F>(&self, count: usize, stagger: Duration, build: F) -> Vec<Answer>
    where
        F: Fn(usize, &TestApp) -> RequestBuilder,
    {
        let barrier = Arc::new(Barrier::new(count));
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                let request = build(i, self.at(i));
                let barrier = barrier.clone();
                let wait = stagger * u32::try_from(i).unwrap();
                tokio::spawn(async move {
                    barrier.wait().await;
                    tokio::time::sleep(wait).await;
                    Answer::read(request.send().await.unwrap()).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    }

    /// Moves every instance's clock by `by`: siblings share the first one's clock.
    fn advance(&self, by: time::Duration) {
        for app in &self.apps[1..] {
            assert!(Arc::ptr_eq(&app.clock, &self.first().clock));
        }
        self.first().clock.advance(by);
    }

    /// `TestApp::enrol` on the first instance, which moves the shared clock a TOTP step on.
    async fn enrol(&self, tag: &str) -> Enrolled {
        self.first().enrol(tag).await
    }

    /// Moves every clock to just after the start of the next 30-second TOTP step: no code of
    /// it was accepted yet, and a race started now does not straddle a step boundary.
    fn next_totp_step(&self) {
        const STEP_NS: i128 = 30_000_000_000;
        let now = self.first().state.clock.now().unix_timestamp_nanos();
        let to_next = STEP_NS - now.rem_euclid(STEP_NS) + 50_000_000;
        self.advance(time::Duration::nanoseconds(i64::try_from(to_next).unwrap()));
    }

    async fn finish(self) {
        for app in self.apps.into_iter().rev() {
            app.finish().await;
        }
    }
}

/// One answer of a race, read in full.
struct Answer {
    status: u16,
    headers: HeaderMap,
    /// `Null` for an empty body.
    body: Value,
}

impl Answer {
    async fn read(r: reqwest::Response) -> Self {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {e}: {text}"))
        };
        Self {
            status,
            headers,
            body,
        }
    }

    fn code(&self) -> Option<&str> {
        self.body["code"].as_str()
    }

    /// Status and problem code, for tallies and messages.
    fn outcome(&self) -> (u16, String) {
        (self.status, self.code().unwrap_or_default().to_owned())
    }

    /// Checks it is the problem document of `status` and `code`.
    fn problem(&self, status: u16, code: &str) {
        check_problem(self.status, &self.headers, &self.body, status, code);
    }

    fn access(&self) -> String {
        self.body["accessToken"].as_str().unwrap().to_owned()
    }

    fn refresh(&self) -> String {
        refresh_cookie_in(&self.headers).expect("a refresh cookie with the access token")
    }
}

/// How many answers had each status and code.
fn tally(answers: &[Answer]) -> BTreeMap<(u16, String), usize> {
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts.entry(a.outcome()).or_insert(0) += 1;
    }
    counts
}

/// Exactly one answer has status `won`, and every other is a problem document of one of
/// `lost`; the winner's index.
fn one_winner(answers: &[Answer], won: u16, lost: &[(u16, &str)], round: usize) -> usize {
    let counts = tally(answers);
    let winners: Vec<usize> = (0..answers.len())
        .filter(|i| answers[*i].status == won)
        .collect();
    assert_eq!(winners.len(), 1, "round {round}: {counts:?}");
    for (i, a) in answers.iter().enumerate().filter(|(i, _)| *i != winners[0]) {
        let (status, code) = a.outcome();
        assert!(
            lost.contains(&(status, code.as_str())),
            "round {round}: answer {i} was {status} {code}: {counts:?}"
        );
        a.problem(status, &code);
    }
    winners[0]
}

fn login(at: &TestApp, email: &str, password: &str) -> RequestBuilder {
    at.client
        .post(at.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
}

fn verify(at: &TestApp, mfa_token: &str, code: &str) -> RequestBuilder {
    at.client
        .post(at.url("/api/v1/auth/mfa/verify"))
        .json(&json!({"mfaToken": mfa_token, "code": code}))
}

fn change_password(at: &TestApp, access: &str, new: &str) -> RequestBuilder {
    at.client
        .post(at.url("/api/v1/auth/password"))
        .bearer_auth(access)
        .json(&json!({"currentPassword": PASSWORD, "newPassword": new}))
}

fn user_id_of(registered: &Value) -> uuid::Uuid {
    registered["id"].as_str().unwrap().parse().unwrap()
}

/// Audit events of `action` with `actor` as their actor.
async fn events_by(app: &TestApp, action: &str, actor: &str) -> usize {
    app.audit_events()
        .await
        .iter()
        .filter(|e| {
            e.action == action && e.actor_id.map(|a| a.to_string()).as_deref() == Some(actor)
        })
        .count()
}

/// Every instance refuses the access token and the refresh token: their session is over.
async fn assert_dead(cluster: &Cluster, access: &str, refresh: Option<&str>, what: &str) {
    for (n, app) in cluster.apps.iter().enumerate() {
        let r = app.get_auth("/api/v1/users/me", access).await;
        assert_eq!(r.status(), 401, "{what}: access token on instance {n}");
        problem(r, 401, "unauthenticated").await;
        if let Some(refresh) = refresh {
            let r = app.refresh(refresh).await;
            assert_eq!(r.status(), 401, "{what}: refresh token on instance {n}");
            problem(r, 401, "unauthenticated").await;
        }
    }
}

/// Rule 1, lockout: of parallel wrong passwords for one email, exactly
/// `RAMPART_LOGIN_MAX_FAILURES` are checked (401 `invalid_credentials`), the rest are
/// refused unchecked (429 `rate_limited` with `Retry-After`); then even the right password
/// is refused, on every instance.
async fn lockout_checks_exactly_max_failures(backend: Backend, spread: Spread) {
    const LOGINS: usize = 12;
    const MAX: usize = 5;
    let env = [
        ("RAMPART_LOGIN_MAX_FAILURES", "5"),
        ("RAMPART_LOCKOUT_SECONDS", "900"),
    ];
    let Some(cluster) = Cluster::start(backend, spread, &env).await else {
        return;
    };
    let app = cluster.first();
    for round in 0..ROUNDS {
        let email = unique_email("lockrace");
        let r = app.register(&email, PASSWORD).await;
        assert_eq!(r.status(), 201);
        let user_id = user_id_of(&r.json().await.unwrap()).to_string();
        let answers = cluster
            .race(LOGINS, |_, at| login(at, &email, "wrong wrong wrong"))
            .await;
        let expected = BTreeMap::from([
            ((401, "invalid_credentials".to_owned()), MAX),
            ((429, "rate_limited".to_owned()), LOGINS - MAX),
        ]);
        assert_eq!(tally(&answers), expected, "round {round}");
        for a in &answers {
            let (status, code) = a.outcome();
            a.problem(status, &code);
            if status == 429 {
                // The lock's seconds left, rounded up, from the instant the refused request
                // read the clock, which may be a moment before the lock was recorded.
                let secs: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(secs <= 901, "round {round}: Retry-After {secs}");
            }
        }
        for (n, at) in cluster.apps.iter().enumerate() {
            let r = at.login(&email, PASSWORD).await;
            assert_eq!(
                r.status(),
                429,
                "round {round}: right password on instance {n}"
            );
            problem(r, 429, "rate_limited").await;
        }
        // Each check is one failed login; the fifth locked the email, once.
        assert_eq!(events_by(app, "auth.login_failed", &user_id).await, MAX);
        assert_eq!(events_by(app, "auth.lockout", &user_id).await, 1);
    }
    cluster.finish().await;
}

/// Rule 2, refresh rotation: of parallel refreshes with one refresh token exactly one
/// gets 200; every other presented a token that was (or was being) rotated: 401
/// `unauthenticated`, and that reuse ends the whole session, the winner's new tokens
/// included, on every instance, with one `auth.refresh_reuse_detected`.
async fn refresh_rotation_has_one_winner_and_reuse_ends_the_session(
    backend: Backend,
    spread: Spread,
) {
    const REFRESHES: usize = 8;
    let Some(cluster) = Cluster::start(backend, spread, &[]).await else {
        return;
    };
    for round in 0..ROUNDS {
        let s = cluster.first().new_session("refreshrace").await;
        let answers = cluster
            .race(REFRESHES, |_, at| {
                at.client
                    .post(at.url("/api/v1/auth/refresh"))
                    .header("cookie", format!("{}={}", at.cookie_name(), s.refresh))
            })
            .await;
        let winner = one_winner(&answers, 200, &[(401, "unauthenticated")], round);
        let won = &answers[winner];
        assert_eq!(won.body["user"]["id"], s.user_id.as_str());
        let (access, refresh) = (won.access(), won.refresh());
        assert_ne!(refresh, s.refresh);
        assert_dead(&cluster, &access, Some(&refresh), "the winner's new tokens").await;
        assert_dead(&cluster, &s.access, Some(&s.refresh), "the first tokens").await;
        assert_eq!(
            events_by(cluster.first(), "auth.refresh_reuse_detected", &s.user_id).await,
            1,
            "round {round}"
        );
    }
    cluster.finish().await;
}

/// Rule 3a, concurrent password changes presenting the same current password, each from
/// its own session: exactly one 204; the others 403 `reauthentication_failed`, or 401
/// `unauthenticated` when the winner had already ended their session (contract §4). Only
/// the winner's new password works afterwards, and every session of before is over.
async fn password_changes_have_one_winner(backend: Backend, spread: Spread) {
    const CHANGES: usize = 4;
    let Some(cluster) = Cluster::start(backend, spread, &[]).await else {
        return;
    };
    for round in 0..ROUNDS {
        let first = cluster.first().new_session("changerace").await;
        let mut sessions = vec![first];
        for i in 1..CHANGES {
            let email = sessions[0].email.clone();
            sessions.push(cluster.at(i).session_for(&email, PASSWORD).await);
        }
        let new = |i: usize| format!("changed passphrase {round} number {i}");
        let answers = cluster
            .race(CHANGES, |i, at| {
                change_password(at, &sessions[i].access, &new(i))
            })
            .await;
        let winner = one_winner(
            &answers,
            204,
            &[(403, "reauthentication_failed"), (401, "unauthenticated")],
            round,
        );
        let email = &sessions[0].email;
        for (i, at) in cluster.apps.iter().enumerate() {
            assert_eq!(
                at.login(email, &new(winner)).await.status(),
                200,
                "instance {i}"
            );
        }
        for dead in (0..CHANGES)
            .filter(|i| *i != winner)
            .map(new)
            .chain([PASSWORD.to_owned()])
        {
            problem(
                cluster.first().login(email, &dead).await,
                401,
                "invalid_credentials",
            )
            .await;
        }
        for s in &sessions {
            assert_dead(&cluster, &s.access, Some(&s.refresh), "a session of before").await;
        }
        assert_eq!(
            events_by(
                cluster.first(),
                "auth.password_changed",
                &sessions[0].user_id
            )
            .await,
            1,
            "round {round}"
        );
    }
    cluster.finish().await;
}

/// Rule 3b, logins with the old password racing a password change: each login answers
/// 200 or 401 `invalid_credentials`, and once the change has been answered no token any
/// of them got works, on any instance; the only session left is the one made with the new
/// password.
async fn logins_racing_a_password_change_leave_no_working_token(backend: Backend, spread: Spread) {
    const LOGINS: usize = 12;
    let Some(cluster) = Cluster::start(backend, spread, &[NO_LOCKOUT]).await else {
        return;
    };
    // The password stored at a higher cost than configured (never rehashed, so no write
    // races the change), so that each check takes a while; and the logins staggered over
    // the change's life: then some read the old credentials before the change commits and
    // finish their check after it (on one instance, too: the hashing queue is first come,
    // first served, and the change's new hash waits behind the checks queued before it).
    let slow = rampart_core::passwords::PasswordHasher::new(rampart_core::passwords::HashParams {
        m_kib: 8192,
        t: 2,
        p: 1,
    })
    .unwrap()
    .hash(PASSWORD)
    .unwrap();
    for round in 0..ROUNDS {
        let s = cluster.first().new_session("loginrace").await;
        set_hash(cluster.first(), &s.email, &slow).await;
        let new = format!("changed passphrase number {round}");
        let started = std::time::Instant::now();
        let answers = cluster
            .race_staggered(LOGINS + 1, Duration::from_millis(10), |i, at| {
                if i == 0 {
                    change_password(at, &s.access, &new)
                } else {
                    login(at, &s.email, PASSWORD)
                }
            })
            .await;
        assert_eq!(
            answers[0].status, 204,
            "round {round}: {:?}",
            answers[0].body
        );
        let mut issued = 0;
        for a in &answers[1..] {
            match a.status {
                200 => {
                    issued += 1;
                    assert_dead(&cluster, &a.access(), Some(&a.refresh()), "a racing login").await;
                }
                _ => a.problem(401, "invalid_credentials"),
            }
        }
        eprintln!(
            "{backend:?} {spread:?} round {round}: {issued} logins got (dead) tokens, {:?}",
            started.elapsed()
        );
        assert_dead(
            &cluster,
            &s.access,
            Some(&s.refresh),
            "the changer's session",
        )
        .await;
        let after = cluster.first().session_for(&s.email, &new).await;
        let listed: Value = cluster
            .first()
            .get_auth("/api/v1/auth/sessions", &after.access)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    }
    cluster.finish().await;
}

/// How one administrator takes `roles:assign` from the other.
#[derive(Debug, Clone, Copy)]
enum Demotion {
    Roles,
    Disable,
    Delete,
}

impl Demotion {
    fn request(self, at: &TestApp, by: &Session, target: &str) -> RequestBuilder {
        let (method, path, body) = match self {
            Demotion::Roles => (
                Method::PUT,
                format!("/api/v1/users/{target}/roles"),
                Some(json!({"roles": ["user"]})),
            ),
            Demotion::Disable => (
                Method::PATCH,
                format!("/api/v1/users/{target}"),
                Some(json!({"status": "disabled"})),
            ),
            Demotion::Delete => (Method::DELETE, format!("/api/v1/users/{target}"), None),
        };
        let request = at
            .client
            .request(method, at.url(&path))
            .bearer_auth(&by.access);
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
    }

    fn success(self) -> u16 {
        match self {
            Demotion::Roles | Demotion::Disable => 200,
            Demotion::Delete => 204,
        }
    }

    /// The loser's answer: the guard's 403 `forbidden` (for roles also: it lost
    /// `roles:assign` itself); after a disable or delete, 401 `unauthenticated` when its
    /// request was authenticated after the winner ended its sessions (contract §1 order).
    fn lost(self) -> &'static [(u16, &'static str)] {
        match self {
            Demotion::Roles => &[(403, "forbidden")],
            Demotion::Disable | Demotion::Delete => &[(403, "forbidden"), (401, "unauthenticated")],
        }
    }
}

/// Rule 4, the last-admin guard: with exactly two administrators (the only holders of
/// `roles:assign`), each takes it from the other at the same time (by roles, by
/// disabling, by deleting): exactly one succeeds, the other is refused, and the API
/// still shows exactly one active administrator, the winner, who can still administer.
async fn last_admin_guard_keeps_one_admin(backend: Backend, spread: Spread) {
    let Some(cluster) = Cluster::start(backend, spread, &[]).await else {
        return;
    };
    let mut survivor = cluster.first().admin_session("admin").await;
    for (k, kind) in [Demotion::Roles, Demotion::Disable, Demotion::Delete]
        .into_iter()
        .enumerate()
    {
        for round in 0..ROUNDS {
            let round = k * ROUNDS + round;
            let newcomer = cluster.first().admin_session("newadmin").await;
            let pair = [survivor, newcomer];
            let answers = cluster
                .race(2, |i, at| kind.request(at, &pair[i], &pair[1 - i].user_id))
                .await;
            let winner = one_winner(&answers, kind.success(), kind.lost(), round);
            eprintln!(
                "{backend:?} {spread:?} {kind:?}: loser got {:?}",
                answers[1 - winner].outcome()
            );
            let [a, b] = pair;
            let (won, lost) = if winner == 0 { (a, b) } else { (b, a) };
            for (n, at) in cluster.apps.iter().enumerate() {
                let users: Value = at
                    .get_auth("/api/v1/users?limit=100", &won.access)
                    .await
                    .json()
                    .await
                    .unwrap();
                let admins: Vec<&str> = users["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|u| {
                        u["status"] == "active"
                            && u["roles"].as_array().unwrap().contains(&json!("admin"))
                    })
                    .map(|u| u["id"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    admins,
                    [won.user_id.as_str()],
                    "{kind:?} round {round} instance {n}"
                );
                let loser = at
                    .get_auth(&format!("/api/v1/users/{}", lost.user_id), &won.access)
                    .await;
                match kind {
                    Demotion::Roles => {
                        let view: Value = loser.json().await.unwrap();
                        assert_eq!(view["roles"], json!(["user"]), "{view}");
                    }
                    Demotion::Disable => {
                        let view: Value = loser.json().await.unwrap();
                        assert_eq!(view["status"], "disabled", "{view}");
                    }
                    Demotion::Delete => {
                        problem(loser, 404, "not_found").await;
                    }
                }
            }
            survivor = won;
        }
    }
    cluster.finish().await;
}

/// Rule 5, reset tokens: of parallel confirms of one reset token exactly one gets 204;
/// the others 400 `validation_failed` for `token`. Only the winner's password works
/// after, and the sessions of before are over, on every instance.
async fn reset_confirms_have_one_winner(backend: Backend, spread: Spread) {
    const CONFIRMS: usize = 6;
    let Some(cluster) = Cluster::start(backend, spread, &[NO_LOCKOUT]).await else {
        return;
    };
    let app = cluster.first();
    for round in 0..ROUNDS {
        let s = app.new_session("resetrace").await;
        let r = app
            .post_json(
                "/api/v1/auth/password-reset/request",
                json!({"email": s.email}),
            )
            .await;
        assert_eq!(r.status(), 202);
        let token = reset_token(&app.wait_for_mail(round + 1).await[round]);
        let new = |i: usize| format!("reset passphrase {round} number {i}");
        let answers = cluster
            .race(CONFIRMS, |i, at| {
                at.client
                    .post(at.url("/api/v1/auth/password-reset/confirm"))
                    .json(&json!({"token": token, "newPassword": new(i)}))
            })
            .await;
        let winner = one_winner(&answers, 204, &[(400, "validation_failed")], round);
        for (i, a) in answers.iter().enumerate().filter(|(i, _)| *i != winner) {
            let errors = a.body["errors"].as_array().unwrap();
            assert_eq!(errors.len(), 1, "answer {i}: {}", a.body);
            assert_eq!(errors[0]["field"], "token", "answer {i}: {}", a.body);
        }
        for (n, at) in cluster.apps.iter().enumerate() {
            assert_eq!(
                at.login(&s.email, &new(winner)).await.status(),
                200,
                "instance {n}"
            );
        }
        for dead in (0..CONFIRMS)
            .filter(|i| *i != winner)
            .map(new)
            .chain([PASSWORD.to_owned()])
        {
            problem(app.login(&s.email, &dead).await, 401, "invalid_credentials").await;
        }
        assert_dead(&cluster, &s.access, Some(&s.refresh), "a session of before").await;
    }
    cluster.finish().await;
}

/// `count` `mfaToken`s of one user, from password logins spread over the instances.
async fn mfa_tokens(cluster: &Cluster, email: &str, count: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for i in 0..count {
        tokens.push(cluster.at(i).mfa_token(email, PASSWORD).await);
    }
    tokens
}

/// Rule 6, recovery codes: the same recovery code sent in parallel, each with its own
/// fresh `mfaToken` of the user: exactly one 200; the others 401 `invalid_credentials` (a
/// used code is a wrong code), and their tokens, not used up, still complete a login.
async fn recovery_code_verifies_once(backend: Backend, spread: Spread) {
    const VERIFIES: usize = 6;
    let Some(cluster) = Cluster::start(backend, spread, &[NO_LOCKOUT]).await else {
        return;
    };
    let e = cluster.enrol("recoveryrace").await;
    for round in 0..ROUNDS {
        let tokens = mfa_tokens(&cluster, &e.session.email, VERIFIES).await;
        let code = &e.recovery[2 * round];
        let answers = cluster
            .race(VERIFIES, |i, at| verify(at, &tokens[i], code))
            .await;
        let winner = one_winner(&answers, 200, &[(401, "invalid_credentials")], round);
        assert_eq!(
            answers[winner].body["user"]["id"],
            e.session.user_id.as_str()
        );
        let loser = (winner + 1) % VERIFIES;
        let next = &e.recovery[2 * round + 1];
        assert_eq!(
            cluster
                .at(loser)
                .verify(&tokens[loser], next)
                .await
                .status(),
            200,
            "round {round}: a token that lost the code is still live"
        );
    }
    cluster.finish().await;
}

/// Rule 7, TOTP steps: the same valid TOTP code sent in parallel, each with its own
/// fresh `mfaToken`: exactly one 200, the others 401 `invalid_credentials` (a step is
/// accepted once: RFC 6238 §5.2).
async fn totp_step_verifies_once(backend: Backend, spread: Spread) {
    const VERIFIES: usize = 6;
    let Some(cluster) = Cluster::start(backend, spread, &[NO_LOCKOUT]).await else {
        return;
    };
    let e = cluster.enrol("totprace").await;
    for round in 0..ROUNDS {
        let tokens = mfa_tokens(&cluster, &e.session.email, VERIFIES).await;
        cluster.next_totp_step();
        let code = cluster.first().code_now(&e.secret);
        let answers = cluster
            .race(VERIFIES, |i, at| verify(at, &tokens[i], &code))
            .await;
        let winner = one_winner(&answers, 200, &[(401, "invalid_credentials")], round);
        assert_eq!(
            answers[winner].body["user"]["id"],
            e.session.user_id.as_str()
        );
    }
    cluster.finish().await;
}

/// Rule 8, `mfaToken` single use: one token sent in parallel with different valid codes
/// (the current TOTP code and unused recovery codes, so no answer can be a replayed code):
/// exactly one 200, the others 401 `unauthenticated` (a used token). A code that came
/// with a losing request was not used: it still completes a login.
async fn mfa_token_verifies_once(backend: Backend, spread: Spread) {
    const VERIFIES: usize = 4;
    let Some(cluster) = Cluster::start(backend, spread, &[NO_LOCKOUT]).await else {
        return;
    };
    let e = cluster.enrol("tokenrace").await;
    for round in 0..ROUNDS {
        let token = mfa_tokens(&cluster, &e.session.email, 1).await.remove(0);
        cluster.next_totp_step();
        // Request 0 carries the TOTP code, requests 1.. a recovery code each.
        let codes: Vec<String> = std::iter::once(cluster.first().code_now(&e.secret))
            .chain(
                e.recovery[3 * round..3 * round + VERIFIES - 1]
                    .iter()
                    .cloned(),
            )
            .collect();
        let answers = cluster
            .race(VERIFIES, |i, at| verify(at, &token, &codes[i]))
            .await;
        let winner = one_winner(&answers, 200, &[(401, "unauthenticated")], round);
        assert_eq!(
            answers[winner].body["user"]["id"],
            e.session.user_id.as_str()
        );
        for (i, code) in codes.iter().enumerate().filter(|(i, _)| *i != winner) {
            let fresh = mfa_tokens(&cluster, &e.session.email, 1).await.remove(0);
            let r = cluster.at(i).verify(&fresh, code).await;
            assert_eq!(
                r.status(),
                200,
                "round {round}: the code of losing request {i}"
            );
        }
    }
    cluster.finish().await;
}
