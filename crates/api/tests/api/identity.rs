//! Identity and sessions (contract §4, §5 `/me`) over real HTTP, on both stores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Response;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem};

pub const PASSWORD: &str = "correct horse battery staple 42";

/// A registered, logged-in user as a client holds it.
pub struct Session {
    pub email: String,
    pub user_id: String,
    pub access: String,
    pub refresh: String,
}

pub fn unique_email(tag: &str) -> String {
    format!("{tag}.{}@example.org", uuid::Uuid::new_v4().simple())
}

impl TestApp {
    pub async fn post_json(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/v1/auth/register",
            json!({"email": email, "password": password, "displayName": "Test User"}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await
    }

    /// Logs in an existing account and returns its tokens.
    pub async fn session_for(&self, email: &str, password: &str) -> Session {
        let r = self.login(email, password).await;
        assert_eq!(r.status(), 200, "login failed");
        let refresh = refresh_cookie(&r).expect("refresh cookie");
        let body: Value = r.json().await.unwrap();
        Session {
            email: email.to_owned(),
            user_id: body["user"]["id"].as_str().unwrap().to_owned(),
            access: body["accessToken"].as_str().unwrap().to_owned(),
            refresh,
        }
    }

    /// Registers a fresh user and logs it in.
    pub async fn new_session(&self, tag: &str) -> Session {
        let email = unique_email(tag);
        assert_eq!(self.register(&email, PASSWORD).await.status(), 201);
        self.session_for(&email, PASSWORD).await
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub fn cookie_name(&self) -> &'static str {
        if self.state.config.cookie_secure {
            "__Secure-rampart_refresh"
        } else {
            "rampart_refresh"
        }
    }

    pub async fn refresh(&self, refresh: &str) -> Response {
        self.client
            .post(self.url("/api/v1/auth/refresh"))
            .header("cookie", format!("{}={refresh}", self.cookie_name()))
            .send()
            .await
            .unwrap()
    }

    /// `POST /auth/logout` with `access` as the bearer token.
    pub async fn logout(&self, access: &str) -> Response {
        self.client
            .post(self.url("/api/v1/auth/logout"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
    }

    /// Every audit event, oldest first, as stored.
    pub async fn audit_events(&self) -> Vec<rampart_core::audit::AuditRecord> {
        let mut all = rampart_store::audit::list(
            &self.state.db,
            &rampart_store::audit::AuditFilter::default(),
            10_000,
            None,
        )
        .await
        .unwrap();
        all.reverse();
        all
    }
}

/// The refresh token from a response's `Set-Cookie`, if it sets a non-empty one.
pub fn refresh_cookie(r: &Response) -> Option<String> {
    refresh_cookie_in(r.headers())
}

/// The refresh token a response with these headers sets, if it sets a non-empty one.
pub fn refresh_cookie_in(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.contains("rampart_refresh="))
        .and_then(|c| {
            let value = c.split(';').next()?.split_once('=')?.1;
            (!value.is_empty()).then(|| value.to_owned())
        })
}

fn set_cookie(r: &Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.contains("rampart_refresh="))
        .unwrap_or_default()
        .to_owned()
}

fn b64json(part: &str) -> Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn set_status(app: &TestApp, user_id: &str, status: &str) {
    let id = uuid::Uuid::parse_str(user_id).unwrap();
    match &app.state.db {
        rampart_store::Db::Sqlite(pool) => {
            sqlx::query("UPDATE users SET status = $1 WHERE id = $2")
                .bind(status)
                .bind(id.to_string())
                .execute(pool)
                .await
                .unwrap();
        }
        rampart_store::Db::Postgres(pool) => {
            sqlx::query("UPDATE users SET status = $1 WHERE id = $2")
                .bind(status)
                .bind(id)
                .execute(pool)
                .await
                .unwrap();
        }
    }
}

async fn stored_hash(app: &TestApp, email: &str) -> String {
    rampart_store::users::find_credentials(&app.state.db, &email.to_lowercase())
        .await
        .unwrap()
        .unwrap()
        .password_hash
        .expose()
        .clone()
}

pub(crate) async fn set_hash(app: &TestApp, email: &str, hash: &str) {
    let creds = rampart_store::users::find_credentials(&app.state.db, &email.to_lowercase())
        .await
        .unwrap()
        .unwrap();
    rampart_store::users::set_password_hash(
        &app.state.db,
        creds.user_id,
        creds.password_hash.expose(),
        hash,
    )
    .await
    .unwrap();
}

backend_tests!(
    register_returns_the_user_view,
    register_rejects_bad_input_and_creates_nothing,
    duplicate_email_in_other_case_is_409,
    login_issues_token_and_cookie,
    insecure_cookie_mode_drops_secure_and_prefix,
    wrong_password_unknown_email_and_disabled_account_look_the_same,
    me_requires_a_live_token,
    expired_tokens_are_refused,
    forged_tokens_are_refused,
    refresh_rotates_and_reuse_ends_the_session,
    concurrent_refreshes_have_one_winner,
    refresh_refuses_cross_site_requests,
    refresh_cookie_is_capped_by_session_max_age,
    logout_by_token_and_by_cookie,
    logout_all_ends_every_session,
    sessions_list_and_delete,
    password_change_ends_every_session,
    lockout_per_email,
    lockout_scope_email_ip,
    login_and_register_rate_limits_per_ip,
    outdated_and_bcrypt_hashes_are_upgraded,
    full_hash_queue_answers_503,
    shed_logins_give_their_lockout_slot_back,
    patch_me_updates_display_name,
    racing_callers_each_get_their_own_identity,
    audit_records_auth_events_without_secrets,
    unknown_and_known_email_take_similar_time,
);

async fn register_returns_the_user_view(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = unique_email("Reg");
    let r = app.register(&email, PASSWORD).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
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
            "createdAt",
            "displayName",
            "email",
            "emailVerified",
            "id",
            "mfaEnabled",
            "roles",
            "status",
            "updatedAt"
        ]
    );
    assert_eq!(body["email"], email.as_str());
    assert_eq!(body["roles"], json!(["user"]));
    assert_eq!(body["status"], "active");
    assert_eq!(body["mfaEnabled"], false);
    assert!(uuid::Uuid::parse_str(body["id"].as_str().unwrap()).is_ok());
    let created = body["createdAt"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.contains('T'), "{created}");
    let text = body.to_string();
    assert!(!text.contains(PASSWORD) && !text.contains("argon2"));
    app.finish().await;
}

