//! `/api/v1/notes` (contract §7): the example business module. Copy this module (and
//! `services::notes`, `store::notes`) to add your own; see docs/adding-a-module.md.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rampart_store::notes::Note;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::pagination;
use crate::problem::ApiError;
use crate::routes::rfc3339;
use crate::routes::users::PageQuery;
use crate::routing::{Policy, route};
use crate::services::meta::RequestMeta;
use crate::services::notes as service;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(route(
            Policy::Permission("notes:write"),
            routes!(create_note),
        ))
        .routes(route(Policy::Permission("notes:read"), routes!(list_notes)))
        .routes(route(Policy::Permission("notes:read"), routes!(get_note)))
        .routes(route(
            Policy::Permission("notes:write"),
            routes!(update_note),
        ))
        .routes(route(
            Policy::Permission("notes:write"),
            routes!(delete_note),
        ))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NoteResponse {
    id: Uuid,
    owner_id: Uuid,
    title: String,
    /// Sanitised HTML.
    body: String,
    created_at: String,
    updated_at: String,
}

impl From<&Note> for NoteResponse {
    fn from(n: &Note) -> Self {
        Self {
            id: n.id,
            owner_id: n.owner_id,
            title: n.title.clone(),
            body: n.body.clone(),
            created_at: rfc3339(n.created_at_ms),
            updated_at: rfc3339(n.updated_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotePage {
    items: Vec<NoteResponse>,
    next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNoteRequest {
    /// Plain text, 1–200 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    title: String,
    /// HTML, at most 20 000 characters (also once sanitised to an allowlist); no NUL.
    #[schema(max_length = 20000)]
    body: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNoteRequest {
    /// Plain text, 1–200 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    title: Option<String>,
    /// HTML, at most 20 000 characters (also once sanitised to an allowlist); no NUL.
    #[schema(max_length = 20000)]
    body: Option<String>,
}

/// Create a note owned by the caller.
#[utoipa::path(post, path = "/api/v1/notes", tag = "notes", request_body = CreateNoteRequest,
    responses((status = 201, description = "Created", body = NoteResponse), (status = 400, description = "Invalid input"),
        (status = 401, description = "Unauthenticated"), (status = 403, description = "Lacks notes:write")),
    security(("bearer" = [])))]
async fn create_note(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiJson(req): ApiJson<CreateNoteRequest>,
) -> Result<Response, ApiError> {
    let note = service::create(&state, &meta, caller, &req.title, &req.body).await?;
    Ok((StatusCode::CREATED, axum::Json(NoteResponse::from(&note))).into_response())
}

/// The caller's own notes, oldest first.
#[utoipa::path(get, path = "/api/v1/notes", tag = "notes", params(PageQuery),
    responses((status = 200, description = "A page of notes", body = NotePage), (status = 400, description = "Bad limit, cursor or parameter"),
        (status = 401, description = "Unauthenticated"), (status = 403, description = "Lacks notes:read")),
    security(("bearer" = [])))]
async fn list_notes(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<axum::Json<NotePage>, ApiError> {
    let (limit, cursor) = q.parts();
    let limit = pagination::limit(limit)?;
    let after = pagination::decode_uuid("notes", cursor)?;
    let notes = rampart_store::notes::list_own(&state.db, caller.user_id, limit, after).await?;
    let next_cursor = pagination::next(&notes, limit, "notes", |n| n.id.to_string());
    Ok(axum::Json(NotePage {
        items: notes.iter().map(NoteResponse::from).collect(),
        next_cursor,
    }))
}

/// One note: the caller's own, or any with `notes:read_any` / `notes:manage_any`.
#[utoipa::path(get, path = "/api/v1/notes/{id}", tag = "notes",
    params(("id" = Uuid, Path, description = "Note id")),
    responses((status = 200, description = "The note", body = NoteResponse), (status = 400, description = "Malformed id"),
        (status = 401, description = "Unauthenticated"), (status = 403, description = "Lacks notes:read"),
        (status = 404, description = "No such note, or another user's")),
    security(("bearer" = [])))]
async fn get_note(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<NoteResponse>, ApiError> {
    let note = service::get(&state, caller, id).await?;
    Ok(axum::Json(NoteResponse::from(&note)))
}

/// Change a note's title or body.
#[utoipa::path(patch, path = "/api/v1/notes/{id}", tag = "notes",
    params(("id" = Uuid, Path, description = "Note id")), request_body = UpdateNoteRequest,
    responses((status = 200, description = "Updated", body = NoteResponse), (status = 400, description = "Invalid input"),
        (status = 401, description = "Unauthenticated"),
        (status = 403, description = "Lacks notes:write, or may only read this note"),
        (status = 404, description = "No such note, or another user's")),
    security(("bearer" = [])))]
async fn update_note(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateNoteRequest>,
) -> Result<axum::Json<NoteResponse>, ApiError> {
    let note = service::update(
        &state,
        &meta,
        caller,
        id,
        req.title.as_deref(),
        req.body.as_deref(),
    )
    .await?;
    Ok(axum::Json(NoteResponse::from(&note)))
}

/// Delete a note.
#[utoipa::path(delete, path = "/api/v1/notes/{id}", tag = "notes",
    params(("id" = Uuid, Path, description = "Note id")),
    responses((status = 204, description = "Deleted"), (status = 400, description = "Malformed id"),
        (status = 401, description = "Unauthenticated"),
        (status = 403, description = "Lacks notes:write, or may only read this note"),
        (status = 404, description = "No such note, or another user's")),
    security(("bearer" = [])))]
async fn delete_note(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    service::delete(&state, &meta, caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
