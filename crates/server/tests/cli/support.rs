//! Starting the binary in a fresh working directory with a clean environment, reading its
//! address from its own log line, and stopping it with a signal.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_rampart");

/// A command for the binary with nothing from the caller's environment but `PATH`.
pub fn rampart(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub async fn run(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        rampart(dir, env).args(args).output(),
    )
    .await
    .expect("command finished in time")
    .unwrap();
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub client: reqwest::Client,
}

impl Server {
    /// Starts `rampart [args]` bound to a free port and waits until it answers
    /// `/health/ready` with 200.
    pub async fn start(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        let server = Self::start_listening(dir, env, args).await;
        for _ in 0..200 {
            if let Ok(r) = server.client.get(server.url("/health/ready")).send().await
                && r.status() == 200
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server never became ready: {}", server.log());
    }

    /// Starts `rampart [args]` bound to a free port and returns once it logged its address,
    /// ready or not.
    pub async fn start_listening(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut all: Vec<(&str, &str)> = vec![("RAMPART_BIND", "127.0.0.1:0")];
        all.extend_from_slice(env);
        let mut child = rampart(dir, &all)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for (stream, sink) in [
            (
                Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                lines.clone(),
            ),
            (Box::new(stderr), lines.clone()),
        ] {
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        // The address comes from the server's own "listening" log line (port 0 → random).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let base = loop {
            let found = lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| listening_address(l));
            if let Some(addr) = found {
                break format!("http://{addr}");
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "server exited early with {status}: {}",
                    lines.lock().unwrap().join("\n")
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server did not start: {}",
                lines.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Server {
            child,
            base,
            lines,
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends `signal` and waits for the process to exit.
    pub async fn stop_with(&mut self, signal: &str) -> ExitStatus {
        self.signal(signal);
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exited after the signal")
            .unwrap();
        // Let the reader tasks drain the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        status
    }
}

fn listening_address(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    (v["message"] == "rampart listening").then(|| v["address"].as_str().map(str::to_owned))?
}

/// A fresh PostgreSQL database for one test, or `None` (skip) without `TEST_POSTGRES_URL`
/// outside CI.
pub struct PgDb {
    pub url: String,
    admin: String,
    name: String,
}

impl PgDb {
    pub async fn create() -> Option<PgDb> {
        let admin = match std::env::var("TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "TEST_POSTGRES_URL is not set but CI is"
                );
                eprintln!("notice: TEST_POSTGRES_URL unset, skipping a PostgreSQL test");
                return None;
            }
        };
        let name = format!("rampart_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        let (base, _) = admin.rsplit_once('/').unwrap();
        Some(PgDb {
            url: format!("{base}/{name}"),
            admin,
            name,
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

pub fn keys_dir(dir: &Path) -> PathBuf {
    dir.join("data").join("keys")
}

/// The shared Redis of the test machine (`TEST_REDIS_URL`), or `None` (skip) outside CI.
pub fn test_redis_url() -> Option<String> {
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "TEST_REDIS_URL is not set but CI is"
            );
            eprintln!("notice: TEST_REDIS_URL unset, skipping a Redis test");
            None
        }
    }
}

/// A `RAMPART_REDIS_PREFIX` no other test (or parallel test run) uses.
pub fn unique_redis_prefix() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

/// A fresh `RAMPART_DATA_KEY` (32 random bytes, base64), for instances that must share one.
pub fn random_data_key() -> String {
    use base64::Engine;
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `rampart args` with `stdin` as its standard input.
pub async fn run_with_stdin(
    dir: &Path,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: &str,
) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = rampart(dir, env)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("command finished in time")
        .unwrap();
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The value of the refresh cookie (`rampart_refresh` or `__Secure-rampart_refresh`) a
/// response sets, if any.
pub fn refresh_cookie_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (pair, _) = v.split_once(';').unwrap_or((v, ""));
            let (name, value) = pair.split_once('=')?;
            (name.trim().ends_with("rampart_refresh") && !value.is_empty())
                .then(|| value.trim().to_owned())
        })
}

/// What a successful login hands back.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub access: String,
    pub refresh: String,
}

impl LoggedIn {
    pub async fn from_response(response: reqwest::Response) -> LoggedIn {
        let status = response.status();
        let refresh = refresh_cookie_of(&response);
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status, 200, "login or refresh refused: {body}");
        LoggedIn {
            access: body["accessToken"].as_str().unwrap().to_owned(),
            refresh: refresh.expect("a refresh cookie"),
        }
    }
}

