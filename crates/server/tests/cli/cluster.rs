//! Scale-out (issue 6): three `rampart serve` processes, as behind a load balancer, sharing
//! nothing but one PostgreSQL database and one Redis (under a prefix of their own).
//! What one instance decides, the others enforce: per-IP rate limits are one budget,
//! lockout and refresh-token rotation are one state, and a revocation or an RBAC change
//! made on one instance is refused by the others at worst 1 s after it was answered.
//!
//! Each test builds its own cluster: a fresh database migrated once with `rampart migrate`
//! (as a rollout would), one signing key generated with `rampart keys generate` and copied
//! to every instance's key directory, one `RAMPART_DATA_KEY`, and a unique
//! `RAMPART_REDIS_PREFIX`, so tests and parallel runs sharing one Redis stay apart.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{
    LoggedIn, PgDb, Server, Staleness, borrow, deployment_env, login, path_str, poll_until_status,
    register, run, run_with_stdin, status_and_body, tempdir, test_redis_url, try_login,
    try_refresh,
};

const PASSWORD: &str = "cluster test passphrase 41";
/// A change made on one instance is refused by the others this soon ("at once, on every
/// instance", contract §4 and §6; issue 11 sets the bound). Their caches expire after a
/// second on their own, so only the change's announcement meets it.
const BOUND: Duration = Duration::from_millis(100);
/// How long a poll waits for a change before the test fails (only a failing product waits
/// this long).
const GIVE_UP: Duration = Duration::from_secs(10);
const NAMES: [&str; 3] = ["A", "B", "C"];

struct Cluster {
    // Dropped in this order: the processes before their database and directory.
    nodes: Vec<Server>,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    _pg: PgDb,
}

