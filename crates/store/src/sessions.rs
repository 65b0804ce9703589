//! The `sessions` and `refresh_tokens` tables: logins and their refresh-token families,
//! with one-time refresh tokens and reuse detection (RFC 9700 §4.14.2).
//!
//! A session is *live* while it is not revoked, `expires_at_ms > now` (its hard end,
//! login + maximum age, which no refresh extends), its user is active and not deleted, and
//! its `credential_epoch` equals its user's (contract §4: sessions are bound to the
//! credentials they were made with). Refresh tokens are stored only as the SHA-256 (hex) of
//! the token; each works once, until its own `expires_at_ms`, and only while its session is
//! live; so revoking a session kills every token of its family at once, and a token's
//! lifetime is capped at its session's end.
//!
//! Credential epoch: every path that ends all of a user's sessions goes through
//! `revoke_all_in`, which first bumps `users.credential_epoch` (a row lock on PostgreSQL),
//! then revokes, then carries the one kept session (if any) over to the new epoch. A new
//! session is created by [`create`] only if, re-read under a lock on the user row inside its
//! own transaction, the user is usable and its epoch still is the one the caller read
//! before checking the password or code; so a login that checked the old credentials and
//! finishes after a change never yields a live session, in whichever order they commit.
//!
//! Rotation is decided by one conditional `UPDATE … WHERE used_at_ms IS NULL`: of any
//! number of concurrent presentations of one token exactly one changes the row and wins.
//! On SQLite every transaction is `BEGIN IMMEDIATE`, so rotations run one after another;
//! on PostgreSQL the losers wait on the winner's row lock, re-check the condition against
//! the committed row (READ COMMITTED) and match nothing, and their next statement, under a
//! fresh snapshot, sees the token as used. A token presented after it was used is reuse:
//! its session is revoked (reason `refresh_reuse`) and `auth.refresh_reuse_detected`
//! appended in one transaction. Every change here commits with its audit event, if it
//! has one; audit appends come last in each transaction, after the row locks, so the
//! audit chain lock never waits inside a row-lock cycle.

use rampart_core::Result;
use rampart_core::audit::NewAuditEvent;
use rampart_core::users::Session;
use uuid::Uuid;

use crate::error::DbResultExt;
use crate::types::DbUuid;
use crate::{Backend, Db, Tx};

/// `revoked_reason` of sessions this crate revokes by itself.
pub const PASSWORD_CHANGED: &str = "password_changed";
/// `revoked_reason` of a session whose already-used refresh token was presented again.
pub const REFRESH_REUSE: &str = "refresh_reuse";

/// A session about to start (a successful login). `expires_at_ms` is its hard end.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The user's `credential_epoch` read *before* the credentials were checked.
    pub credential_epoch: i64,
    pub now_ms: i64,
    pub expires_at_ms: i64,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

/// A refresh token about to be issued; `token_hash` is the SHA-256 (hex) of the token, the
/// token itself is never stored. Its `expires_at_ms` is capped at the session's end.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub id: Uuid,
    pub token_hash: String,
    pub expires_at_ms: i64,
}

/// The result of presenting a refresh token to [`rotate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was valid and is now used; the next token was stored, expiring at
    /// `refresh_expires_at_ms`, and `session.last_used_at_ms` is now.
    Rotated {
        session: Session,
        refresh_expires_at_ms: i64,
    },
    /// The token had been used before: this call revoked its session and appended the
    /// reuse event.
    Reused { session_id: Uuid, user_id: Uuid },
    /// Unknown, expired, or of a session that is no longer live (including a reused
    /// token whose session was already revoked, by an earlier reuse or otherwise).
    Invalid,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: DbUuid,
    user_id: DbUuid,
    created_at_ms: i64,
    last_used_at_ms: i64,
    expires_at_ms: i64,
    ip_address: Option<String>,
    user_agent: Option<String>,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        Session {
            id: row.id.into(),
            user_id: row.user_id.into(),
            created_at_ms: row.created_at_ms,
            last_used_at_ms: row.last_used_at_ms,
            expires_at_ms: row.expires_at_ms,
            ip_address: row.ip_address,
            user_agent: row.user_agent,
        }
    }
}

const INSERT_SESSION: &str = "INSERT INTO sessions \
     (id, user_id, created_at_ms, last_used_at_ms, expires_at_ms, ip_address, user_agent, \
      credential_epoch, passkey_id) \
     VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8)";

