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
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::pagination;
pub use crate::pagination::PageQuery;
use crate::problem::ApiError;
use crate::routes::rfc3339;
use crate::routing::{Policy, route};
use crate::services::admin;
use crate::services::auth as service;
use crate::services::meta::RequestMeta;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(route(Policy::Authenticated, routes!(get_me, update_me)))
        .routes(route(Policy::Authenticated, routes!(my_permissions)))
        .routes(route(Policy::Permission("users:read"), routes!(list_users)))
        .routes(route(Policy::Permission("users:read"), routes!(get_user)))
        .routes(route(
            Policy::Permission("users:update"),
            routes!(update_user),
        ))
        .routes(route(
            Policy::Permission("users:delete"),
            routes!(delete_user),
        ))
        .routes(route(
            Policy::Permission("users:update"),
            routes!(end_user_sessions),
        ))
        .routes(route(
            Policy::Permission("users:update"),
            routes!(reset_user_mfa),
        ))
        .routes(route(
            Policy::Permission("roles:assign"),
            routes!(set_user_roles),
        ))
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
    /// The owner proved the address by a mailed link (contract §11).
    email_verified: bool,
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
            email_verified: user.email_verified,
            created_at: rfc3339(user.created_at_ms),
            updated_at: rfc3339(user.updated_at_ms),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateMeRequest {
    /// 1–100 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    display_name: String,
}

/// The caller's user view.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users",
    responses((status = 200, description = "The caller", body = UserResponse)))]
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

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionNames {
    /// `feature:action` names, sorted.
    items: Vec<String>,
}

/// The permissions the caller's roles grant now (what a client such as the console needs
/// to decide which administration pages to offer; every route still checks its own).
#[utoipa::path(get, path = "/api/v1/users/me/permissions", tag = "users",
    responses((status = 200, description = "The caller's permissions", body = PermissionNames)))]
async fn my_permissions(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<axum::Json<PermissionNames>, ApiError> {
    let permissions = state.permissions.get(user.user_id).await?;
    Ok(axum::Json(PermissionNames {
        items: permissions.iter().cloned().collect(),
    }))
}

/// Change the caller's display name.
#[utoipa::path(patch, path = "/api/v1/users/me", tag = "users",
    request_body = UpdateMeRequest,
    responses((status = 200, description = "Updated", body = UserResponse), (status = 400, description = "Invalid display name")))]
async fn update_me(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    ApiJson(req): ApiJson<UpdateMeRequest>,
) -> Result<axum::Json<UserResponse>, ApiError> {
    let updated = service::update_display_name(&state, &meta, user, &req.display_name).await?;
    Ok(axum::Json(UserResponse::from(&updated)))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserPage {
    items: Vec<UserResponse>,
    next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateUserRequest {
    /// 1–100 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    display_name: Option<String>,
    /// `active` or `disabled`; disabling ends every session of the user at once.
    #[schema(value_type = Option<UserStatusValue>)]
    status: Option<String>,
}

/// A user's status as the API names it.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum UserStatusValue {
    Active,
    Disabled,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRolesRequest {
    /// Role names.
    roles: Vec<String>,
}

#[derive(Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// Only users whose email contains this text (case-insensitive; 1–254 characters).
    #[param(min_length = 1, max_length = 254)]
    email: Option<String>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Opaque; from a previous page's `nextCursor`.
    cursor: Option<String>,
}

/// List users (not deleted), oldest first; `email` searches by part of the address.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(UserListQuery),
    responses((status = 200, description = "A page of users", body = UserPage), (status = 400, description = "Bad limit, cursor, email or parameter")))]
async fn list_users(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<UserListQuery>,
) -> Result<axum::Json<UserPage>, ApiError> {
    if q.email
        .as_ref()
        .is_some_and(|e| e.is_empty() || e.chars().count() > 254 || e.chars().any(char::is_control))
    {
        return Err(Error::Validation(vec![rampart_core::FieldError::new(
            "query.email",
            "must be 1-254 characters without control characters",
        )])
        .into());
    }
    let limit = pagination::limit(q.limit)?;
    let after = pagination::decode_uuid("users", q.cursor.as_deref())?;
    let users =
        rampart_store::users::list_matching(&state.db, q.email.as_deref(), limit, after).await?;
    let next_cursor = pagination::next(&users, limit, "users", |u| u.id.to_string());
    Ok(axum::Json(UserPage {
        items: users.iter().map(UserResponse::from).collect(),
        next_cursor,
    }))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, description = "The user", body = UserResponse), (status = 400, description = "Malformed id"),
        (status = 404, description = "No such user")))]
async fn get_user(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<UserResponse>, ApiError> {
    let user = rampart_store::users::get(&state.db, id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(axum::Json(UserResponse::from(&user)))
}

/// Change a user's display name or status.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "User id")), request_body = UpdateUserRequest,
    responses((status = 200, description = "Updated", body = UserResponse), (status = 400, description = "Invalid input"),
        (status = 403, description = "Would leave no active holder of roles:assign"),
        (status = 404, description = "No such user")))]
async fn update_user(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> Result<axum::Json<UserResponse>, ApiError> {
    let patch = admin::UserPatch {
        display_name: req.display_name,
        status: req.status,
    };
    let user = admin::update_user(&state, &meta, caller, id, patch).await?;
    Ok(axum::Json(UserResponse::from(&user)))
}

/// Soft-delete a user; every session of the user ends.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 204, description = "Deleted"), (status = 400, description = "Malformed id"),
        (status = 403, description = "Would leave no active holder of roles:assign"),
        (status = 404, description = "No such user")))]
async fn delete_user(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::http::StatusCode, ApiError> {
    admin::delete_user(&state, &meta, caller, id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// End every session of a user.
#[utoipa::path(delete, path = "/api/v1/users/{id}/sessions", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 204, description = "Sessions ended"), (status = 400, description = "Malformed id"),
        (status = 404, description = "No such user")))]
async fn end_user_sessions(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::http::StatusCode, ApiError> {
    admin::end_user_sessions(&state, &meta, caller, id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Turn a user's MFA off (secret and recovery codes removed) and end every session of the
/// user: for the owner who lost both their device and their recovery codes. Idempotent.
#[utoipa::path(delete, path = "/api/v1/users/{id}/mfa", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 204, description = "MFA is off and every session of the user ended (also when MFA was already off)"),
        (status = 400, description = "Malformed id"),
        (status = 403, description = "The user holds a permission the caller lacks"),
        (status = 404, description = "No such user"),
        (status = 429, description = "Rate limited (the global per-IP limit)")))]
async fn reset_user_mfa(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::http::StatusCode, ApiError> {
    admin::reset_user_mfa(&state, &meta, caller, id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Replace a user's roles.
#[utoipa::path(put, path = "/api/v1/users/{id}/roles", tag = "users",
    params(("id" = Uuid, Path, description = "User id")), request_body = SetRolesRequest,
    responses((status = 200, description = "The user with the new roles", body = UserResponse), (status = 400, description = "Unknown role"),
        (status = 403, description = "Own roles; a permission the caller lacks; or the last holder of roles:assign"),
        (status = 404, description = "No such user")))]
async fn set_user_roles(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<SetRolesRequest>,
) -> Result<axum::Json<UserResponse>, ApiError> {
    let user = admin::set_roles(&state, &meta, caller, id, req.roles).await?;
    Ok(axum::Json(UserResponse::from(&user)))
}
