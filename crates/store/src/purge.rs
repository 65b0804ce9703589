//! The background purge: deletes rows that can no longer change any answer, so that
//! `sessions`, `refresh_tokens`, `mfa_challenges`, `password_resets`, `lockouts` and
//! `webauthn_challenges` do not grow with traffic forever. `audit_events` is never touched (it is append-only and its
//! triggers refuse deletes anyway); nor are `users`, `recovery_codes` or anything else.
//!
//! Every rule below deletes only rows that every code path already treats as absent, so a
//! purge is invisible to requests. Each rule waits `grace_ms` past the instant that made
//! the row dead (`cutoff = now − grace_ms`): a request captures its `now` once and may run
//! for up to `RAMPART_REQUEST_TIMEOUT` (at most 10 minutes), and instances' clocks differ a
//! little, so a row must be dead for any `now` an in-flight request may still use, not
//! only for the purger's. The rules, and why each is safe (read against `sessions.rs`,
//! `mfa.rs`, `resets.rs` and `lockout.rs`):
//!
//! - **Refresh tokens past `expires_at_ms <= cutoff` and never used.** The claim, the
//!   logout lookup and the reuse lookup all need either an unexpired or a used token, and
//!   an expired token can no longer become used (the claim checks expiry), so the row
//!   answers nothing: presenting it gives `Invalid` with or without it. *Used* tokens are
//!   kept, expired or not, while their session stays: presenting a used token revokes its
//!   session (reuse detection, RFC 9700 §4.14.2) whether or not the token has expired, so
//!   deleting it would let a thief who rotated first keep the family after the victim's
//!   client, idle past the TTL, presents the old token.
//! - **Sessions past their hard end (`expires_at_ms <= cutoff`), or revoked at or before
//!   `cutoff − ended_session_retention_ms`**, and every refresh token of theirs (deleted
//!   first, so they are counted and rows are locked in the order rotation locks them:
//!   token, then session; the `ON DELETE CASCADE` on `refresh_tokens.session_id`, present
//!   in both dialects with `foreign_keys` on for SQLite in `db.rs`, is the backstop).
//!   `expires_at_ms` never changes and a revocation is never undone, so once a session
//!   matches it matches for good. Every liveness check (`rotate`, `find_live_by_refresh`,
//!   `live_user`, `list_live`, `users::get_for_session`, the revocations) requires
//!   `revoked_at_ms IS NULL AND expires_at_ms > now`, so such a session is already dead
//!   everywhere. For a revoked session the deletion changes nothing at all: its tokens
//!   answer `Invalid` (a used one finds the session already revoked). The retention (the
//!   caller passes the refresh-token TTL, after which every token of the session has
//!   expired too) keeps recent revocations inspectable. One difference remains for a
//!   session that ended by age without being revoked: a used token of it presented after
//!   the purge is answered `Invalid` instead of `Reused`; the client sees the same 401,
//!   the session grants nothing either way, but no `auth.refresh_reuse_detected` event is
//!   appended.
//! - **MFA challenges and password-reset tokens expired or used at or before `cutoff`.**
//!   Every lookup and every claim requires `used_at_ms IS NULL AND expires_at_ms > now`,
//!   and a missing row reads exactly like a dead one. The grace also covers the one path
//!   that updates a challenge without re-checking it (`challenge_failed`, right after
//!   `live_challenge` in the same request): that row cannot vanish in between.
//! - **Lockout rows that are not locked (`locked_until_ms IS NULL OR <= cutoff`), whose
//!   window started at or before `cutoff − lockout_window_ms`, and whose last lock (if any)
//!   ended at or before `cutoff − lockout::STREAK_RESET_MS`**, where the caller passes the
//!   longest window any key uses (`max(RAMPART_LOCKOUT_SECONDS, 1 h)`: login keys use the
//!   lockout seconds, the per-email ceiling and the `reset|…` counter one hour). For such a
//!   row `reserve` and `count` take their restart branch (the window or the lock has
//!   expired) and write a count of 1 in a window starting now, and the next lock starts a
//!   new streak (the last one ended over 24 hours ago): exactly what happens when no row
//!   exists. Deleting it is the counter restarting, which it was going to do anyway. A
//!   lock in force, or one whose streak still counts, is kept.
//!
//! Safe with N instances and concurrent requests: on PostgreSQL one runner at a time holds
//! the session-level advisory lock [`PURGE_LOCK_KEY`] on one dedicated pooled connection
//! and runs every delete there; the others get `Ok(None)` at once. The lock is released
//! by `pg_advisory_unlock`, and if that did not run (an error, a cancelled future) the
//! connection is closed instead of returned to the pool, which ends the session and its
//! lock. SQLite is one instance by definition and needs no lock. Deletes run in batches of
//! [`BATCH`] rows, each its own autocommitted statement, so no lock is held for long on a
//! big table, and each repeats its condition outside the `IN (…)` subquery: PostgreSQL
//! re-checks the outer `WHERE` against a row that changed after the subquery picked it (a
//! lockout counter restarted by a failure meanwhile is then kept). All rules are
//! idempotent: a second run finds nothing.

