//! The `features`, `permissions` and `role_permissions` tables, and the roles side of
//! `roles`/`user_roles`: the permission catalogue synced from the code, roles and their
//! grants, and what a user may do (contract §5–6).
//!
//! Invariants: a retired permission (one the code no longer declares) is granted by no
//! role, so it grants nothing; the built-in `admin` role holds every active permission and
//! the built-in `user` role exactly the code's defaults, both set by [`sync_catalogue`] and
//! never by a request. There is always an active, non-deleted user holding `roles:assign`
//! once one exists: every transaction that can take that permission away from someone
//! (role grants, role deletion, user roles, disabling or deleting a user) first takes the
//! RBAC lock, makes its change, and re-counts the holders before it commits
//! (`ensure_holder`). The lock makes that count race-free: on PostgreSQL it is a
//! transaction-scoped advisory lock (distinct from the audit chain's, and always taken
//! before it, so the two never wait on each other in a cycle); on SQLite every
//! transaction is `BEGIN IMMEDIATE` and already runs alone. Anti-escalation (contract
//! §5–6) holds under the same lock: a change made on behalf of a user (the `grantor` of
//! [`create_role`], [`update_role`], [`set_user_roles`]) reads that user's permissions
//! inside its transaction, after `lock`, and grants nothing beyond them; so a concurrent
//! change that takes a permission away from the grantor either commits first and is seen,
//! or waits until this one has committed (while the grantor still held it). Permission and role names
//! contain no comma (CHECKs in migrations 0002 and 0003), so the role view aggregates a
//! role's grants into one column in the same round trip; lists are sorted here, so
//! neither dialect's aggregate order nor its collation matters.

use std::collections::{BTreeMap, BTreeSet};

use rampart_core::audit::NewAuditEvent;
use rampart_core::rbac::{FeatureDef, ROLES_ASSIGN, RoleName, beyond_own};
use rampart_core::users::User;
use rampart_core::{Error, FieldError, Result};
use uuid::Uuid;

use crate::error::DbResultExt;
use crate::types::DbUuid;
use crate::users::{ADMIN_ROLE_ID, USER_ROLE_ID};
use crate::{Backend, Db, Tx, TxConn};

/// Key of the PostgreSQL advisory lock that serialises changes to who holds which
/// permission ("ramprbac" in ASCII; the audit chain's key is "rampaudt").
const RBAC_LOCK_KEY: i64 = 0x7261_6d70_7262_6163;

/// What [`sync_catalogue`] changed: permission names, sorted. A permission that comes back
/// after being retired counts as added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: Vec<String>,
    pub retired: Vec<String>,
}

/// An active permission of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionInfo {
    pub name: String,
    pub feature: String,
    pub description: String,
}

/// A role as the role view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// Active permissions granted, sorted.
    pub permissions: Vec<String>,
    pub built_in: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct RoleRow {
    id: DbUuid,
    name: String,
    description: String,
    built_in: bool,
    created_at_ms: i64,
    updated_at_ms: i64,
    /// Comma-separated permission names, NULL when the role grants none.
    permissions: Option<String>,
}

impl From<RoleRow> for Role {
    fn from(row: RoleRow) -> Self {
        let mut permissions: Vec<String> = row
            .permissions
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        permissions.sort_unstable();
        Role {
            id: row.id.into(),
            name: row.name,
            description: row.description,
            permissions,
            built_in: row.built_in,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        }
    }
}

const POSTGRES_LOCK_RBAC: &str = "SELECT pg_advisory_xact_lock($1)";

/// Takes the RBAC lock for the rest of `tx` (see the module docs). Call it first thing in
/// every transaction that can take a permission away from a user.
pub(crate) async fn lock(tx: &mut Tx) -> Result<()> {
    if let TxConn::Postgres(pg) = tx.conn() {
        sqlx::query(POSTGRES_LOCK_RBAC)
            .bind(RBAC_LOCK_KEY)
            .execute(&mut **pg)
            .await
            .db_context("taking the RBAC lock")?;
    }
    Ok(())
}

// --- The catalogue -------------------------------------------------------------------------

const SELECT_FEATURE_STATES: &str = "SELECT name, retired_at_ms FROM features";
const SELECT_PERMISSION_STATES: &str = "SELECT name, retired_at_ms FROM permissions";

// The WHERE skips rows that already match, so a repeated sync writes nothing.
const UPSERT_FEATURE: &str = "INSERT INTO features (name, description, retired_at_ms) \
     VALUES ($1, $2, NULL) \
     ON CONFLICT (name) DO UPDATE SET description = excluded.description, retired_at_ms = NULL \
     WHERE features.description <> excluded.description OR features.retired_at_ms IS NOT NULL";
