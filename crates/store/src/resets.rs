//! The `password_resets` table: single-use password-reset tokens (contract §4, Recovery).
//!
//! Tokens are stored only as the caller's hash. Invariants: a user has at most one usable
//! token, the newest ([`create`] marks every earlier unused one used, as superseded); a
//! token works once, until its `expires_at_ms`, and only while its user is active and not
//! deleted; setting a password by any route (a completed reset, `users::change_password`)
//! marks the user's outstanding tokens used in the same transaction. [`confirm`] decides
//! with one conditional `UPDATE … WHERE used_at_ms IS NULL`, so of concurrent confirms of
//! one token exactly one wins (on PostgreSQL the losers wait on the row lock and re-check
//! against the committed row; SQLite runs writers one at a time), and commits the new
//! password, the end of every session, the cleared lockout and the audit event (appended
//! last) together. A reset never touches MFA.

use rampart_core::Result;
use rampart_core::audit::NewAuditEvent;
use uuid::Uuid;

use crate::error::DbResultExt;
use crate::sessions;
use crate::types::DbUuid;
use crate::{Db, Tx};

/// `revoked_reason` of the sessions ended by a completed password reset.
pub const PASSWORD_RESET: &str = "password_reset";

const INVALIDATE_USER_TOKENS: &str = "UPDATE password_resets SET used_at_ms = $2 \
     WHERE user_id = $1 AND used_at_ms IS NULL";

/// Marks every unused token of `user_id` used, inside the caller's transaction (a new
/// token supersedes them, or the password was set another way).
pub(crate) async fn invalidate_all_in(tx: &mut Tx, user_id: Uuid, now_ms: i64) -> Result<()> {
    with_tx!(tx, conn => {
        sqlx::query(INVALIDATE_USER_TOKENS)
            .bind(DbUuid(user_id))
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("invalidating password-reset tokens")?;
    Ok(())
}

const INSERT_RESET: &str = "INSERT INTO password_resets \
     (id, user_id, token_hash, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5)";

/// Stores a token for `user_id` whose hash is `token_hash`, valid until `expires_at_ms`,
/// after marking every earlier unused token of the user used (only the newest works), and
/// appends `audit`, in one transaction.
pub async fn create(
    db: &Db,
    id: Uuid,
    user_id: Uuid,
    token_hash: &str,
    now_ms: i64,
    expires_at_ms: i64,
    audit: &NewAuditEvent,
) -> Result<()> {
    let mut tx = db.begin().await?;
    invalidate_all_in(&mut tx, user_id, now_ms).await?;
    with_tx!(&mut tx, conn => {
        sqlx::query(INSERT_RESET)
            .bind(DbUuid(id))
            .bind(DbUuid(user_id))
            .bind(token_hash)
            .bind(now_ms)
            .bind(expires_at_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("storing a password-reset token")?;
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(())
}

const SELECT_VALID_TOKEN_USER: &str = "SELECT r.user_id FROM password_resets r \
     JOIN users u ON u.id = r.user_id \
     WHERE r.token_hash = $1 AND r.used_at_ms IS NULL AND r.expires_at_ms > $2 \
       AND u.status = 'active' AND u.deleted_at_ms IS NULL";

/// The user of the token whose hash is `token_hash` while [`confirm`] would accept it
/// (unused, `expires_at_ms > now_ms`, user active and not deleted); `None` otherwise.
/// Reads only: the caller checks the new password before using the token up.
pub async fn peek(db: &Db, token_hash: &str, now_ms: i64) -> Result<Option<Uuid>> {
    let user: Option<DbUuid> = with_pool!(db, pool => {
        sqlx::query_scalar(SELECT_VALID_TOKEN_USER)
            .bind(token_hash)
            .bind(now_ms)
            .fetch_optional(pool)
            .await
    })
    .db_context("reading a password-reset token")?;
    Ok(user.map(Uuid::from))
}

// The winner test: changes the row for exactly one of any number of concurrent callers.
const CLAIM_TOKEN: &str = "UPDATE password_resets SET used_at_ms = $2 \
     WHERE token_hash = $1 AND used_at_ms IS NULL AND expires_at_ms > $2 \
       AND EXISTS (SELECT 1 FROM users u WHERE u.id = password_resets.user_id \
                   AND u.status = 'active' AND u.deleted_at_ms IS NULL) \
     RETURNING user_id";

const SET_PASSWORD_HASH: &str = "UPDATE users SET password_hash = $2, updated_at_ms = $3 \
     WHERE id = $1 AND deleted_at_ms IS NULL RETURNING email_normalized";

// The lockout keys of one email: the email itself and `email|<ip>`. A prefix test by
// `substr` rather than LIKE, so that `%` and `_` in an address need no escaping. Another
// address's keys share the prefix only if that address starts with this one plus `|`.
const CLEAR_EMAIL_LOCKOUTS: &str = "DELETE FROM lockouts \
     WHERE key = $1 OR substr(key, 1, length($1) + 1) = $1 || '|'";

/// Completes a reset with the token whose hash is `token_hash`, in one transaction: uses
/// the token up (only if unused, `expires_at_ms > now_ms` and its user active and not
/// deleted), sets `new_password_hash`, marks the user's other unused tokens used, revokes
/// every live session of the user (reason `password_reset`), clears the lockout of the
/// user's email (the key `email` and every `email|…` key) and appends `audit` with the
/// user as actor and target. Returns the user and the revoked session ids (oldest first);
/// `None`, with nothing written, when the token is not valid. MFA stays as it was.
pub async fn confirm(
    db: &Db,
    token_hash: &str,
    new_password_hash: &str,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<Option<(Uuid, Vec<Uuid>)>> {
    let mut tx = db.begin().await?;
    let claimed: Option<DbUuid> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(CLAIM_TOKEN)
            .bind(token_hash)
            .bind(now_ms)
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("using a password-reset token")?;
    let Some(DbUuid(user_id)) = claimed else {
        tx.rollback().await?;
        return Ok(None);
    };
    let email: Option<String> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(SET_PASSWORD_HASH)
            .bind(DbUuid(user_id))
            .bind(new_password_hash)
            .bind(now_ms)
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("resetting a password")?;
    let Some(email) = email else {
        // Unreachable while the claim checks the user; never commit a half reset.
        tx.rollback().await?;
        return Ok(None);
    };
    invalidate_all_in(&mut tx, user_id, now_ms).await?;
    let revoked = sessions::revoke_all_in(&mut tx, user_id, None, PASSWORD_RESET, now_ms).await?;
    with_tx!(&mut tx, conn => {
        sqlx::query(CLEAR_EMAIL_LOCKOUTS)
            .bind(&email)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("clearing a lockout")?;
    let event = audit
        .clone()
        .with_actor(user_id)
        .with_target("user", user_id.to_string());
    crate::audit::append(&mut tx, &event, now_ms).await?;
    tx.commit().await?;
    Ok(Some((user_id, revoked)))
}
