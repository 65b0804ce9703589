//! The `users`, `roles` and `user_roles` tables: accounts, their credentials and the user
//! view (contract §5).
//!
//! Invariants: an email is unique by its normalised (lower-cased) form across every row,
//! soft-deleted ones included; a soft-deleted user keeps its row (`deleted_at_ms` set), is
//! invisible to [`get`] and every session lookup, and is still returned by
//! [`find_credentials`] (flagged) so that login can answer it like a wrong password. A new
//! user is `active` with the single role `user`. Every change commits in one transaction
//! with its audit event; a password change is compare-and-set on the hash that was
//! verified, ends every live session of the user (moving its credential epoch on, see
//! `sessions`), and invalidates the user's password-reset tokens, in that same transaction.
//! The `rampart admin create` bootstrap never promotes an account by its email alone:
//! [`create_admin`] only inserts, and [`promote_to_admin`] needs the password hash its
//! caller verified to still be in place. Role names
//! match `[a-z][a-z0-9_-]*` (a CHECK in migration 0002), so the user view aggregates them
//! into one comma-separated column in the same round trip; the list is sorted here, so
//! neither dialect's aggregate order matters.

use rampart_core::audit::NewAuditEvent;
use rampart_core::error::Redacted;
use rampart_core::users::{Credentials, DisplayName, Email, User, UserStatus};
use rampart_core::{Error, Result};
use uuid::Uuid;

use crate::error::DbResultExt;
use crate::sessions::{self, PASSWORD_CHANGED};
use crate::types::DbUuid;
use crate::{Backend, Db, Tx};

/// The built-in `admin` role, seeded by migration 0002 with this id on both backends.
pub const ADMIN_ROLE_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0001);
/// The built-in `user` role every new account gets, seeded by migration 0002.
pub const USER_ROLE_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0002);

/// A user about to be registered. `password_hash` is a PHC string, never a password.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub id: Uuid,
    pub email: &'a Email,
    pub display_name: &'a DisplayName,
    pub password_hash: &'a str,
    pub now_ms: i64,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: DbUuid,
    email: String,
    display_name: String,
    status: String,
    mfa_enabled: bool,
    email_verified: bool,
    created_at_ms: i64,
    updated_at_ms: i64,
    /// Comma-separated role names, NULL when the user has none.
    roles: Option<String>,
}

impl TryFrom<UserRow> for User {
    type Error = Error;

    fn try_from(row: UserRow) -> Result<Self> {
        let status = UserStatus::parse(&row.status)
            .ok_or_else(|| anyhow::anyhow!("user {} has an unknown status", row.id.0))?;
        let mut roles: Vec<String> = row
            .roles
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        roles.sort_unstable();
        Ok(User {
            id: row.id.into(),
            email: row.email,
            display_name: row.display_name,
            status,
            roles,
            mfa_enabled: row.mfa_enabled,
            email_verified: row.email_verified,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        })
    }
}

const INSERT_USER: &str = "INSERT INTO users \
     (id, email, email_normalized, password_hash, display_name, status, mfa_enabled, \
      email_verified, created_at_ms, updated_at_ms) \
     VALUES ($1, $2, $3, $4, $5, 'active', FALSE, $7, $6, $6)";

const GRANT_ROLE: &str = "INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2)";

/// Registers `user` (active, role `user`) and appends `audit`, in one transaction. A
/// normalised email that is already taken (by any row, deleted or not) is
/// `Conflict("email already registered")`, and nothing is written.
pub async fn create(db: &Db, user: &NewUser<'_>, audit: &NewAuditEvent) -> Result<User> {
    let mut tx = db.begin().await?;
    insert_in(&mut tx, user, &[USER_ROLE_ID], false).await?;
    crate::audit::append(&mut tx, audit, user.now_ms).await?;
    tx.commit().await?;
    Ok(User {
        id: user.id,
        email: user.email.as_str().to_owned(),
        display_name: user.display_name.as_str().to_owned(),
        status: UserStatus::Active,
        roles: vec!["user".to_owned()],
        mfa_enabled: false,
        email_verified: false,
        created_at_ms: user.now_ms,
        updated_at_ms: user.now_ms,
    })
}

