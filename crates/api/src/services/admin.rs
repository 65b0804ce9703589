//! User and role administration with the contract's anti-escalation rules (§5–6):
//! nobody grants a permission they do not hold or resets the MFA of a user holding one
//! they do not hold, nobody changes their own roles, and the system never loses its last
//! active holder of `roles:assign`. The store enforces the first two and the last inside
//! each transaction, under the RBAC lock, against the caller's permissions as of that
//! transaction (never a copy read before it). Every change clears the permission cache of
//! this instance and ends the sessions it must end, in the same request.

use std::collections::BTreeSet;

use rampart_core::audit::Outcome;
use rampart_core::rbac::{Permission, RoleName};
use rampart_core::users::{DisplayName, User, UserStatus};
use rampart_core::{Error, FieldError, Result};
use rampart_store::rbac::{self, Role};
use rampart_store::users;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::services::meta::RequestMeta;
use crate::state::AppState;

fn parse_permissions(raw: &[String]) -> Result<Vec<String>> {
    let mut errors = Vec::new();
    let mut out = BTreeSet::new();
    for (i, p) in raw.iter().enumerate() {
        match Permission::parse(p, &format!("permissions.{i}")) {
            Ok(p) => {
                out.insert(p.as_str().to_owned());
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out.into_iter().collect())
    } else {
        Err(Error::Validation(errors))
    }
}

async fn require_known_permissions(state: &AppState, permissions: &[String]) -> Result<()> {
    let unknown = rbac::unknown_permissions(&state.db, permissions).await?;
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(
            unknown
                .into_iter()
                .map(|p| FieldError::new("permissions", format!("unknown permission {p}")))
                .collect(),
        ))
    }
}

pub struct UserPatch {
    pub display_name: Option<String>,
    pub status: Option<String>,
}

pub async fn update_user(
    state: &AppState,
    meta: &RequestMeta,
    caller: AuthUser,
    id: Uuid,
    patch: UserPatch,
) -> Result<User> {
    let mut errors = Vec::new();
    let name = patch
        .display_name
        .as_deref()
        .map(|n| DisplayName::parse(n, "displayName"))
        .transpose()
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let status = match patch.status.as_deref() {
        None => None,
        Some(s) => match UserStatus::parse(s) {
            Some(s) => Some(s),
            None => {
                errors.push(FieldError::new("status", "must be active or disabled"));
                None
            }
        },
    };
    if patch.display_name.is_none() && patch.status.is_none() {
        errors.push(FieldError::new("body", "must change displayName or status"));
    }
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let mut fields = Vec::new();
    if name.is_some() {
        fields.push("displayName");
    }
    if status.is_some() {
        fields.push("status");
    }
    let event = meta
        .event("user.updated", Outcome::Success)
        .with_actor(caller.user_id)
        .with_target("user", id.to_string())
        .with_details(serde_json::json!({
            "fields": fields,
            "status": status.map(UserStatus::as_str),
        }));
    let (user, ended) = users::update_admin(
        &state.db,
        id,
        name.as_ref(),
        status,
        state.clock.now_ms(),
        &event,
    )
    .await?;
    state.sessions_ended(&ended);
    state.permissions_changed();
    Ok(user)
}

pub async fn delete_user(
    state: &AppState,
    meta: &RequestMeta,
    caller: AuthUser,
    id: Uuid,
) -> Result<()> {
    let event = meta
        .event("user.deleted", Outcome::Success)
        .with_actor(caller.user_id)
        .with_target("user", id.to_string());
    let ended = users::soft_delete(&state.db, id, state.clock.now_ms(), &event).await?;
    state.sessions_ended(&ended);
    state.permissions_changed();
    Ok(())
}

pub async fn end_user_sessions(
    state: &AppState,
    meta: &RequestMeta,
    caller: AuthUser,
    id: Uuid,
) -> Result<()> {
    if users::get(&state.db, id).await?.is_none() {
        return Err(Error::NotFound);
    }
    let event = meta
        .event("auth.logout_all", Outcome::Success)
        .with_actor(caller.user_id)
        .with_target("user", id.to_string())
        .with_details(serde_json::json!({"by": "administrator"}));
    let ended = rampart_store::sessions::revoke_all(
        &state.db,
        id,
        None,
        "ended_by_administrator",
        state.clock.now_ms(),
        Some(&event),
    )
    .await?;
    state.sessions_ended(&ended);
    Ok(())
}

/// `DELETE /users/{id}/mfa` (contract §5): turns the user's MFA off and ends all their
/// sessions, when the caller holds every permission the user holds (checked by the store
/// under the RBAC lock). When MFA is already off nothing changes and nothing is audited:
/// the answer is the same 204, so a retry is harmless.
pub async fn reset_user_mfa(
    state: &AppState,
    meta: &RequestMeta,
    caller: AuthUser,
    id: Uuid,
) -> Result<()> {
    let event = meta
        .event("auth.mfa_reset", Outcome::Success)
        .with_actor(caller.user_id)
        .with_target("user", id.to_string())
        .with_details(serde_json::json!({"by": "administrator"}));
    let outcome =
        rampart_store::mfa::reset(&state.db, caller.user_id, id, state.clock.now_ms(), &event)
            .await?;
    if let rampart_store::mfa::MfaReset::Reset { ended } = outcome {
        state.sessions_ended(&ended);
    }
    Ok(())
}

