//! The `lockouts` table: login-attempt counters per key (a normalised email, or
//! `email|ip`), kept in the database so they survive restarts and hold across instances
//! (contract §4, lockout; NIST SP 800-63B §5.2.2 throttling).
//!
//! Invariants:
//! - An attempt is *reserved* ([`reserve`]) before the password or code is checked: one
//!   atomic upsert per key that refuses while the key is locked, restarts the count at 1
//!   when the window (`window_ms` from its first attempt) or an old lock has expired, and
//!   otherwise counts the attempt only while fewer than `max_failures` were counted in the
//!   window. So of any number of concurrent attempts, on any number of instances, at most
//!   `max_failures` per window are checked: PostgreSQL's `ON CONFLICT DO UPDATE` locks the
//!   row (also when its `WHERE` leaves it unchanged) until the transaction ends, and SQLite
//!   transactions run one at a time (`BEGIN IMMEDIATE`). Every key of one attempt is
//!   reserved in one transaction, and a refusal by any of them counts none.
//! - A failed check ([`record_failure`]) is already counted; when the count has reached
//!   `max_failures` and the key is not locked, one conditional `UPDATE` locks it (so exactly
//!   one of concurrent failures writes the lock and its audit event) and resets the count.
//!   A lock lasts `lock_ms · 2^(streak−1)`, at most `max_lock_ms`; the streak continues
//!   while a lock starts less than [`STREAK_RESET_MS`] after the previous one ended.
//! - A success ([`succeeded`], and `sessions::create`) deletes the row, counter and streak,
//!   unless a lock is in force: a success reserved before parallel failures locked the key
//!   never unlocks it. A correct password that only leads to the second factor gives its
//!   slot back ([`release`]) without resetting anything.
//! - [`clear`] (a completed password reset, an operator) forgets everything; [`count`] is a
//!   plain windowed counter (the password-reset throttle) that never locks.

use rampart_core::Result;
use rampart_core::audit::NewAuditEvent;

use crate::Db;
use crate::Tx;
use crate::error::DbResultExt;

/// A lock streak ends when this long passes after a lock without a new one (contract §4).
pub const STREAK_RESET_MS: i64 = 86_400_000;

/// How many attempts within which window a key allows, and how long its locks last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: u32,
    pub window_ms: i64,
    /// The first lock of a streak.
    pub lock_ms: i64,
    /// No lock lasts longer (`RAMPART_LOCKOUT_MAX_SECONDS`); set it to `lock_ms` for locks
    /// that do not grow.
    pub max_lock_ms: i64,
}

impl LockoutPolicy {
    /// How long the `streak`-th consecutive lock lasts: `lock_ms · 2^(streak−1)`, capped.
    pub fn lock_duration_ms(&self, streak: i64) -> i64 {
        let cap = self.max_lock_ms.max(self.lock_ms);
        let doublings = u32::try_from(streak.saturating_sub(1).clamp(0, 62)).unwrap_or(62);
        self.lock_ms
            .checked_mul(1_i64 << doublings)
            .map_or(cap, |ms| ms.min(cap))
    }
}

const SELECT_LOCKED_UNTIL: &str =
    "SELECT locked_until_ms FROM lockouts WHERE key = $1 AND locked_until_ms > $2";

/// `Some(until)` while `key` is locked (`locked_until_ms > now_ms`), else `None`.
pub async fn locked_until(db: &Db, key: &str, now_ms: i64) -> Result<Option<i64>> {
    with_pool!(db, pool => {
        sqlx::query_scalar(SELECT_LOCKED_UNTIL)
            .bind(key)
            .bind(now_ms)
            .fetch_optional(pool)
            .await
    })
    .db_context("reading a lockout")
}

// $1 key, $2 now, $3 window_ms, $4 max_failures. "Restart" is "an old lock has expired (only
// expired locks get past the WHERE) or the window has": the count restarts at 1 in a new
// window. The WHERE refuses a lock in force, and a full window: no row comes back then.
const RESERVE: &str = "INSERT INTO lockouts \
     (key, failures, window_started_at_ms, locked_until_ms, lock_streak, last_lock_until_ms) \
     VALUES ($1, 1, $2, NULL, 0, NULL) \
     ON CONFLICT (key) DO UPDATE SET \
       failures = CASE WHEN lockouts.locked_until_ms IS NOT NULL \
                         OR lockouts.window_started_at_ms + $3 <= $2 \
                       THEN 1 ELSE lockouts.failures + 1 END, \
       window_started_at_ms = CASE WHEN lockouts.locked_until_ms IS NOT NULL \
                                     OR lockouts.window_started_at_ms + $3 <= $2 \
                                   THEN $2 ELSE lockouts.window_started_at_ms END, \
       locked_until_ms = NULL \
     WHERE (lockouts.locked_until_ms IS NULL OR lockouts.locked_until_ms <= $2) \
       AND (lockouts.locked_until_ms IS NOT NULL \
            OR lockouts.window_started_at_ms + $3 <= $2 \
            OR lockouts.failures < $4) \
     RETURNING failures";

