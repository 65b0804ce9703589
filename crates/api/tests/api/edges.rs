//! Input and transport edges (contract §1, §4, §5, §7, §9) over real HTTP, on both stores:
//! email length on every route that takes one, duplicate refresh cookies, client
//! addresses from `X-Forwarded-For` (ports, unparsable entries, IPv6 networks), the note
//! body limit after sanitising, and unknown query parameters on the unpaginated lists.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use utoipa_axum::router::OpenApiRouter;

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem, redis_url};
use crate::identity::PASSWORD;

backend_tests!(
    emails_over_254_characters_are_refused_on_every_route,
    duplicate_refresh_cookies_are_refused_and_consume_nothing,
    forwarded_for_entries_with_ports_and_unparsable_clients,
    ipv6_clients_share_a_budget_per_network,
    parallel_requests_from_one_ipv6_network_share_one_budget,
    email_ip_lockout_keys_an_ipv6_client_by_its_network,
    note_body_limit_applies_after_sanitising,
    unpaginated_lists_refuse_unknown_query_parameters,
);

/// An address of exactly `len` characters: a 64-character local part and a domain of `l`s.
fn email_of(len: usize, l: char) -> String {
    let local = "a".repeat(64);
    let domain_len = len - local.len() - 1 - ".org".len();
    let email = format!("{local}@{}.org", l.to_string().repeat(domain_len));
    assert_eq!(email.chars().count(), len);
    email
}

/// Asserts a 400 naming exactly `field`.
async fn refused_for(r: Response, field: &str) {
    let body = problem(r, 400, "validation_failed").await;
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["field"], field, "{body}");
}

/// Every `lockouts` key (failed-login counters and the reset throttle).
async fn lockout_keys(app: &TestApp) -> Vec<String> {
    const KEYS: &str = "SELECT key FROM lockouts";
    match &app.state.db {
        rampart_store::Db::Sqlite(pool) => sqlx::query_scalar(KEYS).fetch_all(pool).await,
        rampart_store::Db::Postgres(pool) => sqlx::query_scalar(KEYS).fetch_all(pool).await,
    }
    .unwrap()
}

async fn emails_over_254_characters_are_refused_on_every_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long = email_of(255, 'b');
    let huge = format!("{}@example.org", "a".repeat(20_000));

    // Register: the limit is in characters, not bytes.
    for email in [&long, &email_of(255, 'é'), &huge] {
        refused_for(app.register(email, PASSWORD).await, "email").await;
    }
    let ascii = email_of(254, 'b');
    let accented = email_of(254, 'é');
    assert!(accented.len() > 254);
    for email in [&ascii, &accented] {
        assert_eq!(app.register(email, PASSWORD).await.status(), 201, "{email}");
    }

    // Login: refused on the form, before any lookup or lockout counting, however often.
    for _ in 0..(app.state.config.login_max_failures + 2) {
        refused_for(app.login(&long, PASSWORD).await, "email").await;
        refused_for(app.login(&huge, "wrong wrong wrong").await, "email").await;
    }
    // Trimmed first: surrounding spaces do not count.
    refused_for(app.login(&format!(" {long} "), PASSWORD).await, "email").await;
    for email in [&ascii, &accented] {
        assert_eq!(app.login(email, PASSWORD).await.status(), 200, "{email}");
        let padded = format!("  {email}\t");
        assert_eq!(app.login(&padded, PASSWORD).await.status(), 200, "{email}");
    }
    // The 254-character form is counted like any other email.
    assert_eq!(app.login(&ascii, "wrong wrong wrong").await.status(), 401);

    // Password-reset request: 400 for the long one, 202 for one at the limit.
    for email in [&long, &huge] {
        let r = app
            .post_json(
                "/api/v1/auth/password-reset/request",
                json!({"email": email}),
            )
            .await;
        refused_for(r, "email").await;
    }
    let r = app
        .post_json(
            "/api/v1/auth/password-reset/request",
            json!({"email": ascii}),
        )
        .await;
    assert_eq!(r.status(), 202);

    // The accepted request writes its throttle key in the background; once it is there,
    // nothing was ever written for the refused ones.
    let throttle_key = format!("reset|{}", ascii.to_lowercase());
    let mut keys = lockout_keys(&app).await;
    for _ in 0..200 {
        if keys.contains(&throttle_key) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        keys = lockout_keys(&app).await;
    }
    assert!(keys.contains(&throttle_key), "{keys:?}");
    assert!(keys.contains(&ascii.to_lowercase()), "{keys:?}");
    let long_local = "a".repeat(20_000);
    let written_for_refused: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains(&long.to_lowercase()) || k.contains(&long_local))
        .collect();
    assert_eq!(written_for_refused, Vec::<&String>::new());
    app.finish().await;
}

