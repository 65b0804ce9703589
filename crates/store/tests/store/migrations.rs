//! Migrations: both backends carry the same versions, and applying them is idempotent.

use std::collections::BTreeSet;
use std::path::Path;

use rampart_store::Db;

backend_tests!(empty: migrate_is_idempotent, ping_works_on_an_empty_database);

fn migration_files(backend: &str) -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".sql"))
        .collect()
}

#[test]
fn sqlite_and_postgres_migrations_have_identical_versions_and_names() {
    let sqlite = migration_files("sqlite");
    let postgres = migration_files("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(
        sqlite, postgres,
        "migrations/sqlite and migrations/postgres differ"
    );
    for name in &sqlite {
        let (version, rest) = name.split_once('_').unwrap_or(("", ""));
        assert!(
            version.len() == 4 && version.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty(),
            "{name} is not NNNN_name.sql"
        );
    }
}

async fn migrate_is_idempotent(db: Db) {
    let embedded = migration_files(match db.backend() {
        rampart_store::Backend::Sqlite => "sqlite",
        rampart_store::Backend::Postgres => "postgres",
    })
    .len();
    assert_eq!(db.pending_migrations().await.unwrap(), embedded);
    db.migrate().await.unwrap();
    assert_eq!(db.pending_migrations().await.unwrap(), 0);
    db.migrate().await.unwrap();
    assert_eq!(db.pending_migrations().await.unwrap(), 0);
    let events = rampart_store::audit::list(&db, &Default::default(), 10, None)
        .await
        .unwrap();
    assert!(events.is_empty());
}

async fn ping_works_on_an_empty_database(db: Db) {
    db.ping().await.unwrap();
}