impl Cluster {
    /// Three instances on a fresh database, with generous limits unless `overrides` says
    /// otherwise; `None` (skip) outside CI without `TEST_POSTGRES_URL`/`TEST_REDIS_URL`.
    async fn start(overrides: &[(&str, &str)]) -> Option<Cluster> {
        let redis = test_redis_url()?;
        let pg = PgDb::create().await?;
        let dir = tempdir();
        let (keys, mut env) = deployment_env(dir.path(), &pg.url, &redis).await;
        for name in [
            "RAMPART_RATE_LIMIT_PER_MINUTE",
            "RAMPART_LOGIN_RATE_PER_MINUTE",
            "RAMPART_REGISTER_RATE_PER_HOUR",
        ] {
            env.push((name.to_owned(), "100000".to_owned()));
        }
        for (k, v) in overrides {
            env.retain(|(name, _)| name != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }

        // A rollout migrates once, then starts the instances.
        let out = run(dir.path(), &borrow(&env), &["migrate"]).await;
        assert!(out.status.success(), "migrate: {}", out.stderr);

        // Each instance gets its own working directory and its own copy of the key set.
        let mut node_envs = Vec::new();
        for name in NAMES {
            let node_dir = dir.path().join(name);
            let node_keys = node_dir.join("keys");
            std::fs::create_dir_all(&node_keys).unwrap();
            for entry in std::fs::read_dir(&keys).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), node_keys.join(entry.file_name())).unwrap();
            }
            let mut node_env = env.clone();
            node_env.retain(|(k, _)| k != "RAMPART_JWT_KEYS_DIR");
            node_env.push(("RAMPART_JWT_KEYS_DIR".to_owned(), path_str(&node_keys)));
            node_envs.push((node_dir, node_env));
        }
        // Started together, as a rolling deploy or an autoscaler would.
        let envs: Vec<Vec<(&str, &str)>> = node_envs.iter().map(|(_, e)| borrow(e)).collect();
        let (a, b, c) = tokio::join!(
            Server::start(&node_envs[0].0, &envs[0], &["serve"]),
            Server::start(&node_envs[1].0, &envs[1], &["serve"]),
            Server::start(&node_envs[2].0, &envs[2], &["serve"]),
        );
        Some(Cluster {
            nodes: vec![a, b, c],
            env,
            dir,
            _pg: pg,
        })
    }

    fn abc(&self) -> (&Server, &Server, &Server) {
        (&self.nodes[0], &self.nodes[1], &self.nodes[2])
    }

    /// Bootstraps an administrator with `rampart admin create` and logs in on A.
    async fn admin(&self) -> LoggedIn {
        let email = "root@example.org";
        let out = run_with_stdin(
            self.dir.path(),
            &borrow(&self.env),
            &["admin", "create", "--email", email],
            &format!("{PASSWORD}\n"),
        )
        .await;
        assert!(out.status.success(), "admin create: {}", out.stderr);
        login(&self.nodes[0], email, PASSWORD).await
    }

    /// Stops every instance with SIGTERM; each must exit cleanly.
    async fn stop(mut self) {
        for (name, node) in NAMES.iter().zip(self.nodes.iter_mut()) {
            let status = node.stop_with("TERM").await;
            assert!(
                status.success(),
                "{name} exited with {status}: {}",
                node.log()
            );
        }
    }
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `GET /api/v1/auth/sessions`: authenticated through the session-liveness cache (unlike
/// `/users/me`, which always reads the database), so it shows what an instance trusts.
fn sessions(node: &Server, token: &str) -> reqwest::RequestBuilder {
    node.client
        .get(node.url("/api/v1/auth/sessions"))
        .bearer_auth(token)
}

/// Asserts that `token` works on every node (which also fills their caches).
async fn warm(nodes: &[&Server], token: &str) {
    for node in nodes {
        let (status, body) = status_and_body(sessions(node, token).send().await.unwrap()).await;
        assert_eq!(status, 200, "warming {}: {body}", node.base);
    }
}

/// Polls two instances at once until `token` is refused (401), from `since`.
async fn until_refused_on(
    what: &str,
    nodes: [(&str, &Server); 2],
    token: &str,
    since: Instant,
) -> [Staleness; 2] {
    let [(n1, s1), (n2, s2)] = nodes;
    let (w1, w2) = (format!("{what}, on {n1}"), format!("{what}, on {n2}"));
    let (x, y) = tokio::join!(
        poll_until_status(&w1, || sessions(s1, token), 200, 401, since, GIVE_UP),
        poll_until_status(&w2, || sessions(s2, token), 200, 401, since, GIVE_UP),
    );
    println!("{w1}: {x}");
    println!("{w2}: {y}");
    assert!(x.within(BOUND), "{w1}: later than {BOUND:?}: {x}");
    assert!(y.within(BOUND), "{w2}: later than {BOUND:?}: {y}");
    let (status, body) = status_and_body(sessions(s1, token).send().await.unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    [x, y]
}

#[tokio::test]
async fn the_login_rate_limit_is_one_budget_across_instances() {
    let Some(cluster) = Cluster::start(&[("RAMPART_LOGIN_RATE_PER_MINUTE", "4")]).await else {
        return;
    };
    let mut seen = Vec::new();
    for i in 0..7 {
        let node = &cluster.nodes[i % 3];
        // A different unknown email each time, so lockout plays no part.
        let r = try_login(
            node,
            &format!("nobody{i}@example.org"),
            "not the password 1",
        )
        .await;
        let wait = retry_after(&r);
        let (status, body) = status_and_body(r).await;
        seen.push((
            NAMES[i % 3],
            status,
            body["code"].as_str().map(str::to_owned),
            wait,
        ));
    }
    println!("login attempts round-robin over A, B, C: {seen:?}");
    for (i, (node, status, code, _)) in seen.iter().enumerate() {
        if i < 4 {
            assert_eq!(
                (*status, code.as_deref()),
                (401, Some("invalid_credentials")),
                "attempt {} on {node} should pass the limiter: {seen:?}",
                i + 1
            );
        } else {
            assert_eq!(
                (*status, code.as_deref()),
                (429, Some("rate_limited")),
                "attempt {} on {node} is over the shared budget of 4: {seen:?}",
                i + 1
            );
        }
    }
    for (node, _, _, wait) in &seen[4..] {
        // 4 per minute refills one attempt every 15 s.
        assert!(
            wait.is_some_and(|w| (1..=15).contains(&w)),
            "Retry-After on {node}: {wait:?}"
        );
    }
    cluster.stop().await;
}

#[tokio::test]
async fn the_global_rate_limit_is_one_budget_across_instances() {
    let Some(cluster) = Cluster::start(&[("RAMPART_RATE_LIMIT_PER_MINUTE", "6")]).await else {
        return;
    };
    let mut seen = Vec::new();
    for i in 0..9 {
        let node = &cluster.nodes[i % 3];
        let r = node
            .client
            .get(node.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap();
        let wait = retry_after(&r);
        let (status, body) = status_and_body(r).await;
        seen.push((
            NAMES[i % 3],
            status,
            body["code"].as_str().map(str::to_owned),
            wait,
        ));
    }
    println!("requests round-robin over A, B, C: {seen:?}");
    let statuses: Vec<u16> = seen.iter().map(|s| s.1).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 429, 429, 429],
        "6 per minute for the whole cluster: {seen:?}"
    );
    for (node, _, code, wait) in &seen[6..] {
        assert_eq!(code.as_deref(), Some("rate_limited"), "on {node}");
        assert!(
            wait.is_some_and(|w| (1..=10).contains(&w)),
            "Retry-After on {node}: {wait:?}"
        );
    }
    // Health routes are exempt, on every instance.
    for node in &cluster.nodes {
        let r = node
            .client
            .get(node.url("/health/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    cluster.stop().await;
}

#[tokio::test]
async fn a_logout_on_one_instance_is_refused_by_the_others_within_100_ms() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let (a, b, c) = cluster.abc();
    register(a, "leaver@example.org", PASSWORD).await;
    let s = login(a, "leaver@example.org", PASSWORD).await;
    warm(&[a, b, c], &s.access).await;

    let r = a
        .client
        .post(a.url("/api/v1/auth/logout"))
        .bearer_auth(&s.access)
        .send()
        .await
        .unwrap();
    let since = Instant::now();
    assert_eq!(r.status(), 204);
    until_refused_on("logout on A", [("B", b), ("C", c)], &s.access, since).await;
    // And on A itself, at once.
    assert_eq!(sessions(a, &s.access).send().await.unwrap().status(), 401);
    cluster.stop().await;
}

#[tokio::test]
async fn logout_all_and_a_password_change_reach_every_instance_within_100_ms() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let (a, b, c) = cluster.abc();
    let email = "mover@example.org";
    register(a, email, PASSWORD).await;

    // logout-all on A ends the sessions opened on A and on B, everywhere.
    let on_a = login(a, email, PASSWORD).await;
    let on_b = login(b, email, PASSWORD).await;
    warm(&[a, b, c], &on_a.access).await;
    warm(&[a, b, c], &on_b.access).await;
    let r = a
        .client
        .post(a.url("/api/v1/auth/logout-all"))
        .bearer_auth(&on_a.access)
        .send()
        .await
        .unwrap();
    let since = Instant::now();
    assert_eq!(r.status(), 204);
    tokio::join!(
        until_refused_on(
            "logout-all on A (its own session)",
            [("B", b), ("C", c)],
            &on_a.access,
            since
        ),
        until_refused_on(
            "logout-all on A (a session opened on B)",
            [("B", b), ("C", c)],
            &on_b.access,
            since
        ),
    );

    // A password change on A ends a session opened on C, everywhere.
    let on_c = login(c, email, PASSWORD).await;
    let changer = login(a, email, PASSWORD).await;
    warm(&[b, c], &on_c.access).await;
    warm(&[b, c], &changer.access).await;
    let new_password = "a fresh cluster passphrase 42";
    let r = a
        .client
        .post(a.url("/api/v1/auth/password"))
        .bearer_auth(&changer.access)
        .json(&json!({"currentPassword": PASSWORD, "newPassword": new_password}))
        .send()
        .await
        .unwrap();
    let since = Instant::now();
    assert_eq!(r.status(), 204);
    until_refused_on(
        "password change on A",
        [("B", b), ("C", c)],
        &on_c.access,
        since,
    )
    .await;
    until_refused_on(
        "password change on A (its own session)",
        [("B", b), ("C", c)],
        &changer.access,
        since,
    )
    .await;
    assert_eq!(try_login(b, email, PASSWORD).await.status(), 401);
    login(c, email, new_password).await;
    cluster.stop().await;
}

#[tokio::test]
async fn role_changes_on_one_instance_are_enforced_by_the_others_within_100_ms() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let (a, b, c) = cluster.abc();
    let admin = cluster.admin().await;
    let user_id = register(a, "reader@example.org", PASSWORD).await;
    let user = login(b, "reader@example.org", PASSWORD).await;

    let r = a
        .client
        .post(a.url("/api/v1/rbac/roles"))
        .bearer_auth(&admin.access)
        .json(&json!({"name": "auditor", "description": "Reads the audit trail", "permissions": ["audit:read"]}))
        .send()
        .await
        .unwrap();
    let (status, role) = status_and_body(r).await;
    assert_eq!(status, 201, "{role}");
    let role_id = role["id"].as_str().unwrap().to_owned();

    let audit = || {
        b.client
            .get(b.url("/api/v1/audit/events"))
            .bearer_auth(&user.access)
    };
    let set_roles = |roles: Value| {
        a.client
            .put(a.url(&format!("/api/v1/users/{user_id}/roles")))
            .bearer_auth(&admin.access)
            .json(&json!({"roles": roles}))
            .send()
    };
    // B has looked the user's permissions up (and cached them) before each change.
    let (status, body) = status_and_body(audit().send().await.unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));

    let mut figures = Vec::new();
    for (what, roles, old, new) in [
        ("role granted on A", json!(["user", "auditor"]), 403, 200),
        ("role removed on A", json!(["user"]), 200, 403),
        (
            "role granted again on A",
            json!(["user", "auditor"]),
            403,
            200,
        ),
    ] {
        let r = set_roles(roles).await.unwrap();
        let since = Instant::now();
        let (status, body) = status_and_body(r).await;
        assert_eq!(status, 200, "{what}: {body}");
        let s = poll_until_status(&format!("{what}, on B"), audit, old, new, since, GIVE_UP).await;
        println!("{what}, seen on B: {s}");
        assert!(s.within(BOUND), "{what}: later than {BOUND:?} on B: {s}");
        figures.push(s);
    }

    // Editing the role's permissions on C (not the assignment) reaches B too.
    let r = c
        .client
        .patch(c.url(&format!("/api/v1/rbac/roles/{role_id}")))
        .bearer_auth(&admin.access)
        .json(&json!({"permissions": []}))
        .send()
        .await
        .unwrap();
    let since = Instant::now();
    let (status, body) = status_and_body(r).await;
    assert_eq!(status, 200, "{body}");
    let s = poll_until_status(
        "audit:read taken from the role on C, on B",
        audit,
        200,
        403,
        since,
        GIVE_UP,
    )
    .await;
    println!("audit:read taken from the role on C, seen on B: {s}");
    assert!(
        s.within(BOUND),
        "role edit on C: later than {BOUND:?} on B: {s}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn refresh_token_reuse_is_detected_across_instances() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let (a, b, c) = cluster.abc();
    register(a, "rotor@example.org", PASSWORD).await;
    let first = login(a, "rotor@example.org", PASSWORD).await;
    // Rotated on B.
    let second = LoggedIn::from_response(try_refresh(b, &first.refresh).await).await;
    assert_ne!(second.refresh, first.refresh);
    warm(&[a, b, c], &second.access).await;

    // The rotated-away token comes back on C: reuse, the whole session ends.
    let r = try_refresh(c, &first.refresh).await;
    let since = Instant::now();
    let (status, body) = status_and_body(r).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated")),
        "{body}"
    );
    until_refused_on(
        "refresh reuse on C",
        [("A", a), ("B", b)],
        &second.access,
        since,
    )
    .await;
    // The newest refresh token of that session is dead too, on A.
    let (status, body) = status_and_body(try_refresh(a, &second.refresh).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated")),
        "{body}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_across_instances_admit_exactly_one() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let a = &cluster.nodes[0];
    register(a, "racer@example.org", PASSWORD).await;
    for round in 1..=3 {
        let s = login(a, "racer@example.org", PASSWORD).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(9));
        let mut tasks = Vec::new();
        for i in 0..9 {
            let node = &cluster.nodes[i % 3];
            let (client, url) = (node.client.clone(), node.url("/api/v1/auth/refresh"));
            let (barrier, cookie) = (barrier.clone(), format!("rampart_refresh={}", s.refresh));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let r = client
                    .post(url)
                    .header(reqwest::header::COOKIE, cookie)
                    .send()
                    .await
                    .unwrap();
                let (status, body) = status_and_body(r).await;
                (
                    NAMES[i % 3],
                    status,
                    body["code"].as_str().map(str::to_owned),
                )
            }));
        }
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap());
        }
        println!("round {round}: 9 concurrent refreshes of one token: {seen:?}");
        let ok = seen.iter().filter(|s| s.1 == 200).count();
        let refused = seen
            .iter()
            .filter(|s| s.1 == 401 && s.2.as_deref() == Some("unauthenticated"))
            .count();
        assert_eq!((ok, refused), (1, 8), "round {round}: {seen:?}");
    }
    cluster.stop().await;
}

