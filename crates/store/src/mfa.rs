//! The TOTP columns of `users` and the `recovery_codes` and `mfa_challenges` tables: a
//! user's second factor (RFC 6238 TOTP plus single-use recovery codes) and the login
//! challenge that asks for it (contract §4, MFA).
//!
//! The store never sees a TOTP secret: `totp_secret` and `totp_pending` hold the caller's
//! AEAD ciphertext, opaque here; recovery codes and challenge tokens are stored only as
//! the caller's hashes. Invariants: MFA is on (`mfa_enabled`) exactly when `totp_secret`
//! is set, and a user has recovery codes only while MFA is on; enabling and disabling
//! each commit in one transaction with the other sessions' revocation and the audit event
//! (appended last, after the row locks), and only at the credential epoch the caller's
//! password was checked under; so does an administrator's [`reset`], which also deletes
//! every login challenge of the user. A login challenge is live only while its user is at
//! the epoch of its password step. Every single-use decision is one conditional
//! `UPDATE` whose `WHERE` states the condition, so of any number of concurrent callers
//! exactly one changes the row: a TOTP step is accepted only if it is after
//! `totp_last_step` (RFC 6238 §5.2: no code is accepted twice), a recovery code or a
//! challenge only while `used_at_ms` is NULL. On PostgreSQL a loser waits on the winner's
//! row lock and re-checks the `WHERE` against the committed row (READ COMMITTED); SQLite
//! runs writers one at a time. A login's second step uses its code and its challenge up in
//! one transaction ([`complete_challenge`]), so a request that loses either spends neither.

use rampart_core::audit::NewAuditEvent;
use rampart_core::{Error, Result};
use uuid::Uuid;

use crate::error::DbResultExt;
use crate::sessions;
use crate::types::DbUuid;
use crate::{Db, Tx};

/// `revoked_reason` of the other sessions ended when their user enabled MFA.
pub const MFA_ENABLED: &str = "mfa_enabled";
/// `revoked_reason` of the other sessions ended when their user disabled MFA.
pub const MFA_DISABLED: &str = "mfa_disabled";

const SET_PENDING_SECRET: &str = "UPDATE users SET totp_pending = $2 \
     WHERE id = $1 AND NOT mfa_enabled AND deleted_at_ms IS NULL";

const SELECT_MFA_ENABLED: &str =
    "SELECT mfa_enabled FROM users WHERE id = $1 AND deleted_at_ms IS NULL";

