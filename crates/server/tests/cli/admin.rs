//! `rampart admin create --email E [--promote-existing]` (contract §9): the password comes
//! from stdin and must pass the registration policy; of concurrent runs for one email
//! exactly one creates; an existing account is promoted only with `--promote-existing` and
//! its own password, never when disabled or deleted. There is no default admin.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::{PgDb, Server, rampart, run, tempdir};

const STRONG: &str = "an admin passphrase 77c";
const MEMBER_PASSWORD: &str = "quiet river stones 123";

async fn admin_create(
    dir: &std::path::Path,
    env: &[(&str, &str)],
    email: &str,
    stdin: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let mut child = rampart(dir, env)
        .args(["admin", "create", "--email", email])
        .args(extra)
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

/// Logs in and returns the roles of the user view.
async fn login_roles(server: &Server, email: &str, password: &str) -> Value {
    let r = server
        .client
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "login of {email}");
    let body: Value = r.json().await.unwrap();
    body["user"]["roles"].clone()
}

async fn register(server: &Server, email: &str) -> String {
    let r = server
        .client
        .post(server.url("/api/v1/auth/register"))
        .json(&json!({"email": email, "password": MEMBER_PASSWORD, "displayName": "M"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn bootstrap(env: &[(&str, &str)]) {
    let dir = tempdir();
    let out = run(dir.path(), env, &["migrate"]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("permissions:"), "{}", out.stdout);

    // Weak passwords are refused by the same policy as registration.
    for weak in ["short\n", "password1234\n", "admin.boss is my password\n"] {
        let (code, _, stderr) =
            admin_create(dir.path(), env, "admin.boss@example.org", weak, &[]).await;
        assert_eq!(code, 1, "{weak:?} accepted");
        assert!(stderr.contains("password refused"), "{stderr}");
        assert!(!stderr.contains(weak.trim()), "password echoed: {stderr}");
    }
    // Two runs at once for one email: exactly one creates, the other changes nothing.
    let stdin = format!("{STRONG}\n");
    let (first, second) = tokio::join!(
        admin_create(dir.path(), env, "admin.boss@example.org", &stdin, &[]),
        admin_create(dir.path(), env, "Admin.Boss@example.org", &stdin, &[]),
    );
    let mut outcomes = [first, second];
    outcomes.sort_by_key(|(code, _, _)| *code);
    let [(won, won_out, won_err), (lost, _, lost_err)] = outcomes;
    assert_eq!((won, lost), (0, 1), "{won_err} / {lost_err}");
    assert!(won_out.contains("created admin"), "{won_out}");
    assert!(
        lost_err.contains("already belongs to an account; nothing changed"),
        "{lost_err}"
    );
    assert_eq!(lost_err.lines().count(), 1, "{lost_err}");

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
    let roles_changed = || async {
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
        events["items"].as_array().unwrap().clone()
    };
    assert_eq!(roles_changed().await.len(), 1);

    // An account someone registered first is never promoted by a plain create, even when
    // stdin holds its password.
    register(&server, "member@example.org").await;
    let member_stdin = format!("{MEMBER_PASSWORD}\n");
    let (code, stdout, stderr) =
        admin_create(dir.path(), env, "Member@Example.org", &member_stdin, &[]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stderr.contains("already belongs to an account; nothing changed")
            && stderr.contains("--promote-existing"),
        "{stderr}"
    );
    assert_eq!(
        login_roles(&server, "member@example.org", MEMBER_PASSWORD).await,
        json!(["user"])
    );
    // --promote-existing with a wrong or empty password: refused, nothing changed.
    for wrong in [format!("{STRONG}\n"), "\n".to_owned()] {
        let (code, stdout, stderr) = admin_create(
            dir.path(),
            env,
            "member@example.org",
            &wrong,
            &["--promote-existing"],
        )
        .await;
        assert_eq!(code, 1, "{stdout}");
        assert!(
            stderr.contains("is not the password of member@example.org; nothing changed"),
            "{stderr}"
        );
        assert!(!stderr.contains(STRONG), "password echoed: {stderr}");
    }
    assert_eq!(
        login_roles(&server, "member@example.org", MEMBER_PASSWORD).await,
        json!(["user"])
    );
    // With the account's own password: promoted, password unchanged.
    let (code, stdout, stderr) = admin_create(
        dir.path(),
        env,
        "Member@Example.org",
        &member_stdin,
        &["--promote-existing"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("promoted"), "{stdout}");
    assert_eq!(
        login_roles(&server, "member@example.org", MEMBER_PASSWORD).await,
        json!(["admin", "user"])
    );
    // Again: nothing left to do.
    let (code, stdout, stderr) = admin_create(
        dir.path(),
        env,
        "member@example.org",
        &member_stdin,
        &["--promote-existing"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("is already an admin; nothing changed"),
        "{stdout}"
    );

    // A disabled or deleted account is refused, its right password notwithstanding.
    for (email, change) in [
        ("disabled@example.org", "disabled"),
        ("deleted@example.org", "deleted"),
    ] {
        let id = register(&server, email).await;
        let request = if change == "disabled" {
            server
                .client
                .patch(server.url(&format!("/api/v1/users/{id}")))
                .json(&json!({"status": "disabled"}))
        } else {
            server
                .client
                .delete(server.url(&format!("/api/v1/users/{id}")))
        };
        let r = request.bearer_auth(&token).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let (code, stdout, stderr) = admin_create(
            dir.path(),
            env,
            email,
            &member_stdin,
            &["--promote-existing"],
        )
        .await;
        assert_eq!(code, 1, "{stdout}");
        assert!(
            stderr.contains(&format!("belongs to a {change} account; nothing changed")),
            "{stderr}"
        );
    }
    // One event for the creation, one for the promotion.
    let events = roles_changed().await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["details"]["passwordVerified"], true, "{events:?}");
    let log = server.log();
    assert!(server.stop_with("TERM").await.success());
    assert!(!log.contains(STRONG));
    assert!(!log.contains(MEMBER_PASSWORD));
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