#[tokio::test]
async fn lockout_is_shared_by_all_instances() {
    let Some(cluster) = Cluster::start(&[("RAMPART_LOGIN_MAX_FAILURES", "3")]).await else {
        return;
    };
    let (a, b, c) = cluster.abc();
    let email = "target@example.org";
    register(a, email, PASSWORD).await;
    for node in [a, b, c] {
        let (status, body) =
            status_and_body(try_login(node, email, "a wrong guess 123").await).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_credentials")),
            "{}: {body}",
            node.base
        );
    }
    // Three failures spread over three instances lock the email everywhere, even for
    // the right password.
    for (name, node) in NAMES.iter().zip([a, b, c]) {
        let r = try_login(node, email, PASSWORD).await;
        let wait = retry_after(&r);
        let (status, body) = status_and_body(r).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (429, Some("rate_limited")),
            "right password on {name} while locked: {body}"
        );
        assert!(
            wait.is_some_and(|w| (1..=900).contains(&w)),
            "Retry-After on {name}: {wait:?}"
        );
    }
    cluster.stop().await;
}

#[tokio::test]
async fn an_admin_ending_access_on_one_instance_is_enforced_by_the_others_within_100_ms() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let (a, b, c) = cluster.abc();
    let admin = cluster.admin().await;
    let disabled_id = register(a, "disabled@example.org", PASSWORD).await;
    let ended_id = register(a, "ended@example.org", PASSWORD).await;
    let disabled = login(b, "disabled@example.org", PASSWORD).await;
    let ended = login(c, "ended@example.org", PASSWORD).await;
    warm(&[b, c], &disabled.access).await;
    warm(&[b, c], &ended.access).await;

    // Disabling the user on A.
    let r = a
        .client
        .patch(a.url(&format!("/api/v1/users/{disabled_id}")))
        .bearer_auth(&admin.access)
        .json(&json!({"status": "disabled"}))
        .send()
        .await
        .unwrap();
    let since = Instant::now();
    let (status, body) = status_and_body(r).await;
    assert_eq!(status, 200, "{body}");
    until_refused_on(
        "user disabled on A",
        [("B", b), ("C", c)],
        &disabled.access,
        since,
    )
    .await;
    let (status, body) =
        status_and_body(try_login(c, "disabled@example.org", PASSWORD).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_credentials"))
    );

    // Ending every session of another user on A.
    let r = a
        .client
        .delete(a.url(&format!("/api/v1/users/{ended_id}/sessions")))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    let since = Instant::now();
    assert_eq!(r.status(), 204);
    until_refused_on(
        "sessions ended on A",
        [("B", b), ("C", c)],
        &ended.access,
        since,
    )
    .await;
    // That user may log in again.
    login(b, "ended@example.org", PASSWORD).await;
    cluster.stop().await;
}

