//! Account lifecycle (contract §11) over real HTTP, on both stores: email verification,
//! `RAMPART_REQUIRE_VERIFIED_EMAIL`, email change, self-service deletion and the export.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem};
use crate::identity::{PASSWORD, Session, refresh_cookie, unique_email};

const VERIFY: &str = "/api/v1/auth/email/verify/confirm";
const RESEND: &str = "/api/v1/auth/email/verify/request";
const CHANGE: &str = "/api/v1/users/me/email";
const CHANGE_CONFIRM: &str = "/api/v1/auth/email/change/confirm";
const DELETE_ME: &str = "/api/v1/users/me/delete";
const EXPORT: &str = "/api/v1/users/me/export";

/// The messages to `to` whose subject is `subject`, oldest first, waiting up to 5 s for
/// at least `count` (mail goes out in the background).
async fn mail_to(app: &TestApp, to: &str, subject: &str, count: usize) -> Vec<String> {
    for _ in 0..100 {
        let found: Vec<String> = app
            .all_mail()
            .into_iter()
            .filter(|m| {
                m.contains(&format!("\r\nTo: {to}\r\n"))
                    && m.contains(&format!("\r\nSubject: {subject}\r\n"))
            })
            .collect();
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {count} message(s) {subject:?} to {to}");
}

/// The token of the first `path?token=` link in `mail`.
fn token_in(mail: &str, path: &str) -> String {
    let marker = format!("https://app.example{path}?token=");
    let start = mail.find(&marker).expect("link") + marker.len();
    mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// A message has a text/plain and a text/html part; the link (when given) is in both, the
/// HTML one as an `href`, and the lifetime is stated in both.
fn check_parts(mail: &str, link_path: Option<&str>, lifetime: &str) {
    assert!(mail.contains("multipart/alternative"), "{mail}");
    let plain = mail.find("Content-Type: text/plain").expect("text part");
    let html = mail.find("Content-Type: text/html").expect("html part");
    assert!(plain < html, "plain text comes first");
    let (text_part, html_part) = (&mail[plain..html], &mail[html..]);
    if let Some(path) = link_path {
        let token = token_in(mail, path);
        assert_eq!(token.len(), 43, "{mail}");
        let link = format!("https://app.example{path}?token={token}");
        assert!(text_part.contains(&link), "{text_part}");
        assert!(
            html_part.contains(&format!("href=\"{link}\"")),
            "{html_part}"
        );
        assert!(text_part.contains(lifetime), "{text_part}");
        assert!(html_part.contains(lifetime), "{html_part}");
    } else {
        assert!(!mail.contains("token="), "{mail}");
        assert!(!html_part.contains("href"), "{html_part}");
    }
}

impl TestApp {
    async fn post_auth(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.call(Method::POST, path, token, Some(body)).await
    }

    async fn me(&self, token: &str) -> reqwest::Response {
        self.get_auth("/api/v1/users/me", token).await
    }

    /// The token of the newest verification mail to `email` (the `count`th).
    async fn verify_token(&self, email: &str, count: usize) -> String {
        let mail = mail_to(self, email, "Verify your email address", count).await;
        token_in(&mail[count - 1], "/verify-email")
    }

    /// Asks to move `s` to `new_email` and returns the token of the link mailed there
    /// (the `count`th to that address).
    async fn change_token(&self, s: &Session, new_email: &str, count: usize) -> String {
        let r = self
            .post_auth(
                CHANGE,
                &s.access,
                json!({"newEmail": new_email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status(), 202);
        let mail = mail_to(self, new_email, "Confirm your new email address", count).await;
        token_in(&mail[count - 1], "/confirm-email")
    }
}

async fn refused_token(r: reqwest::Response) {
    let doc = problem(r, 400, "validation_failed").await;
    assert_eq!(doc["errors"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["errors"][0]["field"], "token", "{doc}");
}

backend_tests!(
    registration_mails_a_verification_link_that_works_once,
    only_the_newest_unexpired_verification_token_works,
    resend_is_limited_per_user_and_silent_when_verified,
    require_verified_email_answers_only_after_the_password,
    email_change_moves_the_account_and_ends_other_sessions,
    email_change_confirm_after_the_address_was_taken_is_409,
    older_change_token_after_a_newer_one_is_refused,
    concurrent_confirms_of_one_token_succeed_once,
    change_confirm_racing_a_registration_of_the_address,
    delete_me_needs_the_password_and_ends_every_session,
    the_last_roles_assign_holder_cannot_delete_themselves,
    two_last_admins_deleting_themselves_at_once_leave_one,
    export_has_the_contract_shape_and_no_secret,
    export_is_rate_limited_per_user,
    confirms_and_deletions_raced_across_two_instances,
);

async fn registration_mails_a_verification_link_that_works_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("verify").await;
    let me: Value = app.me(&s.access).await.json().await.unwrap();
    assert_eq!(me["emailVerified"], false);
    let mail = mail_to(&app, &s.email, "Verify your email address", 1).await;
    check_parts(&mail[0], Some("/verify-email"), "1 day");
    let token = token_in(&mail[0], "/verify-email");
    // Stored only as a digest.
    let stored: i64 = match &app.state.db {
        rampart_store::Db::Sqlite(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM user_tokens WHERE token_hash = $1")
                .bind(&token)
                .fetch_one(pool)
                .await
                .unwrap()
        }
        rampart_store::Db::Postgres(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM user_tokens WHERE token_hash = $1")
                .bind(&token)
                .fetch_one(pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(stored, 0);
    let r = app.post_json(VERIFY, json!({"token": token})).await;
    assert_eq!(r.status(), 204);
    let me: Value = app.me(&s.access).await.json().await.unwrap();
    assert_eq!(me["emailVerified"], true);
    // Used twice.
    refused_token(app.post_json(VERIFY, json!({"token": token})).await).await;
    // Malformed and unknown tokens get the same answer.
    for bad in ["", "x", &"A".repeat(43), &format!("{token}A"), "../../etc"] {
        refused_token(app.post_json(VERIFY, json!({"token": bad})).await).await;
    }
    let events = app.audit_events().await;
    let verified: Vec<_> = events
        .iter()
        .filter(|e| e.action == "auth.email_verified")
        .collect();
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0].actor_id.map(|a| a.to_string()), Some(s.user_id));
    app.finish().await;
}

async fn only_the_newest_unexpired_verification_token_works(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("newest").await;
    let first = app.verify_token(&s.email, 1).await;
    let r = app.post_auth(RESEND, &s.access, json!({})).await;
    assert_eq!(r.status(), 202);
    let second = app.verify_token(&s.email, 2).await;
    assert_ne!(first, second);
    // The older token after a newer one.
    refused_token(app.post_json(VERIFY, json!({"token": first})).await).await;
    // Expired: RAMPART_EMAIL_TOKEN_TTL defaults to 24 hours.
    app.clock.advance(time::Duration::hours(24));
    refused_token(app.post_json(VERIFY, json!({"token": second})).await).await;
    let s = app.session_for(&s.email, PASSWORD).await;
    let r = app.post_auth(RESEND, &s.access, json!({})).await;
    assert_eq!(r.status(), 202);
    let third = app.verify_token(&s.email, 3).await;
    app.clock.advance(time::Duration::hours(23));
    assert_eq!(
        app.post_json(VERIFY, json!({"token": third}))
            .await
            .status(),
        204
    );
    // The body is `{}` and nothing else.
    let s = app.session_for(&s.email, PASSWORD).await;
    let r = app.post_auth(RESEND, &s.access, json!({"x": 1})).await;
    problem(r, 400, "validation_failed").await;
    app.finish().await;
}

async fn resend_is_limited_per_user_and_silent_when_verified(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("RAMPART_RESET_RATE_PER_HOUR", "2")],
        Default::default(),
    )
    .await;
    let s = app.new_session("resend").await;
    mail_to(&app, &s.email, "Verify your email address", 1).await;
    for _ in 0..4 {
        let r = app.post_auth(RESEND, &s.access, json!({})).await;
        assert_eq!(r.status(), 202);
    }
    let mail = mail_to(&app, &s.email, "Verify your email address", 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = mail_to(&app, &s.email, "Verify your email address", 3).await;
    assert_eq!(
        all.len(),
        3,
        "registration + 2 resends, the rest refused silently"
    );
    // An hour later the budget is back; once verified, a resend mails nothing.
    app.clock.advance(time::Duration::minutes(61));
    let s = app.session_for(&s.email, PASSWORD).await;
    let token = token_in(&mail[2], "/verify-email");
    assert_eq!(
        app.post_json(VERIFY, json!({"token": token}))
            .await
            .status(),
        204
    );
    let r = app.post_auth(RESEND, &s.access, json!({})).await;
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mail_to(&app, &s.email, "Verify your email address", 3)
            .await
            .len(),
        3
    );
    // Unauthenticated: 401.
    let r = app.post_json(RESEND, json!({})).await;
    problem(r, 401, "unauthenticated").await;
    app.finish().await;
}

async fn require_verified_email_answers_only_after_the_password(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("RAMPART_REQUIRE_VERIFIED_EMAIL", "true")],
        Default::default(),
    )
    .await;
    let email = unique_email("required");
    assert_eq!(app.register(&email, PASSWORD).await.status(), 201);
    // A wrong password stays 401 invalid_credentials.
    let r = app.login(&email, "not the password at all").await;
    problem(r, 401, "invalid_credentials").await;
    // An unknown email too.
    let r = app.login(&unique_email("nobody"), PASSWORD).await;
    problem(r, 401, "invalid_credentials").await;
    // The right one: 403 email_unverified, no tokens, no cookie.
    let r = app.login(&email, PASSWORD).await;
    assert!(refresh_cookie(&r).is_none());
    let doc = problem(r, 403, "email_unverified").await;
    assert!(doc.get("accessToken").is_none(), "{doc}");
    // The right password does not count towards lockout: more than 5 in a row still 403.
    for _ in 0..6 {
        let r = app.login(&email, PASSWORD).await;
        problem(r, 403, "email_unverified").await;
    }
    let token = app.verify_token(&email, 1).await;
    assert_eq!(
        app.post_json(VERIFY, json!({"token": token}))
            .await
            .status(),
        204
    );
    let s = app.session_for(&email, PASSWORD).await;
    assert_eq!(app.me(&s.access).await.status(), 200);
    app.finish().await;
}

async fn email_change_moves_the_account_and_ends_other_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.new_session("mover").await;
    let b = app.session_for(&a.email, PASSWORD).await;
    let new_email = unique_email("moved");
    // A wrong password: 403 reauthentication_failed, counted for lockout.
    let r = app
        .post_auth(
            CHANGE,
            &a.access,
            json!({"newEmail": new_email, "password": "not the password at all"}),
        )
        .await;
    problem(r, 403, "reauthentication_failed").await;
    // A malformed address: 400 for newEmail.
    let r = app
        .post_auth(
            CHANGE,
            &a.access,
            json!({"newEmail": "no-at-sign", "password": PASSWORD}),
        )
        .await;
    let doc = problem(r, 400, "validation_failed").await;
    assert_eq!(doc["errors"][0]["field"], "newEmail");
    let token = app.change_token(&a, &new_email, 1).await;
    let link = mail_to(&app, &new_email, "Confirm your new email address", 1).await;
    check_parts(&link[0], Some("/confirm-email"), "1 day");
    let notice = mail_to(&app, &a.email, "Your email address is being changed", 1).await;
    check_parts(&notice[0], None, "");
    assert!(!notice[0].contains(&token));
    assert!(
        !notice[0].contains(&new_email),
        "the notice masks the new address"
    );
    // Nothing changes before the confirm.
    assert_eq!(app.me(&b.access).await.status(), 200);
    let r = app.post_json(CHANGE_CONFIRM, json!({"token": token})).await;
    assert_eq!(r.status(), 204);
    // Every other session ends at once: its access token and its refresh token.
    let r = app.me(&b.access).await;
    problem(r, 401, "unauthenticated").await;
    assert_eq!(app.refresh(&b.refresh).await.status(), 401);
    // The session that asked stays.
    let me: Value = app.me(&a.access).await.json().await.unwrap();
    assert_eq!(me["email"], new_email.as_str());
    assert_eq!(me["emailVerified"], true);
    // The old address no longer logs in; the new one does.
    problem(
        app.login(&a.email, PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    app.session_for(&new_email, PASSWORD).await;
    // Used twice.
    refused_token(app.post_json(CHANGE_CONFIRM, json!({"token": token})).await).await;
    // A verification token is not a change token and the other way round.
    refused_token(app.post_json(VERIFY, json!({"token": token})).await).await;
    let events = app.audit_events().await;
    let changed: Vec<_> = events
        .iter()
        .filter(|e| e.action == "user.email_changed")
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(
        changed[0].actor_id.map(|a| a.to_string()),
        Some(a.user_id.clone())
    );
    for e in &events {
        let text = format!(
            "{:?} {}",
            e.details,
            e.target_id.clone().unwrap_or_default()
        );
        if e.action.starts_with("user.email") {
            assert!(!text.contains(&new_email), "{text}");
            assert!(!text.contains(&a.email), "{text}");
        }
    }
    assert!(
        events
            .iter()
            .any(|e| e.action == "user.email_change_failed")
    );
    app.finish().await;
}

async fn email_change_confirm_after_the_address_was_taken_is_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.new_session("taker").await;
    let wanted = unique_email("wanted");
    let token = app.change_token(&a, &wanted, 1).await;
    assert_eq!(app.register(&wanted, PASSWORD).await.status(), 201);
    let r = app.post_json(CHANGE_CONFIRM, json!({"token": token})).await;
    problem(r, 409, "conflict").await;
    let me: Value = app.me(&a.access).await.json().await.unwrap();
    assert_eq!(me["email"], a.email.as_str());
    // Asking for an address that is already taken answers 202 like any other.
    let taken = unique_email("taken");
    assert_eq!(app.register(&taken, PASSWORD).await.status(), 201);
    let token = app.change_token(&a, &taken, 1).await;
    let r = app.post_json(CHANGE_CONFIRM, json!({"token": token})).await;
    problem(r, 409, "conflict").await;
    app.finish().await;
}

async fn older_change_token_after_a_newer_one_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.new_session("twice").await;
    let first_address = unique_email("first");
    let second_address = unique_email("second");
    let first = app.change_token(&a, &first_address, 1).await;
    let second = app.change_token(&a, &second_address, 1).await;
    refused_token(app.post_json(CHANGE_CONFIRM, json!({"token": first})).await).await;
    // Expired.
    app.clock.advance(time::Duration::hours(25));
    refused_token(
        app.post_json(CHANGE_CONFIRM, json!({"token": second}))
            .await,
    )
    .await;
    let a = app.session_for(&a.email, PASSWORD).await;
    let me: Value = app.me(&a.access).await.json().await.unwrap();
    assert_eq!(me["email"], a.email.as_str());
    app.finish().await;
}

