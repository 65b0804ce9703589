//! Several instances sharing one database and one Redis (issue 6): rate limits enforced
//! once across instances, revocations and RBAC changes announced to every instance, and
//! what happens when Redis does not answer. Each "instance" is a full app with its own
//! state and caches, served on its own port. The real multi-process test is
//! `crates/server/tests/cli/cluster.rs`.

use std::time::{Duration, Instant};

use reqwest::Method;
use utoipa_axum::router::OpenApiRouter;

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem, redis_url};

backend_tests!(
    rate_limits_are_shared_through_redis,
    route_limits_are_shared_and_keyed_per_route,
    rate_limits_fall_back_to_memory_without_redis,
    logout_reaches_other_instances_at_once,
    role_changes_reach_other_instances_at_once,
    caches_expire_within_a_second_without_redis,
);

impl TestApp {
    /// Another instance of the same deployment: same database, signing keys, data key and
    /// Redis prefix, its own state and caches. It shares this app's clock too, as machines
    /// kept in time by NTP do: a test that moves one moves both.
    pub async fn sibling(&self, backend: Backend, env: &[(&str, &str)]) -> TestApp {
        use base64::Engine;
        let config = &self.state.config;
        let keys = config.jwt_keys_dir.display().to_string();
        let data_key = base64::engine::general_purpose::STANDARD
            .encode(config.data_key.as_ref().expect("set by spawn").expose());
        let mut all: Vec<(&str, &str)> = vec![
            ("DATABASE_URL", &config.database_url),
            ("RAMPART_JWT_KEYS_DIR", &keys),
            ("RAMPART_REDIS_PREFIX", &config.redis_prefix),
            ("RAMPART_DATA_KEY", &data_key),
        ];
        if let Some(url) = &config.redis_url {
            all.push(("REDIS_URL", url.expose()));
        }
        all.extend_from_slice(env);
        let clock = Some(self.clock.clone());
        TestApp::spawn_sharing(backend, &all, OpenApiRouter::new(), clock).await
    }

    /// Waits until `/health/ready` is 200 (with Redis: subscribed to invalidations).
    pub(crate) async fn until_ready(&self) {
        for _ in 0..200 {
            if self.get("/health/ready").await.status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("never became ready");
    }
}

async fn statuses(apps: &[&TestApp], path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(apps[i % apps.len()].get(path).await.status().as_u16());
    }
    out
}

async fn rate_limits_are_shared_through_redis(backend: Backend) {
    let Some(url) = redis_url() else { return };
    let env = [
        ("REDIS_URL", url.as_str()),
        ("RAMPART_RATE_LIMIT_PER_MINUTE", "4"),
    ];
    let a = TestApp::spawn_with(backend, &env, OpenApiRouter::new()).await;
    let b = a.sibling(backend, &env).await;
    // Alternating between the instances: four in all pass, not four each.
    let seen = statuses(&[&a, &b], "/.well-known/jwks.json", 4).await;
    assert_eq!(seen, vec![200; 4]);
    for app in [&a, &b] {
        let r = app.get("/.well-known/jwks.json").await;
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=15).contains(&retry), "{retry}");
        problem(r, 429, "rate_limited").await;
    }
    assert!(a.state.rate_limits.shared() && b.state.rate_limits.shared());
    // Another deployment (another prefix) on the same Redis has its own budget.
    let other = TestApp::spawn_with(backend, &env, OpenApiRouter::new()).await;
    assert_eq!(other.get("/.well-known/jwks.json").await.status(), 200);
    other.finish().await;
    b.finish().await;
    a.finish().await;
}

async fn route_limits_are_shared_and_keyed_per_route(backend: Backend) {
    let Some(url) = redis_url() else { return };
    let env = [
        ("REDIS_URL", url.as_str()),
        ("RAMPART_LOGIN_RATE_PER_MINUTE", "3"),
    ];
    let a = TestApp::spawn_with(backend, &env, OpenApiRouter::new()).await;
    let b = a.sibling(backend, &env).await;
    let mut seen = Vec::new();
    for i in 0..4 {
        let app = if i % 2 == 0 { &a } else { &b };
        seen.push(
            app.login("nobody@example.org", "wrong password 1234")
                .await
                .status(),
        );
    }
    assert_eq!(seen[..3], [401, 401, 401], "{seen:?}");
    assert_eq!(seen[3], 429, "{seen:?}");
    // The login limit does not spill over to other routes.
    assert_eq!(b.get("/.well-known/jwks.json").await.status(), 200);
    b.finish().await;
    a.finish().await;
}

