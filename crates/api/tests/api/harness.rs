//! `TestApp::spawn`: an isolated database (a temp SQLite file, or a fresh PostgreSQL
//! database created from `TEST_POSTGRES_URL` and dropped afterwards), fresh EdDSA signing
//! keys in a temp directory, the production router and pipeline served on 127.0.0.1:0.
//!
//! PostgreSQL tests fail loudly when `TEST_POSTGRES_URL` is unset and `CI` is set; on a
//! developer machine without it they print a notice and pass without running.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rampart_api::AppState;
use rampart_core::clock::OffsetClock;
use rampart_core::config::{Config, JwtAlg, Sources};
use rampart_core::keys::KeyStore;
use rampart_store::Db;
use sqlx::Connection;
use utoipa_axum::router::OpenApiRouter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs `body` against a fresh app on `backend` and always cleans up afterwards.
pub async fn run<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Backend) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    if backend == Backend::Postgres && postgres_admin_url().is_none() {
        return;
    }
    let outcome = tokio::spawn(body(backend)).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "TEST_POSTGRES_URL is not set but CI is: the PostgreSQL half must run in CI"
            );
            eprintln!("notice: TEST_POSTGRES_URL unset, skipping a PostgreSQL test");
            None
        }
    }
}

/// A throwaway database, dropped with `destroy`.
pub struct TestDb {
    pub url: String,
    pg_admin: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn create(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("rampart.db").display()),
                pg_admin: None,
                _dir: dir,
            },
            Backend::Postgres => {
                let admin = postgres_admin_url().expect("checked by run()");
                let name = format!("rampart_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.ok();
                let mut url = url::Url::parse(&admin).unwrap();
                url.set_path(&name);
                Self {
                    url: url.to_string(),
                    pg_admin: Some((admin, name)),
                    _dir: dir,
                }
            }
        }
    }

    pub async fn destroy(mut self) {
        if let Some((admin, name)) = self.pg_admin.take() {
            drop_pg_database(&admin, &name).await;
        }
    }
}

async fn drop_pg_database(admin: &str, name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
        conn.close().await.ok();
    }
}

