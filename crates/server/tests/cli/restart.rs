//! What must survive a restart: tokens signed before a key rotation (the old key stays in
//! the directory, keeps verifying and stays in JWKS) and lockout counters (kept in the
//! database, not in memory).

use serde_json::{Value, json};

use crate::support::{Server, path_str, run, tempdir};

const PASSWORD: &str = "restart test passphrase 5d";

async fn post(server: &Server, path: &str, body: Value) -> reqwest::Response {
    server
        .client
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn tokens_and_lockouts_survive_a_key_rotation_and_restart() {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    let env = [
        ("RAMPART_JWT_KEYS_DIR", path_str(&keys)),
        ("RAMPART_JWT_ALG", "EdDSA".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = Server::start(dir.path(), &env, &[]).await;
    let email = "rotate@example.org";
    let r = post(
        &server,
        "/api/v1/auth/register",
        json!({"email": email, "password": PASSWORD, "displayName": "R"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = post(
        &server,
        "/api/v1/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    let old_token = r.json::<Value>().await.unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..5 {
        let r = post(
            &server,
            "/api/v1/auth/login",
            json!({"email": "victim@example.org", "password": "wrong wrong wrong"}),
        )
        .await;
        assert_eq!(r.status(), 401);
    }
    assert!(server.stop_with("TERM").await.success());

    let out = run(
        dir.path(),
        &env,
        &[
            "keys",
            "rotate",
            "--dir",
            &path_str(&keys),
            "--alg",
            "EdDSA",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
    let new_kid = out.stdout.trim().to_owned();

    let mut server = Server::start(dir.path(), &env, &[]).await;
    // The token signed with the previous key still works until it expires.
    let r = server
        .client
        .get(server.url("/api/v1/users/me"))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jwks: Value = server
        .client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_eq!(jwks["keys"][0]["kid"], new_kid.as_str());
    // New tokens carry the new kid.
    let r = post(
        &server,
        "/api/v1/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    let token = r.json::<Value>().await.unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    use base64::Engine;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
    // The lockout made before the restart still holds.
    let r = post(
        &server,
        "/api/v1/auth/login",
        json!({"email": "victim@example.org", "password": "wrong wrong wrong"}),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert!(server.stop_with("TERM").await.success());
}
