//! The request pipeline (contract §1–3) over real HTTP, on both stores.

use std::time::{Duration, Instant};

use axum::Json;
use rampart_api::AppState;
use rampart_api::extract::{ApiJson, ClientIp};
use rampart_api::routing::{Policy, undocumented};
use serde::Deserialize;
use utoipa::openapi::HttpMethod;
use utoipa_axum::router::OpenApiRouter;

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct EchoRequest {
    display_name: String,
    count: u32,
    note: Option<String>,
}

/// Routes that only tests mount; they go through exactly the production pipeline.
fn test_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(undocumented(
            HttpMethod::Post,
            "/api/v1/test/echo",
            Policy::Public,
            |ApiJson(req): ApiJson<EchoRequest>| async move {
                Json(serde_json::json!({"displayName": req.display_name, "count": req.count}))
            },
        ))
        .routes(undocumented(
            HttpMethod::Get,
            "/api/v1/test/ip",
            Policy::Public,
            |ClientIp(ip): ClientIp| async move { ip.to_string() },
        ))
        .routes(undocumented(
            HttpMethod::Get,
            "/api/v1/test/sleep/{ms}",
            Policy::Public,
            |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                "done"
            },
        ))
        .routes(undocumented(
            HttpMethod::Get,
            "/api/v1/test/panic",
            Policy::Public,
            || async {
                if std::hint::black_box(true) {
                    panic!("boom: secret internals");
                }
                "unreachable"
            },
        ))
}

async fn app_with(backend: Backend, env: &[(&str, &str)]) -> TestApp {
    TestApp::spawn_with(backend, env, test_routes()).await
}

backend_tests!(
    health_live_and_ready,
    ready_fails_when_database_is_gone,
    ready_checks_redis_when_configured,
    jwks_serves_public_keys_only,
    openapi_and_docs,
    docs_disabled_when_configured_off,
    unknown_route_and_wrong_method_are_problems,
    request_target_over_2048_is_414,
    body_over_limit_is_413,
    non_json_body_is_415,
    strict_json,
    request_id_kept_or_replaced,
    security_headers_everywhere,
    cors_allowlist,
    client_ip_from_trusted_proxy_only,
    rate_limit_answers_429_with_retry_after,
    route_and_method_checks_come_before_rate_limit,
    timeout_is_503,
    panic_is_a_generic_500,
    graceful_shutdown_finishes_in_flight_requests,
    shutdown_deadline_abandons_slow_requests,
);

async fn health_live_and_ready(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app.get("/health/live").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-request-id").is_some());
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
    let r = app.get("/health/ready").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["signingKey"], "ok");
    app.finish().await;
}

async fn ready_fails_when_database_is_gone(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    app.state.db.close().await;
    let body = problem(app.get("/health/ready").await, 503, "unavailable").await;
    assert_eq!(body["checks"]["database"], "failing");
    assert!(body["detail"].as_str().unwrap().contains("database"));
    // Liveness is about the process, not its dependencies.
    assert_eq!(app.get("/health/live").await.status(), 200);
    let _ = app.shutdown().await;
    app.finish().await;
}

async fn ready_checks_redis_when_configured(backend: Backend) {
    // Nothing listens on port 1: Redis is configured but down.
    let app = app_with(backend, &[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let body = problem(app.get("/health/ready").await, 503, "unavailable").await;
    assert_eq!(body["checks"]["redis"], "failing");
    assert_eq!(body["checks"]["database"], "ok");
    app.finish().await;
    let Some(url) = crate::harness::redis_url() else {
        return;
    };
    let app = app_with(backend, &[("REDIS_URL", url.as_str())]).await;
    // Ready means answering PING *and* subscribed to the invalidation channel: the
    // subscription is made by a background task, so on a loaded machine the first probe
    // may come before it. Ready within 5 s, then steadily.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let body = loop {
        let r = app.get("/health/ready").await;
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap();
        if status == 200 {
            break body;
        }
        assert_eq!(body["checks"]["redis"], "failing", "{body}");
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(body["checks"]["redis"], "ok");
    assert_eq!(app.get("/health/ready").await.status(), 200);
    app.finish().await;
}

async fn jwks_serves_public_keys_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app.get("/.well-known/jwks.json").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let keys = body["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["kid"], app.state.keys.active().kid());
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(key.get(private).is_none(), "private member {private}");
        }
    }
    app.finish().await;
}

