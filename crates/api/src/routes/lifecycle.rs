//! Account lifecycle (contract §11): `/api/v1/auth/email/…` (verification, change
//! confirmation) and `/api/v1/users/me/{email,delete,export}`. The rules live in
//! `services::lifecycle`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AuthUser;
use crate::extract::{ApiJson, ApiQuery, NoQuery};
use crate::problem::ApiError;
use crate::routes::audit::EventResponse;
use crate::routes::auth::SessionResponse;
use crate::routes::bookmarks::{BOOKMARKS, BookmarkResponse};
use crate::routes::notes::{NOTES, NoteResponse};
use crate::routes::passkeys::PasskeyResponse;
use crate::routes::rfc3339;
use crate::routes::users::UserResponse;
use crate::routing::{Policy, RouteLimit, route, route_limited};
use crate::services::lifecycle as service;
use crate::services::meta::RequestMeta;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(route(Policy::Authenticated, routes!(verify_request)))
        .routes(route_limited(
            Policy::Public,
            RouteLimit::Reset,
            routes!(verify_confirm),
        ))
        .routes(route_limited(
            Policy::Public,
            RouteLimit::Reset,
            routes!(change_confirm),
        ))
        .routes(route(Policy::Authenticated, routes!(change_email)))
        .routes(route(Policy::Authenticated, routes!(delete_me)))
        .routes(route(Policy::Authenticated, routes!(export_me)))
}

/// An empty JSON object: the body of routes that take no input.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// Always `accepted`.
    status: &'static str,
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(Accepted { status: "accepted" }),
    )
        .into_response()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The token from the mailed link (URL-safe base64, 43 characters).
    token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChangeEmailRequest {
    /// At most 254 characters after trimming.
    #[schema(format = Email, max_length = 254)]
    new_email: String,
    /// The account's password: a stolen access token alone cannot move the account.
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteMeRequest {
    /// The account's password.
    password: String,
}

/// Everything stored about the caller (GDPR Art. 15 and 20), in the contract's shapes;
/// never a secret, hash or token.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportResponse {
    exported_at: String,
    user: UserResponse,
    /// The caller's live sessions.
    sessions: Vec<SessionResponse>,
    /// The caller's passkeys (passkey view, contract §10).
    passkeys: Vec<PasskeyResponse>,
    notes: Vec<NoteResponse>,
    bookmarks: Vec<BookmarkResponse>,
    /// Audit events whose actor or target is the caller, newest first.
    audit_events: Vec<EventResponse>,
}

/// The caller's passkeys for the export, in the passkey view of contract §10.
async fn export_passkeys(
    state: &AppState,
    user: AuthUser,
) -> Result<Vec<PasskeyResponse>, ApiError> {
    let passkeys = rampart_store::passkeys::list(&state.db, user.user_id).await?;
    Ok(passkeys.iter().map(PasskeyResponse::from).collect())
}

/// Mail a new verification link to the caller's address.
#[utoipa::path(post, path = "/api/v1/auth/email/verify/request", tag = "auth",
    request_body = EmptyRequest,
    responses((status = 202, description = "Accepted: a new link is mailed unless the address is verified or the hourly limit is reached", body = Accepted)))]
async fn verify_request(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    ApiJson(_): ApiJson<EmptyRequest>,
) -> Result<Response, ApiError> {
    service::request_verification(&state, &meta, user).await?;
    Ok(accepted())
}

/// Verify the address a verification link was sent to.
#[utoipa::path(post, path = "/api/v1/auth/email/verify/confirm", tag = "auth",
    request_body = TokenRequest,
    responses((status = 204, description = "Email verified"),
        (status = 400, description = "Bad, used, superseded or expired token"),
        (status = 429, description = "Rate limited")))]
async fn verify_confirm(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<StatusCode, ApiError> {
    service::confirm_verification(&state, &meta, &req.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Complete an email change with the link sent to the new address; every other session
/// of the account ends.
#[utoipa::path(post, path = "/api/v1/auth/email/change/confirm", tag = "auth",
    request_body = TokenRequest,
    responses((status = 204, description = "Email changed and verified; other sessions ended"),
        (status = 400, description = "Bad, used, superseded or expired token"),
        (status = 409, description = "The address belongs to another account by now"),
        (status = 429, description = "Rate limited")))]
async fn change_confirm(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<StatusCode, ApiError> {
    service::confirm_email_change(&state, &meta, &req.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ask to change the caller's email: a link to the new address, a notice to the old one.
#[utoipa::path(post, path = "/api/v1/users/me/email", tag = "users",
    request_body = ChangeEmailRequest,
    responses((status = 202, description = "Accepted, whether or not the new address is taken", body = Accepted),
        (status = 400, description = "Invalid address"),
        (status = 403, description = "Wrong password (reauthentication_failed)"),
        (status = 429, description = "The account's email is locked")))]
async fn change_email(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    ApiJson(req): ApiJson<ChangeEmailRequest>,
) -> Result<Response, ApiError> {
    service::request_email_change(&state, &meta, user, &req.new_email, req.password).await?;
    Ok(accepted())
}

/// Delete the caller's account (soft delete); every session ends.
#[utoipa::path(post, path = "/api/v1/users/me/delete", tag = "users",
    request_body = DeleteMeRequest,
    responses((status = 204, description = "Deleted; every session ended"),
        (status = 403, description = "Wrong password (reauthentication_failed), or the last active holder of roles:assign (forbidden)"),
        (status = 429, description = "The account's email is locked")))]
async fn delete_me(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    ApiJson(req): ApiJson<DeleteMeRequest>,
) -> Result<StatusCode, ApiError> {
    service::delete_me(&state, &meta, user, req.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Everything stored about the caller. At most 5 exports per user per hour.
#[utoipa::path(get, path = "/api/v1/users/me/export", tag = "users",
    responses((status = 200, description = "The caller's data", body = ExportResponse),
        (status = 400, description = "A query parameter (none are accepted)"),
        (status = 429, description = "More than 5 exports in an hour")))]
async fn export_me(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    _: ApiQuery<NoQuery>,
) -> Result<axum::Json<ExportResponse>, ApiError> {
    let export = service::export(&state, &meta, user).await?;
    let notes = NOTES.all_own(&state, user).await?;
    let bookmarks = BOOKMARKS.all_own(&state, user).await?;
    let passkeys = export_passkeys(&state, user).await?;
    Ok(axum::Json(ExportResponse {
        exported_at: rfc3339(export.exported_at_ms),
        user: UserResponse::from(&export.user),
        sessions: export
            .sessions
            .into_iter()
            .map(|s| SessionResponse::of(s, user.session_id))
            .collect(),
        passkeys,
        notes,
        bookmarks,
        audit_events: export
            .audit_events
            .iter()
            .map(EventResponse::from)
            .collect(),
    }))
}
