//! `rampart keys generate` and `rampart keys rotate`.

use crate::support::{Server, path_str, run, tempdir};

fn active(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("active"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn generate_then_rotate() {
    let dir = tempdir();
    let keys = dir.path().join("k");
    let d = path_str(&keys);
    let out = run(
        dir.path(),
        &[],
        &["keys", "generate", "--dir", &d, "--alg", "EdDSA"],
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
    let first = out.stdout.trim().to_owned();
    assert_eq!(first.len(), 43, "a base64url SHA-256 thumbprint: {first}");
    assert_eq!(active(&keys), first, "the first key becomes active");

    let out = run(
        dir.path(),
        &[],
        &["keys", "generate", "--dir", &d, "--alg", "EdDSA"],
    )
    .await;
    let second = out.stdout.trim().to_owned();
    assert_ne!(second, first);
    assert_eq!(
        active(&keys),
        first,
        "generate does not change the active key"
    );

    let out = run(
        dir.path(),
        &[],
        &["keys", "rotate", "--dir", &d, "--alg", "EdDSA"],
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
    let third = out.stdout.trim().to_owned();
    assert_eq!(active(&keys), third, "rotate activates the new key");

    // Every key in the directory is published; the active one first.
    let mut server = Server::start(
        dir.path(),
        &[("RAMPART_JWT_KEYS_DIR", &d), ("RAMPART_JWT_ALG", "EdDSA")],
        &[],
    )
    .await;
    let jwks: serde_json::Value = server
        .client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 3);
    assert_eq!(kids[0], third);
    assert!(kids.contains(&first.as_str()) && kids.contains(&second.as_str()));
    assert!(server.stop_with("TERM").await.success());

    let out = run(
        dir.path(),
        &[],
        &["keys", "generate", "--dir", &d, "--alg", "HS256"],
    )
    .await;
    assert!(!out.status.success());
}

#[tokio::test]
async fn rsa_is_the_default_algorithm() {
    let dir = tempdir();
    let keys = dir.path().join("k");
    let out = run(
        dir.path(),
        &[],
        &["keys", "generate", "--dir", &path_str(&keys)],
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
    let kid = out.stdout.trim();
    let pem = std::fs::read_to_string(keys.join(format!("{kid}.pem"))).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // PKCS#8 RSA-3072 is about 2.4 KB of PEM; Ed25519 is about 120 bytes.
    assert!(pem.len() > 2000, "{}", pem.len());
}

/// The recovery the operations guide gives for a lost key directory whose `active` file
/// survived: `keys generate` does not help (an `active` file exists, so the new key stays
/// inactive and production still refuses to start); restoring the file or `keys rotate`
/// (which replaces `active`) does.
#[tokio::test]
async fn a_lost_active_key_is_repaired_by_restoring_it_or_by_rotate_not_by_generate() {
    let dir = tempdir();
    let keys = dir.path().join("k");
    let d = path_str(&keys);
    let db = format!("sqlite://{}", dir.path().join("prod.db").display());
    let env = [
        ("RAMPART_ENV", "production"),
        ("RAMPART_JWT_KEYS_DIR", d.as_str()),
        ("RAMPART_JWT_ALG", "EdDSA"),
        ("RAMPART_ALLOWED_ORIGINS", "https://app.example"),
        (
            "RAMPART_DATA_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ),
        ("RAMPART_SMTP_URL", "smtps://mailer:pw@mail.example:465"),
        ("RAMPART_PUBLIC_URL", "https://api.example"),
        ("DATABASE_URL", db.as_str()),
    ];
    let mut refused_env = env.to_vec();
    refused_env.push(("RAMPART_BIND", "127.0.0.1:0"));
    let keys_cmd = |command: &'static str| {
        let (dir, d) = (dir.path().to_owned(), d.clone());
        async move { run(&dir, &[], &["keys", command, "--dir", &d, "--alg", "EdDSA"]).await }
    };
    let out = keys_cmd("generate").await;
    assert!(out.status.success(), "{}", out.stderr);
    let lost = out.stdout.trim().to_owned();
    let out = run(dir.path(), &env, &["migrate"]).await;
    assert!(out.status.success(), "{}", out.stderr);

    let pem = keys.join(format!("{lost}.pem"));
    let backup = std::fs::read(&pem).unwrap();
    std::fs::remove_file(&pem).unwrap();
    let out = run(dir.path(), &refused_env, &["serve"]).await;
    assert!(!out.status.success(), "started without its active key");
    // (The wording of this refusal is production configuration's: not asserted here.)
    assert!(
        out.stderr.contains("RAMPART_JWT_KEYS_DIR"),
        "{}",
        out.stderr
    );

    // `keys generate` adds a key but leaves the dangling `active` alone: still refused.
    let out = keys_cmd("generate").await;
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(active(&keys), lost);
    let out = run(dir.path(), &refused_env, &["serve"]).await;
    assert!(!out.status.success(), "generate repaired nothing");

    // Restoring the file from a backup: starts, signing with the same key as before.
    std::fs::write(&pem, &backup).unwrap();
    std::fs::set_permissions(&pem, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut server = Server::start(dir.path(), &env, &["serve"]).await;
    server.stop_with("TERM").await;

    // Without a backup: `keys rotate` makes a new key active.
    std::fs::remove_file(&pem).unwrap();
    let out = keys_cmd("rotate").await;
    assert!(out.status.success(), "{}", out.stderr);
    let new = out.stdout.trim().to_owned();
    assert_eq!(active(&keys), new);
    let mut server = Server::start(dir.path(), &env, &["serve"]).await;
    let jwks: serde_json::Value = server
        .client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], new.as_str(), "{jwks}");
    server.stop_with("TERM").await;
}

/// Contract §9: the JWKS publishes only keys of RAMPART_JWT_ALG. An RS256 key left in an
/// EdDSA deployment's directory verifies none of its tokens, so it is not offered to other
/// verifiers either.
#[tokio::test]
async fn jwks_publishes_only_keys_of_the_configured_algorithm() {
    let dir = tempdir();
    let keys = dir.path().join("k");
    let d = path_str(&keys);
    let generate = |alg: &'static str| {
        let (dir, d) = (dir.path().to_path_buf(), d.clone());
        async move {
            let out = run(&dir, &[], &["keys", "generate", "--dir", &d, "--alg", alg]).await;
            assert!(out.status.success(), "{}", out.stderr);
            out.stdout.trim().to_owned()
        }
    };
    let ed = generate("EdDSA").await;
    let rsa = generate("RS256").await;
    assert_eq!(active(&keys), ed);

    let mut server = Server::start(
        dir.path(),
        &[("RAMPART_JWT_KEYS_DIR", &d), ("RAMPART_JWT_ALG", "EdDSA")],
        &[],
    )
    .await;
    let jwks: serde_json::Value = server
        .client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [ed.as_str()], "not {rsa}: {jwks}");
    assert!(server.stop_with("TERM").await.success());
}