async fn rate_limits_fall_back_to_memory_without_redis(backend: Backend) {
    // Nothing listens on port 1: Redis is configured but unreachable.
    let env = [
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("RAMPART_RATE_LIMIT_PER_MINUTE", "3"),
    ];
    let app = TestApp::spawn_with(backend, &env, OpenApiRouter::new()).await;
    let seen = statuses(&[&app], "/.well-known/jwks.json", 3).await;
    assert_eq!(seen, vec![200; 3], "the fallback admits the budget");
    problem(app.get("/.well-known/jwks.json").await, 429, "rate_limited").await;
    assert!(!app.state.rate_limits.shared());
    // Readiness names Redis, but the instance keeps serving.
    let body = problem(app.get("/health/ready").await, 503, "unavailable").await;
    assert_eq!(body["checks"]["redis"], "failing");
    app.finish().await;
}

/// Polls `path` on `app` with `token` until it answers `status`; returns how long it took.
async fn until_status(app: &TestApp, path: &str, token: &str, status: u16) -> Duration {
    let start = Instant::now();
    loop {
        if app.get_auth(path, token).await.status() == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{path} never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The route that reads session liveness through the cache (`/users/me` always reads the
/// database).
const CACHED: &str = "/api/v1/auth/sessions";

async fn logout_reaches_other_instances_at_once(backend: Backend) {
    let Some(url) = redis_url() else { return };
    let env = [("REDIS_URL", url.as_str())];
    let a = TestApp::spawn_with(backend, &env, OpenApiRouter::new()).await;
    let b = a.sibling(backend, &env).await;
    a.until_ready().await;
    b.until_ready().await;
    let s = a.new_session("fanout").await;
    // B caches the session as live, then A ends it.
    assert_eq!(b.get_auth(CACHED, &s.access).await.status(), 200);
    let r = a
        .call(Method::POST, "/api/v1/auth/logout", &s.access, None)
        .await;
    assert_eq!(r.status(), 204);
    let lag = until_status(&b, CACHED, &s.access, 401).await;
    eprintln!("logout on A refused on B after {lag:?}");
    // The cache alone would take about a second: this is the announcement.
    assert!(lag < Duration::from_millis(400), "{lag:?}");
    b.finish().await;
    a.finish().await;
}

async fn role_changes_reach_other_instances_at_once(backend: Backend) {
    let Some(url) = redis_url() else { return };
    let env = [("REDIS_URL", url.as_str())];
    let a = TestApp::spawn_with(backend, &env, OpenApiRouter::new()).await;
    let b = a.sibling(backend, &env).await;
    a.until_ready().await;
    b.until_ready().await;
    let admin = a.admin_session("fanadmin").await;
    let s = a.new_session("fanuser").await;
    a.make_role("auditor", &["audit:read"]).await;
    let roles = serde_json::json!({"roles": ["user", "auditor"]});
    let path = format!("/api/v1/users/{}/roles", s.user_id);
    let r = a.call(Method::PUT, &path, &admin.access, Some(roles)).await;
    assert_eq!(r.status(), 200);
    let lag = until_status(&b, "/api/v1/audit/events", &s.access, 200).await;
    assert!(lag < Duration::from_secs(1), "{lag:?}");
    // Revoked through A while B holds the grant in its cache.
    let r = a
        .call(
            Method::PUT,
            &path,
            &admin.access,
            Some(serde_json::json!({"roles": ["user"]})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let lag = until_status(&b, "/api/v1/audit/events", &s.access, 403).await;
    eprintln!("role revoked on A enforced on B after {lag:?}");
    assert!(lag < Duration::from_millis(400), "{lag:?}");
    b.finish().await;
    a.finish().await;
}

async fn caches_expire_within_a_second_without_redis(backend: Backend) {
    // Without Redis, nothing is announced: the one-second expiry is the bound.
    let a = TestApp::spawn(backend).await;
    let b = a.sibling(backend, &[]).await;
    let s = a.new_session("ttl").await;
    assert_eq!(b.get_auth(CACHED, &s.access).await.status(), 200);
    let r = a
        .call(Method::POST, "/api/v1/auth/logout", &s.access, None)
        .await;
    assert_eq!(r.status(), 204);
    let lag = until_status(&b, CACHED, &s.access, 401).await;
    eprintln!("logout on A refused on B (no Redis) after {lag:?}");
    assert!(lag <= Duration::from_millis(1100), "{lag:?}");
    b.finish().await;
    a.finish().await;
}