/// Inserts `user` (active) with `roles`, inside the caller's transaction: the one place a
/// user row is created, so registration and `admin create` share the unique-email rule
/// (`Conflict("email already registered")`, nothing written). `email_verified`: only
/// `admin create` inserts verified accounts (an operator typed the address; contract §11).
async fn insert_in(
    tx: &mut Tx,
    user: &NewUser<'_>,
    roles: &[Uuid],
    email_verified: bool,
) -> Result<()> {
    with_tx!(tx, conn => {
        sqlx::query(INSERT_USER)
            .bind(DbUuid(user.id))
            .bind(user.email.as_str())
            .bind(user.email.normalized())
            .bind(user.password_hash)
            .bind(user.display_name.as_str())
            .bind(user.now_ms)
            .bind(email_verified)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("inserting a user")
    .map_err(|err| match err {
        Error::Conflict(_) => Error::Conflict("email already registered".to_owned()),
        other => other,
    })?;
    for role_id in roles {
        with_tx!(tx, conn => {
            sqlx::query(GRANT_ROLE)
                .bind(DbUuid(user.id))
                .bind(DbUuid(*role_id))
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })
        .db_context("granting a role")?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct CredentialsRow {
    id: DbUuid,
    password_hash: String,
    status: String,
    mfa_enabled: bool,
    deleted_at_ms: Option<i64>,
    credential_epoch: i64,
}

const SELECT_CREDENTIALS: &str = "SELECT id, password_hash, status, mfa_enabled, deleted_at_ms, \
     credential_epoch FROM users WHERE email_normalized = $1";

/// What login checks a password against, for deleted and disabled users too (flagged), so
/// the caller can spend the same work and give the same answer as for a wrong password.
/// The credential epoch comes in the same read as the hash: pass it to `sessions::create`.
pub async fn find_credentials(db: &Db, email_normalized: &str) -> Result<Option<Credentials>> {
    let row: Option<CredentialsRow> = with_pool!(db, pool => {
        sqlx::query_as(SELECT_CREDENTIALS)
            .bind(email_normalized)
            .fetch_optional(pool)
            .await
    })
    .db_context("reading credentials")?;
    row.map(credentials_from_row).transpose()
}

const SELECT_CREDENTIALS_FOR_SESSION: &str = "SELECT u.id, u.password_hash, u.status, \
     u.mfa_enabled, u.deleted_at_ms, u.credential_epoch \
     FROM sessions s JOIN users u ON u.id = s.user_id \
     WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at_ms IS NULL AND s.expires_at_ms > $3 \
       AND u.status = 'active' AND u.deleted_at_ms IS NULL \
       AND u.credential_epoch = s.credential_epoch";

/// The credentials of `user_id` read through its session `session_id`, only while that
/// session is live (as `sessions::live_user` defines it); `None` otherwise. What a route
/// that re-asks for the password checks it against: the epoch read here is the one the
/// change must still find.
pub async fn credentials_for_session(
    db: &Db,
    user_id: Uuid,
    session_id: Uuid,
    now_ms: i64,
) -> Result<Option<Credentials>> {
    let row: Option<CredentialsRow> = with_pool!(db, pool => {
        sqlx::query_as(SELECT_CREDENTIALS_FOR_SESSION)
            .bind(DbUuid(session_id))
            .bind(DbUuid(user_id))
            .bind(now_ms)
            .fetch_optional(pool)
            .await
    })
    .db_context("reading credentials")?;
    row.map(credentials_from_row).transpose()
}

fn credentials_from_row(row: CredentialsRow) -> Result<Credentials> {
    let status = UserStatus::parse(&row.status)
        .ok_or_else(|| anyhow::anyhow!("user {} has an unknown status", row.id.0))?;
    Ok(Credentials {
        user_id: row.id.into(),
        password_hash: Redacted(row.password_hash),
        status,
        deleted: row.deleted_at_ms.is_some(),
        mfa_enabled: row.mfa_enabled,
        credential_epoch: row.credential_epoch,
    })
}

// The user view. The dialects differ only in the aggregate: SQLite's `group_concat` (SQLite
// has `string_agg` only from 3.44, and the `sqlite-unbundled` build may link an older one),
// PostgreSQL's `string_agg`.
const SQLITE_SELECT_USER: &str = "SELECT u.id, u.email, u.display_name, u.status, \
     u.mfa_enabled, u.email_verified, u.created_at_ms, u.updated_at_ms, \
     (SELECT group_concat(r.name, ',') FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
      WHERE ur.user_id = u.id) AS roles \
     FROM users u WHERE u.id = $1 AND u.deleted_at_ms IS NULL";
const POSTGRES_SELECT_USER: &str = "SELECT u.id, u.email, u.display_name, u.status, \
     u.mfa_enabled, u.email_verified, u.created_at_ms, u.updated_at_ms, \
     (SELECT string_agg(r.name, ',') FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
      WHERE ur.user_id = u.id) AS roles \
     FROM users u WHERE u.id = $1 AND u.deleted_at_ms IS NULL";

fn select_user_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => SQLITE_SELECT_USER,
        Backend::Postgres => POSTGRES_SELECT_USER,
    }
}

