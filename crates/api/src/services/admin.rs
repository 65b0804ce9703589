//! User and role administration with the contract's anti-escalation rules (§5–6):
//! nobody grants a permission they do not hold, nobody changes their own roles, and the
//! system never loses its last active holder of `roles:assign` (the store enforces that one
//! inside each transaction). Every change clears the permission cache of this instance and
//! ends the sessions it must end, in the same request.

use std::collections::BTreeSet;

use rampart_core::audit::Outcome;
use rampart_core::rbac::{Permission, RoleName, beyond_own};
use rampart_core::users::{DisplayName, User, UserStatus};
use rampart_core::{Error, FieldError, Result};
use rampart_store::rbac::{self, Role};
use rampart_store::users;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::services::meta::RequestMeta;
use crate::state::AppState;

async fn caller_permissions(state: &AppState, caller: AuthUser) -> Result<BTreeSet<String>> {
    rbac::user_permissions(&state.db, caller.user_id).await
}

/// Refuses grants beyond the caller's own permissions.
fn check_escalation(own: &BTreeSet<String>, granted: &[String]) -> Result<()> {
    if beyond_own(own, granted.iter().map(String::as_str)).is_empty() {
        Ok(())
    } else {
        Err(Error::Forbidden)
    }
}

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
    let target = users::get(&state.db, id).await?.ok_or(Error::NotFound)?;
    if id == caller.user_id {
        return Err(Error::Forbidden);
    }
    // Only what is newly granted must be within the caller's own permissions.
    let all_roles = rbac::list_roles(&state.db).await?;
    let own = caller_permissions(state, caller).await?;
    let granted: Vec<String> = all_roles
        .iter()
        .filter(|r| names.contains(&r.name) && !target.roles.contains(&r.name))
        .flat_map(|r| r.permissions.iter().cloned())
        .collect();
    check_escalation(&own, &granted)?;
    let event = meta
        .event("user.roles_changed", Outcome::Success)
        .with_actor(caller.user_id)
        .with_target("user", id.to_string())
        .with_details(serde_json::json!({"from": target.roles, "to": names}));
    let user = rbac::set_user_roles(&state.db, id, &names, state.clock.now_ms(), &event).await?;
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
    check_escalation(&caller_permissions(state, caller).await?, &permissions)?;
    let event = meta
        .event("role.created", Outcome::Success)
        .with_actor(caller.user_id)
        .with_details(serde_json::json!({"name": name.as_str(), "permissions": permissions}));
    let role = rbac::create_role(
        &state.db,
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
    if let Some(p) = &permissions {
        let added: Vec<String> = p
            .iter()
            .filter(|x| !current.permissions.contains(x))
            .cloned()
            .collect();
        check_escalation(&caller_permissions(state, caller).await?, &added)?;
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
