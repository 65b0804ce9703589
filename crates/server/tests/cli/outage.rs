//! Outages of the shared services, with real servers stopped and restarted (private ones,
//! see `private_services`): rampart degrades as the contract says and recovers without a
//! restart.
//!
//! - Redis down, either killed (connections refused) or frozen with SIGSTOP (connections
//!   open, nothing answers, as in a partition): `/health/ready` is 503 naming `redis`, but
//!   requests are served without long stalls; rate limits fall back to each instance's
//!   memory (still enforced, never a 500); revocation still reaches the other instances
//!   through the database within 1 s. Redis back: ready again, and the limit is one
//!   budget across instances again.
//! - PostgreSQL down: every request that needs it is 503 `unavailable` (never a 500, never
//!   a hang), `/health/ready` names `database`, `/health/live` stays 200. PostgreSQL back:
//!   the same process serves again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::private_services::{PrivatePostgres, PrivateRedis};
use crate::support::{
    LoggedIn, PgDb, Server, borrow, deployment_env, poll_until_status, run, status_and_body,
    tempdir,
};

const PASSWORD: &str = "outage test passphrase 63";
const BOUND: Duration = Duration::from_secs(1);

static NEXT_CLIENT: AtomicU32 = AtomicU32::new(1);

/// A client address of its own (IPv6 documentation range, RFC 3849; only ever a header
/// value) for one request, so that ordinary requests never spend the small per-IP budget
/// the rate-limit checks measure. The instances trust 127.0.0.1 as their proxy.
fn fresh_client() -> String {
    format!(
        // One /64 per client: limits key an IPv6 client by its network (RAMPART_IPV6_PREFIX).
        "2001:db8:{:x}::1",
        NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)
    )
}

fn req(node: &Server, method: Method, path: &str) -> RequestBuilder {
    node.client
        .request(method, node.url(path))
        .header("x-forwarded-for", fresh_client())
}

async fn send(what: &str, request: RequestBuilder) -> (u16, Value, Duration) {
    let started = Instant::now();
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer after {:?}: {e}", started.elapsed()));
    let (status, body) = status_and_body(response).await;
    let took = started.elapsed();
    assert_ne!(status, 500, "{what}: a 500: {body}");
    (status, body, took)
}