async fn register_rejects_bad_input_and_creates_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = unique_email("bad");
    let local = email.split('@').next().unwrap().to_owned();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"email": email, "password": PASSWORD, "displayName": "A", "roles": ["admin"]}),
            "roles",
        ),
        (
            json!({"email": email, "password": PASSWORD, "displayName": "A", "status": "active"}),
            "status",
        ),
        (
            json!({"email": email, "password": PASSWORD, "displayName": "A", "id": "x"}),
            "id",
        ),
        (
            json!({"email": email, "password": PASSWORD, "displayName": 5}),
            "displayName",
        ),
        (json!({"email": email, "password": PASSWORD}), "displayName"),
        (
            json!({"email": email, "password": PASSWORD, "displayName": ""}),
            "displayName",
        ),
        (
            json!({"email": email, "password": PASSWORD, "displayName": "a\u{7}b"}),
            "displayName",
        ),
        (
            json!({"email": email, "password": PASSWORD, "displayName": "x".repeat(101)}),
            "displayName",
        ),
        (
            json!({"email": "not-an-email", "password": PASSWORD, "displayName": "A"}),
            "email",
        ),
        (
            json!({"email": email, "password": "short pass", "displayName": "A"}),
            "password",
        ),
        (
            json!({"email": email, "password": "password1234", "displayName": "A"}),
            "password",
        ),
        (
            json!({"email": email, "password": "PASSWORD1234", "displayName": "A"}),
            "password",
        ),
        (
            json!({"email": email, "password": format!("my {local} secret"), "displayName": "A"}),
            "password",
        ),
        (
            json!({"email": email, "password": "x".repeat(129), "displayName": "A"}),
            "password",
        ),
        (
            json!({"email": email, "password": 123456789012345_u64, "displayName": "A"}),
            "password",
        ),
    ];
    for (body, field) in cases {
        let doc = problem(
            app.post_json("/api/v1/auth/register", body.clone()).await,
            400,
            "validation_failed",
        )
        .await;
        let errors = doc["errors"].as_array().unwrap();
        assert!(errors.iter().any(|e| e["field"] == field), "{body}: {doc}");
        assert!(!doc.to_string().contains(PASSWORD));
    }
    // Several problems at once are all reported.
    let doc = problem(
        app.post_json(
            "/api/v1/auth/register",
            json!({"email": "nope", "password": "short", "displayName": ""}),
        )
        .await,
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(doc["errors"].as_array().unwrap().len(), 3, "{doc}");
    // Nothing was created: the email is still free.
    assert_eq!(app.register(&email, PASSWORD).await.status(), 201);
    app.finish().await;
}

async fn duplicate_email_in_other_case_is_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = unique_email("dup");
    assert_eq!(app.register(&email, PASSWORD).await.status(), 201);
    let upper = format!("  {}  ", email.to_uppercase());
    problem(app.register(&upper, PASSWORD).await, 409, "conflict").await;
    // The upper-case spelling logs in to the same account.
    assert_eq!(app.login(&upper, PASSWORD).await.status(), 200);
    app.finish().await;
}

async fn login_issues_token_and_cookie(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = unique_email("login");
    app.register(&email, PASSWORD).await;
    let r = app.login(&email, PASSWORD).await;
    assert_eq!(r.status(), 200);
    let cookie = set_cookie(&r);
    assert!(cookie.starts_with("__Secure-rampart_refresh="), "{cookie}");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/api/v1/auth"] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    let max_age: i64 = cookie
        .split(';')
        .find_map(|p| p.trim().strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (7 * 86_400 - 5..=7 * 86_400).contains(&max_age),
        "{max_age}"
    );
    let refresh = refresh_cookie(&r).unwrap();
    assert_eq!(refresh.len(), 43, "256-bit base64url");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], 900);
    assert_eq!(body["user"]["email"], email.as_str());
    assert!(body.get("refreshToken").is_none());
    assert!(!body.to_string().contains(&refresh));
    let token = body["accessToken"].as_str().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = b64json(parts[0]);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], app.state.keys.active().kid());
    let claims = b64json(parts[1]);
    assert_eq!(claims["iss"], "rampart");
    assert_eq!(claims["aud"], "rampart-api");
    assert_eq!(claims["sub"], body["user"]["id"]);
    for key in ["sid", "jti", "iat", "exp"] {
        assert!(claims.get(key).is_some(), "{key}");
    }
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    let text = claims.to_string();
    assert!(!text.contains(&email) && !text.contains("Test User") && !text.contains("roles"));
    app.finish().await;
}

