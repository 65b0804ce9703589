//! How a feature declares a route: `route(Policy::…, routes!(handler))`. It attaches the
//! checks the contract orders after routing — the client's address (400 when a trusted
//! proxy's `X-Forwarded-For` does not name it), rate limit (429), body size (413) and media
//! type (415), authentication (401), permission (403) — to the route's *method handlers*
//! only, and records the policy in the OpenAPI document together with the responses those
//! checks can send (`document`), so no annotation has to repeat them and none can forget
//! them. Attaching them with `Router::route_layer`
//! would also wrap axum's 405 answer, so a rate-limited client would see 429 for a wrong
//! method; the contract puts 404 and 405 first.
//!
//! The checks read their settings from a [`Guards`] request extension that the outer
//! pipeline inserts, so feature modules build their routes without holding the state.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rampart_core::FieldError;
use utoipa_axum::router::UtoipaMethodRouter;

use crate::extract::{ClientIp, is_json_utf8};
use crate::middleware::client_ip::UnparsableForwardedFor;
use crate::middleware::rate_limit::RateLimits;
use crate::problem::{PROBLEM_MEDIA_TYPE, Problem};
use crate::state::AppState;

/// Settings of the post-routing checks, shared by every route.
#[derive(Clone)]
pub struct Guards {
    pub limits: Arc<RateLimits>,
    pub max_body_bytes: usize,
}

/// A per-route limit on top of the global one (contract §9).
#[derive(Clone, Copy, Debug)]
pub enum RouteLimit {
    /// `RAMPART_LOGIN_RATE_PER_MINUTE` per client IP.
    Login,
    /// `RAMPART_REGISTER_RATE_PER_HOUR` per client IP.
    Register,
    /// Password reset requests and confirmations: 4 × `RAMPART_RESET_RATE_PER_HOUR` per
    /// client IP (the per-email limit is `RAMPART_RESET_RATE_PER_HOUR` itself).
    Reset,
}

/// What a route requires of its caller (contract §6: deny by default). Every route
/// declares exactly one; [`crate::build_router`] refuses to build when an operation of the
/// OpenAPI document carries none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Anyone.
    Public,
    /// A valid access token of a live session.
    Authenticated,
    /// An authenticated caller holding this `feature:action` permission.
    Permission(&'static str),
}

impl Policy {
    /// How the policy is written into the OpenAPI document (`x-rampart-policy`).
    pub fn label(self) -> String {
        match self {
            Self::Public => "public".to_owned(),
            Self::Authenticated => "authenticated".to_owned(),
            Self::Permission(p) => format!("permission:{p}"),
        }
    }
}

/// The OpenAPI extension that records each operation's policy.
pub const POLICY_EXTENSION: &str = "x-rampart-policy";

/// Marks an operation of [`undocumented`]: its policy counts, but it is left out of the
/// served document ([`crate::policies::strip_undocumented`]).
pub const UNDOCUMENTED_EXTENSION: &str = "x-rampart-undocumented";

/// Declares a documented route with its policy: the post-routing checks (429, 413, 415),
/// then authentication (401) and the permission (403), then the handler.
pub fn route(policy: Policy, route: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    declare(policy, None, route)
}

/// [`route`] plus a per-route limit, checked right after the global one.
pub fn route_limited(
    policy: Policy,
    limit: RouteLimit,
    route: UtoipaMethodRouter<AppState>,
) -> UtoipaMethodRouter<AppState> {
    declare(policy, Some(limit), route)
}

fn declare(
    policy: Policy,
    limit: Option<RouteLimit>,
    route: UtoipaMethodRouter<AppState>,
) -> UtoipaMethodRouter<AppState> {
    let (schemas, mut paths, method_router) = route;
    document(policy, Checks::All, &mut paths);
    (schemas, paths, method(policy, limit, method_router))
}

/// Which post-routing checks guard a documented route.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Checks {
    /// Client address, rate limits, body size and media type ([`route`]).
    All,
    /// Body size and media type only ([`exempt_public`]).
    BodyOnly,
}