async fn concurrent_confirms_of_one_token_succeed_once(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let a = app.new_session("race").await;
    let new_email = unique_email("raced");
    let token = app.change_token(&a, &new_email, 1).await;
    let verify = app.verify_token(&a.email, 1).await;
    for (path, token) in [(CHANGE_CONFIRM, token), (VERIFY, verify)] {
        let codes = confirm_race(&[&app], path, &token).await;
        // The verification token was sent to the old address: once the change committed it
        // is dead, so the verify race has no winner; the change race has exactly one.
        let expected = if path == CHANGE_CONFIRM {
            vec![204, 400, 400, 400]
        } else {
            vec![400, 400, 400, 400]
        };
        assert_eq!(codes, expected, "{path}");
    }
    let events = app.audit_events().await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.action == "user.email_changed")
            .count(),
        1
    );
    Arc::into_inner(app).unwrap().finish().await;
}

async fn change_confirm_racing_a_registration_of_the_address(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    for round in 0..3 {
        let a = app.new_session(&format!("racer{round}")).await;
        let contested = unique_email("contested");
        let token = app.change_token(&a, &contested, 1).await;
        let barrier = Arc::new(Barrier::new(2));
        let confirm = {
            let (app, barrier, token) = (app.clone(), barrier.clone(), token.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                app.post_json(CHANGE_CONFIRM, json!({"token": token}))
                    .await
                    .status()
                    .as_u16()
            })
        };
        let register = {
            let (app, barrier, contested) = (app.clone(), barrier.clone(), contested.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                app.register(&contested, PASSWORD).await.status().as_u16()
            })
        };
        let (confirm, register) = (confirm.await.unwrap(), register.await.unwrap());
        assert!(
            matches!((confirm, register), (204, 409) | (409, 201)),
            "confirm {confirm}, register {register}"
        );
        // Exactly one account holds the address.
        let holder = rampart_store::users::find_by_email(&app.state.db, &contested)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(holder.id.to_string() == a.user_id, confirm == 204);
    }
    Arc::into_inner(app).unwrap().finish().await;
}