async fn duplicate_refresh_cookies_are_refused_and_consume_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s1 = app.new_session("twice").await;
    let s2 = app.session_for(&s1.email, PASSWORD).await;
    let name = app.cookie_name();
    let post = |path: &'static str, cookies: Vec<String>| {
        let mut req = app.client.post(app.url(path));
        for cookie in cookies {
            req = req.header("cookie", cookie);
        }
        req.send()
    };
    let one_header = vec![format!("{name}={}; {name}={}", s1.refresh, s2.refresh)];
    let two_headers = vec![
        format!("{name}={}", s1.refresh),
        format!("{name}={}", s2.refresh),
    ];
    let same_twice = vec![format!("{name}={}; {name}={}", s1.refresh, s1.refresh)];
    for path in ["/api/v1/auth/refresh", "/api/v1/auth/logout"] {
        for cookies in [&one_header, &two_headers, &same_twice] {
            let r = post(path, cookies.clone()).await.unwrap();
            // Nothing changes, not even the browser's cookie.
            assert_eq!(
                r.headers().get_all("set-cookie").iter().count(),
                0,
                "{path}"
            );
            problem(r, 401, "unauthenticated").await;
        }
    }
    // Both sessions are untouched: their access tokens work, each token refreshes once.
    for s in [&s1, &s2] {
        assert_eq!(
            app.get_auth("/api/v1/users/me", &s.access).await.status(),
            200
        );
    }
    assert_eq!(app.refresh(&s1.refresh).await.status(), 200);
    assert_eq!(app.refresh(&s2.refresh).await.status(), 200);
    // Nothing was taken for a reuse either.
    let events = app.audit_events().await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.action == "auth.refresh_reuse_detected" || e.action == "auth.logout")
            .count(),
        0
    );
    app.finish().await;
}

