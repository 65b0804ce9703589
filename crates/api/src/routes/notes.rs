//! `/api/v1/notes` (contract §7): the example owned module, built on the kit
//! (`crate::owned`, `rampart_store::owned`): the kit owns ownership, auditing and paging;
//! this module declares its fields and routes. See docs/adding-a-module.md.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rampart_core::fields::{AllValid, Field, Html, PlainText};
use rampart_core::{Error, Result};
use rampart_store::notes::{Note, NotePatch};
use rampart_store::owned::Owned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::owned::{Needs, Resource, resource};
use crate::pagination::{Page, PageQuery};
use crate::problem::ApiError;
use crate::routes::rfc3339;
use crate::services::meta::RequestMeta;
use crate::state::AppState;

pub const NOTES: Resource<Note, NotePatch> =
    resource!("notes", "note", rampart_store::notes::TABLE);

type Title = PlainText<200>;
type Body = Html<20_000>;

pub fn routes() -> OpenApiRouter<AppState> {
    NOTES
        .router("Notes: the example business module")
        .routes(NOTES.route(Needs::Write, routes!(create_note)))
        .routes(NOTES.route(Needs::Read, routes!(list_notes)))
        .routes(NOTES.route(Needs::Read, routes!(get_note)))
        .routes(NOTES.route(Needs::Write, routes!(update_note)))
        .routes(NOTES.route(Needs::Write, routes!(delete_note)))
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

impl From<&Owned<Note>> for NoteResponse {
    fn from(n: &Owned<Note>) -> Self {
        Self {
            id: n.id,
            owner_id: n.owner_id,
            title: n.fields.title.clone(),
            body: n.fields.body.clone(),
            created_at: rfc3339(n.created_at_ms),
            updated_at: rfc3339(n.updated_at_ms),
        }
    }
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

impl CreateNoteRequest {
    fn parse(&self) -> Result<Note> {
        let (title, body) = (
            Title::parse(&self.title, "title"),
            Body::parse(&self.body, "body"),
        )
            .all_valid()?;
        Ok(Note {
            title: title.into(),
            body: body.into(),
        })
    }
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

impl UpdateNoteRequest {
    fn parse(&self) -> Result<NotePatch> {
        let (title, body) = (
            Title::parse_optional(self.title.as_deref(), "title"),
            Body::parse_optional(self.body.as_deref(), "body"),
        )
            .all_valid()?;
        if title.is_none() && body.is_none() {
            return Err(Error::validation("body", "must change title or body"));
        }
        Ok(NotePatch {
            title: title.map(String::from),
            body: body.map(String::from),
        })
    }
}

/// Create a note owned by the caller.
#[utoipa::path(post, path = "/api/v1/notes", tag = "notes", request_body = CreateNoteRequest,
    responses((status = 201, description = "Created", body = NoteResponse)))]
async fn create_note(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiJson(req): ApiJson<CreateNoteRequest>,
) -> Result<(StatusCode, Json<NoteResponse>), ApiError> {
    let note = NOTES.create(&state, &meta, caller, req.parse()?).await?;
    Ok((StatusCode::CREATED, Json(NoteResponse::from(&note))))
}

/// The caller's own notes, oldest first.
#[utoipa::path(get, path = "/api/v1/notes", tag = "notes", params(PageQuery),
    responses((status = 200, description = "A page of notes", body = Page<NoteResponse>),
        (status = 400, description = "Bad limit, cursor or parameter")))]
async fn list_notes(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<NoteResponse>>, ApiError> {
    Ok(Json(NOTES.list(&state, caller, &q).await?))
}

/// One note: the caller's own, or any with `notes:read_any` / `notes:manage_any`.
#[utoipa::path(get, path = "/api/v1/notes/{id}", tag = "notes",
    params(("id" = Uuid, Path, description = "Note id")),
    responses((status = 200, description = "The note", body = NoteResponse), (status = 400, description = "Malformed id"),
        (status = 404, description = "No such note, or another user's")))]
async fn get_note(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<NoteResponse>, ApiError> {
    let note = NOTES.get(&state, caller, id).await?;
    Ok(Json(NoteResponse::from(&note)))
}

/// Change a note's title or body.
#[utoipa::path(patch, path = "/api/v1/notes/{id}", tag = "notes",
    params(("id" = Uuid, Path, description = "Note id")), request_body = UpdateNoteRequest,
    responses((status = 200, description = "Updated", body = NoteResponse),
        (status = 403, description = "May only read this note (`notes:read_any` without `notes:manage_any`)"),
        (status = 404, description = "No such note, or another user's")))]
async fn update_note(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateNoteRequest>,
) -> Result<Json<NoteResponse>, ApiError> {
    let note = NOTES
        .update(&state, &meta, caller, id, req.parse()?)
        .await?;
    Ok(Json(NoteResponse::from(&note)))
}

/// Delete a note.
#[utoipa::path(delete, path = "/api/v1/notes/{id}", tag = "notes",
    params(("id" = Uuid, Path, description = "Note id")),
    responses((status = 204, description = "Deleted"), (status = 400, description = "Malformed id"),
        (status = 403, description = "May only read this note (`notes:read_any` without `notes:manage_any`)"),
        (status = 404, description = "No such note, or another user's")))]
async fn delete_note(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    NOTES.delete(&state, &meta, caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
