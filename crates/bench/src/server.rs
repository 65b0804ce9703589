//! The system under test: a throwaway database (a SQLite file in the server's temp working
//! directory, or a fresh PostgreSQL database `rampart_bench_<hex>` created through the
//! given server URL and dropped afterwards) and the real `rampart` binary, migrated with
//! `rampart migrate`, then started with `rampart serve` on a free loopback port.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use sqlx::Connection as _;
use tokio::process::{Child, Command};

use crate::http::{Conn, Target};

/// Limits far above what the bench can reach: the phases measure the server, not its
/// rate limiter (which has its own tests).
const HIGH_LIMITS: [(&str, &str); 3] = [
    ("RAMPART_RATE_LIMIT_PER_MINUTE", "10000000"),
    ("RAMPART_LOGIN_RATE_PER_MINUTE", "10000000"),
    ("RAMPART_REGISTER_RATE_PER_HOUR", "10000000"),
];

/// A database for one run.
pub struct Database {
    /// What the server gets as `DATABASE_URL`; `None` = its default SQLite file.
    pub url: Option<String>,
    postgres: Option<(String, String)>,
}

impl Database {
    /// SQLite when `admin_url` is `None`; otherwise a new PostgreSQL database.
    pub async fn create(admin_url: Option<&str>) -> Result<Self> {
        let Some(admin) = admin_url else {
            return Ok(Self {
                url: None,
                postgres: None,
            });
        };
        let name = format!("rampart_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .context("connecting to the PostgreSQL server given by --database-url")?;
        // The name is ours (a fixed prefix and hex digits), never user input.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        conn.close().await.ok();
        let mut url = url::Url::parse(admin).context("parsing --database-url")?;
        url.set_path(&name);
        Ok(Self {
            url: Some(url.to_string()),
            postgres: Some((admin.to_owned(), name)),
        })
    }

    pub fn backend(&self) -> &'static str {
        if self.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    }

    /// Drops the PostgreSQL database (no-op for SQLite: its file goes with the temp dir).
    pub async fn destroy(self) -> Result<()> {
        let Some((admin, name)) = self.postgres else {
            return Ok(());
        };
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropping database {name}"))?;
        conn.close().await.ok();
        Ok(())
    }
}

/// A running `rampart serve`.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Server {
    /// Migrates, starts and waits for `/health/ready`.
    pub async fn start(
        bin: &Path,
        database_url: Option<&str>,
        alg: &str,
        extra_env: &[(String, String)],
    ) -> Result<Self> {
        let bin = bin
            .canonicalize()
            .with_context(|| format!("server binary {}", bin.display()))?;
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));

        let mut env: Vec<(String, String)> = vec![
            ("RAMPART_BIND".into(), addr.to_string()),
            ("RAMPART_LOG_LEVEL".into(), "warn".into()),
            ("RAMPART_COOKIE_SECURE".into(), "false".into()),
            ("RAMPART_JWT_ALG".into(), alg.into()),
        ];
        env.extend(HIGH_LIMITS.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        if let Some(url) = database_url {
            env.push(("DATABASE_URL".into(), url.into()));
        }
        env.extend(extra_env.iter().cloned());

        let migrate = command(&bin, dir.path(), &env)
            .arg("migrate")
            .output()
            .await
            .context("running rampart migrate")?;
        if !migrate.status.success() {
            bail!(
                "rampart migrate failed ({}): {}",
                migrate.status,
                String::from_utf8_lossy(&migrate.stderr).trim()
            );
        }

        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = command(&bin, dir.path(), &env)
            .arg("serve")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting rampart serve")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the server exited at once"))?;
        let mut server = Self {
            child,
            pid,
            addr,
            dir,
        };
        if let Err(e) = server.wait_ready().await {
            let log = server.log_tail();
            let _ = server.stop().await;
            return Err(e.context(format!("server log:\n{log}")));
        }
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let target = Target::new(self.addr)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("rampart serve exited early: {status}");
            }
            if let Ok(mut conn) = Conn::open(self.addr).await
                && let Ok((status, _)) = conn.send(target.get("/health/ready", None)?).await
                && status.is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("/health/ready did not answer 200 within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM (graceful shutdown), then SIGKILL after 15 s.
    pub async fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                self.child.kill().await?;
            }
        }
        let warnings = self.log_tail();
        if !warnings.trim().is_empty() {
            println!("\nlast server log lines (level warn):\n{warnings}");
        }
        Ok(())
    }
}

/// `bin` in `dir` with `env`, and no inherited Rampart or database settings.
fn command(bin: &PathBuf, dir: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir);
    for (name, _) in std::env::vars_os()
        .filter_map(|(k, v)| k.into_string().ok().map(|k| (k, v)))
        .filter(|(k, _)| k.starts_with("RAMPART_") || k == "DATABASE_URL" || k == "REDIS_URL")
    {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}
