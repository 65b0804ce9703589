//! `/api/v1/audit` (contract §8): the audit trail, newest first. Read-only: no route
//! changes or deletes a record, and the database refuses to.

use axum::extract::State;
use rampart_core::audit::{AuditRecord, VerifyOutcome};
use rampart_core::{Error, FieldError};
use rampart_store::audit::AuditFilter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::extract::ApiQuery;
use crate::pagination;
use crate::problem::ApiError;
use crate::routes::rfc3339;
use crate::routing::{Policy, route};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(route(
            Policy::Permission("audit:read"),
            routes!(list_events),
        ))
        .routes(route(
            Policy::Permission("audit:read"),
            routes!(verify_chain),
        ))
}

/// The state of the audit hash chain (contract §13), as `rampart audit verify` reports it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainState {
    /// Every record from the first to the newest verified.
    intact: bool,
    /// Records verified: all of them when intact, else those before the broken one.
    count: u64,
    /// The first record at which the chain does not hold; `null` when intact.
    broken_at: Option<BrokenRecord>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokenRecord {
    id: Uuid,
    seq: i64,
    /// What does not hold there (a gap, an altered record, a wrong link).
    reason: String,
}

impl From<VerifyOutcome> for ChainState {
    fn from(outcome: VerifyOutcome) -> Self {
        match outcome {
            VerifyOutcome::Intact { count } => Self {
                intact: true,
                count,
                broken_at: None,
            },
            VerifyOutcome::Broken { seq, id, reason } => Self {
                intact: false,
                // `seq` starts at 1 and the walk stops at the first break.
                count: u64::try_from(seq.saturating_sub(1)).unwrap_or(0),
                broken_at: Some(BrokenRecord { id, seq, reason }),
            },
        }
    }
}

/// Verifies the whole audit hash chain, oldest record first.
///
/// The walk reads every record, so its cost grows with the trail; it is meant for the
/// console's audit page and for monitoring, not for every request.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "The chain's state", body = ChainState)))]
async fn verify_chain(State(state): State<AppState>) -> Result<axum::Json<ChainState>, ApiError> {
    let outcome = rampart_store::audit::verify(&state.db).await?;
    Ok(axum::Json(outcome.into()))
}

#[derive(Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Exact action, e.g. `auth.login_failed`.
    action: Option<String>,
    actor_id: Option<String>,
    target_id: Option<String>,
    /// RFC 3339, inclusive.
    from: Option<String>,
    /// RFC 3339, inclusive.
    to: Option<String>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventResponse {
    id: Uuid,
    at: String,
    action: String,
    actor_id: Option<Uuid>,
    target_type: Option<String>,
    target_id: Option<String>,
    ip_address: Option<String>,
    request_id: Option<String>,
    /// `success`, `failure` or `denied`.
    outcome: &'static str,
    details: serde_json::Value,
}

impl From<&AuditRecord> for EventResponse {
    fn from(r: &AuditRecord) -> Self {
        Self {
            id: r.id,
            at: rfc3339(r.at_ms),
            action: r.action.clone(),
            actor_id: r.actor_id,
            target_type: r.target_type.clone(),
            target_id: r.target_id.clone(),
            ip_address: r.ip_address.clone(),
            request_id: r.request_id.clone(),
            outcome: r.outcome.as_str(),
            details: serde_json::from_str(&r.details).unwrap_or_default(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    items: Vec<EventResponse>,
    next_cursor: Option<String>,
}

fn uuid_filter(raw: Option<&str>, field: &str, errors: &mut Vec<FieldError>) -> Option<Uuid> {
    let raw = raw?;
    match Uuid::parse_str(raw) {
        Ok(id) => Some(id),
        Err(_) => {
            errors.push(FieldError::new(field, "must be a UUID"));
            None
        }
    }
}

fn instant_filter(raw: Option<&str>, field: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    let raw = raw?;
    match time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339) {
        Ok(at) => Some((at.unix_timestamp_nanos() / 1_000_000) as i64),
        Err(_) => {
            errors.push(FieldError::new(field, "must be an RFC 3339 date-time"));
            None
        }
    }
}

/// Audit events, newest first, with filters.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", params(EventQuery),
    responses((status = 200, description = "A page of events, oldest first", body = EventPage), (status = 400, description = "Malformed filter, limit or cursor")))]
async fn list_events(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<axum::Json<EventPage>, ApiError> {
    let mut errors = Vec::new();
    let actor_id = uuid_filter(q.actor_id.as_deref(), "query.actorId", &mut errors);
    let target_id = uuid_filter(q.target_id.as_deref(), "query.targetId", &mut errors);
    let from_ms = instant_filter(q.from.as_deref(), "query.from", &mut errors);
    let to_ms = instant_filter(q.to.as_deref(), "query.to", &mut errors);
    if q.action
        .as_ref()
        .is_some_and(|a| a.is_empty() || a.len() > 100)
    {
        errors.push(FieldError::new("query.action", "must be 1-100 characters"));
    }
    if !errors.is_empty() {
        return Err(Error::Validation(errors).into());
    }
    let limit = pagination::limit(q.limit)?;
    let after = pagination::decode_i64("audit", q.cursor.as_deref())?;
    let filter = AuditFilter {
        action: q.action,
        actor_id,
        target_id: target_id.map(|t| t.to_string()),
        from_ms,
        to_ms,
    };
    let records = rampart_store::audit::list(&state.db, &filter, limit, after).await?;
    let next_cursor = pagination::next(&records, limit, "audit", |r| r.seq.to_string());
    Ok(axum::Json(EventPage {
        items: records.iter().map(EventResponse::from).collect(),
        next_cursor,
    }))
}