use rampart_core::Result;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, SqliteConnection};

use crate::Db;
use crate::error::DbResultExt;

/// Key of the PostgreSQL session-level advisory lock that lets one runner purge at a time
/// ("rampprge" in ASCII; distinct from the audit chain's and the RBAC lock's keys).
pub const PURGE_LOCK_KEY: i64 = 0x7261_6d70_7072_6765;

/// How long past the instant that made it dead a row is kept: twice the longest request
/// timeout (10 minutes) plus 10 minutes of clock skew between instances.
pub const DEFAULT_GRACE_MS: i64 = 30 * 60 * 1000;

/// Rows deleted per statement.
pub const BATCH: i64 = 1000;

/// What counts as old enough to purge (see the module docs). All values are milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgePolicy {
    /// The longest lockout window any key uses: max(`RAMPART_LOCKOUT_SECONDS`, 1 hour).
    pub lockout_window_ms: i64,
    /// How long a revoked session is kept: the refresh-token TTL.
    pub ended_session_retention_ms: i64,
    /// How long a row must have been dead before it goes: [`DEFAULT_GRACE_MS`] outside
    /// tests.
    pub grace_ms: i64,
}

/// Rows deleted by one purge, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub mfa_challenges: u64,
    pub password_resets: u64,
    pub lockouts: u64,
    /// Expired WebAuthn ceremonies (`webauthn_challenges`, contract §10).
    pub webauthn_challenges: u64,
}

impl PurgeCounts {
    pub fn total(&self) -> u64 {
        self.sessions
            + self.refresh_tokens
            + self.mfa_challenges
            + self.password_resets
            + self.lockouts
            + self.webauthn_challenges
    }
}

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1)";
const UNLOCK: &str = "SELECT pg_advisory_unlock($1)";

// Each statement: the rule's bounds, then `LIMIT $n` (the batch). The condition is repeated
// outside the subquery so that PostgreSQL re-checks it on a row changed meanwhile.

// $1 cutoff. A ceremony is single use (taken by one DELETE), so what is left expired.
const DELETE_EXPIRED_WEBAUTHN_CHALLENGES: &str = "DELETE FROM webauthn_challenges \
     WHERE id IN (SELECT id FROM webauthn_challenges WHERE expires_at_ms <= $1 LIMIT $2) \
       AND expires_at_ms <= $1";

// $1 cutoff.
const DELETE_EXPIRED_UNUSED_REFRESH_TOKENS: &str = "DELETE FROM refresh_tokens \
     WHERE id IN (SELECT id FROM refresh_tokens \
                  WHERE expires_at_ms <= $1 AND used_at_ms IS NULL LIMIT $2) \
       AND expires_at_ms <= $1 AND used_at_ms IS NULL";