/// The guide's least-privilege Redis user (`docs/redis/rampart.acl`), made on the shared
/// Redis under a name and prefix of one test's own; deleted on drop.
struct AclUser {
    admin_url: String,
    name: String,
    url: String,
    prefix: String,
}

impl AclUser {
    fn create(admin_url: &str) -> AclUser {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/redis/rampart.acl");
        let file = std::fs::read_to_string(&path).unwrap();
        let line = file
            .lines()
            .find(|l| l.starts_with("user "))
            .expect("a `user` line");
        // The guide shows the very same line.
        let guide = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/deployment.md"),
        )
        .unwrap();
        assert!(
            guide.contains(line),
            "docs/deployment.md must show `{line}`"
        );

        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let (name, prefix, password) = (
            format!("rampart_{suffix}"),
            format!("t_{suffix}"),
            format!("pw{suffix}"),
        );
        let mut tokens = line.split_whitespace();
        assert_eq!(
            (tokens.next(), tokens.next()),
            (Some("user"), Some("rampart"))
        );
        // Only the name, the password and the prefix differ from what the guide shows.
        let rule: Vec<String> = tokens
            .map(|t| match t {
                ">CHANGE-ME" => format!(">{password}"),
                "~rampart:*" => format!("~{prefix}:*"),
                "&rampart:*" => format!("&{prefix}:*"),
                other => {
                    assert!(!other.contains("rampart"), "{other}: a prefix to replace?");
                    other.to_owned()
                }
            })
            .collect();
        let mut args = vec!["ACL".to_owned(), "SETUSER".to_owned(), name.clone()];
        args.extend(rule);
        assert_eq!(redis_cli(admin_url, &args), "OK");