const UPSERT_PERMISSION: &str = "INSERT INTO permissions \
     (name, feature, description, retired_at_ms) VALUES ($1, $2, $3, NULL) \
     ON CONFLICT (name) DO UPDATE SET feature = excluded.feature, \
       description = excluded.description, retired_at_ms = NULL \
     WHERE permissions.feature <> excluded.feature \
        OR permissions.description <> excluded.description \
        OR permissions.retired_at_ms IS NOT NULL";

const RETIRE_FEATURE: &str =
    "UPDATE features SET retired_at_ms = $2 WHERE name = $1 AND retired_at_ms IS NULL";
const RETIRE_PERMISSION: &str =
    "UPDATE permissions SET retired_at_ms = $2 WHERE name = $1 AND retired_at_ms IS NULL";
const DELETE_RETIRED_GRANTS: &str = "DELETE FROM role_permissions WHERE permission IN \
     (SELECT name FROM permissions WHERE retired_at_ms IS NOT NULL)";

const GRANT_ALL_ACTIVE: &str = "INSERT INTO role_permissions (role_id, permission) \
     SELECT $1, name FROM permissions WHERE retired_at_ms IS NULL \
     ON CONFLICT DO NOTHING";
const SELECT_ROLE_GRANTS: &str = "SELECT permission FROM role_permissions WHERE role_id = $1";
const REVOKE_GRANT: &str = "DELETE FROM role_permissions WHERE role_id = $1 AND permission = $2";
const GRANT: &str = "INSERT INTO role_permissions (role_id, permission) VALUES ($1, $2) \
     ON CONFLICT DO NOTHING";