/// The user view of `id`, roles sorted by name; `None` when missing or soft-deleted.
pub async fn get(db: &Db, id: Uuid) -> Result<Option<User>> {
    let sql = select_user_sql(db.backend());
    let row: Option<UserRow> = with_pool!(db, pool => {
        sqlx::query_as(sql).bind(DbUuid(id)).fetch_optional(pool).await
    })
    .db_context("reading a user")?;
    row.map(User::try_from).transpose()
}

/// [`get`] inside `tx`, so a change and the view returned after it are one snapshot.
async fn get_in(tx: &mut Tx, id: Uuid) -> Result<Option<User>> {
    let sql = select_user_sql(tx.backend());
    let row: Option<UserRow> = with_tx!(tx, conn => {
        sqlx::query_as(sql).bind(DbUuid(id)).fetch_optional(&mut *conn).await
    })
    .db_context("reading a user")?;
    row.map(User::try_from).transpose()
}

// `/me`: the session's liveness, the user's state and the view in one statement.
const SQLITE_SELECT_USER_FOR_SESSION: &str = "SELECT u.id, u.email, u.display_name, \
     u.status, u.mfa_enabled, u.email_verified, u.created_at_ms, u.updated_at_ms, \
     (SELECT group_concat(r.name, ',') FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
      WHERE ur.user_id = u.id) AS roles \
     FROM sessions s JOIN users u ON u.id = s.user_id \
     WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at_ms IS NULL \
       AND s.expires_at_ms > $3 AND u.status = 'active' AND u.deleted_at_ms IS NULL \
       AND u.credential_epoch = s.credential_epoch";
const POSTGRES_SELECT_USER_FOR_SESSION: &str = "SELECT u.id, u.email, u.display_name, \
     u.status, u.mfa_enabled, u.email_verified, u.created_at_ms, u.updated_at_ms, \
     (SELECT string_agg(r.name, ',') FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
      WHERE ur.user_id = u.id) AS roles \
     FROM sessions s JOIN users u ON u.id = s.user_id \
     WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at_ms IS NULL \
       AND s.expires_at_ms > $3 AND u.status = 'active' AND u.deleted_at_ms IS NULL \
       AND u.credential_epoch = s.credential_epoch";

