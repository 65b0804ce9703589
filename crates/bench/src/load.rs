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
use tokio::sync::watch;

use crate::http::{self, Body, Conn, Target};
use crate::server::{Cluster, Database, RedisSettings};
use crate::stats::{self, CpuSnapshot, CpuUse, Outcomes, Summary};
use crate::{LoadArgs, crypto};

const PASSWORD: &str = "violet-harbor-lamp-7";
/// Connections of the paced probe: enough that one slow answer does not hold up the next
/// due request (each connection carries every 16th request).
const PROBE_CONNECTIONS: usize = 16;
const WARM_UP: Duration = Duration::from_secs(2);

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
struct Row {
    phase: String,
    connections: usize,
    ok: u64,
    rate: f64,
    latency: Summary,
    errors: String,
    cpu: Option<CpuUse>,
    /// ok/s of each instance (printed when there are several).
    per_instance: Vec<f64>,
}

impl Row {
    fn print(&self) {
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
        }
    }
}

fn print_header() {
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
    let logins: Arc<Vec<Bytes>> = Arc::new(
        (0..args.users)
            .map(|i| {
                Bytes::from(
                    serde_json::json!({"email": email(i), "password": PASSWORD}).to_string(),
                )
            })
            .collect(),
    );
    println!(
        "\nregistered and logged in {} users in {:.1} s",
        args.users,
        setup_start.elapsed().as_secs_f64()
    );

    // Tokens issued by every instance are used on every instance.
    let me: MakeRequest = {
        let tokens = Arc::clone(&tokens);
        Arc::new(move |target: &Target, task: usize, seq: u64| {
            let token = &tokens[(task + seq as usize) % tokens.len()];
            target.get("/api/v1/users/me", Some(token))
        })
    };
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
fn row(
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

fn email(i: usize) -> String {
    format!("bench{i}@bench.example")
}

/// Registers `users` users and logs each in, spread over the instances; returns their
/// bearer headers.
async fn setup_users(targets: &[Target], users: usize) -> Result<Vec<HeaderValue>> {
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
type MakeRequest = Arc<dyn Fn(&Target, usize, u64) -> Result<hyper::Request<Body>> + Send + Sync>;

/// The measured window `(start, deadline)`, sent once every connection is open.
type Window = Option<(Instant, Instant)>;

async fn wait_start(rx: &mut watch::Receiver<Window>) -> Result<(Instant, Instant)> {
    let window = rx.wait_for(Option::is_some).await?;
    (*window).ok_or_else(|| anyhow!("no start signal"))
}

/// `connections` tasks, each on its own keep-alive connection to instance `task mod N`,
/// sending the next request as soon as the previous answer is read, for `duration`.
/// Answers after the deadline are not counted. Returns the outcomes of each instance.
async fn closed_loop(
    targets: &[Target],
    connections: usize,
    duration: Duration,
    make: MakeRequest,
    server_pids: &[u32],
    hz: f64,
) -> Result<(Vec<Outcomes>, Duration, Option<CpuUse>)> {
    let (start_tx, start_rx) = watch::channel::<Window>(None);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(connections);
    let mut tasks = Vec::with_capacity(connections);
    for task in 0..connections {
        let (make, mut start_rx, ready_tx) =
            (Arc::clone(&make), start_rx.clone(), ready_tx.clone());
        let instance = task % targets.len();
        let target = targets[instance].clone();
        let addr = target.addr;
        tasks.push(tokio::spawn(async move {
            let mut conn = Some(Conn::open(addr).await?);
            ready_tx.send(()).await?;
            drop(ready_tx);
            let (_, deadline) = wait_start(&mut start_rx).await?;
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
                            *out.statuses.entry(status.as_u16()).or_default() += 1;
                            if status.is_success() {
                                out.latencies.push(done - sent);
                            }
                        }
                    }
                    Err(_) => {
                        out.transport_errors += 1;
                        conn = None;
                    }
                }
            }
            anyhow::Ok((instance, out))
        }));
    }
    drop(ready_tx);
    for _ in 0..connections {
        ready_rx
            .recv()
            .await
            .ok_or_else(|| anyhow!("a client task failed before the start"))?;
    }
    let before = CpuSnapshot::take(server_pids);
    let start = Instant::now();
    let deadline = start + duration;
    start_tx.send(Some((start, deadline)))?;
    tokio::time::sleep_until(deadline.into()).await;
    let cpu = CpuSnapshot::take(server_pids).since(&before, hz);
    let mut per_instance = by_instance(targets.len());
    for task in tasks {
        let (instance, out) = task.await??;
        per_instance[instance].merge(out);
    }
    Ok((per_instance, duration, Some(cpu)))
}

