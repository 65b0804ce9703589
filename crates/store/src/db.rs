//! Connections, migrations and transactions for both backends.
//!
//! Invariants: SQLite runs in WAL mode with `foreign_keys` on, a 5 s busy timeout and
//! `synchronous = NORMAL`, and every SQLite transaction starts with `BEGIN IMMEDIATE`, so a
//! writer takes the write lock up front (waiting for it within the busy timeout) instead of
//! failing with `SQLITE_BUSY` when a read lock cannot be upgraded. A SQLite file Rampart
//! creates is `0600` (SQLite gives its `-wal` and `-shm` files the database file's mode),
//! and so is every directory created for it `0700`: the file holds password hashes and
//! sealed secrets. PostgreSQL honours the URL's `sslmode` as sqlx parses it, except that a
//! server on this host (loopback address, `localhost` or a Unix socket) named with no
//! `sslmode` in the URL and no `PGSSLMODE` is reached without TLS instead of sqlx's
//! `prefer` (`local_without_tls`); every
//! PostgreSQL transaction (explicit, and each statement run on its own) is READ COMMITTED
//! whatever the server's `default_transaction_isolation`, since the compare-and-swap and
//! row-lock logic of the stores relies on it (a REPEATABLE READ default would turn a lost
//! race into a serialization error, a 500). Startup errors never carry the URL, which may
//! hold a password: they name the backend, host, port and database only.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite};

use crate::error::DbResultExt;

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// A pooled connection idle this long is pinged before it is handed out; one used more
/// recently is handed out as is. sqlx's default pings on *every* acquire, which put a
/// second database round trip (and two more wake-ups) into every request: a profile of
/// `/users/me` showed it (docs/benchmarks.md). A connection that died since its last use
/// within this window fails its query, and sqlx closes it instead of returning it.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool for one of the two backends. Cloning is cheap (the pools are `Arc`s).
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open transaction. Dropping it without [`Tx::commit`] rolls it back.
///
/// It also counts the audit records appended in it ([`crate::audit::append`]): they are
/// added to `rampart_audit_events_total` when, and only if, the transaction commits, so
/// the counter never counts a record that was rolled back.
#[derive(Debug)]
pub struct Tx {
    conn: TxConn,
    audit_appended: u64,
}

/// The connection of a [`Tx`], per backend (reached with [`Tx::conn`] or `with_tx!`).
#[derive(Debug)]
pub enum TxConn {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

const PING: &str = "SELECT 1";

/// Gauge of the pool's connections by `state`: `idle`, `in_use` and `max` (contract §12).
pub const POOL_CONNECTIONS: &str = "rampart_db_pool_connections";

/// Runs one database call (`with_pool!`/`with_tx!` body) in a `db.query` client span
/// (only when traces are exported: [`rampart_core::otel`]). The span holds the backend
/// only: never the statement's values.
pub async fn traced<F: std::future::Future>(backend: Backend, call: F) -> F::Output {
    let system = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgresql",
    };
    rampart_core::otel::in_span(
        "db.query",
        opentelemetry::trace::SpanKind::Client,
        || vec![opentelemetry::KeyValue::new("db.system.name", system)],
        call,
    )
    .await
}

/// PostgreSQL: the isolation level the stores' logic is written for, stated rather than
/// inherited from the server's or the role's `default_transaction_isolation`.
const BEGIN_READ_COMMITTED: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
/// The same for statements that run outside an explicit transaction (each its own).
const SESSION_READ_COMMITTED: &str =
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED";

const SQLITE_MIGRATIONS_TABLE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM sqlite_master \
     WHERE type = 'table' AND name = '_sqlx_migrations')";
const POSTGRES_MIGRATIONS_TABLE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
     WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations')";

const APPLIED_MIGRATIONS: &str = "SELECT version FROM _sqlx_migrations WHERE success";

