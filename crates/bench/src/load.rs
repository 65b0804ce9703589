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
//! Latencies are kept in full and summarised with nearest-rank percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use hyper::header::HeaderValue;
use rampart_core::passwords::{HashParams, HashPool};
use tokio::sync::watch;

use crate::http::{self, Body, Conn, Target};
use crate::server::{Database, Server};
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
    workers: usize,
}

impl HashLimit {
    fn limit(self) -> f64 {
        self.rate * self.workers as f64
    }
}

async fn run_async(args: &LoadArgs, limits: HashLimit) -> Result<()> {
    let db = Database::create(args.database_url.as_deref()).await?;
    let outcome = async {
        let server = Server::start(
            &args.bin,
            db.url.as_deref(),
            args.alg.as_str(),
            &args.server_env,
        )
        .await?;
        let result = phases(args, &server, db.backend(), limits).await;
        server.stop().await?;
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

async fn phases(args: &LoadArgs, server: &Server, backend: &str, limits: HashLimit) -> Result<()> {
    let target = Target::new(server.addr)?;
    let seconds = Duration::from_secs(args.seconds.max(1));
    let hz = stats::clock_ticks();

    let params = HashParams::default();
    let mut facts = stats::machine_facts();
    facts.extend([
        ("server backend".to_owned(), backend.to_owned()),
        (
            "server".to_owned(),
            format!(
                "{} (pid {}) on {}",
                args.bin.display(),
                server.pid,
                server.addr
            ),
        ),
        ("signing algorithm".to_owned(), args.alg.as_str().to_owned()),
        (
            "argon2id params".to_owned(),
            format!("m={} KiB, t={}, p={}", params.m_kib, params.t, params.p),
        ),
        ("hash workers".to_owned(), limits.workers.to_string()),
        (
            "hashing limit".to_owned(),
            format!(
                "{:.1} hashes/s ({} × {:.1}/s single-thread, {})",
                limits.limit(),
                limits.workers,
                limits.rate,
                if args.hash_rate.is_some() {
                    "given by --hash-rate"
                } else {
                    "measured just before"
                }
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
        let extra: Vec<String> = args
            .server_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        facts.push(("extra server env".to_owned(), extra.join(" ")));
    }
    println!("\nrampart-bench load ({} s per phase)", seconds.as_secs());
    stats::print_facts(&facts);

    let setup_start = Instant::now();
    let tokens = Arc::new(setup_users(&target, args.users).await?);
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

    let me = {
        let (target, tokens) = (target.clone(), Arc::clone(&tokens));
        Arc::new(move |task: usize, seq: u64| {
            let token = &tokens[(task + seq as usize) % tokens.len()];
            target.get("/api/v1/users/me", Some(token))
        })
    };
    let skip = |phase: &str| args.skip.iter().any(|s| s == phase);

    // Warm-up: connections, caches, the database's plan cache. Not reported.
    let _ = closed_loop(&target, 16, WARM_UP, me.clone(), server.pid, hz).await?;

    println!();
    print_header();
    let mut best: Option<Row> = None;
    if !skip("me") {
        for &connections in &args.concurrency {
            let (out, elapsed, cpu) =
                closed_loop(&target, connections, seconds, me.clone(), server.pid, hz).await?;
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
        let live = {
            let target = target.clone();
            Arc::new(move |_: usize, _: u64| target.get("/health/live", None))
        };
        let (out, elapsed, cpu) =
            closed_loop(&target, best_connections, seconds, live, server.pid, hz).await?;
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
            &target,
            args,
            seconds,
            Arc::clone(&logins),
            Arc::clone(&tokens),
            server.pid,
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
            probe,
            elapsed,
            None,
        );
        probe_row.print();
        let service_row = row(
            "  (same, from actual send)",
            PROBE_CONNECTIONS,
            service,
            elapsed,
            None,
        );
        service_row.print();
        flood_summary = Some((logins_row.rate, probe_row.latency));
    }

    println!("\nacceptance figures ({backend}, {}):", args.alg.as_str());
    if let Some(best) = &best {
        println!(
            "  /users/me throughput      {:>8.0} req/s at {} connections (goal ≥ 9000 on PostgreSQL)",
            best.rate, best.connections
        );
    }
    if let Some((login_rate, probe)) = flood_summary {
        println!(
            "  login throughput          {:>8.1} logins/s = {:.2} of the hashing limit {:.1}/s (goal ≥ 0.90)",
            login_rate,
            login_rate / limits.limit(),
            limits.limit()
        );
        println!(
            "  /users/me during flood    p50 {} ms, p99 {} ms, max {} ms (goal: p99 < 10 ms)",
            stats::ms(probe.p50),
            stats::ms(probe.p99),
            stats::ms(probe.max)
        );
    }
    Ok(())
}

fn row(
    phase: &str,
    connections: usize,
    mut out: Outcomes,
    elapsed: Duration,
    cpu: Option<CpuUse>,
) -> Row {
    let ok = out.count(200);
    Row {
        phase: phase.to_owned(),
        connections,
        ok,
        rate: ok as f64 / elapsed.as_secs_f64(),
        latency: stats::summarize(&mut out.latencies),
        errors: if out.non_200() == 0 {
            "0".to_owned()
        } else {
            out.describe_errors()
        },
        cpu,
    }
}

fn email(i: usize) -> String {
    format!("bench{i}@bench.example")
}

/// Registers `users` users and logs each in; returns their bearer headers.
async fn setup_users(target: &Target, users: usize) -> Result<Vec<HeaderValue>> {
    // A few at a time: each registration and login costs one Argon2 hash on the server.
    const PARALLEL: usize = 4;
    let mut tasks = Vec::new();
    for lane in 0..PARALLEL {
        let target = target.clone();
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

type MakeRequest = Arc<dyn Fn(usize, u64) -> Result<hyper::Request<Body>> + Send + Sync>;

/// The measured window `(start, deadline)`, sent once every connection is open.
type Window = Option<(Instant, Instant)>;

async fn wait_start(rx: &mut watch::Receiver<Window>) -> Result<(Instant, Instant)> {
    let window = rx.wait_for(Option::is_some).await?;
    (*window).ok_or_else(|| anyhow!("no start signal"))
}

/// `connections` tasks, each on its own keep-alive connection, sending the next request as
/// soon as the previous answer is read, for `duration`. Answers after the deadline are not
/// counted.
async fn closed_loop(
    target: &Target,
    connections: usize,
    duration: Duration,
    make: MakeRequest,
    server_pid: u32,
    hz: f64,
) -> Result<(Outcomes, Duration, Option<CpuUse>)> {
    let (start_tx, start_rx) = watch::channel::<Window>(None);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(connections);
    let mut tasks = Vec::with_capacity(connections);
    for task in 0..connections {
        let (make, mut start_rx, ready_tx) =
            (Arc::clone(&make), start_rx.clone(), ready_tx.clone());
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
                let request = make(task, seq)?;
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
            anyhow::Ok(out)
        }));
    }
    drop(ready_tx);
    for _ in 0..connections {
        ready_rx
            .recv()
            .await
            .ok_or_else(|| anyhow!("a client task failed before the start"))?;
    }
    let before = CpuSnapshot::take(server_pid);
    let start = Instant::now();
    let deadline = start + duration;
    start_tx.send(Some((start, deadline)))?;
    tokio::time::sleep_until(deadline.into()).await;
    let cpu = CpuSnapshot::take(server_pid).since(&before, hz);
    let mut all = Outcomes::default();
    for task in tasks {
        all.merge(task.await??);
    }
    Ok((all, duration, Some(cpu)))
}

/// Logins (closed loop) and the paced `/me` probe (open loop), started together.
#[allow(clippy::too_many_arguments)]
async fn login_flood(
    target: &Target,
    args: &LoadArgs,
    duration: Duration,
    logins: Arc<Vec<Bytes>>,
    tokens: Arc<Vec<HeaderValue>>,
    server_pid: u32,
    hz: f64,
) -> Result<(Outcomes, (Outcomes, Outcomes), Duration, CpuUse)> {
    let (start_tx, start_rx) = watch::channel::<Window>(None);
    let parties = args.login_clients + PROBE_CONNECTIONS;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(parties);

    let mut flood = Vec::new();
    let login_clients = args.login_clients;
    for client in 0..login_clients {
        let (target, logins) = (target.clone(), Arc::clone(&logins));
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
            anyhow::Ok(out)
        }));
    }

    let interval = Duration::from_secs_f64(1.0 / f64::from(args.probe_rate));
    let mut probes = Vec::new();
    for lane in 0..PROBE_CONNECTIONS {
        let (target, tokens) = (target.clone(), Arc::clone(&tokens));
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
    let before = CpuSnapshot::take(server_pid);
    let start = Instant::now();
    let deadline = start + duration;
    start_tx.send(Some((start, deadline)))?;
    tokio::time::sleep_until(deadline.into()).await;
    let cpu = CpuSnapshot::take(server_pid).since(&before, hz);

    let mut logins_out = Outcomes::default();
    for task in flood {
        logins_out.merge(task.await??);
    }
    let (mut due, mut sent) = (Outcomes::default(), Outcomes::default());
    for task in probes {
        let (d, s) = task.await??;
        due.merge(d);
        sent.merge(s);
    }
    Ok((logins_out, (due, sent), duration, cpu))
}