/// The user view of `user_id` in one round trip, only while `session_id` is live (it
/// belongs to the user, is not revoked, `expires_at_ms > now_ms`, and is at the user's
/// credential epoch) and the user is active and not deleted; `None` otherwise, whichever
/// condition failed.
pub async fn get_for_session(
    db: &Db,
    user_id: Uuid,
    session_id: Uuid,
    now_ms: i64,
) -> Result<Option<User>> {
    let sql = match db.backend() {
        Backend::Sqlite => SQLITE_SELECT_USER_FOR_SESSION,
        Backend::Postgres => POSTGRES_SELECT_USER_FOR_SESSION,
    };
    let row: Option<UserRow> = with_pool!(db, pool => {
        sqlx::query_as(sql)
            .bind(DbUuid(session_id))
            .bind(DbUuid(user_id))
            .bind(now_ms)
            .fetch_optional(pool)
            .await
    })
    .db_context("reading a user for a session")?;
    row.map(User::try_from).transpose()
}

const UPDATE_DISPLAY_NAME: &str = "UPDATE users SET display_name = $2, updated_at_ms = $3 \
     WHERE id = $1 AND deleted_at_ms IS NULL";

/// Sets the display name and appends `audit`, in one transaction; `NotFound` when the user
/// is missing or deleted.
pub async fn update_display_name(
    db: &Db,
    id: Uuid,
    name: &DisplayName,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<User> {
    let mut tx = db.begin().await?;
    let updated = with_tx!(&mut tx, conn => {
        sqlx::query(UPDATE_DISPLAY_NAME)
            .bind(DbUuid(id))
            .bind(name.as_str())
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("updating a display name")?;
    if updated == 0 {
        return Err(Error::NotFound);
    }
    let user = get_in(&mut tx, id).await?.ok_or(Error::NotFound)?;
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(user)
}

// Compare-and-set on the hash that was verified, so a rehash racing a password change
// cannot write the old password back.
const REHASH_PASSWORD: &str = "UPDATE users SET password_hash = $3 \
     WHERE id = $1 AND password_hash = $2 AND deleted_at_ms IS NULL";

/// Replaces `current_hash` (the hash the password was just verified against) with
/// `new_hash`, the same password under current parameters. Writes nothing when the stored
/// hash is no longer `current_hash` (the password changed meanwhile) or the user is gone.
/// Not audited, `updated_at_ms` is left alone and the credential epoch does not move: the
/// password is the same, so no session needs to end.
pub async fn set_password_hash(
    db: &Db,
    id: Uuid,
    current_hash: &str,
    new_hash: &str,
) -> Result<()> {
    with_pool!(db, pool => {
        sqlx::query(REHASH_PASSWORD)
            .bind(DbUuid(id))
            .bind(current_hash)
            .bind(new_hash)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("rehashing a password")?;
    Ok(())
}

// Compare-and-set on the hash the current password was verified against: of concurrent
// changes that presented the same current password, exactly one matches.
const UPDATE_PASSWORD_HASH: &str = "UPDATE users SET password_hash = $2, updated_at_ms = $3 \
     WHERE id = $1 AND password_hash = $4 AND deleted_at_ms IS NULL";

/// Replaces `verified_hash` (the hash the current password was just verified against) with
/// `new_hash`, revokes every live session of the user (reason `password_changed`, the
/// current one included, and the credential epoch moves on), marks the user's outstanding
/// password-reset tokens used and appends `audit`, in one transaction. Returns the revoked
/// session ids, oldest first. `ReauthenticationFailed`, with nothing written, when the
/// stored hash is no longer `verified_hash` (a concurrent change won) or the user is
/// missing or deleted.
pub async fn change_password(
    db: &Db,
    id: Uuid,
    verified_hash: &str,
    new_hash: &str,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<Vec<Uuid>> {
    let mut tx = db.begin().await?;
    let updated = with_tx!(&mut tx, conn => {
        sqlx::query(UPDATE_PASSWORD_HASH)
            .bind(DbUuid(id))
            .bind(new_hash)
            .bind(now_ms)
            .bind(verified_hash)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("changing a password")?;
    if updated == 0 {
        tx.rollback().await?;
        return Err(Error::ReauthenticationFailed);
    }
    let revoked = sessions::revoke_all_in(&mut tx, id, None, PASSWORD_CHANGED, now_ms).await?;
    crate::resets::invalidate_all_in(&mut tx, id, now_ms).await?;
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(revoked)
}

// --- Administration (contract §5) and the `rampart admin create` bootstrap -----------------

/// `revoked_reason` of the sessions ended because their user was disabled.
pub const USER_DISABLED: &str = "user_disabled";
/// `revoked_reason` of the sessions ended because their user was soft-deleted.
pub const USER_DELETED: &str = "user_deleted";

/// [`get`] inside `tx`, for the other modules of this crate (`rbac`).
pub(crate) async fn view_in(tx: &mut Tx, id: Uuid) -> Result<Option<User>> {
    get_in(tx, id).await
}

// A page of the user view; keyset on the id (UUIDv7, so roughly creation order). UUIDs
// order alike on both backends: PostgreSQL compares the bytes, SQLite the lower-case
// hyphenated text, whose order is the bytes' order.
const SQLITE_LIST_USERS: &str = "SELECT u.id, u.email, u.display_name, u.status, \
     u.mfa_enabled, u.email_verified, u.created_at_ms, u.updated_at_ms, \
     (SELECT group_concat(r.name, ',') FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
      WHERE ur.user_id = u.id) AS roles \
     FROM users u WHERE u.deleted_at_ms IS NULL AND ($1 IS NULL OR u.id > $1) \
       AND ($3 IS NULL OR instr(lower(u.email), $3) > 0) \
     ORDER BY u.id LIMIT $2";
const POSTGRES_LIST_USERS: &str = "SELECT u.id, u.email, u.display_name, u.status, \
     u.mfa_enabled, u.email_verified, u.created_at_ms, u.updated_at_ms, \
     (SELECT string_agg(r.name, ',') FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
      WHERE ur.user_id = u.id) AS roles \
     FROM users u WHERE u.deleted_at_ms IS NULL AND ($1 IS NULL OR u.id > $1) \
       AND ($3 IS NULL OR strpos(lower(u.email), $3) > 0) \
     ORDER BY u.id LIMIT $2";

/// At most `limit` non-deleted users in id order, after the id `after` when given (pass
/// the last id of a page to get the next one).
pub async fn list(db: &Db, limit: u32, after: Option<Uuid>) -> Result<Vec<User>> {
    list_matching(db, None, limit, after).await
}

/// [`list`], only users whose email contains `email_part` (compared in lower case; a
/// plain substring, no wildcards).
pub async fn list_matching(
    db: &Db,
    email_part: Option<&str>,
    limit: u32,
    after: Option<Uuid>,
) -> Result<Vec<User>> {
    let needle = email_part.map(str::to_lowercase);
    let sql = match db.backend() {
        Backend::Sqlite => SQLITE_LIST_USERS,
        Backend::Postgres => POSTGRES_LIST_USERS,
    };
    let rows: Vec<UserRow> = with_pool!(db, pool => {
        sqlx::query_as(sql)
            .bind(after.map(DbUuid))
            .bind(i64::from(limit))
            .bind(needle.as_deref())
            .fetch_all(pool)
            .await
    })
    .db_context("listing users")?;
    rows.into_iter().map(User::try_from).collect()
}

const UPDATE_USER_AS_ADMIN: &str = "UPDATE users SET display_name = COALESCE($2, display_name), \
     status = COALESCE($3, status), updated_at_ms = $4 \
     WHERE id = $1 AND deleted_at_ms IS NULL";

/// Sets the display name and/or status of `id` and appends `audit`, in one transaction.
/// Setting `disabled` also revokes every live session of the user (reason
/// `user_disabled`), whose ids come back oldest first. `NotFound` for a missing or deleted
/// user; `Forbidden` when disabling would leave no active user holding `roles:assign`
/// (contract §5); nothing is written in either case.
pub async fn update_admin(
    db: &Db,
    id: Uuid,
    display_name: Option<&DisplayName>,
    status: Option<UserStatus>,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<(User, Vec<Uuid>)> {
    let disabling = status == Some(UserStatus::Disabled);
    let mut tx = db.begin().await?;
    let held = if disabling {
        crate::rbac::lock(&mut tx).await?;
        crate::rbac::user_holds_in(&mut tx, id, rampart_core::rbac::ROLES_ASSIGN).await?
    } else {
        false
    };
    let updated = with_tx!(&mut tx, conn => {
        sqlx::query(UPDATE_USER_AS_ADMIN)
            .bind(DbUuid(id))
            .bind(display_name.map(DisplayName::as_str))
            .bind(status.map(UserStatus::as_str))
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("updating a user")?;
    if updated == 0 {
        return Err(Error::NotFound);
    }
    let revoked = if disabling {
        sessions::revoke_all_in(&mut tx, id, None, USER_DISABLED, now_ms).await?
    } else {
        Vec::new()
    };
    if held {
        crate::rbac::ensure_holder(&mut tx, rampart_core::rbac::ROLES_ASSIGN).await?;
    }
    let user = get_in(&mut tx, id).await?.ok_or(Error::NotFound)?;
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok((user, revoked))
}

const SOFT_DELETE_USER: &str = "UPDATE users SET deleted_at_ms = $2, updated_at_ms = $2 \
     WHERE id = $1 AND deleted_at_ms IS NULL";

/// Soft-deletes `id` (the row, its roles and its data stay), revokes every live session
/// of the user (reason `user_deleted`) and appends `audit`, in one transaction; returns
/// the revoked session ids, oldest first. `NotFound` when missing or already deleted;
/// `Forbidden` when it would leave no active user holding `roles:assign`.
pub async fn soft_delete(
    db: &Db,
    id: Uuid,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<Vec<Uuid>> {
    let mut tx = db.begin().await?;
    crate::rbac::lock(&mut tx).await?;
    let held = crate::rbac::user_holds_in(&mut tx, id, rampart_core::rbac::ROLES_ASSIGN).await?;
    let deleted = with_tx!(&mut tx, conn => {
        sqlx::query(SOFT_DELETE_USER)
            .bind(DbUuid(id))
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("deleting a user")?;
    if deleted == 0 {
        return Err(Error::NotFound);
    }
    let revoked = sessions::revoke_all_in(&mut tx, id, None, USER_DELETED, now_ms).await?;
    if held {
        crate::rbac::ensure_holder(&mut tx, rampart_core::rbac::ROLES_ASSIGN).await?;
    }
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(revoked)
}

const SQLITE_SELECT_USER_BY_EMAIL: &str = "SELECT u.id, u.email, u.display_name, u.status, \
     u.mfa_enabled, u.email_verified, u.created_at_ms, u.updated_at_ms, \
     (SELECT group_concat(r.name, ',') FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
      WHERE ur.user_id = u.id) AS roles \
     FROM users u WHERE u.email_normalized = $1 AND u.deleted_at_ms IS NULL";
const POSTGRES_SELECT_USER_BY_EMAIL: &str = "SELECT u.id, u.email, u.display_name, u.status, \
     u.mfa_enabled, u.email_verified, u.created_at_ms, u.updated_at_ms, \
     (SELECT string_agg(r.name, ',') FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
      WHERE ur.user_id = u.id) AS roles \
     FROM users u WHERE u.email_normalized = $1 AND u.deleted_at_ms IS NULL";

/// The user view of the non-deleted user whose normalised email is `email_normalized`.
pub async fn find_by_email(db: &Db, email_normalized: &str) -> Result<Option<User>> {
    let sql = match db.backend() {
        Backend::Sqlite => SQLITE_SELECT_USER_BY_EMAIL,
        Backend::Postgres => POSTGRES_SELECT_USER_BY_EMAIL,
    };
    let row: Option<UserRow> = with_pool!(db, pool => {
        sqlx::query_as(sql)
            .bind(email_normalized)
            .fetch_optional(pool)
            .await
    })
    .db_context("reading a user by email")?;
    row.map(User::try_from).transpose()
}

/// `rampart admin create` for a new account, in one transaction: registers `user`, email
/// verified, with the roles `user` and `admin` and appends `audit` (actor and target: the new user). It
/// is one `INSERT` that the unique email decides, so of concurrent runs for one address
/// exactly one creates; an email held by any row (deleted and disabled ones included) is
/// `Conflict("email already registered")` and nothing is written. Never promotes.
pub async fn create_admin(db: &Db, user: &NewUser<'_>, audit: &NewAuditEvent) -> Result<User> {
    let mut tx = db.begin().await?;
    insert_in(&mut tx, user, &[USER_ROLE_ID, ADMIN_ROLE_ID], true).await?;
    let view = get_in(&mut tx, user.id).await?.ok_or(Error::NotFound)?;
    let event = audit
        .clone()
        .with_actor(user.id)
        .with_target("user", user.id.to_string());
    crate::audit::append(&mut tx, &event, user.now_ms).await?;
    tx.commit().await?;
    Ok(view)
}

// Locks the row (PostgreSQL) and states every condition of the promotion: the account is
// live, active, and still has the hash the caller verified the password against.
const LOCK_PROMOTABLE_USER: &str = "UPDATE users SET updated_at_ms = updated_at_ms \
     WHERE id = $1 AND password_hash = $2 AND status = 'active' AND deleted_at_ms IS NULL";
const GRANT_ROLE_IF_MISSING: &str =
    "INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const TOUCH_USER: &str = "UPDATE users SET updated_at_ms = $2 WHERE id = $1";

/// What [`promote_to_admin`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Promotion {
    /// The user gained `admin`; the event was appended.
    Promoted(User),
    /// The user already had `admin`: nothing was written.
    AlreadyAdmin(User),
    /// The user is gone, deleted or disabled, or its password hash is no longer
    /// `verified_hash` (changed since it was verified): nothing was written.
    Refused,
}

/// `rampart admin create --promote-existing`, in one transaction: adds `admin` to the user
/// `id` (its other roles, password and status stay) and appends `audit` (actor and target:
/// that user), only while the user is active, not deleted, and its stored password hash is
/// still `verified_hash`, the hash the caller has just verified the account's password
/// against (a compare-and-set, so a password change in between cannot be promoted past).
/// Takes the RBAC lock first, like every change of who holds which permission.
pub async fn promote_to_admin(
    db: &Db,
    id: Uuid,
    verified_hash: &str,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<Promotion> {
    let mut tx = db.begin().await?;
    crate::rbac::lock(&mut tx).await?;
    let promotable = with_tx!(&mut tx, conn => {
        sqlx::query(LOCK_PROMOTABLE_USER)
            .bind(DbUuid(id))
            .bind(verified_hash)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("reading a user")?;
    if promotable == 0 {
        tx.rollback().await?;
        return Ok(Promotion::Refused);
    }
    let granted = with_tx!(&mut tx, conn => {
        sqlx::query(GRANT_ROLE_IF_MISSING)
            .bind(DbUuid(id))
            .bind(DbUuid(ADMIN_ROLE_ID))
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("granting the admin role")?;
    if granted == 0 {
        let view = get_in(&mut tx, id).await?.ok_or(Error::NotFound)?;
        tx.rollback().await?;
        return Ok(Promotion::AlreadyAdmin(view));
    }
    with_tx!(&mut tx, conn => {
        sqlx::query(TOUCH_USER)
            .bind(DbUuid(id))
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("updating a user")?;
    let view = get_in(&mut tx, id).await?.ok_or(Error::NotFound)?;
    let event = audit
        .clone()
        .with_actor(id)
        .with_target("user", id.to_string());
    crate::audit::append(&mut tx, &event, now_ms).await?;
    tx.commit().await?;
    Ok(Promotion::Promoted(view))
}
