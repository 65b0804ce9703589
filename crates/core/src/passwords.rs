//! Passwords: the policy a new password must meet, how passwords are stored and checked,
//! and the bounded worker pool that keeps that CPU- and memory-hard work off the async
//! runtime.
//!
//! Policy (contract §4, NIST SP 800-63B §3.1.1.2): length only, counted in Unicode scalar
//! values after NFKC, between [`PasswordPolicy::min_chars`] and [`MAX_CHARS`]; not in the
//! bundled list of common passwords (`data/common-passwords.txt`, case-insensitive); not
//! containing the account's email local part. No composition rules, no truncation.
//!
//! Storage (OWASP Password Storage Cheat Sheet): every password is NFKC-normalised, then
//! hashed with Argon2id v19 and a random 16-byte salt into a PHC string. Verification also
//! accepts legacy bcrypt (`$2a$`/`$2b$`/`$2y$`; a password over 72 bytes never matches
//! one, since bcrypt ignores what follows) and Argon2 hashes with other parameters, and
//! says when the caller should store a fresh hash ([`Verification::Valid`]'s
//! `needs_rehash`): only upward, never for a hash costing more than configured in memory,
//! iterations or lanes (contract §9). A stored hash that cannot be parsed, or whose cost is absurd, is simply
//! [`Verification::Invalid`]: a corrupt row never panics, errors or exhausts memory.
//!
//! Invariants: a password never appears in an error, a log or a `Debug` output; copies we
//! make are [`Zeroizing`]; a login for an unknown account costs one full verification
//! ([`PasswordHasher::verify_dummy`]), like a login for a known one.
//!
//! Pool ([`HashPool`]): one thread per core, each at a lower OS priority than request
//! handling and with its own Argon2 working memory reused across jobs; a job is refused
//! (503) at once when the queue is full or its expected wait exceeds the bound, and
//! refused unrun when it waited longer anyway.

use std::collections::HashSet;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;
use unicode_normalization::UnicodeNormalization as _;
use zeroize::Zeroizing;

use crate::error::{Error, FieldError, Result};
use crate::users::Email;

/// The longest password accepted, in Unicode scalar values after NFKC (contract §4). Also
/// bounds the work a single hash costs.
pub const MAX_CHARS: usize = 128;

/// Local parts shorter than this are too common a substring to refuse ("al", "jo").
const MIN_LOCAL_PART_CHARS: usize = 3;

/// Argon2 output length in bytes (the `argon2` crate's default, 256 bits).
const OUTPUT_LEN: usize = 32;

/// Ceilings on the cost of a *stored* hash we are willing to run. A stored PHC string
/// names its own parameters; without a ceiling, a corrupt or hostile row such as
/// `m=4294967295` would make the allocator abort the process. Far above any sane setting.
/// The configuration refuses settings above them (`RAMPART_ARGON2_*`), since a hash made
/// under such a setting would never verify again.
pub const MAX_M_KIB: u32 = 1024 * 1024; // 1 GiB
pub const MAX_T: u32 = 64;
pub const MAX_P: u32 = 64;
/// bcrypt keys only the first 72 bytes of a password: a longer one is never a match, or
/// `<those 72 bytes>` followed by anything would be.
const BCRYPT_MAX_BYTES: usize = 72;
/// bcrypt cost 16 is ~5 s per check today; beyond that a legacy row is treated as corrupt.
const MAX_BCRYPT_COST: u32 = 16;

/// The bundled list: one lower-case entry per line (see `data/README.md`).
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
});

/// NFKC (Unicode compatibility composition), as NIST SP 800-63B §5.1.1.2 asks before
/// hashing: "ﬁ" (U+FB01) and "fi", or a full-width and an ASCII digit, are one password.
pub fn normalize(password: &str) -> String {
    password.nfkc().collect()
}

/// The rules a new password must meet (contract §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Minimum length in Unicode scalar values after NFKC (`RAMPART_PASSWORD_MIN_LENGTH`).
    pub min_chars: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { min_chars: 12 }
    }
}

impl PasswordPolicy {
    pub fn new(min_chars: usize) -> Self {
        Self { min_chars }
    }

    /// Checks a new password for `field` (`password`, `newPassword`) and reports every
    /// violation, one [`FieldError`] each. `email` is the account's address, when known.
    pub fn check(
        &self,
        password: &str,
        email: Option<&Email>,
        field: &str,
    ) -> Result<(), Vec<FieldError>> {
        let normalized = Zeroizing::new(normalize(password));
        let lowered = Zeroizing::new(normalized.to_lowercase());
        let chars = normalized.chars().count();
        let mut problems = Vec::new();

        if chars < self.min_chars {
            problems.push(FieldError::new(
                field,
                format!("must be at least {} characters", self.min_chars),
            ));
        }
        if chars > MAX_CHARS {
            problems.push(FieldError::new(
                field,
                format!("must be at most {MAX_CHARS} characters"),
            ));
        }
        if COMMON_PASSWORDS.contains(lowered.as_str()) {
            problems.push(FieldError::new(
                field,
                "is too common; choose a less guessable password",
            ));
        }
        if email.is_some_and(|email| contains_email(&lowered, email)) {
            problems.push(FieldError::new(
                field,
                "must not contain your email address",
            ));
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// `lowered` is the NFKC, lower-cased password.
fn contains_email(lowered: &str, email: &Email) -> bool {
    let whole = normalize(email.normalized()).to_lowercase();
    let local = normalize(email.local_part()).to_lowercase();
    lowered.contains(whole.as_str())
        || (local.chars().count() >= MIN_LOCAL_PART_CHARS && lowered.contains(local.as_str()))
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for HashParams {
    /// OWASP's minimum for Argon2id: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Self {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        }
    }
}

impl HashParams {
    /// **Tests only.** 256 KiB and one pass: cheap enough that a test suite can register and
    /// log in hundreds of users, and worthless against an offline attack. Never configure
    /// this in a deployment.
    pub fn fast_for_tests() -> Self {
        Self {
            m_kib: 256,
            t: 1,
            p: 1,
        }
    }

    fn argon2_params(self) -> Result<Params> {
        Params::new(self.m_kib, self.t, self.p, Some(OUTPUT_LEN)).map_err(|e| {
            Error::internal(anyhow!(
                "invalid Argon2 parameters m={} t={} p={}: {e}",
                self.m_kib,
                self.t,
                self.p
            ))
        })
    }
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password matches. `needs_rehash`: the stored hash is legacy (bcrypt), or costs
    /// less than configured in memory, iterations or lanes and more in none, or is another
    /// Argon2 form at no higher cost; store [`PasswordHasher::hash`] of the password now
    /// that it is known. Never set for a hash that costs more than configured in any way.
    Valid { needs_rehash: bool },
    /// Wrong password, or a stored hash we cannot use.
    Invalid,
}

impl Verification {
    pub fn is_valid(self) -> bool {
        matches!(self, Self::Valid { .. })
    }
}

/// Hashes and verifies passwords synchronously. Each call costs the configured Argon2
/// memory and time: call it through a [`HashPool`], never on an async worker thread. The
/// methods here allocate Argon2's working memory per call; a pool thread passes its own
/// reusable `ArgonMemory` instead (same results, see the tests).
pub struct PasswordHasher {
    params: HashParams,
    argon2: Argon2<'static>,
    /// A hash of a random secret under the configured parameters, for [`Self::verify_dummy`].
    dummy_phc: String,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Refuses parameters Argon2 refuses (e.g. `m_kib < 8 * p`). Makes the dummy hash
    /// without hashing: a PHC string at the configured parameters whose salt and output are
    /// random bytes. Verifying against it costs exactly one real verification (that is all
    /// [`Self::verify_dummy`] needs) and never succeeds (2⁻²⁵⁶), and start-up neither
    /// spends a hash nor leaves its 19 MiB of working memory with the allocator, which
    /// keeps it (idle RSS, docs/benchmarks.md).
    pub fn new(params: HashParams) -> Result<Self> {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.argon2_params()?);
        let failed = |e: &dyn fmt::Display| Error::internal(anyhow!("Argon2 parameters: {e}"));
        let mut salt = [0u8; argon2::RECOMMENDED_SALT_LEN];
        let mut output = [0u8; OUTPUT_LEN];
        getrandom::fill(&mut salt)
            .and_then(|()| getrandom::fill(&mut output))
            .map_err(|e| Error::internal(anyhow!("the OS random generator failed: {e}")))?;
        let dummy_phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(argon2.params()).map_err(|e| failed(&e))?,
            salt: Some(Salt::new(&salt).map_err(|e| failed(&e))?),
            hash: Some(Output::new(&output).map_err(|e| failed(&e))?),
        }
        .to_string();
        let hasher = Self {
            params,
            argon2,
            dummy_phc,
        };
        Ok(hasher)
    }

    pub fn params(&self) -> HashParams {
        self.params
    }

    /// NFKC, then Argon2id v19 with a random 16-byte salt; returns the PHC string
    /// (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
    pub fn hash(&self, password: &str) -> Result<String> {
        self.hash_in(password, &mut ArgonMemory::none())
    }

    fn hash_in(&self, password: &str, memory: &mut ArgonMemory) -> Result<String> {
        let normalized = Zeroizing::new(normalize(password));
        self.hash_bytes(normalized.as_bytes(), memory)
    }

    fn hash_bytes(&self, password: &[u8], memory: &mut ArgonMemory) -> Result<String> {
        let mut salt = [0u8; argon2::RECOMMENDED_SALT_LEN];
        getrandom::fill(&mut salt)
            .map_err(|e| Error::internal(anyhow!("the OS random generator failed: {e}")))?;
        self.hash_with_salt(password, &salt, memory)
    }

    /// The PHC string `Argon2::hash_password_with_salt` makes, computed in `memory`.
    fn hash_with_salt(
        &self,
        password: &[u8],
        salt: &[u8],
        memory: &mut ArgonMemory,
    ) -> Result<String> {
        let failed = |e: &dyn fmt::Display| Error::internal(anyhow!("Argon2 hashing failed: {e}"));
        let mut out = [0u8; OUTPUT_LEN];
        memory
            .hash_into(&self.argon2, password, salt, &mut out)
            .map_err(|e| failed(&e))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(self.argon2.params()).map_err(|e| failed(&e))?,
            salt: Some(Salt::new(salt).map_err(|e| failed(&e))?),
            hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
        };
        Ok(phc.to_string())
    }