pub async fn set_roles(
    state: &AppState,
    meta: &RequestMeta,
    caller: AuthUser,
    id: Uuid,
    roles: Vec<String>,
) -> Result<User> {
    let mut names = BTreeSet::new();
    let mut errors = Vec::new();
    for (i, r) in roles.iter().enumerate() {
        match RoleName::parse(r, &format!("roles.{i}")) {
            Ok(n) => {
                names.insert(n.as_str().to_owned());
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let names: Vec<String> = names.into_iter().collect();
    let unknown = rbac::unknown_roles(&state.db, &names).await?;
    if !unknown.is_empty() {
        return Err(Error::Validation(
            unknown
                .into_iter()
                .map(|r| FieldError::new("roles", format!("unknown role {r}")))
                .collect(),
        ));
    }
    if users::get(&state.db, id).await?.is_none() {
        return Err(Error::NotFound);
    }
    if id == caller.user_id {
        return Err(Error::Forbidden);
    }
    // The store refuses, under its lock, a newly granted permission the caller lacks, and
    // writes the event's `from` and `to` as its transaction saw them.
    let event = meta
        .event("user.roles_changed", Outcome::Success)
        .with_actor(caller.user_id)
        .with_target("user", id.to_string());
    let user = rbac::set_user_roles(
        &state.db,
        Some(caller.user_id),
        id,
        &names,
        state.clock.now_ms(),
        &event,
    )
    .await?;
    state.permissions_changed();
    Ok(user)
}

pub async fn create_role(
    state: &AppState,
    meta: &RequestMeta,
    caller: AuthUser,
    name: &str,
    description: &str,
    permissions: &[String],
) -> Result<Role> {
    let mut errors = Vec::new();
    let name = RoleName::parse(name, "name")
        .map_err(|e| errors.push(e))
        .ok();
    if description.chars().count() > 500 || description.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "description",
            "must be at most 500 characters without control characters",
        ));
    }
    let permissions = match parse_permissions(permissions) {
        Ok(p) => p,
        Err(Error::Validation(mut e)) => {
            errors.append(&mut e);
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let (Some(name), true) = (name, errors.is_empty()) else {
        return Err(Error::Validation(errors));
    };
    require_known_permissions(state, &permissions).await?;
    let event = meta
        .event("role.created", Outcome::Success)
        .with_actor(caller.user_id)
        .with_details(serde_json::json!({"name": name.as_str(), "permissions": permissions}));
    let role = rbac::create_role(
        &state.db,
        Some(caller.user_id),
        &name,
        description,
        &permissions,
        state.clock.now_ms(),
        &event,
    )
    .await?;
    state.permissions_changed();
    Ok(role)
}

pub async fn update_role(
    state: &AppState,
    meta: &RequestMeta,
    caller: AuthUser,
    id: Uuid,
    description: Option<&str>,
    permissions: Option<&[String]>,
) -> Result<Role> {
    if let Some(d) = description
        && (d.chars().count() > 500 || d.chars().any(char::is_control))
    {
        return Err(Error::validation(
            "description",
            "must be at most 500 characters without control characters",
        ));
    }
    if description.is_none() && permissions.is_none() {
        return Err(Error::validation(
            "body",
            "must change description or permissions",
        ));
    }
    let permissions = permissions.map(parse_permissions).transpose()?;
    if let Some(p) = &permissions {
        require_known_permissions(state, p).await?;
    }
    let current = rbac::get_role(&state.db, id)
        .await?
        .ok_or(Error::NotFound)?;
    if current.built_in {
        return Err(Error::Conflict("built-in roles cannot be changed".into()));
    }
    let event = meta
        .event("role.updated", Outcome::Success)
        .with_actor(caller.user_id)
        .with_target("role", id.to_string())
        .with_details(serde_json::json!({
            "name": current.name,
            "permissions": permissions,
            "descriptionChanged": description.is_some(),
        }));
    let role = rbac::update_role(
        &state.db,
        Some(caller.user_id),
        id,
        description,
        permissions.as_deref(),
        state.clock.now_ms(),
        &event,
    )
    .await?;
    state.permissions_changed();
    Ok(role)
}

pub async fn delete_role(
    state: &AppState,
    meta: &RequestMeta,
    caller: AuthUser,
    id: Uuid,
) -> Result<()> {
    let current = rbac::get_role(&state.db, id)
        .await?
        .ok_or(Error::NotFound)?;
    let event = meta
        .event("role.deleted", Outcome::Success)
        .with_actor(caller.user_id)
        .with_target("role", id.to_string())
        .with_details(serde_json::json!({"name": current.name}));
    rbac::delete_role(&state.db, id, state.clock.now_ms(), &event).await?;
    state.permissions_changed();
    Ok(())
}
