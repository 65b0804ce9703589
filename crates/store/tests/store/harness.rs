//! Test harness: an isolated, optionally migrated database per test, on either backend.
//!
//! SQLite gets a file in a fresh temp directory. PostgreSQL gets `rampart_t_<uuid>` created
//! through `TEST_POSTGRES_URL` and dropped `WITH (FORCE)` afterwards, also when the test
//! panics. Without `TEST_POSTGRES_URL` the PostgreSQL half is skipped with a notice, unless
//! `CI` is set, where a skipped backend would be a silent hole, so it fails instead.

use std::future::Future;

use rampart_store::Db;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

pub use rampart_store::Backend;

/// `backend_tests!(migrated: a, b)` runs each `async fn a(db: Db)` of the invoking module
/// as `sqlite::a` and `postgres::a` on a migrated database; `backend_tests!(empty: c)` gives
/// a database without any table. One invocation per module (it defines `mod sqlite`).
macro_rules! backend_tests {
    (migrated: $($name:ident),+ $(,)?) => {
        backend_tests!(@expand Migrated; $($name),+);
    };
    (empty: $($name:ident),+ $(,)?) => {
        backend_tests!(@expand Empty; $($name),+);
    };
    (@expand $schema:ident; $($name:ident),+) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::harness::run(
                        $crate::harness::Backend::Sqlite,
                        $crate::harness::Schema::$schema,
                        super::$name,
                    )
                    .await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::harness::run(
                        $crate::harness::Backend::Postgres,
                        $crate::harness::Schema::$schema,
                        super::$name,
                    )
                    .await;
                }
            )+
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// All migrations applied.
    Migrated,
    /// Nothing applied.
    Empty,
}

/// Connections per test pool; enough for the parallel-writer tests.
const POOL_SIZE: u32 = 5;

/// Runs `test` on a fresh database of `backend`, then removes the database.
pub async fn run<F, Fut>(backend: Backend, schema: Schema, test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(test_db) = TestDb::create(backend).await else {
        return;
    };
    if schema == Schema::Migrated {
        test_db.db.migrate().await.expect("migrations apply");
    }
    // Spawned so that a panic comes back as a value and the database is still dropped.
    let outcome = tokio::spawn(test(test_db.db.clone())).await;
    test_db.destroy().await;
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

/// Runs `test` on a fresh, migrated PostgreSQL database whose
/// `default_transaction_isolation` is REPEATABLE READ (as a server or role may be
/// configured), then removes the database. Skipped like any PostgreSQL test.
pub async fn run_postgres_repeatable_read<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(test_db) = TestDb::create_with(Backend::Postgres, &["repeatable read"]).await else {
        return;
    };
    test_db.db.migrate().await.expect("migrations apply");
    let outcome = tokio::spawn(test(test_db.db.clone())).await;
    test_db.destroy().await;
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

pub struct TestDb {
    pub db: Db,
    place: Place,
}

enum Place {
    Sqlite(tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    /// `None` when the backend is not available here (see the module docs).
    pub async fn create(backend: Backend) -> Option<TestDb> {
        Self::create_with(backend, &[]).await
    }

    /// `isolation`: on PostgreSQL, at most one `default_transaction_isolation` for the new
    /// database, set before anything connects to it.
    async fn create_with(backend: Backend, isolation: &[&str]) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("rampart.db").display());
                let db = Db::connect(&url, POOL_SIZE).await.expect("open SQLite");
                Some(TestDb {
                    db,
                    place: Place::Sqlite(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url()?;
                let name = format!("rampart_t_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to TEST_POSTGRES_URL");
                // An identifier cannot be a bind parameter; `name` is ours and only [a-z0-9_].
                admin
                    .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                for level in isolation {
                    // Ours too: one of the fixed level names.
                    admin
                        .execute(AssertSqlSafe(format!(
                            "ALTER DATABASE {name} SET default_transaction_isolation = '{level}'"
                        )))
                        .await
                        .expect("set the database's default isolation");
                }
                admin.close().await.ok();
                let mut url = url::Url::parse(&admin_url).expect("TEST_POSTGRES_URL is a URL");
                url.set_path(&name);
                let db = Db::connect(url.as_str(), POOL_SIZE)
                    .await
                    .expect("connect to test database");
                Some(TestDb {
                    db,
                    place: Place::Postgres { admin_url, name },
                })
            }
        }
    }

    pub async fn destroy(self) {
        self.db.close().await;
        match self.place {
            Place::Sqlite(dir) => drop(dir),
            Place::Postgres { admin_url, name } => {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to TEST_POSTGRES_URL");
                admin
                    .execute(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await
                    .expect("drop test database");
                admin.close().await.ok();
            }
        }
    }
}

fn postgres_admin_url() -> Option<String> {
    match std::env::var("TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("TEST_POSTGRES_URL is not set but CI is: the PostgreSQL tests must run in CI")
        }
        _ => {
            eprintln!("notice: TEST_POSTGRES_URL is not set; skipping the PostgreSQL test");
            None
        }
    }
}