    /// Checks `password` against a stored hash: Argon2 PHC strings (NFKC input) and legacy
    /// bcrypt (`$2a$`, `$2b$`, `$2y$`; the raw password, then its NFKC form). Anything else,
    /// including a damaged or absurdly expensive hash, is [`Verification::Invalid`].
    pub fn verify(&self, password: &str, phc: &str) -> Verification {
        self.verify_in(password, phc, &mut ArgonMemory::none())
    }

    fn verify_in(&self, password: &str, phc: &str, memory: &mut ArgonMemory) -> Verification {
        if phc.starts_with("$argon2") {
            self.verify_argon2(password, phc, memory)
        } else if ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|prefix| phc.starts_with(prefix))
        {
            verify_bcrypt(password, phc)
        } else {
            Verification::Invalid
        }
    }

    /// What `Argon2::verify_password` does, step by step, so that the hash can be computed
    /// in `memory`: the algorithm, version, parameters (with the output length), salt and
    /// hash all come from the PHC string, and the outputs are compared in constant time.
    fn verify_argon2(&self, password: &str, phc: &str, memory: &mut ArgonMemory) -> Verification {
        let Ok(stored) = PasswordHash::new(phc) else {
            return Verification::Invalid;
        };
        let Ok(stored_params) = Params::try_from(&stored) else {
            return Verification::Invalid;
        };
        if stored_params.m_cost() > MAX_M_KIB
            || stored_params.t_cost() > MAX_T
            || stored_params.p_cost() > MAX_P
        {
            return Verification::Invalid;
        }
        let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
            return Verification::Invalid;
        };
        let Ok(algorithm) = Algorithm::try_from(stored.algorithm.as_str()) else {
            return Verification::Invalid;
        };
        let Ok(version) = stored.version.map(Version::try_from).transpose() else {
            return Verification::Invalid;
        };
        let stored_cost = HashParams {
            m_kib: stored_params.m_cost(),
            t: stored_params.t_cost(),
            p: stored_params.p_cost(),
        };
        let same_form = algorithm == Algorithm::Argon2id
            && version == Some(Version::V0x13)
            && stored_params.keyid().is_empty()
            && stored_params.data().is_empty()
            && expected.len() == OUTPUT_LEN
            && salt.len() >= argon2::RECOMMENDED_SALT_LEN;
        let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), stored_params);

        let normalized = Zeroizing::new(normalize(password));
        let mut buffer = [0u8; Output::MAX_LENGTH];
        let Some(out) = buffer.get_mut(..expected.len()) else {
            return Verification::Invalid;
        };
        if memory
            .hash_into(&argon2, normalized.as_bytes(), salt, out)
            .is_err()
        {
            return Verification::Invalid;
        }
        // `Output`'s equality is constant-time (`subtle`).
        if Output::new(out).ok().as_ref() != Some(expected) {
            return Verification::Invalid;
        }
        Verification::Valid {
            needs_rehash: needs_rehash(stored_cost, same_form, self.params),
        }
    }

    /// One full verification against a fixed hash under the configured parameters; the
    /// answer is discarded. Call it when there is no stored hash (unknown email, deleted
    /// account) so that such a login costs the same time as a real one.
    pub fn verify_dummy(&self, password: &str) {
        self.verify_dummy_in(password, &mut ArgonMemory::none());
    }

    fn verify_dummy_in(&self, password: &str, memory: &mut ArgonMemory) {
        let _ = self.verify_argon2(password, &self.dummy_phc, memory);
    }
}

/// Argon2's working memory (1 KiB blocks), kept by a pool thread across jobs. The
/// allocating path asks the global allocator for 19 MiB *zeroed* on every hash: with glibc
/// malloc that was a fresh mapping to page-fault each time (~124 000 faults/s under a
/// login flood), and an allocator that keeps the block (mimalloc) still has to zero it or
/// fault it back in after purging it. A thread's own block is faulted in once and never
/// zeroed again: Argon2 writes every block before it reads it.
///
/// It holds password-derived data between jobs, overwritten by the next hash; it is
/// zeroized when the thread exits (the pool is dropped), which bounds how long it lives
/// to the process's own lifetime anyway.
struct ArgonMemory {
    blocks: Zeroizing<Vec<Block>>,
    /// Blocks to allocate at the first hash that fits them (0: never). Allocated then, not
    /// when the thread starts, so an instance that has not hashed yet does not hold
    /// workers × 19 MiB (the idle RSS figure of docs/benchmarks.md).
    wanted: usize,
}

impl ArgonMemory {
    /// No reusable memory: every hash allocates its own, as `Argon2::hash_password_into`.
    fn none() -> Self {
        Self {
            blocks: Zeroizing::new(Vec::new()),
            wanted: 0,
        }
    }

    /// Enough for `params`, allocated at the first hash; none if the allocation is refused
    /// (each hash then allocates its own and reports the failure the ordinary way).
    fn for_params(params: &Params) -> Self {
        Self {
            blocks: Zeroizing::new(Vec::new()),
            wanted: params.block_count(),
        }
    }

    fn allocate(&mut self) {
        let count = std::mem::take(&mut self.wanted);
        let mut blocks = Vec::new();
        if blocks.try_reserve_exact(count).is_ok() {
            blocks.resize(count, Block::new());
        }
        self.blocks = Zeroizing::new(blocks);
    }

