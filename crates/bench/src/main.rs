//! `rampart-bench`: the figures of the identity issue, measured by hand (never a test, and
//! no timing is asserted anywhere).
//!
//! - `crypto`: access-token sign/verify rates (RS256-3072 and EdDSA) and Argon2id rates at
//!   the default parameters, single-threaded, plus the hashing limit of the server's pool
//!   (`HashPool::default_workers()` × the single-thread rate) and the pool's measured
//!   throughput.
//! - `load`: starts the real `rampart` binary (one instance, or several sharing the
//!   database, the signing keys and optionally Redis) on a fresh database, then measures
//!   `GET /api/v1/users/me` throughput and a login flood with an open-loop `/me` probe.
//! - `all`: every figure of the issue on PostgreSQL and/or SQLite (start-up, RSS, `/me` at
//!   several concurrencies with server CPU per request, `/me` against a bare axum + sqlx
//!   baseline, logins, a login flood beside `/me`, load shedding), ending with one table of
//!   figure, value, target and whether it is met.
//! - `bare-server` (hidden): that baseline, started by `all` as a process of its own.
//!
//! Build in release; see `docs/benchmarks.md` for the method and the figures.

/// The allocator of the `rampart` binary: the bare baseline runs in this process, and the
/// CPU ratio should compare request handling, not allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod all;
mod bare;
mod crypto;
mod http;
mod load;
mod server;
mod sink;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "rampart-bench",
    about = "Rampart benchmarks (run by hand, in release)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Token sign/verify and Argon2id rates, in process.
    Crypto {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Start the rampart binary and load it over HTTP.
    Load(LoadArgs),
    /// Every figure of the performance issue, with its target, on PostgreSQL and SQLite.
    All(all::AllArgs),
    /// An OTLP/HTTP trace receiver that discards spans (for the traces overhead figures).
    OtlpSink(sink::SinkArgs),
    /// The bare axum + sqlx `/users/me` baseline (started by `all`; no safety at all).
    #[command(hide = true)]
    BareServer(bare::BareArgs),
}

#[derive(clap::Args, Clone)]
pub struct LoadArgs {
    /// The server binary (build it with `cargo build --release -p rampart-server`).
    #[arg(long)]
    pub bin: PathBuf,
    /// A PostgreSQL server URL (a fresh database is created through it and dropped after);
    /// without it the server uses a SQLite file in a temp directory.
    #[arg(long)]
    pub database_url: Option<String>,
    /// `rampart serve` processes to start, on one database and one key directory; every
    /// phase spreads its connections over them (connection i to instance i mod N).
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// A Redis server URL, given to every instance as `REDIS_URL` with a `RAMPART_REDIS_PREFIX`
    /// of the run's own, so rate limits are shared through Redis as in production; without
    /// it each instance limits in its own memory.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent keep-alive connections for the `/me` phase; the best is reported.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64")]
    pub concurrency: Vec<usize>,
    /// Concurrent clients in the login flood.
    #[arg(long, default_value_t = 16)]
    pub login_clients: usize,
    /// Rate of the paced `/me` probe during the login flood (requests per second).
    #[arg(long, default_value_t = 200)]
    pub probe_rate: u32,
    /// Users registered (and logged in) before the phases.
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// Worker threads of the load generator's runtime (it shares the cores with the server).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Signing algorithm of the server's generated key.
    #[arg(long, value_enum, default_value_t = Alg::Rs256)]
    pub alg: Alg,
    /// Extra server environment, `KEY=VALUE` (repeatable), e.g. `RAMPART_DB_POOL_SIZE=20`.
    #[arg(long = "server-env", value_parser = parse_key_value)]
    pub server_env: Vec<(String, String)>,
    /// The single-thread Argon2id hash rate the hashing limit is computed from (e.g. the
    /// figure of `rampart-bench crypto`); measured for 3 s before the run when absent.
    #[arg(long)]
    pub hash_rate: Option<f64>,
    /// Skip these phases (comma-separated: me, live, flood).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Alg {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "EdDSA")]
    EdDsa,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {raw:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crypto { seconds } => crypto::run(seconds),
        Command::Load(args) => load::run(&args),
        Command::All(args) => all::run(&args),
        Command::BareServer(args) => bare::run(&args),
        Command::OtlpSink(args) => sink::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