async fn login_from(app: &TestApp, forwarded_for: &str, email: &str, password: &str) -> Response {
    app.client
        .post(app.url("/api/v1/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

/// `RAMPART_LOCKOUT_SCOPE=email_ip` counts per email and client, and a client is its IPv6
/// network as for the per-IP limits: rotating addresses inside one /64 gets no new guesses.
async fn email_ip_lockout_keys_an_ipv6_client_by_its_network(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("RAMPART_TRUSTED_PROXIES", "127.0.0.0/8"),
            ("RAMPART_LOCKOUT_SCOPE", "email_ip"),
            ("RAMPART_LOGIN_MAX_FAILURES", "3"),
        ],
        OpenApiRouter::new(),
    )
    .await;
    let s = app.new_session("v6lock").await;
    let wrong = "wrong wrong wrong";
    // Three failures from three addresses of one /64 lock that network for the email.
    for host in ["2001:db8:7::1", "2001:db8:7::2", "2001:db8:7::3"] {
        assert_eq!(login_from(&app, host, &s.email, wrong).await.status(), 401);
    }
    let r = login_from(&app, "2001:db8:7::4", &s.email, crate::identity::PASSWORD).await;
    assert_eq!(
        r.status(),
        429,
        "a fourth address of the /64 escaped the lock"
    );
    // Another /64 is another client: its right password logs in.
    let r = login_from(&app, "2001:db8:8::1", &s.email, crate::identity::PASSWORD).await;
    assert_eq!(r.status(), 200);
    app.finish().await;
}

async fn forwarded_for_entries_with_ports_and_unparsable_clients(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("RAMPART_TRUSTED_PROXIES", "127.0.0.0/8")],
        OpenApiRouter::new(),
    )
    .await;
    let s = app.new_session("ports").await;
    for (forwarded_for, client) in [
        ("203.0.113.9:51234", "203.0.113.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("6.6.6.6, 198.51.100.7:80, 127.0.0.5:8080", "198.51.100.7"),
    ] {
        let r = login_from(&app, forwarded_for, &s.email, PASSWORD).await;
        assert_eq!(r.status(), 200, "{forwarded_for}");
        let body: Value = r.json().await.unwrap();
        let token = body["accessToken"].as_str().unwrap();
        let sessions: Value = app
            .get_auth("/api/v1/auth/sessions", token)
            .await
            .json()
            .await
            .unwrap();
        let current: Vec<&Value> = sessions["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["current"] == true)
            .collect();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0]["ipAddress"], client, "{forwarded_for}");
    }
    // Where the client should stand, something that is not an address: 400, never the
    // proxy's own address (whose budget every client would then share).
    for forwarded_for in [
        "nonsense",
        "nonsense, 127.0.0.5",
        "203.0.113.9, ",
        "[2001:db8::1",
        "203.0.113.9:99999",
    ] {
        let r = app
            .client
            .get(app.url("/.well-known/jwks.json"))
            .header("x-forwarded-for", forwarded_for)
            .send()
            .await
            .unwrap();
        refused_for(r, "header.x-forwarded-for").await;
        let r = login_from(&app, forwarded_for, &s.email, PASSWORD).await;
        refused_for(r, "header.x-forwarded-for").await;
    }
    // Garbage left of the client is never read.
    let r = login_from(&app, "nonsense, 198.51.100.7", &s.email, PASSWORD).await;
    assert_eq!(r.status(), 200);
    app.finish().await;
}

/// Variants of one app: without and (when `TEST_REDIS_URL` is set) with Redis, whose
/// limits are kept under a key of their own.
fn limit_variants() -> Vec<Option<String>> {
    let mut variants = vec![None];
    variants.extend(redis_url().map(Some));
    variants
}

async fn ipv6_clients_share_a_budget_per_network(backend: Backend) {
    for redis in limit_variants() {
        let mut env = vec![
            ("RAMPART_TRUSTED_PROXIES", "127.0.0.0/8"),
            ("RAMPART_LOGIN_RATE_PER_MINUTE", "1"),
        ];
        if let Some(url) = &redis {
            env.push(("REDIS_URL", url));
        }
        let app = TestApp::spawn_with(backend, &env, OpenApiRouter::new()).await;
        let email = crate::identity::unique_email("v6");
        let wrong = "wrong wrong wrong";
        let status = |forwarded_for: &'static str| {
            let app = &app;
            let email = &email;
            async move { login_from(app, forwarded_for, email, wrong).await.status() }
        };
        // One /64: the second address finds the budget used (also with a port).
        assert_eq!(status("2001:db8::1").await, 401);
        assert_eq!(status("2001:db8::2").await, 429, "{redis:?}");
        assert_eq!(status("[2001:db8::ffff:1]:443").await, 429, "{redis:?}");
        // Another /64 is another client.
        assert_eq!(status("2001:db8:0:1::1").await, 401, "{redis:?}");
        // An IPv4-mapped address is the IPv4 client.
        assert_eq!(status("1.2.3.4").await, 401, "{redis:?}");
        assert_eq!(status("::ffff:1.2.3.4").await, 429, "{redis:?}");
        // Audit records keep the full address; only limits use the network.
        let failed: Vec<Option<String>> = app
            .audit_events()
            .await
            .into_iter()
            .filter(|e| e.action == "auth.login_failed")
            .map(|e| e.ip_address)
            .collect();
        assert_eq!(
            failed,
            vec![
                Some("2001:db8::1".to_owned()),
                Some("2001:db8:0:1::1".to_owned()),
                Some("1.2.3.4".to_owned()),
            ]
        );
        app.finish().await;
    }
}

