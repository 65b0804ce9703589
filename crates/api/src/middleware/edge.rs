//! The outer request pipeline of contract §1–3 as one layer: every request, matched or not,
//! passes these steps, outermost first:
//!
//! 1. request id ([`request_id`]), echoed on the response;
//! 2. security headers ([`security_headers`]), set on the response whatever it is;
//! 3. problem documents ([`problem`]): any 4xx or 5xx is rendered as one;
//! 4. the client's address ([`client_ip`]);
//! 5. the access log, metrics and the server span ([`access_log`]);
//! 6. 414 over [`limits::MAX_TARGET_BYTES`];
//! 7. CORS ([`cors`]): an allowed preflight is answered here;
//! 8. a panic below becomes 500 (logged, its message never shown);
//! 9. the request timeout (`RAMPART_REQUEST_TIMEOUT`): 503 when the rest takes longer;
//! 10. the application state and the post-routing checks' settings as request
//!     extensions (read by the route checks of [`crate::routing`]).
//!
//! They were eleven layers (seven `from_fn`, tower-http's panic and timeout layers, two
//! `Extension`s); each cloned the rest of the stack, or boxed it and its future, per
//! request. One function in that order keeps their behaviour and costs one layer
//! (docs/benchmarks.md).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;

use super::client_ip::TrustedProxies;
use super::cors::Cors;
use super::security_headers::SecurityHeaders;
use super::{access_log, client_ip, cors, limits, problem, request_id, security_headers};
use crate::AppState;
use crate::routing::Guards;

/// What the outer pipeline needs from the configuration.
pub struct Edge {
    pub security: SecurityHeaders,
    pub proxies: TrustedProxies,
    pub cors: Cors,
    pub state: AppState,
    pub guards: Guards,
    /// `RAMPART_REQUEST_TIMEOUT`.
    pub timeout: Duration,
}

pub async fn layer(State(edge): State<Arc<Edge>>, mut req: Request, next: Next) -> Response {
    let id = request_id::assign(&mut req);
    let class = security_headers::classify(req.uri().path());
    client_ip::resolve_into(&edge.proxies, &mut req);
    let response = access_log::around(req, |req| async {
        match limits::too_long(&req) {
            Some(refused) => refused,
            None => cors::around(&edge.cors, req, |req| guarded(&edge, req, next)).await,
        }
    })
    .await;
    let request_id = id
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let mut response = problem::render(request_id, response);
    security_headers::apply(edge.security, class, &mut response);
    request_id::echo(id, &mut response);
    response
}

/// Steps 8–10: the extensions, then the rest of the stack under the timeout, under the
/// panic guard.
async fn guarded(edge: &Edge, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(edge.state.clone());
    req.extensions_mut().insert(edge.guards.clone());
    let call = tokio::time::timeout(edge.timeout, next.run(req));
    match std::panic::AssertUnwindSafe(call).catch_unwind().await {
        Ok(Ok(response)) => response,
        // The problem step renders it (503 `unavailable`).
        Ok(Err(_elapsed)) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Err(panic) => crate::panic_response(panic),
    }
}