async fn openapi_and_docs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in ["/health/live", "/health/ready", "/.well-known/jwks.json"] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from {doc}"
        );
    }
    // Swagger UI comes from the binary: the page and its script load without any CDN.
    let r = app.get("/docs/").await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
    assert!(!html.contains("https://"), "no external assets: {html}");
    let r = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(r.status(), 200);
    // The relaxed policy is for the docs only.
    let r = app.get("/health/live").await;
    assert_eq!(
        r.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    app.finish().await;
}

async fn docs_disabled_when_configured_off(backend: Backend) {
    let app = app_with(backend, &[("RAMPART_DOCS", "false")]).await;
    problem(app.get("/docs/").await, 404, "not_found").await;
    problem(app.get("/openapi.json").await, 404, "not_found").await;
    app.finish().await;
}

async fn unknown_route_and_wrong_method_are_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    problem(app.get("/api/v1/nope").await, 404, "not_found").await;
    problem(app.get("/nope").await, 404, "not_found").await;
    let r = app
        .client
        .delete(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("allow").is_some());
    problem(r, 405, "method_not_allowed").await;
    let r = app
        .client
        .post(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    problem(r, 405, "method_not_allowed").await;
    app.finish().await;
}

async fn request_target_over_2048_is_414(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long = format!("/health/live?q={}", "a".repeat(2100));
    problem(app.get(&long).await, 414, "uri_too_long").await;
    let fits = format!("/health/live?q={}", "a".repeat(2000));
    assert_eq!(app.get(&fits).await.status(), 200);
    app.finish().await;
}

