//! `rampart-bench load`: the HTTP figures of the identity issue, against the real binary.
//!
//! Phases, each `--seconds` long after every connection is open:
//! 1. `GET /api/v1/users/me`, closed loop: C keep-alive connections, each sending its next
//!    request as soon as the previous answer is read, for every C of `--concurrency`.
//! 2. `GET /health/live` at the best C: the same pipeline without token or database, the
//!    ceiling the `/me` figure can be compared with.
//! 3. Login flood: `--login-clients` closed-loop clients post correct credentials to
//!    `/api/v1/auth/login` while a paced probe sends `GET /users/me` at `--probe-rate`. The
//!    probe is open loop: request k is due at `start + k / rate` whatever happened before,
//!    and its latency is measured from that due time, so a stalled server cannot hide its
//!    stall by delaying the probe (no coordinated omission).
//!
//! With `--instances N`, N `rampart serve` processes share the database, the key directory
//! and (with `--redis-url`) Redis, and every phase spreads its connections over them as a
//! least-connections load balancer would with equal backends: connection i goes to instance
//! i mod N. Rows report the aggregate rate and the percentiles of all requests together,
//! then each instance's rate.
//!
//! Latencies are kept in full and summarised with nearest-rank percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use hyper::header::HeaderValue;
use rampart_core::passwords::{HashParams, HashPool};
use tokio::sync::{mpsc, watch};

use crate::http::{self, Body, Conn, Target};
use crate::server::{Cluster, Database, RedisSettings};
use crate::stats::{self, CpuSnapshot, CpuUse, Outcomes, Summary};
use crate::{LoadArgs, crypto};

pub const PASSWORD: &str = "violet-harbor-lamp-7";
/// Connections of the paced probe: enough that one slow answer does not hold up the next
/// due request (each connection carries every 16th request).
const PROBE_CONNECTIONS: usize = 16;
pub const WARM_UP: Duration = Duration::from_secs(2);

pub fn run(args: &LoadArgs) -> Result<()> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency needs positive values");
    }
    if args.instances == 0 {
        bail!("--instances must be positive");
    }
    if args.concurrency.iter().any(|&c| c < args.instances) {
        bail!(
            "every --concurrency value must be at least --instances ({}), so that each instance gets a connection",
            args.instances
        );
    }
    if args.users == 0 || args.login_clients == 0 || args.probe_rate == 0 {
        bail!("--users, --login-clients and --probe-rate must be positive");
    }
    // The hashing limit is measured first, on an idle machine, as in `crypto`.
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
        .find(|(k, _)| k == "RAMPART_HASH_WORKERS")
        .map(|(_, v)| v.parse::<usize>())
        .transpose()
        .context("RAMPART_HASH_WORKERS")?
        .unwrap_or_else(HashPool::default_workers);
    let limits = HashLimit {
        rate: hash_rate,
        workers,
        instances: args.instances,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args, limits))
}

#[derive(Clone, Copy)]
struct HashLimit {
    rate: f64,
    /// Hash workers of each instance.
    workers: usize,
    instances: usize,
}

impl HashLimit {
    /// Every instance's pool together (on one machine, also bounded by its cores).
    fn limit(self) -> f64 {
        self.rate * (self.workers * self.instances) as f64
    }
}

async fn run_async(args: &LoadArgs, limits: HashLimit) -> Result<()> {
    let db = Database::create(args.database_url.as_deref()).await?;
    let redis = args.redis_url.as_deref().map(RedisSettings::new);
    let outcome = async {
        let cluster = Cluster::start(
            &args.bin,
            db.url.as_deref(),
            redis.as_ref(),
            args.alg.as_str(),
            &args.server_env,
            args.instances,
        )
        .await?;
        let result = phases(args, &cluster, db.backend(), redis.as_ref(), limits).await;
        cluster.stop().await?;
        result
    }
    .await;
    if let Err(e) = db.destroy().await {
        eprintln!("rampart-bench: could not drop the bench database: {e:#}");
    }
    outcome
}

/// One row of the result table.
#[derive(Clone)]
pub struct Row {
    pub phase: String,
    pub connections: usize,
    pub ok: u64,
    pub rate: f64,
    pub latency: Summary,
    pub errors: String,
    pub cpu: Option<CpuUse>,
    /// ok/s of each instance (printed when there are several).
    pub per_instance: Vec<f64>,
}