/// Stores `sealed` (the caller's ciphertext of a new TOTP secret) as the user's pending
/// secret, replacing any earlier one, until [`enable`] moves it into place. Not audited
/// and `updated_at_ms` is left alone: nothing the user view shows changes (the instant is
/// not stored either: a pending secret has no lifetime of its own).
/// `Conflict("MFA is already enabled")` when MFA is on; `NotFound` for a missing or
/// deleted user.
pub async fn set_pending_secret(db: &Db, user_id: Uuid, sealed: &str, _now_ms: i64) -> Result<()> {
    let updated = with_pool!(db, pool => {
        sqlx::query(SET_PENDING_SECRET)
            .bind(DbUuid(user_id))
            .bind(sealed)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("storing a pending TOTP secret")?;
    if updated > 0 {
        return Ok(());
    }
    let enabled: Option<bool> = with_pool!(db, pool => {
        sqlx::query_scalar(SELECT_MFA_ENABLED)
            .bind(DbUuid(user_id))
            .fetch_optional(pool)
            .await
    })
    .db_context("reading a user's MFA state")?;
    Err(match enabled {
        Some(_) => Error::Conflict("MFA is already enabled".to_owned()),
        None => Error::NotFound,
    })
}

const SELECT_PENDING_SECRET: &str =
    "SELECT totp_pending FROM users WHERE id = $1 AND deleted_at_ms IS NULL";

/// The user's pending sealed secret (set by [`set_pending_secret`]), if any.
pub async fn pending_secret(db: &Db, user_id: Uuid) -> Result<Option<String>> {
    let pending: Option<Option<String>> = with_pool!(db, pool => {
        sqlx::query_scalar(SELECT_PENDING_SECRET)
            .bind(DbUuid(user_id))
            .fetch_optional(pool)
            .await
    })
    .db_context("reading a pending TOTP secret")?;
    Ok(pending.flatten())
}

// Compare-and-set on the pending secret the caller verified a code against, so a setup
// racing this enable cannot swap in a secret whose code was never shown to work.
// And on the credential epoch the password was checked under, so an enable that checked a
// password a concurrent change has replaced does not commit.
const ENABLE_MFA: &str = "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, \
     totp_last_step = $3, mfa_enabled = TRUE, updated_at_ms = $4 \
     WHERE id = $1 AND totp_pending = $2 AND NOT mfa_enabled AND deleted_at_ms IS NULL \
       AND credential_epoch = $5";

const SELECT_MFA_STATE: &str =
    "SELECT mfa_enabled, credential_epoch FROM users WHERE id = $1 AND deleted_at_ms IS NULL";

const DELETE_RECOVERY_CODES: &str = "DELETE FROM recovery_codes WHERE user_id = $1";

const INSERT_RECOVERY_CODE: &str =
    "INSERT INTO recovery_codes (id, user_id, code_hash) VALUES ($1, $2, $3)";

/// Turns MFA on, in one transaction: only while the user's pending secret still equals
/// `sealed_secret` (the one a code was just verified against), the credential epoch is
/// still `credential_epoch` (the one the password was checked under) and MFA is off, moves it to
/// `totp_secret`, records `accepted_step` as the last accepted step (the enabling code
/// cannot be replayed at login), replaces the recovery codes with `recovery_hashes`,
/// revokes every other live session (reason `mfa_enabled`; `keep_session` stays, at the new
/// epoch) and appends `audit`. Returns the revoked session ids, oldest first.
///
/// `Unauthenticated` when the epoch moved on (the caller's session has ended);
/// `Conflict("MFA is already enabled")`, or `Conflict("MFA setup is no longer pending")`
/// when the pending secret changed or is gone; `NotFound` for a missing or deleted user.
/// Nothing is written in any of these cases.
#[allow(clippy::too_many_arguments)]
pub async fn enable(
    db: &Db,
    user_id: Uuid,
    credential_epoch: i64,
    sealed_secret: &str,
    accepted_step: i64,
    recovery_hashes: &[String],
    keep_session: Uuid,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<Vec<Uuid>> {
    let mut tx = db.begin().await?;
    let updated = with_tx!(&mut tx, conn => {
        sqlx::query(ENABLE_MFA)
            .bind(DbUuid(user_id))
            .bind(sealed_secret)
            .bind(accepted_step)
            .bind(now_ms)
            .bind(credential_epoch)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("enabling MFA")?;
    if updated == 0 {
        let state: Option<(bool, i64)> = with_tx!(&mut tx, conn => {
            sqlx::query_as(SELECT_MFA_STATE)
                .bind(DbUuid(user_id))
                .fetch_optional(&mut *conn)
                .await
        })
        .db_context("reading a user's MFA state")?;
        tx.rollback().await?;
        return Err(match state {
            Some((_, epoch)) if epoch != credential_epoch => Error::Unauthenticated,
            Some((true, _)) => Error::Conflict("MFA is already enabled".to_owned()),
            Some((false, _)) => Error::Conflict("MFA setup is no longer pending".to_owned()),
            None => Error::NotFound,
        });
    }
    delete_recovery_codes_in(&mut tx, user_id).await?;
    for hash in recovery_hashes {
        with_tx!(&mut tx, conn => {
            sqlx::query(INSERT_RECOVERY_CODE)
                .bind(DbUuid(Uuid::now_v7()))
                .bind(DbUuid(user_id))
                .bind(hash)
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })
        .db_context("storing a recovery code")?;
    }
    let revoked =
        sessions::revoke_all_in(&mut tx, user_id, Some(keep_session), MFA_ENABLED, now_ms).await?;
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(revoked)
}

async fn delete_recovery_codes_in(tx: &mut Tx, user_id: Uuid) -> Result<()> {
    with_tx!(tx, conn => {
        sqlx::query(DELETE_RECOVERY_CODES)
            .bind(DbUuid(user_id))
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("deleting recovery codes")?;
    Ok(())
}

const DISABLE_MFA: &str = "UPDATE users SET totp_secret = NULL, totp_pending = NULL, \
     totp_last_step = NULL, mfa_enabled = FALSE, updated_at_ms = $2 \
     WHERE id = $1 AND mfa_enabled AND deleted_at_ms IS NULL AND credential_epoch = $3";

// A login waiting for its second factor cannot complete once there is none.
const END_USER_CHALLENGES: &str = "UPDATE mfa_challenges SET used_at_ms = $2 \
     WHERE user_id = $1 AND used_at_ms IS NULL";

/// Turns MFA off, in one transaction, only while the credential epoch is still
/// `credential_epoch` (the one the password was checked under): clears the secret, any
/// pending secret and the last step, deletes the recovery codes, ends the user's
/// outstanding login challenges, revokes every other live session (reason `mfa_disabled`;
/// `keep_session` stays, at the new epoch) and appends `audit`. Returns the revoked session
/// ids, oldest first. `Unauthenticated` when the epoch moved on, `Conflict("MFA is not
/// enabled")` when it is off (a concurrent disable won), `NotFound` for a missing or
/// deleted user; nothing is written in these cases.
pub async fn disable(
    db: &Db,
    user_id: Uuid,
    credential_epoch: i64,
    keep_session: Uuid,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<Vec<Uuid>> {
    let mut tx = db.begin().await?;
    let updated = with_tx!(&mut tx, conn => {
        sqlx::query(DISABLE_MFA)
            .bind(DbUuid(user_id))
            .bind(now_ms)
            .bind(credential_epoch)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("disabling MFA")?;
    if updated == 0 {
        let state: Option<(bool, i64)> = with_tx!(&mut tx, conn => {
            sqlx::query_as(SELECT_MFA_STATE)
                .bind(DbUuid(user_id))
                .fetch_optional(&mut *conn)
                .await
        })
        .db_context("reading a user's MFA state")?;
        tx.rollback().await?;
        return Err(match state {
            Some((_, epoch)) if epoch != credential_epoch => Error::Unauthenticated,
            Some(_) => Error::Conflict("MFA is not enabled".to_owned()),
            None => Error::NotFound,
        });
    }
    delete_recovery_codes_in(&mut tx, user_id).await?;
    with_tx!(&mut tx, conn => {
        sqlx::query(END_USER_CHALLENGES)
            .bind(DbUuid(user_id))
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("ending MFA challenges")?;
    let revoked =
        sessions::revoke_all_in(&mut tx, user_id, Some(keep_session), MFA_DISABLED, now_ms).await?;
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(revoked)
}

// Unlike DISABLE_MFA, also for a disabled user: the reset is an administrator's recovery.
const RESET_MFA: &str = "UPDATE users SET totp_secret = NULL, totp_pending = NULL, \
     totp_last_step = NULL, mfa_enabled = FALSE, updated_at_ms = $2 \
     WHERE id = $1 AND mfa_enabled AND deleted_at_ms IS NULL";

// Gone rather than marked used: an `mfaToken` of this user must never verify again.
const DELETE_USER_CHALLENGES: &str = "DELETE FROM mfa_challenges WHERE user_id = $1";

/// `revoked_reason` of the sessions ended by an administrator's MFA reset.
pub const MFA_RESET: &str = "mfa_reset";

/// What [`reset`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfaReset {
    /// MFA was on and is now off; these sessions were revoked (ids oldest first).
    Reset { ended: Vec<Uuid> },
    /// MFA was already off: nothing was written, no event appended.
    AlreadyOff,
}

/// An administrator's MFA reset (contract §5 `DELETE /users/{id}/mfa`), in one transaction
/// under the RBAC lock: `NotFound` for a missing or deleted user; `Forbidden` unless
/// `resetter` holds every permission the user's roles grant (anti-escalation, read after
/// the lock, as in [`crate::rbac`]); then, when MFA is on, clears the secret, any pending
/// secret and the last step, deletes the recovery codes and every login challenge of the
/// user (no `mfaToken` of theirs verifies again), revokes every live session (reason
/// `mfa_reset`) and appends `audit`. Idempotent: when MFA is already off nothing is
/// written and [`MfaReset::AlreadyOff`] comes back.
pub async fn reset(
    db: &Db,
    resetter: Uuid,
    user_id: Uuid,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<MfaReset> {
    let mut tx = db.begin().await?;
    crate::rbac::lock(&mut tx).await?;
    let enabled: Option<bool> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(SELECT_MFA_ENABLED)
            .bind(DbUuid(user_id))
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("reading a user's MFA state")?;
    if enabled.is_none() {
        return Err(Error::NotFound);
    }
    let held = crate::rbac::role_permissions_of_in(&mut tx, user_id).await?;
    crate::rbac::ensure_grantor_holds_in(&mut tx, Some(resetter), held.iter().map(String::as_str))
        .await?;
    let updated = with_tx!(&mut tx, conn => {
        sqlx::query(RESET_MFA)
            .bind(DbUuid(user_id))
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("resetting MFA")?;
    if updated == 0 {
        tx.rollback().await?;
        return Ok(MfaReset::AlreadyOff);
    }
    delete_recovery_codes_in(&mut tx, user_id).await?;
    with_tx!(&mut tx, conn => {
        sqlx::query(DELETE_USER_CHALLENGES)
            .bind(DbUuid(user_id))
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("deleting MFA challenges")?;
    let ended = sessions::revoke_all_in(&mut tx, user_id, None, MFA_RESET, now_ms).await?;
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(MfaReset::Reset { ended })
}

const SELECT_TOTP_STATE: &str = "SELECT totp_secret, totp_last_step FROM users \
     WHERE id = $1 AND mfa_enabled AND deleted_at_ms IS NULL";

/// The sealed TOTP secret and the last accepted step of a user with MFA on; `None` when
/// MFA is off or the user is missing or deleted.
pub async fn totp_state(db: &Db, user_id: Uuid) -> Result<Option<(String, Option<i64>)>> {
    let row: Option<(Option<String>, Option<i64>)> = with_pool!(db, pool => {
        sqlx::query_as(SELECT_TOTP_STATE)
            .bind(DbUuid(user_id))
            .fetch_optional(pool)
            .await
    })
    .db_context("reading a TOTP secret")?;
    match row {
        None => Ok(None),
        Some((Some(secret), last_step)) => Ok(Some((secret, last_step))),
        Some((None, _)) => {
            Err(anyhow::anyhow!("user {user_id} has MFA on but no TOTP secret").into())
        }
    }
}

// The replay guard (RFC 6238 §5.2): a step is accepted once, and only after the last one.
const ACCEPT_STEP: &str = "UPDATE users SET totp_last_step = $2 \
     WHERE id = $1 AND mfa_enabled AND (totp_last_step IS NULL OR totp_last_step < $2)";

/// Records `step` as the user's last accepted TOTP step if it is later than the last one
/// and MFA is on; `true` iff it was. Of concurrent calls with one step, exactly one wins.
pub async fn accept_step(db: &Db, user_id: Uuid, step: i64) -> Result<bool> {
    let updated = with_pool!(db, pool => {
        sqlx::query(ACCEPT_STEP)
            .bind(DbUuid(user_id))
            .bind(step)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("accepting a TOTP step")?;
    Ok(updated > 0)
}

const USE_RECOVERY_CODE: &str = "UPDATE recovery_codes SET used_at_ms = $3 \
     WHERE user_id = $1 AND code_hash = $2 AND used_at_ms IS NULL";

/// Uses the user's recovery code whose hash is `code_hash`; `true` iff it existed and was
/// unused. Of concurrent calls with one code, exactly one wins.
pub async fn use_recovery_code(
    db: &Db,
    user_id: Uuid,
    code_hash: &str,
    now_ms: i64,
) -> Result<bool> {
    let updated = with_pool!(db, pool => {
        sqlx::query(USE_RECOVERY_CODE)
            .bind(DbUuid(user_id))
            .bind(code_hash)
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("using a recovery code")?;
    Ok(updated > 0)
}

// Deleted users too: their ciphertexts must move off a key before the key is retired.
const SELECT_SEALED_SECRETS: &str = "SELECT id, totp_secret, totp_pending FROM users \
     WHERE totp_secret IS NOT NULL OR totp_pending IS NOT NULL ORDER BY id";

/// Every user holding a sealed secret or pending secret, as (user id, secret, pending),
/// in id order: what `rampart keys rotate-data` re-encrypts.
pub async fn sealed_secrets(db: &Db) -> Result<Vec<(Uuid, Option<String>, Option<String>)>> {
    let rows: Vec<(DbUuid, Option<String>, Option<String>)> = with_pool!(db, pool => {
        sqlx::query_as(SELECT_SEALED_SECRETS).fetch_all(pool).await
    })
    .db_context("listing sealed TOTP secrets")?;
    Ok(rows
        .into_iter()
        .map(|(id, secret, pending)| (id.into(), secret, pending))
        .collect())
}

// Compare-and-swap on both columns; `=` alone never matches NULL, hence the IS NULL arms.
const RESEAL: &str = "UPDATE users SET totp_secret = $3, totp_pending = $5 \
     WHERE id = $1 \
       AND (totp_secret = $2 OR (totp_secret IS NULL AND $2 IS NULL)) \
       AND (totp_pending = $4 OR (totp_pending IS NULL AND $4 IS NULL))";

/// Replaces the user's sealed secret and pending secret with `new_secret`/`new_pending`
/// only while they still are `old_secret`/`old_pending` (NULL matching `None`); `true`
/// iff it did. A `false` means the row changed meanwhile (say, MFA was enabled): read it
/// again and retry. Not audited and `updated_at_ms` is left alone: the plaintext is the
/// same.
pub async fn reseal(
    db: &Db,
    user_id: Uuid,
    old_secret: Option<&str>,
    new_secret: Option<&str>,
    old_pending: Option<&str>,
    new_pending: Option<&str>,
) -> Result<bool> {
    let updated = with_pool!(db, pool => {
        sqlx::query(RESEAL)
            .bind(DbUuid(user_id))
            .bind(old_secret)
            .bind(new_secret)
            .bind(old_pending)
            .bind(new_pending)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("resealing a TOTP secret")?;
    Ok(updated > 0)
}

// --- Login challenges (the `mfaToken`) ------------------------------------------------------

/// A live login challenge: the password step succeeded, the second factor is pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub id: Uuid,
    pub user_id: Uuid,
    /// Wrong codes presented so far.
    pub failures: i64,
    /// The user's credential epoch when the password step checked the password: the session
    /// the challenge leads to is made at this epoch, or not at all.
    pub credential_epoch: i64,
}

const INSERT_CHALLENGE: &str = "INSERT INTO mfa_challenges \
     (id, user_id, token_hash, created_at_ms, expires_at_ms, credential_epoch) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// Stores a challenge for `user_id` whose token hashes to `token_hash` (the token itself
/// is never stored), valid until `expires_at_ms` and while the user's credential epoch is
/// `credential_epoch` (read before the password was checked).
#[allow(clippy::too_many_arguments)]
pub async fn create_challenge(
    db: &Db,
    id: Uuid,
    user_id: Uuid,
    credential_epoch: i64,
    token_hash: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<()> {
    with_pool!(db, pool => {
        sqlx::query(INSERT_CHALLENGE)
            .bind(DbUuid(id))
            .bind(DbUuid(user_id))
            .bind(token_hash)
            .bind(now_ms)
            .bind(expires_at_ms)
            .bind(credential_epoch)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("storing an MFA challenge")?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ChallengeRow {
    id: DbUuid,
    user_id: DbUuid,
    failures: i64,
    credential_epoch: i64,
}

const SELECT_LIVE_CHALLENGE: &str = "SELECT c.id, c.user_id, c.failures, c.credential_epoch \
     FROM mfa_challenges c JOIN users u ON u.id = c.user_id \
     WHERE c.token_hash = $1 AND c.used_at_ms IS NULL AND c.expires_at_ms > $2 \
       AND c.failures < $3 AND u.credential_epoch = c.credential_epoch";

/// The challenge whose token hashes to `token_hash` while it is unused, unexpired
/// (`expires_at_ms > now_ms`), has fewer than `max_failures` wrong codes and its user is
/// still at the challenge's credential epoch (a credential change kills pending
/// challenges); else `None`.
pub async fn live_challenge(
    db: &Db,
    token_hash: &str,
    now_ms: i64,
    max_failures: i64,
) -> Result<Option<Challenge>> {
    let row: Option<ChallengeRow> = with_pool!(db, pool => {
        sqlx::query_as(SELECT_LIVE_CHALLENGE)
            .bind(token_hash)
            .bind(now_ms)
            .bind(max_failures)
            .fetch_optional(pool)
            .await
    })
    .db_context("reading an MFA challenge")?;
    Ok(row.map(|row| Challenge {
        id: row.id.into(),
        user_id: row.user_id.into(),
        failures: row.failures,
        credential_epoch: row.credential_epoch,
    }))
}

const COUNT_CHALLENGE_FAILURE: &str =
    "UPDATE mfa_challenges SET failures = failures + 1 WHERE id = $1 RETURNING failures";

/// Counts a wrong code against challenge `id` (one atomic increment, so concurrent wrong
/// codes are all counted) and returns the new count; `NotFound` for an unknown id.
pub async fn challenge_failed(db: &Db, id: Uuid) -> Result<i64> {
    let failures: Option<i64> = with_pool!(db, pool => {
        sqlx::query_scalar(COUNT_CHALLENGE_FAILURE)
            .bind(DbUuid(id))
            .fetch_optional(pool)
            .await
    })
    .db_context("counting an MFA challenge failure")?;
    failures.ok_or(Error::NotFound)
}

const CONSUME_CHALLENGE: &str =
    "UPDATE mfa_challenges SET used_at_ms = $2 WHERE id = $1 AND used_at_ms IS NULL";

/// Uses challenge `id` up; `true` iff it was unused. Of concurrent calls exactly one wins.
pub async fn consume_challenge(db: &Db, id: Uuid, now_ms: i64) -> Result<bool> {
    let updated = with_pool!(db, pool => {
        sqlx::query(CONSUME_CHALLENGE)
            .bind(DbUuid(id))
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("using an MFA challenge")?;
    Ok(updated > 0)
}

/// A second factor presented with a login challenge, as [`complete_challenge`] uses it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondFactor {
    /// A TOTP code, already verified against the secret by the caller: the step it is of.
    TotpStep(i64),
    /// A recovery code: the hashes it may be stored under (one per data key), tried in
    /// order.
    RecoveryCode(Vec<String>),
}

/// What [`complete_challenge`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The factor and the challenge are both used up: the login may complete.
    Completed,
    /// The factor is not usable (a step at or before the last accepted one, MFA off, an
    /// unknown or used recovery code). Nothing was written.
    FactorRefused,
    /// The challenge was used up meanwhile (by a concurrent verification). Nothing was
    /// written: the factor stays unused.
    ChallengeUsed,
}

/// Uses up `factor` of `user_id` and login challenge `id` together, in one transaction, so
/// that of concurrent verifications exactly one completes and every loser leaves both its
/// factor and its challenge as they were: a request that loses the challenge keeps its
/// code, one that loses the code keeps its challenge. The factor is taken first (the
/// user's row for a TOTP step, a `recovery_codes` row), then the challenge: the order in
/// which [`disable`] and [`reset`] lock the same rows, so the two never wait on each other
/// in a cycle.
pub async fn complete_challenge(
    db: &Db,
    id: Uuid,
    user_id: Uuid,
    factor: &SecondFactor,
    now_ms: i64,
) -> Result<Completion> {
    let mut tx = db.begin().await?;
    let factor_used = match factor {
        SecondFactor::TotpStep(step) => {
            let updated = with_tx!(&mut tx, conn => {
                sqlx::query(ACCEPT_STEP)
                    .bind(DbUuid(user_id))
                    .bind(*step)
                    .execute(&mut *conn)
                    .await
                    .map(|done| done.rows_affected())
            })
            .db_context("accepting a TOTP step")?;
            updated > 0
        }
        SecondFactor::RecoveryCode(hashes) => {
            let mut used = false;
            for hash in hashes {
                let updated = with_tx!(&mut tx, conn => {
                    sqlx::query(USE_RECOVERY_CODE)
                        .bind(DbUuid(user_id))
                        .bind(hash)
                        .bind(now_ms)
                        .execute(&mut *conn)
                        .await
                        .map(|done| done.rows_affected())
                })
                .db_context("using a recovery code")?;
                if updated > 0 {
                    used = true;
                    break;
                }
            }
            used
        }
    };
    if !factor_used {
        tx.rollback().await?;
        return Ok(Completion::FactorRefused);
    }
    let consumed = with_tx!(&mut tx, conn => {
        sqlx::query(CONSUME_CHALLENGE)
            .bind(DbUuid(id))
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("using an MFA challenge")?;
    if consumed == 0 {
        tx.rollback().await?;
        return Ok(Completion::ChallengeUsed);
    }
    tx.commit().await?;
    Ok(Completion::Completed)
}