async fn insecure_cookie_mode_drops_secure_and_prefix(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("RAMPART_COOKIE_SECURE", "false")],
        utoipa_axum::router::OpenApiRouter::new(),
    )
    .await;
    let s = app.new_session("insecure").await;
    let r = app.refresh(&s.refresh).await;
    assert_eq!(r.status(), 200);
    let cookie = set_cookie(&r);
    assert!(cookie.starts_with("rampart_refresh="), "{cookie}");
    assert!(!cookie.contains("Secure"), "{cookie}");
    app.finish().await;
}

async fn wrong_password_unknown_email_and_disabled_account_look_the_same(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("same").await;
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("requestId");
        v
    };
    let wrong = problem(
        app.login(&s.email, "wrong password entirely").await,
        401,
        "invalid_credentials",
    )
    .await;
    let unknown = problem(
        app.login(&unique_email("ghost"), PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    set_status(&app, &s.user_id, "disabled").await;
    let disabled = problem(
        app.login(&s.email, PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(strip(wrong.clone()), strip(unknown));
    assert_eq!(strip(wrong), strip(disabled));
    // A disabled user's existing token stops working too.
    problem(
        app.get_auth("/api/v1/users/me", &s.access).await,
        401,
        "unauthenticated",
    )
    .await;
    app.finish().await;
}

async fn me_requires_a_live_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("me").await;
    let r = app.get_auth("/api/v1/users/me", &s.access).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["email"], s.email.as_str());
    problem(app.get("/api/v1/users/me").await, 401, "unauthenticated").await;
    let r = app.get_auth("/api/v1/users/me", "garbage").await;
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    problem(r, 401, "unauthenticated").await;
    let r = app
        .client
        .get(app.url("/api/v1/users/me"))
        .header("authorization", format!("Basic {}", s.access))
        .send()
        .await
        .unwrap();
    problem(r, 401, "unauthenticated").await;
    app.finish().await;
}

async fn expired_tokens_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("exp").await;
    // 15 minutes + leeway of 30 s: still fine at 15:20, refused at 15:31.
    app.clock.advance(time::Duration::seconds(900 + 20));
    assert_eq!(
        app.get_auth("/api/v1/users/me", &s.access).await.status(),
        200
    );
    app.clock.advance(time::Duration::seconds(11));
    problem(
        app.get_auth("/api/v1/users/me", &s.access).await,
        401,
        "unauthenticated",
    )
    .await;
    // The refresh token still works and gives a fresh access token.
    let r = app.refresh(&s.refresh).await;
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get_auth("/api/v1/users/me", &token).await.status(), 200);
    // Refresh tokens expire after 7 days.
    let s2 = app.new_session("exp2").await;
    app.clock
        .advance(time::Duration::days(7) + time::Duration::seconds(1));
    problem(app.refresh(&s2.refresh).await, 401, "unauthenticated").await;
    app.finish().await;
}

async fn forged_tokens_are_refused(backend: Backend) {
    use base64::Engine;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("forge").await;
    let parts: Vec<&str> = s.access.split('.').collect();
    let header = b64json(parts[0]);
    let claims = b64json(parts[1]);
    // alg: none
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "at+jwt", "kid": header["kid"]})),
        parts[1]
    );
    // Payload tampered (another subject), signature kept.
    let mut other = claims.clone();
    other["sub"] = json!(uuid::Uuid::now_v7().to_string());
    let tampered = format!("{}.{}.{}", parts[0], b64(&other), parts[2]);
    // HS256 keyed with the public JWK.
    let jwk = app.state.keys.active().public_jwk().to_string();
    let hs = {
        let key = jsonwebtoken::EncodingKey::from_secret(jwk.as_bytes());
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = header["kid"].as_str().map(str::to_owned);
        jsonwebtoken::encode(&h, &claims, &key).unwrap()
    };
    // Unknown kid and wrong typ (signature then cannot be right either).
    let unknown_kid = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "not-a-key"})),
        parts[1],
        parts[2]
    );
    let wrong_typ = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "EdDSA", "typ": "JWT", "kid": header["kid"]})),
        parts[1],
        parts[2]
    );
    for (name, token) in [
        ("none", none),
        ("tampered", tampered),
        ("hs256", hs),
        ("unknown kid", unknown_kid),
        ("wrong typ", wrong_typ),
    ] {
        let r = app.get_auth("/api/v1/users/me", &token).await;
        assert_eq!(r.status(), 401, "{name}");
        problem(r, 401, "unauthenticated").await;
    }
    app.finish().await;
}

