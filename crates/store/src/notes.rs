//! The `notes` table: the example business module, showing the ownership pattern
//! (contract §7).
//!
//! Invariant: ownership is part of every statement, never a check after loading. With
//! [`Scope::Owner`] each query names the owner in its `WHERE` clause (`id = $1 AND
//! owner_id = $2`), so another user's note is indistinguishable from a missing one:
//! `None`/`false`, nothing written, no event. [`Scope::Any`] drops that condition; only a
//! caller allowed to act on any note (`notes:read_any`/`notes:manage_any`, decided by the
//! API) passes it. Every change commits with its audit event. Titles and bodies arrive
//! validated and sanitised; this module stores them as given.

use rampart_core::Result;
use rampart_core::audit::NewAuditEvent;
use uuid::Uuid;

use crate::Db;
use crate::error::DbResultExt;
use crate::types::DbUuid;

/// Whose notes a call may see or change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only the notes of this user.
    Owner(Uuid),
    /// Any user's notes: for callers holding `notes:read_any` (reads) or
    /// `notes:manage_any` (reads and writes).
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub title: String,
    pub body: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct NoteRow {
    id: DbUuid,
    owner_id: DbUuid,
    title: String,
    body: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl From<NoteRow> for Note {
    fn from(row: NoteRow) -> Self {
        Note {
            id: row.id.into(),
            owner_id: row.owner_id.into(),
            title: row.title,
            body: row.body,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        }
    }
}

const INSERT_NOTE: &str = "INSERT INTO notes \
     (id, owner_id, title, body, created_at_ms, updated_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $5)";

/// Stores a new note of `owner` and appends `audit`, in one transaction.
pub async fn create(
    db: &Db,
    id: Uuid,
    owner: Uuid,
    title: &str,
    body: &str,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<Note> {
    let mut tx = db.begin().await?;
    with_tx!(&mut tx, conn => {
        sqlx::query(INSERT_NOTE)
            .bind(DbUuid(id))
            .bind(DbUuid(owner))
            .bind(title)
            .bind(body)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })
    .db_context("inserting a note")?;
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(Note {
        id,
        owner_id: owner,
        title: title.to_owned(),
        body: body.to_owned(),
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
    })
}

const LIST_OWN_NOTES: &str = "SELECT id, owner_id, title, body, created_at_ms, updated_at_ms \
     FROM notes WHERE owner_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3";

/// At most `limit` notes of `owner` in id order (creation order: UUIDv7), after the id
/// `after` when given.
pub async fn list_own(db: &Db, owner: Uuid, limit: u32, after: Option<Uuid>) -> Result<Vec<Note>> {
    let rows: Vec<NoteRow> = with_pool!(db, pool => {
        sqlx::query_as(LIST_OWN_NOTES)
            .bind(DbUuid(owner))
            .bind(after.map(DbUuid))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
    })
    .db_context("listing notes")?;
    Ok(rows.into_iter().map(Note::from).collect())
}

const SELECT_OWN_NOTE: &str = "SELECT id, owner_id, title, body, created_at_ms, updated_at_ms \
     FROM notes WHERE id = $1 AND owner_id = $2";
const SELECT_ANY_NOTE: &str = "SELECT id, owner_id, title, body, created_at_ms, updated_at_ms \
     FROM notes WHERE id = $1";

/// The note `id` if `scope` covers it; `None` when it is missing or someone else's.
pub async fn get(db: &Db, id: Uuid, scope: Scope) -> Result<Option<Note>> {
    let row: Option<NoteRow> = match scope {
        Scope::Owner(owner) => with_pool!(db, pool => {
            sqlx::query_as(SELECT_OWN_NOTE)
                .bind(DbUuid(id))
                .bind(DbUuid(owner))
                .fetch_optional(pool)
                .await
        }),
        Scope::Any => with_pool!(db, pool => {
            sqlx::query_as(SELECT_ANY_NOTE)
                .bind(DbUuid(id))
                .fetch_optional(pool)
                .await
        }),
    }
    .db_context("reading a note")?;
    Ok(row.map(Note::from))
}

// A missing title or body ($3, $4 NULL) keeps the stored one.
const UPDATE_OWN_NOTE: &str = "UPDATE notes SET title = COALESCE($3, title), \
     body = COALESCE($4, body), updated_at_ms = $5 WHERE id = $1 AND owner_id = $2 \
     RETURNING id, owner_id, title, body, created_at_ms, updated_at_ms";
const UPDATE_ANY_NOTE: &str = "UPDATE notes SET title = COALESCE($2, title), \
     body = COALESCE($3, body), updated_at_ms = $4 WHERE id = $1 \
     RETURNING id, owner_id, title, body, created_at_ms, updated_at_ms";

/// Changes the title and/or body of the note `id` if `scope` covers it, appending `audit`
/// in the same transaction. `None`, with nothing written and no event, when the note is
/// missing or someone else's.
pub async fn update(
    db: &Db,
    id: Uuid,
    scope: Scope,
    title: Option<&str>,
    body: Option<&str>,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<Option<Note>> {
    let mut tx = db.begin().await?;
    let row: Option<NoteRow> = match scope {
        Scope::Owner(owner) => with_tx!(&mut tx, conn => {
            sqlx::query_as(UPDATE_OWN_NOTE)
                .bind(DbUuid(id))
                .bind(DbUuid(owner))
                .bind(title)
                .bind(body)
                .bind(now_ms)
                .fetch_optional(&mut *conn)
                .await
        }),
        Scope::Any => with_tx!(&mut tx, conn => {
            sqlx::query_as(UPDATE_ANY_NOTE)
                .bind(DbUuid(id))
                .bind(title)
                .bind(body)
                .bind(now_ms)
                .fetch_optional(&mut *conn)
                .await
        }),
    }
    .db_context("updating a note")?;
    let Some(row) = row else {
        tx.rollback().await?;
        return Ok(None);
    };
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(Some(Note::from(row)))
}

const DELETE_OWN_NOTE: &str = "DELETE FROM notes WHERE id = $1 AND owner_id = $2";
const DELETE_ANY_NOTE: &str = "DELETE FROM notes WHERE id = $1";

/// Deletes the note `id` if `scope` covers it, appending `audit` in the same transaction.
/// `false`, with nothing written and no event, when the note is missing or someone else's.
pub async fn delete(
    db: &Db,
    id: Uuid,
    scope: Scope,
    now_ms: i64,
    audit: &NewAuditEvent,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let deleted = match scope {
        Scope::Owner(owner) => with_tx!(&mut tx, conn => {
            sqlx::query(DELETE_OWN_NOTE)
                .bind(DbUuid(id))
                .bind(DbUuid(owner))
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        }),
        Scope::Any => with_tx!(&mut tx, conn => {
            sqlx::query(DELETE_ANY_NOTE)
                .bind(DbUuid(id))
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        }),
    }
    .db_context("deleting a note")?;
    if deleted == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    crate::audit::append(&mut tx, audit, now_ms).await?;
    tx.commit().await?;
    Ok(true)
}
