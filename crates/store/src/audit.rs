//! The `audit_events` table: append inside the caller's transaction, verify the hash
//! chain, list newest first.
//!
//! Invariants: an event is only ever appended inside the transaction that makes the change
//! it records, so both commit or neither does. Appenders are serialised so the chain never
//! forks: on PostgreSQL by a transaction-scoped advisory lock taken before the chain head
//! is read (held until the caller commits or rolls back); on SQLite by the write lock that
//! `BEGIN IMMEDIATE` takes (see `Db::begin`). `seq` is the head's `seq + 1`, assigned here,
//! never by a sequence, so committed records are contiguous; the primary key on `seq`
//! turns any fork that slipped through (say, a stale snapshot) into an error, not a
//! branch. The database refuses UPDATE, DELETE and TRUNCATE (migration 0001). [`head`]
//! reads only committed records, so a checkpoint never names a record that may roll back.

use std::collections::{BTreeMap, BTreeSet};

use rampart_core::Result;
use rampart_core::audit::{
    AuditRecord, ChainVerifier, GENESIS_HASH, NewAuditEvent, Outcome, VerifyOutcome,
};
use uuid::Uuid;

use crate::error::DbResultExt;
use crate::types::DbUuid;
use crate::{Db, Tx, TxConn};

/// Key of the PostgreSQL advisory lock that serialises appenders ("rampaudt" in ASCII).
const CHAIN_LOCK_KEY: i64 = 0x7261_6d70_6175_6474;

/// Rows read per page by [`verify`].
const VERIFY_PAGE: i64 = 1000;

/// Optional filters of [`list`]; all present ones must match. `from_ms`/`to_ms` are
/// inclusive epoch milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor_id: Option<Uuid>,
    pub target_id: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    id: DbUuid,
    at_ms: i64,
    action: String,
    actor_id: Option<DbUuid>,
    target_type: Option<String>,
    target_id: Option<String>,
    ip_address: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    outcome: String,
    details: String,
    prev_hash: String,
    hash: String,
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = rampart_core::Error;

    fn try_from(row: AuditRow) -> Result<Self> {
        let outcome = Outcome::parse(&row.outcome)
            .ok_or_else(|| anyhow::anyhow!("audit event seq {} has an unknown outcome", row.seq))?;
        Ok(AuditRecord {
            seq: row.seq,
            id: row.id.into(),
            at_ms: row.at_ms,
            action: row.action,
            actor_id: row.actor_id.map(Uuid::from),
            target_type: row.target_type,
            target_id: row.target_id,
            ip_address: row.ip_address,
            user_agent: row.user_agent,
            request_id: row.request_id,
            outcome,
            details: row.details,
            prev_hash: row.prev_hash,
            hash: row.hash,
        })
    }
}

const POSTGRES_LOCK_CHAIN: &str = "SELECT pg_advisory_xact_lock($1)";

const SELECT_HEAD: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";

const INSERT_EVENT: &str = "INSERT INTO audit_events \
     (seq, id, at_ms, action, actor_id, target_type, target_id, ip_address, user_agent, \
      request_id, outcome, details, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// Counter of audit records appended (contract §12). Counted when the record's transaction
/// commits ([`Tx::commit`]): a record rolled back with its transaction is not counted.
pub const EVENTS: &str = "rampart_audit_events_total";

/// Appends one event in a transaction of its own: for events that record a refusal, where
/// nothing else changes (`authz.denied`).
pub async fn record(db: &Db, event: &NewAuditEvent, at_ms: i64) -> Result<AuditRecord> {
    let mut tx = db.begin().await?;
    let record = append(&mut tx, event, at_ms).await?;
    tx.commit().await?;
    Ok(record)
}

/// Appends `event` at `at_ms` (epoch milliseconds) inside `tx` and returns the stored
/// record. The event becomes visible, and the chain head moves, only when `tx` commits.
pub async fn append(tx: &mut Tx, event: &NewAuditEvent, at_ms: i64) -> Result<AuditRecord> {
    if let TxConn::Postgres(pg) = tx.conn() {
        sqlx::query(POSTGRES_LOCK_CHAIN)
            .bind(CHAIN_LOCK_KEY)
            .execute(&mut **pg)
            .await
            .db_context("locking the audit chain")?;
    }
    let head: Option<(i64, String)> = with_tx!(tx, conn => {
        sqlx::query_as(SELECT_HEAD).fetch_optional(&mut *conn).await
    })
    .db_context("reading the audit chain head")?;
    let (prev_seq, prev_hash) = head.unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
    let record = AuditRecord::chained(prev_seq + 1, &prev_hash, Uuid::now_v7(), at_ms, event);
    with_tx!(tx, conn => {
        sqlx::query(INSERT_EVENT)
            .bind(record.seq)
            .bind(DbUuid(record.id))
            .bind(record.at_ms)
            .bind(&record.action)
            .bind(record.actor_id.map(DbUuid))
            .bind(&record.target_type)
            .bind(&record.target_id)
            .bind(&record.ip_address)
            .bind(&record.user_agent)
            .bind(&record.request_id)
            .bind(record.outcome.as_str())
            .bind(&record.details)
            .bind(&record.prev_hash)
            .bind(&record.hash)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    })
    .db_context("appending an audit event")?;
    tx.audit_appended();
    Ok(record)
}

