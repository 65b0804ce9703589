//! The `passkeys`, `webauthn_challenges` and `webauthn_user_handles` tables (contract §10).
//!
//! Invariants:
//! - A challenge is taken at most once: one `DELETE … RETURNING` decides, on both
//!   backends, so of concurrent finishes of one ceremony exactly one gets its state; an
//!   expired one is deleted and refused alike.
//! - A credential id belongs to one passkey of one user (unique column); a user has at
//!   most `max` passkeys, counted under a lock on the user row (PostgreSQL; SQLite runs
//!   writers one at a time).
//! - Removing a passkey revokes, in the same transaction, every session that logged in
//!   with it; a sign-in's counter update is a compare-and-set on the counter it checked,
//!   made in the transaction that creates the session (`sessions::create_with_passkey`),
//!   which also re-checks that the passkey still exists; so a sign-in racing a removal
//!   never yields a live session.

use rampart_core::audit::NewAuditEvent;
use rampart_core::{Error, Result};
use uuid::Uuid;

use crate::error::DbResultExt;
use crate::types::DbUuid;
use crate::{Backend, Db, Tx};

/// `revoked_reason` of the sessions of a removed passkey.
pub const PASSKEY_REMOVED: &str = "passkey_removed";

/// What a ceremony's challenge is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceremony {
    Register,
    Login,
}

impl Ceremony {
    fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Login => "login",
        }
    }
}

/// A passkey as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passkey {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub backup_eligible: bool,
    pub backed_up: bool,
}

/// A passkey with what a sign-in verifies it against.
#[derive(Debug, Clone)]
pub struct StoredPasskey {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The library's serialised credential (public key, counter, flags).
    pub credential: String,
    pub sign_count: i64,
    /// The owner's user handle (base64url).
    pub user_handle: String,
}

/// A verified registration to store.
pub struct NewPasskey<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub credential_id: &'a str,
    pub name: &'a str,
    pub credential: &'a str,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub transports: &'a str,
    pub aaguid: &'a str,
    pub now_ms: i64,
}

/// A sign-in's update of its passkey, applied only if the counter is still `old_count`.
#[derive(Debug, Clone)]
pub struct PasskeyUse {
    pub id: Uuid,
    pub old_count: i64,
    pub new_count: i64,
    pub credential: String,
    pub backup_eligible: bool,
    pub backed_up: bool,
}

#[derive(sqlx::FromRow)]
struct PasskeyRow {
    id: DbUuid,
    user_id: DbUuid,
    name: String,
    created_at_ms: i64,
    last_used_at_ms: Option<i64>,
    backup_eligible: bool,
    backed_up: bool,
}

impl From<PasskeyRow> for Passkey {
    fn from(row: PasskeyRow) -> Self {
        Self {
            id: row.id.into(),
            user_id: row.user_id.into(),
            name: row.name,
            created_at_ms: row.created_at_ms,
            last_used_at_ms: row.last_used_at_ms,
            backup_eligible: row.backup_eligible,
            backed_up: row.backed_up,
        }
    }
}

const INSERT_HANDLE: &str = "INSERT INTO webauthn_user_handles (user_id, user_handle) \
     VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING";
const SELECT_HANDLE: &str = "SELECT user_handle FROM webauthn_user_handles WHERE user_id = $1";