/// Records `policy` on every operation of `paths` and adds, where the annotation does not
/// already document the status, the responses the route's checks and extractors send: 400
/// (an unparsable `X-Forwarded-For` from a trusted proxy; a malformed body), 413 and 415
/// (no route accepts a body over the limit or one that is not UTF-8 JSON), 429 (the global
/// limit), 401 (authenticated and permission routes), 403 (permission routes), and what the
/// outer pipeline can answer anywhere: 414 (request target too long), 500 and 503 (database
/// unreachable, request timeout). Then every 4xx and 5xx response gets its body: a
/// `Problem` as `application/problem+json` (contract §1), with `Retry-After` on 429 and
/// `WWW-Authenticate` on 401.
fn document(policy: Policy, checks: Checks, paths: &mut utoipa::openapi::path::Paths) {
    use utoipa::openapi::{RefOr, Response};
    for item in paths.paths.values_mut() {
        for operation in crate::policies::operation_slots(item).into_iter().flatten() {
            let stamp = utoipa::openapi::extensions::ExtensionsBuilder::new()
                .add(POLICY_EXTENSION, policy.label())
                .build();
            match &mut operation.extensions {
                Some(existing) => existing.merge(stamp),
                None => operation.extensions = Some(stamp),
            }
            let takes_body = operation.request_body.is_some();
            let mut implied: Vec<(&str, String)> = Vec::new();
            if takes_body {
                implied.push((
                    "400",
                    "Malformed or invalid body (the problem's `errors` name the fields)".to_owned(),
                ));
            }
            if checks == Checks::All {
                implied.push((
                    "400",
                    "A trusted proxy's `X-Forwarded-For` does not name the client's address"
                        .to_owned(),
                ));
            }
            implied.push(("413", "Body over `RAMPART_MAX_BODY_BYTES`".to_owned()));
            implied.push((
                "415",
                "Body that is not UTF-8 JSON (`Content-Type: application/json`)".to_owned(),
            ));
            if checks == Checks::All {
                implied.push((
                    "429",
                    "Rate limited; `Retry-After` gives the seconds to wait".to_owned(),
                ));
            }
            document_policy(policy, operation);
            implied.push(("414", "Request target over 2048 bytes".to_owned()));
            implied.push((
                "500",
                "Unexpected error (`internal_error`); the problem names only the request id"
                    .to_owned(),
            ));
            implied.push((
                "503",
                "Unavailable: the database does not answer, the request timed out, or (where a \
                 password is hashed or checked) the hashing queue is full"
                    .to_owned(),
            ));
            let responses = &mut operation.responses.responses;
            for (status, description) in implied {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| RefOr::T(Response::new(description)));
            }
            for (status, response) in responses.iter_mut() {
                if let RefOr::T(response) = response
                    && (status.starts_with('4') || status.starts_with('5'))
                {
                    document_problem(status, response);
                }
            }
        }
    }
}

