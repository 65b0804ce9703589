//! The owned-resource kit (contract §7): everything an owner-scoped module's routes do
//! besides parsing their input and shaping their output.
//!
//! A module declares a [`Resource`] with `resource!` (its feature name, the audit kind of
//! its objects and its `rampart_store::owned` table) and its handlers call the methods
//! here. The kit decides the [`Scope`] every store call runs in, from the caller's
//! permissions as they are now; module code never names a scope, so it cannot widen one:
//!
//! - reads: any object with `<feature>:read_any` or `<feature>:manage_any`, else one's own;
//!   another user's object is 404, like a missing one;
//! - writes: any object with `<feature>:manage_any`, else one's own; a caller who may only
//!   read another user's existing object gets 403 (404 when it does not exist);
//! - lists: one's own objects only, whatever the caller holds;
//! - creation: owned by the caller, always.
//!
//! Each change is audited as `<kind>.created|updated|deleted` with the caller as actor and
//! the object as target, in the change's transaction.
//!
//! This is the one module of the HTTP layer allowed to name `Scope` (`clippy.toml`).
#![allow(clippy::disallowed_types)]

use rampart_core::audit::{NewAuditEvent, Outcome};
use rampart_core::{Error, Result};
use rampart_store::owned::{Bind, Fields, Owned, OwnedTable, Scope};
use utoipa::openapi::OpenApiBuilder;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::tag::TagBuilder;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::pagination::{self, Page, PageQuery};
use crate::routing::{Policy, route};
use crate::services::meta::RequestMeta;
use crate::state::AppState;

/// The OpenAPI extension marking an owner-scoped operation:
/// `{"feature": "notes", "kind": "note"}`.
pub const OWNED_EXTENSION: &str = "x-rampart-owned";

/// An owned resource: its feature's permissions, its audit kind and its table.
pub struct Resource<T: 'static, P: 'static> {
    /// `notes`: the permissions' prefix and the list cursors' kind.
    pub feature: &'static str,
    /// `note`: the audit events' prefix and target type.
    pub kind: &'static str,
    pub read: &'static str,
    pub write: &'static str,
    pub read_any: &'static str,
    pub manage_any: &'static str,
    pub table: OwnedTable<T, P>,
}

/// `resource!("notes", "note", rampart_store::notes::TABLE)`: the resource whose
/// permissions are `notes:read`, `notes:write`, `notes:read_any` and `notes:manage_any`.
macro_rules! resource {
    ($feature:literal, $kind:literal, $table:expr) => {
        $crate::owned::Resource {
            feature: $feature,
            kind: $kind,
            read: concat!($feature, ":read"),
            write: concat!($feature, ":write"),
            read_any: concat!($feature, ":read_any"),
            manage_any: concat!($feature, ":manage_any"),
            table: $table,
        }
    };
}
pub(crate) use resource;

/// Which of its feature's permissions a route of the resource requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Read,
    Write,
}

impl<T: Fields + Bind, P: Bind> Resource<T, P> {
    /// The module's router, with its OpenAPI tag (the feature's name).
    pub fn router(&self, description: &str) -> OpenApiRouter<AppState> {
        let tag = TagBuilder::new()
            .name(self.feature)
            .description(Some(description))
            .build();
        OpenApiRouter::with_openapi(OpenApiBuilder::new().tags(Some([tag])).build())
    }

    /// Declares a route of the resource, policed by its `read` or `write` permission and
    /// marked owner-scoped in the OpenAPI document ([`OWNED_EXTENSION`]), which puts it
    /// under the shared ownership contract test (`tests/api/owned.rs`).
    pub fn route(
        &self,
        needs: Needs,
        routes: UtoipaMethodRouter<AppState>,
    ) -> UtoipaMethodRouter<AppState> {
        let permission = match needs {
            Needs::Read => self.read,
            Needs::Write => self.write,
        };
        let (schemas, mut paths, method_router) = routes;
        let mark = serde_json::json!({ "feature": self.feature, "kind": self.kind });
        for item in paths.paths.values_mut() {
            for operation in crate::policies::operation_slots(item).into_iter().flatten() {
                let stamp = ExtensionsBuilder::new()
                    .add(OWNED_EXTENSION, mark.clone())
                    .build();
                match &mut operation.extensions {
                    Some(existing) => existing.merge(stamp),
                    None => operation.extensions = Some(stamp),
                }
            }
        }
        route(
            Policy::Permission(permission),
            (schemas, paths, method_router),
        )
    }

