//! Password-reset tokens (contract §4, Recovery): the `password_reset` purpose of the one
//! mailed-token mechanism, `store::tokens` (table `user_tokens`).
//!
//! Tokens are stored only as the caller's hash. Invariants (those of `tokens`): a user has
//! at most one usable token, the newest ([`create`] marks every earlier unused one used,
//! as superseded); a token works once, until its `expires_at_ms`, and only while its user
//! is active and not deleted; setting a password by any route (a completed reset,
//! `users::change_password`) marks the user's outstanding tokens used in the same
//! transaction, and so does a confirmed email change (every purpose). [`confirm`] claims
//! the token with one conditional `UPDATE … WHERE used_at_ms IS NULL`, so of concurrent
//! confirms of one token exactly one wins, and commits the new
//! password, the end of every session, the cleared lockout and the audit event (appended
//! last) together. A reset never touches MFA.

use rampart_core::Result;
use rampart_core::audit::NewAuditEvent;
use uuid::Uuid;

use crate::error::DbResultExt;
use crate::sessions;
use crate::tokens::{self, NewToken, Purpose, ValidToken};
use crate::types::DbUuid;
use crate::{Db, Tx};

/// `revoked_reason` of the sessions ended by a completed password reset.
pub const PASSWORD_RESET: &str = "password_reset";

/// Marks every unused reset token of `user_id` used, inside the caller's transaction (a
/// new token supersedes them, or the password was set another way).
pub(crate) async fn invalidate_all_in(tx: &mut Tx, user_id: Uuid, now_ms: i64) -> Result<()> {
    tokens::invalidate_in(tx, user_id, Some(Purpose::PasswordReset), now_ms).await
}

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
    let token = NewToken {
        id,
        user_id,
        purpose: Purpose::PasswordReset,
        token_hash,
        email: None,
        session_id: None,
        now_ms,
        expires_at_ms,
    };
    tokens::create(db, &token, Some(audit)).await
}

/// The user of the token whose hash is `token_hash` while [`confirm`] would accept it
/// (unused, `expires_at_ms > now_ms`, user active and not deleted); `None` otherwise.
/// Reads only: the caller checks the new password before using the token up.
pub async fn peek(db: &Db, token_hash: &str, now_ms: i64) -> Result<Option<Uuid>> {
    Ok(tokens::peek(db, Purpose::PasswordReset, token_hash, now_ms)
        .await?
        .map(|token| token.user_id))
}

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
    let claimed = tokens::claim_in(&mut tx, Purpose::PasswordReset, token_hash, now_ms).await?;
    let Some(ValidToken { user_id, .. }) = claimed else {
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