async fn delete_me_needs_the_password_and_ends_every_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.new_session("leaver").await;
    let b = app.session_for(&a.email, PASSWORD).await;
    let r = app
        .post_auth(
            DELETE_ME,
            &a.access,
            json!({"password": "not the password at all"}),
        )
        .await;
    problem(r, 403, "reauthentication_failed").await;
    assert_eq!(app.me(&a.access).await.status(), 200);
    let r = app
        .post_auth(DELETE_ME, &a.access, json!({"password": PASSWORD, "x": 1}))
        .await;
    problem(r, 400, "validation_failed").await;
    let r = app
        .post_auth(DELETE_ME, &a.access, json!({"password": PASSWORD}))
        .await;
    assert_eq!(r.status(), 204);
    for s in [&a, &b] {
        problem(app.me(&s.access).await, 401, "unauthenticated").await;
        assert_eq!(app.refresh(&s.refresh).await.status(), 401);
    }
    problem(
        app.login(&a.email, PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    // Soft delete: the row stays, the address stays taken.
    assert_eq!(app.register(&a.email, PASSWORD).await.status(), 409);
    let events = app.audit_events().await;
    let deleted: Vec<_> = events
        .iter()
        .filter(|e| e.action == "user.deleted")
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        deleted[0].actor_id.map(|x| x.to_string()),
        Some(a.user_id.clone())
    );
    assert_eq!(deleted[0].target_id.as_deref(), Some(a.user_id.as_str()));
    app.finish().await;
}