// $1 cutoff, $2 revoked-before. A session that matches matches for good (see the docs).
const DELETE_TOKENS_OF_ENDED_SESSIONS: &str = "DELETE FROM refresh_tokens \
     WHERE id IN (SELECT t.id FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
                  WHERE s.expires_at_ms <= $1 OR s.revoked_at_ms <= $2 LIMIT $3)";

const DELETE_ENDED_SESSIONS: &str = "DELETE FROM sessions \
     WHERE id IN (SELECT id FROM sessions \
                  WHERE expires_at_ms <= $1 OR revoked_at_ms <= $2 LIMIT $3) \
       AND (expires_at_ms <= $1 OR revoked_at_ms <= $2)";

// $1 cutoff.
const DELETE_ENDED_CHALLENGES: &str = "DELETE FROM mfa_challenges \
     WHERE id IN (SELECT id FROM mfa_challenges \
                  WHERE expires_at_ms <= $1 OR used_at_ms <= $1 LIMIT $2) \
       AND (expires_at_ms <= $1 OR used_at_ms <= $1)";

// $1 cutoff.
const DELETE_ENDED_RESETS: &str = "DELETE FROM user_tokens \
     WHERE id IN (SELECT id FROM user_tokens \
                  WHERE expires_at_ms <= $1 OR used_at_ms <= $1 LIMIT $2) \
       AND (expires_at_ms <= $1 OR used_at_ms <= $1)";

// $1 cutoff, $2 window-started-before, $3 streak-ended-before.
const DELETE_STALE_LOCKOUTS: &str = "DELETE FROM lockouts \
     WHERE key IN (SELECT key FROM lockouts \
                   WHERE (locked_until_ms IS NULL OR locked_until_ms <= $1) \
                     AND window_started_at_ms <= $2 \
                     AND (last_lock_until_ms IS NULL OR last_lock_until_ms <= $3) LIMIT $4) \
       AND (locked_until_ms IS NULL OR locked_until_ms <= $1) \
       AND window_started_at_ms <= $2 \
       AND (last_lock_until_ms IS NULL OR last_lock_until_ms <= $3)";

/// Deletes what the rules of the module docs allow at `now_ms` under `policy`, in batches.
/// `Ok(None)`, with nothing deleted, when another runner holds the PostgreSQL purge lock.
/// Safe to run at any time, repeatedly, and alongside requests and other runners.
pub async fn purge_expired(
    db: &Db,
    now_ms: i64,
    policy: &PurgePolicy,
) -> Result<Option<PurgeCounts>> {
    match db {
        Db::Sqlite(pool) => {
            let mut conn = pool
                .acquire()
                .await
                .db_context("acquiring a connection to purge")?;
            purge_on(&mut Conn::Sqlite(&mut conn), now_ms, policy)
                .await
                .map(Some)
        }
        Db::Postgres(pool) => purge_postgres(pool, now_ms, policy).await,
    }
}

/// A pooled connection that may hold the session-level purge lock: unless the lock is
/// known to be released, dropping it closes the connection (ending the session and so the
/// lock) instead of returning it to the pool with the lock still held.
struct LockConnection {
    conn: PoolConnection<Postgres>,
    lock_released: bool,
}

impl Drop for LockConnection {
    fn drop(&mut self) {
        if !self.lock_released {
            self.conn.close_on_drop();
        }
    }
}

