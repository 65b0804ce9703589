//! One structured log line per request: request id, method, route template (never the raw
//! path, which may hold ids or tokens), status, latency and client IP. Never a body, a
//! header value, a cookie or a query string. The request's span carries the request id so
//! every event logged while serving it (e.g. an internal error's cause) carries it too.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::extract::{ClientIp, RequestId};

/// The matched route's template, left on the response by the policy guard
/// ([`crate::policies::guard`]) for the access log's `route` field.
#[derive(Clone)]
pub(crate) struct RouteTemplate(pub(crate) MatchedPath);

pub async fn layer(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let client_ip = req
        .extensions()
        .get::<ClientIp>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = %request_id);
    let response = next.run(req).instrument(span.clone()).await;
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map_or("<unmatched>", |t| t.0.as_str());
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        tracing::info!(
            target: "rampart::access",
            method = %method,
            route,
            status,
            latency_ms = (latency_ms * 1000.0).round() / 1000.0,
            client_ip = %client_ip,
            "request"
        );
    });
    response
}