/// The newest committed record's `(seq, hash)`, `None` while the chain is empty: what an
/// audit checkpoint signs.
pub async fn head(db: &Db) -> Result<Option<(i64, String)>> {
    with_pool!(db, pool => {
        sqlx::query_as(SELECT_HEAD).fetch_optional(pool).await
    })
    .db_context("reading the audit chain head")
}

const SELECT_PAGE_FROM: &str = "SELECT seq, id, at_ms, action, actor_id, target_type, \
     target_id, ip_address, user_agent, request_id, outcome, details, prev_hash, hash \
     FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2";

/// Walks the whole chain in `seq` order, one page at a time, and reports the first record
/// that is missing (a gap in `seq`), altered, or out of place.
pub async fn verify(db: &Db) -> Result<VerifyOutcome> {
    verify_keeping(db, &BTreeSet::new())
        .await
        .map(|(outcome, _)| outcome)
}

/// [`verify`], also returning the `hash` of each record whose `seq` is in `keep` and that
/// the walk verified (what audit checkpoints are compared with).
pub async fn verify_keeping(
    db: &Db,
    keep: &BTreeSet<i64>,
) -> Result<(VerifyOutcome, BTreeMap<i64, String>)> {
    let mut kept = BTreeMap::new();
    let mut verifier = ChainVerifier::new();
    let mut after = 0_i64;
    loop {
        let rows: Vec<AuditRow> = with_pool!(db, pool => {
            sqlx::query_as(SELECT_PAGE_FROM)
                .bind(after)
                .bind(VERIFY_PAGE)
                .fetch_all(pool)
                .await
        })
        .db_context("reading audit events to verify")?;
        let Some(last) = rows.last() else {
            return Ok((verifier.finish(), kept));
        };
        after = last.seq;
        for row in rows {
            let record = AuditRecord::try_from(row)?;
            if let Err(b) = verifier.feed(&record) {
                return Ok((b.into(), kept));
            }
            if keep.contains(&record.seq) {
                kept.insert(record.seq, record.hash);
            }
        }
    }
}

// A NULL filter matches everything. sqlx sends each parameter's type with the statement,
// so PostgreSQL needs no casts for the `$N IS NULL` tests and one text serves both.
const LIST_EVENTS: &str = "SELECT seq, id, at_ms, action, actor_id, target_type, \
     target_id, ip_address, user_agent, request_id, outcome, details, prev_hash, hash \
     FROM audit_events \
     WHERE ($1 IS NULL OR action = $1) \
       AND ($2 IS NULL OR actor_id = $2) \
       AND ($3 IS NULL OR target_id = $3) \
       AND ($4 IS NULL OR at_ms >= $4) \
       AND ($5 IS NULL OR at_ms <= $5) \
       AND ($6 IS NULL OR seq < $6) \
     ORDER BY seq DESC LIMIT $7";

/// Events matching `filter`, newest first, at most `limit`. For the next page pass the last
/// returned record's `seq` as `after_seq` (keyset pagination: stable while events arrive).
pub async fn list(
    db: &Db,
    filter: &AuditFilter,
    limit: u32,
    after_seq: Option<i64>,
) -> Result<Vec<AuditRecord>> {
    let rows: Vec<AuditRow> = with_pool!(db, pool => {
        sqlx::query_as(LIST_EVENTS)
            .bind(&filter.action)
            .bind(filter.actor_id.map(DbUuid))
            .bind(&filter.target_id)
            .bind(filter.from_ms)
            .bind(filter.to_ms)
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
    })
    .db_context("listing audit events")?;
    rows.into_iter().map(AuditRecord::try_from).collect()
}

// The export (contract §11): events where the user is the actor or the target.
const LIST_EVENTS_CONCERNING: &str = "SELECT seq, id, at_ms, action, actor_id, target_type, \
     target_id, ip_address, user_agent, request_id, outcome, details, prev_hash, hash \
     FROM audit_events \
     WHERE (actor_id = $1 OR (target_type = 'user' AND target_id = $2)) \
       AND ($3 IS NULL OR seq < $3) \
     ORDER BY seq DESC LIMIT $4";

/// Events whose actor is `user_id` or whose target is the user `user_id`, newest first, at
/// most `limit`, after `after_seq` (as [`list`]).
pub async fn list_concerning(
    db: &Db,
    user_id: Uuid,
    limit: u32,
    after_seq: Option<i64>,
) -> Result<Vec<AuditRecord>> {
    let rows: Vec<AuditRow> = with_pool!(db, pool => {
        sqlx::query_as(LIST_EVENTS_CONCERNING)
            .bind(DbUuid(user_id))
            .bind(user_id.to_string())
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
    })
    .db_context("listing audit events of a user")?;
    rows.into_iter().map(AuditRecord::try_from).collect()
}
