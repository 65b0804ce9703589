//! `/api/v1/auth/passkeys` (contract §10): WebAuthn registration, management and
//! discoverable sign-in. Options and responses are the WebAuthn JSON forms, passed through
//! as JSON objects; the handlers extract, call one service function and shape the answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rampart_store::passkeys::Passkey;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::extract::{ApiJson, ApiPath};
use crate::problem::ApiError;
use crate::routes::auth::{LoginResponse, login_response};
use crate::routes::rfc3339;
use crate::routing::{Policy, RouteLimit, route, route_limited};
use crate::services::meta::RequestMeta;
use crate::services::passkeys as service;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(route(Policy::Authenticated, routes!(register_start)))
        .routes(route(Policy::Authenticated, routes!(register_finish)))
        .routes(route(Policy::Authenticated, routes!(list_passkeys)))
        .routes(route(Policy::Authenticated, routes!(rename_passkey)))
        .routes(route(Policy::Authenticated, routes!(delete_passkey)))
        .routes(route(Policy::Public, routes!(login_start)))
        .routes(route_limited(
            Policy::Public,
            RouteLimit::Login,
            routes!(login_finish),
        ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PasskeyRegisterStartRequest {
    /// The account's password: a stolen access token alone cannot add a passkey.
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PasskeyRegisterFinishRequest {
    challenge_id: Uuid,
    /// 1–100 characters, no control characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// `RegistrationResponseJSON` (`PublicKeyCredential.toJSON()` of `navigator.credentials.create`).
    #[schema(value_type = Object)]
    credential: Value,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PasskeyRenameRequest {
    /// 1–100 characters, no control characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
}

/// Body of `/login/start`: empty (no email is asked).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyLoginStartRequest {}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PasskeyLoginFinishRequest {
    challenge_id: Uuid,
    /// `AuthenticationResponseJSON` (`PublicKeyCredential.toJSON()` of `navigator.credentials.get`).
    #[schema(value_type = Object)]
    credential: Value,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasskeyChallengeResponse {
    /// Send it back with the response; single use, 5 minutes.
    challenge_id: Uuid,
    /// `PublicKeyCredentialCreationOptionsJSON` or `PublicKeyCredentialRequestOptionsJSON`:
    /// give it to `PublicKeyCredential.parseCreationOptionsFromJSON` /
    /// `parseRequestOptionsFromJSON`.
    #[schema(value_type = Object)]
    public_key: Value,
}

/// A passkey: never its key material.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasskeyResponse {
    id: Uuid,
    name: String,
    created_at: String,
    last_used_at: Option<String>,
    backup_eligible: bool,
    backed_up: bool,
}

impl From<&Passkey> for PasskeyResponse {
    fn from(p: &Passkey) -> Self {
        Self {
            id: p.id,
            name: p.name.clone(),
            created_at: rfc3339(p.created_at_ms),
            last_used_at: p.last_used_at_ms.map(rfc3339),
            backup_eligible: p.backup_eligible,
            backed_up: p.backed_up,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PasskeysResponse {
    items: Vec<PasskeyResponse>,
}

/// Start adding a passkey: re-enter the password, get creation options.
#[utoipa::path(post, path = "/api/v1/auth/passkeys/register/start", tag = "passkeys",
    request_body = PasskeyRegisterStartRequest,
    responses(
        (status = 200, description = "Creation options", body = PasskeyChallengeResponse),
        (status = 400, description = "Malformed body"),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Wrong password (reauthentication_failed)"),
        (status = 429, description = "Rate limited or account locked out"),
    ))]
async fn register_start(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    ApiJson(req): ApiJson<PasskeyRegisterStartRequest>,
) -> Result<Response, ApiError> {
    let (challenge_id, public_key) =
        service::register_start(&state, &meta, user, req.password).await?;
    Ok(axum::Json(PasskeyChallengeResponse {
        challenge_id,
        public_key,
    })
    .into_response())
}

/// Finish adding a passkey with the authenticator's response.
#[utoipa::path(post, path = "/api/v1/auth/passkeys/register/finish", tag = "passkeys",
    request_body = PasskeyRegisterFinishRequest,
    responses(
        (status = 201, description = "Added", body = PasskeyResponse),
        (status = 400, description = "Invalid name, or a response that does not verify (validation_failed for credential)"),
        (status = 401, description = "Not signed in"),
        (status = 409, description = "The account has 20 passkeys already"),
    ))]
async fn register_finish(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    ApiJson(req): ApiJson<PasskeyRegisterFinishRequest>,
) -> Result<Response, ApiError> {
    let passkey = service::register_finish(
        &state,
        &meta,
        user,
        req.challenge_id,
        &req.name,
        &req.credential,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(PasskeyResponse::from(&passkey)),
    )
        .into_response())
}

/// The caller's passkeys.
#[utoipa::path(get, path = "/api/v1/auth/passkeys", tag = "passkeys",
    responses(
        (status = 200, description = "Passkeys, oldest first", body = PasskeysResponse),
        (status = 401, description = "Not signed in"),
    ))]
