//! The system under test: a throwaway database (a SQLite file in the servers' shared temp
//! working directory, or a fresh PostgreSQL database `rampart_bench_<hex>` created through
//! the given server URL and dropped afterwards) and the real `rampart` binary: migrated
//! with `rampart migrate` and given a signing key with `rampart keys generate`, once, then
//! started as N `rampart serve` instances on free loopback ports, optionally sharing a
//! Redis under a prefix of the run's own (`bench_<hex>`).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use sqlx::Connection as _;
use tokio::process::{Child, Command};

use rampart_core::config::DEFAULT_DATABASE_URL;

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

/// Redis for one run: the URL given by `--redis-url`, and a prefix of our own so the run's
/// rate-limit keys and invalidation channel cannot meet anyone else's. The keys need no
/// clean-up: each expires as soon as its rate-limit budget is full again.
pub struct RedisSettings {
    pub url: String,
    pub prefix: String,
}

impl RedisSettings {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            prefix: format!("bench_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The URL without its user and password, for the report.
    pub fn display_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut url) => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.to_string()
            }
            Err(_) => "(unparsable URL)".to_owned(),
        }
    }
}

/// One process started by the bench and answering on `addr`: a `rampart serve`, or the
/// bare baseline (`rampart-bench bare-server`).
pub struct Instance {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    log: PathBuf,
}

/// N `rampart serve` processes sharing one working directory (so one `./data/keys` and, on
/// SQLite, one `./data/rampart.db`), one database, and the same Redis if any: the stateless
/// instances of a production deployment, on one machine. More processes can be started in
/// the same directory with the same environment ([`Cluster::launch`]).
pub struct Cluster {
    pub instances: Vec<Instance>,
    /// The kid of the signing key generated before the start, served by every instance.
    pub kid: String,
    bin: PathBuf,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

/// How often readiness is polled while the instances start for the phases.
const READY_POLL: Duration = Duration::from_millis(50);
/// How often readiness is polled when the start itself is measured.
const START_POLL: Duration = Duration::from_millis(1);

impl Cluster {
    /// Migrates and generates the signing key once, then starts `count` instances one after
    /// the other (each waits for `/health/ready`, so the first one alone creates the
    /// development data key when `RAMPART_DATA_KEY` is not given), and checks that every
    /// instance serves the generated key.
    pub async fn start(
        bin: &Path,
        database_url: Option<&str>,
        redis: Option<&RedisSettings>,
        alg: &str,
        extra_env: &[(String, String)],
        count: usize,
    ) -> Result<Self> {
        let bin = bin
            .canonicalize()
            .with_context(|| format!("server binary {}", bin.display()))?;
        let dir = tempfile::tempdir()?;

        let mut env: Vec<(String, String)> = vec![
            ("RAMPART_LOG_LEVEL".into(), "warn".into()),
            ("RAMPART_COOKIE_SECURE".into(), "false".into()),
            ("RAMPART_JWT_ALG".into(), alg.into()),
        ];
        env.extend(HIGH_LIMITS.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        if let Some(url) = database_url {
            env.push(("DATABASE_URL".into(), url.into()));
        }
        if let Some(redis) = redis {
            env.push(("REDIS_URL".into(), redis.url.clone()));
            env.push(("RAMPART_REDIS_PREFIX".into(), redis.prefix.clone()));
        }
        env.extend(extra_env.iter().cloned());

        run_once(&bin, dir.path(), &env, &["migrate"]).await?;
        let kid = run_once(&bin, dir.path(), &env, &["keys", "generate"]).await?;

        let mut cluster = Self {
            instances: Vec::with_capacity(count),
            kid: kid.trim().to_owned(),
            bin,
            env,
            dir,
        };
        for index in 0..count {
            let name = format!("server-{}", index + 1);
            match cluster.serve(&[], &name).await {
                Ok(instance) => cluster.instances.push(instance),
                Err(e) => {
                    let _ = cluster.stop().await;
                    return Err(e.context(format!("instance {}", index + 1)));
                }
            }
        }
        if let Err(e) = cluster.check_shared_key().await {
            let _ = cluster.stop().await;
            return Err(e);
        }
        Ok(cluster)
    }

    /// One more `rampart serve` in the cluster's directory with its environment plus
    /// `extra_env`, on a free port, once ready; not one of [`Cluster::instances`] (stop it
    /// with [`Instance::stop`]).
    pub async fn serve(&self, extra_env: &[(String, String)], name: &str) -> Result<Instance> {
        let bin = self.bin.clone();
        self.launch(&bin, &["serve".to_owned()], extra_env, name)
            .await
    }

    /// `program args` in the cluster's directory with its environment plus `extra_env` and
    /// `RAMPART_BIND` on a free loopback port (last, so that no `--server-env` can move it
    /// away from the address the load generator uses), once it answers 200 on
    /// `/health/ready`.
    pub async fn launch(
        &self,
        program: &Path,
        args: &[String],
        extra_env: &[(String, String)],
        name: &str,
    ) -> Result<Instance> {
        let (instance, _) = self
            .spawn(program, args, extra_env, name, READY_POLL)
            .await?;
        Ok(instance)
    }

    /// Starts `rampart serve` once more (the database migrated, the keys present) and
    /// returns the time from the spawn to the first 200 on `/health/ready`, polled every
    /// millisecond; the process is stopped again.
    pub async fn time_start(&self, name: &str) -> Result<Duration> {
        let bin = self.bin.clone();
        let (instance, elapsed) = self
            .spawn(&bin, &["serve".to_owned()], &[], name, START_POLL)
            .await?;
        instance.stop().await?;
        Ok(elapsed)
    }

    /// The cluster's `DATABASE_URL` as the servers resolve it in their directory.
    pub fn database_url(&self) -> String {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == "DATABASE_URL")
            .map_or_else(|| DEFAULT_DATABASE_URL.to_owned(), |(_, v)| v.clone())
    }

