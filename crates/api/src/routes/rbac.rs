//! `/api/v1/rbac` (contract §6): permissions and roles.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rampart_store::rbac::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::extract::{ApiJson, ApiPath, ApiQuery, NoQuery};
use crate::problem::ApiError;
use crate::routes::rfc3339;
use crate::routing::{Policy, route};
use crate::services::admin;
use crate::services::meta::RequestMeta;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(route(
            Policy::Permission("roles:read"),
            routes!(list_permissions),
        ))
        .routes(route(Policy::Permission("roles:read"), routes!(list_roles)))
        .routes(route(
            Policy::Permission("roles:write"),
            routes!(create_role),
        ))
        .routes(route(
            Policy::Permission("roles:write"),
            routes!(update_role),
        ))
        .routes(route(
            Policy::Permission("roles:write"),
            routes!(delete_role),
        ))
}

#[derive(Serialize, ToSchema)]
pub struct PermissionResponse {
    name: String,
    feature: String,
    description: String,
}

#[derive(Serialize, ToSchema)]
pub struct PermissionList {
    items: Vec<PermissionResponse>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleResponse {
    id: Uuid,
    name: String,
    description: String,
    permissions: Vec<String>,
    built_in: bool,
    created_at: String,
    updated_at: String,
}

impl From<&Role> for RoleResponse {
    fn from(r: &Role) -> Self {
        Self {
            id: r.id,
            name: r.name.clone(),
            description: r.description.clone(),
            permissions: r.permissions.clone(),
            built_in: r.built_in,
            created_at: rfc3339(r.created_at_ms),
            updated_at: rfc3339(r.updated_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RoleList {
    items: Vec<RoleResponse>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleRequest {
    /// `[a-z][a-z0-9_-]{1,49}`
    #[schema(pattern = r"^[a-z][a-z0-9_-]{1,49}$")]
    name: String,
    /// At most 500 characters, no control characters.
    #[schema(max_length = 500, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    description: String,
    permissions: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoleRequest {
    /// At most 500 characters, no control characters.
    #[schema(max_length = 500, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    description: Option<String>,
    permissions: Option<Vec<String>>,
}

/// Every active permission the code declares.
#[utoipa::path(get, path = "/api/v1/rbac/permissions", tag = "rbac",
    responses((status = 200, description = "Every permission", body = PermissionList), (status = 400, description = "A query parameter (none are accepted)")))]
async fn list_permissions(
    State(state): State<AppState>,
    _: ApiQuery<NoQuery>,
) -> Result<axum::Json<PermissionList>, ApiError> {
    let items = rampart_store::rbac::list_permissions(&state.db)
        .await?
        .into_iter()
        .map(|p| PermissionResponse {
            name: p.name,
            feature: p.feature,
            description: p.description,
        })
        .collect();
    Ok(axum::Json(PermissionList { items }))
}

/// Every role with its permissions.
#[utoipa::path(get, path = "/api/v1/rbac/roles", tag = "rbac",
    responses((status = 200, description = "Every role", body = RoleList), (status = 400, description = "A query parameter (none are accepted)")))]
async fn list_roles(
    State(state): State<AppState>,
    _: ApiQuery<NoQuery>,
) -> Result<axum::Json<RoleList>, ApiError> {
    let roles = rampart_store::rbac::list_roles(&state.db).await?;
    Ok(axum::Json(RoleList {
        items: roles.iter().map(RoleResponse::from).collect(),
    }))
}

/// Create a role (only with permissions the caller holds).
#[utoipa::path(post, path = "/api/v1/rbac/roles", tag = "rbac", request_body = CreateRoleRequest,
    responses((status = 201, description = "Created", body = RoleResponse), (status = 400, description = "Invalid name or unknown permission"),
        (status = 403, description = "Grants a permission the caller lacks"),
        (status = 409, description = "Name taken")))]
async fn create_role(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiJson(req): ApiJson<CreateRoleRequest>,
) -> Result<Response, ApiError> {
    let role = admin::create_role(
        &state,
        &meta,
        caller,
        &req.name,
        &req.description,
        &req.permissions,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(RoleResponse::from(&role))).into_response())
}

/// Change a role's description or permissions (not the built-in roles).
#[utoipa::path(patch, path = "/api/v1/rbac/roles/{id}", tag = "rbac",
    params(("id" = Uuid, Path, description = "Role id")), request_body = UpdateRoleRequest,
    responses((status = 200, description = "Updated", body = RoleResponse), (status = 400, description = "Invalid input"),
        (status = 403, description = "Grants a permission the caller lacks, or removes the last holder of roles:assign"),
        (status = 404, description = "No such role"), (status = 409, description = "Built-in role")))]
async fn update_role(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateRoleRequest>,
) -> Result<axum::Json<RoleResponse>, ApiError> {
    let role = admin::update_role(
        &state,
        &meta,
        caller,
        id,
        req.description.as_deref(),
        req.permissions.as_deref(),
    )
    .await?;
    Ok(axum::Json(RoleResponse::from(&role)))
}

/// Delete a role (not the built-in roles).
#[utoipa::path(delete, path = "/api/v1/rbac/roles/{id}", tag = "rbac",
    params(("id" = Uuid, Path, description = "Role id")),
    responses((status = 204, description = "Deleted"), (status = 400, description = "Malformed id"),
        (status = 403, description = "Removes the last holder of roles:assign"),
        (status = 404, description = "No such role"), (status = 409, description = "Built-in role")))]
async fn delete_role(
    State(state): State<AppState>,
    meta: RequestMeta,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    admin::delete_role(&state, &meta, caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