    /// `argon2.hash_password_into(password, salt, out)`, in this memory when it is large
    /// enough (Argon2 uses the first `block_count` blocks and writes each before reading
    /// it, so what a previous hash left there never matters). A stored hash costing more
    /// memory than configured gets a temporary allocation rather than growing this one:
    /// a hostile row must not pin up to `MAX_M_KIB` per thread for the process's life.
    fn hash_into(
        &mut self,
        argon2: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> argon2::Result<()> {
        if self.wanted > 0 && argon2.params().block_count() <= self.wanted {
            self.allocate();
        }
        if argon2.params().block_count() <= self.blocks.len() {
            argon2.hash_password_into_with_memory(password, salt, out, self.blocks.as_mut_slice())
        } else {
            argon2.hash_password_into(password, salt, out)
        }
    }
}

/// Re-hash only upward (contract §9): a re-hash never lowers memory, iterations or lanes,
/// so a configuration cheaper than the stored hashes (a mistake, or an attacker's edit)
/// cannot downgrade them at login. Within that, a stored hash is replaced when one of its
/// costs is below the configured one, or when it is of another form (Argon2i/d, an older
/// version, a short salt or output) at no higher cost.
fn needs_rehash(stored: HashParams, same_form: bool, configured: HashParams) -> bool {
    let higher =
        stored.m_kib > configured.m_kib || stored.t > configured.t || stored.p > configured.p;
    !higher && (!same_form || stored != configured)
}

fn verify_bcrypt(password: &str, phc: &str) -> Verification {
    // `$2b$NN$…`: refuse absurd costs before running them.
    let cost = phc.get(4..6).and_then(|digits| digits.parse::<u32>().ok());
    if cost.is_none_or(|cost| cost > MAX_BCRYPT_COST) {
        return Verification::Invalid;
    }
    // Legacy systems hashed whatever bytes they received; we hash NFKC. Try both so that
    // a user whose password NFKC changes can still log in once and be migrated.
    let matches = |candidate: &str| {
        candidate.len() <= BCRYPT_MAX_BYTES && bcrypt::verify(candidate, phc).unwrap_or(false)
    };
    let valid = matches(password) || {
        let normalized = Zeroizing::new(normalize(password));
        *normalized != password && matches(&normalized)
    };
    if valid {
        Verification::Valid { needs_rehash: true }
    } else {
        Verification::Invalid
    }
}

/// What a pool job gets: the hasher and its thread's reusable Argon2 memory.
struct Worker {
    hasher: Arc<PasswordHasher>,
    memory: ArgonMemory,
}

impl Worker {
    fn new(hasher: Arc<PasswordHasher>) -> Self {
        let memory = ArgonMemory::for_params(hasher.argon2.params());
        Self { hasher, memory }
    }

    /// [`PasswordHasher::hash`] in this thread's memory.
    fn hash(&mut self, password: &str) -> Result<String> {
        self.hasher.hash_in(password, &mut self.memory)
    }

    /// [`PasswordHasher::verify`] in this thread's memory.
    fn verify(&mut self, password: &str, phc: &str) -> Verification {
        self.hasher.verify_in(password, phc, &mut self.memory)
    }

    /// [`PasswordHasher::verify_dummy`] in this thread's memory.
    fn verify_dummy(&mut self, password: &str) {
        self.hasher.verify_dummy_in(password, &mut self.memory);
    }
}

/// One unit of work for a pool thread. `work` gets the worker, or `None` when the job
/// waited longer than the pool's bound (it then answers `Unavailable` without running);
/// it returns whether it did its work (false: refused, or its caller had gone), so that
/// only real jobs feed the duration estimate.
struct Job {
    enqueued: Instant,
    work: JobWork,
}

type JobWork = Box<dyn FnOnce(Option<&mut Worker>) -> bool + Send + 'static>;

/// The longest a hash job may wait for a thread by default (`RAMPART_HASH_QUEUE_WAIT_MS`).
pub const DEFAULT_QUEUE_WAIT: Duration = Duration::from_secs(1);

/// How much lower than the rest of the process the hash threads run (Linux nice levels).
///
/// The Linux scheduler (CFS, and EEVDF since 6.6) shares a busy core by weight: nice 0 =
/// 1024, nice 10 = 110, nice 19 = 15. With a hash thread on every core, a request thread
/// that becomes runnable gets 1024 / (1024 + 110) ≈ 90 % of its core and, having the
/// larger weight, an earlier virtual deadline, so it preempts the hash thread promptly: a
/// login flood cannot stall the rest of the API. Hashing still keeps ≈ 10 % of a core
/// that the API saturates (at nice 19 it would keep 1.5 %, and logins would all time out
/// whenever the API is busy), and all of any core the API leaves idle: nice only matters
/// under contention.
pub const HASH_THREAD_NICE_OFFSET: i32 = 10;

/// Runs a pool job in an internal `password.hash` span (contract §12; only when traces are
/// exported), naming the `operation` (`hash` or `verify`) only.
async fn in_hash_span<F: std::future::Future>(operation: &'static str, job: F) -> F::Output {
    crate::otel::in_span(
        "password.hash",
        opentelemetry::trace::SpanKind::Internal,
        || vec![opentelemetry::KeyValue::new("operation", operation)],
        job,
    )
    .await
}

/// Gauge: hash jobs waiting for a thread (contract §12).
pub const HASH_QUEUE_DEPTH: &str = "rampart_hash_queue_depth";
/// Counter: hash jobs refused at capacity, each a 503 (contract §12).
pub const HASH_REJECTED: &str = "rampart_hash_rejected_total";

/// Runs hashing and verification on dedicated OS threads (`rampart-hash-N`, at a lower
/// scheduling priority than request handling) fed by a bounded queue, so that password
/// work never blocks the async runtime and a login flood is refused (503) instead of
/// queueing. Two bounds: `queue` waiting jobs, and `max_wait` — a job whose expected wait
/// exceeds it is refused at once, and one that still waited longer is refused when a
/// thread takes it. Dropping the pool closes the queue; the threads finish (or refuse) the
/// jobs already queued and exit.
pub struct HashPool {
    jobs: SyncSender<Job>,
    params: HashParams,
    load: Arc<Load>,
    /// Jobs the pool holds at most: one running per thread, `queue` waiting.
    slots: usize,
}

impl fmt::Debug for HashPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashPool")
            .field("params", &self.params)
            .field("workers", &self.load.workers)
            .field("max_wait", &self.load.max_wait)
            .finish_non_exhaustive()
    }
}

/// What admission knows about the pool, shared with its threads.
#[derive(Debug)]
struct Load {
    workers: usize,
    max_wait: Duration,
    /// Jobs admitted and not finished: queued or running.
    in_pool: AtomicUsize,
    /// Moving average of how long a job takes, wall clock, in nanoseconds.
    job_nanos: AtomicU64,
}

/// The moving average gives each new job this share (1/8): a few jobs move it, one
/// outlier does not.
const JOB_AVERAGE_SHIFT: u32 = 3;

impl Load {
    /// How long a job submitted now would wait for a thread, with `ahead` jobs in the
    /// pool. Fewer than `workers`: a thread is idle, no wait. Otherwise it starts once
    /// `ahead − workers + 1` jobs have finished, which the threads do at `workers` per
    /// average job duration: (jobs queued ahead + 1) ÷ workers × average.
    fn expected_wait(&self, ahead: usize) -> Duration {
        let to_finish = ahead.saturating_add(1).saturating_sub(self.workers) as u128;
        let nanos =
            to_finish * u128::from(self.job_nanos.load(Ordering::Relaxed)) / self.workers as u128;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .job_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |average| {
                Some(moving_average(average, sample))
            });
    }
}

fn moving_average(average: u64, sample: u64) -> u64 {
    if average == 0 {
        return sample; // the first job: nothing to average with yet
    }
    average - (average >> JOB_AVERAGE_SHIFT) + (sample >> JOB_AVERAGE_SHIFT)
}

impl HashPool {
    /// Spawns `workers` threads (at least one) sharing a queue of `queue` waiting jobs (0
    /// means a job is accepted only when a thread is idle), refusing work expected to wait
    /// longer than [`DEFAULT_QUEUE_WAIT`]. Fails only if the OS refuses a thread.
    pub fn new(hasher: PasswordHasher, workers: usize, queue: usize) -> Result<HashPool> {
        Self::with_max_wait(hasher, workers, queue, DEFAULT_QUEUE_WAIT)
    }

    /// [`HashPool::new`] with the longest a job may wait for a thread
    /// (`RAMPART_HASH_QUEUE_WAIT_MS`).
    pub fn with_max_wait(
        hasher: PasswordHasher,
        workers: usize,
        queue: usize,
        max_wait: Duration,
    ) -> Result<HashPool> {
        Self::spawn(Arc::new(hasher), workers, queue, max_wait)
    }