impl Db {
    /// Connects to `sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:`, `postgres://…` or
    /// `postgresql://…` with at most `pool_size` connections. A SQLite file and its parent
    /// directory are created when missing.
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<Db> {
        let pool_size = pool_size.max(1);
        if url.starts_with("sqlite:") {
            connect_sqlite(url, pool_size).await.map(Db::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            connect_postgres(url, pool_size).await.map(Db::Postgres)
        } else {
            anyhow::bail!(
                "unsupported database URL scheme (expected sqlite:, postgres:// or postgresql://)"
            )
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies every embedded migration not yet applied. Safe to run repeatedly and from
    /// several processes at once (sqlx takes a lock on PostgreSQL).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await,
            Db::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await,
        }
        .context("applying database migrations")
    }

    /// How many embedded migrations are not yet applied; 0 when the schema is current.
    /// Reads only, so it works on an empty database.
    pub async fn pending_migrations(&self) -> anyhow::Result<usize> {
        let (migrator, table_exists_sql) = match self {
            Db::Sqlite(_) => (&SQLITE_MIGRATOR, SQLITE_MIGRATIONS_TABLE_EXISTS),
            Db::Postgres(_) => (&POSTGRES_MIGRATOR, POSTGRES_MIGRATIONS_TABLE_EXISTS),
        };
        let applied: Vec<i64> = with_pool!(self, pool => {
            let exists: bool = sqlx::query_scalar(table_exists_sql).fetch_one(pool).await?;
            if exists {
                sqlx::query_scalar(APPLIED_MIGRATIONS).fetch_all(pool).await
            } else {
                Ok(Vec::new())
            }
        })?;
        Ok(migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .count())
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        with_pool!(self, pool => sqlx::query(PING).execute(pool).await.map(|_| ()))
            .context("pinging the database")?;
        Ok(())
    }

    /// Sets [`POOL_CONNECTIONS`] from the pool's current counts.
    pub fn record_pool_metrics(&self) {
        let (size, idle, max) = match self {
            Db::Sqlite(pool) => (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            ),
            Db::Postgres(pool) => (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            ),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX);
        metrics::gauge!(POOL_CONNECTIONS, "state" => "idle").set(f64::from(idle));
        metrics::gauge!(POOL_CONNECTIONS, "state" => "in_use")
            .set(f64::from(size.saturating_sub(idle)));
        metrics::gauge!(POOL_CONNECTIONS, "state" => "max").set(f64::from(max));
    }

    /// Waits for checked-out connections to return, then closes every connection.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await);
    }

    /// Starts a transaction; on SQLite with `BEGIN IMMEDIATE`, on PostgreSQL explicitly READ
    /// COMMITTED (see the module docs).
    pub async fn begin(&self) -> rampart_core::Result<Tx> {
        match self {
            Db::Sqlite(pool) => pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map(|tx| Tx::new(TxConn::Sqlite(tx)))
                .db_context("starting a transaction"),
            Db::Postgres(pool) => pool
                .begin_with(BEGIN_READ_COMMITTED)
                .await
                .map(|tx| Tx::new(TxConn::Postgres(tx)))
                .db_context("starting a transaction"),
        }
    }
}

impl Tx {
    fn new(conn: TxConn) -> Tx {
        Tx {
            conn,
            audit_appended: 0,
        }
    }

    pub fn backend(&self) -> Backend {
        match self.conn {
            TxConn::Sqlite(_) => Backend::Sqlite,
            TxConn::Postgres(_) => Backend::Postgres,
        }
    }

    /// The transaction's connection.
    pub fn conn(&mut self) -> &mut TxConn {
        &mut self.conn
    }

    /// Notes one audit record appended in this transaction.
    pub(crate) fn audit_appended(&mut self) {
        self.audit_appended += 1;
    }

    /// Commits, then counts the audit records appended in the transaction.
    pub async fn commit(self) -> rampart_core::Result<()> {
        match self.conn {
            TxConn::Sqlite(tx) => tx.commit().await,
            TxConn::Postgres(tx) => tx.commit().await,
        }
        .db_context("committing a transaction")?;
        if self.audit_appended > 0 {
            metrics::counter!(crate::audit::EVENTS).increment(self.audit_appended);
        }
        Ok(())
    }

    pub async fn rollback(self) -> rampart_core::Result<()> {
        match self.conn {
            TxConn::Sqlite(tx) => tx.rollback().await,
            TxConn::Postgres(tx) => tx.rollback().await,
        }
        .db_context("rolling back a transaction")
    }
}

/// The pools' `before_acquire`: pings a connection idle for [`PING_IF_IDLE_FOR`] or more,
/// hands out any other as is.
async fn ping_if_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    if meta.idle_for >= PING_IF_IDLE_FOR {
        conn.ping().await?;
    }
    Ok(true)
}