/// What the policy itself implies, whatever the annotation says: the `security`
/// requirement (bearer for authenticated and permission routes; none for public ones,
/// unless the annotation makes the token optional) and the 401 and 403 the policy answers.
/// An annotation's own 401 or 403 (a handler's further reasons) is kept after the derived
/// description, so annotations need not, and should not, repeat the policy's.
fn document_policy(policy: Policy, operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::{RefOr, Response};
    let mut derived: Vec<(&str, String)> = Vec::new();
    match policy {
        Policy::Public => {
            // `security(("bearer" = []), ())`: a token is optional (logout); anything
            // else on a public route would promise a check that does not happen.
            let optional = operation.security.as_ref().is_some_and(|reqs| {
                reqs.iter()
                    .any(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
            });
            if !optional {
                operation.security = None;
            }
        }
        Policy::Authenticated | Policy::Permission(_) => {
            operation.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
            derived.push((
                "401",
                "Missing, invalid or expired access token, or its session has ended".to_owned(),
            ));
        }
    }
    if let Policy::Permission(permission) = policy {
        derived.push((
            "403",
            format!("The caller lacks the `{permission}` permission"),
        ));
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in derived {
        let description = match responses.get(status) {
            Some(RefOr::T(own)) if own.description != description => {
                format!("{description}. Also: {}", own.description)
            }
            _ => description,
        };
        responses.insert(status.to_owned(), RefOr::T(Response::new(description)));
    }
}

/// Makes an error response's body a `Problem` document, the only body the problem layer
/// sends: whatever media type an annotation named is replaced.
fn document_problem(status: &str, response: &mut utoipa::openapi::Response) {
    use utoipa::openapi::{Content, Header, ObjectBuilder, Ref, RefOr, Type};
    response.content.clear();
    response.content.insert(
        PROBLEM_MEDIA_TYPE.to_owned(),
        RefOr::T(Content::new(Some(Ref::from_schema_name("Problem")))),
    );
    let header = match status {
        "429" => Some((
            "Retry-After",
            Header::new(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            ),
            "Seconds to wait before trying again",
        )),
        "401" => Some((
            "WWW-Authenticate",
            Header::new(ObjectBuilder::new().schema_type(Type::String)),
            "`Bearer`",
        )),
        _ => None,
    };
    if let Some((name, mut header, description)) = header {
        header.description = Some(description.to_owned());
        response
            .headers
            .entry(name.to_owned())
            .or_insert(RefOr::T(header));
    }
}

/// A public route exempt from every post-routing check: the health checks, which must
/// answer a load balancer whatever any client has done (contract §3).
pub fn exempt_public(route: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    let (schemas, mut paths, method_router) = route;
    document(Policy::Public, Checks::BodyOnly, &mut paths);
    let checked = method_router.route_layer(CheckedLayer {
        policy: Policy::Public,
        limit: None,
        checks: Checks::BodyOnly,
    });
    (schemas, paths, checked)
}

/// [`route`] for a handler that is not part of the OpenAPI document (e.g. routes a test
/// mounts): `OpenApiRouter::new().routes(undocumented(HttpMethod::Get, "/x", policy, h))`.
/// The operation carries its policy like any other, so the start-up and request-time
/// checks know it, and is removed from the served document.
pub fn undocumented<H, T>(
    http_method: utoipa::openapi::HttpMethod,
    path: &str,
    policy: Policy,
    handler: H,
) -> UtoipaMethodRouter<AppState>
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    use axum::routing::MethodFilter;
    use utoipa::openapi::HttpMethod;
    use utoipa::openapi::path::{OperationBuilder, PathItem, Paths};
    let filter = match http_method {
        HttpMethod::Get => MethodFilter::GET,
        HttpMethod::Post => MethodFilter::POST,
        HttpMethod::Put => MethodFilter::PUT,
        HttpMethod::Delete => MethodFilter::DELETE,
        HttpMethod::Options => MethodFilter::OPTIONS,
        HttpMethod::Head => MethodFilter::HEAD,
        HttpMethod::Patch => MethodFilter::PATCH,
        HttpMethod::Trace => MethodFilter::TRACE,
    };
    let operation = OperationBuilder::new()
        .response("200", utoipa::openapi::Response::new("Undocumented"))
        .extensions(Some(
            utoipa::openapi::extensions::ExtensionsBuilder::new()
                .add(UNDOCUMENTED_EXTENSION, true)
                .build(),
        ))
        .build();
    let mut paths = Paths::new();
    paths
        .paths
        .insert(path.to_owned(), PathItem::new(http_method, operation));
    document(policy, Checks::All, &mut paths);
    (
        Vec::new(),
        paths,
        method(policy, None, axum::routing::on(filter, handler)),
    )
}

/// Attaches the policy and the post-routing checks to a method router.
fn method(
    policy: Policy,
    limit: Option<RouteLimit>,
    method_router: axum::routing::MethodRouter<AppState>,
) -> axum::routing::MethodRouter<AppState> {
    method_router.route_layer(CheckedLayer {
        policy,
        limit,
        checks: Checks::All,
    })
}

/// The post-routing checks for a plain, public router (Swagger UI, which brings its own
/// routes and is not part of the API).
pub(crate) fn guard_router(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router.route_layer(CheckedLayer {
        policy: Policy::Public,
        limit: None,
        checks: Checks::All,
    })
}

/// One route's post-routing checks (forwarded-for, rate limits, body) and then its policy,
/// in that order, as one hand-written service: an axum `from_fn` layer per step cost a
/// clone and a boxed service, a boxed future and a boxed `Next` each on every request
/// (docs/benchmarks.md).
#[derive(Clone, Copy)]
struct CheckedLayer {
    policy: Policy,
    limit: Option<RouteLimit>,
    checks: Checks,
}

impl<S> tower::Layer<S> for CheckedLayer {
    type Service = Checked<S>;

    fn layer(&self, inner: S) -> Checked<S> {
        Checked {
            inner,
            layer: *self,
        }
    }
}

#[derive(Clone)]
struct Checked<S> {
    inner: S,
    layer: CheckedLayer,
}

impl<S> tower::Service<Request> for Checked<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let CheckedLayer {
            policy,
            limit,
            checks,
        } = self.layer;
        if checks == Checks::BodyOnly {
            // Synchronous: refused here, or served by the route's own future.
            return match body_problem(&req) {
                Some(problem) => Box::pin(std::future::ready(Ok(problem.into_response()))),
                None => Box::pin(self.inner.call(req)),
            };
        }
        // The inner service was made ready by `poll_ready`; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let refusal = post_route_refusal(limit, &req);
        Box::pin(async move {
            if let Some(refusal) = refusal.await {
                return Ok(refusal);
            }
            // The state the router was built with, put there by the edge layer.
            let Some(state) = req.extensions().get::<AppState>().cloned() else {
                return Ok(crate::problem::ApiError(rampart_core::Error::internal(
                    anyhow::anyhow!("the application state is missing from the request"),
                ))
                .into_response());
            };
            match crate::authz::authorize(policy, &state, req).await {
                Ok(req) => inner.call(req).await,
                Err(refusal) => Ok(refusal),
            }
        })
    }
}