/// The user's handle, made from `candidate` if the user has none yet.
pub async fn user_handle(db: &Db, user_id: Uuid, candidate: &str) -> Result<String> {
    with_pool!(db, pool => {
        sqlx::query(INSERT_HANDLE)
            .bind(DbUuid(user_id))
            .bind(candidate)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("storing a user handle")?;
    let handle: Option<String> = with_pool!(db, pool => {
        sqlx::query_scalar(SELECT_HANDLE)
            .bind(DbUuid(user_id))
            .fetch_optional(pool)
            .await
    })
    .db_context("reading a user handle")?;
    handle.ok_or(Error::Unauthenticated)
}

const INSERT_CHALLENGE: &str = "INSERT INTO webauthn_challenges \
     (id, kind, user_id, state, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6)";
const TAKE_CHALLENGE: &str = "DELETE FROM webauthn_challenges WHERE id = $1 AND kind = $2 \
     RETURNING user_id, state, expires_at_ms";

/// Stores a ceremony's state under `id` until `expires_at_ms`.
pub async fn create_challenge(
    db: &Db,
    id: Uuid,
    ceremony: Ceremony,
    user_id: Option<Uuid>,
    state: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<()> {
    with_pool!(db, pool => {
        sqlx::query(INSERT_CHALLENGE)
            .bind(DbUuid(id))
            .bind(ceremony.as_str())
            .bind(user_id.map(DbUuid))
            .bind(state)
            .bind(now_ms)
            .bind(expires_at_ms)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("storing a WebAuthn challenge")?;
    Ok(())
}

/// Takes (deletes) the challenge `id` of `ceremony`: its user and state while it has not
/// expired; `None` when unknown, already taken or expired.
pub async fn take_challenge(
    db: &Db,
    id: Uuid,
    ceremony: Ceremony,
    now_ms: i64,
) -> Result<Option<(Option<Uuid>, String)>> {
    let row: Option<(Option<DbUuid>, String, i64)> = with_pool!(db, pool => {
        sqlx::query_as(TAKE_CHALLENGE)
            .bind(DbUuid(id))
            .bind(ceremony.as_str())
            .fetch_optional(pool)
            .await
    })
    .db_context("taking a WebAuthn challenge")?;
    Ok(row
        .filter(|(_, _, expires_at_ms)| *expires_at_ms > now_ms)
        .map(|(user, state, _)| (user.map(Uuid::from), state)))
}

const SELECT_CREDENTIAL_IDS: &str =
    "SELECT credential_id FROM passkeys WHERE user_id = $1 ORDER BY created_at_ms, id";

/// The credential ids (base64url) of the user's passkeys.
pub async fn credential_ids(db: &Db, user_id: Uuid) -> Result<Vec<String>> {
    with_pool!(db, pool => {
        sqlx::query_scalar(SELECT_CREDENTIAL_IDS)
            .bind(DbUuid(user_id))
            .fetch_all(pool)
            .await
    })
    .db_context("listing credential ids")
}

const SQLITE_LOCK_USER: &str = "SELECT id FROM users WHERE id = $1 AND deleted_at_ms IS NULL";
const POSTGRES_LOCK_USER: &str =
    "SELECT id FROM users WHERE id = $1 AND deleted_at_ms IS NULL FOR UPDATE";
const COUNT_PASSKEYS: &str = "SELECT COUNT(*) FROM passkeys WHERE user_id = $1";
const CREDENTIAL_TAKEN: &str = "SELECT 1 FROM passkeys WHERE credential_id = $1";
const INSERT_PASSKEY: &str = "INSERT INTO passkeys (id, user_id, credential_id, name, credential, \
     sign_count, backup_eligible, backed_up, transports, aaguid, created_at_ms, last_used_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL)";

/// Stores a passkey and appends `audit`, in one transaction. `Conflict` when the user has
/// `max` already; `Validation` for `credential` when its id is registered (by anyone);
/// `NotFound` for a missing or deleted user.
pub async fn insert(
    db: &Db,
    passkey: &NewPasskey<'_>,
    max: i64,
    audit: &NewAuditEvent,
) -> Result<Passkey> {
    let mut tx = db.begin().await?;
    let lock = match tx.backend() {
        Backend::Sqlite => SQLITE_LOCK_USER,
        Backend::Postgres => POSTGRES_LOCK_USER,
    };
    let user: Option<DbUuid> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(lock)
            .bind(DbUuid(passkey.user_id))
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("locking a user")?;
    if user.is_none() {
        tx.rollback().await?;
        return Err(Error::NotFound);
    }
    let count: i64 = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(COUNT_PASSKEYS)
            .bind(DbUuid(passkey.user_id))
            .fetch_one(&mut *conn)
            .await
    })
    .db_context("counting passkeys")?;
    if count >= max {
        tx.rollback().await?;
        return Err(Error::Conflict(format!("at most {max} passkeys per user")));
    }
    let taken: Option<i32> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(CREDENTIAL_TAKEN)
            .bind(passkey.credential_id)
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("looking up a credential id")?;
    let duplicate = || Error::validation("credential", "this passkey is already registered");
    if taken.is_some() {
        tx.rollback().await?;
        return Err(duplicate());
    }
    let inserted = with_tx!(&mut tx, conn => {
        sqlx::query(INSERT_PASSKEY)
            .bind(DbUuid(passkey.id))
            .bind(DbUuid(passkey.user_id))
            .bind(passkey.credential_id)
            .bind(passkey.name)
            .bind(passkey.credential)
            .bind(passkey.sign_count)
            .bind(passkey.backup_eligible)
            .bind(passkey.backed_up)
            .bind(passkey.transports)
            .bind(passkey.aaguid)
            .bind(passkey.now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("inserting a passkey");
    match inserted {
        Ok(_) => {}
        // A concurrent registration of the same credential id won.
        Err(Error::Conflict(_)) => {
            tx.rollback().await?;
            return Err(duplicate());
        }
        Err(e) => return Err(e),
    }
    crate::audit::append(&mut tx, audit, passkey.now_ms).await?;
    tx.commit().await?;
    Ok(Passkey {
        id: passkey.id,
        user_id: passkey.user_id,
        name: passkey.name.to_owned(),
        created_at_ms: passkey.now_ms,
        last_used_at_ms: None,
        backup_eligible: passkey.backup_eligible,
        backed_up: passkey.backed_up,
    })
}

const SELECT_PASSKEYS: &str = "SELECT id, user_id, name, created_at_ms, last_used_at_ms, \
     backup_eligible, backed_up FROM passkeys WHERE user_id = $1 ORDER BY created_at_ms, id";

/// The user's passkeys, oldest first.
pub async fn list(db: &Db, user_id: Uuid) -> Result<Vec<Passkey>> {
    let rows: Vec<PasskeyRow> = with_pool!(db, pool => {
        sqlx::query_as(SELECT_PASSKEYS)
            .bind(DbUuid(user_id))
            .fetch_all(pool)
            .await
    })
    .db_context("listing passkeys")?;
    Ok(rows.into_iter().map(Passkey::from).collect())
}

const RENAME_PASSKEY: &str = "UPDATE passkeys SET name = $3 WHERE id = $1 AND user_id = $2 \
     RETURNING id, user_id, name, created_at_ms, last_used_at_ms, backup_eligible, backed_up";

/// Renames the user's passkey `id`; `NotFound` when it is not theirs.
pub async fn rename(db: &Db, id: Uuid, user_id: Uuid, name: &str) -> Result<Passkey> {
    let row: Option<PasskeyRow> = with_pool!(db, pool => {
        sqlx::query_as(RENAME_PASSKEY)
            .bind(DbUuid(id))
            .bind(DbUuid(user_id))
            .bind(name)
            .fetch_optional(pool)
            .await
    })
    .db_context("renaming a passkey")?;
    row.map(Passkey::from).ok_or(Error::NotFound)
}

const DELETE_PASSKEY: &str = "DELETE FROM passkeys WHERE id = $1 AND user_id = $2 RETURNING id";
const REVOKE_PASSKEY_SESSIONS: &str = "UPDATE sessions SET revoked_at_ms = $2, \
     revoked_reason = $3 WHERE passkey_id = $1 AND revoked_at_ms IS NULL RETURNING id";

/// Deletes the user's passkey `id`, revokes every session that logged in with it and
/// appends `audit`, in one transaction; returns the revoked session ids. `NotFound` when
/// the passkey is not theirs.
pub async fn delete(
    db: &Db,
    id: Uuid,
    user_id: Uuid,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<Vec<Uuid>> {
    let mut tx = db.begin().await?;
    let deleted: Option<DbUuid> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(DELETE_PASSKEY)
            .bind(DbUuid(id))
            .bind(DbUuid(user_id))
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("deleting a passkey")?;
    if deleted.is_none() {
        tx.rollback().await?;
        return Err(Error::NotFound);
    }
    let revoked: Vec<DbUuid> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(REVOKE_PASSKEY_SESSIONS)
            .bind(DbUuid(id))
            .bind(now_ms)
            .bind(PASSKEY_REMOVED)
            .fetch_all(&mut *conn)
            .await
    })
    .db_context("revoking the sessions of a passkey")?;
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(revoked.into_iter().map(Uuid::from).collect())
}

const SELECT_BY_CREDENTIAL_ID: &str = "SELECT p.id, p.user_id, p.credential, p.sign_count, \
     h.user_handle FROM passkeys p JOIN webauthn_user_handles h ON h.user_id = p.user_id \
     WHERE p.credential_id = $1";

/// The passkey whose credential id (base64url) is `credential_id`, with its owner's handle.
pub async fn find_by_credential_id(db: &Db, credential_id: &str) -> Result<Option<StoredPasskey>> {
    let row: Option<(DbUuid, DbUuid, String, i64, String)> = with_pool!(db, pool => {
        sqlx::query_as(SELECT_BY_CREDENTIAL_ID)
            .bind(credential_id)
            .fetch_optional(pool)
            .await
    })
    .db_context("finding a passkey")?;
    Ok(row.map(
        |(id, user_id, credential, sign_count, user_handle)| StoredPasskey {
            id: id.into(),
            user_id: user_id.into(),
            credential,
            sign_count,
            user_handle,
        },
    ))
}

const USE_PASSKEY: &str = "UPDATE passkeys SET sign_count = $4, credential = $5, \
     backup_eligible = $6, backed_up = $7, last_used_at_ms = $8 \
     WHERE id = $1 AND user_id = $2 AND sign_count = $3";

/// Applies a sign-in's `update` inside the session's transaction: `false` when the passkey
/// is gone or its counter moved since it was checked (a concurrent sign-in won).
pub(crate) async fn use_in(
    tx: &mut Tx,
    user_id: Uuid,
    update: &PasskeyUse,
    now_ms: i64,
) -> Result<bool> {
    let changed = with_tx!(tx, conn => {
        sqlx::query(USE_PASSKEY)
            .bind(DbUuid(update.id))
            .bind(DbUuid(user_id))
            .bind(update.old_count)
            .bind(update.new_count)
            .bind(&update.credential)
            .bind(update.backup_eligible)
            .bind(update.backed_up)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("recording a passkey's use")?;
    Ok(changed == 1)
}