/// Syncs the code's `catalogue` into the database at `now_ms`, in one transaction (see the
/// module docs): upserts every declared feature and permission (un-retiring any that come
/// back), retires every feature and permission the code no longer declares and deletes
/// the grants of retired permissions, grants the built-in `admin` role every active
/// permission, and sets the built-in `user` role's grants to exactly `user_defaults`.
/// Idempotent: a second run with the same input writes nothing and reports nothing. A
/// default the catalogue does not declare is an internal error, and nothing is written.
pub async fn sync_catalogue(
    db: &Db,
    catalogue: &[FeatureDef],
    user_defaults: &[&str],
    now_ms: i64,
) -> Result<SyncReport> {
    let declared: BTreeMap<&str, (&str, &str)> = catalogue
        .iter()
        .flat_map(|f| {
            f.permissions
                .iter()
                .map(|p| (p.name, (f.name, p.description)))
        })
        .collect();
    if let Some(missing) = user_defaults.iter().find(|p| !declared.contains_key(**p)) {
        return Err(Error::internal(anyhow::anyhow!(
            "user default permission {missing} is not in the catalogue"
        )));
    }
    let declared_features: BTreeSet<&str> = catalogue.iter().map(|f| f.name).collect();

    let mut tx = db.begin().await?;
    lock(&mut tx).await?;
    let features: Vec<(String, Option<i64>)> = with_tx!(&mut tx, conn => {
        sqlx::query_as(SELECT_FEATURE_STATES).fetch_all(&mut *conn).await
    })
    .db_context("reading features")?;
    let permissions: Vec<(String, Option<i64>)> = with_tx!(&mut tx, conn => {
        sqlx::query_as(SELECT_PERMISSION_STATES).fetch_all(&mut *conn).await
    })
    .db_context("reading permissions")?;
    let active: BTreeSet<&str> = permissions
        .iter()
        .filter(|(_, retired)| retired.is_none())
        .map(|(name, _)| name.as_str())
        .collect();
    let report = SyncReport {
        added: declared
            .keys()
            .filter(|name| !active.contains(*name))
            .map(|name| (*name).to_owned())
            .collect(),
        retired: active
            .iter()
            .filter(|name| !declared.contains_key(*name))
            .map(|name| (*name).to_owned())
            .collect(),
    };

    for feature in catalogue {
        with_tx!(&mut tx, conn => {
            sqlx::query(UPSERT_FEATURE)
                .bind(feature.name)
                .bind(feature.description)
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })
        .db_context("upserting a feature")?;
    }
    for (name, (feature, description)) in &declared {
        with_tx!(&mut tx, conn => {
            sqlx::query(UPSERT_PERMISSION)
                .bind(*name)
                .bind(*feature)
                .bind(*description)
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })
        .db_context("upserting a permission")?;
    }
    for name in &report.retired {
        with_tx!(&mut tx, conn => {
            sqlx::query(RETIRE_PERMISSION)
                .bind(name)
                .bind(now_ms)
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })
        .db_context("retiring a permission")?;
    }
    let retired_features = features
        .iter()
        .filter(|(name, retired)| retired.is_none() && !declared_features.contains(name.as_str()));
    for (name, _) in retired_features {
        with_tx!(&mut tx, conn => {
            sqlx::query(RETIRE_FEATURE)
                .bind(name)
                .bind(now_ms)
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })
        .db_context("retiring a feature")?;
    }
    with_tx!(&mut tx, conn => {
        sqlx::query(DELETE_RETIRED_GRANTS)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("revoking retired permissions")?;

    with_tx!(&mut tx, conn => {
        sqlx::query(GRANT_ALL_ACTIVE)
            .bind(DbUuid(ADMIN_ROLE_ID))
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("granting the admin role every permission")?;

    let granted: Vec<String> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(SELECT_ROLE_GRANTS)
            .bind(DbUuid(USER_ROLE_ID))
            .fetch_all(&mut *conn)
            .await
    })
    .db_context("reading the user role's grants")?;
    for name in granted
        .iter()
        .filter(|p| !user_defaults.contains(&p.as_str()))
    {
        with_tx!(&mut tx, conn => {
            sqlx::query(REVOKE_GRANT)
                .bind(DbUuid(USER_ROLE_ID))
                .bind(name)
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })
        .db_context("revoking a permission from the user role")?;
    }
    for name in user_defaults
        .iter()
        .filter(|p| !granted.iter().any(|g| g == **p))
    {
        with_tx!(&mut tx, conn => {
            sqlx::query(GRANT)
                .bind(DbUuid(USER_ROLE_ID))
                .bind(*name)
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })
        .db_context("granting a permission to the user role")?;
    }
    tx.commit().await?;
    Ok(report)
}

#[derive(sqlx::FromRow)]
struct PermissionRow {
    name: String,
    feature: String,
    description: String,
}

const SELECT_ACTIVE_PERMISSIONS: &str =
    "SELECT name, feature, description FROM permissions WHERE retired_at_ms IS NULL";

/// Every active permission, sorted by name.
pub async fn list_permissions(db: &Db) -> Result<Vec<PermissionInfo>> {
    let rows: Vec<PermissionRow> = with_pool!(db, pool => {
        sqlx::query_as(SELECT_ACTIVE_PERMISSIONS).fetch_all(pool).await
    })
    .db_context("listing permissions")?;
    let mut permissions: Vec<PermissionInfo> = rows
        .into_iter()
        .map(|row| PermissionInfo {
            name: row.name,
            feature: row.feature,
            description: row.description,
        })
        .collect();
    // Sorted here: PostgreSQL's collation may order `_` and `:` differently from bytes.
    permissions.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(permissions)
}

// --- Roles ---------------------------------------------------------------------------------

// The role view. The dialects differ only in the aggregate, as in store::users.
const SQLITE_SELECT_ROLES: &str = "SELECT r.id, r.name, r.description, r.built_in, \
     r.created_at_ms, r.updated_at_ms, \
     (SELECT group_concat(rp.permission, ',') FROM role_permissions rp \
      JOIN permissions p ON p.name = rp.permission \
      WHERE rp.role_id = r.id AND p.retired_at_ms IS NULL) AS permissions \
     FROM roles r";
const POSTGRES_SELECT_ROLES: &str = "SELECT r.id, r.name, r.description, r.built_in, \
     r.created_at_ms, r.updated_at_ms, \
     (SELECT string_agg(rp.permission, ',') FROM role_permissions rp \
      JOIN permissions p ON p.name = rp.permission \
      WHERE rp.role_id = r.id AND p.retired_at_ms IS NULL) AS permissions \
     FROM roles r";

const SQLITE_SELECT_ROLE: &str = "SELECT r.id, r.name, r.description, r.built_in, \
     r.created_at_ms, r.updated_at_ms, \
     (SELECT group_concat(rp.permission, ',') FROM role_permissions rp \
      JOIN permissions p ON p.name = rp.permission \
      WHERE rp.role_id = r.id AND p.retired_at_ms IS NULL) AS permissions \
     FROM roles r WHERE r.id = $1";
const POSTGRES_SELECT_ROLE: &str = "SELECT r.id, r.name, r.description, r.built_in, \
     r.created_at_ms, r.updated_at_ms, \
     (SELECT string_agg(rp.permission, ',') FROM role_permissions rp \
      JOIN permissions p ON p.name = rp.permission \
      WHERE rp.role_id = r.id AND p.retired_at_ms IS NULL) AS permissions \
     FROM roles r WHERE r.id = $1";

fn select_role_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => SQLITE_SELECT_ROLE,
        Backend::Postgres => POSTGRES_SELECT_ROLE,
    }
}