const INSERT_REFRESH_TOKEN: &str = "INSERT INTO refresh_tokens \
     (id, session_id, token_hash, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5)";

// The user row, locked against a concurrent credential change until this transaction ends:
// `revoke_all_in`'s epoch bump waits for it, or this waits for the bump and reads its result.
// SQLite needs no lock clause: its transactions run one at a time (`BEGIN IMMEDIATE`).
const SQLITE_LOCK_USABLE_EPOCH: &str = "SELECT credential_epoch FROM users \
     WHERE id = $1 AND status = 'active' AND deleted_at_ms IS NULL";
const POSTGRES_LOCK_USABLE_EPOCH: &str = "SELECT credential_epoch FROM users \
     WHERE id = $1 AND status = 'active' AND deleted_at_ms IS NULL FOR SHARE";

/// A successful login: stores `session` and its first refresh token (expiry capped at the
/// session's end), resets the lockout counter of `clear_lockout_key` (unless a lock is in
/// force: see `lockout`) and appends `audit` (`auth.login_succeeded`), in one transaction,
/// but only if the user is still active, not deleted, and at `session.credential_epoch`
/// (checked under a lock on the user row). `None`, with nothing written, otherwise: the
/// credentials that were checked are no longer the user's.
pub async fn create(
    db: &Db,
    session: &NewSession,
    refresh: &NewRefreshToken,
    clear_lockout_key: Option<&str>,
    audit: &NewAuditEvent,
) -> Result<Option<Session>> {
    create_inner(db, session, refresh, clear_lockout_key, audit, None).await
}

/// A passkey sign-in: as [`create`], and in the same transaction applies `passkey` (the
/// counter compare-and-set of `passkeys::use_in`) and records the passkey on the session,
/// so removing the passkey ends it. `None`, with nothing written, also when the passkey
/// was removed or its counter moved since it was checked.
pub async fn create_with_passkey(
    db: &Db,
    session: &NewSession,
    refresh: &NewRefreshToken,
    clear_lockout_key: Option<&str>,
    audit: &NewAuditEvent,
    passkey: &crate::passkeys::PasskeyUse,
) -> Result<Option<Session>> {
    create_inner(
        db,
        session,
        refresh,
        clear_lockout_key,
        audit,
        Some(passkey),
    )
    .await
}

