//! `/api/v1/users` (contract §5): the user view and the caller's own profile. Listing and
//! administering other users comes with RBAC.

use axum::extract::State;
use rampart_core::Error;
use rampart_core::users::User;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{AuthUser, VerifiedToken};
use crate::extract::ApiJson;
use crate::problem::ApiError;
use crate::routes::rfc3339;
use crate::routing::guarded;
use crate::services::auth as service;
use crate::services::meta::RequestMeta;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(guarded(routes!(get_me, update_me)))
}

/// The only shape a user is ever returned in. Built from the domain `User`, which has no
/// secret to leak: the password hash lives in a type no response is made from.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserResponse {
    id: Uuid,
    email: String,
    display_name: String,
    /// `active` or `disabled`.
    status: &'static str,
    roles: Vec<String>,
    mfa_enabled: bool,
    created_at: String,
    updated_at: String,
}

impl From<&User> for UserResponse {
    fn from(user: &User) -> Self {
        Self {
            id: user.id,
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            status: user.status.as_str(),
            roles: user.roles.clone(),
            mfa_enabled: user.mfa_enabled,
            created_at: rfc3339(user.created_at_ms),
            updated_at: rfc3339(user.updated_at_ms),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateMeRequest {
    display_name: String,
}

/// The caller's user view.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users",
    responses((status = 200, body = UserResponse), (status = 401, description = "Unauthenticated")),
    security(("bearer" = [])))]
async fn get_me(
    State(state): State<AppState>,
    VerifiedToken(claims): VerifiedToken,
) -> Result<axum::Json<UserResponse>, ApiError> {
    // One round trip: the user is read through its live session, which is the liveness
    // check `AuthUser` would otherwise make.
    let user = rampart_store::users::get_for_session(
        &state.db,
        claims.sub,
        claims.sid,
        state.clock.now_ms(),
    )
    .await?
    .ok_or(Error::Unauthenticated)?;
    Ok(axum::Json(UserResponse::from(&user)))
}

/// Change the caller's display name.
#[utoipa::path(patch, path = "/api/v1/users/me", tag = "users",
    request_body = UpdateMeRequest,
    responses((status = 200, body = UserResponse), (status = 400, description = "Invalid display name"), (status = 401, description = "Unauthenticated")),
    security(("bearer" = [])))]
async fn update_me(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    ApiJson(req): ApiJson<UpdateMeRequest>,
) -> Result<axum::Json<UserResponse>, ApiError> {
    let updated = service::update_display_name(&state, &meta, user, &req.display_name).await?;
    Ok(axum::Json(UserResponse::from(&updated)))
}
