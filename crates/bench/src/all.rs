//! `rampart-bench all`: every figure of issue 13 in one command, on PostgreSQL and/or SQLite,
//! ending with one table (figure, value, target, met).
//!
//! First the single-thread Argon2id hash rate (the login limit is `workers` × that rate, as
//! in `load`). Then, per backend, on a fresh database and one `rampart serve`:
//! 1. VmRSS idle (1 s after `/health/ready`).
//! 2. Start to ready: `--starts` more `rampart serve` in the same directory (database
//!    migrated, keys present), each timed from the spawn to the first 200 on
//!    `/health/ready` polled every millisecond, then stopped; the median is the figure.
//! 3. `/users/me` closed loop at every `--concurrency` (8 and 64 always among them), with
//!    server CPU per request (server cores ÷ throughput, from `/proc`); VmRSS right after
//!    the 64-connection run.
//! 4. Rampart against the bare axum + sqlx baseline (`bare-server`, a process of its own on
//!    the same database, same query, same pool): `/users/me` at 64 connections,
//!    interleaved (Rampart, bare, Rampart, bare…), after checking that both answer the
//!    same body. The figure is the ratio of server CPU per request, over all rounds.
//! 5. `/health/live` at the best `/me` concurrency (the pipeline's ceiling; no target).
//! 6. Logins alone: `--login-clients` closed-loop clients, against `0.9 × workers × rate`.
//! 7. Flood: `--flood-logins` login clients and `--flood-me` `/me` connections together,
//!    closed loop; `/me`'s p99 and its throughput against the same concurrency without
//!    the flood (phase 3).
//! 8. Shedding: one more `rampart serve` with `RAMPART_HASH_QUEUE=--shed-queue` (plus any
//!    `--shed-env`) gets logins at `--shed-rate` per second, open loop over
//!    `--shed-clients` connections (`--shed-rate 0`: closed loop); the latency of its 503
//!    answers, from the actual send, is the figure. Open loop, so that the figure is the
//!    server's time to refuse, not the queue a closed loop of 256 clients builds in front
//!    of any server (Little's law).
//!
//! Nothing here asserts a timing: "met" is printed, never enforced.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::ValueEnum;
use hyper::header::HeaderValue;
use rampart_core::passwords::{HashParams, HashPool};

use crate::http::{Conn, Target};
use crate::load::{self, Group, Pace, Row};
use crate::server::{Cluster, Database, Instance};
use crate::stats::{self, Outcomes};
use crate::{Alg, crypto, parse_key_value};

#[derive(clap::Args)]
pub struct AllArgs {
    /// The server binary (build it with `cargo build --release -p rampart-server`).
    #[arg(long)]
    pub bin: PathBuf,
    /// A PostgreSQL server URL, needed for the `postgres` backend (a fresh database is
    /// created through it and dropped after).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Backends to measure, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "postgres,sqlite"
    )]
    pub backends: Vec<BackendChoice>,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Connections of the `/me` phases (8 and 64 are added when missing: the flood and the
    /// targets are stated at them).
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,64")]
    pub concurrency: Vec<usize>,
    /// Rounds of the interleaved Rampart / bare baseline comparison (each round: one
    /// phase of each at 64 connections).
    #[arg(long, default_value_t = 2)]
    pub compare_rounds: usize,
    /// Closed-loop clients of the login phase (nothing else running).
    #[arg(long, default_value_t = 16)]
    pub login_clients: usize,
    /// Login clients of the flood.
    #[arg(long, default_value_t = 32)]
    pub flood_logins: usize,
    /// `/me` connections beside the flood.
    #[arg(long, default_value_t = 8)]
    pub flood_me: usize,
    /// Connections of the shedding phase.
    #[arg(long, default_value_t = 256)]
    pub shed_clients: usize,
    /// Logins per second offered in the shedding phase (open loop); 0 = closed loop.
    #[arg(long, default_value_t = 1000)]
    pub shed_rate: u32,
    /// `RAMPART_HASH_QUEUE` of the shedding phase's server.
    #[arg(long, default_value_t = 4)]
    pub shed_queue: usize,
    /// Extra environment of the shedding phase's server only, `KEY=VALUE` (repeatable),
    /// e.g. `RAMPART_HASH_QUEUE_WAIT_MS=5`.
    #[arg(long = "shed-env", value_parser = parse_key_value)]
    pub shed_env: Vec<(String, String)>,
    /// Timed starts; the median is the figure.
    #[arg(long, default_value_t = 5)]
    pub starts: usize,
    /// Users registered (and logged in) before the phases.
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// Worker threads of the load generator's runtime (it shares the cores with the server).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Signing algorithm of the server's generated key.
    #[arg(long, value_enum, default_value_t = Alg::Rs256)]
    pub alg: Alg,
    /// Extra environment of every server (and the baseline), `KEY=VALUE` (repeatable).
    #[arg(long = "server-env", value_parser = parse_key_value)]
    pub server_env: Vec<(String, String)>,
    /// The single-thread Argon2id hash rate; measured for 3 s before the run when absent.
    #[arg(long)]
    pub hash_rate: Option<f64>,
    /// Phases to leave out.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub skip: Vec<Phase>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Postgres,
    Sqlite,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    Startup,
    Me,
    Compare,
    Live,
    Login,
    Flood,
    Shed,
}