    async fn spawn(
        &self,
        program: &Path,
        args: &[String],
        extra_env: &[(String, String)],
        name: &str,
        poll: Duration,
    ) -> Result<(Instance, Duration)> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut env = self.env.clone();
        env.extend(extra_env.iter().cloned());
        env.push(("RAMPART_BIND".into(), addr.to_string()));

        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = command(program, self.dir.path(), &env);
        cmd.args(args)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({name})", program.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        let mut instance = Instance {
            child,
            pid,
            addr,
            log: log_path,
        };
        match instance.wait_ready(poll).await {
            Ok(()) => Ok((instance, started.elapsed())),
            Err(e) => {
                let log = instance.log_tail();
                Err(e.context(format!("{name} on {addr}; its log:\n{log}")))
            }
        }
    }

    /// Every instance must publish the one key generated before the start as its active
    /// key (first in the set): tokens issued by one instance are then verified by all.
    async fn check_shared_key(&self) -> Result<()> {
        for (index, instance) in self.instances.iter().enumerate() {
            let target = Target::new(instance.addr)?;
            let mut conn = Conn::open(instance.addr).await?;
            let (status, body) = conn
                .send(target.get("/.well-known/jwks.json", None)?)
                .await?;
            let jwks: serde_json::Value =
                serde_json::from_slice(&body).context("parsing /.well-known/jwks.json")?;
            let active = jwks["keys"][0]["kid"].as_str().unwrap_or_default();
            if !status.is_success() || active != self.kid {
                bail!(
                    "instance {} ({}) serves active key {active:?} ({status}), not the generated {:?}",
                    index + 1,
                    instance.addr,
                    self.kid
                );
            }
        }
        Ok(())
    }

    pub fn pids(&self) -> Vec<u32> {
        self.instances.iter().map(|i| i.pid).collect()
    }

    /// SIGTERM to every instance (graceful shutdown, in parallel), then SIGKILL to any
    /// still running after 15 s; prints each instance's last log lines.
    pub async fn stop(self) -> Result<()> {
        for instance in &self.instances {
            instance.terminate().await;
        }
        let mut result = Ok(());
        let several = self.instances.len() > 1;
        for (index, instance) in self.instances.into_iter().enumerate() {
            let which = if several {
                format!(" of instance {}", index + 1)
            } else {
                String::new()
            };
            if let Err(e) = instance.reap(&which).await {
                result = Err(e);
            }
        }
        result
    }
}

impl Instance {
    async fn wait_ready(&mut self, poll: Duration) -> Result<()> {
        let target = Target::new(self.addr)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the process exited early: {status}");
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
            tokio::time::sleep(poll).await;
        }
    }

    /// SIGTERM (graceful shutdown).
    async fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
    }

    /// Waits up to 15 s for the process to exit after [`Instance::terminate`], then kills
    /// it; prints its last log lines (`which` names it) when there are any.
    async fn reap(mut self, which: &str) -> Result<()> {
        let mut result = Ok(());
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => result = Err(e.into()),
            Err(_) => self.child.kill().await?,
        }
        let warnings = self.log_tail();
        if !warnings.trim().is_empty() {
            println!("\nlast server log lines{which} (level warn):\n{warnings}");
        }
        result
    }

    /// SIGTERM, then SIGKILL if still running after 15 s.
    pub async fn stop(self) -> Result<()> {
        self.terminate().await;
        let which = format!(" of pid {}", self.pid);
        self.reap(&which).await
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Runs `rampart <args>` to completion; returns its standard output.
async fn run_once(
    bin: &Path,
    dir: &Path,
    env: &[(String, String)],
    args: &[&str],
) -> Result<String> {
    let what = format!("rampart {}", args.join(" "));
    let out = command(bin, dir, env)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `bin` in `dir` with `env`, and no inherited Rampart or database settings.
fn command(bin: &Path, dir: &Path, env: &[(String, String)]) -> Command {
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