    /// Stores `fields` as a new object of the caller.
    pub async fn create(
        &self,
        state: &AppState,
        meta: &RequestMeta,
        caller: AuthUser,
        fields: T,
    ) -> Result<Owned<T>> {
        let id = Uuid::now_v7();
        let event = self.event(meta, caller, "created", id);
        let now_ms = state.clock.now_ms();
        let db = &state.db;
        self.table
            .create(db, id, caller.user_id, &fields, now_ms, &event)
            .await
    }

    /// A page of the caller's own objects, oldest first (whatever else they may read).
    pub async fn list<R>(
        &self,
        state: &AppState,
        caller: AuthUser,
        query: &PageQuery,
    ) -> Result<Page<R>>
    where
        R: for<'a> From<&'a Owned<T>>,
    {
        let own = Scope::Owner(caller.user_id);
        let fetch = async |after, limit| self.table.list(&state.db, own, after, limit).await;
        pagination::by_id(query, self.feature, fetch, |row| row.id).await
    }

    /// Every one of the caller's own objects, oldest first (the account export, contract
    /// §11), read in pages of 100.
    pub async fn all_own<R>(&self, state: &AppState, caller: AuthUser) -> Result<Vec<R>>
    where
        R: for<'a> From<&'a Owned<T>>,
    {
        const PAGE: u32 = 100;
        let own = Scope::Owner(caller.user_id);
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let rows = self.table.list(&state.db, own, after, PAGE).await?;
            out.extend(rows.iter().map(R::from));
            match rows.last() {
                Some(last) if rows.len() == PAGE as usize => after = Some(last.id),
                _ => return Ok(out),
            }
        }
    }

    /// The object `id`, if the caller may read it; else 404.
    pub async fn get(&self, state: &AppState, caller: AuthUser, id: Uuid) -> Result<Owned<T>> {
        let scope = self
            .scope(state, caller, &[self.read_any, self.manage_any])
            .await?;
        let found = self.table.get(&state.db, id, scope).await?;
        found.ok_or(Error::NotFound)
    }

    /// Applies `patch` to the object `id`, if the caller may change it.
    pub async fn update(
        &self,
        state: &AppState,
        meta: &RequestMeta,
        caller: AuthUser,
        id: Uuid,
        patch: P,
    ) -> Result<Owned<T>> {
        let scope = self.scope(state, caller, &[self.manage_any]).await?;
        let event = self.event(meta, caller, "updated", id);
        let now_ms = state.clock.now_ms();
        let db = &state.db;
        match self
            .table
            .update(db, id, scope, &patch, now_ms, &event)
            .await?
        {
            Some(updated) => Ok(updated),
            None => Err(self.refusal(state, caller, id).await?),
        }
    }

    /// Deletes the object `id`, if the caller may change it.
    pub async fn delete(
        &self,
        state: &AppState,
        meta: &RequestMeta,
        caller: AuthUser,
        id: Uuid,
    ) -> Result<()> {
        let scope = self.scope(state, caller, &[self.manage_any]).await?;
        let event = self.event(meta, caller, "deleted", id);
        let now_ms = state.clock.now_ms();
        if self
            .table
            .delete(&state.db, id, scope, now_ms, &event)
            .await?
        {
            Ok(())
        } else {
            Err(self.refusal(state, caller, id).await?)
        }
    }

    /// The only place a scope is decided: `Any` for a caller holding one of `overrides`
    /// now, else the caller's own objects.
    async fn scope(&self, state: &AppState, caller: AuthUser, overrides: &[&str]) -> Result<Scope> {
        let held = state.permissions.get(caller.user_id).await?;
        if overrides.iter().any(|p| held.contains(*p)) {
            Ok(Scope::Any)
        } else {
            Ok(Scope::Owner(caller.user_id))
        }
    }

    /// Why a write in the caller's scope matched nothing: 403 when the object exists and
    /// the caller may read it (`read_any`) but not change it, else 404.
    async fn refusal(&self, state: &AppState, caller: AuthUser, id: Uuid) -> Result<Error> {
        if self.scope(state, caller, &[self.read_any]).await? == Scope::Any
            && self.table.get(&state.db, id, Scope::Any).await?.is_some()
        {
            return Ok(Error::Forbidden);
        }
        Ok(Error::NotFound)
    }

    fn event(&self, meta: &RequestMeta, caller: AuthUser, what: &str, id: Uuid) -> NewAuditEvent {
        meta.event(&format!("{}.{what}", self.kind), Outcome::Success)
            .with_actor(caller.user_id)
            .with_target(self.kind, id.to_string())
    }
}
