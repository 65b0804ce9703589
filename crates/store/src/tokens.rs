//! The `user_tokens` table: the one mechanism behind every single-use link Rampart mails
//! (contract §4 Recovery, §11): password reset, email verification, email change.
//!
//! Invariants, the same for every [`Purpose`]: a token is stored only as the caller's
//! digest (`rampart_core::tokens::hash_token`); a user has at most one usable token per
//! purpose, the newest (`insert_in` marks every earlier unused one of that purpose used,
//! as superseded); a token works once, until its `expires_at_ms`, and only while its user
//! is active and not deleted. `claim_in` decides with one conditional
//! `UPDATE … WHERE used_at_ms IS NULL`, so of concurrent claims of one token exactly one
//! wins (on PostgreSQL the losers wait on the row lock and re-check against the committed
//! row; SQLite runs writers one at a time). What a claimed token does (a new password, a
//! verified or changed email) is written by the caller in the claim's transaction, so a
//! refused change leaves the token unused.

use rampart_core::Result;
use rampart_core::audit::NewAuditEvent;
use uuid::Uuid;

use crate::error::DbResultExt;
use crate::types::DbUuid;
use crate::{Db, Tx};

/// What a token is for; tokens of one purpose never work for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `/auth/password-reset/confirm` (contract §4).
    PasswordReset,
    /// `/auth/email/verify/confirm`: proves the address it was sent to (§11).
    EmailVerify,
    /// `/auth/email/change/confirm`: proves the new address of an email change (§11).
    EmailChange,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::PasswordReset => "password_reset",
            Purpose::EmailVerify => "email_verify",
            Purpose::EmailChange => "email_change",
        }
    }
}

/// A token about to be stored.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub purpose: Purpose,
    /// The digest of the token; the token itself is never stored.
    pub token_hash: &'a str,
    /// The address the token is about (the verified one, or the new one of a change).
    pub email: Option<&'a str>,
    /// The session that asked (an email change keeps it).
    pub session_id: Option<Uuid>,
    pub now_ms: i64,
    pub expires_at_ms: i64,
}

/// A token [`peek`] or `claim_in` accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidToken {
    pub user_id: Uuid,
    pub email: Option<String>,
    pub session_id: Option<Uuid>,
}

#[derive(sqlx::FromRow)]
struct ValidRow {
    user_id: DbUuid,
    email: Option<String>,
    session_id: Option<DbUuid>,
}

impl From<ValidRow> for ValidToken {
    fn from(row: ValidRow) -> Self {
        ValidToken {
            user_id: row.user_id.into(),
            email: row.email,
            session_id: row.session_id.map(Uuid::from),
        }
    }
}

// `$3 IS NULL`: every purpose.
const INVALIDATE_USER_TOKENS: &str = "UPDATE user_tokens SET used_at_ms = $2 \
     WHERE user_id = $1 AND used_at_ms IS NULL AND ($3 IS NULL OR purpose = $3)";

/// Marks every unused token of `user_id` used — of `purpose`, or of every purpose when
/// `None` — inside the caller's transaction (a newer token supersedes them, or the
/// credential or address they were about changed).
pub(crate) async fn invalidate_in(
    tx: &mut Tx,
    user_id: Uuid,
    purpose: Option<Purpose>,
    now_ms: i64,
) -> Result<()> {
    with_tx!(tx, conn => {
        sqlx::query(INVALIDATE_USER_TOKENS)
            .bind(DbUuid(user_id))
            .bind(now_ms)
            .bind(purpose.map(Purpose::as_str))
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("invalidating mailed tokens")?;
    Ok(())
}

const INSERT_TOKEN: &str = "INSERT INTO user_tokens \
     (id, user_id, purpose, token_hash, email, session_id, created_at_ms, expires_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Stores `token` inside the caller's transaction, after marking every earlier unused
/// token of the same user and purpose used (only the newest works).
pub(crate) async fn insert_in(tx: &mut Tx, token: &NewToken<'_>) -> Result<()> {
    invalidate_in(tx, token.user_id, Some(token.purpose), token.now_ms).await?;
    with_tx!(tx, conn => {
        sqlx::query(INSERT_TOKEN)
            .bind(DbUuid(token.id))
            .bind(DbUuid(token.user_id))
            .bind(token.purpose.as_str())
            .bind(token.token_hash)
            .bind(token.email)
            .bind(token.session_id.map(DbUuid))
            .bind(token.now_ms)
            .bind(token.expires_at_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("storing a mailed token")?;
    Ok(())
}

/// `insert_in` in its own transaction, appending `audit` when given.
pub async fn create(db: &Db, token: &NewToken<'_>, audit: Option<&NewAuditEvent>) -> Result<()> {
    let mut tx = db.begin().await?;
    insert_in(&mut tx, token).await?;
    if let Some(event) = audit {
        crate::audit::append(&mut tx, event, token.now_ms).await?;
    }
    tx.commit().await?;
    Ok(())
}

const SELECT_VALID_TOKEN: &str = "SELECT t.user_id, t.email, t.session_id FROM user_tokens t \
     JOIN users u ON u.id = t.user_id \
     WHERE t.token_hash = $1 AND t.purpose = $3 AND t.used_at_ms IS NULL \
       AND t.expires_at_ms > $2 AND u.status = 'active' AND u.deleted_at_ms IS NULL";

/// The token of `purpose` whose digest is `token_hash` while `claim_in` would accept it
/// (unused, `expires_at_ms > now_ms`, user active and not deleted); `None` otherwise.
/// Reads only: the caller may check more before using the token up.
pub async fn peek(
    db: &Db,
    purpose: Purpose,
    token_hash: &str,
    now_ms: i64,
) -> Result<Option<ValidToken>> {
    let row: Option<ValidRow> = with_pool!(db, pool => {
        sqlx::query_as(SELECT_VALID_TOKEN)
            .bind(token_hash)
            .bind(now_ms)
            .bind(purpose.as_str())
            .fetch_optional(pool)
            .await
    })
    .db_context("reading a mailed token")?;
    Ok(row.map(ValidToken::from))
}

// The winner test: changes the row for exactly one of any number of concurrent callers.
const CLAIM_TOKEN: &str = "UPDATE user_tokens SET used_at_ms = $2 \
     WHERE token_hash = $1 AND purpose = $3 AND used_at_ms IS NULL AND expires_at_ms > $2 \
       AND EXISTS (SELECT 1 FROM users u WHERE u.id = user_tokens.user_id \
                   AND u.status = 'active' AND u.deleted_at_ms IS NULL) \
     RETURNING user_id, email, session_id";

/// Uses up the token of `purpose` whose digest is `token_hash` inside the caller's
/// transaction, only if unused, `expires_at_ms > now_ms` and its user active and not
/// deleted; `None`, with nothing written, otherwise. The caller commits (or rolls back,
/// and the token stays unused) together with what the token does.
pub(crate) async fn claim_in(
    tx: &mut Tx,
    purpose: Purpose,
    token_hash: &str,
    now_ms: i64,
) -> Result<Option<ValidToken>> {
    let row: Option<ValidRow> = with_tx!(tx, conn => {
        sqlx::query_as(CLAIM_TOKEN)
            .bind(token_hash)
            .bind(now_ms)
            .bind(purpose.as_str())
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("using a mailed token")?;
    Ok(row.map(ValidToken::from))
}
