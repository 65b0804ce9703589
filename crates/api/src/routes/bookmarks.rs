//! `/api/v1/bookmarks`: a user's saved links, an owned module on the kit (`crate::owned`,
//! `rampart_store::owned`), written from docs/adding-a-module.md. The kit owns ownership,
//! auditing and paging; this module declares its fields and routes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rampart_core::fields::{AllValid, Field, HttpUrl, PlainText};
use rampart_core::{Error, Result};
use rampart_store::bookmarks::{Bookmark, BookmarkPatch};
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

pub const BOOKMARKS: Resource<Bookmark, BookmarkPatch> =
    resource!("bookmarks", "bookmark", rampart_store::bookmarks::TABLE);

type Url = HttpUrl<2048>;
type Title = PlainText<200>;

pub fn routes() -> OpenApiRouter<AppState> {
    BOOKMARKS
        .router("Bookmarks: saved links")
        .routes(BOOKMARKS.route(Needs::Write, routes!(create_bookmark)))
        .routes(BOOKMARKS.route(Needs::Read, routes!(list_bookmarks)))
        .routes(BOOKMARKS.route(Needs::Read, routes!(get_bookmark)))
        .routes(BOOKMARKS.route(Needs::Write, routes!(update_bookmark)))
        .routes(BOOKMARKS.route(Needs::Write, routes!(delete_bookmark)))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BookmarkResponse {
    id: Uuid,
    owner_id: Uuid,
    /// Normalised http or https URL.
    url: String,
    title: String,
    created_at: String,
    updated_at: String,
}

impl From<&Owned<Bookmark>> for BookmarkResponse {
    fn from(b: &Owned<Bookmark>) -> Self {
        Self {
            id: b.id,
            owner_id: b.owner_id,
            url: b.fields.url.clone(),
            title: b.fields.title.clone(),
            created_at: rfc3339(b.created_at_ms),
            updated_at: rfc3339(b.updated_at_ms),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBookmarkRequest {
    /// An absolute http or https URL, at most 2048 characters (also once normalised).
    #[schema(format = "uri", min_length = 1, max_length = 2048)]
    url: String,
    /// Plain text, 1–200 characters, no control characters.
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    title: String,
}

impl CreateBookmarkRequest {
    fn parse(&self) -> Result<Bookmark> {
        let (url, title) =
            (Url::parse(&self.url, "url"), Title::parse(&self.title, "title")).all_valid()?;
        Ok(Bookmark {
            url: url.into(),
            title: title.into(),
        })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBookmarkRequest {
    /// An absolute http or https URL, at most 2048 characters (also once normalised).
    #[schema(format = "uri", min_length = 1, max_length = 2048)]
    url: Option<String>,
    /// Plain text, 1–200 characters, no control characters.
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    title: Option<String>,
}

impl UpdateBookmarkRequest {
    fn parse(&self) -> Result<BookmarkPatch> {
        let (url, title) = (
            Url::parse_optional(self.url.as_deref(), "url"),
            Title::parse_optional(self.title.as_deref(), "title"),
        )
            .all_valid()?;
        if url.is_none() && title.is_none() {
            return Err(Error::validation("body", "must change url or title"));
        }
        Ok(BookmarkPatch {
            url: url.map(String::from),
            title: title.map(String::from),
        })
    }
}

/// Save a bookmark owned by the caller.
#[utoipa::path(post, path = "/api/v1/bookmarks", tag = "bookmarks",
    request_body = CreateBookmarkRequest,
    responses((status = 201, description = "Created", body = BookmarkResponse)))]
async fn create_bookmark(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiJson(req): ApiJson<CreateBookmarkRequest>,
) -> Result<(StatusCode, Json<BookmarkResponse>), ApiError> {
    let bookmark = BOOKMARKS.create(&state, &meta, caller, req.parse()?).await?;
    Ok((StatusCode::CREATED, Json(BookmarkResponse::from(&bookmark))))
}

/// The caller's own bookmarks, oldest first.
#[utoipa::path(get, path = "/api/v1/bookmarks", tag = "bookmarks", params(PageQuery),
    responses((status = 200, description = "A page of bookmarks", body = Page<BookmarkResponse>),
        (status = 400, description = "Bad limit, cursor or parameter")))]
async fn list_bookmarks(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<BookmarkResponse>>, ApiError> {
    Ok(Json(BOOKMARKS.list(&state, caller, &q).await?))
}

/// One bookmark: the caller's own, or any with `bookmarks:read_any` / `bookmarks:manage_any`.
#[utoipa::path(get, path = "/api/v1/bookmarks/{id}", tag = "bookmarks",
    params(("id" = Uuid, Path, description = "Bookmark id")),
    responses((status = 200, description = "The bookmark", body = BookmarkResponse),
        (status = 400, description = "Malformed id"),
        (status = 404, description = "No such bookmark, or another user's")))]
async fn get_bookmark(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<BookmarkResponse>, ApiError> {
    let bookmark = BOOKMARKS.get(&state, caller, id).await?;
    Ok(Json(BookmarkResponse::from(&bookmark)))
}

/// Change a bookmark's url or title.
#[utoipa::path(patch, path = "/api/v1/bookmarks/{id}", tag = "bookmarks",
    params(("id" = Uuid, Path, description = "Bookmark id")), request_body = UpdateBookmarkRequest,
    responses((status = 200, description = "Updated", body = BookmarkResponse),
        (status = 403, description = "May only read this bookmark (`bookmarks:read_any` without `bookmarks:manage_any`)"),
        (status = 404, description = "No such bookmark, or another user's")))]
async fn update_bookmark(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateBookmarkRequest>,
) -> Result<Json<BookmarkResponse>, ApiError> {
    let bookmark = BOOKMARKS.update(&state, &meta, caller, id, req.parse()?).await?;
    Ok(Json(BookmarkResponse::from(&bookmark)))
}

/// Delete a bookmark.
#[utoipa::path(delete, path = "/api/v1/bookmarks/{id}", tag = "bookmarks",
    params(("id" = Uuid, Path, description = "Bookmark id")),
    responses((status = 204, description = "Deleted"), (status = 400, description = "Malformed id"),
        (status = 403, description = "May only read this bookmark (`bookmarks:read_any` without `bookmarks:manage_any`)"),
        (status = 404, description = "No such bookmark, or another user's")))]
async fn delete_bookmark(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    BOOKMARKS.delete(&state, &meta, caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