/// The connection count the `/me` targets and the baseline comparison are stated at.
const TARGET_CONNECTIONS: usize = 64;

pub fn run(args: &AllArgs) -> Result<()> {
    validate(args)?;
    let hash_rate = match args.hash_rate {
        Some(rate) if rate > 0.0 => rate,
        Some(_) => bail!("--hash-rate must be positive"),
        None => {
            println!("measuring the single-thread Argon2id hash and verify rates (3 s each)…");
            crypto::hash_rates(3.0)?.hash
        }
    };
    let workers = args
        .server_env
        .iter()
        .rev()
        .find(|(k, _)| k == "RAMPART_HASH_WORKERS")
        .map(|(_, v)| v.parse::<usize>())
        .transpose()
        .context("RAMPART_HASH_WORKERS")?
        .unwrap_or_else(HashPool::default_workers);
    let hash = HashLimit {
        rate: hash_rate,
        workers,
    };
    let mut figures = vec![Figure::info(
        "",
        "Argon2id hash rate, 1 thread",
        format!(
            "{hash_rate:.1}/s ({})",
            if args.hash_rate.is_some() {
                "given by --hash-rate"
            } else {
                "measured first"
            }
        ),
    )];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    let mut outcome = Ok(());
    for &backend in &args.backends {
        match runtime.block_on(run_backend(args, backend, hash)) {
            Ok(rows) => figures.extend(rows),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    println!("\nrampart-bench all: figures and targets (nothing is asserted)\n");
    print_table(&figures);
    outcome
}

fn validate(args: &AllArgs) -> Result<()> {
    if args.backends.is_empty() {
        bail!("--backends needs at least one of postgres, sqlite");
    }
    if args.backends.contains(&BackendChoice::Postgres) && args.database_url.is_none() {
        bail!(
            "the postgres backend needs --database-url (e.g. postgres://postgres@127.0.0.1:5432/postgres), or pass --backends sqlite"
        );
    }
    if args.concurrency.contains(&0) {
        bail!("--concurrency needs positive values");
    }
    if args.users == 0
        || args.login_clients == 0
        || args.flood_logins == 0
        || args.flood_me == 0
        || args.shed_clients == 0
        || args.shed_queue == 0
        || args.starts == 0
        || args.compare_rounds == 0
    {
        bail!(
            "--users, --login-clients, --flood-logins, --flood-me, --shed-clients, --shed-queue, --starts and --compare-rounds must be positive"
        );
    }
    Ok(())
}

/// The `/me` concurrencies: the given ones, with 8 and 64 added, in increasing order.
fn sweep(concurrency: &[usize], flood_me: usize) -> Vec<usize> {
    let mut all = concurrency.to_vec();
    all.extend([flood_me, TARGET_CONNECTIONS]);
    all.sort_unstable();
    all.dedup();
    all
}

#[derive(Clone, Copy)]
struct HashLimit {
    rate: f64,
    workers: usize,
}

impl HashLimit {
    fn limit(self) -> f64 {
        self.rate * self.workers as f64
    }
}

async fn run_backend(
    args: &AllArgs,
    backend: BackendChoice,
    hash: HashLimit,
) -> Result<Vec<Figure>> {
    let admin = match backend {
        BackendChoice::Postgres => Some(
            args.database_url
                .as_deref()
                .ok_or_else(|| anyhow!("the postgres backend needs --database-url"))?,
        ),
        BackendChoice::Sqlite => None,
    };
    let db = Database::create(admin).await?;
    let outcome = async {
        let cluster = Cluster::start(
            &args.bin,
            db.url.as_deref(),
            None,
            args.alg.as_str(),
            &args.server_env,
            1,
        )
        .await?;
        let result = async {
            let mut run = Run::new(args, &cluster, db.backend(), hash)?;
            run.phases().await?;
            anyhow::Ok(run.figures)
        }
        .await;
        cluster.stop().await?;
        result
    }
    .await;
    if let Err(e) = db.destroy().await {
        eprintln!("rampart-bench: could not drop the bench database: {e:#}");
    }
    outcome
}

/// One backend's run: the server, the load generator's view of it, and the figures so far.
struct Run<'a> {
    args: &'a AllArgs,
    cluster: &'a Cluster,
    backend: &'static str,
    hash: HashLimit,
    target: Target,
    pid: u32,
    hz: f64,
    seconds: Duration,
    figures: Vec<Figure>,
}

impl<'a> Run<'a> {
    fn new(
        args: &'a AllArgs,
        cluster: &'a Cluster,
        backend: &'static str,
        hash: HashLimit,
    ) -> Result<Self> {
        let instance = cluster
            .instances
            .first()
            .ok_or_else(|| anyhow!("no server instance"))?;
        Ok(Self {
            args,
            cluster,
            backend,
            hash,
            target: Target::new(instance.addr)?,
            pid: instance.pid,
            hz: stats::clock_ticks(),
            seconds: Duration::from_secs(args.seconds.max(1)),
            figures: Vec::new(),
        })
    }

    fn skip(&self, phase: Phase) -> bool {
        self.args.skip.contains(&phase)
    }

    fn postgres(&self) -> bool {
        self.backend == "PostgreSQL"
    }

    fn info(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let figure = Figure::info(self.backend, name, value);
        self.figures.push(figure);
    }

    fn check(&mut self, name: impl Into<String>, value: impl Into<String>, goal: Goal, x: f64) {
        let figure = Figure::check(self.backend, name, value, goal, x);
        self.figures.push(figure);
    }

    fn print_facts(&self) {
        let args = self.args;
        let params = HashParams::default();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut facts = stats::machine_facts();
        facts.extend([
            ("server backend".to_owned(), self.backend.to_owned()),
            (
                "server".to_owned(),
                format!(
                    "{} (pid {} on {}, active kid {})",
                    args.bin.display(),
                    self.pid,
                    self.target.addr,
                    self.cluster.kid
                ),
            ),
            ("signing algorithm".to_owned(), args.alg.as_str().to_owned()),
            (
                "argon2id params".to_owned(),
                format!("m={} KiB, t={}, p={}", params.m_kib, params.t, params.p),
            ),
            (
                "hashing limit".to_owned(),
                format!(
                    "{:.1} hashes/s ({} worker(s) × {:.1}/s single-thread; {cores} core(s))",
                    self.hash.limit(),
                    self.hash.workers,
                    self.hash.rate
                ),
            ),
            (
                "load generator".to_owned(),
                format!(
                    "same machine, {} runtime thread(s), one hyper HTTP/1.1 connection per task",
                    args.client_threads.max(1)
                ),
            ),
        ]);
        if !args.server_env.is_empty() {
            facts.push(("extra server env".to_owned(), env_text(&args.server_env)));
        }
        if !args.shed_env.is_empty() {
            facts.push((
                "extra env of the shedding server".to_owned(),
                env_text(&args.shed_env),
            ));
        }
        println!(
            "\nrampart-bench all on {} ({} s per phase)",
            self.backend,
            self.seconds.as_secs()
        );
        stats::print_facts(&facts);
    }

    async fn phases(&mut self) -> Result<()> {
        self.print_facts();

        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = self.rss("VmRSS")?;
        println!("\nVmRSS idle (1 s after ready): {} MiB", stats::mib(idle));
        self.check(
            "RSS idle (VmRSS)",
            format!("{} MiB", stats::mib(idle)),
            Goal::AtMost(30.0, "MiB"),
            idle as f64 / 1024.0,
        );

        if !self.skip(Phase::Startup) {
            self.startup().await?;
        }

        let started = std::time::Instant::now();
        let tokens =
            Arc::new(load::setup_users(std::slice::from_ref(&self.target), self.args.users).await?);
        println!(
            "\nregistered and logged in {} users in {:.1} s",
            self.args.users,
            started.elapsed().as_secs_f64()
        );
        // Apart from the idle figure: registrations and logins ran Argon2 (19 MiB a hash).
        let (rss, hwm) = self.rss_pair()?;
        self.info(
            "RSS after the users' set-up (VmRSS; peak VmHWM)",
            format!("{} MiB (peak {} MiB)", stats::mib(rss), stats::mib(hwm)),
        );
        let me = load::me_requests(Arc::clone(&tokens));
        // Warm-up: connections, caches, the database's plan cache. Not reported.
        let _ = self.closed(16, load::WARM_UP, me.clone(), self.pid).await?;

        println!();
        load::print_header();
        let mut no_flood: Option<Row> = None;
        let mut best: Option<Row> = None;
        let mut rss_after = None;
        if !self.skip(Phase::Me) {
            for connections in sweep(&self.args.concurrency, self.args.flood_me) {
                let row = self
                    .measure("GET /users/me", connections, me.clone(), self.pid)
                    .await?;
                if connections == TARGET_CONNECTIONS {
                    rss_after = Some(self.rss_pair()?);
                }
                self.me_figures(&row);
                if connections == self.args.flood_me {
                    no_flood = Some(row.clone());
                }
                if best.as_ref().is_none_or(|b| row.rate > b.rate) {
                    best = Some(row);
                }
            }
        }

        if !self.skip(Phase::Compare) {
            let after = self.compare(&tokens, me.clone()).await?;
            rss_after = rss_after.or(after);
        }
        if let Some((rss, hwm)) = rss_after {
            self.check(
                format!("RSS after /me c{TARGET_CONNECTIONS} (VmRSS; peak VmHWM)"),
                format!("{} MiB (peak {} MiB)", stats::mib(rss), stats::mib(hwm)),
                Goal::AtMost(80.0, "MiB"),
                rss as f64 / 1024.0,
            );
        }

        if !self.skip(Phase::Live) {
            let connections = best.as_ref().map_or(TARGET_CONNECTIONS, |b| b.connections);
            let live: load::MakeRequest =
                Arc::new(|target: &Target, _: usize, _: u64| target.get("/health/live", None));
            let row = self
                .measure("GET /health/live (ceiling)", connections, live, self.pid)
                .await?;
            self.info(
                format!("/health/live c{connections} (ceiling)"),
                format!("{:.0} req/s, server {}", row.rate, us_text(row.server_us())),
            );
        }

        let logins = load::login_bodies(self.args.users);
        if !self.skip(Phase::Login) {
            self.login_alone(Arc::clone(&logins)).await?;
        }
        if !self.skip(Phase::Flood) {
            self.flood(Arc::clone(&logins), &tokens, no_flood.as_ref())
                .await?;
        }
        if !self.skip(Phase::Shed) {
            self.shed(Arc::clone(&logins)).await?;
        }

        let (rss, hwm) = self.rss_pair()?;
        self.info(
            "RSS at the end (VmRSS; peak VmHWM)",
            format!("{} MiB (peak {} MiB)", stats::mib(rss), stats::mib(hwm)),
        );
        Ok(())
    }

    fn rss(&self, field: &str) -> Result<u64> {
        stats::status_kib(self.pid, field)
            .ok_or_else(|| anyhow!("no {field} in /proc/{}/status", self.pid))
    }

    fn rss_pair(&self) -> Result<(u64, u64)> {
        Ok((self.rss("VmRSS")?, self.rss("VmHWM")?))
    }

    /// Closed loop of `make` on the main server (or the process `pid`).
    async fn closed(
        &self,
        connections: usize,
        duration: Duration,
        make: load::MakeRequest,
        pid: u32,
    ) -> Result<(Vec<Outcomes>, Duration, Option<stats::CpuUse>)> {
        load::closed_loop(
            std::slice::from_ref(&self.target),
            connections,
            duration,
            make,
            &[pid],
            self.hz,
        )
        .await
    }

    /// One printed closed-loop phase against the main server.
    async fn measure(
        &self,
        phase: &str,
        connections: usize,
        make: load::MakeRequest,
        pid: u32,
    ) -> Result<Row> {
        let (out, elapsed, cpu) = self.closed(connections, self.seconds, make, pid).await?;
        let row = load::row(phase, connections, out, elapsed, cpu);
        row.print();
        Ok(row)
    }

    fn me_figures(&mut self, row: &Row) {
        let c = row.connections;
        let value = format!(
            "{:.0} req/s, p99 {} ms, server {}{}",
            row.rate,
            stats::ms(row.latency.p99),
            us_text(row.server_us()),
            errors_suffix(&row.errors)
        );
        if c != TARGET_CONNECTIONS {
            self.info(format!("/me c{c}"), value);
            return;
        }
        let goal = if self.postgres() { 9000.0 } else { 12000.0 };
        self.check(
            format!("/me c{c} throughput"),
            value,
            Goal::AtLeast(goal, "req/s"),
            row.rate,
        );
        if self.postgres() {
            match row.server_us() {
                Some(us) => self.check(
                    format!("/me c{c} server CPU per request"),
                    format!("{us:.0} µs"),
                    Goal::AtMost(110.0, "µs"),
                    us,
                ),
                None => self.info(format!("/me c{c} server CPU per request"), "no 200s"),
            }
            let p99 = row.latency.p99.as_secs_f64() * 1000.0;
            self.check(
                format!("/me c{c} p99"),
                format!("{} ms", stats::ms(row.latency.p99)),
                Goal::AtMost(10.0, "ms"),
                p99,
            );
        }
    }

    async fn startup(&mut self) -> Result<()> {
        println!(
            "\nstart to ready ({} starts, database migrated, keys present):",
            self.args.starts
        );
        let mut times = Vec::with_capacity(self.args.starts);
        for n in 1..=self.args.starts {
            let took = self.cluster.time_start(&format!("start-{n}")).await?;
            println!("  start {n}: {} ms", stats::ms(took));
            times.push(took);
        }
        let median = stats::median(&mut times).unwrap_or_default();
        let (min, max) = (times[0], times[times.len() - 1]);
        let goal = if self.postgres() { 300.0 } else { 150.0 };
        self.check(
            format!("start to ready, median of {}", times.len()),
            format!(
                "{} ms (min {}, max {})",
                stats::ms(median),
                stats::ms(min),
                stats::ms(max)
            ),
            Goal::AtMost(goal, "ms"),
            median.as_secs_f64() * 1000.0,
        );
        Ok(())
    }

    /// Rampart and the bare baseline, interleaved at 64 connections. Returns the main
    /// server's VmRSS and VmHWM after its first round.
    async fn compare(
        &mut self,
        tokens: &Arc<Vec<HeaderValue>>,
        me: load::MakeRequest,
    ) -> Result<Option<(u64, u64)>> {
        // `scripts/bench-instructions.sh --bare` puts the baseline under callgrind: a
        // program that runs `rampart-bench` with the arguments it is given.
        let exe = match std::env::var_os("RAMPART_BENCH_BARE_PROGRAM") {
            Some(program) => PathBuf::from(program),
            None => std::env::current_exe().context("locating rampart-bench itself")?,
        };
        let bare = self
            .cluster
            .launch(
                &exe,
                &[
                    "bare-server".to_owned(),
                    "--database-url".to_owned(),
                    self.cluster.database_url(),
                ],
                &[],
                "bare-server",
            )
            .await?;
        let result = self.compare_with(&bare, tokens, me).await;
        bare.stop().await?;
        result
    }

    async fn compare_with(
        &mut self,
        bare: &Instance,
        tokens: &Arc<Vec<HeaderValue>>,
        me: load::MakeRequest,
    ) -> Result<Option<(u64, u64)>> {
        let bare_target = Target::new(bare.addr)?;
        let token = tokens.first().ok_or_else(|| anyhow!("no users"))?;
        let ours = me_body(&self.target, token).await?;
        let theirs = me_body(&bare_target, token).await?;
        let same = if ours == theirs {
            "byte for byte".to_owned()
        } else {
            let (a, b): (serde_json::Value, serde_json::Value) = (
                serde_json::from_slice(&ours)?,
                serde_json::from_slice(&theirs)?,
            );
            if a != b {
                bail!(
                    "the bare baseline answers a different /users/me body:\n  rampart: {}\n  bare:    {}",
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&theirs)
                );
            }
            "field for field (not byte for byte)".to_owned()
        };
        println!(
            "\nbare axum + sqlx baseline: pid {} on {}, same /users/me body as rampart {same}",
            bare.pid, bare.addr
        );
        load::print_header();

        let mut rss_after = None;
        let (mut ours, mut theirs) = (CpuTotal::default(), CpuTotal::default());
        for round in 1..=self.args.compare_rounds {
            let row = self
                .measure(
                    &format!("rampart /users/me, round {round}"),
                    TARGET_CONNECTIONS,
                    me.clone(),
                    self.pid,
                )
                .await?;
            if rss_after.is_none() {
                rss_after = Some(self.rss_pair()?);
            }
            ours.add(&row, self.seconds);
            let (out, elapsed, cpu) = load::closed_loop(
                std::slice::from_ref(&bare_target),
                TARGET_CONNECTIONS,
                self.seconds,
                me.clone(),
                &[bare.pid],
                self.hz,
            )
            .await?;
            let row = load::row(
                &format!("bare axum+sqlx /users/me, round {round}"),
                TARGET_CONNECTIONS,
                out,
                elapsed,
                cpu,
            );
            row.print();
            theirs.add(&row, self.seconds);
        }
        let name = format!("/me c{TARGET_CONNECTIONS} server CPU per request ÷ bare axum+sqlx");
        match (ours.us_per_request(), theirs.us_per_request()) {
            (Some(a), Some(b)) if b > 0.0 => {
                let ratio = a / b;
                println!(
                    "server CPU per request over {} round(s): rampart {a:.0} µs, bare {b:.0} µs, ratio {ratio:.2}",
                    self.args.compare_rounds
                );
                self.check(
                    name,
                    format!(
                        "{ratio:.2} ({a:.0} µs ÷ {b:.0} µs; {:.0} vs {:.0} req/s)",
                        ours.rate(self.seconds, self.args.compare_rounds),
                        theirs.rate(self.seconds, self.args.compare_rounds)
                    ),
                    Goal::AtMost(1.25, "× bare"),
                    ratio,
                );
            }
            _ => self.info(name, "no 200 answers on one side"),
        }
        Ok(rss_after)
    }

    async fn login_alone(&mut self, logins: Arc<Vec<bytes::Bytes>>) -> Result<()> {
        let clients = self.args.login_clients;
        let row = self
            .measure(
                "POST /auth/login alone",
                clients,
                load::login_requests(logins, clients),
                self.pid,
            )
            .await?;
        let limit = self.hash.limit();
        let share = row.rate / limit;
        self.check(
            format!("logins/s alone (c{clients}) ÷ hashing limit"),
            format!(
                "{share:.2} ({:.1}/s ÷ {limit:.1}/s = {} worker(s) × {:.1}/s){}",
                row.rate,
                self.hash.workers,
                self.hash.rate,
                errors_suffix(&row.errors)
            ),
            Goal::AtLeast(0.9, "× limit"),
            share,
        );
        Ok(())
    }

    async fn flood(
        &mut self,
        logins: Arc<Vec<bytes::Bytes>>,
        tokens: &Arc<Vec<HeaderValue>>,
        no_flood: Option<&Row>,
    ) -> Result<()> {
        let (login_clients, me_connections) = (self.args.flood_logins, self.args.flood_me);
        let groups = [
            Group {
                connections: login_clients,
                make: load::login_requests(logins, login_clients),
                pace: Pace::Closed,
            },
            Group {
                connections: me_connections,
                make: load::me_requests(Arc::clone(tokens)),
                pace: Pace::Closed,
            },
        ];
        let (mut results, cpu) = load::run_groups(
            std::slice::from_ref(&self.target),
            &groups,
            self.seconds,
            &[self.pid],
            self.hz,
        )
        .await?;
        let (Some(me), Some(logins)) = (results.pop(), results.pop()) else {
            bail!("no outcomes");
        };
        let mut logins_row = load::row(
            "flood: POST /auth/login",
            login_clients,
            logins.per_instance,
            self.seconds,
            None,
        );
        logins_row.errors = format!("{} (503s are load shedding)", logins_row.errors);
        logins_row.print();
        let mut me_row = load::row(
            "flood: GET /users/me beside it",
            me_connections,
            me.per_instance,
            self.seconds,
            Some(cpu),
        );
        // The CPU is the whole window's (logins and /me): no per-request figure.
        let cpu_line = me_row.cpu.take();
        me_row.print();
        if let Some(cpu) = cpu_line {
            println!("{:<34} cpu (cores): {}", "", cpu.describe());
        }

        let p99 = me_row.latency.p99.as_secs_f64() * 1000.0;
        self.check(
            format!("/me c{me_connections} p99 during a login flood (c{login_clients})"),
            format!(
                "{} ms ({:.0} req/s; logins {:.1}/s){}",
                stats::ms(me_row.latency.p99),
                me_row.rate,
                logins_row.rate,
                errors_suffix(&me_row.errors)
            ),
            Goal::Below(10.0, "ms"),
            p99,
        );
        match no_flood {
            Some(before) if before.rate > 0.0 => {
                let share = me_row.rate / before.rate;
                self.check(
                    format!("/me c{me_connections} throughput during the flood ÷ without"),
                    format!("{share:.2} ({:.0} ÷ {:.0} req/s)", me_row.rate, before.rate),
                    Goal::AtLeast(0.5, "× without"),
                    share,
                );
            }
            _ => self.info(
                format!("/me c{me_connections} throughput during the flood ÷ without"),
                format!("{:.0} req/s (no flood-free run to compare)", me_row.rate),
            ),
        }
        Ok(())
    }

    async fn shed(&mut self, logins: Arc<Vec<bytes::Bytes>>) -> Result<()> {
        let mut env = vec![(
            "RAMPART_HASH_QUEUE".to_owned(),
            self.args.shed_queue.to_string(),
        )];
        env.extend(self.args.shed_env.iter().cloned());
        let server = self.cluster.serve(&env, "shed-server").await?;
        let result = self.shed_on(&server, logins, &env).await;
        server.stop().await?;
        result
    }

    async fn shed_on(
        &mut self,
        server: &Instance,
        logins: Arc<Vec<bytes::Bytes>>,
        env: &[(String, String)],
    ) -> Result<()> {
        let clients = self.args.shed_clients;
        let pace = match self.args.shed_rate {
            0 => Pace::Closed,
            rate => Pace::Open {
                rate: f64::from(rate),
            },
        };
        let offered = match pace {
            Pace::Closed => "closed loop".to_owned(),
            Pace::Open { rate } => format!("{rate:.0}/s offered"),
        };
        println!(
            "\nshedding: pid {} on {} with {}; {clients} connections, {offered}",
            server.pid,
            server.addr,
            env_text(env)
        );
        let group = Group {
            connections: clients,
            make: load::login_requests(logins, clients),
            pace,
        };
        let (mut results, cpu) = load::run_groups(
            &[Target::new(server.addr)?],
            &[group],
            self.seconds,
            &[server.pid],
            self.hz,
        )
        .await?;
        let group = results.pop().ok_or_else(|| anyhow!("no outcomes"))?;
        let mut from_send = Outcomes::default();
        for part in group.per_instance {
            from_send.merge(part);
        }
        let mut from_due = group.from_due;
        let shed = stats::summarize(&mut from_send.shed_latencies);
        let shed_due = stats::summarize(&mut from_due.shed_latencies);
        let shed_count = from_send.count(503);
        let ok = from_send.count(200);
        load::print_header();
        let row = load::row(
            "shed flood: POST /auth/login",
            clients,
            vec![from_send],
            self.seconds,
            Some(cpu),
        );
        row.print();
        println!(
            "{:<34} 503 answers: {shed_count}, from send p50 {} / p99 {} / max {} ms; from due p50 {} / p99 {} / max {} ms",
            "",
            stats::ms(shed.p50),
            stats::ms(shed.p99),
            stats::ms(shed.max),
            stats::ms(shed_due.p50),
            stats::ms(shed_due.p99),
            stats::ms(shed_due.max)
        );
        let name = format!("503 latency when shedding logins (c{clients}, {offered})");
        if shed_count == 0 {
            self.info(
                name,
                format!("no 503 answers ({ok} logins succeeded): offer more or lower --shed-queue"),
            );
        } else {
            self.check(
                name,
                format!(
                    "p50 {} / p99 {} / max {} ms ({shed_count} × 503, {ok} × 200)",
                    stats::ms(shed.p50),
                    stats::ms(shed.p99),
                    stats::ms(shed.max)
                ),
                Goal::Below(5.0, "ms"),
                shed.p99.as_secs_f64() * 1000.0,
            );
        }
        Ok(())
    }
}