async fn body_over_limit_is_413(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let big = format!(r#"{{"displayName":"{}","count":1}}"#, "x".repeat(80 * 1024));
    let r = app
        .client
        .post(app.url("/api/v1/test/echo"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    problem(r, 413, "payload_too_large").await;
    // Chunked, without Content-Length: still cut off at the limit.
    let mut raw = b"POST /api/v1/test/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for chunk in big.as_bytes().chunks(8192) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_request(&app, &raw).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    app.finish().await;
}

/// Sends bytes as they are and reads the whole answer (for what reqwest will not send).
async fn raw_request(app: &TestApp, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // The server may answer and close before reading everything; that is fine.
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn non_json_body_is_415(backend: Backend) {
    let app = app_with(backend, &[]).await;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=iso-8859-1",
        "application/jsonx",
    ] {
        let r = app
            .client
            .post(app.url("/api/v1/test/echo"))
            .header("content-type", ct)
            .body(r#"{"displayName":"a","count":1}"#)
            .send()
            .await
            .unwrap();
        problem(r, 415, "unsupported_media_type").await;
    }
    let r = app
        .client
        .post(app.url("/api/v1/test/echo"))
        .body(r#"{"displayName":"a","count":1}"#)
        .send()
        .await
        .unwrap();
    problem(r, 415, "unsupported_media_type").await;
    // Health routes skip the rate limits, not the body rules.
    let r = app
        .client
        .get(app.url("/health/live"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    problem(r, 415, "unsupported_media_type").await;
    let r = app
        .client
        .post(app.url("/api/v1/test/echo"))
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"displayName":"a","count":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.finish().await;
}

async fn strict_json(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let post = |body: &'static str| {
        app.client
            .post(app.url("/api/v1/test/echo"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases = [
        (
            r#"{"displayName":"a","count":1,"roles":["admin"]}"#,
            "roles",
        ),
        (r#"{"displayName":"a","count":"5"}"#, "count"),
        (r#"{"displayName":5,"count":1}"#, "displayName"),
        (r#"{"displayName":null,"count":1}"#, "displayName"),
        (r#"{"count":1}"#, "displayName"),
        (
            r#"{"displayName":"a","displayName":"b","count":1}"#,
            "displayName",
        ),
        (r#"{"displayName":"a","count":1.5}"#, "count"),
        (r#"{"displayName":"a","count":1"#, "body"),
        (r#""just a string""#, "body"),
    ];
    for (body, field) in cases {
        let doc = problem(post(body).await.unwrap(), 400, "validation_failed").await;
        let errors = doc["errors"].as_array().unwrap();
        assert!(errors.iter().any(|e| e["field"] == field), "{body}: {doc}");
        let text = doc.to_string();
        for leak in ["EchoRequest", "serde", "line 1", "struct", ".rs"] {
            assert!(!text.contains(leak), "{leak} leaked: {text}");
        }
    }
    let r = post(r#"{"displayName":"a","count":2,"note":null}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["count"], 2);
    app.finish().await;
}

async fn request_id_kept_or_replaced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .client
        .get(app.url("/api/v1/nope"))
        .header("x-request-id", "client-id_1.2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-id_1.2");
    let body = problem(r, 404, "not_found").await;
    assert_eq!(body["requestId"], "client-id_1.2");
    let too_long = "a".repeat(65);
    for bad in ["has space", too_long.as_str(), "semi;colon", "sl/ash"] {
        let r = app
            .client
            .get(app.url("/health/live"))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
    app.finish().await;
}

async fn security_headers_everywhere(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in ["/health/live", "/api/v1/nope", "/.well-known/jwks.json"] {
        let r = app.get(path).await;
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cross-origin-opener-policy"], "same-origin");
        assert_eq!(h["cross-origin-resource-policy"], "same-origin");
        let pp = h["permissions-policy"].to_str().unwrap();
        for feature in ["camera=()", "microphone=()", "geolocation=()"] {
            assert!(pp.contains(feature), "{pp}");
        }
        assert!(h.get("server").is_none());
        assert!(h.get("x-powered-by").is_none());
        // Development: no HSTS (production adds it; see the binary tests).
        assert!(h.get("strict-transport-security").is_none());
        if path.starts_with("/api/v1") {
            assert_eq!(h["cache-control"], "no-store");
            assert!(
                h.get_all("vary")
                    .iter()
                    .any(|v| v.to_str().unwrap().contains("Origin"))
            );
        }
    }
    app.finish().await;
}

async fn cors_allowlist(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Allowed origin: echoed (never `*`), with credentials.
    let r = app
        .client
        .get(app.url("/api/v1/nope"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    // Any other origin: no CORS header at all, but still Vary: Origin on /api/v1.
    for origin in [
        "https://evil.example",
        "https://app.example.evil",
        "null",
        "HTTPS://APP.EXAMPLE",
    ] {
        let r = app
            .client
            .get(app.url("/api/v1/nope"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{origin}"
        );
        assert!(
            r.headers()
                .get("access-control-allow-credentials")
                .is_none()
        );
        assert!(
            r.headers()
                .get_all("vary")
                .iter()
                .any(|v| v.to_str().unwrap().contains("Origin"))
        );
    }
    // Preflight: allowed → 204 with allow headers; disallowed → no allow headers.
    let pre = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let r = pre("https://app.example").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        r.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let r = pre("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert!(r.headers().get("access-control-allow-methods").is_none());
    assert_ne!(r.status(), 204);
    app.finish().await;
}

async fn client_ip_from_trusted_proxy_only(backend: Backend) {
    // Not trusted: the header is ignored.
    let app = app_with(backend, &[]).await;
    let r = app
        .client
        .get(app.url("/api/v1/test/ip"))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "127.0.0.1");
    app.finish().await;
    // Trusted loopback proxy: the rightmost untrusted hop is the client.
    let app = app_with(backend, &[("RAMPART_TRUSTED_PROXIES", "127.0.0.0/8")]).await;
    let r = app
        .client
        .get(app.url("/api/v1/test/ip"))
        .header("x-forwarded-for", "198.51.100.1, 203.0.113.7, 127.0.0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "203.0.113.7");
    app.finish().await;
}

async fn rate_limit_answers_429_with_retry_after(backend: Backend) {
    let app = app_with(
        backend,
        &[
            ("RAMPART_RATE_LIMIT_PER_MINUTE", "3"),
            ("RAMPART_TRUSTED_PROXIES", "127.0.0.0/8"),
        ],
    )
    .await;
    let from = |ip: &'static str| {
        app.client
            .get(app.url("/.well-known/jwks.json"))
            .header("x-forwarded-for", ip)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(from("192.0.2.1").await.unwrap().status(), 200);
    }
    let r = from("192.0.2.1").await.unwrap();
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=20).contains(&secs),
        "GCRA refill for 3/min is 20 s: {secs}"
    );
    problem(r, 429, "rate_limited").await;
    // Per client: another address still has its burst.
    assert_eq!(from("192.0.2.2").await.unwrap().status(), 200);
    // Health routes are exempt and do not use up the budget.
    for _ in 0..10 {
        let r = app
            .client
            .get(app.url("/health/ready"))
            .header("x-forwarded-for", "192.0.2.1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    app.finish().await;
}

async fn route_and_method_checks_come_before_rate_limit(backend: Backend) {
    let app = app_with(backend, &[("RAMPART_RATE_LIMIT_PER_MINUTE", "1")]).await;
    assert_eq!(app.get("/.well-known/jwks.json").await.status(), 200);
    problem(app.get("/.well-known/jwks.json").await, 429, "rate_limited").await;
    problem(app.get("/api/v1/unknown").await, 404, "not_found").await;
    let r = app
        .client
        .post(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    problem(r, 405, "method_not_allowed").await;
    // Rate limit before body checks: an oversized body from a limited client is 429.
    let r = app
        .client
        .post(app.url("/api/v1/test/echo"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    problem(r, 429, "rate_limited").await;
    app.finish().await;
}

async fn timeout_is_503(backend: Backend) {
    let app = app_with(backend, &[("RAMPART_REQUEST_TIMEOUT", "1")]).await;
    problem(app.get("/api/v1/test/sleep/3000").await, 503, "unavailable").await;
    app.finish().await;
}

async fn panic_is_a_generic_500(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let body = problem(app.get("/api/v1/test/panic").await, 500, "internal_error").await;
    assert!(!body.to_string().contains("boom"));
    // The server survives.
    assert_eq!(app.get("/health/live").await.status(), 200);
    app.finish().await;
}

async fn graceful_shutdown_finishes_in_flight_requests(backend: Backend) {
    let mut app = app_with(backend, &[("RAMPART_SHUTDOWN_TIMEOUT", "10")]).await;
    let slow = tokio::spawn(app.client.get(app.url("/api/v1/test/sleep/1500")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    app.shutdown().await.unwrap();
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "done");
    assert!(started.elapsed() < Duration::from_secs(5));
    // No new connections after shutdown.
    assert!(
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .is_err()
    );
    assert!(app.state.is_draining());
    app.finish().await;
}

async fn shutdown_deadline_abandons_slow_requests(backend: Backend) {
    let mut app = app_with(backend, &[("RAMPART_SHUTDOWN_TIMEOUT", "1")]).await;
    // 10 s of work against a 1 s deadline.
    let slow = tokio::spawn(app.client.get(app.url("/api/v1/test/sleep/10000")).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    app.shutdown().await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "deadline not enforced: {took:?}"
    );
    slow.abort();
    app.finish().await;
}
