//! `rampart audit verify` on both stores: 0 and the count when intact, 1 naming the first
//! broken record after tampering (which first needs the append-only triggers removed).

use rampart_core::audit::{NewAuditEvent, Outcome};
use rampart_store::{Backend, Db};

use crate::support::{PgDb, run, tempdir};

async fn append_three(url: &str) -> Db {
    let db = Db::connect(url, 2).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    for (i, action) in ["auth.register", "auth.login_succeeded", "auth.logout"]
        .iter()
        .enumerate()
    {
        let event =
            NewAuditEvent::new(*action, Outcome::Success).with_request_id(format!("req-{i}"));
        rampart_store::audit::append(&mut tx, &event, 1_700_000_000_000 + i as i64)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    db
}

async fn tamper(db: &Db) {
    let statements: &[&'static str] = match db.backend() {
        Backend::Sqlite => &[
            "DROP TRIGGER audit_events_no_update",
            "UPDATE audit_events SET action = 'auth.nothing_happened' WHERE seq = 2",
        ],
        Backend::Postgres => &[
            "ALTER TABLE audit_events DISABLE TRIGGER USER",
            "UPDATE audit_events SET action = 'auth.nothing_happened' WHERE seq = 2",
        ],
    };
    for sql in statements {
        match db {
            Db::Sqlite(pool) => {
                sqlx::raw_sql(*sql).execute(pool).await.unwrap();
            }
            Db::Postgres(pool) => {
                sqlx::raw_sql(*sql).execute(pool).await.unwrap();
            }
        }
    }
}

async fn verify_cycle(url: &str) {
    let dir = tempdir();
    let env = [("DATABASE_URL", url)];
    let out = run(dir.path(), &env, &["migrate"]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let out = run(dir.path(), &env, &["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("0 record(s)"), "{}", out.stdout);

    let db = append_three(url).await;
    let out = run(dir.path(), &env, &["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("3 record(s)"), "{}", out.stdout);

    tamper(&db).await;
    db.close().await;
    let out = run(dir.path(), &env, &["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("seq=2"),
        "names the first broken record: {}",
        out.stdout
    );
}

#[tokio::test]
async fn audit_verify_on_sqlite() {
    let dir = tempdir();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    verify_cycle(&url).await;
}

#[tokio::test]
async fn audit_verify_on_postgres() {
    let Some(pg) = PgDb::create().await else {
        return;
    };
    verify_cycle(&pg.url).await;
}
