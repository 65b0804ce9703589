//! `rampart purge`: one purge now, counts on stdout, exit 0; a stale lockout counter goes
//! and a fresh one stays; pending migrations are refused (exit 1); on PostgreSQL, while
//! another session holds the purge lock, it does nothing and still exits 0. And `serve`
//! purges on its own every `RAMPART_PURGE_INTERVAL`, and still stops cleanly.

use std::path::Path;

use rampart_core::audit::{NewAuditEvent, Outcome};
use rampart_store::Db;
use rampart_store::lockout::{self, LockoutPolicy};
use sqlx::Connection;

use crate::support::{PgDb, Server, run, tempdir};

const NOTHING_PURGED: &str = "purged: 0 session(s), 0 refresh token(s), 0 MFA challenge(s), \
     0 password-reset token(s), 0 lockout counter(s), 0 WebAuthn challenge(s)";

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since_epoch.as_millis()).unwrap()
}

/// One failed login for `key` at `at_ms`, as the server records it.
async fn failed_login(url: &str, key: &str, at_ms: i64) {
    let db = Db::connect(url, 1).await.unwrap();
    let policy = LockoutPolicy {
        max_failures: 5,
        window_ms: 900_000,
        lock_ms: 900_000,
        max_lock_ms: 86_400_000,
    };
    let failed = NewAuditEvent::new("auth.login_failed", Outcome::Failure);
    let locked = NewAuditEvent::new("auth.lockout", Outcome::Failure);
    let reserved = lockout::reserve(&db, &[(key, &policy)], at_ms)
        .await
        .unwrap();
    assert_eq!(reserved, None);
    lockout::record_failure(&db, &[(key, &policy)], at_ms, Some(&failed), &locked)
        .await
        .unwrap();
    db.close().await;
}

async fn purge(dir: &Path, env: &[(&str, &str)]) -> String {
    let out = run(dir, env, &["purge"]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    out.stdout
}

#[tokio::test]
async fn purge_on_a_fresh_sqlite_data_dir() {
    let dir = tempdir();
    // The default DATABASE_URL: ./data/rampart.db in the working directory.
    let out = run(dir.path(), &[], &["migrate"]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(purge(dir.path(), &[]).await.contains(NOTHING_PURGED));

    let url = format!(
        "sqlite://{}",
        dir.path().join("data").join("rampart.db").display()
    );
    failed_login(&url, "stale@example.org", now_ms() - 2 * 86_400_000).await;
    failed_login(&url, "fresh@example.org", now_ms()).await;
    let verify = || async {
        let out = run(dir.path(), &[], &["audit", "verify"]).await;
        assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
        out.stdout
    };
    let audit_before = verify().await;
    let stdout = purge(dir.path(), &[]).await;
    assert!(
        stdout.contains(
            "purged: 0 session(s), 0 refresh token(s), 0 MFA challenge(s), \
             0 password-reset token(s), 1 lockout counter(s), 0 WebAuthn challenge(s)"
        ),
        "{stdout}"
    );
    assert!(purge(dir.path(), &[]).await.contains(NOTHING_PURGED));
    // The audit trail is untouched.
    assert_eq!(verify().await, audit_before);
}

#[tokio::test]
async fn purge_refuses_pending_migrations() {
    let dir = tempdir();
    let out = run(dir.path(), &[], &["purge"]).await;
    assert_eq!(out.status.code(), Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("pending migrations; run `rampart migrate` first"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn purge_on_postgres_does_nothing_while_another_instance_holds_the_lock() {
    let Some(pg) = PgDb::create().await else {
        return;
    };
    let dir = tempdir();
    let env = [("DATABASE_URL", pg.url.as_str())];
    let out = run(dir.path(), &env, &["migrate"]).await;
    assert!(out.status.success(), "{}", out.stderr);
    failed_login(&pg.url, "stale@example.org", now_ms() - 2 * 86_400_000).await;

    let mut other = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    let took: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(rampart_store::purge::PURGE_LOCK_KEY)
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert!(took);
    let stdout = purge(dir.path(), &env).await;
    assert!(
        stdout.contains("another instance is purging; nothing done"),
        "{stdout}"
    );
    other.close().await.unwrap();

    let stdout = purge(dir.path(), &env).await;
    assert!(stdout.contains("1 lockout counter(s)"), "{stdout}");
}

#[tokio::test]
async fn a_server_purges_every_interval() {
    let dir = tempdir();
    let out = run(dir.path(), &[], &["migrate"]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let url = format!(
        "sqlite://{}",
        dir.path().join("data").join("rampart.db").display()
    );
    failed_login(&url, "stale@example.org", now_ms() - 2 * 86_400_000).await;

    // The first run comes within the interval (under a minute), then one each interval.
    let mut server = Server::start(dir.path(), &[("RAMPART_PURGE_INTERVAL", "1s")], &[]).await;
    let purged = |line: &String| {
        serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| {
            v["message"] == "purge finished" && v["lockouts"] == 1 && v["sessions"] == 0
        })
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !server.lines.lock().unwrap().iter().any(purged) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no purge logged: {}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let status = server.stop_with("TERM").await;
    assert!(status.success(), "{status}: {}", server.log());
    assert!(!server.log().contains("purge failed"), "{}", server.log());
}
