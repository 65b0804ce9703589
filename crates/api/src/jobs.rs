//! Background jobs of a serving instance: the periodic purge of expired rows
//! (`rampart_store::purge`), every `RAMPART_PURGE_INTERVAL`, and the audit checkpoint log
//! line (contract §8), at start and every `RAMPART_AUDIT_CHECKPOINT_INTERVAL` in which
//! the chain grew.
//!
//! N instances started together would all try at once, so the first purge waits a random
//! delay in [0, min(interval, 60 s)) and each later one the interval ±10 %. Only one
//! runner purges at a time anyway (the store's PostgreSQL advisory lock): the others skip
//! that round. `serve` aborts both tasks at shutdown; the store closes the purge
//! connection rather than pool it with the lock held.
//!
//! Checkpoints only read the head, so every instance logs its own (each is a witness in
//! its own log stream). A head that moved back since the last checkpoint this instance
//! logged is not signed: it is logged as an error instead.

use std::time::Duration;

use rampart_core::audit::checkpoint::{Checkpoint, CheckpointSigner};
use rampart_core::config::Config;
use rampart_store::purge::{self, DEFAULT_GRACE_MS, PurgePolicy};
use tokio::task::JoinHandle;

use crate::AppState;
use crate::services::credentials::FIXED_WINDOW_MS;

/// The first run waits at most this long (or the interval, if shorter).
const FIRST_RUN_SPREAD: Duration = Duration::from_secs(60);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What the purge may delete under `config`: lockout rows once past the longest window
/// any key uses, revoked sessions once every refresh token they had has expired.
pub fn purge_policy(config: &Config) -> PurgePolicy {
    PurgePolicy {
        lockout_window_ms: ms(config.lockout_seconds).max(FIXED_WINDOW_MS),
        ended_session_retention_ms: ms(config.refresh_token_ttl),
        grace_ms: DEFAULT_GRACE_MS,
    }
}

/// Starts the periodic purge for `state`; abort the handle to stop it.
pub fn spawn_purge(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let interval = state.config.purge_interval;
        let policy = purge_policy(&state.config);
        let mut delay = first_delay(interval, random_unit());
        loop {
            tokio::time::sleep(delay).await;
            purge_once(&state, &policy).await;
            delay = next_delay(interval, random_unit());
        }
    })
}

async fn purge_once(state: &AppState, policy: &PurgePolicy) {
    match purge::purge_expired(&state.db, state.clock.now_ms(), policy).await {
        Ok(Some(counts)) if counts.total() > 0 => tracing::info!(
            sessions = counts.sessions,
            refresh_tokens = counts.refresh_tokens,
            mfa_challenges = counts.mfa_challenges,
            password_resets = counts.password_resets,
            lockouts = counts.lockouts,
            webauthn_challenges = counts.webauthn_challenges,
            "purge finished"
        ),
        Ok(Some(_)) => tracing::debug!("purge finished: nothing to delete"),
        Ok(None) => tracing::debug!("purge skipped: another instance holds the lock"),
        Err(e) => tracing::warn!(error = %e, "purge failed"),
    }
}

/// Starts the audit checkpoint job for `state`: one checkpoint now, then one every
/// `RAMPART_AUDIT_CHECKPOINT_INTERVAL` in which the chain grew; abort the handle to stop it.
pub fn spawn_checkpoints(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let signer = match CheckpointSigner::new(&state.keys, state.config.jwt_alg) {
            Ok(signer) => signer,
            Err(e) => {
                tracing::error!(error = %e, "audit checkpoints disabled: cannot sign");
                return;
            }
        };
        let interval = state.config.audit_checkpoint_interval;
        let mut logged: Option<(i64, String)> = None;
        loop {
            if let Some(head) = checkpoint_once(&state, &signer, logged.as_ref()).await {
                logged = Some(head);
            }
            tokio::time::sleep(interval).await;
        }
    })
}