async fn list_passkeys(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<axum::Json<PasskeysResponse>, ApiError> {
    let items = service::list(&state, user).await?;
    Ok(axum::Json(PasskeysResponse {
        items: items.iter().map(PasskeyResponse::from).collect(),
    }))
}

/// Rename one of the caller's passkeys.
#[utoipa::path(patch, path = "/api/v1/auth/passkeys/{id}", tag = "passkeys",
    params(("id" = Uuid, Path, description = "Passkey id")),
    request_body = PasskeyRenameRequest,
    responses(
        (status = 200, description = "Renamed", body = PasskeyResponse),
        (status = 400, description = "Invalid name or id"),
        (status = 401, description = "Not signed in"),
        (status = 404, description = "No such passkey of the caller"),
    ))]
async fn rename_passkey(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<PasskeyRenameRequest>,
) -> Result<axum::Json<PasskeyResponse>, ApiError> {
    let passkey = service::rename(&state, user, id, &req.name).await?;
    Ok(axum::Json(PasskeyResponse::from(&passkey)))
}

/// Remove one of the caller's passkeys; every session that signed in with it ends.
#[utoipa::path(delete, path = "/api/v1/auth/passkeys/{id}", tag = "passkeys",
    params(("id" = Uuid, Path, description = "Passkey id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Malformed id"),
        (status = 401, description = "Not signed in"),
        (status = 404, description = "No such passkey of the caller"),
    ))]
async fn delete_passkey(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    service::remove(&state, &meta, user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start a passkey sign-in (no email asked: discoverable credentials).
#[utoipa::path(post, path = "/api/v1/auth/passkeys/login/start", tag = "passkeys",
    request_body = PasskeyLoginStartRequest,
    responses(
        (status = 200, description = "Request options", body = PasskeyChallengeResponse),
        (status = 400, description = "Malformed body"),
        (status = 429, description = "Rate limited"),
    ))]
async fn login_start(
    State(state): State<AppState>,
    ApiJson(_req): ApiJson<PasskeyLoginStartRequest>,
) -> Result<Response, ApiError> {
    let (challenge_id, public_key) = service::login_start(&state).await?;
    Ok(axum::Json(PasskeyChallengeResponse {
        challenge_id,
        public_key,
    })
    .into_response())
}

/// Finish a passkey sign-in: the normal login response and refresh cookie.
#[utoipa::path(post, path = "/api/v1/auth/passkeys/login/finish", tag = "passkeys",
    request_body = PasskeyLoginFinishRequest,
    responses(
        (status = 200, description = "Logged in; refresh cookie set", body = LoginResponse),
        (status = 400, description = "Malformed body"),
        (status = 401, description = "Unknown, used or expired challengeId (unauthenticated); a response that does not verify, or a disabled or deleted account (invalid_credentials)"),
        (status = 429, description = "Rate limited"),
    ))]
async fn login_finish(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<PasskeyLoginFinishRequest>,
) -> Result<Response, ApiError> {
    let outcome = service::login_finish(&state, &meta, req.challenge_id, &req.credential).await?;
    Ok(login_response(&state, outcome))
}