async fn refresh_rotates_and_reuse_ends_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("rot").await;
    let r = app.refresh(&s.refresh).await;
    assert_eq!(r.status(), 200);
    let second = refresh_cookie(&r).unwrap();
    assert_ne!(second, s.refresh);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["user"]["id"], s.user_id.as_str());
    let access2 = body["accessToken"].as_str().unwrap().to_owned();
    // Replaying the first token: 401, and the whole session is gone.
    let r = app.refresh(&s.refresh).await;
    assert!(set_cookie(&r).contains("Max-Age=0"));
    problem(r, 401, "unauthenticated").await;
    problem(app.refresh(&second).await, 401, "unauthenticated").await;
    problem(
        app.get_auth("/api/v1/users/me", &access2).await,
        401,
        "unauthenticated",
    )
    .await;
    problem(
        app.get_auth("/api/v1/users/me", &s.access).await,
        401,
        "unauthenticated",
    )
    .await;
    let events = app.audit_events().await;
    let reuse: Vec<_> = events
        .iter()
        .filter(|e| e.action == "auth.refresh_reuse_detected")
        .collect();
    assert_eq!(reuse.len(), 1);
    assert_eq!(
        reuse[0].actor_id.map(|a| a.to_string()),
        Some(s.user_id.clone())
    );
    // Other sessions of the same user are unaffected.
    let other = app.session_for(&s.email, PASSWORD).await;
    assert_eq!(
        app.get_auth("/api/v1/users/me", &other.access)
            .await
            .status(),
        200
    );
    app.finish().await;
}

async fn concurrent_refreshes_have_one_winner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("race").await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = app.client.clone();
        let url = app.url("/api/v1/auth/refresh");
        let cookie = format!("{}={}", app.cookie_name(), s.refresh);
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 401),
        "{statuses:?}"
    );
    app.finish().await;
}

async fn refresh_refuses_cross_site_requests(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("csrf").await;
    let cookie = format!("{}={}", app.cookie_name(), s.refresh);
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = app
            .client
            .post(app.url("/api/v1/auth/refresh"))
            .header("cookie", &cookie)
            .header(name, value)
            .send()
            .await
            .unwrap();
        problem(r, 403, "forbidden").await;
        let r = app
            .client
            .post(app.url("/api/v1/auth/logout"))
            .header("cookie", &cookie)
            .header(name, value)
            .send()
            .await
            .unwrap();
        problem(r, 403, "forbidden").await;
    }
    // The token was not used up by the refused requests; an allowed origin works.
    let r = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header("cookie", &cookie)
        .header("origin", "https://app.example")
        .header("sec-fetch-site", "same-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.finish().await;
}

async fn refresh_cookie_is_capped_by_session_max_age(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("RAMPART_SESSION_MAX_AGE", "2h")],
        utoipa_axum::router::OpenApiRouter::new(),
    )
    .await;
    let s = app.new_session("cap").await;
    app.clock.advance(time::Duration::minutes(90));
    let r = app.refresh(&s.refresh).await;
    assert_eq!(r.status(), 200);
    let cookie = set_cookie(&r);
    let max_age: i64 = cookie
        .split(';')
        .find_map(|p| p.trim().strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age <= 30 * 60 && max_age > 25 * 60, "{max_age}");
    let next = refresh_cookie(&r).unwrap();
    app.clock.advance(time::Duration::minutes(31));
    problem(app.refresh(&next).await, 401, "unauthenticated").await;
    app.finish().await;
}

async fn logout_by_token_and_by_cookie(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("out").await;
    let r = app.logout(&s.access).await;
    assert_eq!(r.status(), 204);
    let cookie = set_cookie(&r);
    assert!(
        cookie.contains("Max-Age=0") && cookie.contains("Path=/api/v1/auth"),
        "{cookie}"
    );
    problem(
        app.get_auth("/api/v1/users/me", &s.access).await,
        401,
        "unauthenticated",
    )
    .await;
    problem(app.refresh(&s.refresh).await, 401, "unauthenticated").await;

    let s = app.session_for(&s.email, PASSWORD).await;
    let r = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .header("cookie", format!("{}={}", app.cookie_name(), s.refresh))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    problem(
        app.get_auth("/api/v1/users/me", &s.access).await,
        401,
        "unauthenticated",
    )
    .await;
    // Nothing to log out with, or an invalid token: 401.
    let r = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .send()
        .await
        .unwrap();
    problem(r, 401, "unauthenticated").await;
    let r = app.logout("nonsense").await;
    problem(r, 401, "unauthenticated").await;
    app.finish().await;
}

async fn logout_all_ends_every_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.new_session("all").await;
    let b = app.session_for(&a.email, PASSWORD).await;
    let other = app.new_session("bystander").await;
    let r = app
        .client
        .post(app.url("/api/v1/auth/logout-all"))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for token in [&a.access, &b.access] {
        problem(
            app.get_auth("/api/v1/users/me", token).await,
            401,
            "unauthenticated",
        )
        .await;
    }
    problem(app.refresh(&b.refresh).await, 401, "unauthenticated").await;
    assert_eq!(
        app.get_auth("/api/v1/users/me", &other.access)
            .await
            .status(),
        200
    );
    app.finish().await;
}

