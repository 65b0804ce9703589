//! Account lifecycle (contract §11): email verification, email change and what the export
//! reads. Tokens are `store::tokens` (purposes `email_verify`, `email_change`); deletion is
//! `users::soft_delete` (its last-`roles:assign`-holder guard under the RBAC lock).
//!
//! Invariants: a verification token verifies only the address it was sent to, and only
//! while the account still has it; a confirmed email change sets the new address and
//! `email_verified`, marks every unused token of the user used (every purpose: links
//! mailed to the old address must not outlive it), ends every session but the one that
//! asked for the change (the credential epoch moves on, `sessions::revoke_all_in`) and
//! appends its audit event, in one transaction; the unique normalised email decides a race
//! with a registration or another change of the same address (`Conflict`, nothing written,
//! the token stays unused).

use rampart_core::audit::NewAuditEvent;
use rampart_core::users::{mask_email, normalize_email};
use rampart_core::{Error, Result};
use uuid::Uuid;

use crate::Db;
use crate::error::DbResultExt;
use crate::sessions;
use crate::tokens::{self, Purpose, ValidToken};
use crate::types::DbUuid;

/// `revoked_reason` of the sessions ended by a confirmed email change.
pub const EMAIL_CHANGED: &str = "email_changed";

const VERIFY_EMAIL: &str = "UPDATE users SET email_verified = TRUE, updated_at_ms = $3 \
     WHERE id = $1 AND email_normalized = $2 AND status = 'active' AND deleted_at_ms IS NULL";

/// Uses up the verification token whose digest is `token_hash` and marks its user's email
/// verified, appending `audit` (actor and target: the user), in one transaction. `None`,
/// with nothing written, when the token is not valid or the account no longer has the
/// address the token was sent to.
pub async fn verify_email(
    db: &Db,
    token_hash: &str,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<Option<Uuid>> {
    let mut tx = db.begin().await?;
    let Some(ValidToken {
        user_id,
        email: Some(email),
        ..
    }) = tokens::claim_in(&mut tx, Purpose::EmailVerify, token_hash, now_ms).await?
    else {
        tx.rollback().await?;
        return Ok(None);
    };
    let updated = with_tx!(&mut tx, conn => {
        sqlx::query(VERIFY_EMAIL)
            .bind(DbUuid(user_id))
            .bind(normalize_email(&email))
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("verifying an email")?;
    if updated == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    let event = audit
        .clone()
        .with_actor(user_id)
        .with_target("user", user_id.to_string());
    crate::audit::append(&mut tx, &event, now_ms).await?;
    tx.commit().await?;
    Ok(Some(user_id))
}

/// What [`confirm_email_change`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailChange {
    /// The token is bad, used, superseded or expired, or its user is gone: nothing written.
    Invalid,
    /// The address changed; the ids of the sessions it ended, oldest first.
    Changed { user_id: Uuid, revoked: Vec<Uuid> },
}

// Returns the old address for the audit details (read under the row's write lock).
const SELECT_EMAIL: &str = "SELECT email FROM users WHERE id = $1";
const CHANGE_EMAIL: &str = "UPDATE users SET email = $2, email_normalized = $3, \
     email_verified = TRUE, updated_at_ms = $4 \
     WHERE id = $1 AND status = 'active' AND deleted_at_ms IS NULL";

/// Confirms the email change whose token digest is `token_hash`, in one transaction: uses
/// the token up, sets the new address (verified), marks every other unused token of the
/// user used, ends every session of the user but the one that asked for the change (if it
/// is still live) and appends `audit` (actor and target: the user; details: both
/// addresses masked, never in full). `Conflict("email already registered")`, with nothing
/// written and the token unused, when another account holds the address by now.
pub async fn confirm_email_change(
    db: &Db,
    token_hash: &str,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<EmailChange> {
    let mut tx = db.begin().await?;
    let Some(ValidToken {
        user_id,
        email: Some(new_email),
        session_id,
    }) = tokens::claim_in(&mut tx, Purpose::EmailChange, token_hash, now_ms).await?
    else {
        tx.rollback().await?;
        return Ok(EmailChange::Invalid);
    };
    let old_email: Option<String> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(SELECT_EMAIL)
            .bind(DbUuid(user_id))
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("reading an email")?;
    let changed = with_tx!(&mut tx, conn => {
        sqlx::query(CHANGE_EMAIL)
            .bind(DbUuid(user_id))
            .bind(&new_email)
            .bind(normalize_email(&new_email))
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("changing an email")
    .map_err(|err| match err {
        Error::Conflict(_) => Error::Conflict("email already registered".to_owned()),
        other => other,
    });
    let changed = match changed {
        Ok(n) => n,
        Err(e) => {
            // The transaction is unusable on PostgreSQL after the violation: roll back,
            // so the token stays unused.
            tx.rollback().await?;
            return Err(e);
        }
    };
    let Some(old_email) = old_email.filter(|_| changed == 1) else {
        tx.rollback().await?;
        return Ok(EmailChange::Invalid);
    };
    tokens::invalidate_in(&mut tx, user_id, None, now_ms).await?;
    let revoked =
        sessions::revoke_all_in(&mut tx, user_id, session_id, EMAIL_CHANGED, now_ms).await?;
    let event = audit
        .clone()
        .with_actor(user_id)
        .with_target("user", user_id.to_string())
        .with_details(serde_json::json!({
            "from": mask_email(&old_email),
            "to": mask_email(&new_email),
        }));
    crate::audit::append(&mut tx, &event, now_ms).await?;
    tx.commit().await?;
    Ok(EmailChange::Changed { user_id, revoked })
}

const SELECT_WINDOW_START: &str = "SELECT window_started_at_ms FROM lockouts WHERE key = $1";

/// When the fixed window of the counter `key` (`lockout::count`) started, if it has one:
/// what a per-user limit built on that counter needs for its `Retry-After`.
pub async fn window_started(db: &Db, key: &str) -> Result<Option<i64>> {
    let started: Option<i64> = with_pool!(db, pool => {
        sqlx::query_scalar(SELECT_WINDOW_START)
            .bind(key)
            .fetch_optional(pool)
            .await
    })
    .db_context("reading a counter")?;
    Ok(started)
}
