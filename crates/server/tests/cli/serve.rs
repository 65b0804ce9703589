//! Development start-up with no setup, the TOML config file, PostgreSQL, graceful shutdown.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::support::{PgDb, Server, keys_dir, run, tempdir};

#[tokio::test]
async fn first_start_generates_an_rs256_key_and_later_starts_reuse_it() {
    let dir = tempdir();
    let mut server = Server::start(dir.path(), &[], &[]).await;
    let keys = keys_dir(dir.path());
    let kid = std::fs::read_to_string(keys.join("active")).unwrap();
    let kid = kid.trim().to_owned();
    let pem = keys.join(format!("{kid}.pem"));
    let mode = std::fs::metadata(&pem).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key must be owner-only");
    assert!(dir.path().join("data").join("rampart.db").exists());

    let jwks: serde_json::Value = server
        .client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kid"], kid.as_str());
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["kty"], "RSA");
    // 3072-bit modulus: 384 bytes → 512 base64url characters.
    assert_eq!(key["n"].as_str().unwrap().len(), 512);
    assert!(server.stop_with("TERM").await.success());

    let mut again = Server::start(dir.path(), &[], &["serve"]).await;
    let active = std::fs::read_to_string(keys.join("active")).unwrap();
    assert_eq!(active.trim(), kid, "the key is reused, not regenerated");
    let pems = std::fs::read_dir(&keys)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "pem")
        })
        .count();
    assert_eq!(pems, 1, "the signing key is reused, not regenerated");
    // The development data key (field encryption) lives beside it, owner-only too.
    let data_key = keys.join("data.key");
    assert_eq!(
        std::fs::metadata(&data_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(again.stop_with("INT").await.success());
}

/// Contract §9: SQLite files are created 0600 (the `-wal` and `-shm` too) and the
/// directories Rampart creates for them 0700, in every environment: the file holds
/// password hashes and sealed secrets.
#[tokio::test]
async fn sqlite_files_and_their_new_directories_are_private() {
    let dir = tempdir();
    let mut server = Server::start(
        dir.path(),
        &[
            ("RAMPART_JWT_ALG", "EdDSA"),
            ("DATABASE_URL", "sqlite://./db/nested/rampart.db"),
        ],
        &[],
    )
    .await;
    let mode = |p: std::path::PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    let db = dir.path().join("db");
    for file in ["rampart.db", "rampart.db-wal", "rampart.db-shm"] {
        assert_eq!(mode(db.join("nested").join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(db.clone()), 0o700);
    assert_eq!(mode(db.join("nested")), 0o700);
    assert!(server.stop_with("TERM").await.success());
}

#[tokio::test]
async fn sigterm_and_sigint_stop_gracefully() {
    for signal in ["TERM", "INT"] {
        let dir = tempdir();
        let mut server = Server::start(dir.path(), &[("RAMPART_JWT_ALG", "EdDSA")], &[]).await;
        let started = Instant::now();
        let status = server.stop_with(signal).await;
        assert!(status.success(), "{signal}: {status}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let log = server.log();
        assert!(log.contains("shutdown requested"), "{log}");
        assert!(log.contains("shutdown complete"), "{log}");
    }
}

#[tokio::test]
async fn config_file_is_read_and_env_overrides_it() {
    let dir = tempdir();
    let file = dir.path().join("rampart.toml");
    std::fs::write(
        &file,
        "jwt_alg = \"EdDSA\"\nrate_limit_per_minute = 2\nallowed_origins = [\"https://app.example\"]\n",
    )
    .unwrap();
    let mut server = Server::start(
        dir.path(),
        &[("RAMPART_RATE_LIMIT_PER_MINUTE", "3")],
        &["--config", file.to_str().unwrap()],
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
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA", "from the file");
    // Env says 3 per minute: two more pass, the fourth is limited.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = server
            .client
            .get(server.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    let r = server
        .client
        .get(server.url("/api/v1/x"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(server.stop_with("TERM").await.success());

    let out = run(dir.path(), &[], &["--config", "/nonexistent.toml", "serve"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("--config"));
}

#[tokio::test]
async fn serves_on_postgres_after_migrate() {
    let Some(pg) = PgDb::create().await else {
        return;
    };
    let dir = tempdir();
    let env = [
        ("DATABASE_URL", pg.url.as_str()),
        ("RAMPART_JWT_ALG", "EdDSA"),
    ];
    let out = run(dir.path(), &env, &["migrate"]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let out = run(dir.path(), &env, &["migrate"]).await;
    assert!(
        out.status.success(),
        "migrate is idempotent: {}",
        out.stderr
    );
    let mut server = Server::start(dir.path(), &env, &["serve"]).await;
    let ready: serde_json::Value = server
        .client
        .get(server.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["database"], "ok");
    assert!(server.log().contains("Postgres"), "{}", server.log());
    assert!(server.stop_with("TERM").await.success());
}