        let mut url = reqwest::Url::parse(admin_url).unwrap();
        url.set_username(&name).unwrap();
        url.set_password(Some(&password)).unwrap();
        AclUser {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
            prefix,
        }
    }

    /// Entries `ACL LOG` holds for this user (each a refused command, key or channel).
    fn denials(&self) -> usize {
        redis_cli(&self.admin_url, &["ACL", "LOG", "128"])
            .lines()
            .filter(|l| *l == self.name)
            .count()
    }
}

impl Drop for AclUser {
    fn drop(&mut self) {
        redis_cli(&self.admin_url, &["ACL", "DELUSER", &self.name]);
    }
}

/// `redis-cli -u url args…`, its standard output trimmed.
fn redis_cli(url: &str, args: &[impl AsRef<std::ffi::OsStr>]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["--no-auth-warning", "-u", url])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_redis_user_made_from_the_guides_acl_rule_serves_the_cluster_and_nothing_more() {
    let Some(redis) = test_redis_url() else {
        return;
    };
    let user = AclUser::create(&redis);
    let Some(cluster) = Cluster::start(&[
        ("REDIS_URL", &user.url),
        ("RAMPART_REDIS_PREFIX", &user.prefix),
        ("RAMPART_REGISTER_RATE_PER_HOUR", "3"),
    ])
    .await
    else {
        return;
    };
    let (a, b, c) = cluster.abc();

    // Readiness needs PING and the invalidation subscription, on every instance.
    for (name, node) in NAMES.iter().zip([a, b, c]) {
        let (status, body) = status_and_body(
            node.client
                .get(node.url("/health/ready"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, &body["checks"]["redis"]),
            (200, &"ok".into()),
            "{name}: {body}"
        );
    }
    assert_eq!(
        redis_cli(
            &redis,
            &["PUBSUB", "NUMSUB", &format!("{}:invalidate", user.prefix)]
        ),
        format!("{}:invalidate\n3", user.prefix),
        "every instance subscribed as the ACL user"
    );

    // The rate-limit script (EVALSHA, TIME, GET, SET) runs: one budget of 3 registrations.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let node = &cluster.nodes[i % 3];
        let r = node
            .client
            .post(node.url("/api/v1/auth/register"))
            .json(&json!({"email": format!("acl{i}@example.org"), "password": PASSWORD, "displayName": "T"}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [201, 201, 201, 429, 429], "one budget of 3");

    // Invalidation (PUBLISH) reaches the other instances.
    let s = login(a, "acl0@example.org", PASSWORD).await;
    warm(&[a, b, c], &s.access).await;
    let r = a
        .client
        .post(a.url("/api/v1/auth/logout"))
        .bearer_auth(&s.access)
        .send()
        .await
        .unwrap();
    let since = Instant::now();
    assert_eq!(r.status(), 204);
    until_refused_on("logout on A", [("B", b), ("C", c)], &s.access, since).await;

    // Nothing Rampart did was refused, and no instance had to fall back.
    assert_eq!(
        user.denials(),
        0,
        "ACL LOG: {}",
        redis_cli(&redis, &["ACL", "LOG", "10"])
    );
    for (name, node) in NAMES.iter().zip([a, b, c]) {
        let warnings: Vec<String> = node
            .log()
            .lines()
            .filter(|l| {
                serde_json::from_str::<Value>(l).is_ok_and(|v| v["level"] != "INFO")
                    || l.contains("NoPerm")
            })
            .map(str::to_owned)
            .collect();
        assert!(warnings.is_empty(), "{name} warned: {warnings:#?}");
    }

    // And nothing more: no server-wide commands, no key or channel outside the prefix.
    let outside = format!("other_{}:x", user.prefix);
    for args in [
        vec!["FLUSHALL"],
        vec!["CONFIG", "GET", "maxmemory"],
        vec!["KEYS", "*"],
        vec!["DEL", "x"],
        vec!["GET", outside.as_str()],
        vec!["SET", outside.as_str(), "1"],
        vec!["PUBLISH", "other:invalidate", "p"],
        vec!["ACL", "WHOAMI"],
    ] {
        let answer = redis_cli(&user.url, &args);
        assert!(
            answer.starts_with("NOPERM"),
            "{args:?} as the ACL user: {answer}"
        );
    }
    cluster.stop().await;
}