/// Every role with its active grants, sorted by name.
pub async fn list_roles(db: &Db) -> Result<Vec<Role>> {
    let sql = match db.backend() {
        Backend::Sqlite => SQLITE_SELECT_ROLES,
        Backend::Postgres => POSTGRES_SELECT_ROLES,
    };
    let rows: Vec<RoleRow> = with_pool!(db, pool => {
        sqlx::query_as(sql).fetch_all(pool).await
    })
    .db_context("listing roles")?;
    let mut roles: Vec<Role> = rows.into_iter().map(Role::from).collect();
    roles.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(roles)
}

/// The role `id` with its active grants; `None` when there is no such role.
pub async fn get_role(db: &Db, id: Uuid) -> Result<Option<Role>> {
    let sql = select_role_sql(db.backend());
    let row: Option<RoleRow> = with_pool!(db, pool => {
        sqlx::query_as(sql).bind(DbUuid(id)).fetch_optional(pool).await
    })
    .db_context("reading a role")?;
    Ok(row.map(Role::from))
}

/// [`get_role`] inside `tx`, so a change and the view returned after it are one snapshot.
async fn get_role_in(tx: &mut Tx, id: Uuid) -> Result<Option<Role>> {
    let sql = select_role_sql(tx.backend());
    let row: Option<RoleRow> = with_tx!(tx, conn => {
        sqlx::query_as(sql).bind(DbUuid(id)).fetch_optional(&mut *conn).await
    })
    .db_context("reading a role")?;
    Ok(row.map(Role::from))
}

// One query: the user's state gates everything, retired permissions grant nothing.
const SELECT_USER_PERMISSIONS: &str = "SELECT DISTINCT rp.permission FROM users u \
     JOIN user_roles ur ON ur.user_id = u.id \
     JOIN role_permissions rp ON rp.role_id = ur.role_id \
     JOIN permissions p ON p.name = rp.permission \
     WHERE u.id = $1 AND u.status = 'active' AND u.deleted_at_ms IS NULL \
       AND p.retired_at_ms IS NULL";

/// The active permissions `user_id` holds through any of its roles; empty when the user
/// is missing, disabled or deleted.
pub async fn user_permissions(db: &Db, user_id: Uuid) -> Result<BTreeSet<String>> {
    let names: Vec<String> = with_pool!(db, pool => {
        sqlx::query_scalar(SELECT_USER_PERMISSIONS)
            .bind(DbUuid(user_id))
            .fetch_all(pool)
            .await
    })
    .db_context("reading a user's permissions")?;
    Ok(names.into_iter().collect())
}

/// [`user_permissions`] inside `tx`: after [`lock`], what the user holds as of this
/// transaction's commit, not as of some earlier read.
pub(crate) async fn user_permissions_in(tx: &mut Tx, user_id: Uuid) -> Result<BTreeSet<String>> {
    let names: Vec<String> = with_tx!(tx, conn => {
        sqlx::query_scalar(SELECT_USER_PERMISSIONS)
            .bind(DbUuid(user_id))
            .fetch_all(&mut *conn)
            .await
    })
    .db_context("reading a user's permissions")?;
    Ok(names.into_iter().collect())
}

// Unlike SELECT_USER_PERMISSIONS, not gated on the user's state: what the roles of a
// disabled user would give back the moment it is enabled again.
const SELECT_PERMISSIONS_OF_ROLES_OF: &str = "SELECT DISTINCT rp.permission FROM user_roles ur \
     JOIN role_permissions rp ON rp.role_id = ur.role_id \
     JOIN permissions p ON p.name = rp.permission \
     WHERE ur.user_id = $1 AND p.retired_at_ms IS NULL";

/// The active permissions the roles of `user_id` grant, whatever the user's status.
pub(crate) async fn role_permissions_of_in(tx: &mut Tx, user_id: Uuid) -> Result<BTreeSet<String>> {
    let names: Vec<String> = with_tx!(tx, conn => {
        sqlx::query_scalar(SELECT_PERMISSIONS_OF_ROLES_OF)
            .bind(DbUuid(user_id))
            .fetch_all(&mut *conn)
            .await
    })
    .db_context("reading the permissions of a user's roles")?;
    Ok(names.into_iter().collect())
}