/// A test that panicked never reached `destroy`: drop its database anyway.
impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg_admin.take() {
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_pg_database(&admin, &name));
                }
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub state: AppState,
    /// The app's clock: `clock.advance(…)` moves time for expiry and lockout tests.
    pub clock: Arc<OffsetClock>,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    db: Option<TestDb>,
    _keys_dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, &[], OpenApiRouter::new()).await
    }

    /// `env` overrides configuration as the environment would; `extra` adds routes that get
    /// the full production pipeline.
    pub async fn spawn_with(
        backend: Backend,
        env: &[(&str, &str)],
        extra: OpenApiRouter<AppState>,
    ) -> Self {
        Self::spawn_sharing(backend, env, extra, None).await
    }

    /// Like [`Self::spawn_with`]; with `shared_clock`, the new app runs on that clock
    /// instead of its own, as instances of one deployment do (see `sibling`).
    pub async fn spawn_sharing(
        backend: Backend,
        env: &[(&str, &str)],
        extra: OpenApiRouter<AppState>,
        shared_clock: Option<Arc<OffsetClock>>,
    ) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let db_handle = TestDb::create(backend).await;
        let keys_dir = tempfile::tempdir().unwrap();
        let keys_path = keys_dir.path().display().to_string();
        let outbox = keys_dir.path().join("outbox").display().to_string();
        // Tests share one Redis: each app gets its own keys and channel unless told otherwise.
        let redis_prefix = format!("t_{}", uuid::Uuid::new_v4().simple());
        // A fresh data key (sealed TOTP secrets, recovery-code digests) unless `env` names
        // one: instances of one deployment share it (`TestApp::sibling`).
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let data_key = base64::engine::general_purpose::STANDARD.encode(key);
        let mut pairs: Vec<(&str, &str)> = vec![
            ("DATABASE_URL", &db_handle.url),
            ("RAMPART_BIND", "127.0.0.1:0"),
            ("RAMPART_JWT_KEYS_DIR", &keys_path),
            ("RAMPART_JWT_ALG", "EdDSA"),
            ("RAMPART_ALLOWED_ORIGINS", "https://app.example"),
            ("RAMPART_DB_POOL_SIZE", "5"),
            ("RAMPART_MAIL_OUTBOX", &outbox),
            ("RAMPART_PUBLIC_URL", "https://app.example"),
            ("RAMPART_REDIS_PREFIX", &redis_prefix),
            ("RAMPART_DATA_KEY", &data_key),
            // Fast hashing in tests only; the timing test sets the real parameters.
            ("RAMPART_ARGON2_MEMORY_KIB", "64"),
            ("RAMPART_ARGON2_ITERATIONS", "1"),
            // Tests make many logins from one address; the limits have tests of their own.
            ("RAMPART_LOGIN_RATE_PER_MINUTE", "100000"),
            ("RAMPART_REGISTER_RATE_PER_HOUR", "100000"),
        ];
        pairs.extend_from_slice(env);
        let config = Config::load(&Sources::from_pairs(pairs)).unwrap();
        assert_eq!(config.jwt_alg, JwtAlg::EdDsa);
        let keys = KeyStore::load_or_generate(&config.jwt_keys_dir, config.jwt_alg).unwrap();
        let db = Db::connect(&config.database_url, config.db_pool_size)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        rampart_store::rbac::sync_catalogue(
            &db,
            rampart_core::rbac::CATALOGUE,
            &rampart_core::rbac::user_defaults(),
            0,
        )
        .await
        .unwrap();
        let redis = config.redis_url.as_ref().map(|url| {
            rampart_store::Redis::connect_lazy(url.expose(), &config.redis_prefix).unwrap()
        });
        let deadline = config.shutdown_timeout;
        let clock = shared_clock.unwrap_or_default();
        let data_keys = rampart_core::crypto::DataKeys::new(
            rampart_core::crypto::DataKey::from_bytes(
                *config.data_key.as_ref().expect("set above").expose(),
            ),
            Vec::new(),
        );
        let mailer =
            rampart_store::mail::Mailer::from_config(None, &config.mail_outbox, &config.mail_from)
                .unwrap();
        let state =
            AppState::new(config, db, redis, keys, clock.clone(), data_keys, mailer).unwrap();
        let router = rampart_api::build_router(state.clone(), extra).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(rampart_api::serve(
            listener,
            router,
            state.clone(),
            async {
                let _ = rx.await;
            },
            deadline,
        ));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            addr,
            state,
            clock,
            client,
            shutdown: Some(tx),
            server: Some(server),
            db: Some(db_handle),
            _keys_dir: keys_dir,
        }
    }

    /// The messages the app has "sent" (its development outbox), oldest first, without the
    /// verification mails every registration sends in the background (contract §11): the
    /// tests of other mail count messages. [`Self::all_mail`] has every message.
    pub fn outbox(&self) -> Vec<String> {
        let mut mail = self.all_mail();
        mail.retain(|m| !m.contains("\r\nSubject: Verify your email address\r\n"));
        mail
    }

    /// Every message in the outbox, oldest first.
    pub fn all_mail(&self) -> Vec<String> {
        let dir = &self.state.config.mail_outbox;
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(handle) => handle.await.unwrap(),
            None => Ok(()),
        }
    }

    /// Stops the server and drops the database. Call at the end of every test.
    pub async fn finish(mut self) {
        let _ = self.shutdown().await;
        self.state.db.close().await;
        if let Some(db) = self.db.take() {
            db.destroy().await;
        }
    }
}

/// Expands each `async fn name(backend: Backend)` into a SQLite and a PostgreSQL test.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::harness::run($crate::harness::Backend::Sqlite, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::harness::run($crate::harness::Backend::Postgres, super::$name).await;
                }
            )*
        }
    };
}

/// Parses a problem document and checks the contract's invariants on it.
pub async fn problem(resp: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let headers = resp.headers().clone();
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    check_problem(status, &headers, &body, status, code);
    body
}

/// The checks of [`problem`] on an answer already read: `got` with `headers` and `body`
/// must be a problem document of `status` and `code`.
pub fn check_problem(
    got: u16,
    headers: &reqwest::header::HeaderMap,
    body: &serde_json::Value,
    status: u16,
    code: &str,
) {
    assert_eq!(got, status, "status: {body}");
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    let request_id = headers
        .get("x-request-id")
        .expect("X-Request-Id on every response")
        .to_str()
        .unwrap();
    assert_eq!(body["type"], "about:blank");
    assert_eq!(body["status"], status);
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["requestId"], request_id);
    assert!(body["title"].is_string());
    assert!(body["detail"].is_string());
    if code == "validation_failed" {
        assert!(!body["errors"].as_array().unwrap().is_empty(), "{body}");
    } else {
        assert!(body.get("errors").is_none(), "{body}");
    }
    if status == 429 {
        let secs: u64 = headers
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(secs >= 1);
    }
}

/// `TEST_REDIS_URL`, or `None` (skip) outside CI.
pub fn redis_url() -> Option<String> {
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set TEST_REDIS_URL"
            );
            eprintln!("notice: TEST_REDIS_URL unset, skipping a Redis test");
            None
        }
    }
}