/// Every operation of `doc` without a declared policy, as `METHOD /path`.
pub fn undeclared_operations(doc: &utoipa::openapi::OpenApi) -> Vec<String> {
    let mut missing = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (name, op) in crate::policies::operations(item) {
            let declared = op
                .extensions
                .as_ref()
                .is_some_and(|e| e.contains_key(POLICY_EXTENSION));
            if !declared {
                missing.push(format!("{name} {path}"));
            }
        }
    }
    missing
}

/// The answer refusing `req` after routing, if any: an unusable `X-Forwarded-For`, the
/// client's rate limit, or a body that is too large or not JSON (in that order).
fn post_route_refusal(
    limit: Option<RouteLimit>,
    req: &Request,
) -> impl Future<Output = Option<Response>> + Send + use<> {
    // Everything is read from the request before the one await, so the future does not
    // hold the request (whose body is not `Sync`).
    let guards = req.extensions().get::<Guards>().cloned();
    let unparsable = req.extensions().get::<UnparsableForwardedFor>().is_some();
    let ip = req
        .extensions()
        .get::<ClientIp>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0);
    let body = body_problem(req);
    async move {
        let Some(guards) = guards else {
            return Some(Problem::for_status(StatusCode::INTERNAL_SERVER_ERROR).into_response());
        };
        // Without the client's address no per-IP limit can be kept (contract §9).
        if unparsable {
            return Some(
                Problem::validation(vec![FieldError::new(
                    "header.x-forwarded-for",
                    "does not name the client's address",
                )])
                .into_response(),
            );
        }
        if let Err(secs) = guards.limits.check(ip, limit).await {
            return Some(Problem::rate_limited(secs).into_response());
        }
        body.map(IntoResponse::into_response)
    }
}

/// 413 for a declared length over the limit, 415 for a body that is not UTF-8 JSON —
/// whatever the route, since no route accepts anything else.
fn body_problem(req: &Request) -> Option<Problem> {
    let max = req
        .extensions()
        .get::<Guards>()
        .map_or(0, |g| g.max_body_bytes as u64);
    let headers = req.headers();
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared_len.is_some_and(|n| n > max) {
        return Some(Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE));
    }
    let has_body =
        headers.contains_key(header::TRANSFER_ENCODING) || declared_len.is_some_and(|n| n > 0);
    if has_body {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_utf8);
        if !json {
            return Some(Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
    }
    None
}
