//! How a feature declares a route. `guarded(routes!(handler))` attaches the checks the
//! contract orders after routing — rate limit (429), then body size (413) and media type
//! (415) — to the route's *method handlers* only. Attaching them with `Router::route_layer`
//! would also wrap axum's 405 answer, so a rate-limited client would see 429 for a wrong
//! method; the contract puts 404 and 405 first.
//!
//! The checks read their settings from a [`Guards`] request extension that the outer
//! pipeline inserts, so feature modules build their routes without holding the state.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::{self as mw, Next};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::UtoipaMethodRouter;

use crate::extract::{ClientIp, is_json_utf8};
use crate::middleware::rate_limit::IpRateLimiter;
use crate::problem::Problem;
use crate::state::AppState;

/// Settings of the post-routing checks, shared by every route.
#[derive(Clone)]
pub struct Guards {
    pub limiter: Arc<IpRateLimiter>,
    pub login_limiter: Arc<IpRateLimiter>,
    pub register_limiter: Arc<IpRateLimiter>,
    pub max_body_bytes: usize,
}

/// A per-route limit on top of the global one (contract §9).
#[derive(Clone, Copy, Debug)]
pub enum RouteLimit {
    /// `RAMPART_LOGIN_RATE_PER_MINUTE` per client IP.
    Login,
    /// `RAMPART_REGISTER_RATE_PER_HOUR` per client IP.
    Register,
}

/// Wraps a route's handlers with the post-routing checks. Every route but the health
/// checks is declared through this.
pub fn guarded(route: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    let (schemas, paths, method_router) = route;
    (schemas, paths, guard_method(method_router))
}

/// [`guarded`] plus a per-route limit, checked right after the global one.
pub fn guarded_limited(
    route: UtoipaMethodRouter<AppState>,
    limit: RouteLimit,
) -> UtoipaMethodRouter<AppState> {
    let (schemas, paths, method_router) = route;
    (
        schemas,
        paths,
        guard_method_with(method_router, Some(limit)),
    )
}

/// [`guarded`] for an undocumented `MethodRouter`.
pub fn guard_method(
    method_router: axum::routing::MethodRouter<AppState>,
) -> axum::routing::MethodRouter<AppState> {
    guard_method_with(method_router, None)
}

/// The same checks for a plain router (Swagger UI, which brings its own routes).
pub fn guard_router(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router.route_layer(mw::from_fn(|req: Request, next: Next| {
        post_route_checks(None, req, next)
    }))
}

fn guard_method_with(
    method_router: axum::routing::MethodRouter<AppState>,
    limit: Option<RouteLimit>,
) -> axum::routing::MethodRouter<AppState> {
    method_router.route_layer(mw::from_fn(move |req: Request, next: Next| {
        post_route_checks(limit, req, next)
    }))
}

async fn post_route_checks(limit: Option<RouteLimit>, req: Request, next: Next) -> Response {
    let Some(guards) = req.extensions().get::<Guards>().cloned() else {
        return Problem::for_status(StatusCode::INTERNAL_SERVER_ERROR).into_response();
    };
    let ip = req
        .extensions()
        .get::<ClientIp>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0);
    if let Err(secs) = guards.limiter.check(ip) {
        return Problem::rate_limited(secs).into_response();
    }
    let route_limiter = match limit {
        Some(RouteLimit::Login) => Some(&guards.login_limiter),
        Some(RouteLimit::Register) => Some(&guards.register_limiter),
        None => None,
    };
    if let Some(limiter) = route_limiter
        && let Err(secs) = limiter.check(ip)
    {
        return Problem::rate_limited(secs).into_response();
    }
    let headers = req.headers();
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared_len.is_some_and(|n| n > guards.max_body_bytes as u64) {
        return Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE).into_response();
    }
    // Any request that carries a body must declare it as UTF-8 JSON, whatever the route.
    let has_body =
        headers.contains_key(header::TRANSFER_ENCODING) || declared_len.is_some_and(|n| n > 0);
    if has_body {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_utf8);
        if !json {
            return Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE).into_response();
        }
    }
    next.run(req).await
}