impl Row {
    /// Server CPU per 200 answer, in µs.
    pub fn server_us(&self) -> Option<f64> {
        self.cpu
            .as_ref()
            .and_then(|cpu| cpu.server_us_per(self.rate))
    }

    pub fn print(&self) {
        println!(
            "{:<34} {:>5} {:>9} {:>10.0} {:>8} {:>8} {:>8}  {}",
            self.phase,
            self.connections,
            self.ok,
            self.rate,
            stats::ms(self.latency.p50),
            stats::ms(self.latency.p99),
            stats::ms(self.latency.max),
            self.errors
        );
        if self.per_instance.len() > 1 {
            println!(
                "{:<34} ok/s per instance: {}",
                "",
                per_instance(&self.per_instance)
            );
        }
        if let Some(cpu) = &self.cpu {
            println!("{:<34} cpu (cores): {}", "", cpu.describe());
            if let Some(us) = self.server_us() {
                println!("{:<34} server cpu per 200: {us:.0} µs", "");
            }
        }
    }
}

pub fn print_header() {
    println!(
        "{:<34} {:>5} {:>9} {:>10} {:>8} {:>8} {:>8}  errors",
        "phase", "conns", "ok", "ok/s", "p50 ms", "p99 ms", "max ms"
    );
}

fn per_instance(rates: &[f64]) -> String {
    let rates: Vec<String> = rates
        .iter()
        .enumerate()
        .map(|(i, rate)| format!("#{} {rate:.0}", i + 1))
        .collect();
    rates.join(", ")
}

/// How the instances reach Redis, for the report: `(used, description)`.
fn redis_fact(args: &LoadArgs, redis: Option<&RedisSettings>) -> (bool, String) {
    match redis {
        Some(redis) => (
            true,
            format!(
                "{} with prefix {} (shared rate limits: one Redis round trip per request)",
                redis.display_url(),
                redis.prefix
            ),
        ),
        None if args.server_env.iter().any(|(k, _)| k == "REDIS_URL") => {
            (true, "REDIS_URL given by --server-env".to_owned())
        }
        None => (
            false,
            "none (each instance enforces the rate limits in its own memory)".to_owned(),
        ),
    }
}