/// The anti-escalation check (contract §5–6): `Forbidden` unless `grantor` holds every
/// permission of `concerned`, read in `tx`. Call it after [`lock`] and before any write;
/// `None` (the operator: the CLI, a test's set-up) is not checked.
pub(crate) async fn ensure_grantor_holds_in<'a>(
    tx: &mut Tx,
    grantor: Option<Uuid>,
    concerned: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let Some(grantor) = grantor else {
        return Ok(());
    };
    let concerned: Vec<&str> = concerned.into_iter().collect();
    if concerned.is_empty() {
        return Ok(());
    }
    let own = user_permissions_in(tx, grantor).await?;
    if beyond_own(&own, concerned).is_empty() {
        Ok(())
    } else {
        Err(Error::Forbidden)
    }
}

const SELECT_ACTIVE_PERMISSION_NAMES: &str =
    "SELECT name FROM permissions WHERE retired_at_ms IS NULL";
const SELECT_ROLE_NAMES: &str = "SELECT name FROM roles";

/// The names of `names` that are no active permission (unknown or retired), once each, in
/// the order given: so a caller can refuse a request before writing anything.
pub async fn unknown_permissions(db: &Db, names: &[String]) -> Result<Vec<String>> {
    let known: Vec<String> = with_pool!(db, pool => {
        sqlx::query_scalar(SELECT_ACTIVE_PERMISSION_NAMES).fetch_all(pool).await
    })
    .db_context("reading permission names")?;
    Ok(missing_from(names, &known))
}

/// The names of `names` that are no role, once each, in the order given.
pub async fn unknown_roles(db: &Db, names: &[String]) -> Result<Vec<String>> {
    let known: Vec<String> = with_pool!(db, pool => {
        sqlx::query_scalar(SELECT_ROLE_NAMES).fetch_all(pool).await
    })
    .db_context("reading role names")?;
    Ok(missing_from(names, &known))
}

/// The entries of `names` not in `known`, deduplicated, in their first order. The
/// catalogue and the role list are small, so reading them whole beats building an `IN`
/// list (which would need SQL built at run time).
fn missing_from(names: &[String], known: &[String]) -> Vec<String> {
    let known: BTreeSet<&str> = known.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    names
        .iter()
        .filter(|name| !known.contains(name.as_str()) && seen.insert(name.as_str()))
        .cloned()
        .collect()
}

/// `Validation` with one entry for `field` per unknown name.
fn unknown_names_error(field: &str, what: &str, unknown: &[String]) -> Error {
    Error::Validation(
        unknown
            .iter()
            .map(|name| FieldError::new(field, format!("{name} is not a known {what}")))
            .collect(),
    )
}

/// Checks inside `tx` that every name of `permissions` is an active permission.
async fn check_permissions_in(tx: &mut Tx, permissions: &BTreeSet<&str>) -> Result<()> {
    let known: Vec<String> = with_tx!(tx, conn => {
        sqlx::query_scalar(SELECT_ACTIVE_PERMISSION_NAMES).fetch_all(&mut *conn).await
    })
    .db_context("reading permission names")?;
    let names: Vec<String> = permissions.iter().map(|p| (*p).to_owned()).collect();
    let unknown = missing_from(&names, &known);
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(unknown_names_error("permissions", "permission", &unknown))
    }
}