    fn spawn(
        hasher: Arc<PasswordHasher>,
        workers: usize,
        queue: usize,
        max_wait: Duration,
    ) -> Result<HashPool> {
        let params = hasher.params();
        let workers = workers.max(1);
        let load = Arc::new(Load {
            workers,
            max_wait,
            in_pool: AtomicUsize::new(0),
            // Unknown until the first job ends (its duration is then taken as it is); until
            // then only the count bound applies.
            job_nanos: AtomicU64::new(0),
        });
        // Admission ([`HashPool::admit`]) bounds the jobs in the pool to `workers + queue`;
        // the channel only carries them, with room for all, so an admitted job is never
        // refused because a thread had not yet taken the one before it.
        let (jobs, receiver) = mpsc::sync_channel::<Job>(workers.saturating_add(queue));
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..workers {
            let (hasher, receiver, load) = (
                Arc::clone(&hasher),
                Arc::clone(&receiver),
                Arc::clone(&load),
            );
            std::thread::Builder::new()
                .name(format!("rampart-hash-{n}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    run_worker(Worker::new(hasher), &receiver, &load);
                })
                .map_err(|e| {
                    Error::internal(anyhow!("cannot start a password hashing thread: {e}"))
                })?;
        }
        Ok(HashPool {
            jobs,
            params,
            load,
            slots: workers.saturating_add(queue),
        })
    }

    /// Workers for a machine: one per available core, and at least one. Argon2 is CPU- and
    /// memory-bound, so more than one job per core only adds latency. The threads run at a
    /// lower priority ([`HASH_THREAD_NICE_OFFSET`]), so request handling preempts them and
    /// a login flood cannot stall every other request, while hashing uses every core the
    /// API leaves idle.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(1, |cores| cores.get())
    }

    /// The configured Argon2 parameters.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// [`PasswordHasher::hash`] on the pool. `Error::Unavailable` when the pool is at
    /// capacity.
    pub async fn hash(&self, password: String) -> Result<String> {
        let password = Zeroizing::new(password);
        in_hash_span("hash", self.run(move |worker| worker.hash(&password))).await?
    }

    /// [`PasswordHasher::verify`] on the pool; with no stored hash (`None`), runs
    /// [`PasswordHasher::verify_dummy`] and answers [`Verification::Invalid`].
    /// `Error::Unavailable` when the pool is at capacity.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<Verification> {
        self.verify_in(self.admit(), password, phc).await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Worker) -> T + Send + 'static,
    ) -> Result<T> {
        answer_of(self.submit(work)?).await
    }

    /// Jobs waiting for a thread (admitted, not yet running).
    pub fn waiting(&self) -> usize {
        self.load
            .in_pool
            .load(Ordering::Acquire)
            .saturating_sub(self.load.workers)
    }

    /// Sets [`HASH_QUEUE_DEPTH`] to [`Self::waiting`].
    pub fn record_metrics(&self) {
        metrics::gauge!(HASH_QUEUE_DEPTH).set(self.waiting() as f64);
    }

    /// Takes a place in the pool for a job that will follow costly work (a login reserves
    /// a lockout attempt in the database before it verifies): shed load is refused here, in
    /// microseconds, before that work, and a job admitted here is not refused for capacity
    /// afterwards ([`Self::verify_admitted`]). Before, this was a hint checked again at
    /// submission, and a request that passed the hint while the pool filled was refused
    /// only after two write transactions (docs/benchmarks.md, "shedding"). The place
    /// counts as a job in the pool (it is coming), and is given back if the admission is
    /// dropped unused. Only the wait bound still applies when a thread takes the job.
    pub fn admit(&self) -> Result<Admission> {
        let ahead = self.load.in_pool.fetch_add(1, Ordering::AcqRel);
        if ahead >= self.slots || self.load.expected_wait(ahead) > self.load.max_wait {
            self.load.in_pool.fetch_sub(1, Ordering::AcqRel);
            return Err(at_capacity());
        }
        Ok(Admission {
            load: Arc::clone(&self.load),
            used: false,
        })
    }

    /// [`Self::verify`] in a place taken by [`Self::admit`].
    pub async fn verify_admitted(
        &self,
        admission: Admission,
        password: String,
        phc: Option<String>,
    ) -> Result<Verification> {
        self.verify_in(Ok(admission), password, phc).await
    }

    /// The one verification job of [`Self::verify`] and [`Self::verify_admitted`], in its
    /// span whether or not it was admitted; the password is zeroized when it drops.
    async fn verify_in(
        &self,
        admission: Result<Admission>,
        password: String,
        phc: Option<String>,
    ) -> Result<Verification> {
        let password = Zeroizing::new(password);
        let job = async move {
            let answer = self.send(admission?, move |worker| match phc {
                Some(phc) => worker.verify(&password, &phc),
                None => {
                    worker.verify_dummy(&password);
                    Verification::Invalid
                }
            })?;
            answer_of(answer).await
        };
        in_hash_span("verify", job).await
    }

    /// Queues `work` without waiting: a full pool, or a wait expected beyond the bound,
    /// is an immediate error. The answer is `Unavailable` if the job still waited too long.
    fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Worker) -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<T>>> {
        self.send(self.admit()?, work)
    }

    /// Queues `work` in the admitted place. Admission keeps the jobs in the pool at most
    /// `workers + queue`, so the queue has room for it: the channel refuses it only if the
    /// threads have stopped.
    fn send<T: Send + 'static>(
        &self,
        mut admission: Admission,
        work: impl FnOnce(&mut Worker) -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<T>>> {
        // From here the job (sent or refused below) accounts for the place.
        admission.used = true;
        let (answer, receiver) = oneshot::channel();
        let job = Job {
            enqueued: Instant::now(),
            work: Box::new(move |worker| match worker {
                None => {
                    let _ = answer.send(Err(at_capacity()));
                    false
                }
                // The caller gave up (client disconnected): skip the expensive part.
                Some(_) if answer.is_closed() => false,
                Some(worker) => {
                    let _ = answer.send(Ok(work(worker)));
                    true
                }
            }),
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(receiver),
            Err(refused) => {
                self.load.in_pool.fetch_sub(1, Ordering::AcqRel);
                match refused {
                    TrySendError::Full(_) => Err(at_capacity()),
                    TrySendError::Disconnected(_) => Err(Error::internal(anyhow!(
                        "the password hashing threads have stopped"
                    ))),
                }
            }
        }
    }
}

