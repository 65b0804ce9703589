//! Owner-scoped tables, safe by construction (contract §7): the one way a module stores
//! objects that belong to a user.
//!
//! A module declares its table with `owned_table!`: the table name, its own columns and
//! how they are inserted and patched. Every statement comes from the macro, and each one
//! that reads, changes or deletes rows carries the owner condition
//! `($2 IS NULL OR owner_id = $2)`; module code neither writes that condition nor binds the
//! owner. The owner is bound here, from a [`Scope`]: `Owner(id)` binds the id, `Any` binds
//! NULL. So another user's row is indistinguishable from a missing one (`None`/`false`,
//! nothing written, no event) unless the scope is `Any`, which the API's owned-resource kit
//! (`rampart_api::owned`) hands out only to a caller holding the override permission.
//!
//! Every change commits together with its audit event ([`audited`]); when nothing matched,
//! the transaction rolls back and no event is appended.
//!
//! Conventions of the kit: an owned table has `id` (UUIDv7, so id order is creation order
//! and the keyset of its pages), `owner_id`, `created_at_ms` and `updated_at_ms`, indexed on
//! `(owner_id, id)`. Parameters `$1`–`$3` are the kit's (`$1` the id, `$2` the owner, `$3`
//! the current time); the module's own values are `$4`, `$5`… in the order its [`Bind`]
//! implementation returns them. SQL is only ever compile-time text (`concat!` of the
//! module's literals), never built from input.
//!
//! [`Scope`] is a disallowed type outside the kit (`clippy.toml`): module code that imports
//! it or names it as a type fails clippy. (A fully qualified `…::Scope::Any` expression
//! slips past that lint; the shared ownership contract test then fails on the widened
//! read or write.)
#![allow(clippy::disallowed_types)]

use std::marker::PhantomData;

use rampart_core::audit::NewAuditEvent;
use rampart_core::{Error, Result};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Database, Encode, Row as _, Type};
use uuid::Uuid;

use crate::error::DbResultExt;
use crate::types::DbUuid;
use crate::{Db, Tx};

/// Whose rows a call may see or change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only the rows of this user.
    Owner(Uuid),
    /// Any user's rows: for callers holding the feature's `read_any` (reads) or
    /// `manage_any` (reads and writes) permission, as the API decides.
    Any,
}

impl Scope {
    /// The owner bound as `$2`: NULL matches every owner.
    fn owner(self) -> Option<DbUuid> {
        match self {
            Scope::Owner(id) => Some(DbUuid(id)),
            Scope::Any => None,
        }
    }
}

/// One row of an owned table: the kit's columns and the module's `fields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned<T> {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub fields: T,
}

macro_rules! owned_from_row {
    ($row:ty) => {
        impl<'r, T: sqlx::FromRow<'r, $row>> sqlx::FromRow<'r, $row> for Owned<T> {
            fn from_row(row: &'r $row) -> std::result::Result<Self, sqlx::Error> {
                Ok(Self {
                    id: row.try_get::<DbUuid, _>("id")?.0,
                    owner_id: row.try_get::<DbUuid, _>("owner_id")?.0,
                    created_at_ms: row.try_get("created_at_ms")?,
                    updated_at_ms: row.try_get("updated_at_ms")?,
                    fields: T::from_row(row)?,
                })
            }
        }
    };
}
owned_from_row!(SqliteRow);
owned_from_row!(PgRow);

/// A value of a module's own column, bound as `$4`, `$5`… `None` binds NULL (in a patch:
/// keep the stored value, with `COALESCE($n, column)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Value::Text(v)
    }
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Bool(Some(v))
    }
}

impl From<Option<bool>> for Value<'_> {
    fn from(v: Option<bool>) -> Self {
        Value::Bool(v)
    }
}

/// The module's values for its own placeholders, in order (`$4`, `$5`…).
pub trait Bind {
    fn values(&self) -> Vec<Value<'_>>;
}

/// A row type both backends can decode (`#[derive(sqlx::FromRow)]` gives it).
pub trait Fields:
    for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin + 'static
{
}