/// Replaces the grants of `role_id` with `permissions` inside `tx`.
async fn replace_grants_in(tx: &mut Tx, role_id: Uuid, permissions: &BTreeSet<&str>) -> Result<()> {
    with_tx!(tx, conn => {
        sqlx::query(DELETE_ROLE_GRANTS)
            .bind(DbUuid(role_id))
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("revoking a role's permissions")?;
    for name in permissions {
        with_tx!(tx, conn => {
            sqlx::query(GRANT)
                .bind(DbUuid(role_id))
                .bind(*name)
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })
        .db_context("granting a permission to a role")?;
    }
    Ok(())
}

const INSERT_ROLE: &str = "INSERT INTO roles \
     (id, name, description, built_in, created_at_ms, updated_at_ms) \
     VALUES ($1, $2, $3, FALSE, $4, $4)";
const DELETE_ROLE_GRANTS: &str = "DELETE FROM role_permissions WHERE role_id = $1";

/// Creates a custom role granting `permissions` and appends `audit` (its target set to the
/// new role), in one transaction. A taken name is `Conflict("role name taken")`; a
/// permission that is unknown or retired is `Validation` for `permissions`; a permission
/// `grantor` (when given) does not hold is `Forbidden` (see the module docs); in each case
/// nothing is written.
pub async fn create_role(
    db: &Db,
    grantor: Option<Uuid>,
    name: &RoleName,
    description: &str,
    permissions: &[String],
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<Role> {
    let id = Uuid::now_v7();
    let permissions: BTreeSet<&str> = permissions.iter().map(String::as_str).collect();
    let mut tx = db.begin().await?;
    // Not a holder change, but it reads the catalogue that a sync may be retiring.
    lock(&mut tx).await?;
    check_permissions_in(&mut tx, &permissions).await?;
    ensure_grantor_holds_in(&mut tx, grantor, permissions.iter().copied()).await?;
    with_tx!(&mut tx, conn => {
        sqlx::query(INSERT_ROLE)
            .bind(DbUuid(id))
            .bind(name.as_str())
            .bind(description)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("inserting a role")
    .map_err(|err| match err {
        Error::Conflict(_) => Error::Conflict("role name taken".to_owned()),
        other => other,
    })?;
    replace_grants_in(&mut tx, id, &permissions).await?;
    let role = get_role_in(&mut tx, id).await?.ok_or(Error::NotFound)?;
    let event = audit.clone().with_target("role", id.to_string());
    crate::audit::append(&mut tx, &event, now_ms).await?;
    tx.commit().await?;
    Ok(role)
}

const SELECT_ROLE_BUILT_IN: &str = "SELECT built_in FROM roles WHERE id = $1";

/// `NotFound` for a missing role, `Conflict` for a built-in one.
async fn check_custom_role_in(tx: &mut Tx, id: Uuid) -> Result<()> {
    let built_in: Option<bool> = with_tx!(tx, conn => {
        sqlx::query_scalar(SELECT_ROLE_BUILT_IN)
            .bind(DbUuid(id))
            .fetch_optional(&mut *conn)
            .await
    })
    .db_context("reading a role")?;
    match built_in {
        None => Err(Error::NotFound),
        Some(true) => Err(Error::Conflict(
            "built-in roles cannot be changed".to_owned(),
        )),
        Some(false) => Ok(()),
    }
}

const SELECT_ROLE_GRANTS_PERMISSION: &str = "SELECT EXISTS (SELECT 1 FROM role_permissions \
     WHERE role_id = $1 AND permission = $2)";

async fn role_grants_in(tx: &mut Tx, role_id: Uuid, permission: &str) -> Result<bool> {
    with_tx!(tx, conn => {
        sqlx::query_scalar(SELECT_ROLE_GRANTS_PERMISSION)
            .bind(DbUuid(role_id))
            .bind(permission)
            .fetch_one(&mut *conn)
            .await
    })
    .db_context("reading a role's grants")
}

const UPDATE_ROLE: &str = "UPDATE roles SET description = COALESCE($2, description), \
     updated_at_ms = $3 WHERE id = $1";

/// Changes a custom role's description and, when `permissions` is given, replaces its
/// grants; appends `audit`; in one transaction. `NotFound` for a missing role,
/// `Conflict("built-in roles cannot be changed")` for `admin` and `user`, `Validation`
/// for an unknown or retired permission, and `Forbidden` when the new grants would leave
/// no active user holding `roles:assign` or add a permission `grantor` (when given) does
/// not hold (see the module docs); nothing is written in any of these cases.
pub async fn update_role(
    db: &Db,
    grantor: Option<Uuid>,
    id: Uuid,
    description: Option<&str>,
    permissions: Option<&[String]>,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<Role> {
    let permissions: Option<BTreeSet<&str>> =
        permissions.map(|names| names.iter().map(String::as_str).collect());
    let mut tx = db.begin().await?;
    lock(&mut tx).await?;
    check_custom_role_in(&mut tx, id).await?;
    if let Some(permissions) = &permissions {
        check_permissions_in(&mut tx, permissions).await?;
        // Only what is added must be within the grantor's own permissions.
        let current: Vec<String> = with_tx!(&mut tx, conn => {
            sqlx::query_scalar(SELECT_ROLE_GRANTS)
                .bind(DbUuid(id))
                .fetch_all(&mut *conn)
                .await
        })
        .db_context("reading a role's grants")?;
        let added = permissions
            .iter()
            .copied()
            .filter(|p| !current.iter().any(|c| c == p));
        ensure_grantor_holds_in(&mut tx, grantor, added).await?;
    }
    with_tx!(&mut tx, conn => {
        sqlx::query(UPDATE_ROLE)
            .bind(DbUuid(id))
            .bind(description)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("updating a role")?;
    if let Some(permissions) = &permissions {
        let drops_holder = !permissions.contains(ROLES_ASSIGN)
            && role_grants_in(&mut tx, id, ROLES_ASSIGN).await?;
        replace_grants_in(&mut tx, id, permissions).await?;
        if drops_holder {
            ensure_holder(&mut tx, ROLES_ASSIGN).await?;
        }
    }
    let role = get_role_in(&mut tx, id).await?.ok_or(Error::NotFound)?;
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(role)
}

const DELETE_ROLE_HOLDERS: &str = "DELETE FROM user_roles WHERE role_id = $1";
const DELETE_ROLE: &str = "DELETE FROM roles WHERE id = $1";

/// Deletes a custom role, its grants and every user's membership, and appends `audit`, in
/// one transaction. Errors as [`update_role`]. Call [`users_with_role`] first to learn
/// whose permissions change.
pub async fn delete_role(db: &Db, id: Uuid, now_ms: i64, audit: &NewAuditEvent) -> Result<()> {
    let mut tx = db.begin().await?;
    lock(&mut tx).await?;
    check_custom_role_in(&mut tx, id).await?;
    let granted_holder = role_grants_in(&mut tx, id, ROLES_ASSIGN).await?;
    for sql in [DELETE_ROLE_HOLDERS, DELETE_ROLE_GRANTS, DELETE_ROLE] {
        with_tx!(&mut tx, conn => {
            sqlx::query(sql)
                .bind(DbUuid(id))
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })
        .db_context("deleting a role")?;
    }
    if granted_holder {
        ensure_holder(&mut tx, ROLES_ASSIGN).await?;
    }
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(())
}

const SELECT_ROLE_IDS: &str = "SELECT id, name FROM roles";
const SELECT_USER_ROLE_IDS: &str = "SELECT role_id FROM user_roles WHERE user_id = $1";
const SELECT_USER_ROLE_NAMES: &str = "SELECT r.name FROM user_roles ur \
     JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = $1 ORDER BY r.name";
const SELECT_ACTIVE_ROLE_GRANTS: &str = "SELECT rp.permission FROM role_permissions rp \
     JOIN permissions p ON p.name = rp.permission \
     WHERE rp.role_id = $1 AND p.retired_at_ms IS NULL";
const DELETE_USER_ROLES: &str = "DELETE FROM user_roles WHERE user_id = $1";
const INSERT_USER_ROLE: &str = "INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2)";
const TOUCH_LIVE_USER: &str =
    "UPDATE users SET updated_at_ms = $2 WHERE id = $1 AND deleted_at_ms IS NULL";

/// Replaces the roles of `user_id` with the roles named `roles` and appends `audit`, in
/// one transaction, returning the user view. `Validation` for `roles` when a name is no
/// role, `NotFound` for a missing or deleted user, `Forbidden` when the change would leave
/// no active user holding `roles:assign` or when a role the user gains grants a permission
/// `grantor` (when given) does not hold (see the module docs); nothing is written in any
/// of these cases. The event's `details` get `from` and `to`: the user's role names as this
/// transaction found and left them (sorted), so concurrent changes of one user each record
/// the change they made.
pub async fn set_user_roles(
    db: &Db,
    grantor: Option<Uuid>,
    user_id: Uuid,
    roles: &[String],
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<User> {
    let mut tx = db.begin().await?;
    lock(&mut tx).await?;
    let known: Vec<(DbUuid, String)> = with_tx!(&mut tx, conn => {
        sqlx::query_as(SELECT_ROLE_IDS).fetch_all(&mut *conn).await
    })
    .db_context("reading roles")?;
    let by_name: BTreeMap<&str, Uuid> = known
        .iter()
        .map(|(id, name)| (name.as_str(), id.0))
        .collect();
    let names: Vec<String> = known.iter().map(|(_, name)| name.clone()).collect();
    let unknown = missing_from(roles, &names);
    if !unknown.is_empty() {
        return Err(unknown_names_error("roles", "role", &unknown));
    }
    let role_ids: BTreeSet<Uuid> = roles
        .iter()
        .filter_map(|name| by_name.get(name.as_str()).copied())
        .collect();

    let held = user_holds_in(&mut tx, user_id, ROLES_ASSIGN).await?;
    let touched = with_tx!(&mut tx, conn => {
        sqlx::query(TOUCH_LIVE_USER)
            .bind(DbUuid(user_id))
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("updating a user")?;
    if touched == 0 {
        return Err(Error::NotFound);
    }
    let from: Vec<String> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(SELECT_USER_ROLE_NAMES)
            .bind(DbUuid(user_id))
            .fetch_all(&mut *conn)
            .await
    })
    .db_context("reading a user's roles")?;
    if grantor.is_some() {
        let current: Vec<DbUuid> = with_tx!(&mut tx, conn => {
            sqlx::query_scalar(SELECT_USER_ROLE_IDS)
                .bind(DbUuid(user_id))
                .fetch_all(&mut *conn)
                .await
        })
        .db_context("reading a user's roles")?;
        let mut granted = BTreeSet::new();
        for role_id in role_ids
            .iter()
            .filter(|id| !current.contains(&DbUuid(**id)))
        {
            let permissions: Vec<String> = with_tx!(&mut tx, conn => {
                sqlx::query_scalar(SELECT_ACTIVE_ROLE_GRANTS)
                    .bind(DbUuid(*role_id))
                    .fetch_all(&mut *conn)
                    .await
            })
            .db_context("reading a role's grants")?;
            granted.extend(permissions);
        }
        ensure_grantor_holds_in(&mut tx, grantor, granted.iter().map(String::as_str)).await?;
    }
    with_tx!(&mut tx, conn => {
        sqlx::query(DELETE_USER_ROLES)
            .bind(DbUuid(user_id))
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("revoking a user's roles")?;
    for role_id in role_ids {
        with_tx!(&mut tx, conn => {
            sqlx::query(INSERT_USER_ROLE)
                .bind(DbUuid(user_id))
                .bind(DbUuid(role_id))
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })
        .db_context("granting a role")?;
    }
    if held {
        ensure_holder(&mut tx, ROLES_ASSIGN).await?;
    }
    let user = crate::users::view_in(&mut tx, user_id)
        .await?
        .ok_or(Error::NotFound)?;
    let to: BTreeSet<&str> = roles.iter().map(String::as_str).collect();
    let mut details = match &audit.details {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    details.insert("from".to_owned(), serde_json::json!(from));
    details.insert("to".to_owned(), serde_json::json!(to));
    let audit = audit
        .clone()
        .with_details(serde_json::Value::Object(details));
    crate::audit::append(&mut tx, &audit, now_ms).await?;
    tx.commit().await?;
    Ok(user)
}

const SELECT_ROLE_MEMBERS: &str = "SELECT user_id FROM user_roles WHERE role_id = $1";

/// The users holding `role_id` (deleted and disabled ones included), sorted: whose
/// permissions a change of that role changes.
pub async fn users_with_role(db: &Db, role_id: Uuid) -> Result<Vec<Uuid>> {
    let ids: Vec<DbUuid> = with_pool!(db, pool => {
        sqlx::query_scalar(SELECT_ROLE_MEMBERS)
            .bind(DbUuid(role_id))
            .fetch_all(pool)
            .await
    })
    .db_context("listing a role's users")?;
    let mut ids: Vec<Uuid> = ids.into_iter().map(Uuid::from).collect();
    ids.sort_unstable();
    Ok(ids)
}

// --- The holder guard ----------------------------------------------------------------------

// An active, non-deleted user holding the active `$1` through any role; with `$2` bound,
// that user only.
const SELECT_HOLDER_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM users u \
     JOIN user_roles ur ON ur.user_id = u.id \
     JOIN role_permissions rp ON rp.role_id = ur.role_id \
     JOIN permissions p ON p.name = rp.permission \
     WHERE rp.permission = $1 AND p.retired_at_ms IS NULL \
       AND u.status = 'active' AND u.deleted_at_ms IS NULL \
       AND ($2 IS NULL OR u.id = $2))";

async fn holder_exists_in(tx: &mut Tx, permission: &str, user_id: Option<Uuid>) -> Result<bool> {
    with_tx!(tx, conn => {
        sqlx::query_scalar(SELECT_HOLDER_EXISTS)
            .bind(permission)
            .bind(user_id.map(DbUuid))
            .fetch_one(&mut *conn)
            .await
    })
    .db_context("counting permission holders")
}

/// Whether `user_id` is an active, non-deleted user holding `permission` right now (in
/// `tx`'s view): whether a change to that user can remove a holder.
pub(crate) async fn user_holds_in(tx: &mut Tx, user_id: Uuid, permission: &str) -> Result<bool> {
    holder_exists_in(tx, permission, Some(user_id)).await
}

/// The holder guard (contract §5): `Forbidden` unless some active, non-deleted user holds
/// the active `permission` through a role, as `tx` sees it. Run it after the change and
/// before the commit, in a transaction that took [`lock`] first; the caller drops `tx` on
/// the error, which rolls the change back.
pub(crate) async fn ensure_holder(tx: &mut Tx, permission: &str) -> Result<()> {
    if holder_exists_in(tx, permission, None).await? {
        Ok(())
    } else {
        Err(Error::Forbidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_from_keeps_first_order_once() {
        let known = ["a:b".to_owned(), "c:d".to_owned()];
        let names = ["x:y", "a:b", "x:y", "e:f"].map(str::to_owned);
        assert_eq!(missing_from(&names, &known), ["x:y", "e:f"]);
        assert!(missing_from(&[], &known).is_empty());
    }
}