fn by_instance(instances: usize) -> Vec<Outcomes> {
    (0..instances).map(|_| Outcomes::default()).collect()
}

/// Logins (closed loop) and the paced `/me` probe (open loop), started together; login
/// client i and probe connection i go to instance i mod N. Returns the logins of each
/// instance, and the probe's outcomes (all instances together).
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
    let (start_tx, start_rx) = watch::channel::<Window>(None);
    let parties = args.login_clients + PROBE_CONNECTIONS;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(parties);

    let mut flood = Vec::new();
    let login_clients = args.login_clients;
    for client in 0..login_clients {
        let instance = client % targets.len();
        let (target, logins) = (targets[instance].clone(), Arc::clone(&logins));
        let (mut start_rx, ready_tx) = (start_rx.clone(), ready_tx.clone());
        flood.push(tokio::spawn(async move {
            let mut conn = Some(Conn::open(target.addr).await?);
            ready_tx.send(()).await?;
            drop(ready_tx);
            let (_, deadline) = wait_start(&mut start_rx).await?;
            let mut out = Outcomes::default();
            let mut next = client;
            loop {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                let body = logins[next % logins.len()].clone();
                next += login_clients;
                let request = target.post_json("/api/v1/auth/login", body)?;
                if conn.is_none() {
                    match Conn::open(target.addr).await {
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
                            *out.statuses.entry(status.as_u16()).or_default() += 1;
                            if status.is_success() {
                                out.latencies.push(done - sent);
                            }
                        }
                    }
                    Err(_) => {
                        out.transport_errors += 1;
                        conn = None;
                    }
                }
            }
            anyhow::Ok((instance, out))
        }));
    }

    let interval = Duration::from_secs_f64(1.0 / f64::from(args.probe_rate));
    let mut probes = Vec::new();
    for lane in 0..PROBE_CONNECTIONS {
        let target = targets[lane % targets.len()].clone();
        let tokens = Arc::clone(&tokens);
        let (mut start_rx, ready_tx) = (start_rx.clone(), ready_tx.clone());
        probes.push(tokio::spawn(async move {
            let mut conn = Some(Conn::open(target.addr).await?);
            ready_tx.send(()).await?;
            drop(ready_tx);
            let (start, deadline) = wait_start(&mut start_rx).await?;
            // From the due time (what a user sees) and from the actual send (the server's
            // share); the difference is time the request waited to be sent.
            let (mut from_due, mut from_send) = (Outcomes::default(), Outcomes::default());
            let mut slot = lane as u32;
            loop {
                let due = start + interval * slot;
                if due >= deadline {
                    break;
                }
                let token = &tokens[slot as usize % tokens.len()];
                slot += PROBE_CONNECTIONS as u32;
                tokio::time::sleep_until(due.into()).await;
                let request = target.get("/api/v1/users/me", Some(token))?;
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
                        for out in [&mut from_due, &mut from_send] {
                            *out.statuses.entry(status.as_u16()).or_default() += 1;
                        }
                        if status.is_success() {
                            from_due.latencies.push(done - due);
                            from_send.latencies.push(done - sent);
                        }
                    }
                    Err(_) => {
                        from_due.transport_errors += 1;
                        from_send.transport_errors += 1;
                        conn = None;
                    }
                }
            }
            anyhow::Ok((from_due, from_send))
        }));
    }
    drop(ready_tx);
    for _ in 0..parties {
        ready_rx
            .recv()
            .await
            .ok_or_else(|| anyhow!("a client task failed before the start"))?;
    }
    let before = CpuSnapshot::take(server_pids);
    let start = Instant::now();
    let deadline = start + duration;
    start_tx.send(Some((start, deadline)))?;
    tokio::time::sleep_until(deadline.into()).await;
    let cpu = CpuSnapshot::take(server_pids).since(&before, hz);

    let mut logins_out = by_instance(targets.len());
    for task in flood {
        let (instance, out) = task.await??;
        logins_out[instance].merge(out);
    }
    let (mut due, mut sent) = (Outcomes::default(), Outcomes::default());
    for task in probes {
        let (d, s) = task.await??;
        due.merge(d);
        sent.merge(s);
    }
    Ok((logins_out, (due, sent), duration, cpu))
}
