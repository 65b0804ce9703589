//! The web console (contract §13) over real HTTP, on both stores: the embedded pages with
//! their CSP and frame refusal, the mailed links' redirects, `RAMPART_CONSOLE=false`, the
//! public URL's origin on cookie routes, `GET /api/v1/audit/verify` (intact, tampered,
//! concurrent with writers), and what the console reads to show administration pages
//! (`GET /users/me/permissions`, `GET /users?email=`).

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Barrier;
use utoipa_axum::router::OpenApiRouter;

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem};
use crate::identity::{PASSWORD, unique_email};

backend_tests!(
    console_pages_carry_the_console_csp_and_refuse_framing,
    mailed_links_redirect_into_the_console_keeping_only_the_token,
    console_can_be_turned_off,
    the_public_url_origin_may_use_the_refresh_cookie,
    audit_verify_reports_an_intact_chain_and_needs_audit_read,
    audit_verify_names_the_first_tampered_record,
    audit_verify_racing_writers_always_sees_an_intact_prefix,
    my_permissions_follow_role_changes_on_the_next_request,
    users_can_be_searched_by_part_of_their_email,
);

const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

async fn console_pages_carry_the_console_csp_and_refuse_framing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = no_redirects();
    for (path, media) in [
        ("/console/", "text/html"),
        ("/console/index.html", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/api.js", "text/javascript"),
        ("/console/pages/admin.js", "text/javascript"),
        ("/console/style.css", "text/css"),
        ("/console/favicon.svg", "image/svg+xml"),
        (
            "/console/vendor/qrcode-generator-1.4.4.js",
            "text/javascript",
        ),
    ] {
        let r = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(header(&r, "content-type").starts_with(media), "{path}");
        assert_eq!(header(&r, "content-security-policy"), CONSOLE_CSP, "{path}");
        assert_eq!(header(&r, "x-frame-options"), "DENY", "{path}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{path}");
        assert!(r.headers().get("server").is_none());
        let body = r.text().await.unwrap();
        assert!(!body.is_empty(), "{path}");
    }
    let index = client
        .get(app.url("/console/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Nothing the CSP would refuse, nothing from another origin.
    assert!(!index.contains("<script>") && !index.contains("style="));
    assert!(!index.contains("http://") && !index.contains("https://"));

    // `/console` leads to `/console/`; an unknown file is a problem document, with the
    // console's CSP like every console response; traversal finds nothing.
    let r = client.get(app.url("/console")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/console/");
    for path in [
        "/console/nope.js",
        "/console/../Cargo.toml",
        "/console/%2e%2e/%2e%2e/Cargo.toml",
        "/console/pages/../../src/lib.rs",
    ] {
        let r = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(header(&r, "content-type").starts_with("application/problem+json"));
    }
    // The API keeps its own CSP.
    let r = client.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(
        header(&r, "content-security-policy"),
        "default-src 'none'; frame-ancestors 'none'"
    );
    // Only GET (and HEAD) are served.
    let r = client.post(app.url("/console/")).send().await.unwrap();
    problem(r, 405, "method_not_allowed").await;
    app.finish().await;
}

async fn mailed_links_redirect_into_the_console_keeping_only_the_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = no_redirects();
    for page in ["reset-password", "verify-email", "confirm-email"] {
        let r = client
            .get(app.url(&format!("/{page}?token=abc_DEF-123")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{page}");
        assert_eq!(
            header(&r, "location"),
            format!("/console/#/{page}?token=abc_DEF-123")
        );
        for hostile in [
            "token=%3Cscript%3E",
            "token=a&token=b",
            "token=//evil.example",
            "next=https://evil.example",
            "",
        ] {
            let r = client
                .get(app.url(&format!("/{page}?{hostile}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 303, "{page}?{hostile}");
            assert_eq!(header(&r, "location"), format!("/console/#/{page}"));
        }
    }
    // The reset mail's link is one of these.
    let email = unique_email("link");
    assert_eq!(app.register(&email, PASSWORD).await.status(), 201);
    let r = app
        .post_json(
            "/api/v1/auth/password-reset/request",
            json!({"email": email}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let token = crate::mfa::reset_token(&app.wait_for_mail(1).await[0]);
    assert!(token.len() >= 16, "{token}");
    let r = client
        .get(app.url(&format!("/reset-password?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "location"),
        format!("/console/#/reset-password?token={token}")
    );
    app.finish().await;
}

async fn console_can_be_turned_off(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("RAMPART_CONSOLE", "false")],
        OpenApiRouter::new(),
    )
    .await;
    assert!(!app.state.config.console);
    let client = no_redirects();
    for path in [
        "/console/",
        "/console/app.js",
        "/console",
        "/reset-password?token=x",
    ] {
        let r = client.get(app.url(path)).send().await.unwrap();
        problem(r, 404, "not_found").await;
    }
    app.finish().await;
}

/// Contract §13: the origin of `RAMPART_PUBLIC_URL` is always accepted for cookie routes,
/// also when `RAMPART_ALLOWED_ORIGINS` does not list it; other origins still are not.
async fn the_public_url_origin_may_use_the_refresh_cookie(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("RAMPART_PUBLIC_URL", "https://console.example/"),
            ("RAMPART_ALLOWED_ORIGINS", "https://other.example"),
        ],
        OpenApiRouter::new(),
    )
    .await;
    let s = app.new_session("origin").await;
    let cookie = format!("{}={}", app.cookie_name(), s.refresh);
    let r = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    problem(r, 403, "forbidden").await;
    let r = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header("cookie", &cookie)
        .header("origin", "https://console.example")
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.finish().await;
}

async fn verify(app: &TestApp, token: &str) -> Value {
    let r = app.get_auth("/api/v1/audit/verify", token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), "no-store");
    r.json().await.unwrap()
}

async fn audit_verify_reports_an_intact_chain_and_needs_audit_read(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("auditor").await;
    let member = app.new_session("member").await;
    let body = verify(&app, &admin.access).await;
    let stored = app.audit_events().await.len() as u64;
    assert_eq!(body["intact"], true, "{body}");
    assert_eq!(body["count"].as_u64(), Some(stored), "{body}");
    assert!(body["brokenAt"].is_null(), "{body}");
    assert_eq!(
        body.as_object().unwrap().len(),
        3,
        "only intact, count, brokenAt: {body}"
    );

    let r = app.get_auth("/api/v1/audit/verify", &member.access).await;
    problem(r, 403, "forbidden").await;
    let r = app
        .client
        .get(app.url("/api/v1/audit/verify"))
        .send()
        .await
        .unwrap();
    problem(r, 401, "unauthenticated").await;
    app.finish().await;
}

/// Removes the append-only guard (as the database owner could) and alters the record
/// `seq` behind the server's back.
async fn tamper(app: &TestApp, seq: i64) {
    let statements: Vec<String> = match app.state.db.backend() {
        rampart_store::Backend::Sqlite => vec![
            "DROP TRIGGER audit_events_no_update".to_owned(),
            format!("UPDATE audit_events SET action = 'auth.nothing_happened' WHERE seq = {seq}"),
        ],
        rampart_store::Backend::Postgres => vec![
            "ALTER TABLE audit_events DISABLE TRIGGER USER".to_owned(),
            format!("UPDATE audit_events SET action = 'auth.nothing_happened' WHERE seq = {seq}"),
        ],
    };
    for sql in statements {
        match &app.state.db {
            rampart_store::Db::Sqlite(pool) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .unwrap();
            }
            rampart_store::Db::Postgres(pool) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }
    }
}

async fn audit_verify_names_the_first_tampered_record(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("auditor").await;
    for i in 0..3 {
        app.new_session(&format!("u{i}")).await;
    }
    let events = app.audit_events().await;
    assert!(events.len() >= 6);
    let victim = &events[2];
    tamper(&app, victim.seq).await;
    let body = verify(&app, &admin.access).await;
    assert_eq!(body["intact"], false, "{body}");
    assert_eq!(body["brokenAt"]["seq"].as_i64(), Some(victim.seq), "{body}");
    assert_eq!(
        body["brokenAt"]["id"].as_str(),
        Some(victim.id.to_string().as_str()),
        "{body}"
    );
    assert!(
        !body["brokenAt"]["reason"].as_str().unwrap().is_empty(),
        "{body}"
    );
    assert_eq!(
        body["count"].as_u64(),
        Some(victim.seq as u64 - 1),
        "{body}"
    );
    // The listing still works and shows the altered record as it now stands.
    let r = app
        .get_auth(
            "/api/v1/audit/events?action=auth.nothing_happened",
            &admin.access,
        )
        .await;
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    app.finish().await;
}

/// Verifications racing requests that append events: each answer is intact and counts at
/// least what was committed before it started and at most what was committed after it.
async fn audit_verify_racing_writers_always_sees_an_intact_prefix(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let admin = app.admin_session("auditor").await;
    let before = app.audit_events().await.len() as u64;
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let app = app.clone();
        let barrier = barrier.clone();
        let token = admin.access.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            if i % 2 == 0 {
                let r = app.get_auth("/api/v1/audit/verify", &token).await;
                assert_eq!(r.status(), 200);
                Some(r.json::<Value>().await.unwrap())
            } else {
                let email = unique_email(&format!("w{i}"));
                assert_eq!(app.register(&email, PASSWORD).await.status(), 201);
                assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
                None
            }
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        if let Some(body) = t.await.unwrap() {
            seen.push(body);
        }
    }
    let after = app.audit_events().await.len() as u64;
    assert!(after >= before + 8);
    for body in seen {
        assert_eq!(body["intact"], true, "{body}");
        let count = body["count"].as_u64().unwrap();
        assert!(
            count >= before && count <= after,
            "{count} not in {before}..={after}"
        );
    }
    let body = verify(&app, &admin.access).await;
    assert_eq!(body["count"].as_u64(), Some(after));
    Arc::into_inner(app).unwrap().finish().await;
}

/// What an existing session reads after its grants changed: the next request sees the
/// new permissions (the console hides pages by them; the API enforces them anyway).
async fn my_permissions_follow_role_changes_on_the_next_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("admin").await;
    let s = app.new_session("member").await;
    let perms = |body: Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    };
    let mine = perms(
        app.get_auth("/api/v1/users/me/permissions", &s.access)
            .await
            .json()
            .await
            .unwrap(),
    );
    assert!(!mine.contains(&"audit:read".to_owned()), "{mine:?}");
    let mut sorted = mine.clone();
    sorted.sort();
    assert_eq!(mine, sorted);

    let role_id = app.make_role("auditors", &["audit:read"]).await;
    let r = app
        .call(
            Method::PUT,
            &format!("/api/v1/users/{}/roles", s.user_id),
            &admin.access,
            Some(json!({"roles": ["user", "auditors"]})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let granted = perms(
        app.get_auth("/api/v1/users/me/permissions", &s.access)
            .await
            .json()
            .await
            .unwrap(),
    );
    assert!(granted.contains(&"audit:read".to_owned()), "{granted:?}");
    assert_eq!(
        app.get_auth("/api/v1/audit/verify", &s.access)
            .await
            .status(),
        200
    );

    // The grant is taken away from the role: the same token loses it at once.
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/rbac/roles/{role_id}"),
            &admin.access,
            Some(json!({"permissions": []})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let now = perms(
        app.get_auth("/api/v1/users/me/permissions", &s.access)
            .await
            .json()
            .await
            .unwrap(),
    );
    assert!(!now.contains(&"audit:read".to_owned()), "{now:?}");
    problem(
        app.get_auth("/api/v1/audit/verify", &s.access).await,
        403,
        "forbidden",
    )
    .await;

    // A disabled user's token gets nothing.
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", s.user_id),
            &admin.access,
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    problem(
        app.get_auth("/api/v1/users/me/permissions", &s.access)
            .await,
        401,
        "unauthenticated",
    )
    .await;
    app.finish().await;
}

async fn users_can_be_searched_by_part_of_their_email(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("admin").await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    for i in 0..3 {
        let email = format!("Needle{i}.{tag}@example.org");
        assert_eq!(app.register(&email, PASSWORD).await.status(), 201);
    }
    app.new_session("haystack").await;
    let list = |path: String| {
        let app = &app;
        let token = admin.access.clone();
        async move { app.get_auth(&path, &token).await }
    };
    let r = list("/api/v1/users?email=NEEDLE&limit=2".to_owned()).await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    let r = list(format!(
        "/api/v1/users?email=needle&limit=2&cursor={cursor}"
    ))
    .await;
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["nextCursor"].is_null());
    // Wildcards are plain text: `%` and `_` match only themselves.
    for q in ["%25", "_", "needle%25"] {
        let r = list(format!("/api/v1/users?email={q}")).await;
        let page: Value = r.json().await.unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 0, "{q}");
    }
    let r = list(format!("/api/v1/users?email={tag}")).await;
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    for bad in ["", "%00", &"a".repeat(255)] {
        let r = list(format!("/api/v1/users?email={bad}")).await;
        let body = problem(r, 400, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "query.email", "{bad}");
    }
    app.finish().await;
}
