//! In-process rates of the two CPU costs of identity: signing/verifying access tokens
//! (`TokenService`, RS256 with a 3072-bit key and EdDSA) and Argon2id at the default
//! parameters (`PasswordHasher`, `HashPool`). Single-threaded unless stated.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use rampart_core::config::JwtAlg;
use rampart_core::keys::{self, KeyStore};
use rampart_core::passwords::{HashParams, HashPool, PasswordHasher, Verification};
use rampart_core::tokens::TokenService;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::stats;

const PASSWORD: &str = "violet-harbor-lamp-7";

/// Calls `op` for at least `seconds` (after a short warm-up); returns calls per second.
fn rate(seconds: f64, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        op()?;
    }
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < budget {
        op()?;
        calls += 1;
    }
    Ok(calls as f64 / start.elapsed().as_secs_f64())
}

/// A token service over a fresh key of `alg` in a temp directory.
fn token_service(alg: JwtAlg) -> Result<(TokenService, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    keys::generate(dir.path(), alg)?;
    let store = KeyStore::load(dir.path())?;
    let service = TokenService::new(
        Arc::new(store),
        alg,
        "rampart".to_owned(),
        "rampart-api".to_owned(),
        Duration::from_secs(900),
        Duration::from_secs(30),
    )?;
    Ok((service, dir))
}

pub struct TokenRates {
    pub sign: f64,
    pub verify: f64,
    /// `TokenService::verify` of a token it has verified before: what a request pays with
    /// a warm verified-token cache (the token's SHA-256, a map lookup under a lock, the
    /// time checks).
    pub verify_cached: f64,
    pub token_bytes: usize,
}

pub fn token_rates(alg: JwtAlg, seconds: f64) -> Result<TokenRates> {
    let (service, _dir) = token_service(alg)?;
    let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
    let sign = rate(seconds, || {
        black_box(service.issue(user, session, OffsetDateTime::now_utc())?);
        Ok(())
    })?;
    let token = service
        .issue(user, session, OffsetDateTime::now_utc())?
        .token;
    let verify = rate(seconds, || {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        black_box(service.verify_uncached(black_box(&token), now)?);
        Ok(())
    })?;
    let verify_cached = rate(seconds, || {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        black_box(service.verify(black_box(&token), now)?);
        Ok(())
    })?;
    Ok(TokenRates {
        sign,
        verify,
        verify_cached,
        token_bytes: token.len(),
    })
}

pub struct HashRates {
    pub hash: f64,
    pub verify: f64,
}

/// Single-threaded `PasswordHasher::hash` and `verify` rates at `HashParams::default()`.
pub fn hash_rates(seconds: f64) -> Result<HashRates> {
    let hasher = PasswordHasher::new(HashParams::default())?;
    let hash = rate(seconds, || {
        black_box(hasher.hash(black_box(PASSWORD))?);
        Ok(())
    })?;
    let phc = hasher.hash(PASSWORD)?;
    let verify = rate(seconds, || match hasher.verify(black_box(PASSWORD), &phc) {
        Verification::Valid { .. } => Ok(()),
        Verification::Invalid => Err(anyhow!("the password did not verify")),
    })?;
    Ok(HashRates { hash, verify })
}

/// Verifications per second through a `HashPool` of `workers` threads, kept saturated by
/// `callers` concurrent callers for `seconds`.
pub fn pool_rate(workers: usize, callers: usize, seconds: f64) -> Result<f64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let hasher = PasswordHasher::new(HashParams::default())?;
        let phc = hasher.hash(PASSWORD)?;
        let pool = Arc::new(HashPool::new(hasher, workers, 64)?);
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(seconds);
        let mut tasks = Vec::new();
        for _ in 0..callers {
            let (pool, phc, done) = (Arc::clone(&pool), phc.clone(), Arc::clone(&done));
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let outcome = pool.verify(PASSWORD.to_owned(), Some(phc.clone())).await?;
                    if outcome.is_valid() && Instant::now() <= deadline {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(done.load(Ordering::Relaxed) as f64 / deadline.duration_since(start).as_secs_f64())
    })
}

pub fn run(seconds: f64) -> Result<()> {
    let params = HashParams::default();
    let workers = HashPool::default_workers();
    let mut facts = stats::machine_facts();
    facts.push((
        "argon2id params (HashParams::default)".to_owned(),
        format!("m={} KiB, t={}, p={}", params.m_kib, params.t, params.p),
    ));
    facts.push((
        "hash workers (HashPool::default_workers)".to_owned(),
        workers.to_string(),
    ));
    println!("rampart-bench crypto ({seconds} s per measurement, single-threaded unless stated)");
    stats::print_facts(&facts);
    println!();

    println!(
        "{:<40} {:>12} {:>12} {:>14}",
        "access tokens", "sign/s", "verify/s", "cached verify/s"
    );
    for (label, alg) in [
        ("RS256 (RSA-3072)", JwtAlg::Rs256),
        ("EdDSA (Ed25519)", JwtAlg::EdDsa),
    ] {
        let rates = token_rates(alg, seconds)?;
        println!(
            "{:<40} {:>12.0} {:>12.0} {:>14.0}   ({} B token)",
            label, rates.sign, rates.verify, rates.verify_cached, rates.token_bytes
        );
    }
    println!();

    let hashes = hash_rates(seconds)?;
    let limit = workers as f64 * hashes.hash;
    println!("{:<40} {:>12}", "argon2id (default params)", "per second");
    println!(
        "{:<40} {:>12.1}",
        "PasswordHasher::hash, 1 thread", hashes.hash
    );
    println!(
        "{:<40} {:>12.1}",
        "PasswordHasher::verify, 1 thread", hashes.verify
    );
    println!(
        "{:<40} {:>12.1}   ({workers} worker(s) × hash rate)",
        "hashing limit of the server's pool", limit
    );
    let callers = workers * 4;
    let pool = pool_rate(workers, callers, seconds.max(3.0))?;
    println!(
        "{:<40} {:>12.1}   ({callers} concurrent verify calls; {:.2} of the limit)",
        format!("HashPool::verify, {workers} worker(s)"),
        pool,
        pool / limit
    );
    Ok(())
}
