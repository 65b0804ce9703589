//! Permission checks cost no database round trip on a warm cache (issue: "measure queries
//! per request"). The server logs every SQL statement it runs (`sqlx::query` at debug)
//! inside the request's span, so statements can be counted per request id.

use std::collections::BTreeMap;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::{Server, rampart, run, tempdir};

const PASSWORD: &str = "query counting passphrase 1";

#[tokio::test]
async fn a_warm_permission_check_adds_no_query() {
    let dir = tempdir();
    let env = [
        ("RAMPART_JWT_ALG", "EdDSA"),
        ("RAMPART_LOG_LEVEL", "info,sqlx::query=debug"),
    ];
    assert!(run(dir.path(), &env, &["migrate"]).await.status.success());
    let mut child = rampart(dir.path(), &env)
        .args(["admin", "create", "--email", "counter@example.org"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    assert!(child.wait().await.unwrap().success());

    let mut server = Server::start(dir.path(), &env, &[]).await;
    let login: Value = server
        .client
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"email": "counter@example.org", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["accessToken"].as_str().unwrap().to_owned();
    let me = login["user"]["id"].as_str().unwrap().to_owned();
    // GET /users/{id} needs users:read; its handler makes one query of its own.
    let get = |rid: String| {
        server
            .client
            .get(server.url(&format!("/api/v1/users/{me}")))
            .bearer_auth(&token)
            .header("x-request-id", rid)
            .send()
    };
    assert_eq!(get("cold".into()).await.unwrap().status(), 200);
    for i in 0..20 {
        assert_eq!(get(format!("warm-{i}")).await.unwrap().status(), 200);
    }
    assert!(server.stop_with("TERM").await.success());

    let mut per_request: BTreeMap<String, usize> = BTreeMap::new();
    for line in server.log().lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["target"] == "sqlx::query"
            && let Some(rid) = v["span"]["request_id"].as_str()
        {
            *per_request.entry(rid.to_owned()).or_default() += 1;
        }
    }
    let cold = per_request.get("cold").copied().unwrap_or_default();
    let warm: Vec<usize> = (0..20)
        .map(|i| {
            per_request
                .get(&format!("warm-{i}"))
                .copied()
                .unwrap_or_default()
        })
        .collect();
    // Cold: session liveness + permissions + the handler's own read.
    assert!(
        cold >= 2,
        "cold request made {cold} queries: {per_request:?}"
    );
    // Warm: the handler's own read only (a cache entry may expire once mid-run).
    let ones = warm.iter().filter(|n| **n == 1).count();
    assert!(ones >= 18, "warm requests: {warm:?}");
    assert!(
        warm.iter().all(|n| *n >= 1),
        "the handler's own query is logged: {warm:?}"
    );
}
