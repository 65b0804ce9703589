//! The `lockouts` table: failed-login counters per key (a normalised email, or
//! `email|ip`), kept in the database so they survive restarts and hold across instances
//! (contract §4, lockout; NIST SP 800-63B §5.2.2 throttling).
//!
//! Invariants: a key's failures count within a window of `window_ms` from the window's
//! first failure; a failure outside that window, or after a lock has expired, starts a new
//! window at 1. The failure that brings the count to `max_failures` locks the key until
//! `now + lock_ms`, resets the count to 0 and appends the lockout event, once per lock.
//! While the key is locked a failure changes nothing. Each failure is one atomic upsert,
//! so concurrent failures are never lost: PostgreSQL's `ON CONFLICT DO UPDATE` locks the
//! row (also when its `WHERE` leaves it unchanged) until the transaction ends, and SQLite
//! transactions run one at a time (`BEGIN IMMEDIATE`). Rows are only deleted by [`clear`]
//! and by a successful login (`sessions::create`).

use rampart_core::Result;
use rampart_core::audit::NewAuditEvent;

use crate::Db;
use crate::Tx;
use crate::error::DbResultExt;

/// How many failures within which window lock a key, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: u32,
    pub window_ms: i64,
    pub lock_ms: i64,
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

// $1 key, $2 now, $3 window_ms, $4 max_failures, $5 lock_ms. In the update, the restart
// condition is "the previous lock has expired (only expired locks get past the WHERE) or
// the window has"; the new count is then 1, else failures + 1. When the new count reaches
// $4, the row locks and the count resets. The WHERE skips a locked row: no row comes back,
// so a returned `locked_until_ms` always means "this failure locked the key".
const RECORD_FAILURE: &str = "INSERT INTO lockouts \
     (key, failures, window_started_at_ms, locked_until_ms) \
     VALUES ($1, CASE WHEN 1 >= $4 THEN 0 ELSE 1 END, $2, \
             CASE WHEN 1 >= $4 THEN $2 + $5 ELSE NULL END) \
     ON CONFLICT (key) DO UPDATE SET \
       failures = CASE \
         WHEN (CASE WHEN lockouts.locked_until_ms IS NOT NULL \
                      OR lockouts.window_started_at_ms + $3 <= $2 \
                    THEN 1 ELSE lockouts.failures + 1 END) >= $4 THEN 0 \
         ELSE (CASE WHEN lockouts.locked_until_ms IS NOT NULL \
                      OR lockouts.window_started_at_ms + $3 <= $2 \
                    THEN 1 ELSE lockouts.failures + 1 END) END, \
       window_started_at_ms = CASE \
         WHEN lockouts.locked_until_ms IS NOT NULL \
           OR lockouts.window_started_at_ms + $3 <= $2 THEN $2 \
         ELSE lockouts.window_started_at_ms END, \
       locked_until_ms = CASE \
         WHEN (CASE WHEN lockouts.locked_until_ms IS NOT NULL \
                      OR lockouts.window_started_at_ms + $3 <= $2 \
                    THEN 1 ELSE lockouts.failures + 1 END) >= $4 THEN $2 + $5 \
         ELSE NULL END \
     WHERE lockouts.locked_until_ms IS NULL OR lockouts.locked_until_ms <= $2 \
     RETURNING locked_until_ms";

/// Counts a failed login for `key` at `now_ms` under `policy` (see the module docs), in one
/// transaction with `failure_audit` (when given) and, if this failure locks the key,
/// `lockout_audit`. Returns `Some(until)` when the key is locked after this failure, by
/// this failure or an earlier one.
pub async fn record_failure(
    db: &Db,
    key: &str,
    now_ms: i64,
    policy: &LockoutPolicy,
    failure_audit: Option<&NewAuditEvent>,
    lockout_audit: &NewAuditEvent,
) -> Result<Option<i64>> {
    let mut tx = db.begin().await?;
    // No row: the key was already locked. Some(None): counted. Some(Some(until)): locked.
    let counted: Option<Option<i64>> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(RECORD_FAILURE)
            .bind(key)
            .bind(now_ms)
            .bind(policy.window_ms)
            .bind(i64::from(policy.max_failures))
            .bind(policy.lock_ms)
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("recording a failed login")?;
    if let Some(event) = failure_audit {
        crate::audit::append(&mut tx, event, now_ms).await?;
    }
    let locked_until_ms = match counted {
        Some(Some(until)) => {
            crate::audit::append(&mut tx, lockout_audit, now_ms).await?;
            Some(until)
        }
        Some(None) => None,
        // Already locked: the upsert left the row alone (and, on PostgreSQL, locked it).
        None => with_tx!(&mut tx, conn => {
            sqlx::query_scalar(SELECT_LOCKED_UNTIL)
                .bind(key)
                .bind(now_ms)
                .fetch_optional(&mut *conn)
                .await
        })
        .db_context("reading a lockout")?,
    };
    tx.commit().await?;
    Ok(locked_until_ms)
}

const DELETE_LOCKOUT: &str = "DELETE FROM lockouts WHERE key = $1";

/// Forgets every failure and any lock of `key` (a completed password reset, an operator).
pub async fn clear(db: &Db, key: &str) -> Result<()> {
    with_pool!(db, pool => sqlx::query(DELETE_LOCKOUT).bind(key).execute(pool).await.map(|_| ()))
        .db_context("clearing a lockout")?;
    Ok(())
}

/// [`clear`] inside the caller's transaction (a successful login).
pub(crate) async fn clear_in(tx: &mut Tx, key: &str) -> Result<()> {
    with_tx!(tx, conn => sqlx::query(DELETE_LOCKOUT).bind(key).execute(&mut *conn).await.map(|_| ()))
        .db_context("clearing a lockout")?;
    Ok(())
}