async fn connect_sqlite(url: &str, pool_size: u32) -> anyhow::Result<SqlitePool> {
    let in_memory = is_sqlite_memory_url(url);
    let mut options = SqliteConnectOptions::from_str(url)
        .context("parsing the SQLite database URL")?
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        .synchronous(SqliteSynchronous::Normal);
    let mut pool = SqlitePoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta)));
    if in_memory {
        // A shared-cache in-memory database lives as long as one connection to it does.
        pool = pool
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    } else {
        options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        create_parent_dir(options.get_filename())?;
        create_private_file(options.get_filename())?;
    }
    pool.connect_with(options)
        .await
        .context("opening the SQLite database")
}

/// `sqlite::memory:`, `sqlite://:memory:` or `mode=memory` in the query string.
fn is_sqlite_memory_url(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

/// Creates the missing directories above `file`, each `0700`.
fn create_parent_dir(file: &Path) -> anyhow::Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the database directory {}", dir.display())),
        _ => Ok(()),
    }
}

/// Creates `file` empty and `0600` when missing, before SQLite opens it: SQLite would
/// create it `0644` (less the umask), and it gives the `-wal` and `-shm` files the mode of
/// the database file. An existing file keeps its mode.
fn create_private_file(file: &Path) -> anyhow::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating the database file {}", file.display())),
    }
}