impl<T> Fields for T where
    T: for<'r> sqlx::FromRow<'r, SqliteRow>
        + for<'r> sqlx::FromRow<'r, PgRow>
        + Send
        + Unpin
        + 'static
{
}

/// The statements of one owned table, made by [`owned_table!`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Statements {
    pub insert: &'static str,
    pub select: &'static str,
    pub list: &'static str,
    pub update: &'static str,
    pub delete: &'static str,
}

/// The owner condition every statement but the insert carries.
pub const OWNER_CONDITION: &str = "($2 IS NULL OR owner_id = $2)";

/// An owner-scoped table whose module columns are `T` and whose patches are `P`.
#[derive(Debug)]
pub struct OwnedTable<T, P> {
    sql: Statements,
    types: PhantomData<fn() -> (T, P)>,
}

impl<T, P> Clone for OwnedTable<T, P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, P> Copy for OwnedTable<T, P> {}

/// Declares an owner-scoped table (see the module docs): every statement, with the owner
/// condition, is built at compile time from these literals.
///
/// ```ignore
/// owned_table! {
///     pub const TABLE: OwnedTable<Note, NotePatch> = "notes" {
///         columns: "title, body",
///         insert: "$4, $5",
///         update: "title = COALESCE($4, title), body = COALESCE($5, body)",
///     }
/// }
/// ```
macro_rules! owned_table {
    (
        $(#[$doc:meta])*
        $vis:vis const $name:ident: OwnedTable<$fields:ty, $patch:ty> = $table:literal {
            columns: $columns:literal,
            insert: $insert:literal,
            update: $update:literal $(,)?
        }
    ) => {
        $(#[$doc])*
        $vis const $name: $crate::owned::OwnedTable<$fields, $patch> =
            $crate::owned::OwnedTable::from_statements($crate::owned::Statements {
                insert: concat!(
                    "INSERT INTO ", $table,
                    " (id, owner_id, created_at_ms, updated_at_ms, ", $columns,
                    ") VALUES ($1, $2, $3, $3, ", $insert,
                    ") RETURNING id, owner_id, created_at_ms, updated_at_ms, ", $columns
                ),
                select: concat!(
                    "SELECT id, owner_id, created_at_ms, updated_at_ms, ", $columns,
                    " FROM ", $table,
                    " WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)"
                ),
                list: concat!(
                    "SELECT id, owner_id, created_at_ms, updated_at_ms, ", $columns,
                    " FROM ", $table,
                    " WHERE ($2 IS NULL OR owner_id = $2) AND ($1 IS NULL OR id > $1)",
                    " ORDER BY id LIMIT $3"
                ),
                update: concat!(
                    "UPDATE ", $table, " SET updated_at_ms = $3, ", $update,
                    " WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)",
                    " RETURNING id, owner_id, created_at_ms, updated_at_ms, ", $columns
                ),
                delete: concat!(
                    "DELETE FROM ", $table,
                    " WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)"
                ),
            });
    };
}
pub(crate) use owned_table;

/// Binds the module's values after the kit's three parameters.
fn bind_values<'q, DB, O>(
    mut query: sqlx::query::QueryAs<'q, DB, O, <DB as Database>::Arguments>,
    values: &[Value<'q>],
) -> sqlx::query::QueryAs<'q, DB, O, <DB as Database>::Arguments>
where
    DB: Database,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    Option<bool>: Encode<'q, DB> + Type<DB>,
{
    for value in values {
        query = match *value {
            Value::Text(v) => query.bind(v),
            Value::Int(v) => query.bind(v),
            Value::Bool(v) => query.bind(v),
        };
    }
    query
}

impl<T, P> OwnedTable<T, P> {
    #[doc(hidden)]
    pub const fn from_statements(sql: Statements) -> Self {
        Self {
            sql,
            types: PhantomData,
        }
    }

    /// Every statement of the table (for tests that check the owner condition).
    pub fn statements(&self) -> [&'static str; 5] {
        let s = self.sql;
        [s.insert, s.select, s.list, s.update, s.delete]
    }
}

impl<T: Fields + Bind, P: Bind> OwnedTable<T, P> {
    /// Stores a new row of `owner` and appends `audit`, in one transaction.
    pub async fn create(
        &self,
        db: &Db,
        id: Uuid,
        owner: Uuid,
        fields: &T,
        now_ms: i64,
        audit: &NewAuditEvent,
    ) -> Result<Owned<T>> {
        let values = fields.values();
        let sql = self.sql.insert;
        let created = audited(db, audit, now_ms, async |tx: &mut Tx| {
            with_tx!(tx, conn => {
                bind_values(
                    sqlx::query_as::<_, Owned<T>>(sql)
                        .bind(DbUuid(id))
                        .bind(DbUuid(owner))
                        .bind(now_ms),
                    &values,
                )
                .fetch_one(&mut *conn)
                .await
            })
            .db_context("inserting an owned row")
            .map(Some)
        })
        .await?;
        created.ok_or_else(|| Error::internal(anyhow::anyhow!("an insert returned no row")))
    }

    /// The row `id` if `scope` covers it; `None` when it is missing or someone else's.
    pub async fn get(&self, db: &Db, id: Uuid, scope: Scope) -> Result<Option<Owned<T>>> {
        with_pool!(db, pool => {
            sqlx::query_as(self.sql.select)
                .bind(DbUuid(id))
                .bind(scope.owner())
                .fetch_optional(pool)
                .await
        })
        .db_context("reading an owned row")
    }

    /// At most `limit` rows `scope` covers, in id (creation) order, after the id `after`.
    pub async fn list(
        &self,
        db: &Db,
        scope: Scope,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Owned<T>>> {
        with_pool!(db, pool => {
            sqlx::query_as(self.sql.list)
                .bind(after.map(DbUuid))
                .bind(scope.owner())
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })
        .db_context("listing owned rows")
    }

    /// Applies `patch` to the row `id` if `scope` covers it, appending `audit` in the same
    /// transaction. `None`, with nothing written and no event, when the row is missing or
    /// someone else's.
    pub async fn update(
        &self,
        db: &Db,
        id: Uuid,
        scope: Scope,
        patch: &P,
        now_ms: i64,
        audit: &NewAuditEvent,
    ) -> Result<Option<Owned<T>>> {
        let values = patch.values();
        let sql = self.sql.update;
        audited(db, audit, now_ms, async |tx: &mut Tx| {
            with_tx!(tx, conn => {
                bind_values(
                    sqlx::query_as::<_, Owned<T>>(sql)
                        .bind(DbUuid(id))
                        .bind(scope.owner())
                        .bind(now_ms),
                    &values,
                )
                .fetch_optional(&mut *conn)
                .await
            })
            .db_context("updating an owned row")
        })
        .await
    }

    /// Deletes the row `id` if `scope` covers it, appending `audit` in the same
    /// transaction. `false`, with nothing written and no event, when the row is missing or
    /// someone else's.
    pub async fn delete(
        &self,
        db: &Db,
        id: Uuid,
        scope: Scope,
        now_ms: i64,
        audit: &NewAuditEvent,
    ) -> Result<bool> {
        let sql = self.sql.delete;
        let deleted = audited(db, audit, now_ms, async |tx: &mut Tx| {
            with_tx!(tx, conn => {
                sqlx::query(sql)
                    .bind(DbUuid(id))
                    .bind(scope.owner())
                    .execute(&mut *conn)
                    .await
                    .map(|done| done.rows_affected())
            })
            .db_context("deleting an owned row")
            .map(|deleted| (deleted > 0).then_some(()))
        })
        .await?;
        Ok(deleted.is_some())
    }
}

/// Runs `change` in a transaction and commits it together with `audit` when it changed
/// something (`Some`); when it matched nothing (`None`) or failed, the transaction rolls
/// back and no event is appended.
pub async fn audited<R>(
    db: &Db,
    audit: &NewAuditEvent,
    now_ms: i64,
    change: impl AsyncFnOnce(&mut Tx) -> Result<Option<R>>,
) -> Result<Option<R>> {
    let mut tx = db.begin().await?;
    let Some(changed) = change(&mut tx).await? else {
        tx.rollback().await?;
        return Ok(None);
    };
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(Some(changed))
}