async fn the_last_roles_assign_holder_cannot_delete_themselves(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("soleadmin").await;
    let r = app
        .post_auth(DELETE_ME, &admin.access, json!({"password": PASSWORD}))
        .await;
    problem(r, 403, "forbidden").await;
    assert_eq!(app.me(&admin.access).await.status(), 200);
    // With a second holder, the first may go.
    let other = app.admin_session("secondadmin").await;
    let r = app
        .post_auth(DELETE_ME, &admin.access, json!({"password": PASSWORD}))
        .await;
    assert_eq!(r.status(), 204);
    let r = app
        .post_auth(DELETE_ME, &other.access, json!({"password": PASSWORD}))
        .await;
    problem(r, 403, "forbidden").await;
    app.finish().await;
}

async fn two_last_admins_deleting_themselves_at_once_leave_one(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let first = app.admin_session("twin1").await;
    let second = app.admin_session("twin2").await;
    self_deletions_race(&app, &app, &first, &second).await;
    Arc::into_inner(app).unwrap().finish().await;
}

/// `first` deletes itself on `a` and `second` on `b`, barrier-started: exactly one wins
/// (204, the other 403) and exactly one session lives on. Each is asked on the instance
/// that served its deletion (another instance's liveness cache may hold a session up to its
/// bound without Redis: `revocation` tests that).
async fn self_deletions_race(
    a: &Arc<TestApp>,
    b: &Arc<TestApp>,
    first: &Session,
    second: &Session,
) {
    let barrier = Arc::new(Barrier::new(2));
    let mut tasks = Vec::new();
    for (app, token) in [
        (a.clone(), first.access.clone()),
        (b.clone(), second.access.clone()),
    ] {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            app.post_auth(DELETE_ME, &token, json!({"password": PASSWORD}))
                .await
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    codes.sort_unstable();
    assert_eq!(codes, vec![204, 403]);
    let alive = [
        a.me(&first.access).await.status().as_u16(),
        b.me(&second.access).await.status().as_u16(),
    ];
    assert_eq!(alive.iter().filter(|s| **s == 200).count(), 1, "{alive:?}");
}

async fn export_has_the_contract_shape_and_no_secret(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let enrolled = app.enrol("exporter").await;
    let s = &enrolled.session;
    let r = app
        .post_auth(
            "/api/v1/notes",
            &s.access,
            json!({"title": "mine", "body": "<p>hello</p>"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let other = app.new_session("stranger").await;
    let r = app
        .post_auth(
            "/api/v1/notes",
            &other.access,
            json!({"title": "theirs", "body": "<p>no</p>"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let verify = app.verify_token(&s.email, 1).await;
    let change = app.change_token(s, &unique_email("pending"), 1).await;
    let r = app.get_auth(EXPORT, &s.access).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "auditEvents",
            "bookmarks",
            "exportedAt",
            "notes",
            "passkeys",
            "sessions",
            "user"
        ]
    );
    assert_eq!(body["user"]["id"], s.user_id.as_str());
    assert_eq!(body["user"]["mfaEnabled"], true);
    assert_eq!(body["user"]["emailVerified"], false);
    assert_eq!(body["passkeys"], json!([]));
    let notes = body["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["title"], "mine");
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["current"], true);
    let events = body["auditEvents"].as_array().unwrap();
    for action in [
        "auth.register",
        "auth.login_succeeded",
        "auth.mfa_enabled",
        "note.created",
    ] {
        assert!(
            events.iter().any(|e| e["action"] == action),
            "{action} missing"
        );
    }
    assert!(
        events
            .iter()
            .all(|e| e["actorId"] == s.user_id.as_str() || e["targetId"] == s.user_id.as_str()),
        "only events about the caller"
    );
    // No secret of any kind: the password, the tokens, the hashes, the TOTP secret and
    // recovery codes, the other user's data.
    let credentials = rampart_store::users::find_credentials(&app.state.db, &s.email)
        .await
        .unwrap()
        .unwrap();
    let hash = credentials.password_hash.expose().clone();
    let secret_b32 = base32(&enrolled.secret);
    let mut secrets = vec![
        PASSWORD.to_owned(),
        s.access.clone(),
        s.refresh.clone(),
        hash.clone(),
        hash.split('$').next_back().unwrap().to_owned(),
        verify.clone(),
        rampart_core::tokens::hash_token(&verify),
        change.clone(),
        rampart_core::tokens::hash_token(&change),
        rampart_core::tokens::hash_token(&s.refresh),
        secret_b32.clone(),
        secret_b32.to_lowercase(),
        other.email.clone(),
        "theirs".to_owned(),
    ];
    secrets.extend(enrolled.recovery.iter().cloned());
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "export leaks {secret}");
    }
    for forbidden in [
        "passwordHash",
        "password_hash",
        "tokenHash",
        "secret",
        "\"token\"",
    ] {
        assert!(!text.contains(forbidden), "export names {forbidden}");
    }
    // An unknown query parameter is 400; no token is 401.
    problem(
        app.get_auth(&format!("{EXPORT}?x=1"), &s.access).await,
        400,
        "validation_failed",
    )
    .await;
    problem(app.get(EXPORT).await, 401, "unauthenticated").await;
    app.finish().await;
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

async fn export_is_rate_limited_per_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.new_session("greedy").await;
    let b = app.new_session("patient").await;
    for _ in 0..5 {
        assert_eq!(app.get_auth(EXPORT, &a.access).await.status(), 200);
    }
    let r = app.get_auth(EXPORT, &a.access).await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    problem(r, 429, "rate_limited").await;
    // Per user: another user is not affected; an hour later the budget is back.
    assert_eq!(app.get_auth(EXPORT, &b.access).await.status(), 200);
    app.clock.advance(time::Duration::minutes(61));
    let a = app.session_for(&a.email, PASSWORD).await;
    assert_eq!(app.get_auth(EXPORT, &a.access).await.status(), 200);
    app.finish().await;
}

/// The same races as above, split across two instances of one deployment (shared
/// database, keys and data key): one change token confirmed four times at once, two on
/// each instance, changes the email once; the two last `roles:assign` holders deleting
/// themselves at once, one on each instance, leave exactly one.
async fn confirms_and_deletions_raced_across_two_instances(backend: Backend) {
    let a = Arc::new(TestApp::spawn(backend).await);
    let b = Arc::new(a.sibling(backend, &[]).await);
    b.until_ready().await;
    let s = a.new_session("twoinst").await;
    let token = a.change_token(&s, &unique_email("twoinst-new"), 1).await;
    let codes = confirm_race(&[&a, &b], CHANGE_CONFIRM, &token).await;
    assert_eq!(codes, vec![204, 400, 400, 400]);
    let changed = a
        .audit_events()
        .await
        .iter()
        .filter(|e| e.action == "user.email_changed")
        .count();
    assert_eq!(changed, 1);

    let first = a.admin_session("twin-a").await;
    let second = a.admin_session("twin-b").await;
    self_deletions_race(&a, &b, &first, &second).await;
    Arc::into_inner(b).unwrap().finish().await;
    Arc::into_inner(a).unwrap().finish().await;
}

/// `token` posted to `path` four times at once, round-robin over `apps`; the statuses,
/// sorted.
async fn confirm_race(apps: &[&Arc<TestApp>], path: &'static str, token: &str) -> Vec<u16> {
    let barrier = Arc::new(Barrier::new(4));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let app = apps[i % apps.len()].clone();
        let (barrier, token) = (barrier.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            app.post_json(path, json!({"token": token}))
                .await
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    codes.sort_unstable();
    codes
}