async fn phases(
    args: &LoadArgs,
    cluster: &Cluster,
    backend: &str,
    redis: Option<&RedisSettings>,
    limits: HashLimit,
) -> Result<()> {
    let targets: Vec<Target> = cluster
        .instances
        .iter()
        .map(|instance| Target::new(instance.addr))
        .collect::<Result<_>>()?;
    let pids = cluster.pids();
    let instances = targets.len();
    let seconds = Duration::from_secs(args.seconds.max(1));
    let hz = stats::clock_ticks();
    let (redis_used, redis_text) = redis_fact(args, redis);
    let with_redis = if redis_used {
        "with Redis"
    } else {
        "without Redis"
    };

    let params = HashParams::default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut facts = stats::machine_facts();
    let servers: Vec<String> = cluster
        .instances
        .iter()
        .enumerate()
        .map(|(i, instance)| format!("#{} pid {} on {}", i + 1, instance.pid, instance.addr))
        .collect();
    facts.extend([
        ("server backend".to_owned(), backend.to_owned()),
        (
            "instances".to_owned(),
            format!(
                "{instances} × {}, one database, one key directory (active kid {})",
                args.bin.display(),
                cluster.kid
            ),
        ),
        ("servers".to_owned(), servers.join("; ")),
        ("redis".to_owned(), redis_text),
        ("signing algorithm".to_owned(), args.alg.as_str().to_owned()),
        (
            "argon2id params".to_owned(),
            format!("m={} KiB, t={}, p={}", params.m_kib, params.t, params.p),
        ),
        (
            "hash workers".to_owned(),
            format!("{} per instance", limits.workers),
        ),
        (
            "hashing limit".to_owned(),
            format!(
                "{:.1} hashes/s ({} instance(s) × {} worker(s) × {:.1}/s single-thread, {}){}",
                limits.limit(),
                instances,
                limits.workers,
                limits.rate,
                if args.hash_rate.is_some() {
                    "given by --hash-rate"
                } else {
                    "measured just before"
                },
                if limits.workers * instances > cores {
                    "; more hash threads than cores: the cores, not the pools, bound logins"
                } else {
                    ""
                }
            ),
        ),
        (
            "load generator".to_owned(),
            format!(
                "same machine, {} runtime thread(s), one hyper HTTP/1.1 connection per task, connection i to instance i mod {instances}",
                args.client_threads.max(1)
            ),
        ),
    ]);
    if !args.server_env.is_empty() {
        let extra: Vec<String> = args
            .server_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        facts.push(("extra server env".to_owned(), extra.join(" ")));
    }
    println!(
        "\nrampart-bench load ({} s per phase, {instances} instance(s), {with_redis})",
        seconds.as_secs()
    );
    stats::print_facts(&facts);

    let setup_start = Instant::now();
    let tokens = Arc::new(setup_users(&targets, args.users).await?);
    let logins = login_bodies(args.users);
    println!(
        "\nregistered and logged in {} users in {:.1} s",
        args.users,
        setup_start.elapsed().as_secs_f64()
    );

    // Tokens issued by every instance are used on every instance.
    let me = me_requests(Arc::clone(&tokens));
    let skip = |phase: &str| args.skip.iter().any(|s| s == phase);

    // Warm-up: connections, caches, the database's plan cache. Not reported.
    let _ = closed_loop(&targets, 16.max(instances), WARM_UP, me.clone(), &pids, hz).await?;

    println!();
    print_header();
    let mut best: Option<Row> = None;
    if !skip("me") {
        for &connections in &args.concurrency {
            let (out, elapsed, cpu) =
                closed_loop(&targets, connections, seconds, me.clone(), &pids, hz).await?;
            let row = row("GET /users/me", connections, out, elapsed, cpu);
            row.print();
            if best.as_ref().is_none_or(|b| row.rate > b.rate) {
                best = Some(row);
            }
        }
    }
    let best_connections = best
        .as_ref()
        .map_or(args.concurrency[0], |row| row.connections);
    if !skip("live") {
        let live: MakeRequest =
            Arc::new(|target: &Target, _: usize, _: u64| target.get("/health/live", None));
        let (out, elapsed, cpu) =
            closed_loop(&targets, best_connections, seconds, live, &pids, hz).await?;
        row(
            "GET /health/live (ceiling)",
            best_connections,
            out,
            elapsed,
            cpu,
        )
        .print();
    }

    let mut flood_summary = None;
    if !skip("flood") {
        let (logins_out, probe_out, elapsed, cpu) = login_flood(
            &targets,
            args,
            seconds,
            Arc::clone(&logins),
            Arc::clone(&tokens),
            &pids,
            hz,
        )
        .await?;
        let mut logins_row = row(
            "login flood: POST /auth/login",
            args.login_clients,
            logins_out,
            elapsed,
            Some(cpu),
        );
        logins_row.errors = format!("{} (503s are load shedding)", logins_row.errors);
        logins_row.print();
        let (probe, service) = probe_out;
        let probe_row = row(
            &format!("  paced GET /users/me @ {}/s", args.probe_rate),
            PROBE_CONNECTIONS,
            vec![probe],
            elapsed,
            None,
        );
        probe_row.print();
        let service_row = row(
            "  (same, from actual send)",
            PROBE_CONNECTIONS,
            vec![service],
            elapsed,
            None,
        );
        service_row.print();
        flood_summary = Some((logins_row.rate, probe_row.latency));
    }

    // The goals were set for one instance; with several they are not printed.
    let single = instances == 1;
    println!(
        "\nacceptance figures ({backend}, {}, {instances} instance(s), {with_redis}):",
        args.alg.as_str()
    );
    if let Some(best) = &best {
        println!(
            "  /users/me throughput      {:>8.0} req/s at {} connections, p50 {} ms, p99 {} ms{}",
            best.rate,
            best.connections,
            stats::ms(best.latency.p50),
            stats::ms(best.latency.p99),
            if single {
                " (goal ≥ 9000 on PostgreSQL)"
            } else {
                " (all instances together)"
            }
        );
        if !single {
            println!(
                "  …per instance             {}",
                per_instance(&best.per_instance)
            );
        }
    }
    if let Some((login_rate, probe)) = flood_summary {
        println!(
            "  login throughput          {:>8.1} logins/s = {:.2} of the hashing limit {:.1}/s{}",
            login_rate,
            login_rate / limits.limit(),
            limits.limit(),
            if single { " (goal ≥ 0.90)" } else { "" }
        );
        println!(
            "  /users/me during flood    p50 {} ms, p99 {} ms, max {} ms{}",
            stats::ms(probe.p50),
            stats::ms(probe.p99),
            stats::ms(probe.max),
            if single { " (goal: p99 < 10 ms)" } else { "" }
        );
    }
    Ok(())
}