/// Whether to connect to this PostgreSQL without TLS although sqlx would `prefer` it: the
/// server is on this host (its traffic never leaves the kernel, so TLS protects nothing)
/// and nobody asked for TLS (no `sslmode`/`ssl-mode` in the URL, no `PGSSLMODE`). Over
/// loopback, TLS cost the server ~30 µs and PostgreSQL ~40 µs of CPU per `/users/me`
/// request, a quarter of the throughput (docs/benchmarks.md). An explicit `sslmode`,
/// `require` or `disable` or anything else, is always honoured; a server elsewhere keeps
/// sqlx's rules (and production demands `verify-full` for it, see the configuration).
fn local_without_tls(url: &str, options: &PgConnectOptions) -> bool {
    let asked = std::env::var_os("PGSSLMODE").is_some()
        || url::Url::parse(url).is_err()
        || url::Url::parse(url).is_ok_and(|u| {
            u.query_pairs()
                .any(|(k, _)| k == "sslmode" || k == "ssl-mode")
        });
    if asked {
        return false;
    }
    let host = options.get_host();
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn connect_postgres(url: &str, pool_size: u32) -> anyhow::Result<PgPool> {
    // The parse error says what is wrong without echoing the URL.
    let mut options =
        PgConnectOptions::from_str(url).context("parsing the PostgreSQL database URL")?;
    if local_without_tls(url, &options) {
        options = options.ssl_mode(sqlx::postgres::PgSslMode::Disable);
    }
    let target = format!(
        "PostgreSQL at {}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or(options.get_username())
    );
    PgPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta)))
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(conn, SESSION_READ_COMMITTED).await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to {target}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_postgres_without_sslmode_is_reached_without_tls() {
        let judge = |url: &str| {
            let options = PgConnectOptions::from_str(url).unwrap();
            local_without_tls(url, &options)
        };
        if std::env::var_os("PGSSLMODE").is_some() {
            return; // the environment asked for a mode: nothing is decided for it
        }
        assert!(judge("postgres://app@127.0.0.1:5432/r"));
        assert!(judge("postgres://app@localhost/r"));
        assert!(judge("postgres://app@[::1]:5432/r"));
        assert!(judge("postgres:///r?host=/var/run/postgresql"));
        // Asked for, in either spelling, whatever the mode: honoured.
        assert!(!judge("postgres://app@127.0.0.1/r?sslmode=require"));
        assert!(!judge("postgres://app@127.0.0.1/r?ssl-mode=prefer"));
        assert!(!judge("postgres://app@localhost/r?sslmode=disable"));
        // Elsewhere: sqlx's rules.
        assert!(!judge("postgres://app@db.example/r"));
        assert!(!judge("postgres://app@203.0.113.7/r"));
        // `hostaddr`/`host` replace the URL's host, as sqlx reads them.
        assert!(!judge("postgres://app@127.0.0.1/r?host=db.example"));
    }

    #[test]
    fn recognises_in_memory_sqlite_urls() {
        assert!(is_sqlite_memory_url("sqlite::memory:"));
        assert!(is_sqlite_memory_url("sqlite://:memory:"));
        assert!(is_sqlite_memory_url("sqlite://db?mode=memory&cache=shared"));
        assert!(!is_sqlite_memory_url("sqlite://data/rampart.db"));
        assert!(!is_sqlite_memory_url("sqlite:rampart.db?mode=rwc"));
    }

    #[tokio::test]
    async fn postgres_errors_do_not_reveal_the_password() {
        let url = "postgres://rampart:s3cr3t-pw@127.0.0.1:1/rampart";
        let err = Db::connect(url, 1).await.unwrap_err();
        let text = format!("{err:#} {err:?}");
        assert!(!text.contains("s3cr3t-pw"), "{text}");
        assert!(text.contains("127.0.0.1:1/rampart"), "{text}");

        let err = Db::connect("postgres://rampart:s3cr3t-pw@host:notaport/db", 1)
            .await
            .unwrap_err();
        let text = format!("{err:#} {err:?}");
        assert!(!text.contains("s3cr3t-pw"), "{text}");
    }

    #[tokio::test]
    async fn sqlite_file_is_created_with_its_directory_and_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/rampart.db");
        let db = Db::connect(&format!("sqlite:{}", path.display()), 2)
            .await
            .unwrap();
        assert!(path.exists());
        let Db::Sqlite(pool) = &db else {
            panic!("not SQLite")
        };
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(pool)
            .await
            .unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .unwrap();
        let busy_timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(
            (journal.as_str(), foreign_keys, synchronous, busy_timeout),
            ("wal", 1, 1, 5000)
        );
        db.migrate().await.unwrap();
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        let wal = path.with_file_name("rampart.db-wal");
        let shm = path.with_file_name("rampart.db-shm");
        assert_eq!(
            [&path, &wal, &shm].map(|p| mode(p)),
            [0o600; 3],
            "database files are private"
        );
        let nested = dir.path().join("nested");
        assert_eq!(
            [&nested, &nested.join("deeper")].map(|p| mode(p)),
            [0o700; 2],
            "created directories are private"
        );
        db.close().await;
    }

    /// The production TLS rule (`rampart_core::config::postgres_tls_problem`) judges a URL
    /// as sqlx will connect with it: it accepts exactly the URLs whose parsed options are a
    /// socket, a loopback host, or certificate verification.
    #[test]
    fn production_tls_rule_agrees_with_sqlx() {
        use sqlx::postgres::PgSslMode;
        for url in [
            "postgres://app@db.example/r?sslmode=verify-full",
            "postgres://app@db.example/r?sslmode=verify-ca",
            "postgres://app@db.example/r?sslmode=require",
            "postgres://app@db.example/r",
            "postgres://app@db.example/r?sslmode=verify-full&sslmode=disable",
            "postgres://app@db.example/r?sslmode=disable&sslmode=verify-full",
            "postgres://app@db.example/r?ssl-mode=verify-full&sslmode=prefer",
            "postgres://app@127.0.0.1/r",
            "postgres://app@localhost/r",
            "postgres://app@[::1]/r",
            "postgres://app@127.0.0.1/r?hostaddr=203.0.113.7",
            "postgres://app@127.0.0.1/r?hostaddr=203.0.113.7&sslmode=verify-full",
            "postgres://app@db.example/r?hostaddr=127.0.0.1",
            "postgres://app@127.0.0.1/r?host=db.example",
            "postgres://app@db.example/r?host=localhost",
            "postgres://app@db.example/r?host=/run/postgresql",
            "postgres://app@db.example/r?host=/run/postgresql&host=db.example",
            "postgres://app@%2Frun%2Fpostgresql/r",
        ] {
            let options = PgConnectOptions::from_str(url).unwrap();
            let host = options.get_host().trim_matches(|c| c == '[' || c == ']');
            let local = options.get_socket().is_some()
                || host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            let verified = matches!(
                options.get_ssl_mode(),
                PgSslMode::VerifyFull | PgSslMode::VerifyCa
            );
            assert_eq!(
                rampart_core::config::postgres_tls_problem(url).is_none(),
                local || verified,
                "{url}: sqlx connects to {host:?} (socket {:?}) with {:?}",
                options.get_socket(),
                options.get_ssl_mode()
            );
        }
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused_without_echoing_the_url() {
        let err = Db::connect("mysql://root:pw@localhost/db", 1)
            .await
            .unwrap_err();
        assert!(!format!("{err:#}").contains("pw@"));
    }

    #[tokio::test]
    async fn in_memory_sqlite_works() {
        let db = Db::connect("sqlite::memory:", 2).await.unwrap();
        db.migrate().await.unwrap();
        assert_eq!(db.pending_migrations().await.unwrap(), 0);
        db.ping().await.unwrap();
        db.close().await;
    }
}
