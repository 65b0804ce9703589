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
