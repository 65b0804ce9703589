//! Authorisation at the HTTP boundary (contract §6): the policy each route declared is
//! enforced here, after the post-routing checks and before the handler's extractors, so
//! 401 comes before 403 and both before any input validation.
//!
//! Permissions resolve from the database through [`PermissionCache`]: one query per user
//! per [`PERMISSION_CACHE_TTL`] at most, none on a warm cache. Any change to roles, grants
//! or assignments clears the cache on this instance in the same request and, with Redis,
//! on every other instance within milliseconds ([`crate::invalidation`]), so it takes
//! effect on the next request; the TTL bounds the lag whatever happens to Redis.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use rampart_core::audit::Outcome;
use rampart_core::{Clock, Error};
use rampart_store::Db;
use uuid::Uuid;

use crate::auth::Authentication;
use crate::problem::ApiError;
use crate::routing::Policy;
use crate::services::meta::RequestMeta;

pub const PERMISSION_CACHE_TTL: Duration = Duration::from_secs(1);
const PERMISSION_CACHE_MAX: usize = 100_000;

/// A user's permissions and when they were read.
type Entry = (Arc<BTreeSet<String>>, Instant);

/// user id → its permissions, read through its own database handle. Like the session
/// cache of [`Authentication`], an answer read while a change was being announced is not
/// cached (the generation moved).
pub struct PermissionCache {
    db: Db,
    entries: Mutex<HashMap<Uuid, Entry>>,
    generation: AtomicU64,
}

impl PermissionCache {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            entries: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// The user's permissions, from the cache or (once per TTL) the database.
    pub async fn get(&self, user_id: Uuid) -> Result<Arc<BTreeSet<String>>, Error> {
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((perms, at)) = entries.get(&user_id)
                && at.elapsed() < PERMISSION_CACHE_TTL
            {
                return Ok(perms.clone());
            }
        }
        let generation = self.generation.load(Ordering::SeqCst);
        // Aged from before the read: an entry never outlives the TTL counted from when it
        // may have gone stale.
        let read_at = Instant::now();
        let perms = Arc::new(rampart_store::rbac::user_permissions(&self.db, user_id).await?);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) != generation {
            return Ok(perms);
        }
        if entries.len() >= PERMISSION_CACHE_MAX {
            entries.retain(|_, (_, at)| at.elapsed() < PERMISSION_CACHE_TTL);
            if entries.len() >= PERMISSION_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(user_id, (perms.clone(), read_at));
        Ok(perms)
    }

    /// Forgets everything. Use `AppState::permissions_changed` after a change to roles,
    /// grants or assignments, which also tells the other instances.
    pub(crate) fn clear(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }
}

/// Runs `policy` for one request: the request to serve, or the answer refusing it. On
/// success the [`AuthUser`](crate::auth::AuthUser) and the token's verified claims
/// ([`VerifiedToken`](crate::auth::VerifiedToken)) are left in the request's extensions,
/// so the handler's extractors do not verify the token again. The components come from
/// `state` through [`FromRef`].
pub async fn authorize<S>(policy: Policy, state: &S, req: Request) -> Result<Request, Response>
where
    S: Send + Sync,
    Arc<Authentication>: FromRef<S>,
    Arc<PermissionCache>: FromRef<S>,
    Db: FromRef<S>,
    Arc<dyn Clock>: FromRef<S>,
{
    let required = match policy {
        Policy::Public => return Ok(req),
        Policy::Authenticated => None,
        Policy::Permission(p) => Some(p),
    };
    let (mut parts, body) = req.into_parts();
    let (user, claims) = match Arc::<Authentication>::from_ref(state)
        .authenticate_claims(&parts.headers)
        .await
    {
        Ok(authenticated) => authenticated,
        Err(e) => return Err(ApiError(e).into_response()),
    };
    if let Some(permission) = required {
        let allowed = match Arc::<PermissionCache>::from_ref(state)
            .get(user.user_id)
            .await
        {
            Ok(perms) => perms.contains(permission),
            Err(e) => return Err(ApiError(e).into_response()),
        };
        if !allowed {
            // The refusal's audit write is boxed: inline, its transaction's future (~15 KB,
            // both backends' statements) made every request's future that large, and moving
            // it was a memcpy of that size per request (docs/benchmarks.md).
            return Err(Box::pin(deny(state, &mut parts, user.user_id, permission)).await);
        }
    }
    parts.extensions.insert(user);
    parts.extensions.insert(crate::auth::VerifiedToken(claims));
    Ok(Request::from_parts(parts, body))
}

/// The answer refusing `user` the `permission` a route requires: 403, after recording
/// `authz.denied` in the audit log (or the error that recording it met).
async fn deny<S>(state: &S, parts: &mut Parts, user: Uuid, permission: &str) -> Response
where
    S: Send + Sync,
    Db: FromRef<S>,
    Arc<dyn Clock>: FromRef<S>,
{
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    if let Ok(meta) = RequestMeta::from_request_parts(parts, state).await {
        let event = meta
            .event("authz.denied", Outcome::Denied)
            .with_actor(user)
            .with_details(serde_json::json!({
                "permission": permission,
                "method": parts.method.as_str(),
                "route": route,
            }));
        let now_ms = Arc::<dyn Clock>::from_ref(state).now_ms();
        if let Err(e) = rampart_store::audit::record(&Db::from_ref(state), &event, now_ms).await {
            return ApiError(e).into_response();
        }
    }
    metrics::counter!(crate::telemetry::AUTHZ_DENIED).increment(1);
    ApiError(Error::Forbidden).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AppState;

    /// The size of the future `make` returns, without calling it.
    fn output_size<F, Fut>(_make: F) -> usize
    where
        F: FnOnce(Policy, &'static AppState, Request) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every request's future holds `authorize`'s, and is moved (copied) as a whole when it
    /// is boxed. A rare path awaited inline (the refusal's audit transaction was ~15 KB)
    /// makes every request pay for its size; such paths are boxed. This fails if one comes
    /// back inline.
    #[test]
    fn authorize_future_stays_small() {
        let size = output_size(authorize::<AppState>);
        assert!(size <= 4096, "authorize's future is {size} bytes");
    }
}