const SELECT_ROW: &str =
    "SELECT locked_until_ms, window_started_at_ms FROM lockouts WHERE key = $1";

/// Reserves one attempt on every key of `keys` at `now_ms`, in one transaction (see the
/// module docs). `None`: counted on every key, go ahead and check. `Some(retry_at_ms)`:
/// refused, nothing counted; `retry_at_ms` is when the lock ends, or the full window does.
pub async fn reserve(db: &Db, keys: &[(&str, &LockoutPolicy)], now_ms: i64) -> Result<Option<i64>> {
    let mut tx = db.begin().await?;
    for (key, policy) in keys {
        let counted: Option<i64> = with_tx!(&mut tx, conn => {
            sqlx::query_scalar(RESERVE)
                .bind(*key)
                .bind(now_ms)
                .bind(policy.window_ms)
                .bind(i64::from(policy.max_failures))
                .fetch_optional(&mut *conn)
                .await
        })
        .db_context("reserving a login attempt")?;
        if counted.is_some() {
            continue;
        }
        // Refused. The upsert locked the row (PostgreSQL) or holds the write lock (SQLite).
        let row: Option<(Option<i64>, i64)> = with_tx!(&mut tx, conn => {
            sqlx::query_as(SELECT_ROW).bind(*key).fetch_optional(&mut *conn).await
        })
        .db_context("reading a lockout")?;
        tx.rollback().await?;
        let retry_at = match row {
            Some((Some(until), _)) if until > now_ms => until,
            Some((_, started)) => started.saturating_add(policy.window_ms),
            None => now_ms.saturating_add(policy.window_ms),
        };
        return Ok(Some(retry_at.max(now_ms + 1)));
    }
    tx.commit().await?;
    Ok(None)
}

// $1 key, $2 now, $3 max_failures, $4 streak reset. The winner test of concurrent failures:
// only a full, unlocked counter matches, and the match empties it.
const START_LOCK: &str = "UPDATE lockouts SET failures = 0, \
       lock_streak = CASE WHEN last_lock_until_ms IS NOT NULL \
                           AND last_lock_until_ms + $4 > $2 \
                         THEN lock_streak + 1 ELSE 1 END \
     WHERE key = $1 AND failures >= $3 \
       AND (locked_until_ms IS NULL OR locked_until_ms <= $2) \
     RETURNING lock_streak";

const SET_LOCK: &str =
    "UPDATE lockouts SET locked_until_ms = $2, last_lock_until_ms = $2 WHERE key = $1";

/// A reserved attempt failed its check, on every key of `keys`: appends `failure_audit`
/// (when given) once, and locks each key whose window is full and that is not locked yet,
/// appending `lockout_audit` for each lock, all in one transaction. Returns the latest
/// `until` of the locks this call wrote, `None` when it wrote none.
pub async fn record_failure(
    db: &Db,
    keys: &[(&str, &LockoutPolicy)],
    now_ms: i64,
    failure_audit: Option<&NewAuditEvent>,
    lockout_audit: &NewAuditEvent,
) -> Result<Option<i64>> {
    let mut tx = db.begin().await?;
    let mut locked = None;
    for (key, policy) in keys {
        let streak: Option<i64> = with_tx!(&mut tx, conn => {
            sqlx::query_scalar(START_LOCK)
                .bind(*key)
                .bind(now_ms)
                .bind(i64::from(policy.max_failures))
                .bind(STREAK_RESET_MS)
                .fetch_optional(&mut *conn)
                .await
        })
        .db_context("locking a key")?;
        let Some(streak) = streak else { continue };
        let until = now_ms.saturating_add(policy.lock_duration_ms(streak));
        with_tx!(&mut tx, conn => {
            sqlx::query(SET_LOCK)
                .bind(*key)
                .bind(until)
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })
        .db_context("locking a key")?;
        locked = locked.max(Some(until));
    }
    // Audit appends come last, after the row locks.
    if let Some(event) = failure_audit {
        crate::audit::append(&mut tx, event, now_ms).await?;
    }
    if locked.is_some() {
        crate::audit::append(&mut tx, lockout_audit, now_ms).await?;
    }
    tx.commit().await?;
    Ok(locked)
}