/// `GET /users/me` once with `token`; the body of its 200.
async fn me_body(target: &Target, token: &HeaderValue) -> Result<bytes::Bytes> {
    let mut conn = Conn::open(target.addr).await?;
    let (status, body) = conn
        .send(target.get("/api/v1/users/me", Some(token))?)
        .await?;
    if status.as_u16() != 200 {
        bail!(
            "GET /users/me on {}: {status} {}",
            target.addr,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

/// Server CPU and 200 answers summed over several phases.
#[derive(Default)]
struct CpuTotal {
    cpu_seconds: f64,
    ok: u64,
}

impl CpuTotal {
    fn add(&mut self, row: &Row, window: Duration) {
        if let Some(cpu) = &row.cpu {
            self.cpu_seconds += cpu.server * window.as_secs_f64();
        }
        self.ok += row.ok;
    }

    fn us_per_request(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.cpu_seconds / self.ok as f64 * 1e6)
    }

    fn rate(&self, window: Duration, rounds: usize) -> f64 {
        self.ok as f64 / (window.as_secs_f64() * rounds as f64)
    }
}

fn us_text(us: Option<f64>) -> String {
    us.map_or_else(|| "— µs/req".to_owned(), |us| format!("{us:.0} µs/req"))
}

fn errors_suffix(errors: &str) -> String {
    if errors == "0" {
        String::new()
    } else {
        format!("; errors {errors}")
    }
}

fn env_text(env: &[(String, String)]) -> String {
    let pairs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(" ")
}

/// A target: the value must be at least, at most, or strictly below the bound, given in
/// the unit that follows it.
#[derive(Clone, Copy, Debug)]
enum Goal {
    AtLeast(f64, &'static str),
    AtMost(f64, &'static str),
    Below(f64, &'static str),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(bound, _) => value >= bound,
            Goal::AtMost(bound, _) => value <= bound,
            Goal::Below(bound, _) => value < bound,
        }
    }

    fn text(self) -> String {
        let (sign, bound, unit) = match self {
            Goal::AtLeast(bound, unit) => ("≥", bound, unit),
            Goal::AtMost(bound, unit) => ("≤", bound, unit),
            Goal::Below(bound, unit) => ("<", bound, unit),
        };
        format!("{sign} {} {unit}", number(bound))
            .trim_end()
            .to_owned()
    }
}

/// A bound as written in the issue: no decimals when whole.
fn number(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// One row of the final table.
struct Figure {
    backend: String,
    name: String,
    value: String,
    target: String,
    met: Option<bool>,
}

impl Figure {
    fn info(backend: &str, name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            backend: backend.to_owned(),
            name: name.into(),
            value: value.into(),
            target: String::new(),
            met: None,
        }
    }

    /// `x` is the number the goal is judged on, in the goal's unit.
    fn check(
        backend: &str,
        name: impl Into<String>,
        value: impl Into<String>,
        goal: Goal,
        x: f64,
    ) -> Self {
        Self {
            backend: backend.to_owned(),
            name: name.into(),
            value: value.into(),
            target: goal.text(),
            met: Some(goal.met(x)),
        }
    }
}

fn table(figures: &[Figure]) -> Vec<String> {
    let header = ["backend", "figure", "value", "target", "met"].map(str::to_owned);
    let rows: Vec<[String; 5]> = figures
        .iter()
        .map(|f| {
            [
                f.backend.clone(),
                f.name.clone(),
                f.value.clone(),
                f.target.clone(),
                match f.met {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "no".to_owned(),
                    None => "—".to_owned(),
                },
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 5]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| {
                let pad = width - cell.chars().count();
                format!("{cell}{}", " ".repeat(pad))
            })
            .collect();
        format!("| {} |", padded.join(" | "))
    };
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let mut lines = vec![line(&header), format!("|-{}-|", rule.join("-|-"))];
    lines.extend(rows.iter().map(line));
    lines
}

fn print_table(figures: &[Figure]) {
    for line in table(figures) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_judge_their_bound() {
        assert!(Goal::AtLeast(0.9, "").met(0.9));
        assert!(!Goal::AtLeast(9000.0, "").met(8999.9));
        assert!(Goal::AtMost(1.25, "").met(1.25));
        assert!(!Goal::AtMost(30.0, "").met(30.1));
        assert!(!Goal::Below(10.0, "").met(10.0));
        assert!(Goal::Below(5.0, "").met(4.99));
        assert_eq!(Goal::AtLeast(9000.0, "req/s").text(), "≥ 9000 req/s");
        assert_eq!(Goal::AtMost(1.25, "× bare").text(), "≤ 1.25 × bare");
        assert_eq!(Goal::Below(5.0, "").text(), "< 5");
    }

    #[test]
    fn sweep_always_has_the_flood_and_target_concurrencies() {
        assert_eq!(sweep(&[32, 16], 8), [8, 16, 32, 64]);
        assert_eq!(sweep(&[64, 8, 64], 8), [8, 64]);
        assert_eq!(sweep(&[128], 4), [4, 64, 128]);
    }

    #[test]
    fn table_aligns_columns_and_says_met() {
        let figures = [
            Figure::check(
                "SQLite",
                "/me c64 throughput",
                "12500 req/s",
                Goal::AtLeast(12000.0, "req/s"),
                12500.0,
            ),
            Figure::check(
                "SQLite",
                "RSS idle",
                "31.0 MiB",
                Goal::AtMost(30.0, "MiB"),
                31.0,
            ),
            Figure::info("", "Argon2id", "55.0/s"),
        ];
        let lines = table(&figures);
        assert_eq!(lines.len(), 5);
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{lines:#?}");
        assert!(
            lines[2].ends_with("| ≥ 12000 req/s | yes |"),
            "{}",
            lines[2]
        );
        assert!(lines[3].contains("| no  |"), "{}", lines[3]);
        assert!(lines[4].contains("| —   |"), "{}", lines[4]);
    }
}