/// Polls `GET path` until it answers `want`, at most `give_up`; returns how long it took.
async fn until(node: &Server, path: &str, want: u16, give_up: Duration) -> (Duration, Value) {
    let since = Instant::now();
    loop {
        let (status, body, _) = send(path, node.client.get(node.url(path))).await;
        if status == want {
            return (since.elapsed(), body);
        }
        assert!(
            since.elapsed() < give_up,
            "{path} on {}: still {status} after {give_up:?}: {body}",
            node.base
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log lines of `node` at WARN or above, and those about Redis or rate limits.
fn warnings(node: &Server) -> String {
    node.lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            l.contains("\"WARN\"")
                || l.contains("\"ERROR\"")
                || l.contains("rate limits")
                || l.contains("invalidation")
        })
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sends `GET /.well-known/jwks.json` as client `ip`, round-robin over `nodes`, until the
/// first 429; returns the statuses. Never a 500; gives up after `max` requests.
async fn spend_budget(nodes: &[&Server], ip: &str, max: usize) -> Vec<(usize, u16)> {
    let mut seen = Vec::new();
    for i in 0..max {
        let node = nodes[i % nodes.len()];
        let response = node
            .client
            .get(node.url("/.well-known/jwks.json"))
            .header("x-forwarded-for", ip)
            .send()
            .await
            .unwrap();
        let has_retry_after = response
            .headers()
            .contains_key(reqwest::header::RETRY_AFTER);
        let (status, body) = status_and_body(response).await;
        seen.push((i % nodes.len(), status));
        assert!(
            status == 200 || status == 429,
            "request {i} as {ip}: {status} {body}"
        );
        if status == 429 {
            assert_eq!(body["code"], "rate_limited");
            assert!(has_retry_after, "429 without Retry-After");
            break;
        }
    }
    seen
}

#[derive(Clone, Copy, Debug)]
enum RedisFailure {
    /// Killed: connections are refused.
    Stopped,
    /// SIGSTOP: connections stay open and nothing answers, like a partition or a hung
    /// server; every call has to time out.
    Frozen,
}

/// Two instances on a private Redis and the shared PostgreSQL; Redis fails as `failure`
/// says, then comes back on the same address.
async fn redis_failure_and_recovery(failure: RedisFailure) {
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let Some(pg) = PgDb::create().await else {
        return;
    };
    let dir = tempdir();
    let (_, mut env) = deployment_env(dir.path(), &pg.url, &redis.url()).await;
    env.extend(
        [
            ("RAMPART_TRUSTED_PROXIES", "127.0.0.1/32"),
            // 10 a minute per client: one more request every 6 s, far slower than the checks.
            ("RAMPART_RATE_LIMIT_PER_MINUTE", "10"),
            ("RAMPART_LOGIN_RATE_PER_MINUTE", "100000"),
            ("RAMPART_REGISTER_RATE_PER_HOUR", "100000"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let out = run(dir.path(), &borrow(&env), &["migrate"]).await;
    assert!(out.status.success(), "migrate: {}", out.stderr);
    let (a_dir, b_dir) = (dir.path().join("A"), dir.path().join("B"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let node_env = borrow(&env);
    let (mut a, mut b) = tokio::join!(
        Server::start(&a_dir, &node_env, &["serve"]),
        Server::start(&b_dir, &node_env, &["serve"]),
    );
    let (a_pid, b_pid) = (a.child.id(), b.child.id());

    let (_, ready, _) = send("ready", a.client.get(a.url("/health/ready"))).await;
    assert_eq!(ready["checks"]["redis"], "ok", "{ready}");
    let (status, body, _) = send(
        "register",
        req(&a, Method::POST, "/api/v1/auth/register").json(
            &json!({"email": "steady@example.org", "password": PASSWORD, "displayName": "S"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let login = |node: &Server| {
        req(node, Method::POST, "/api/v1/auth/login")
            .json(&json!({"email": "steady@example.org", "password": PASSWORD}))
    };
    let first = LoggedIn::from_response(login(&a).send().await.unwrap()).await;

    match failure {
        RedisFailure::Stopped => redis.stop(),
        RedisFailure::Frozen => redis.freeze(),
    }
    for (name, node) in [("A", &a), ("B", &b)] {
        let (took, body) = until(node, "/health/ready", 503, Duration::from_secs(15)).await;
        println!(
            "{failure:?}: {name} not ready after {} ms: {body}",
            took.as_millis()
        );
        assert_eq!(body["code"], "unavailable", "{body}");
        assert_eq!(body["checks"]["redis"], "failing", "{body}");
        assert_eq!(body["checks"]["database"], "ok", "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains("redis")),
            "{body}"
        );
        let (status, _, _) = send("live", node.client.get(node.url("/health/live"))).await;
        assert_eq!(status, 200);
        // Authenticated requests are still served.
        let (status, body, took) = send(
            "sessions without Redis",
            req(node, Method::GET, "/api/v1/auth/sessions").bearer_auth(&first.access),
        )
        .await;
        println!(
            "{failure:?}: an authenticated request on {name} took {} ms",
            took.as_millis()
        );
        assert_eq!(status, 200, "{name}: {body}");
        assert!(took < Duration::from_secs(5), "{name}: {took:?}");
    }

    // A logout on A still reaches B (through the database, within the cache bound).
    let second = LoggedIn::from_response(login(&a).send().await.unwrap()).await;
    let sessions_on_b =
        || req(&b, Method::GET, "/api/v1/auth/sessions").bearer_auth(&second.access);
    let (status, body, _) = send("warm B", sessions_on_b()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = send(
        "logout on A",
        req(&a, Method::POST, "/api/v1/auth/logout").bearer_auth(&second.access),
    )
    .await;
    let since = Instant::now();
    assert_eq!(status, 204, "{body}");
    let s = poll_until_status(
        &format!("{failure:?}: logout on A, on B"),
        sessions_on_b,
        200,
        401,
        since,
        Duration::from_secs(10),
    )
    .await;
    println!("{failure:?}: logout on A seen on B: {s}");
    assert!(s.within(BOUND), "later than {BOUND:?}: {s}");

    // The global limit is still enforced, by each instance on its own.
    let seen = spend_budget(&[&a], "203.0.113.7", 40).await;
    println!("{failure:?}: one client on A: {seen:?}");
    let admitted = seen.iter().filter(|(_, s)| *s == 200).count();
    assert_eq!(
        seen.last().map(|s| s.1),
        Some(429),
        "never limited: {seen:?}"
    );
    assert!(
        admitted <= 11,
        "more than the limit of 10 admitted: {seen:?}"
    );

    // A frozen Redis keeps its connections open: each instance notices the dead
    // subscription because its own heartbeat stops coming back.
    if let RedisFailure::Frozen = failure {
        for (name, node) in [("A", &a), ("B", &b)] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !node.log().contains("invalidation heartbeat not received") {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name} never noticed the silent subscription: {}",
                    warnings(node)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    // Redis comes back on the same address: ready again, without restarting rampart.
    match failure {
        RedisFailure::Stopped => redis.restart().await,
        RedisFailure::Frozen => redis.thaw(),
    }
    for (name, node) in [("A", &a), ("B", &b)] {
        let (took, body) = until(node, "/health/ready", 200, Duration::from_secs(30)).await;
        println!(
            "{failure:?}, back: {name} ready after {} ms",
            took.as_millis()
        );
        assert_eq!(body["checks"]["redis"], "ok", "{body}");
        assert!(
            took < Duration::from_secs(10),
            "{name}: ready only after {took:?}"
        );
    }
    assert_eq!(
        (a.child.id(), b.child.id()),
        (a_pid, b_pid),
        "not restarted"
    );
    // And the limit is one budget across the two instances again as soon as readiness
    // says so: a successful readiness PING ends the limiter's back-off.
    let seen = spend_budget(&[&a, &b], "203.0.113.8", 40).await;
    println!("{failure:?}, back: one client alternating A, B: {seen:?}");
    let admitted = seen.iter().filter(|(_, s)| *s == 200).count();
    assert!(
        (10..=11).contains(&admitted) && seen.last().map(|s| s.1) == Some(429),
        "10 a minute for both instances together: {seen:?}\nA's warnings:\n{}\nB's warnings:\n{}",
        warnings(&a),
        warnings(&b)
    );
    let (status, _, _) = send(
        "the other instance, same client",
        b.client
            .get(b.url("/.well-known/jwks.json"))
            .header("x-forwarded-for", "203.0.113.8"),
    )
    .await;
    assert_eq!(status, 429);
    let (status, _, _) = send(
        "the other instance, same client",
        a.client
            .get(a.url("/.well-known/jwks.json"))
            .header("x-forwarded-for", "203.0.113.8"),
    )
    .await;
    assert_eq!(status, 429);

    for (name, node) in [("A", &mut a), ("B", &mut b)] {
        let status = node.stop_with("TERM").await;
        assert!(status.success(), "{name}: {status}: {}", node.log());
    }
}

#[tokio::test]
async fn a_stopped_redis_degrades_to_per_instance_limits_and_recovers_without_a_restart() {
    redis_failure_and_recovery(RedisFailure::Stopped).await;
}

#[tokio::test]
async fn a_frozen_redis_costs_bounded_latency_and_recovers_without_a_restart() {
    redis_failure_and_recovery(RedisFailure::Frozen).await;
}

#[tokio::test]
async fn a_postgres_outage_answers_503_and_recovers_without_a_restart() {
    let Some(mut pg) = PrivatePostgres::start().await else {
        return;
    };
    let dir = tempdir();
    let url = pg.url();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("RAMPART_JWT_ALG", "EdDSA"),
        ("RAMPART_COOKIE_SECURE", "false"),
        ("RAMPART_ARGON2_MEMORY_KIB", "256"),
        ("RAMPART_ARGON2_ITERATIONS", "1"),
        ("RAMPART_RATE_LIMIT_PER_MINUTE", "100000"),
        ("RAMPART_LOGIN_RATE_PER_MINUTE", "100000"),
        ("RAMPART_REGISTER_RATE_PER_HOUR", "100000"),
    ];
    let out = run(dir.path(), &env, &["migrate"]).await;
    assert!(out.status.success(), "migrate: {}", out.stderr);
    let mut server = Server::start(dir.path(), &env, &["serve"]).await;
    let pid = server.child.id();
    // Longer than any bound below, so a slow answer is measured rather than cut off.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap();
    let login = || {
        client
            .post(server.url("/api/v1/auth/login"))
            .json(&json!({"email": "patient@example.org", "password": PASSWORD}))
    };
    let register = |email: &str| {
        client
            .post(server.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD, "displayName": "P"}))
    };
    let (status, body, _) = send("register", register("patient@example.org")).await;
    assert_eq!(status, 201, "{body}");
    let token = LoggedIn::from_response(login().send().await.unwrap())
        .await
        .access;
    let me = || {
        client
            .get(server.url("/api/v1/users/me"))
            .bearer_auth(&token)
    };

    pg.stop().await;
    let mut failures = Vec::new();
    for (what, request) in [
        ("GET /users/me", me()),
        ("POST /auth/login", login()),
        ("POST /auth/register", register("newcomer@example.org")),
        (
            "GET /auth/sessions",
            client
                .get(server.url("/api/v1/auth/sessions"))
                .bearer_auth(&token),
        ),
    ] {
        let (status, body, took) = send(what, request).await;
        println!(
            "PostgreSQL stopped: {what} → {status} {} in {} ms",
            body["code"],
            took.as_millis()
        );
        if status != 503 || body["code"] != "unavailable" || took >= Duration::from_secs(10) {
            failures.push(format!("{what}: {status} in {took:?}: {body}"));
        }
    }
    assert!(
        failures.is_empty(),
        "expected 503 unavailable within 10 s:\n{}",
        failures.join("\n")
    );
    let (status, body, took) = send("ready", client.get(server.url("/health/ready"))).await;
    println!(
        "PostgreSQL stopped: /health/ready → {status} in {} ms",
        took.as_millis()
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["database"], "failing", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("database")),
        "{body}"
    );
    let (status, _, _) = send("live", client.get(server.url("/health/live"))).await;
    assert_eq!(status, 200);
    // What needs no database is still served.
    let (status, _, _) = send("jwks", client.get(server.url("/.well-known/jwks.json"))).await;
    assert_eq!(status, 200);

    // PostgreSQL comes back: the same process serves again.
    pg.restart().await;
    let since = Instant::now();
    loop {
        let (status, body, _) = send("GET /users/me while PostgreSQL returns", me()).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "still {status} {body} 30 s after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "PostgreSQL restarted: /users/me 200 again after {} ms",
        since.elapsed().as_millis()
    );
    let (status, body, _) = send("login after the outage", login()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = send("register after the outage", register("late@example.org")).await;
    assert_eq!(status, 201, "{body}");
    let (status, body, _) = send("ready", client.get(server.url("/health/ready"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.child.id(), pid, "not restarted");
    assert!(server.stop_with("TERM").await.success(), "{}", server.log());
}