/// A place in the [`HashPool`], from [`HashPool::admit`]; given back when dropped unused.
#[must_use = "an admission holds a place in the hashing pool until it is used or dropped"]
pub struct Admission {
    load: Arc<Load>,
    used: bool,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("used", &self.used)
            .finish()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.used {
            self.load.in_pool.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What a thread answered for a job it took.
async fn answer_of<T>(answer: oneshot::Receiver<Result<T>>) -> Result<T> {
    answer
        .await
        .map_err(|_| Error::internal(anyhow!("a password hashing job failed")))?
}

fn at_capacity() -> Error {
    metrics::counter!(HASH_REJECTED).increment(1);
    Error::Unavailable("password hashing is at capacity")
}

fn run_worker(mut worker: Worker, receiver: &Mutex<Receiver<Job>>, load: &Load) {
    loop {
        // The lock is held only while waiting for a job, never while running one.
        let job = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok(job) = job else {
            return; // the pool was dropped; `worker.memory` is zeroized as it drops
        };
        let late = job.enqueued.elapsed() > load.max_wait;
        let started = Instant::now();
        // A panicking job drops its answer channel (the caller sees an internal error)
        // instead of killing the thread and shrinking the pool.
        let ran = catch_unwind(AssertUnwindSafe(|| {
            (job.work)((!late).then_some(&mut worker))
        }));
        if matches!(ran, Ok(true)) {
            load.record(started.elapsed());
        }
        load.in_pool.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Lowers the calling thread's scheduling priority by [`HASH_THREAD_NICE_OFFSET`] nice
/// levels (relative to what it inherited, at most 19). Best effort: a refusal (a seccomp
/// filter, say) leaves the thread at the process's priority and the pool working.
#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    use rustix::process::{getpriority_process, setpriority_process};
    // On Linux a thread id names that one thread: the nice value is per thread.
    let thread = Some(rustix::thread::gettid());
    if let Ok(current) = getpriority_process(thread) {
        let _ = setpriority_process(thread, (current + HASH_THREAD_NICE_OFFSET).min(19));
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc::channel;

    use argon2::{AssociatedData, ParamsBuilder, PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    fn fast() -> PasswordHasher {
        PasswordHasher::new(HashParams::fast_for_tests()).unwrap()
    }

    fn issues(result: Result<(), Vec<FieldError>>) -> Vec<String> {
        match result {
            Ok(()) => Vec::new(),
            Err(errors) => {
                assert!(errors.iter().all(|e| e.field == "password"));
                errors.into_iter().map(|e| e.issue).collect()
            }
        }
    }

    fn check(password: &str, email: Option<&str>) -> Vec<String> {
        let email = email.map(|e| Email::parse(e, "email").unwrap());
        issues(PasswordPolicy::default().check(password, email.as_ref(), "password"))
    }

    const TOO_SHORT: &str = "must be at least 12 characters";
    const TOO_LONG: &str = "must be at most 128 characters";
    const COMMON: &str = "is too common; choose a less guessable password";
    const EMAIL: &str = "must not contain your email address";

    #[test]
    fn common_list_is_loaded() {
        assert!(COMMON_PASSWORDS.len() > 30_000);
        assert!(COMMON_PASSWORDS.contains("password1234"));
    }

    #[test]
    fn policy_accepts_a_long_uncommon_password() {
        assert!(check("violet-harbor-lamp", Some("alice@example.org")).is_empty());
        assert!(check("violet-harbor-lamp", None).is_empty());
        // No composition rules: all lower case, all digits, spaces are fine.
        assert!(check("four words in a row", None).is_empty());
        assert!(check("839201746502", None).is_empty());
    }

    #[test]
    fn policy_length_bounds() {
        assert_eq!(check("violet-harb", None), [TOO_SHORT]);
        assert!(check(&"x7".repeat(6), None).is_empty());
        assert!(check(&"q".repeat(MAX_CHARS), None).is_empty());
        assert_eq!(check(&"q".repeat(MAX_CHARS + 1), None), [TOO_LONG]);
        // Counted in characters, not bytes: 12 two-byte characters are enough.
        assert!(check(&"é".repeat(12), None).is_empty());
        let policy = PasswordPolicy::new(15);
        assert_eq!(
            issues(policy.check("violet-harbor", None, "password")),
            ["must be at least 15 characters"]
        );
    }

    #[test]
    fn policy_counts_after_nfkc() {
        // 11 scalar values as typed; U+FB01 "ﬁ" becomes "fi", so 12 after NFKC.
        let ligature = "\u{FB01}rewood-lam";
        assert_eq!(ligature.chars().count(), 11);
        assert!(check(ligature, None).is_empty());
        // 12 as typed; "e" + U+0301 composes to "é", so 11 after NFKC.
        let combining = "cafe\u{301}-harbor";
        assert_eq!(combining.chars().count(), 12);
        assert_eq!(check(combining, None), [TOO_SHORT]);
        // 128 full-width letters are 128 ASCII letters after NFKC; one more is too many.
        assert!(check(&"\u{FF41}".repeat(128), None).is_empty());
        // U+FDFA expands to 18 characters: 8 of them are 144 after NFKC.
        assert_eq!(check(&"\u{FDFA}".repeat(8), None), [TOO_LONG]);
    }

    #[test]
    fn policy_refuses_common_passwords_case_insensitively() {
        assert_eq!(check("password1234", None), [COMMON]);
        assert_eq!(check("PassWord1234", None), [COMMON]);
        assert_eq!(check("correcthorsebatterystaple", None), [COMMON]);
        // Full-width digits normalise to the listed password.
        assert_eq!(
            check("password\u{FF11}\u{FF12}\u{FF13}\u{FF14}", None),
            [COMMON]
        );
    }

    #[test]
    fn policy_refuses_the_email_local_part() {
        let bob = Some("Bob@example.org");
        assert_eq!(check("my-name-is-bob-1", bob), [EMAIL]);
        assert_eq!(check("my-name-is-BOB-1", bob), [EMAIL]);
        assert!(check("my-name-is-bo-b1", bob).is_empty());
        // Two-character local parts are not checked.
        assert!(check("my-name-is-al-1x", Some("al@example.org")).is_empty());
        // The whole address, even when the local part is short.
        assert_eq!(check("al@example.org", Some("AL@example.org")), [EMAIL]);
        assert_eq!(check("x-al@example.org-x", Some("al@example.org")), [EMAIL]);
        assert_eq!(
            check("alice.smith@example.org", Some("alice.smith@example.org")),
            [EMAIL]
        );
    }

    #[test]
    fn policy_reports_every_violation_and_never_the_password() {
        let errors = check("bob1", Some("bob@example.org"));
        assert_eq!(errors, [TOO_SHORT, EMAIL]);
        assert!(errors.iter().all(|issue| !issue.contains("bob1")));
        let email = Email::parse("word@example.org", "email").unwrap();
        let all = PasswordPolicy::default()
            .check("password", Some(&email), "newPassword")
            .unwrap_err();
        let issues: Vec<&str> = all.iter().map(|e| e.issue.as_str()).collect();
        assert_eq!(issues, [TOO_SHORT, COMMON, EMAIL]);
        assert!(all.iter().all(|e| e.field == "newPassword"));
    }

    #[test]
    fn hash_then_verify() {
        let hasher = fast();
        let phc = hasher.hash("violet-harbor-lamp").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{phc}");
        assert!(!phc.contains("violet"));
        assert_eq!(
            hasher.verify("violet-harbor-lamp", &phc),
            Verification::Valid {
                needs_rehash: false
            }
        );
        assert_eq!(
            hasher.verify("violet-harbor-lamQ", &phc),
            Verification::Invalid
        );
        assert_eq!(hasher.verify("", &phc), Verification::Invalid);
        // Salted: the same password hashes differently each time.
        assert_ne!(hasher.hash("violet-harbor-lamp").unwrap(), phc);
    }

    #[test]
    fn default_params_are_owasp() {
        assert_eq!(
            HashParams::default(),
            HashParams {
                m_kib: 19456,
                t: 2,
                p: 1
            }
        );
        assert!(
            PasswordHasher::new(HashParams {
                m_kib: 8,
                t: 1,
                p: 2
            })
            .is_err()
        );
    }

    #[test]
    fn rehash_when_parameters_change() {
        let old = fast();
        let phc = old.hash("violet-harbor-lamp").unwrap();
        let new = PasswordHasher::new(HashParams {
            m_kib: 512,
            t: 1,
            p: 1,
        })
        .unwrap();
        assert_eq!(
            new.verify("violet-harbor-lamp", &phc),
            Verification::Valid { needs_rehash: true }
        );
        assert_eq!(new.verify("wrong", &phc), Verification::Invalid);
        let rehashed = new.hash("violet-harbor-lamp").unwrap();
        assert_eq!(
            new.verify("violet-harbor-lamp", &rehashed),
            Verification::Valid {
                needs_rehash: false
            }
        );

        // Another Argon2 variant still verifies, and is migrated to Argon2id.
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(256, 1, 1, None).unwrap(),
        )
        .hash_password(b"violet-harbor-lamp")
        .unwrap()
        .to_string();
        assert!(argon2i.starts_with("$argon2i$"));
        assert_eq!(
            old.verify("violet-harbor-lamp", &argon2i),
            Verification::Valid { needs_rehash: true }
        );
    }

    fn hasher(m_kib: u32, t: u32, p: u32) -> PasswordHasher {
        PasswordHasher::new(HashParams { m_kib, t, p }).unwrap()
    }

    /// Contract §9: re-hash only upward. A stored hash costing more than configured in any
    /// of memory, iterations or lanes is never replaced, so a cheaper configuration cannot
    /// downgrade the hashes at login.
    #[test]
    fn rehash_only_upward() {
        let configured = hasher(512, 2, 2);
        for (m, t, p, rehash) in [
            (512, 2, 2, false),  // as configured
            (256, 2, 2, true),   // less memory
            (512, 1, 2, true),   // fewer iterations
            (512, 2, 1, true),   // fewer lanes
            (256, 1, 1, true),   // less of everything
            (1024, 2, 2, false), // more memory
            (512, 3, 2, false),  // more iterations
            (512, 2, 4, false),  // more lanes
            (1024, 1, 2, false), // more memory, fewer iterations: lowering either is a downgrade
            (256, 3, 2, false),
        ] {
            let stored = hasher(m, t, p).hash("violet-harbor-lamp").unwrap();
            assert_eq!(
                configured.verify("violet-harbor-lamp", &stored),
                Verification::Valid {
                    needs_rehash: rehash
                },
                "stored m={m} t={t} p={p}"
            );
        }
        // Another Argon2 form is migrated only when that lowers no cost.
        let argon2i = |m, t| {
            Argon2::new(
                Algorithm::Argon2i,
                Version::V0x13,
                Params::new(m, t, 2, None).unwrap(),
            )
            .hash_password(b"violet-harbor-lamp")
            .unwrap()
            .to_string()
        };
        assert_eq!(
            configured.verify("violet-harbor-lamp", &argon2i(512, 2)),
            Verification::Valid { needs_rehash: true }
        );
        assert_eq!(
            configured.verify("violet-harbor-lamp", &argon2i(1024, 2)),
            Verification::Valid {
                needs_rehash: false
            }
        );
    }

    /// bcrypt keys only 72 bytes: without a length check, `<72 bytes>` + anything matched.
    #[test]
    fn bcrypt_never_matches_a_password_over_72_bytes() {
        let hasher = fast();
        let seventy_two = "violet-harbor-lamp-".repeat(4)[..72].to_owned();
        let legacy = bcrypt::hash(&seventy_two, 4).unwrap();
        assert!(hasher.verify(&seventy_two, &legacy).is_valid());
        for suffix in ["x", "anything at all", "é"] {
            let longer = format!("{seventy_two}{suffix}");
            assert!(
                bcrypt::verify(&longer, &legacy).unwrap(),
                "bcrypt truncates"
            );
            assert_eq!(
                hasher.verify(&longer, &legacy),
                Verification::Invalid,
                "{suffix:?}"
            );
        }
        // Counted in bytes: 36 two-byte characters are 72 bytes, one more is 74.
        let accents = "é".repeat(36);
        let legacy = bcrypt::hash(&accents, 4).unwrap();
        assert!(hasher.verify(&accents, &legacy).is_valid());
        assert_eq!(
            hasher.verify(&format!("{accents}é"), &legacy),
            Verification::Invalid
        );
    }

    #[test]
    fn bcrypt_verifies_and_asks_for_rehash() {
        let hasher = fast();
        let legacy = bcrypt::hash("violet-harbor-lamp", 4).unwrap();
        assert!(legacy.starts_with("$2b$04$"));
        assert_eq!(
            hasher.verify("violet-harbor-lamp", &legacy),
            Verification::Valid { needs_rehash: true }
        );
        assert_eq!(hasher.verify("wrong", &legacy), Verification::Invalid);
        for prefix in ["$2a$", "$2y$"] {
            let variant = legacy.replacen("$2b$", prefix, 1);
            assert!(hasher.verify("violet-harbor-lamp", &variant).is_valid());
        }
        // A legacy hash of the raw (non-NFKC) password still verifies.
        let raw = bcrypt::hash("\u{FB01}rewood-lamp", 4).unwrap();
        assert!(hasher.verify("\u{FB01}rewood-lamp", &raw).is_valid());
        // Absurd cost: refused without running it.
        let slow = legacy.replacen("$04$", "$31$", 1);
        assert_eq!(
            hasher.verify("violet-harbor-lamp", &slow),
            Verification::Invalid
        );
    }

    #[test]
    fn nfkc_forms_verify_the_same() {
        let hasher = fast();
        let phc = hasher.hash("\u{FB01}rewood-lamp").unwrap();
        assert!(hasher.verify("firewood-lamp", &phc).is_valid());
        let phc = hasher.hash("firewood-lamp").unwrap();
        assert!(hasher.verify("\u{FB01}rewood-lamp", &phc).is_valid());
        assert_eq!(normalize("\u{FB01}"), "fi");
    }

    #[test]
    fn unusable_hashes_are_invalid() {
        let hasher = fast();
        let good = hasher.hash("violet-harbor-lamp").unwrap();
        let huge_memory = good.replacen("m=256", "m=4294967295", 1);
        let huge_time = good.replacen("t=1", "t=4000000", 1);
        for stored in [
            "",
            "plaintext",
            "violet-harbor-lamp",
            "$argon2id$",
            "$argon2id$v=19$m=256,t=1,p=1$",
            "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$",
            "$argon2id$v=99$m=256,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaA",
            "$argon2x$v=19$m=256,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaA",
            "$2b$04$short",
            "$2b$xx$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyza",
            "$2x$04$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyza",
            "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
            &huge_memory,
            &huge_time,
            &good[..good.len() - 4],
        ] {
            assert_eq!(
                hasher.verify("violet-harbor-lamp", stored),
                Verification::Invalid,
                "{stored:?}"
            );
        }
    }

    /// The dummy hash is a full hash of the configured parameters, in the form `verify`
    /// takes to the end, and `verify_dummy` costs what a real verification costs: a dummy
    /// that were rejected before hashing (or hashed at another cost) would make unknown
    /// emails answer measurably faster than known ones.
    #[test]
    fn dummy_verification_runs_the_configured_cost() {
        // Not the test default, so a dummy of fixed or default parameters fails.
        let params = HashParams {
            m_kib: 2 * 1024,
            t: 2,
            p: 2,
        };
        let hasher = PasswordHasher::new(params).unwrap();
        let dummy = PasswordHash::new(&hasher.dummy_phc).unwrap();
        let dummy_params = Params::try_from(&dummy).unwrap();
        assert_eq!(dummy.algorithm.as_str(), Algorithm::Argon2id.as_str());
        assert_eq!(dummy.version, Some(Version::V0x13.into()));
        assert_eq!(
            HashParams {
                m_kib: dummy_params.m_cost(),
                t: dummy_params.t_cost(),
                p: dummy_params.p_cost(),
            },
            params
        );
        assert_eq!(dummy.hash.unwrap().len(), OUTPUT_LEN);
        assert!(dummy.salt.unwrap().len() >= argon2::RECOMMENDED_SALT_LEN);
        // Timing: the fastest of a few runs, so load on the machine only makes each
        // side slower, never the dummy faster. A rejected-early dummy takes microseconds
        // against milliseconds.
        // Measured on a pool thread's path (its reused memory), which is what logins take:
        // the allocating path's cost depends on the allocator's history in this process.
        let real = hasher.hash("violet-harbor-lamp").unwrap();
        let worker = std::cell::RefCell::new(Worker::new(Arc::new(hasher)));
        let fastest = |run: &dyn Fn()| {
            (0..5)
                .map(|_| {
                    let start = Instant::now();
                    run();
                    start.elapsed()
                })
                .min()
                .unwrap()
        };
        let known = fastest(&|| {
            assert_eq!(
                worker.borrow_mut().verify("a wrong password", &real),
                Verification::Invalid
            );
        });
        let unknown = fastest(&|| worker.borrow_mut().verify_dummy("a wrong password"));
        assert!(
            unknown * 2 >= known,
            "dummy verification {unknown:?}, real verification {known:?}"
        );
    }

    #[test]
    fn debug_shows_no_secrets() {
        let hasher = fast();
        let debug = format!("{hasher:?}");
        assert!(!debug.contains(&hasher.dummy_phc));
        assert!(debug.contains("256"));
    }

    #[test]
    fn default_workers_is_one_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(HashPool::default_workers(), cores.max(1));
    }

    #[tokio::test]
    async fn pool_round_trip_and_dummy() {
        let pool = HashPool::new(fast(), 2, 8).unwrap();
        assert_eq!(pool.params(), HashParams::fast_for_tests());
        let phc = pool.hash("violet-harbor-lamp".into()).await.unwrap();
        let valid = pool
            .verify("violet-harbor-lamp".into(), Some(phc.clone()))
            .await
            .unwrap();
        assert_eq!(
            valid,
            Verification::Valid {
                needs_rehash: false
            }
        );
        let wrong = pool.verify("nope".into(), Some(phc)).await.unwrap();
        assert_eq!(wrong, Verification::Invalid);
        let unknown = pool
            .verify("violet-harbor-lamp".into(), None)
            .await
            .unwrap();
        assert_eq!(unknown, Verification::Invalid);
    }

    #[tokio::test]
    async fn pool_threads_are_named() {
        let pool = HashPool::new(fast(), 1, 1).unwrap();
        let name = pool
            .run(|_| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("rampart-hash-0"));
    }

    /// One worker, a queue of one: with the worker held busy and one job queued, the next
    /// submission is refused at once. Deterministic: the test waits until the worker has
    /// taken the blocking job before filling the queue. The time bound is out of the way
    /// (a minute, and a job estimated to take no time), so the count bound is what refuses.
    #[tokio::test]
    async fn full_pool_answers_unavailable_at_once() {
        let pool = HashPool::with_max_wait(fast(), 1, 1, Duration::from_secs(60)).unwrap();
        pool.load.job_nanos.store(0, Ordering::Relaxed);
        let (started_tx, started_rx) = channel();
        let (release_tx, release_rx) = channel::<()>();
        let blocker = pool
            .submit(move |_| {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
            .unwrap();
        started_rx.recv().unwrap(); // the worker is busy
        let queued = pool
            .submit(|hasher| hasher.hash("violet-harbor-lamp"))
            .unwrap();

        let before = Instant::now();
        let refused = pool.hash("violet-harbor-lamp".into()).await;
        assert!(
            matches!(
                refused,
                Err(Error::Unavailable("password hashing is at capacity"))
            ),
            "{refused:?}"
        );
        let refused = pool.verify("violet-harbor-lamp".into(), None).await;
        assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");
        assert!(before.elapsed() < Duration::from_secs(5));

        release_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        assert!(queued.await.unwrap().unwrap().is_ok());
        // Capacity is back.
        assert!(pool.hash("violet-harbor-lamp".into()).await.is_ok());
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_shrink_the_pool() {
        let pool = HashPool::new(fast(), 1, 1).unwrap();
        let failed = pool.run(|_| -> u8 { panic!("boom") }).await;
        assert!(matches!(failed, Err(Error::Internal(_))));
        assert!(pool.hash("violet-harbor-lamp".into()).await.is_ok());
    }

    #[test]
    fn dropping_the_pool_stops_its_threads() {
        let hasher = Arc::new(fast());
        let pool = HashPool::spawn(Arc::clone(&hasher), 2, 1, DEFAULT_QUEUE_WAIT).unwrap();
        assert_eq!(Arc::strong_count(&hasher), 3);
        drop(pool);
        // Each worker holds a clone of the hasher until its loop ends.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&hasher) > 1 {
            assert!(Instant::now() < deadline, "pool threads did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn argon2(algorithm: Algorithm, version: Version, params: Params) -> Argon2<'static> {
        Argon2::new(algorithm, version, params)
    }

    fn argon2id(m_kib: u32, t: u32, p: u32) -> Argon2<'static> {
        argon2(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(m_kib, t, p, Some(OUTPUT_LEN)).unwrap(),
        )
    }

    /// A pool thread hashes in memory it keeps between jobs: the PHC strings are exactly
    /// what the argon2 crate makes in fresh memory, whatever the previous job left there.
    #[test]
    fn reused_memory_hashes_like_plain_argon2() {
        let hasher = hasher(512, 2, 2);
        let mut memory = ArgonMemory::for_params(hasher.argon2.params());
        // Nothing is held before the first hash (idle memory), then the block stays.
        assert_eq!(memory.blocks.len(), 0);
        let plain = argon2id(512, 2, 2);
        let passwords = [
            "violet-harbor-lamp",
            "",
            "another one",
            "violet-harbor-lamp",
        ];
        for (salt_byte, password) in (1u8..).zip(passwords) {
            let salt = [salt_byte; 16];
            let expected = plain
                .hash_password_with_salt(password.as_bytes(), &salt)
                .unwrap()
                .to_string();
            let reused = hasher
                .hash_with_salt(password.as_bytes(), &salt, &mut memory)
                .unwrap();
            assert_eq!(reused, expected, "{password:?}");
            assert_eq!(memory.blocks.len(), 512);
            let fresh = hasher
                .hash_with_salt(password.as_bytes(), &salt, &mut ArgonMemory::none())
                .unwrap();
            assert_eq!(fresh, expected, "{password:?}");
        }
        // With a random salt, the argon2 crate verifies what the thread made.
        let phc = hasher.hash_in("violet-harbor-lamp", &mut memory).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=512,t=2,p=2$"), "{phc}");
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(
            plain
                .verify_password(b"violet-harbor-lamp", &parsed)
                .is_ok()
        );
        assert!(
            plain
                .verify_password(b"violet-harbor-lamQ", &parsed)
                .is_err()
        );
    }

    /// Stored hashes of every Argon2 form and of costs below and above the configured one
    /// (so both in the thread's memory and in a temporary one): the thread's memory
    /// verifies each exactly as the argon2 crate does, with the allocating path's rehash
    /// advice, and a hash costing more memory does not make the thread's memory grow.
    #[test]
    fn reused_memory_verifies_like_plain_argon2() {
        let mut worker = Worker::new(Arc::new(hasher(512, 2, 1)));
        assert_eq!(
            worker.memory.blocks.len(),
            0,
            "allocated at the first hash only"
        );
        worker.hash("warm-up").unwrap();
        let address = worker.memory.blocks.as_ptr();
        let password = "violet-harbor-lamp";
        let with_data = ParamsBuilder::new()
            .m_cost(256)
            .t_cost(1)
            .p_cost(1)
            .data(AssociatedData::new(b"context").unwrap())
            .build()
            .unwrap();
        let stored = |argon2: Argon2<'static>| argon2.hash_password(password.as_bytes()).unwrap();
        let cases = [
            (stored(argon2id(512, 2, 1)), false),
            (stored(argon2id(256, 2, 1)), true),
            (stored(argon2id(256, 1, 2)), false), // more lanes: never downgraded
            (stored(argon2id(512, 1, 1)), true),
            (stored(argon2id(2048, 2, 1)), false),
            (stored(argon2id(1024, 1, 1)), false),
            (
                stored(argon2(
                    Algorithm::Argon2i,
                    Version::V0x13,
                    Params::new(256, 2, 1, None).unwrap(),
                )),
                true,
            ),
            (
                stored(argon2(
                    Algorithm::Argon2d,
                    Version::V0x10,
                    Params::new(512, 2, 1, None).unwrap(),
                )),
                true,
            ),
            (
                stored(argon2(
                    Algorithm::Argon2id,
                    Version::V0x10,
                    Params::new(512, 2, 1, None).unwrap(),
                )),
                true,
            ),
            (
                stored(argon2(Algorithm::Argon2id, Version::V0x13, with_data)),
                true,
            ),
            (
                stored(argon2(
                    Algorithm::Argon2id,
                    Version::V0x13,
                    Params::new(512, 2, 1, Some(64)).unwrap(),
                )),
                true,
            ),
            (
                argon2id(512, 2, 1)
                    .hash_password_with_salt(password.as_bytes(), &[7; 8])
                    .unwrap(),
                true,
            ),
        ];
        for (stored, rehash) in cases {
            let phc = stored.to_string();
            assert!(
                Argon2::default()
                    .verify_password(password.as_bytes(), &stored)
                    .is_ok()
            );
            assert_eq!(
                worker.verify(password, &phc),
                Verification::Valid {
                    needs_rehash: rehash
                },
                "{phc}"
            );
            assert_eq!(
                worker.hasher.verify(password, &phc),
                worker.verify(password, &phc)
            );
            assert!(
                Argon2::default()
                    .verify_password(b"violet-harbor-lamQ", &stored)
                    .is_err()
            );
            assert_eq!(
                worker.verify("violet-harbor-lamQ", &phc),
                Verification::Invalid,
                "{phc}"
            );
            // Another output of the same length: refused by the comparison itself.
            let mut tampered = stored.clone();
            let mut bytes = tampered.hash.unwrap().as_bytes().to_vec();
            bytes[0] ^= 1;
            tampered.hash = Some(Output::new(&bytes).unwrap());
            assert_eq!(
                worker.verify(password, &tampered.to_string()),
                Verification::Invalid,
                "{phc}"
            );
        }
        assert_eq!(worker.memory.blocks.len(), 512);
        assert_eq!(worker.memory.blocks.as_ptr(), address);
        // Hashing and the dummy verification use the same memory.
        let phc = worker.hash(password).unwrap();
        worker.verify_dummy(password);
        assert_eq!(worker.memory.blocks.as_ptr(), address);
        assert_eq!(
            worker.verify(password, &phc),
            Verification::Valid {
                needs_rehash: false
            }
        );
    }

    /// Hash threads yield to request threads under contention: Linux nice, field 19 of
    /// `/proc/<pid>/task/<tid>/stat`, is the spawning thread's plus the offset.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pool_threads_run_at_a_lower_priority() {
        use rustix::process::Pid;
        fn nice(tid: i32) -> i32 {
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
            // The command name is in parentheses and may hold spaces; after it come
            // field 3 (state), 4, …, field 19 (nice).
            let fields = &stat[stat.rfind(')').unwrap() + 1..];
            fields
                .split_whitespace()
                .nth(19 - 3)
                .unwrap()
                .parse()
                .unwrap()
        }
        let tid = || Pid::as_raw(Some(rustix::thread::gettid()));
        let pool = HashPool::new(fast(), 2, 4).unwrap();
        let hashing = pool.run(move |_| tid()).await.unwrap();
        assert_ne!(hashing, tid());
        let own = nice(tid());
        assert_eq!(nice(hashing), (own + HASH_THREAD_NICE_OFFSET).min(19));
        if own <= 9 {
            assert!(nice(hashing) >= own + 10);
        }
    }

    #[tokio::test]
    async fn an_admission_holds_its_place_until_used_or_dropped() {
        // One thread, one waiting slot: two places in all.
        let pool = HashPool::with_max_wait(fast(), 1, 1, Duration::from_secs(60)).unwrap();
        let in_pool = |pool: &HashPool| pool.load.in_pool.load(Ordering::Acquire);
        let first = pool.admit().unwrap();
        let second = pool.admit().unwrap();
        // Full: a third is refused at once, and takes nothing.
        assert!(matches!(pool.admit(), Err(Error::Unavailable(_))));
        assert!(matches!(
            pool.verify("violet-harbor-lamp".into(), None).await,
            Err(Error::Unavailable(_))
        ));
        assert_eq!(in_pool(&pool), 2);
        // Dropped unused: the place comes back.
        drop(first);
        assert_eq!(in_pool(&pool), 1);
        let third = pool.admit().unwrap();
        // Used: the admitted job runs though the pool is full, and frees its place when done.
        let phc = fast().hash("violet-harbor-lamp").unwrap();
        let checked = pool
            .verify_admitted(second, "violet-harbor-lamp".into(), Some(phc))
            .await
            .unwrap();
        assert!(matches!(checked, Verification::Valid { .. }));
        assert!(matches!(
            pool.verify_admitted(third, "x".into(), None).await,
            Ok(Verification::Invalid)
        ));
        settles_empty(&pool);
    }

    /// A thread frees its job's place just after answering: wait (briefly) for it.
    fn settles_empty(pool: &HashPool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.load.in_pool.load(Ordering::Acquire) != 0 {
            assert!(Instant::now() < deadline, "the pool never emptied");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Admissions raced from many threads at once: exactly as many as the pool has places
    /// are given, never more, and every one of them is served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_admissions_never_overfill_the_pool() {
        const WORKERS: usize = 2;
        const QUEUE: usize = 3;
        const RACERS: usize = 32;
        let pool = Arc::new(
            HashPool::with_max_wait(fast(), WORKERS, QUEUE, Duration::from_secs(60)).unwrap(),
        );
        let barrier = Arc::new(std::sync::Barrier::new(RACERS));
        let threads: Vec<_> = (0..RACERS)
            .map(|_| {
                let (pool, barrier) = (Arc::clone(&pool), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    pool.admit().ok()
                })
            })
            .collect();
        let admitted: Vec<Admission> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(admitted.len(), WORKERS + QUEUE);
        assert_eq!(pool.load.in_pool.load(Ordering::Acquire), WORKERS + QUEUE);
        let jobs: Vec<_> = admitted
            .into_iter()
            .map(|admission| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move {
                    pool.verify_admitted(admission, "violet-harbor-lamp".into(), None)
                        .await
                })
            })
            .collect();
        for job in jobs {
            let answer = job.await.unwrap();
            assert!(matches!(answer, Ok(Verification::Invalid)), "{answer:?}");
        }
        settles_empty(&pool);
    }

    #[test]
    fn expected_wait_counts_the_jobs_ahead_of_a_free_thread() {
        let load = Load {
            workers: 2,
            max_wait: DEFAULT_QUEUE_WAIT,
            in_pool: AtomicUsize::new(0),
            job_nanos: AtomicU64::new(100_000_000),
        };
        let ms = Duration::from_millis;
        // A thread is idle while fewer than two jobs are in the pool.
        assert_eq!(load.expected_wait(0), ms(0));
        assert_eq!(load.expected_wait(1), ms(0));
        // Both busy: one of them must finish (two threads finish a job every 50 ms).
        assert_eq!(load.expected_wait(2), ms(50));
        assert_eq!(load.expected_wait(3), ms(100));
        assert_eq!(load.expected_wait(6), ms(250));
        load.job_nanos.store(u64::MAX, Ordering::Relaxed);
        assert!(load.expected_wait(usize::MAX) > Duration::from_secs(3600));
    }

    #[test]
    fn moving_average_of_job_durations() {
        // The first job is taken as it is; later ones move the average by 1/8.
        assert_eq!(moving_average(0, 800), 800);
        assert_eq!(moving_average(800, 800), 800);
        assert_eq!(moving_average(800, 0), 700);
        assert_eq!(moving_average(u64::MAX, u64::MAX), u64::MAX);
        let mut average = 0;
        for _ in 0..64 {
            average = moving_average(average, 1_000_000);
        }
        assert!((990_000..=1_000_000).contains(&average), "{average}");
    }

    /// The estimate starts from the hasher's measured first hash and follows the jobs.
    #[tokio::test]
    async fn the_pool_learns_how_long_a_job_takes() {
        let pool = HashPool::new(fast(), 1, 4).unwrap();
        // Unknown before the first job: only the count bound applies.
        assert_eq!(pool.load.job_nanos.load(Ordering::Relaxed), 0);
        let slow = Duration::from_millis(40);
        for _ in 0..8 {
            pool.run(move |_| std::thread::sleep(slow)).await.unwrap();
        }
        // The first job sets the average and every later one is at least 40 ms too.
        let learned = Duration::from_nanos(pool.load.job_nanos.load(Ordering::Relaxed));
        assert!(learned >= slow, "{learned:?}");
    }

    /// With one job running and one queued, a third is expected to wait two average jobs;
    /// beyond the bound it is refused at once, although the queue has room.
    #[tokio::test]
    async fn a_job_expected_to_wait_too_long_is_refused_at_once() {
        let bound = Duration::from_secs(2);
        let pool = HashPool::with_max_wait(fast(), 1, 16, bound).unwrap();
        // As if the worker had learned that a job takes 1.5 s.
        pool.load.job_nanos.store(1_500_000_000, Ordering::Relaxed);
        let (started_tx, started_rx) = channel();
        let (release_tx, release_rx) = channel::<()>();
        let blocker = pool
            .submit(move |_| {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
            .unwrap();
        started_rx.recv().unwrap();
        // Expected to wait for the running job: 1.5 s, within the bound.
        let queued = pool
            .submit(|worker| worker.hash("violet-harbor-lamp"))
            .unwrap();

        let before = Instant::now();
        let refused = pool.hash("violet-harbor-lamp".into()).await;
        let took = before.elapsed();
        assert!(
            matches!(
                refused,
                Err(Error::Unavailable("password hashing is at capacity"))
            ),
            "{refused:?}"
        );
        assert!(took < bound / 2, "refused after {took:?}");
        let refused = pool.verify("violet-harbor-lamp".into(), None).await;
        assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");

        release_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        assert!(queued.await.unwrap().unwrap().is_ok());
    }

    /// A job admitted on a low estimate that still waited past the bound is answered
    /// `Unavailable` by the thread that takes it, without running; the pool goes on, and
    /// every admitted job leaves the count (a leak would end in refusing everything).
    #[tokio::test]
    async fn a_job_that_waited_past_the_bound_is_refused_unrun() {
        let bound = Duration::from_millis(100);
        let pool = HashPool::with_max_wait(fast(), 1, 4, bound).unwrap();
        pool.load.job_nanos.store(0, Ordering::Relaxed); // admission lets it in
        let (started_tx, started_rx) = channel();
        let (release_tx, release_rx) = channel::<()>();
        let blocker = pool
            .submit(move |_| {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
            .unwrap();
        started_rx.recv().unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let late = pool
            .submit({
                let ran = Arc::clone(&ran);
                move |_| ran.store(true, Ordering::SeqCst)
            })
            .unwrap();
        std::thread::sleep(bound * 2);
        release_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();

        let answer = late.await.unwrap();
        assert!(
            matches!(
                answer,
                Err(Error::Unavailable("password hashing is at capacity"))
            ),
            "{answer:?}"
        );
        assert!(!ran.load(Ordering::SeqCst));
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.load.in_pool.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "jobs left in the count");
            std::thread::sleep(Duration::from_millis(5));
        }
        // An idle pool takes the next job whatever its average (here the blocker's 200 ms).
        assert!(pool.hash("violet-harbor-lamp".into()).await.is_ok());
    }
}