async fn sessions_list_and_delete(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.new_session("list").await;
    let b = app.session_for(&a.email, PASSWORD).await;
    let intruder = app.new_session("intruder").await;
    let r = app.get_auth("/api/v1/auth/sessions", &a.access).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items.iter().filter(|i| i["current"] == true).count(), 1);
    for item in items {
        for key in [
            "id",
            "createdAt",
            "lastUsedAt",
            "ipAddress",
            "userAgent",
            "current",
        ] {
            assert!(item.get(key).is_some(), "{key}");
        }
        assert_eq!(item["ipAddress"], "127.0.0.1");
    }
    let b_id = items.iter().find(|i| i["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another user cannot see or end it: 404, and nothing changes.
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/auth/sessions/{b_id}")))
        .bearer_auth(&intruder.access)
        .send()
        .await
        .unwrap();
    problem(r, 404, "not_found").await;
    assert_eq!(
        app.get_auth("/api/v1/users/me", &b.access).await.status(),
        200
    );
    // Malformed id → 400 naming path.id.
    let r = app
        .client
        .delete(app.url("/api/v1/auth/sessions/not-a-uuid"))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    let doc = problem(r, 400, "validation_failed").await;
    assert_eq!(doc["errors"][0]["field"], "path.id");
    // The owner ends it: its token stops working at once.
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/auth/sessions/{b_id}")))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    problem(
        app.get_auth("/api/v1/users/me", &b.access).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(
        app.get_auth("/api/v1/users/me", &a.access).await.status(),
        200
    );
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/auth/sessions/{b_id}")))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    problem(r, 404, "not_found").await;
    app.finish().await;
}

async fn password_change_ends_every_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.new_session("pw").await;
    let b = app.session_for(&a.email, PASSWORD).await;
    let change = |current: &str, new: &str| {
        app.client
            .post(app.url("/api/v1/auth/password"))
            .bearer_auth(&a.access)
            .json(&json!({"currentPassword": current, "newPassword": new}))
            .send()
    };
    problem(
        change("not my password at all", "another strong passphrase 9")
            .await
            .unwrap(),
        403,
        "reauthentication_failed",
    )
    .await;
    let doc = problem(
        change(PASSWORD, "password1234").await.unwrap(),
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(doc["errors"][0]["field"], "newPassword");
    let new = "another strong passphrase 9";
    let r = change(PASSWORD, new).await.unwrap();
    assert_eq!(r.status(), 204);
    for token in [&a.access, &b.access] {
        problem(
            app.get_auth("/api/v1/users/me", token).await,
            401,
            "unauthenticated",
        )
        .await;
    }
    problem(app.refresh(&b.refresh).await, 401, "unauthenticated").await;
    problem(
        app.login(&a.email, PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(app.login(&a.email, new).await.status(), 200);
    app.finish().await;
}

async fn lockout_per_email(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("lock").await;
    for _ in 0..5 {
        problem(
            app.login(&s.email, "wrong wrong wrong").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    // Locked: even the right password gets 429 with the seconds left.
    let r = app.login(&s.email, PASSWORD).await;
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((890..=900).contains(&secs), "{secs}");
    problem(r, 429, "rate_limited").await;
    // The same, for an address nobody registered.
    let ghost = unique_email("ghost");
    for _ in 0..5 {
        problem(
            app.login(&ghost, PASSWORD).await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    let r = app.login(&ghost, PASSWORD).await;
    assert!(r.headers().get("retry-after").is_some());
    problem(r, 429, "rate_limited").await;
    // Lockout never ends existing sessions.
    assert_eq!(
        app.get_auth("/api/v1/users/me", &s.access).await.status(),
        200
    );
    // Wrong current passwords on /password count too, and it answers 429 while locked.
    let r = app
        .client
        .post(app.url("/api/v1/auth/password"))
        .bearer_auth(&s.access)
        .json(&json!({"currentPassword": PASSWORD, "newPassword": "a fresh strong passphrase"}))
        .send()
        .await
        .unwrap();
    problem(r, 429, "rate_limited").await;
    // After the lock, logins work again; a success resets the counter.
    app.clock.advance(time::Duration::seconds(901));
    assert_eq!(app.login(&s.email, PASSWORD).await.status(), 200);
    for _ in 0..4 {
        app.login(&s.email, "wrong wrong wrong").await;
    }
    assert_eq!(app.login(&s.email, PASSWORD).await.status(), 200);
    for _ in 0..4 {
        app.login(&s.email, "wrong wrong wrong").await;
    }
    assert_eq!(
        app.login(&s.email, PASSWORD).await.status(),
        200,
        "counter was reset"
    );
    let events = app.audit_events().await;
    assert_eq!(
        events.iter().filter(|e| e.action == "auth.lockout").count(),
        2
    );
    app.finish().await;
}

async fn lockout_scope_email_ip(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("RAMPART_LOCKOUT_SCOPE", "email_ip"),
            ("RAMPART_TRUSTED_PROXIES", "127.0.0.0/8"),
        ],
        utoipa_axum::router::OpenApiRouter::new(),
    )
    .await;
    let email = unique_email("scoped");
    app.register(&email, PASSWORD).await;
    let login_from = |ip: &'static str, password: &'static str| {
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("x-forwarded-for", ip)
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(
            login_from("198.51.100.66", "wrong wrong wrong")
                .await
                .unwrap()
                .status(),
            401
        );
    }
    problem(
        login_from("198.51.100.66", PASSWORD).await.unwrap(),
        429,
        "rate_limited",
    )
    .await;
    // The victim, elsewhere, is not locked out by the attacker.
    assert_eq!(
        login_from("203.0.113.5", PASSWORD).await.unwrap().status(),
        200
    );
    app.finish().await;
}

async fn login_and_register_rate_limits_per_ip(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("RAMPART_LOGIN_RATE_PER_MINUTE", "2"),
            ("RAMPART_REGISTER_RATE_PER_HOUR", "2"),
        ],
        utoipa_axum::router::OpenApiRouter::new(),
    )
    .await;
    assert_eq!(
        app.register(&unique_email("r1"), PASSWORD).await.status(),
        201
    );
    assert_eq!(
        app.register(&unique_email("r2"), PASSWORD).await.status(),
        201
    );
    let r = app.register(&unique_email("r3"), PASSWORD).await;
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs > 60, "an hourly limit refills slowly: {secs}");
    problem(r, 429, "rate_limited").await;
    app.login(&unique_email("x"), PASSWORD).await;
    app.login(&unique_email("x"), PASSWORD).await;
    problem(
        app.login(&unique_email("x"), PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    // A rate-limited client is refused before its body is even looked at.
    let r = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    problem(r, 429, "rate_limited").await;
    app.finish().await;
}

async fn outdated_and_bcrypt_hashes_are_upgraded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = unique_email("legacy");
    app.register(&email, PASSWORD).await;
    // An account imported from a NestJS app, with a bcrypt hash.
    let bcrypt = bcrypt::hash(PASSWORD, 4).unwrap();
    set_hash(&app, &email, &bcrypt).await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
    let upgraded = stored_hash(&app, &email).await;
    assert!(upgraded.starts_with("$argon2id$"), "{upgraded}");
    assert!(upgraded.contains("m=64,t=1,p=1"), "{upgraded}");
    let argon2id = |m_kib, t| {
        rampart_core::passwords::PasswordHasher::new(rampart_core::passwords::HashParams {
            m_kib,
            t,
            p: 1,
        })
        .unwrap()
        .hash(PASSWORD)
        .unwrap()
    };
    // An argon2id hash costing less than configured is re-hashed with the configured cost.
    set_hash(&app, &email, &argon2id(32, 1)).await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
    assert!(stored_hash(&app, &email).await.contains("m=64,t=1,p=1"));
    // One costing more is never downgraded (contract §9): the login leaves it as it is.
    for stronger in [argon2id(128, 2), argon2id(128, 1), argon2id(64, 2)] {
        set_hash(&app, &email, &stronger).await;
        assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
        assert_eq!(stored_hash(&app, &email).await, stronger);
    }
    // A wrong password does not touch the hash.
    set_hash(&app, &email, &bcrypt).await;
    assert_eq!(app.login(&email, "wrong wrong wrong").await.status(), 401);
    assert_eq!(stored_hash(&app, &email).await, bcrypt);
    app.finish().await;
}

async fn full_hash_queue_answers_503(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("RAMPART_HASH_WORKERS", "1"),
            ("RAMPART_HASH_QUEUE", "1"),
            ("RAMPART_ARGON2_MEMORY_KIB", "8192"),
            ("RAMPART_ARGON2_ITERATIONS", "3"),
            ("RAMPART_LOGIN_RATE_PER_MINUTE", "1000"),
        ],
        utoipa_axum::router::OpenApiRouter::new(),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let client = app.client.clone();
        let url = app.url("/api/v1/auth/login");
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = client
                .post(url)
                .json(&json!({"email": format!("load{i}@example.org"), "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                started.elapsed(),
                r.json::<Value>().await.unwrap(),
            )
        }));
    }
    let mut unavailable = 0;
    for t in tasks {
        let (status, took, body) = t.await.unwrap();
        assert!(status == 401 || status == 503, "{status}");
        if status == 503 {
            unavailable += 1;
            assert_eq!(body["code"], "unavailable");
            assert!(
                took < Duration::from_secs(2),
                "refused quickly, not queued: {took:?}"
            );
        }
    }
    assert!(unavailable > 0, "a full queue must shed load");
    app.finish().await;
}

