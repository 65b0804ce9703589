//! MFA and account recovery (contract §4) over real HTTP, on both stores; time moves with
//! the app's injectable clock, never with sleeps.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem};
use crate::identity::{PASSWORD, Session, refresh_cookie, unique_email};

pub(crate) fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

pub(crate) struct Enrolled {
    pub(crate) session: Session,
    pub(crate) secret: Vec<u8>,
    pub(crate) recovery: Vec<String>,
}

impl TestApp {
    fn now_secs(&self) -> i64 {
        self.state.clock.now().unix_timestamp()
    }

    pub(crate) fn code_now(&self, secret: &[u8]) -> String {
        rampart_core::totp::code_at_step(secret, rampart_core::totp::step_of(self.now_secs()))
    }

    /// Moves to the next 30-second step so a fresh code exists.
    fn next_step(&self) {
        self.clock.advance(time::Duration::seconds(30));
    }

    pub(crate) async fn enrol(&self, tag: &str) -> Enrolled {
        let session = self.new_session(tag).await;
        let r = self
            .call(
                Method::POST,
                "/api/v1/auth/mfa/totp/setup",
                &session.access,
                None,
            )
            .await;
        assert_eq!(r.status(), 200);
        let setup: Value = r.json().await.unwrap();
        let secret = base32_decode(setup["secret"].as_str().unwrap());
        let code = self.code_now(&secret);
        let r = self
            .call(
                Method::POST,
                "/api/v1/auth/mfa/totp/enable",
                &session.access,
                Some(json!({"code": code, "password": PASSWORD})),
            )
            .await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let recovery = body["recoveryCodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        self.next_step();
        Enrolled {
            session,
            secret,
            recovery,
        }
    }

    pub(crate) async fn mfa_token(&self, email: &str, password: &str) -> String {
        let r = self.login(email, password).await;
        assert_eq!(r.status(), 200);
        assert!(
            refresh_cookie(&r).is_none(),
            "no cookie before the second factor"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["mfaRequired"], true);
        assert!(body.get("accessToken").is_none());
        body["mfaToken"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn verify(&self, token: &str, code: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/mfa/verify",
            json!({"mfaToken": token, "code": code}),
        )
        .await
    }

    /// Waits for the background reset work to write its message.
    pub(crate) async fn wait_for_mail(&self, count: usize) -> Vec<String> {
        for _ in 0..100 {
            let mail = self.outbox();
            if mail.len() >= count {
                return mail;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "expected {count} message(s), outbox has {}",
            self.outbox().len()
        );
    }
}

/// The body of an .eml as a mail client shows it (quoted-printable decoded).
fn decoded(mail: &str) -> String {
    let (headers, body) = mail
        .split_once("\r\n\r\n")
        .or_else(|| mail.split_once("\n\n"))
        .unwrap();
    if !headers.contains("quoted-printable") {
        return body.to_owned();
    }
    let joined = body.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 3 <= bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// A reset confirm refused for its token: 400 `validation_failed` with exactly one error,
/// naming `token` (not the password, not the body).
async fn refused_token(r: reqwest::Response) {
    let doc = problem(r, 400, "validation_failed").await;
    assert_eq!(doc["errors"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["errors"][0]["field"], "token", "{doc}");
}

pub(crate) fn reset_token(mail: &str) -> String {
    let body = decoded(mail);
    let start = body.find("reset-password?token=").expect("link") + "reset-password?token=".len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

backend_tests!(
    enrolment_then_login_with_a_second_factor,
    mfa_token_is_single_use_short_lived_and_dies_after_five_wrong_codes,
    wrong_codes_count_towards_lockout,
    recovery_codes_work_once,
    disable_needs_password_and_code,
    a_sealed_secret_moved_to_another_row_does_not_open,
    password_reset_end_to_end,
    password_reset_tokens_expire_and_are_superseded,
    password_reset_does_not_reveal_accounts_and_is_rate_limited,
    password_reset_is_rate_limited_per_client_ip,
    parallel_guesses_cannot_exceed_five_codes_per_token,
    enable_requires_the_password,
    an_mfa_token_dies_with_a_password_change_or_reset,
    parallel_wrong_codes_across_tokens_of_one_email_are_limited,
);

async fn enable_requires_the_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("enablepw").await;
    let r = app
        .call(Method::POST, "/api/v1/auth/mfa/totp/setup", &s.access, None)
        .await;
    let setup: Value = r.json().await.unwrap();
    let secret = base32_decode(setup["secret"].as_str().unwrap());
    let enable = |body: Value| {
        app.call(
            Method::POST,
            "/api/v1/auth/mfa/totp/enable",
            &s.access,
            Some(body),
        )
    };
    // The password is required: a stolen access token alone cannot add a second factor.
    let doc = problem(
        enable(json!({"code": app.code_now(&secret)})).await,
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(doc["errors"][0]["field"], "password");
    // A wrong password is 403 and counts for lockout.
    for _ in 0..5 {
        problem(
            enable(json!({"code": app.code_now(&secret), "password": "not the password"})).await,
            403,
            "reauthentication_failed",
        )
        .await;
    }
    let failed = app
        .audit_events()
        .await
        .iter()
        .filter(|e| e.action == "auth.mfa_failed")
        .count();
    assert_eq!(failed, 5);
    let me: Value = app
        .get_auth("/api/v1/users/me", &s.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["mfaEnabled"], false);
    // Locked now: even the right password gets 429, on this route and at login.
    let r = enable(json!({"code": app.code_now(&secret), "password": PASSWORD})).await;
    problem(r, 429, "rate_limited").await;
    problem(app.login(&s.email, PASSWORD).await, 429, "rate_limited").await;
    app.clock.advance(time::Duration::seconds(901));
    // The lock is over (and the access token expired with the clock jump): with the right
    // password and a current code, MFA goes on.
    let fresh = app.session_for(&s.email, PASSWORD).await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa/totp/setup",
            &fresh.access,
            None,
        )
        .await;
    let setup: Value = r.json().await.unwrap();
    let secret = base32_decode(setup["secret"].as_str().unwrap());
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa/totp/enable",
            &fresh.access,
            Some(json!({"code": app.code_now(&secret), "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status(), 200);
    app.finish().await;
}

async fn an_mfa_token_dies_with_a_password_change_or_reset(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let e = app.enrol("mfadeath").await;
    let email = e.session.email.clone();
    // Issued before a password change: dead after it, even with the right code.
    let before_change = app.mfa_token(&email, PASSWORD).await;
    let changed = "a changed passphrase 77";
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/password",
            &e.session.access,
            Some(json!({"currentPassword": PASSWORD, "newPassword": changed})),
        )
        .await;
    assert_eq!(r.status(), 204);
    problem(
        app.verify(&before_change, &app.code_now(&e.secret)).await,
        401,
        "unauthenticated",
    )
    .await;
    // Issued before a reset: dead after it.
    let before_reset = app.mfa_token(&email, changed).await;
    app.post_json(
        "/api/v1/auth/password-reset/request",
        json!({"email": email}),
    )
    .await;
    let token = reset_token(&app.wait_for_mail(1).await[0]);
    let r = app
        .post_json(
            "/api/v1/auth/password-reset/confirm",
            json!({"token": token, "newPassword": "the reset passphrase 5"}),
        )
        .await;
    assert_eq!(r.status(), 204);
    problem(
        app.verify(&before_reset, &app.code_now(&e.secret)).await,
        401,
        "unauthenticated",
    )
    .await;
    // A token of the new password works.
    let after = app.mfa_token(&email, "the reset passphrase 5").await;
    assert_eq!(
        app.verify(&after, &app.code_now(&e.secret)).await.status(),
        200
    );
    app.finish().await;
}

async fn parallel_wrong_codes_across_tokens_of_one_email_are_limited(backend: Backend) {
    const TOKENS: usize = 4;
    const GUESSES: usize = 20;
    let app = TestApp::spawn(backend).await;
    let e = app.enrol("multitoken").await;
    let mut tokens = Vec::new();
    for _ in 0..TOKENS {
        // A right password gives its lockout slot back: four password steps cost nothing.
        tokens.push(app.mfa_token(&e.session.email, PASSWORD).await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(GUESSES));
    let mut tasks = Vec::new();
    for i in 0..GUESSES {
        let client = app.client.clone();
        let url = app.url("/api/v1/auth/mfa/verify");
        let token = tokens[i % TOKENS].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let r = client
                .post(url)
                .json(&json!({"mfaToken": token, "code": format!("{:06}", 100_000 + i)}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body["code"].as_str().unwrap().to_owned())
        }));
    }
    let mut checked = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            (401, code) if code == "invalid_credentials" => checked += 1,
            (429, code) if code == "rate_limited" => refused += 1,
            // A token that already had its five wrong codes is dead before the lockout
            // is even asked (contract §1 order: the token, then the lockout).
            (401, code) if code == "unauthenticated" => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    // At most RAMPART_LOGIN_MAX_FAILURES (5) codes checked per window for the email,
    // whichever tokens they came with; the rest were refused without a check.
    assert_eq!((checked, refused), (5, GUESSES - 5));
    let failed = app
        .audit_events()
        .await
        .iter()
        .filter(|e| e.action == "auth.mfa_failed")
        .count();
    assert_eq!(failed, 5);
    app.finish().await;
}

async fn parallel_guesses_cannot_exceed_five_codes_per_token(backend: Backend) {
    const GUESSES: usize = 20;
    let app = TestApp::spawn_with(
        backend,
        &[("RAMPART_LOGIN_MAX_FAILURES", "1000")],
        utoipa_axum::router::OpenApiRouter::new(),
    )
    .await;
    let e = app.enrol("parallel").await;
    let token = app.mfa_token(&e.session.email, PASSWORD).await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(GUESSES));
    let mut tasks = Vec::new();
    for i in 0..GUESSES {
        let client = app.client.clone();
        let url = app.url("/api/v1/auth/mfa/verify");
        let token = token.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let r = client
                .post(url)
                .json(&json!({"mfaToken": token, "code": format!("{:06}", 100_000 + i)}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body["code"].as_str().unwrap().to_owned())
        }));
    }
    let mut checked = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            (401, code) if code == "invalid_credentials" => checked += 1,
            // The token is dead once its fifth wrong code is reserved: refused unchecked.
            (401, code) if code == "unauthenticated" => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    // Exactly five codes were checked against the token, whatever the interleaving; the
    // rest were refused without a check.
    assert_eq!((checked, refused), (5, GUESSES - 5));
    let failed = app
        .audit_events()
        .await
        .iter()
        .filter(|e| e.action == "auth.mfa_failed")
        .count();
    assert_eq!(failed, 5, "auth.mfa_failed events for one token");
    app.finish().await;
}

async fn password_reset_is_rate_limited_per_client_ip(backend: Backend) {
    // One message per email per hour, so four requests per client IP per hour.
    let app = TestApp::spawn_with(
        backend,
        &[("RAMPART_RESET_RATE_PER_HOUR", "1")],
        utoipa_axum::router::OpenApiRouter::new(),
    )
    .await;
    for _ in 0..4 {
        let r = app
            .post_json(
                "/api/v1/auth/password-reset/request",
                json!({"email": unique_email("ip")}),
            )
            .await;
        assert_eq!(r.status(), 202);
    }
    let r = app
        .post_json(
            "/api/v1/auth/password-reset/request",
            json!({"email": unique_email("ip")}),
        )
        .await;
    problem(r, 429, "rate_limited").await;
    let r = app
        .post_json(
            "/api/v1/auth/password-reset/confirm",
            json!({"token": "x", "newPassword": "y"}),
        )
        .await;
    problem(r, 429, "rate_limited").await;
    app.finish().await;
}

async fn enrolment_then_login_with_a_second_factor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = unique_email("mfa");
    app.register(&email, PASSWORD).await;
    let first = app.session_for(&email, PASSWORD).await;
    let other = app.session_for(&email, PASSWORD).await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa/totp/setup",
            &first.access,
            None,
        )
        .await;
    let setup: Value = r.json().await.unwrap();
    let uri = setup["otpauthUri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(setup["secret"].as_str().unwrap()));
    let secret = base32_decode(setup["secret"].as_str().unwrap());
    // A wrong code: 400 for `code`, MFA stays off.
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa/totp/enable",
            &first.access,
            Some(json!({"code": "000000", "password": PASSWORD})),
        )
        .await;
    let doc = problem(r, 400, "validation_failed").await;
    assert_eq!(doc["errors"][0]["field"], "code");
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa/totp/enable",
            &first.access,
            Some(json!({"code": app.code_now(&secret), "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let codes: Value = r.json().await.unwrap();
    let codes = codes["recoveryCodes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    for c in codes {
        let c = c.as_str().unwrap();
        assert_eq!(c.len(), 11);
        assert_eq!(&c[5..6], "-");
        assert!(
            c.chars()
                .filter(|c| *c != '-')
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        );
    }
    // Enabling ended the other session, not this one.
    problem(
        app.get_auth("/api/v1/users/me", &other.access).await,
        401,
        "unauthenticated",
    )
    .await;
    let me: Value = app
        .get_auth("/api/v1/users/me", &first.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["mfaEnabled"], true);
    problem(
        app.call(
            Method::POST,
            "/api/v1/auth/mfa/totp/setup",
            &first.access,
            None,
        )
        .await,
        409,
        "conflict",
    )
    .await;
    // The code used to enable cannot log in (replay), the next step's can.
    let used = app.code_now(&secret);
    let token = app.mfa_token(&email, PASSWORD).await;
    problem(app.verify(&token, &used).await, 401, "invalid_credentials").await;
    app.next_step();
    let fresh = app.code_now(&secret);
    let r = app.verify(&token, &fresh).await;
    assert_eq!(r.status(), 200);
    assert!(refresh_cookie(&r).is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(
        app.get_auth("/api/v1/users/me", body["accessToken"].as_str().unwrap())
            .await
            .status(),
        200
    );
    // The same code again, with a new mfaToken, within its window: refused.
    let token = app.mfa_token(&email, PASSWORD).await;
    problem(app.verify(&token, &fresh).await, 401, "invalid_credentials").await;
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e.action == "auth.mfa_enabled"));
    assert!(events.iter().any(|e| e.action == "auth.mfa_failed"));
    app.finish().await;
}

async fn mfa_token_is_single_use_short_lived_and_dies_after_five_wrong_codes(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("RAMPART_LOGIN_MAX_FAILURES", "100")],
        utoipa_axum::router::OpenApiRouter::new(),
    )
    .await;
    let e = app.enrol("tok").await;
    let email = e.session.email.clone();
    problem(
        app.verify("not-a-token", &app.code_now(&e.secret)).await,
        401,
        "unauthenticated",
    )
    .await;
    // Five wrong codes kill the token, even for the right code afterwards.
    let token = app.mfa_token(&email, PASSWORD).await;
    for _ in 0..5 {
        problem(
            app.verify(&token, "123456").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    problem(
        app.verify(&token, &app.code_now(&e.secret)).await,
        401,
        "unauthenticated",
    )
    .await;
    // Single use.
    let token = app.mfa_token(&email, PASSWORD).await;
    assert_eq!(
        app.verify(&token, &app.code_now(&e.secret)).await.status(),
        200
    );
    app.next_step();
    problem(
        app.verify(&token, &app.code_now(&e.secret)).await,
        401,
        "unauthenticated",
    )
    .await;
    // Five minutes.
    let token = app.mfa_token(&email, PASSWORD).await;
    app.clock.advance(time::Duration::seconds(301));
    problem(
        app.verify(&token, &app.code_now(&e.secret)).await,
        401,
        "unauthenticated",
    )
    .await;
    app.finish().await;
}

async fn wrong_codes_count_towards_lockout(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let e = app.enrol("lockmfa").await;
    let email = e.session.email.clone();
    let token = app.mfa_token(&email, PASSWORD).await;
    for _ in 0..5 {
        app.verify(&token, "999999").await;
    }
    // The email is now locked: the password step answers 429.
    problem(app.login(&email, PASSWORD).await, 429, "rate_limited").await;
    app.finish().await;
}

async fn recovery_codes_work_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let e = app.enrol("recovery").await;
    let email = e.session.email.clone();
    let messy = format!("  {} ", e.recovery[0].to_uppercase().replace('-', " - "));
    let token = app.mfa_token(&email, PASSWORD).await;
    assert_eq!(app.verify(&token, &messy).await.status(), 200);
    let token = app.mfa_token(&email, PASSWORD).await;
    problem(
        app.verify(&token, &e.recovery[0]).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(app.verify(&token, &e.recovery[1]).await.status(), 200);
    app.finish().await;
}

async fn disable_needs_password_and_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let e = app.enrol("disable").await;
    let email = e.session.email.clone();
    let other = {
        let token = app.mfa_token(&email, PASSWORD).await;
        let r = app.verify(&token, &e.recovery[0]).await;
        r.json::<Value>().await.unwrap()["accessToken"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let disable = |password: &str, code: String| {
        app.call(
            Method::POST,
            "/api/v1/auth/mfa/totp/disable",
            &e.session.access,
            Some(json!({"password": password, "code": code})),
        )
    };
    problem(
        disable("wrong password!!", app.code_now(&e.secret)).await,
        403,
        "reauthentication_failed",
    )
    .await;
    problem(
        disable(PASSWORD, "000000".into()).await,
        403,
        "reauthentication_failed",
    )
    .await;
    assert_eq!(
        disable(PASSWORD, app.code_now(&e.secret)).await.status(),
        204
    );
    problem(
        app.get_auth("/api/v1/users/me", &other).await,
        401,
        "unauthenticated",
    )
    .await;
    let me: Value = app
        .get_auth("/api/v1/users/me", &e.session.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["mfaEnabled"], false);
    let r = app.login(&email, PASSWORD).await;
    assert!(
        r.json::<Value>()
            .await
            .unwrap()
            .get("accessToken")
            .is_some()
    );
    assert!(
        app.audit_events()
            .await
            .iter()
            .any(|e| e.action == "auth.mfa_disabled")
    );
    app.finish().await;
}

async fn a_sealed_secret_moved_to_another_row_does_not_open(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.enrol("rowa").await;
    let b = app.enrol("rowb").await;
    // An attacker with write access copies A's sealed secret over B's.
    let sql_sqlite = "UPDATE users SET totp_secret = (SELECT totp_secret FROM users WHERE id = $1) WHERE id = $2";
    let a_id = uuid::Uuid::parse_str(&a.session.user_id).unwrap();
    let b_id = uuid::Uuid::parse_str(&b.session.user_id).unwrap();
    match &app.state.db {
        rampart_store::Db::Sqlite(pool) => {
            sqlx::query(sql_sqlite)
                .bind(a_id.to_string())
                .bind(b_id.to_string())
                .execute(pool)
                .await
                .unwrap();
        }
        rampart_store::Db::Postgres(pool) => {
            sqlx::query(sql_sqlite)
                .bind(a_id)
                .bind(b_id)
                .execute(pool)
                .await
                .unwrap();
        }
    }
    // A's codes do not log in as B: the seal is bound to A's row.
    let token = app.mfa_token(&b.session.email, PASSWORD).await;
    problem(
        app.verify(&token, &app.code_now(&a.secret)).await,
        401,
        "invalid_credentials",
    )
    .await;
    // A is unaffected.
    let token = app.mfa_token(&a.session.email, PASSWORD).await;
    assert_eq!(
        app.verify(&token, &app.code_now(&a.secret)).await.status(),
        200
    );
    app.finish().await;
}

async fn password_reset_end_to_end(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let e = app.enrol("reset").await;
    let email = e.session.email.clone();
    // Lock the email first: a completed reset clears the lockout.
    for _ in 0..5 {
        app.login(&email, "wrong wrong wrong").await;
    }
    problem(app.login(&email, PASSWORD).await, 429, "rate_limited").await;
    let r = app
        .post_json(
            "/api/v1/auth/password-reset/request",
            json!({"email": email.to_uppercase()}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let mail = app.wait_for_mail(1).await;
    assert!(
        mail[0].contains(&format!("To: {email}")) || mail[0].contains(&email),
        "{}",
        mail[0]
    );
    assert!(
        decoded(&mail[0]).contains("https://app.example/reset-password?token="),
        "{}",
        mail[0]
    );
    let token = reset_token(&mail[0]);
    assert_eq!(token.len(), 43, "{}", mail[0]);
    // A weak password is refused and does not use the token up.
    let r = app
        .post_json(
            "/api/v1/auth/password-reset/confirm",
            json!({"token": token, "newPassword": "password1234"}),
        )
        .await;
    let doc = problem(r, 400, "validation_failed").await;
    assert_eq!(doc["errors"][0]["field"], "newPassword");
    let new = "a brand new passphrase 31";
    let r = app
        .post_json(
            "/api/v1/auth/password-reset/confirm",
            json!({"token": token, "newPassword": new}),
        )
        .await;
    assert_eq!(r.status(), 204);
    // Every session ended; the old password is dead; lockout cleared; MFA still on.
    problem(
        app.get_auth("/api/v1/users/me", &e.session.access).await,
        401,
        "unauthenticated",
    )
    .await;
    problem(
        app.login(&email, PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    let token_mfa = app.mfa_token(&email, new).await;
    assert_eq!(
        app.verify(&token_mfa, &app.code_now(&e.secret))
            .await
            .status(),
        200
    );
    // The token works once.
    let r = app
        .post_json(
            "/api/v1/auth/password-reset/confirm",
            json!({"token": token, "newPassword": "yet another passphrase 8"}),
        )
        .await;
    refused_token(r).await;
    let events = app.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e.action == "auth.password_reset_requested")
    );
    assert!(
        events
            .iter()
            .any(|e| e.action == "auth.password_reset_completed")
    );
    for e in &events {
        assert!(!format!("{e:?}").contains(&token), "token in audit");
    }
    app.finish().await;
}

async fn password_reset_tokens_expire_and_are_superseded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("expiry").await;
    let request = || {
        app.post_json(
            "/api/v1/auth/password-reset/request",
            json!({"email": s.email}),
        )
    };
    let confirm = |token: String| {
        app.post_json(
            "/api/v1/auth/password-reset/confirm",
            json!({"token": token, "newPassword": "fresh passphrase 4711"}),
        )
    };
    request().await;
    let first = reset_token(&app.wait_for_mail(1).await[0]);
    request().await;
    let second = reset_token(&app.wait_for_mail(2).await[1]);
    refused_token(confirm(first).await).await;
    // 30 minutes.
    app.clock.advance(time::Duration::minutes(31));
    refused_token(confirm(second).await).await;
    // A password change invalidates outstanding tokens.
    request().await;
    let third = reset_token(&app.wait_for_mail(3).await[2]);
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/password",
            &s.access,
            Some(json!({"currentPassword": PASSWORD, "newPassword": "changed passphrase 2"})),
        )
        .await;
    // The access token may have expired with the clock jump; log in again if so.
    if r.status() != 204 {
        let again = app.session_for(&s.email, PASSWORD).await;
        let r = app
            .call(
                Method::POST,
                "/api/v1/auth/password",
                &again.access,
                Some(json!({"currentPassword": PASSWORD, "newPassword": "changed passphrase 2"})),
            )
            .await;
        assert_eq!(r.status(), 204);
    }
    refused_token(confirm(third).await).await;
    app.finish().await;
}

async fn password_reset_does_not_reveal_accounts_and_is_rate_limited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("enum").await;
    let known = app
        .post_json(
            "/api/v1/auth/password-reset/request",
            json!({"email": s.email}),
        )
        .await;
    let unknown = app
        .post_json(
            "/api/v1/auth/password-reset/request",
            json!({"email": unique_email("nobody")}),
        )
        .await;
    assert_eq!(known.status(), 202);
    assert_eq!(unknown.status(), 202);
    assert_eq!(known.text().await.unwrap(), unknown.text().await.unwrap());
    app.wait_for_mail(1).await;
    // At most 5 messages per email per hour: 5 more requests, 4 more messages.
    for _ in 0..5 {
        assert_eq!(
            app.post_json(
                "/api/v1/auth/password-reset/request",
                json!({"email": s.email})
            )
            .await
            .status(),
            202
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.wait_for_mail(5).await.len(), 5);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.outbox().len(), 5, "the sixth request sent nothing");
    // Malformed input is still the contract's 400.
    let r = app
        .post_json("/api/v1/auth/password-reset/request", json!({"email": 5}))
        .await;
    problem(r, 400, "validation_failed").await;
    app.finish().await;
}