/// A row from the outcomes of each instance (one entry: no per-instance line).
pub fn row(
    phase: &str,
    connections: usize,
    parts: Vec<Outcomes>,
    elapsed: Duration,
    cpu: Option<CpuUse>,
) -> Row {
    let secs = elapsed.as_secs_f64();
    let per_instance = parts.iter().map(|o| o.count(200) as f64 / secs).collect();
    let mut out = Outcomes::default();
    for part in parts {
        out.merge(part);
    }
    let ok = out.count(200);
    Row {
        phase: phase.to_owned(),
        connections,
        ok,
        rate: ok as f64 / secs,
        latency: stats::summarize(&mut out.latencies),
        errors: if out.non_200() == 0 {
            "0".to_owned()
        } else {
            out.describe_errors()
        },
        cpu,
        per_instance,
    }
}

pub fn email(i: usize) -> String {
    format!("bench{i}@bench.example")
}

/// Registers `users` users and logs each in, spread over the instances; returns their
/// bearer headers.
pub async fn setup_users(targets: &[Target], users: usize) -> Result<Vec<HeaderValue>> {
    // A few at a time: each registration and login costs one Argon2 hash on the server.
    const PARALLEL: usize = 4;
    let mut tasks = Vec::new();
    for lane in 0..PARALLEL {
        let target = targets[lane % targets.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(target.addr).await?;
            let mut tokens = Vec::new();
            for i in (lane..users).step_by(PARALLEL) {
                let body = serde_json::json!({
                    "email": email(i),
                    "password": PASSWORD,
                    "displayName": format!("Bench user {i}"),
                });
                let (status, answer) = conn
                    .send(target.post_json("/api/v1/auth/register", Bytes::from(body.to_string()))?)
                    .await?;
                if status.as_u16() != 201 {
                    bail!(
                        "register {}: {status} {}",
                        email(i),
                        String::from_utf8_lossy(&answer)
                    );
                }
                let body = serde_json::json!({"email": email(i), "password": PASSWORD});
                let (status, answer) = conn
                    .send(target.post_json("/api/v1/auth/login", Bytes::from(body.to_string()))?)
                    .await?;
                if status.as_u16() != 200 {
                    bail!(
                        "login {}: {status} {}",
                        email(i),
                        String::from_utf8_lossy(&answer)
                    );
                }
                let json: serde_json::Value = serde_json::from_slice(&answer)?;
                let token = json["accessToken"]
                    .as_str()
                    .ok_or_else(|| anyhow!("login answer without accessToken"))?;
                tokens.push(http::bearer(token)?);
            }
            anyhow::Ok(tokens)
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.extend(task.await??);
    }
    Ok(tokens)
}

/// The request of a task's `seq`-th turn, for the instance the task is connected to.
pub type MakeRequest =
    Arc<dyn Fn(&Target, usize, u64) -> Result<hyper::Request<Body>> + Send + Sync>;

/// `GET /api/v1/users/me`, rotating over the users' bearer headers.
pub fn me_requests(tokens: Arc<Vec<HeaderValue>>) -> MakeRequest {
    Arc::new(move |target: &Target, task: usize, seq: u64| {
        let token = &tokens[(task + seq as usize) % tokens.len()];
        target.get("/api/v1/users/me", Some(token))
    })
}

/// The login bodies of `users` users (correct passwords).
pub fn login_bodies(users: usize) -> Arc<Vec<Bytes>> {
    Arc::new(
        (0..users)
            .map(|i| {
                Bytes::from(
                    serde_json::json!({"email": email(i), "password": PASSWORD}).to_string(),
                )
            })
            .collect(),
    )
}

/// `POST /api/v1/auth/login` with correct credentials; `clients` tasks send in turn, task
/// t taking the users t, t + clients, t + 2 × clients… so they spread over every user.
pub fn login_requests(logins: Arc<Vec<Bytes>>, clients: usize) -> MakeRequest {
    Arc::new(move |target: &Target, task: usize, seq: u64| {
        let body = logins[(task + seq as usize * clients) % logins.len()].clone();
        target.post_json("/api/v1/auth/login", body)
    })
}

/// How a group's connections send.
#[derive(Clone, Copy)]
pub enum Pace {
    /// Each connection sends its next request as soon as the previous answer is read.
    Closed,
    /// Open loop at `rate` requests per second over all the group's connections: request k
    /// is due at `start + k / rate` whatever happened before (connection k mod C sends it),
    /// and its latency is measured from that due time as well as from the actual send.
    Open { rate: f64 },
}

/// Connections that run together with other groups in one measured window.
pub struct Group {
    pub connections: usize,
    pub make: MakeRequest,
    pub pace: Pace,
}

/// What one group's connections saw.
pub struct GroupOutcomes {
    /// By instance; latencies from the actual send.
    pub per_instance: Vec<Outcomes>,
    /// Open loop only: every instance together, latencies from the due time.
    pub from_due: Outcomes,
}

/// The measured window `(start, deadline)`, sent once every connection is open.
type Window = Option<(Instant, Instant)>;

/// A task's part in the start: it reports its connection open, then waits for the window.
struct Gate {
    ready: mpsc::Sender<()>,
    start: watch::Receiver<Window>,
}

impl Gate {
    async fn pass(self) -> Result<(Instant, Instant)> {
        let Gate { ready, mut start } = self;
        ready.send(()).await?;
        drop(ready);
        let window = start.wait_for(Option::is_some).await?;
        (*window).ok_or_else(|| anyhow!("no start signal"))
    }
}

/// Every connection of every group, each on its own keep-alive connection (connection i of
/// a group to instance i mod N), in one window of `duration` that opens once all are open.
/// Answers after the deadline are not counted in closed loop; in open loop every request
/// due before the deadline is. Returns each group's outcomes and where the CPU went.
pub async fn run_groups(
    targets: &[Target],
    groups: &[Group],
    duration: Duration,
    server_pids: &[u32],
    hz: f64,
) -> Result<(Vec<GroupOutcomes>, CpuUse)> {
    let (start_tx, start_rx) = watch::channel::<Window>(None);
    let parties: usize = groups.iter().map(|g| g.connections).sum();
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(parties.max(1));
    let mut tasks = Vec::with_capacity(parties);
    for (index, group) in groups.iter().enumerate() {
        for connection in 0..group.connections {
            let instance = connection % targets.len();
            let target = targets[instance].clone();
            let make = Arc::clone(&group.make);
            let gate = Gate {
                ready: ready_tx.clone(),
                start: start_rx.clone(),
            };
            let (pace, lanes) = (group.pace, group.connections);
            tasks.push(tokio::spawn(async move {
                let (from_send, from_due) = match pace {
                    Pace::Closed => (
                        closed_client(target, connection, make, gate).await?,
                        Outcomes::default(),
                    ),
                    Pace::Open { rate } => {
                        let (due, send) =
                            open_client(target, connection, lanes, rate, make, gate).await?;
                        (send, due)
                    }
                };
                anyhow::Ok((index, instance, from_send, from_due))
            }));
        }
    }
    drop(ready_tx);
    for _ in 0..parties {
        // A task that fails to connect drops its sender, but the others keep theirs.
        tokio::time::timeout(OPEN_TIMEOUT, ready_rx.recv())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| anyhow!("a client task failed to connect before the start"))?;
    }
    let before = CpuSnapshot::take(server_pids);
    let start = Instant::now();
    let deadline = start + duration;
    start_tx.send(Some((start, deadline)))?;
    tokio::time::sleep_until(deadline.into()).await;
    let cpu = CpuSnapshot::take(server_pids).since(&before, hz);
    let mut results: Vec<GroupOutcomes> = groups
        .iter()
        .map(|_| GroupOutcomes {
            per_instance: by_instance(targets.len()),
            from_due: Outcomes::default(),
        })
        .collect();
    for task in tasks {
        let (group, instance, from_send, from_due) = task.await??;
        results[group].per_instance[instance].merge(from_send);
        results[group].from_due.merge(from_due);
    }
    Ok((results, cpu))
}