async fn purge_postgres(
    pool: &PgPool,
    now_ms: i64,
    policy: &PurgePolicy,
) -> Result<Option<PurgeCounts>> {
    // Guarded before the lock is asked for: a failed or cancelled request may still have
    // taken it on the server.
    let mut locked = LockConnection {
        conn: pool
            .acquire()
            .await
            .db_context("acquiring a connection to purge")?,
        lock_released: false,
    };
    let acquired: bool = sqlx::query_scalar(TRY_LOCK)
        .bind(PURGE_LOCK_KEY)
        .fetch_one(&mut *locked.conn)
        .await
        .db_context("taking the purge lock")?;
    if !acquired {
        locked.lock_released = true;
        return Ok(None);
    }
    let purged = purge_on(&mut Conn::Postgres(&mut locked.conn), now_ms, policy).await;
    let unlocked: Result<bool> = sqlx::query_scalar(UNLOCK)
        .bind(PURGE_LOCK_KEY)
        .fetch_one(&mut *locked.conn)
        .await
        .db_context("releasing the purge lock");
    // `false` cannot happen while this session holds the lock; if it does, the connection
    // is closed all the same.
    if matches!(unlocked, Ok(true)) {
        locked.lock_released = true;
    }
    let counts = purged?;
    unlocked?;
    Ok(Some(counts))
}

/// The connection the deletes run on.
enum Conn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

async fn purge_on(conn: &mut Conn<'_>, now_ms: i64, policy: &PurgePolicy) -> Result<PurgeCounts> {
    let cutoff = now_ms.saturating_sub(policy.grace_ms.max(0));
    let revoked_before = cutoff.saturating_sub(policy.ended_session_retention_ms.max(0));
    let window_started_before = cutoff.saturating_sub(policy.lockout_window_ms.max(0));
    let streak_ended_before = cutoff.saturating_sub(crate::lockout::STREAK_RESET_MS);

    let mut counts = PurgeCounts::default();
    counts.refresh_tokens += delete_in_batches(
        conn,
        DELETE_EXPIRED_UNUSED_REFRESH_TOKENS,
        &[cutoff],
        "purging expired refresh tokens",
    )
    .await?;
    counts.refresh_tokens += delete_in_batches(
        conn,
        DELETE_TOKENS_OF_ENDED_SESSIONS,
        &[cutoff, revoked_before],
        "purging the refresh tokens of ended sessions",
    )
    .await?;
    counts.sessions = delete_in_batches(
        conn,
        DELETE_ENDED_SESSIONS,
        &[cutoff, revoked_before],
        "purging ended sessions",
    )
    .await?;
    counts.mfa_challenges = delete_in_batches(
        conn,
        DELETE_ENDED_CHALLENGES,
        &[cutoff],
        "purging MFA challenges",
    )
    .await?;
    counts.password_resets = delete_in_batches(
        conn,
        DELETE_ENDED_RESETS,
        &[cutoff],
        "purging password-reset tokens",
    )
    .await?;
    counts.webauthn_challenges = delete_in_batches(
        conn,
        DELETE_EXPIRED_WEBAUTHN_CHALLENGES,
        &[cutoff],
        "purging WebAuthn challenges",
    )
    .await?;
    counts.lockouts = delete_in_batches(
        conn,
        DELETE_STALE_LOCKOUTS,
        &[cutoff, window_started_before, streak_ended_before],
        "purging lockout counters",
    )
    .await?;
    Ok(counts)
}

/// Runs `sql` with `bounds` and then [`BATCH`] bound, until a run deletes fewer than
/// [`BATCH`] rows; returns the rows deleted in all.
async fn delete_in_batches(
    conn: &mut Conn<'_>,
    sql: &'static str,
    bounds: &[i64],
    what: &'static str,
) -> Result<u64> {
    let mut total = 0;
    loop {
        let deleted = match conn {
            Conn::Sqlite(conn) => {
                let mut query = sqlx::query(sql);
                for bound in bounds {
                    query = query.bind(*bound);
                }
                query
                    .bind(BATCH)
                    .execute(&mut **conn)
                    .await
                    .map(|done| done.rows_affected())
            }
            Conn::Postgres(conn) => {
                let mut query = sqlx::query(sql);
                for bound in bounds {
                    query = query.bind(*bound);
                }
                query
                    .bind(BATCH)
                    .execute(&mut **conn)
                    .await
                    .map(|done| done.rows_affected())
            }
        }
        .db_context(what)?;
        total += deleted;
        if deleted < BATCH.unsigned_abs() {
            return Ok(total);
        }
    }
}
