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
//! (docs/benchmarks.md), a hand-written service ([`EdgeLayer`]) rather than axum's
//! `from_fn`, which boxes the rest of the stack again and its future once more.

use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tower::Service;

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

/// The pipeline as a layer: `Router::layer(EdgeLayer(edge))`.
#[derive(Clone)]
pub struct EdgeLayer(pub Arc<Edge>);

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> EdgeService<S> {
        EdgeService {
            edge: self.0.clone(),
            inner,
        }
    }
}

/// [`EdgeLayer`]'s service: steps 1–10 around `inner`.
#[derive(Clone)]
pub struct EdgeService<S> {
    edge: Arc<Edge>,
    inner: S,
}

impl<S> Service<Request> for EdgeService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The inner service was made ready by `poll_ready`; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let edge = self.edge.clone();
        Box::pin(async move { Ok(serve(&edge, req, inner).await) })
    }
}

async fn serve<S>(edge: &Edge, mut req: Request, inner: S) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let id = request_id::assign(&mut req);
    let class = security_headers::classify(req.uri().path());
    client_ip::resolve_into(&edge.proxies, &mut req);
    let response = access_log::around(req, |req| async {
        match limits::too_long(&req) {
            Some(refused) => refused,
            None => cors::around(&edge.cors, req, |req| guarded(edge, req, inner)).await,
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
async fn guarded<S>(edge: &Edge, mut req: Request, mut inner: S) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    req.extensions_mut().insert(edge.state.clone());
    req.extensions_mut().insert(edge.guards.clone());
    let call = tokio::time::timeout(edge.timeout, inner.call(req));
    match std::panic::AssertUnwindSafe(call).catch_unwind().await {
        Ok(Ok(Ok(response))) => response,
        // The problem step renders it (503 `unavailable`).
        Ok(Err(_elapsed)) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Err(panic) => crate::panic_response(panic),
    }
}