/// `POST /api/v1/auth/register`, expecting 201; returns the new user's id.
pub async fn register(server: &Server, email: &str, password: &str) -> String {
    let r = server
        .client
        .post(server.url("/api/v1/auth/register"))
        .json(&serde_json::json!({"email": email, "password": password, "displayName": "T"}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    assert_eq!(status, 201, "register {email}: {body}");
    body["id"].as_str().unwrap().to_owned()
}

/// `POST /api/v1/auth/login`, returning the raw response.
pub async fn try_login(server: &Server, email: &str, password: &str) -> reqwest::Response {
    server
        .client
        .post(server.url("/api/v1/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

/// `POST /api/v1/auth/login`, expecting 200.
pub async fn login(server: &Server, email: &str, password: &str) -> LoggedIn {
    LoggedIn::from_response(try_login(server, email, password).await).await
}

/// `POST /api/v1/auth/refresh` with `refresh` as the (development-mode) cookie.
pub async fn try_refresh(server: &Server, refresh: &str) -> reqwest::Response {
    server
        .client
        .post(server.url("/api/v1/auth/refresh"))
        .header(
            reqwest::header::COOKIE,
            format!("rampart_refresh={refresh}"),
        )
        .send()
        .await
        .unwrap()
}

/// The status and the JSON body (`Null` when it is not JSON) of a response.
pub async fn status_and_body(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or_default();
    (status, body)
}

/// How long an instance went on giving the old answer after a change was answered
/// elsewhere, measured from `since` (the moment the changing response arrived).
#[derive(Debug, Clone, Copy)]
pub struct Staleness {
    /// When the last request that still got the old answer was sent (`None`: not one).
    pub last_old_sent: Option<Duration>,
    /// When the first response with the new answer arrived.
    pub first_new_arrived: Duration,
    pub polls: usize,
}

impl Staleness {
    /// The change is seen at worst `bound` later: no request sent `bound` or more after
    /// the change got the old answer.
    pub fn within(&self, bound: Duration) -> bool {
        self.last_old_sent.is_none_or(|sent| sent < bound)
    }
}

impl std::fmt::Display for Staleness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.last_old_sent {
            Some(old) => write!(
                f,
                "old answer to a request sent at +{} ms, ",
                old.as_millis()
            )?,
            None => f.write_str("never the old answer, ")?,
        }
        write!(
            f,
            "new answer arrived at +{} ms ({} polls)",
            self.first_new_arrived.as_millis(),
            self.polls
        )
    }
}

/// Sends `request()` every ~10 ms until it answers `new_status`; every answer before that
/// must be `old_status`. Gives up (panics) after `give_up`. Three more requests must then
/// give the new answer too, so a flapping instance is caught.
pub async fn poll_until_status(
    what: &str,
    request: impl Fn() -> reqwest::RequestBuilder,
    old_status: u16,
    new_status: u16,
    since: tokio::time::Instant,
    give_up: Duration,
) -> Staleness {
    let mut last_old_sent = None;
    let mut polls = 0;
    loop {
        let sent = since.elapsed();
        let response = request().send().await.unwrap();
        polls += 1;
        let status = response.status().as_u16();
        if status == new_status {
            let first_new_arrived = since.elapsed();
            for _ in 0..3 {
                let (status, body) = status_and_body(request().send().await.unwrap()).await;
                assert_eq!(status, new_status, "{what}: flapped back: {body}");
            }
            return Staleness {
                last_old_sent,
                first_new_arrived,
                polls,
            };
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(
            status,
            old_status,
            "{what}: unexpected answer at +{} ms: {body}",
            sent.as_millis()
        );
        last_old_sent = Some(sent);
        assert!(
            since.elapsed() < give_up,
            "{what}: still the old answer ({old_status}) after {} ms",
            since.elapsed().as_millis()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `env` as the `(&str, &str)` pairs [`rampart`] and [`Server::start`] take.
pub fn borrow(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// What every instance of one test deployment shares: an EdDSA key set generated once in
/// `dir/keys` (as an operator would before a rollout), one database, one Redis under a
/// fresh prefix, one data key, and cheap hashing (these tests are about shared state, not
/// Argon2's cost). Callers add their own limits.
pub async fn deployment_env(
    dir: &Path,
    database_url: &str,
    redis_url: &str,
) -> (PathBuf, Vec<(String, String)>) {
    let keys = dir.join("keys");
    let out = run(
        dir,
        &[],
        &[
            "keys",
            "generate",
            "--dir",
            &path_str(&keys),
            "--alg",
            "EdDSA",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
    let env = [
        ("DATABASE_URL", database_url.to_owned()),
        ("REDIS_URL", redis_url.to_owned()),
        ("RAMPART_REDIS_PREFIX", unique_redis_prefix()),
        ("RAMPART_JWT_ALG", "EdDSA".to_owned()),
        ("RAMPART_JWT_KEYS_DIR", path_str(&keys)),
        ("RAMPART_DATA_KEY", random_data_key()),
        ("RAMPART_COOKIE_SECURE", "false".to_owned()),
        ("RAMPART_ARGON2_MEMORY_KIB", "256".to_owned()),
        ("RAMPART_ARGON2_ITERATIONS", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    (keys, env)
}