async fn parallel_requests_from_one_ipv6_network_share_one_budget(backend: Backend) {
    const BUDGET: usize = 3;
    const CLIENTS: usize = 12;
    for redis in limit_variants() {
        let budget = BUDGET.to_string();
        let mut env = vec![
            ("RAMPART_TRUSTED_PROXIES", "127.0.0.0/8"),
            ("RAMPART_LOGIN_RATE_PER_MINUTE", budget.as_str()),
        ];
        if let Some(url) = &redis {
            env.push(("REDIS_URL", url));
        }
        let app = Arc::new(TestApp::spawn_with(backend, &env, OpenApiRouter::new()).await);
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let tasks: Vec<_> = (1..=CLIENTS)
            .map(|i| {
                let app = app.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    // Every request from its own address of 2001:db8:0:7::/64.
                    let forwarded_for = format!("2001:db8:0:7:{i:x}::{i:x}");
                    let email = crate::identity::unique_email("rotating");
                    barrier.wait().await;
                    login_from(&app, &forwarded_for, &email, "wrong wrong wrong")
                        .await
                        .status()
                        .as_u16()
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.unwrap());
        }
        statuses.sort_unstable();
        let mut expected = vec![401; BUDGET];
        expected.extend(vec![429; CLIENTS - BUDGET]);
        assert_eq!(statuses, expected, "{redis:?}");
        Arc::try_unwrap(app).ok().unwrap().finish().await;
    }
}

async fn note_body_limit_applies_after_sanitising(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("notes").await;
    let link = r#"<a href="https://e.example">l</a>"#;
    let stored_link = r#"<a href="https://e.example" rel="noopener noreferrer">l</a>"#;
    // 20 000 characters or fewer as sent, over 20 000 once every link has its `rel`.
    let grows = link.repeat(20_000 / link.len());
    assert!(grows.chars().count() <= 20_000);
    assert!(stored_link.len() * (20_000 / link.len()) > 20_000);
    let r = app
        .call(
            Method::POST,
            "/api/v1/notes",
            &s.access,
            Some(json!({"title": "grows", "body": grows})),
        )
        .await;
    refused_for(r, "body").await;
    // At the limit once sanitised: accepted, and stored as sanitised.
    let fits = link.repeat(20_000 / stored_link.len());
    let r = app
        .call(
            Method::POST,
            "/api/v1/notes",
            &s.access,
            Some(json!({"title": "fits", "body": fits})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let note: Value = r.json().await.unwrap();
    assert_eq!(note["body"], stored_link.repeat(20_000 / stored_link.len()));
    // The same rule on update; the note is unchanged by the refused one.
    let path = format!("/api/v1/notes/{}", note["id"].as_str().unwrap());
    let r = app
        .call(
            Method::PATCH,
            &path,
            &s.access,
            Some(json!({"body": grows})),
        )
        .await;
    refused_for(r, "body").await;
    let r = app.get_auth(&path, &s.access).await;
    assert_eq!(r.json::<Value>().await.unwrap()["body"], note["body"]);
    app.finish().await;
}

async fn unpaginated_lists_refuse_unknown_query_parameters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("lists").await;
    for path in [
        "/api/v1/rbac/roles",
        "/api/v1/rbac/permissions",
        "/api/v1/auth/sessions",
    ] {
        assert_eq!(app.get_auth(path, &admin.access).await.status(), 200);
        for (query, field) in [
            ("foo=1", "query.foo"),
            ("limit=5", "query.limit"),
            ("cursor=abc", "query.cursor"),
            ("x", "query.x"),
        ] {
            let r = app
                .get_auth(&format!("{path}?{query}"), &admin.access)
                .await;
            refused_for(r, field).await;
        }
        // Authentication still comes first.
        problem(
            app.get(&format!("{path}?foo=1")).await,
            401,
            "unauthenticated",
        )
        .await;
    }
    app.finish().await;
}