/// How long the connections of a window may take to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// One closed-loop connection: the next request as soon as the previous answer is read.
async fn closed_client(
    target: Target,
    task: usize,
    make: MakeRequest,
    gate: Gate,
) -> Result<Outcomes> {
    let addr = target.addr;
    let mut conn = Some(Conn::open(addr).await?);
    let (_, deadline) = gate.pass().await?;
    let mut out = Outcomes::default();
    let mut seq = 0u64;
    loop {
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        let request = make(&target, task, seq)?;
        seq += 1;
        if conn.is_none() {
            match Conn::open(addr).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    out.transport_errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match c.send(request).await {
            Ok((status, _)) => {
                let done = Instant::now();
                if done <= deadline {
                    out.record(status.as_u16(), done - sent);
                }
            }
            Err(_) => {
                out.transport_errors += 1;
                conn = None;
            }
        }
    }
    Ok(out)
}

/// Lane `lane` of `lanes` of an open loop at `rate` requests per second: it sends the
/// requests due at `start + k / rate` for k = lane, lane + lanes, …. Returns the outcomes
/// with latencies from the due time, then from the actual send.
async fn open_client(
    target: Target,
    lane: usize,
    lanes: usize,
    rate: f64,
    make: MakeRequest,
    gate: Gate,
) -> Result<(Outcomes, Outcomes)> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut conn = Some(Conn::open(target.addr).await?);
    let (start, deadline) = gate.pass().await?;
    // From the due time (what a user sees) and from the actual send (the server's share);
    // the difference is time the request waited to be sent.
    let (mut from_due, mut from_send) = (Outcomes::default(), Outcomes::default());
    let mut slot = u32::try_from(lane)?;
    let stride = u32::try_from(lanes)?;
    loop {
        let due = start + interval * slot;
        if due >= deadline {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let request = make(&target, lane, u64::from(slot))?;
        slot += stride;
        let sent = Instant::now();
        if conn.is_none() {
            match Conn::open(target.addr).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    from_due.transport_errors += 1;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match c.send(request).await {
            Ok((status, _)) => {
                let done = Instant::now();
                from_due.record(status.as_u16(), done - due);
                from_send.record(status.as_u16(), done - sent);
            }
            Err(_) => {
                from_due.transport_errors += 1;
                from_send.transport_errors += 1;
                conn = None;
            }
        }
    }
    Ok((from_due, from_send))
}

/// `connections` closed-loop tasks of `make` for `duration`; the outcomes of each instance.
pub async fn closed_loop(
    targets: &[Target],
    connections: usize,
    duration: Duration,
    make: MakeRequest,
    server_pids: &[u32],
    hz: f64,
) -> Result<(Vec<Outcomes>, Duration, Option<CpuUse>)> {
    let group = Group {
        connections,
        make,
        pace: Pace::Closed,
    };
    let (mut results, cpu) = run_groups(targets, &[group], duration, server_pids, hz).await?;
    let group = results.pop().ok_or_else(|| anyhow!("no outcomes"))?;
    Ok((group.per_instance, duration, Some(cpu)))
}

fn by_instance(instances: usize) -> Vec<Outcomes> {
    (0..instances).map(|_| Outcomes::default()).collect()
}

/// Logins (closed loop) and the paced `/me` probe (open loop), started together; login
/// client i and probe connection i go to instance i mod N. Returns the logins of each
/// instance, and the probe's outcomes (all instances together) from the due time and from
/// the send.
#[allow(clippy::too_many_arguments)]
async fn login_flood(
    targets: &[Target],
    args: &LoadArgs,
    duration: Duration,
    logins: Arc<Vec<Bytes>>,
    tokens: Arc<Vec<HeaderValue>>,
    server_pids: &[u32],
    hz: f64,
) -> Result<(Vec<Outcomes>, (Outcomes, Outcomes), Duration, CpuUse)> {
    let groups = [
        Group {
            connections: args.login_clients,
            make: login_requests(logins, args.login_clients),
            pace: Pace::Closed,
        },
        Group {
            connections: PROBE_CONNECTIONS,
            make: me_requests(tokens),
            pace: Pace::Open {
                rate: f64::from(args.probe_rate),
            },
        },
    ];
    let (mut results, cpu) = run_groups(targets, &groups, duration, server_pids, hz).await?;
    let (Some(probe), Some(logins)) = (results.pop(), results.pop()) else {
        bail!("no outcomes");
    };
    let mut from_send = Outcomes::default();
    for part in probe.per_instance {
        from_send.merge(part);
    }
    Ok((
        logins.per_instance,
        (probe.from_due, from_send),
        duration,
        cpu,
    ))
}