/// An attempt is reserved before the check (contract §4), but a login shed with 503
/// because the hashing queue is full was never checked: it gives its slot back, so shed
/// load cannot fill an email's window (and lock its owner out) without a guess being tried.
async fn shed_logins_give_their_lockout_slot_back(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("RAMPART_HASH_WORKERS", "1"),
            ("RAMPART_HASH_QUEUE", "1"),
            ("RAMPART_ARGON2_MEMORY_KIB", "8192"),
            ("RAMPART_ARGON2_ITERATIONS", "3"),
            ("RAMPART_LOGIN_RATE_PER_MINUTE", "1000"),
            ("RAMPART_LOGIN_MAX_FAILURES", "100"),
        ],
        utoipa_axum::router::OpenApiRouter::new(),
    )
    .await;
    let email = unique_email("shed");
    let barrier = Arc::new(tokio::sync::Barrier::new(12));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (client, url, email, barrier) = (
            app.client.clone(),
            app.url("/api/v1/auth/login"),
            email.clone(),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client
                .post(url)
                .json(&json!({"email": email, "password": "not the password!"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut checked = 0_i64;
    let mut shed = 0;
    for t in tasks {
        match t.await.unwrap() {
            401 => checked += 1,
            503 => shed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(shed > 0, "the queue never filled: nothing was shed");
    const FAILURES: &str = "SELECT failures FROM lockouts WHERE key = $1";
    let counted: i64 = match &app.state.db {
        rampart_store::Db::Sqlite(pool) => {
            sqlx::query_scalar(FAILURES)
                .bind(&email)
                .fetch_one(pool)
                .await
        }
        rampart_store::Db::Postgres(pool) => {
            sqlx::query_scalar(FAILURES)
                .bind(&email)
                .fetch_one(pool)
                .await
        }
    }
    .unwrap();
    assert_eq!(counted, checked, "{shed} shed logins kept their slots");
    app.finish().await;
}

/// The route's policy verifies a caller's token once and hands its claims to the handler
/// (`VerifiedToken`, `AuthUser` in the request's extensions). Fired together, many callers'
/// requests each answer with their own caller only, and every request with the token of a
/// session that has ended is refused, on the route that reads the claims (`/users/me`) and
/// on one that reads `AuthUser` (`/users/me/permissions`).
async fn racing_callers_each_get_their_own_identity(backend: Backend) {
    const USERS: usize = 6;
    const EACH: usize = 5;
    let app = TestApp::spawn(backend).await;
    let mut sessions = Vec::new();
    for i in 0..USERS {
        sessions.push(app.new_session(&format!("race{i}")).await);
    }
    let ended = app.new_session("ended").await;
    let r = app.logout(&ended.access).await;
    assert_eq!(r.status(), 204);
    let callers: Vec<(Option<String>, String)> = sessions
        .iter()
        .map(|s| (Some(s.email.clone()), s.access.clone()))
        .chain(std::iter::once((None, ended.access.clone())))
        .collect();
    let paths = ["/api/v1/users/me", "/api/v1/users/me/permissions"];
    let total = callers.len() * EACH * paths.len();
    let barrier = Arc::new(tokio::sync::Barrier::new(total));
    let mut tasks = Vec::new();
    for (expected, token) in &callers {
        for _ in 0..EACH {
            for path in paths {
                let (client, url, token, barrier) = (
                    app.client.clone(),
                    app.url(path),
                    token.clone(),
                    barrier.clone(),
                );
                let expected = expected.clone();
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let r = client.get(url).bearer_auth(token).send().await.unwrap();
                    (
                        path,
                        expected,
                        r.status().as_u16(),
                        r.json::<Value>().await.unwrap(),
                    )
                }));
            }
        }
    }
    for task in tasks {
        let (path, expected, status, body) = task.await.unwrap();
        match expected {
            None => assert_eq!(
                (status, &body["code"]),
                (401, &json!("unauthenticated")),
                "{path}"
            ),
            Some(email) => {
                assert_eq!(status, 200, "{path}: {body}");
                if path == "/api/v1/users/me" {
                    assert_eq!(body["email"], email.to_lowercase(), "another caller's view");
                }
            }
        }
    }
    app.finish().await;
}

async fn patch_me_updates_display_name(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("patch").await;
    let patch = |body: Value| {
        app.client
            .patch(app.url("/api/v1/users/me"))
            .bearer_auth(&s.access)
            .json(&body)
            .send()
    };
    let r = patch(json!({"displayName": "Grace Hopper"})).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["displayName"],
        "Grace Hopper"
    );
    problem(
        patch(json!({"displayName": ""})).await.unwrap(),
        400,
        "validation_failed",
    )
    .await;
    problem(
        patch(json!({"displayName": "x", "roles": ["admin"]}))
            .await
            .unwrap(),
        400,
        "validation_failed",
    )
    .await;
    problem(
        patch(json!({"email": "new@example.org"})).await.unwrap(),
        400,
        "validation_failed",
    )
    .await;
    let me: Value = app
        .get_auth("/api/v1/users/me", &s.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["displayName"], "Grace Hopper");
    assert_eq!(me["roles"], json!(["user"]));
    let events = app.audit_events().await;
    let updated = events.iter().find(|e| e.action == "user.updated").unwrap();
    assert_eq!(
        updated.actor_id.map(|a| a.to_string()),
        Some(s.user_id.clone())
    );
    app.finish().await;
}

async fn audit_records_auth_events_without_secrets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = unique_email("audit");
    let r = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .header("x-request-id", "audit-register-1")
        .header("user-agent", "audit-test/1.0")
        .json(&json!({"email": email, "password": PASSWORD, "displayName": "Auditor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let user_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.login(&email, "a wrong password here").await;
    app.login(&unique_email("nobody"), "a wrong password here")
        .await;
    let s = app.session_for(&email, PASSWORD).await;
    let r = app.refresh(&s.refresh).await;
    let second = refresh_cookie(&r).unwrap();
    let access2 = r.json::<Value>().await.unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    app.refresh(&s.refresh).await; // reuse
    let s2 = app.session_for(&email, PASSWORD).await;
    assert_eq!(app.logout(&s2.access).await.status(), 204);
    let s3 = app.session_for(&email, PASSWORD).await;
    let new_password = "a completely new passphrase";
    app.client
        .post(app.url("/api/v1/auth/password"))
        .bearer_auth(&s3.access)
        .json(&json!({"currentPassword": PASSWORD, "newPassword": new_password}))
        .send()
        .await
        .unwrap();
    let s4 = app.session_for(&email, new_password).await;
    app.client
        .post(app.url("/api/v1/auth/logout-all"))
        .bearer_auth(&s4.access)
        .send()
        .await
        .unwrap();

    let events = app.audit_events().await;
    let find = |action: &str| {
        events
            .iter()
            .filter(|e| e.action == action)
            .collect::<Vec<_>>()
    };
    let reg = find("auth.register");
    assert_eq!(reg.len(), 1);
    assert_eq!(reg[0].request_id.as_deref(), Some("audit-register-1"));
    assert_eq!(reg[0].user_agent.as_deref(), Some("audit-test/1.0"));
    assert_eq!(reg[0].ip_address.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        reg[0].actor_id.map(|a| a.to_string()),
        Some(user_id.clone())
    );
    let failed = find("auth.login_failed");
    assert_eq!(failed.len(), 2);
    assert!(
        failed.iter().any(|e| e.actor_id.is_none()),
        "unknown email has no actor"
    );
    assert!(
        failed
            .iter()
            .any(|e| e.actor_id.map(|a| a.to_string()) == Some(user_id.clone()))
    );
    assert!(
        failed
            .iter()
            .all(|e| e.outcome == rampart_core::audit::Outcome::Failure)
    );
    for action in [
        "auth.login_succeeded",
        "auth.refresh_reuse_detected",
        "auth.logout",
        "auth.password_changed",
        "auth.logout_all",
    ] {
        let found = find(action);
        assert!(!found.is_empty(), "{action} missing");
        assert!(
            found
                .iter()
                .all(|e| e.actor_id.map(|a| a.to_string()) == Some(user_id.clone())),
            "{action}"
        );
        assert!(found.iter().all(|e| e.request_id.is_some()), "{action}");
    }
    // No secret in any audit field.
    let secrets = [
        PASSWORD,
        new_password,
        "a wrong password here",
        &s.refresh,
        &second,
        &s.access,
        &access2,
        &s4.access,
    ];
    for e in &events {
        let text = format!("{e:?}");
        for secret in secrets {
            assert!(!text.contains(secret), "secret in audit event {}", e.action);
        }
        assert!(
            !text.contains("$argon2"),
            "hash in audit event {}",
            e.action
        );
    }
    assert!(matches!(
        rampart_store::audit::verify(&app.state.db).await.unwrap(),
        rampart_core::audit::VerifyOutcome::Intact { .. }
    ));
    app.finish().await;
}

async fn unknown_and_known_email_take_similar_time(backend: Backend) {
    // The real (OWASP) parameters, so that hashing dominates the request; no lockout in
    // play (both counters allow every attempt),
    // but every attempt still reserves its slot and reads the credential epoch.
    let app = TestApp::spawn_with(
        backend,
        &[
            ("RAMPART_ARGON2_MEMORY_KIB", "19456"),
            ("RAMPART_ARGON2_ITERATIONS", "2"),
            ("RAMPART_LOGIN_MAX_FAILURES", "1000"),
            ("RAMPART_LOGIN_RATE_PER_MINUTE", "1000"),
        ],
        utoipa_axum::router::OpenApiRouter::new(),
    )
    .await;
    let email = unique_email("timing");
    app.register(&email, PASSWORD).await;
    let ghost = format!("ghost.{email}");
    // One unmeasured attempt each, so both emails have their counter row (an attacker's
    // first guess at any email, known or not, creates it alike); then pairs, alternating
    // which goes first, so neither side always meets a just-warmed pool or cache.
    for e in [&email, &ghost] {
        assert_eq!(app.login(e, "not the password!").await.status(), 401);
    }
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..30 {
        let order = if i % 2 == 0 {
            [&email, &ghost]
        } else {
            [&ghost, &email]
        };
        for e in order {
            let t = Instant::now();
            assert_eq!(app.login(e, "not the password!").await.status(), 401);
            if e == &email {
                known.push(t.elapsed());
            } else {
                unknown.push(t.elapsed());
            }
        }
    }
    // The median of the paired differences: each known attempt is compared with the
    // unknown one right after it, so load on the machine that drifts over the run cancels.
    let mut gaps: Vec<f64> = known
        .iter()
        .zip(&unknown)
        .map(|(k, u)| (k.as_secs_f64() - u.as_secs_f64()) * 1000.0)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let gap_ms = (gaps[14] + gaps[15]) / 2.0;
    known.sort();
    unknown.sort();
    assert!(
        gap_ms.abs() < 5.0,
        "median gap {gap_ms:.2} ms (medians: known {:?}, unknown {:?})",
        known[15],
        unknown[15]
    );
    app.finish().await;
}