const DELETE_UNLESS_LOCKED: &str =
    "DELETE FROM lockouts WHERE key = $1 AND (locked_until_ms IS NULL OR locked_until_ms <= $2)";

/// A reserved attempt succeeded: forgets the counter and the streak of `key`, unless a
/// lock is in force at `now_ms`.
pub async fn succeeded(db: &Db, key: &str, now_ms: i64) -> Result<()> {
    let mut tx = db.begin().await?;
    succeeded_in(&mut tx, key, now_ms).await?;
    tx.commit().await
}

/// [`succeeded`] inside the caller's transaction (a successful login).
pub(crate) async fn succeeded_in(tx: &mut Tx, key: &str, now_ms: i64) -> Result<()> {
    with_tx!(tx, conn => {
        sqlx::query(DELETE_UNLESS_LOCKED)
            .bind(key)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    })
    .db_context("resetting a lockout counter")
}

const RELEASE: &str = "UPDATE lockouts SET failures = failures - 1 \
     WHERE key = $1 AND failures > 0 AND locked_until_ms IS NULL";

/// Gives back the attempt reserved on each of `keys` by a check that passed without being a
/// success (a right password whose login still needs the second factor): neither a failure
/// nor a reset.
pub async fn release(db: &Db, keys: &[&str]) -> Result<()> {
    let mut tx = db.begin().await?;
    for key in keys {
        with_tx!(&mut tx, conn => {
            sqlx::query(RELEASE)
                .bind(*key)
                .execute(&mut *conn)
                .await
                .map(|_| ())
        })
        .db_context("releasing a login attempt")?;
    }
    tx.commit().await
}

// $1 key, $2 now, $3 window_ms.
const COUNT: &str = "INSERT INTO lockouts (key, failures, window_started_at_ms) VALUES ($1, 1, $2) \
     ON CONFLICT (key) DO UPDATE SET \
       failures = CASE WHEN lockouts.window_started_at_ms + $3 <= $2 \
                       THEN 1 ELSE lockouts.failures + 1 END, \
       window_started_at_ms = CASE WHEN lockouts.window_started_at_ms + $3 <= $2 \
                                   THEN $2 ELSE lockouts.window_started_at_ms END \
     RETURNING failures";

/// A plain counter: counts one event for `key` in the window of `window_ms` from its first
/// event, and returns the count including this one. When that count is exactly
/// `audit_at`, appends `audit` in the same transaction (once per window).
pub async fn count(
    db: &Db,
    key: &str,
    now_ms: i64,
    window_ms: i64,
    audit_at: i64,
    audit: &NewAuditEvent,
) -> Result<i64> {
    let mut tx = db.begin().await?;
    let n: i64 = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(COUNT)
            .bind(key)
            .bind(now_ms)
            .bind(window_ms)
            .fetch_one(&mut *conn)
            .await
    })
    .db_context("counting an event")?;
    if n == audit_at {
        crate::audit::append(&mut tx, audit, now_ms).await?;
    }
    tx.commit().await?;
    Ok(n)
}

const DELETE_LOCKOUT: &str = "DELETE FROM lockouts WHERE key = $1";

/// Forgets every attempt, any lock and the streak of `key` (an operator).
pub async fn clear(db: &Db, key: &str) -> Result<()> {
    with_pool!(db, pool => sqlx::query(DELETE_LOCKOUT).bind(key).execute(pool).await.map(|_| ()))
        .db_context("clearing a lockout")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_double_up_to_the_cap() {
        let policy = LockoutPolicy {
            max_failures: 5,
            window_ms: 900_000,
            lock_ms: 900_000,
            max_lock_ms: 86_400_000,
        };
        let secs: Vec<i64> = (0..10).map(|n| policy.lock_duration_ms(n) / 1000).collect();
        assert_eq!(
            secs,
            [
                900, 900, 1800, 3600, 7200, 14_400, 28_800, 57_600, 86_400, 86_400
            ]
        );
        assert_eq!(policy.lock_duration_ms(i64::MAX), 86_400_000);
        let flat = LockoutPolicy {
            max_lock_ms: 900_000,
            ..policy
        };
        assert_eq!(flat.lock_duration_ms(5), 900_000);
    }
}