/// Reads the head and logs its checkpoint when there is none yet (`logged` is `None`) or
/// the chain grew since `logged`. Returns the head it logged.
async fn checkpoint_once(
    state: &AppState,
    signer: &CheckpointSigner,
    logged: Option<&(i64, String)>,
) -> Option<(i64, String)> {
    let head = match rampart_store::audit::head(&state.db).await {
        Ok(head) => head.unwrap_or_else(|| (0, rampart_core::audit::GENESIS_HASH.to_owned())),
        Err(e) => {
            tracing::warn!(error = %e, "audit checkpoint failed: cannot read the chain head");
            return None;
        }
    };
    match next_checkpoint(logged, &head) {
        Next::Skip => return None,
        Next::MovedBack => {
            if let Some((seq, hash)) = logged {
                tracing::error!(
                    logged_seq = seq,
                    logged_hash = %hash,
                    head_seq = head.0,
                    head_hash = %head.1,
                    "audit chain head moved back since the last checkpoint: records were removed or rewritten"
                );
            }
            return None;
        }
        Next::Log => {}
    }
    let checkpoint = Checkpoint {
        seq: head.0,
        hash: head.1.clone(),
        iat: state.clock.now_ms().div_euclid(1000),
    };
    match signer.sign(&checkpoint) {
        Ok(token) => {
            tracing::info!(checkpoint = %token, seq = checkpoint.seq, "audit checkpoint");
            Some(head)
        }
        Err(e) => {
            tracing::warn!(error = %e, "audit checkpoint failed");
            None
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Next {
    Log,
    Skip,
    MovedBack,
}

/// Whether to log a checkpoint of `head` after having logged `logged`.
fn next_checkpoint(logged: Option<&(i64, String)>, head: &(i64, String)) -> Next {
    match logged {
        None => Next::Log,
        Some(last) if head.0 > last.0 => Next::Log,
        Some(last) if head == last => Next::Skip,
        Some(_) => Next::MovedBack,
    }
}

/// `unit` in [0, 1) → a delay in [0, min(interval, 60 s)).
fn first_delay(interval: Duration, unit: f64) -> Duration {
    interval.min(FIRST_RUN_SPREAD).mul_f64(unit.clamp(0.0, 1.0))
}

/// `unit` in [0, 1) → the interval ±10 %.
fn next_delay(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(0.9 + 0.2 * unit.clamp(0.0, 1.0))
}

/// A uniform value in [0, 1) from the OS generator, by way of a random UUID: 53 of its
/// 122 random bits (the low 64 bits hold 62 random ones after the variant). Spreading
/// timers needs no more, and `uuid` is already a dependency.
fn random_unit() -> f64 {
    let (_, low) = uuid::Uuid::new_v4().as_u64_pair();
    let bits = low & ((1_u64 << 53) - 1);
    bits as f64 / (1_u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_run_is_spread_over_a_minute_at_most() {
        let ten_minutes = Duration::from_secs(600);
        assert_eq!(first_delay(ten_minutes, 0.0), Duration::ZERO);
        assert_eq!(first_delay(ten_minutes, 0.5), Duration::from_secs(30));
        assert!(first_delay(ten_minutes, 0.999_999) < FIRST_RUN_SPREAD);
        let short = Duration::from_secs(20);
        assert_eq!(first_delay(short, 0.5), Duration::from_secs(10));
        assert!(first_delay(short, 0.999_999) < short);
    }

    #[test]
    fn later_runs_are_the_interval_plus_or_minus_ten_percent() {
        let interval = Duration::from_secs(600);
        assert_eq!(next_delay(interval, 0.0), Duration::from_secs(540));
        assert_eq!(next_delay(interval, 0.5), Duration::from_secs(600));
        assert!(next_delay(interval, 0.999_999) < Duration::from_secs(660));
    }

    #[test]
    fn random_units_are_in_range_and_vary() {
        let draws: Vec<f64> = (0..1000).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(draws.iter().any(|u| *u < 0.1));
        assert!(draws.iter().any(|u| *u > 0.9));
    }

    #[test]
    fn a_checkpoint_is_logged_first_then_only_when_the_chain_grew() {
        let head = |seq: i64, hash: &str| (seq, hash.to_owned());
        assert_eq!(next_checkpoint(None, &head(0, "g")), Next::Log);
        assert_eq!(next_checkpoint(None, &head(5, "a")), Next::Log);
        assert_eq!(
            next_checkpoint(Some(&head(5, "a")), &head(5, "a")),
            Next::Skip
        );
        assert_eq!(
            next_checkpoint(Some(&head(5, "a")), &head(6, "b")),
            Next::Log
        );
        assert_eq!(
            next_checkpoint(Some(&head(0, "g")), &head(1, "b")),
            Next::Log
        );
        // Shorter, or the same length with another head: never signed.
        assert_eq!(
            next_checkpoint(Some(&head(5, "a")), &head(4, "z")),
            Next::MovedBack
        );
        assert_eq!(
            next_checkpoint(Some(&head(5, "a")), &head(5, "b")),
            Next::MovedBack
        );
    }

    #[test]
    fn the_policy_covers_the_longest_lockout_window_and_the_refresh_ttl() {
        let mut config = test_config();
        config.lockout_seconds = Duration::from_secs(900);
        config.refresh_token_ttl = Duration::from_secs(7 * 86_400);
        let policy = purge_policy(&config);
        assert_eq!(policy.lockout_window_ms, 3_600_000);
        assert_eq!(policy.ended_session_retention_ms, 7 * 86_400_000);
        assert_eq!(policy.grace_ms, DEFAULT_GRACE_MS);
        config.lockout_seconds = Duration::from_secs(86_400);
        assert_eq!(purge_policy(&config).lockout_window_ms, 86_400_000);
    }

    fn test_config() -> Config {
        let sources = rampart_core::config::Sources::from_pairs(Vec::<(&str, &str)>::new());
        Config::load(&sources).unwrap_or_else(|problems| panic!("{problems:?}"))
    }
}