async fn create_inner(
    db: &Db,
    session: &NewSession,
    refresh: &NewRefreshToken,
    clear_lockout_key: Option<&str>,
    audit: &NewAuditEvent,
    passkey: Option<&crate::passkeys::PasskeyUse>,
) -> Result<Option<Session>> {
    let mut tx = db.begin().await?;
    let lock_sql = match tx.backend() {
        Backend::Sqlite => SQLITE_LOCK_USABLE_EPOCH,
        Backend::Postgres => POSTGRES_LOCK_USABLE_EPOCH,
    };
    let epoch: Option<i64> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(lock_sql)
            .bind(DbUuid(session.user_id))
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("reading a user's credential epoch")?;
    if epoch != Some(session.credential_epoch) {
        tx.rollback().await?;
        return Ok(None);
    }
    if let Some(update) = passkey
        && !crate::passkeys::use_in(&mut tx, session.user_id, update, session.now_ms).await?
    {
        tx.rollback().await?;
        return Ok(None);
    }
    with_tx!(&mut tx, conn => {
        sqlx::query(INSERT_SESSION)
            .bind(DbUuid(session.id))
            .bind(DbUuid(session.user_id))
            .bind(session.now_ms)
            .bind(session.expires_at_ms)
            .bind(&session.ip_address)
            .bind(&session.user_agent)
            .bind(session.credential_epoch)
            .bind(passkey.map(|p| DbUuid(p.id)))
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("inserting a session")?;
    insert_refresh_token(
        &mut tx,
        session.id,
        refresh,
        session.now_ms,
        session.expires_at_ms,
    )
    .await?;
    if let Some(key) = clear_lockout_key {
        crate::lockout::succeeded_in(&mut tx, key, session.now_ms).await?;
    }
    crate::audit::append(&mut tx, audit, session.now_ms).await?;
    tx.commit().await?;
    Ok(Some(Session {
        id: session.id,
        user_id: session.user_id,
        created_at_ms: session.now_ms,
        last_used_at_ms: session.now_ms,
        expires_at_ms: session.expires_at_ms,
        ip_address: session.ip_address.clone(),
        user_agent: session.user_agent.clone(),
    }))
}

/// Stores `token` for `session_id`, its expiry capped at `session_expires_at_ms`, and
/// returns that expiry.
async fn insert_refresh_token(
    tx: &mut Tx,
    session_id: Uuid,
    token: &NewRefreshToken,
    now_ms: i64,
    session_expires_at_ms: i64,
) -> Result<i64> {
    let expires_at_ms = token.expires_at_ms.min(session_expires_at_ms);
    with_tx!(tx, conn => {
        sqlx::query(INSERT_REFRESH_TOKEN)
            .bind(DbUuid(token.id))
            .bind(DbUuid(session_id))
            .bind(&token.token_hash)
            .bind(now_ms)
            .bind(expires_at_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("inserting a refresh token")?;
    Ok(expires_at_ms)
}

// The winner test: changes the row for exactly one of any number of concurrent callers.
const CLAIM_REFRESH_TOKEN: &str = "UPDATE refresh_tokens SET used_at_ms = $2 \
     WHERE token_hash = $1 AND used_at_ms IS NULL AND expires_at_ms > $2 \
     RETURNING session_id";

// Checks the session is live (its user usable, at the session's credential epoch) and
// records the use, in one statement: on PostgreSQL the row lock it takes means a
// concurrent revocation either commits first (and this matches nothing) or waits for this
// transaction; a session left at an older epoch is dead whatever the order.
const TOUCH_LIVE_SESSION: &str = "UPDATE sessions SET last_used_at_ms = $2 \
     WHERE id = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2 \
       AND EXISTS (SELECT 1 FROM users u WHERE u.id = sessions.user_id \
                   AND u.status = 'active' AND u.deleted_at_ms IS NULL \
                   AND u.credential_epoch = sessions.credential_epoch) \
     RETURNING id, user_id, created_at_ms, last_used_at_ms, expires_at_ms, ip_address, \
               user_agent";

const SELECT_USED_REFRESH_TOKEN: &str = "SELECT session_id FROM refresh_tokens \
     WHERE token_hash = $1 AND used_at_ms IS NOT NULL";

const REVOKE_SESSION_BY_ID: &str = "UPDATE sessions SET revoked_at_ms = $2, revoked_reason = $3 \
     WHERE id = $1 AND revoked_at_ms IS NULL RETURNING user_id";

/// Exchanges the refresh token whose hash is `presented_hash` for `next` (RFC 9700
/// §4.14.2), atomically: of concurrent calls with one token exactly one gets `Rotated`.
///
/// - Unused, unexpired token of a live session of a usable user: the token becomes used,
///   `next` is stored with `expires_at_ms = min(next.expires_at_ms, session end)`, the
///   session's `last_used_at_ms` becomes `now_ms` → `Rotated`.
/// - Already used: its session is revoked (reason `refresh_reuse`, which ends every token
///   of the family) and `reuse_audit` appended with the session's user as actor and the
///   session as target → `Reused`; `Invalid` if the session was already revoked (nothing
///   changes, nothing is appended).
/// - Unknown, expired, or its session not live: nothing changes → `Invalid`.
pub async fn rotate(
    db: &Db,
    presented_hash: &str,
    next: &NewRefreshToken,
    now_ms: i64,
    reuse_audit: &NewAuditEvent,
) -> Result<Rotation> {
    let mut tx = db.begin().await?;
    let claimed: Option<DbUuid> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(CLAIM_REFRESH_TOKEN)
            .bind(presented_hash)
            .bind(now_ms)
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("claiming a refresh token")?;

    if let Some(DbUuid(session_id)) = claimed {
        let touched: Option<SessionRow> = with_tx!(&mut tx, conn => {
            sqlx::query_as(TOUCH_LIVE_SESSION)
                .bind(DbUuid(session_id))
                .bind(now_ms)
                .fetch_optional(&mut *conn)
                .await
        })
        .db_context("touching a session")?;
        let Some(row) = touched else {
            // A valid token of a dead session: leave the token as it was.
            tx.rollback().await?;
            return Ok(Rotation::Invalid);
        };
        let session = Session::from(row);
        let refresh_expires_at_ms =
            insert_refresh_token(&mut tx, session_id, next, now_ms, session.expires_at_ms).await?;
        tx.commit().await?;
        return Ok(Rotation::Rotated {
            session,
            refresh_expires_at_ms,
        });
    }

    // Lost, or never valid. Under READ COMMITTED this statement's snapshot is taken after
    // the claim returned, which (if the claim waited on a winner) is after the winner
    // committed: a token used by a concurrent winner reads as used here.
    let used_by: Option<DbUuid> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(SELECT_USED_REFRESH_TOKEN)
            .bind(presented_hash)
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("looking up a refresh token")?;
    let Some(DbUuid(session_id)) = used_by else {
        tx.rollback().await?;
        return Ok(Rotation::Invalid);
    };
    let revoked_user: Option<DbUuid> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(REVOKE_SESSION_BY_ID)
            .bind(DbUuid(session_id))
            .bind(now_ms)
            .bind(REFRESH_REUSE)
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("revoking a session on refresh reuse")?;
    let Some(DbUuid(user_id)) = revoked_user else {
        tx.rollback().await?;
        return Ok(Rotation::Invalid);
    };
    let event = reuse_audit
        .clone()
        .with_actor(user_id)
        .with_target("session", session_id.to_string());
    crate::audit::append(&mut tx, &event, now_ms).await?;
    tx.commit().await?;
    Ok(Rotation::Reused {
        session_id,
        user_id,
    })
}

const SELECT_LIVE_BY_REFRESH: &str = "SELECT s.id, s.user_id, s.created_at_ms, \
     s.last_used_at_ms, s.expires_at_ms, s.ip_address, s.user_agent \
     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
     JOIN users u ON u.id = s.user_id \
     WHERE t.token_hash = $1 AND t.used_at_ms IS NULL AND t.expires_at_ms > $2 \
       AND s.revoked_at_ms IS NULL AND s.expires_at_ms > $2 \
       AND u.status = 'active' AND u.deleted_at_ms IS NULL \
       AND u.credential_epoch = s.credential_epoch";

/// The live session of the unused, unexpired refresh token whose hash is `token_hash`
/// (logout by cookie); `None` otherwise. Reads only: a used token is not reuse here.
pub async fn find_live_by_refresh(
    db: &Db,
    token_hash: &str,
    now_ms: i64,
) -> Result<Option<Session>> {
    let row: Option<SessionRow> = with_pool!(db, pool => {
        sqlx::query_as(SELECT_LIVE_BY_REFRESH)
            .bind(token_hash)
            .bind(now_ms)
            .fetch_optional(pool)
            .await
    })
    .db_context("finding a session by refresh token")?;
    Ok(row.map(Session::from))
}

const REVOKE_OWN_SESSION: &str = "UPDATE sessions SET revoked_at_ms = $3, revoked_reason = $4 \
     WHERE id = $1 AND user_id = $2 AND revoked_at_ms IS NULL AND expires_at_ms > $3";

/// Revokes `session_id` if it is live and belongs to `user_id`, appending `audit` (when
/// given) in the same transaction. `false`, with nothing written, when there is no such
/// session: another user's session is indistinguishable from a missing one.
pub async fn revoke(
    db: &Db,
    session_id: Uuid,
    user_id: Uuid,
    reason: &str,
    now_ms: i64,
    audit: Option<&NewAuditEvent>,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let revoked = with_tx!(&mut tx, conn => {
        sqlx::query(REVOKE_OWN_SESSION)
            .bind(DbUuid(session_id))
            .bind(DbUuid(user_id))
            .bind(now_ms)
            .bind(reason)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("revoking a session")?;
    if revoked == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    if let Some(event) = audit {
        crate::audit::append(&mut tx, event, now_ms).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Revokes every live session of `user_id` except `except`, through `revoke_all_in` (so
/// the user's credential epoch moves on, and logins in flight cannot finish), appending
/// `audit` (when given) in the same transaction if at least one was revoked. Returns the
/// revoked ids, oldest first.
pub async fn revoke_all(
    db: &Db,
    user_id: Uuid,
    except: Option<Uuid>,
    reason: &str,
    now_ms: i64,
    audit: Option<&NewAuditEvent>,
) -> Result<Vec<Uuid>> {
    let mut tx = db.begin().await?;
    let revoked = revoke_all_in(&mut tx, user_id, except, reason, now_ms).await?;
    if !revoked.is_empty()
        && let Some(event) = audit
    {
        crate::audit::append(&mut tx, event, now_ms).await?;
    }
    tx.commit().await?;
    Ok(revoked)
}

const BUMP_CREDENTIAL_EPOCH: &str = "UPDATE users SET credential_epoch = credential_epoch + 1 \
     WHERE id = $1 RETURNING credential_epoch";

// sqlx sends each parameter's type, so PostgreSQL needs no cast for `$2 IS NULL`.
const REVOKE_USER_SESSIONS: &str = "UPDATE sessions SET revoked_at_ms = $3, revoked_reason = $4 \
     WHERE user_id = $1 AND ($2 IS NULL OR id <> $2) \
       AND revoked_at_ms IS NULL AND expires_at_ms > $3 \
     RETURNING id";

// Only a session that was live at the old epoch is carried over to the new one.
const CARRY_SESSION_OVER: &str = "UPDATE sessions SET credential_epoch = $3 \
     WHERE id = $1 AND user_id = $2 AND credential_epoch = $3 - 1 \
       AND revoked_at_ms IS NULL AND expires_at_ms > $4";

/// Ends every session of `user_id` but `except`, inside the caller's transaction, without
/// an audit event: first bumps the user's `credential_epoch` (on PostgreSQL this row lock
/// orders the change against [`create`], which locks the same row), which kills every
/// session and MFA challenge made at the old epoch, including those of logins still in
/// flight; then marks the live sessions revoked with `reason`; then moves `except`, if it
/// was live at the old epoch, to the new one. Every credential change (password change and
/// reset, MFA enable and disable, disable, delete, logout-all) ends sessions through here.
/// Returns the revoked ids, oldest first.
pub(crate) async fn revoke_all_in(
    tx: &mut Tx,
    user_id: Uuid,
    except: Option<Uuid>,
    reason: &str,
    now_ms: i64,
) -> Result<Vec<Uuid>> {
    let epoch: Option<i64> = with_tx!(tx, conn => {
        sqlx::query_scalar(BUMP_CREDENTIAL_EPOCH)
            .bind(DbUuid(user_id))
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("bumping a credential epoch")?;
    let ids: Vec<DbUuid> = with_tx!(tx, conn => {
        sqlx::query_scalar(REVOKE_USER_SESSIONS)
            .bind(DbUuid(user_id))
            .bind(except.map(DbUuid))
            .bind(now_ms)
            .bind(reason)
            .fetch_all(&mut *conn)
            .await
    })
    .db_context("revoking the sessions of a user")?;
    if let (Some(kept), Some(epoch)) = (except, epoch) {
        with_tx!(tx, conn => {
            sqlx::query(CARRY_SESSION_OVER)
                .bind(DbUuid(kept))
                .bind(DbUuid(user_id))
                .bind(epoch)
                .bind(now_ms)
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })
        .db_context("keeping a session")?;
    }
    // RETURNING has no order; UUIDv7 ids sort by creation.
    let mut ids: Vec<Uuid> = ids.into_iter().map(Uuid::from).collect();
    ids.sort_unstable();
    Ok(ids)
}

const SELECT_LIVE_SESSIONS: &str = "SELECT id, user_id, created_at_ms, last_used_at_ms, \
     expires_at_ms, ip_address, user_agent FROM sessions \
     WHERE user_id = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2 \
     ORDER BY created_at_ms DESC, id DESC";

/// The live sessions of `user_id`, newest first.
pub async fn list_live(db: &Db, user_id: Uuid, now_ms: i64) -> Result<Vec<Session>> {
    let rows: Vec<SessionRow> = with_pool!(db, pool => {
        sqlx::query_as(SELECT_LIVE_SESSIONS)
            .bind(DbUuid(user_id))
            .bind(now_ms)
            .fetch_all(pool)
            .await
    })
    .db_context("listing sessions")?;
    Ok(rows.into_iter().map(Session::from).collect())
}

const SELECT_LIVE_USER: &str = "SELECT s.user_id FROM sessions s JOIN users u ON u.id = s.user_id \
     WHERE s.id = $1 AND s.revoked_at_ms IS NULL AND s.expires_at_ms > $2 \
       AND u.status = 'active' AND u.deleted_at_ms IS NULL \
       AND u.credential_epoch = s.credential_epoch";

/// The user of `session_id` while the session is live (not revoked, not expired, its user
/// active, not deleted and at the session's credential epoch: what an access token's `sid`
/// must still satisfy); `None` otherwise.
pub async fn live_user(db: &Db, session_id: Uuid, now_ms: i64) -> Result<Option<Uuid>> {
    let user: Option<DbUuid> = with_pool!(db, pool => {
        sqlx::query_scalar(SELECT_LIVE_USER)
            .bind(DbUuid(session_id))
            .bind(now_ms)
            .fetch_optional(pool)
            .await
    })
    .db_context("checking a session")?;
    Ok(user.map(Uuid::from))
}
