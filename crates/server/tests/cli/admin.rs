//! `rampart admin create --email E`: the password comes from stdin and must pass the
//! registration policy; an existing account is promoted. There is no default admin.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::{PgDb, Server, rampart, run, tempdir};

const STRONG: &str = "an admin passphrase 77c";

async fn admin_create(
    dir: &std::path::Path,
    env: &[(&str, &str)],
    email: &str,
    stdin: &str,
) -> (i32, String, String) {
    let mut child = rampart(dir, env)
        .args(["admin", "create", "--email", email])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn bootstrap(env: &[(&str, &str)]) {
    let dir = tempdir();
    let out = run(dir.path(), env, &["migrate"]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("permissions:"), "{}", out.stdout);

    // Weak passwords are refused by the same policy as registration.
    for weak in ["short\n", "password1234\n", "admin.boss is my password\n"] {
        let (code, _, stderr) = admin_create(dir.path(), env, "admin.boss@example.org", weak).await;
        assert_eq!(code, 1, "{weak:?} accepted");
        assert!(stderr.contains("password refused"), "{stderr}");
        assert!(!stderr.contains(weak.trim()), "password echoed: {stderr}");
    }
    let (code, stdout, stderr) = admin_create(
        dir.path(),
        env,
        "admin.boss@example.org",
        &format!("{STRONG}\n"),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("created admin"), "{stdout}");

    let mut server = Server::start(dir.path(), env, &[]).await;
    let r = server
        .client
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"email": "admin.boss@example.org", "password": STRONG}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"]["roles"], json!(["admin", "user"]));
    let token = body["accessToken"].as_str().unwrap().to_owned();
    let events: Value = server
        .client
        .get(server.url("/api/v1/audit/events?action=user.roles_changed"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["items"].as_array().unwrap().len(), 1, "{events}");

    // An existing member is promoted and keeps its password.
    let r = server
        .client
        .post(server.url("/api/v1/auth/register"))
        .json(&json!({"email": "member@example.org", "password": "quiet river stones 123", "displayName": "M"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (code, stdout, stderr) = admin_create(dir.path(), env, "Member@Example.org", "\n").await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("promoted"), "{stdout}");
    let r = server
        .client
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"email": "member@example.org", "password": "quiet river stones 123"}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"]["roles"], json!(["admin", "user"]));
    let log = server.log();
    assert!(server.stop_with("TERM").await.success());
    assert!(!log.contains(STRONG));
}

#[tokio::test]
async fn admin_create_on_sqlite() {
    bootstrap(&[("RAMPART_JWT_ALG", "EdDSA")]).await;
}

#[tokio::test]
async fn admin_create_on_postgres() {
    let Some(pg) = PgDb::create().await else {
        return;
    };
    bootstrap(&[
        ("RAMPART_JWT_ALG", "EdDSA"),
        ("DATABASE_URL", pg.url.as_str()),
    ])
    .await;
}
