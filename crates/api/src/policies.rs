//! The table of declared route policies and the two checks that make it binding (contract
//! §6: deny by default), whatever API mounted a route — `OpenApiRouter::routes`, a plain
//! `.route()`, `.merge()` or `.nest()`:
//!
//! - at start, [`crate::build_router`] lists the (method, path) pairs axum will serve
//!   ([`served_routes`]) and refuses to build, naming them, when one has no declared policy
//!   or a policy names a permission that is not in [`rampart_core::rbac::CATALOGUE`];
//! - at request time, [`GuardLayer`] looks the matched route up again and answers 404 (the
//!   route is not part of the contract) to any that has none, so a route slipped past the
//!   start-up check is refused too, and logs it at error.
//!
//! The table is read from the OpenAPI document the routers carry: every policy-carrying
//! route ([`crate::routing::route`], [`crate::routing::undocumented`]) stamps its
//! operations with `x-rampart-policy`, and merging or nesting routers merges their
//! documents. axum offers no public listing of a router's routes, so [`served_routes`]
//! reads its `Debug` form (axum 0.8, pinned by `Cargo.lock`); it fails closed — a form it
//! cannot read is a start-up error, never an empty listing.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::OpenApi;

use crate::middleware::access_log::RouteTemplate;
use crate::problem::Problem;
use crate::routing::{POLICY_EXTENSION, UNDOCUMENTED_EXTENSION};

/// Every declared route: path template → `METHOD` → policy label (`public`,
/// `authenticated`, `permission:feature:action`). Keyed by path first so the request-time
/// lookup borrows the matched path and method instead of allocating.
#[derive(Clone, Debug, Default)]
pub struct PolicyTable(Arc<BTreeMap<String, BTreeMap<String, String>>>);

impl PolicyTable {
    /// The policies the document's operations declare.
    pub fn from_document(doc: &OpenApi) -> Self {
        let mut table = Self::default();
        for (path, item) in &doc.paths.paths {
            for (method, op) in operations(item) {
                let label = op
                    .extensions
                    .as_ref()
                    .and_then(|e| e.get(POLICY_EXTENSION))
                    .and_then(|v| v.as_str());
                if let Some(label) = label {
                    table.insert(method, path, label.to_owned());
                }
            }
        }
        table
    }

    fn insert(&mut self, method: &str, path: &str, label: String) {
        Arc::make_mut(&mut self.0)
            .entry(path.to_owned())
            .or_default()
            .insert(method.to_owned(), label);
    }

    /// Declares `method path` with `policy` (routes the application mounts itself).
    pub fn declare(&mut self, method: &str, path: &str, policy: crate::routing::Policy) {
        self.insert(method, path, policy.label());
    }

    /// The policy of a matched route; HEAD is served by the GET handler unless one is
    /// declared for it.
    pub fn policy(&self, method: &str, path: &str) -> Option<&str> {
        let methods = self.0.get(path)?;
        methods
            .get(method)
            .or_else(|| (method == "HEAD").then(|| methods.get("GET")).flatten())
            .map(String::as_str)
    }

    /// The methods declared for `path`, as axum's `Allow` header lists them (`GET,HEAD`).
    fn allowed(&self, path: &str) -> Vec<&str> {
        let mut methods: Vec<&str> = self
            .0
            .get(path)
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        if methods.contains(&"GET") && !methods.contains(&"HEAD") {
            methods.push("HEAD");
        }
        methods
    }

    /// Every declared route whose permission the catalogue does not know, as
    /// `METHOD /path: feature:action`.
    pub fn unknown_permissions(&self) -> Vec<String> {
        let mut unknown = Vec::new();
        for (path, methods) in self.0.iter() {
            for (method, label) in methods {
                let Some(permission) = label.strip_prefix("permission:") else {
                    continue;
                };
                if !rampart_core::rbac::all_permissions().any(|p| p.name == permission) {
                    unknown.push(format!("{method} {path}: {permission}"));
                }
            }
        }
        unknown
    }

    /// The served routes (from [`served_routes`]) that declare no policy, as
    /// `METHOD /path`.
    pub fn undeclared(&self, served: &[(String, String)]) -> Vec<String> {
        served
            .iter()
            .filter(|(method, path)| self.policy(method, path).is_none())
            .map(|(method, path)| format!("{method} {path}"))
            .collect()
    }
}

/// The operations of a path item with their HTTP methods: the one list of methods the
/// document is read with (the policy table, and `routing::undeclared_operations`).
pub(crate) fn operations(
    item: &utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &utoipa::openapi::path::Operation)> {
    [
        ("GET", &item.get),
        ("PUT", &item.put),
        ("POST", &item.post),
        ("DELETE", &item.delete),
        ("PATCH", &item.patch),
        ("HEAD", &item.head),
        ("OPTIONS", &item.options),
        ("TRACE", &item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_ref().map(|op| (m, op)))
}

/// Every operation slot of a path item, for stamping or removing operations: the one list
/// of HTTP methods the document code walks (`routing::document`, `owned`, and
/// [`strip_undocumented`]).
pub(crate) fn operation_slots(
    item: &mut utoipa::openapi::PathItem,
) -> [&mut Option<utoipa::openapi::path::Operation>; 8] {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
}

/// Removes the operations marked undocumented (their policies are already in the table)
/// and the paths left empty, so the served document shows only the API.
pub fn strip_undocumented(doc: &mut OpenApi) {
    let undocumented = |op: &Option<utoipa::openapi::path::Operation>| {
        op.as_ref().is_some_and(|op| {
            op.extensions
                .as_ref()
                .is_some_and(|e| e.contains_key(UNDOCUMENTED_EXTENSION))
        })
    };
    for item in doc.paths.paths.values_mut() {
        for op in operation_slots(item) {
            if undocumented(op) {
                *op = None;
            }
        }
    }
    doc.paths
        .paths
        .retain(|_, item| operations(item).next().is_some());
}

/// Every (method, path template) `router` serves, HEAD left implicit in GET; a route that
/// answers any method (`any()`, `route_service`, `nest_service`, a method fallback) is
/// listed as `ANY`, which no policy declares.
///
/// Reads the router's `Debug` form: `path_router: PathRouter { routes: {RouteId(n):
/// MethodRouter(MethodRouter { get: …, fallback: … }) | Route(Route)}, node: Node { paths:
/// {RouteId(n): "/path"} } }`. Anything else is an error.
pub fn served_routes<S>(router: &axum::Router<S>) -> Result<Vec<(String, String)>, String> {
    let unreadable = |what: &str| {
        format!(
            "cannot list the router's routes to check their policies ({what}); was axum upgraded?"
        )
    };
    let debug = format!("{router:?}");
    let path_router = debug
        .strip_prefix("Router { path_router: PathRouter { routes: {")
        .and_then(|rest| rest.split_once(", fallback_router: "))
        .map(|(p, _)| p)
        .ok_or_else(|| unreadable("no path router"))?;
    let (routes, node) = path_router
        .split_once("}, node: Node { paths: {")
        .ok_or_else(|| unreadable("no node"))?;
    let paths = node
        .strip_suffix("} } }")
        .ok_or_else(|| unreadable("node paths"))?;

    // RouteId(n): "/path", …
    let mut path_of = BTreeMap::new();
    let mut rest = paths;
    while let Some(start) = rest.find("RouteId(") {
        let after = &rest[start + "RouteId(".len()..];
        let (id, after) = after
            .split_once("): \"")
            .ok_or_else(|| unreadable("path entry"))?;
        let (path, after) = read_debug_str(after).ok_or_else(|| unreadable("path string"))?;
        path_of.insert(id.to_owned(), path);
        rest = after;
    }

    // RouteId(n): MethodRouter(MethodRouter { get: …, … }) or Route(Route), …
    let mut served = Vec::new();
    let mut entries: Vec<&str> = routes.split("RouteId(").skip(1).collect();
    if entries.len() != path_of.len() {
        return Err(unreadable("routes and paths differ"));
    }
    for entry in entries.drain(..) {
        let (id, endpoint) = entry
            .split_once("): ")
            .ok_or_else(|| unreadable("route entry"))?;
        let path = path_of
            .get(id)
            .ok_or_else(|| unreadable("route without a path"))?;
        let Some(fields) = endpoint.strip_prefix("MethodRouter(MethodRouter { ") else {
            served.push(("ANY".to_owned(), path.clone()));
            continue;
        };
        for method in [
            "get", "head", "delete", "options", "patch", "post", "put", "trace", "connect",
        ] {
            let value = field(fields, method).ok_or_else(|| unreadable(method))?;
            if !value.starts_with("None") {
                served.push((method.to_uppercase(), path.clone()));
            }
        }
        let fallback = field(fields, "fallback").ok_or_else(|| unreadable("fallback"))?;
        if !fallback.starts_with("Default(") {
            served.push(("ANY".to_owned(), path.clone()));
        }
    }
    if served.is_empty() && !path_of.is_empty() {
        return Err(unreadable("no methods"));
    }
    Ok(served)
}

/// The text after `name: ` in a `Debug` struct body.
fn field<'a>(fields: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}: ");
    let mut search = fields;
    loop {
        let at = search.find(&key)?;
        // The key must start a field: at the beginning or after ", ".
        let before = &search[..at];
        if before.is_empty() || before.ends_with(", ") || before.ends_with("{ ") {
            return Some(&search[at + key.len()..]);
        }
        search = &search[at + key.len()..];
    }
}

/// A `Debug`-escaped string up to its closing quote, and what follows it.
fn read_debug_str(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => out.push(chars.next()?.1),
            c => out.push(c),
        }
    }
    None
}

/// The request-time half: a matched route that declares no policy is refused and logged
/// at error — 404 when nothing is declared at its path (it is not part of the contract),
/// 405 with the declared methods when others are (what axum answers a wrong method, which
/// also passes through here). Mounted with `route_layer` over every route
/// [`crate::build_router`] serves, so it sees the matched path. The route template is left
/// on the response for the access log.
///
/// A hand-written service: the decision needs no `await`, so a declared route is served by
/// the route's own future, without the clone, the boxed service and the boxed futures an
/// axum `from_fn` layer costs on every request (docs/benchmarks.md).
#[derive(Clone)]
pub struct GuardLayer(pub PolicyTable);

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            table: self.0.clone(),
            inner,
        }
    }
}

/// [`GuardLayer`]'s service.
#[derive(Clone)]
pub struct Guard<S> {
    table: PolicyTable,
    inner: S,
}

impl<S> tower::Service<Request> for Guard<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let Some(matched) = req.extensions().get::<MatchedPath>().cloned() else {
            tracing::error!(method = %req.method(), "refused a routed request without a matched path");
            return GuardFuture::Refused {
                response: Some(Problem::for_status(StatusCode::NOT_FOUND).into_response()),
            };
        };
        let path = matched.as_str();
        if self.table.policy(req.method().as_str(), path).is_some() {
            GuardFuture::Served {
                inner: self.inner.call(req),
                template: Some(RouteTemplate(matched)),
            }
        } else {
            let mut response = refuse_undeclared(&self.table, req.method().as_str(), path);
            response.extensions_mut().insert(RouteTemplate(matched));
            GuardFuture::Refused {
                response: Some(response),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Guard`]'s future: the route's own, or the refusal.
    #[project = GuardProjection]
    pub enum GuardFuture<F> {
        Served { #[pin] inner: F, template: Option<RouteTemplate> },
        Refused { response: Option<Response> },
    }
}

impl<F> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardProjection::Served { inner, template } => {
                let Ok(mut response) = std::task::ready!(inner.poll(cx));
                if let Some(template) = template.take() {
                    response.extensions_mut().insert(template);
                }
                Poll::Ready(Ok(response))
            }
            GuardProjection::Refused { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| Problem::for_status(StatusCode::NOT_FOUND).into_response()))),
        }
    }
}

fn refuse_undeclared(table: &PolicyTable, method: &str, path: &str) -> Response {
    let allowed = table.allowed(path);
    if allowed.is_empty() {
        tracing::error!(%method, route = path, "refused a request to a route that declares no policy");
        return Problem::for_status(StatusCode::NOT_FOUND).into_response();
    }
    // A wrong method (axum's 405 comes through here too) or a handler for a method the
    // path does not declare: both are refused the same way, neither is served.
    tracing::debug!(%method, route = path, "method not declared for this route");
    // The body is left empty like axum's own 405; the problem layer renders it.
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, allowed.join(","))],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::middleware::Next;
    use axum::routing::{any, get, post};
    use tower::ServiceExt;

    use super::*;
    use crate::routing::Policy;

    fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
        v.sort();
        v
    }

    fn pair(m: &str, p: &str) -> (String, String) {
        (m.to_owned(), p.to_owned())
    }

    #[test]
    fn lists_what_the_router_serves() {
        let nested: axum::Router = axum::Router::new().route("/{id}", get(|| async {}));
        let router: axum::Router = axum::Router::new()
            .route("/a", get(|| async {}).post(|| async {}))
            .route("/b/{id}", axum::routing::delete(|| async {}))
            .merge(axum::Router::new().route("/c \"q\"", post(|| async {})))
            .nest("/n", nested)
            .route("/any", any(|| async {}))
            .route_service(
                "/svc",
                tower::service_fn(|_req: Request| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
                }),
            )
            .route_layer(axum::middleware::from_fn(|req: Request, next: Next| {
                next.run(req)
            }))
            .fallback(|| async { "fallback" });
        let served = sorted(served_routes(&router).unwrap());
        assert_eq!(
            served,
            sorted(vec![
                pair("GET", "/a"),
                pair("POST", "/a"),
                pair("DELETE", "/b/{id}"),
                pair("POST", "/c \"q\""),
                pair("GET", "/n/{id}"),
                pair("ANY", "/any"),
                pair("ANY", "/svc"),
            ])
        );
        assert_eq!(served_routes(&axum::Router::<()>::new()).unwrap(), vec![]);
    }

    #[test]
    fn table_lookups() {
        let mut table = PolicyTable::default();
        table.declare("GET", "/a", Policy::Public);
        table.declare("POST", "/a", Policy::Permission("notes:write"));
        table.declare("GET", "/b", Policy::Permission("bookmark:read"));
        assert_eq!(table.policy("HEAD", "/a"), Some("public"));
        assert_eq!(table.policy("PUT", "/a"), None);
        assert_eq!(
            table.unknown_permissions(),
            vec!["GET /b: bookmark:read".to_owned()]
        );
        let served = vec![pair("GET", "/a"), pair("PUT", "/a"), pair("ANY", "/c")];
        assert_eq!(table.undeclared(&served), vec!["PUT /a", "ANY /c"]);
    }

    /// A route forced past the start-up check is refused at request time; a declared one
    /// is served.
    #[tokio::test]
    async fn the_guard_refuses_a_route_without_a_policy() {
        let mut table = PolicyTable::default();
        table.declare("GET", "/declared/{id}", Policy::Public);
        let router: axum::Router = axum::Router::new()
            .route(
                "/declared/{id}",
                get(|| async { "ok" }).put(|| async { "put" }),
            )
            .route("/slipped", get(|| async { "should never be served" }))
            .route_layer(GuardLayer(table));
        let call = |method: &str, uri: &str| {
            let req = axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            router.clone().oneshot(req)
        };
        // Served or refused, the response carries the route template for the access log.
        let template = |r: &Response| {
            r.extensions()
                .get::<RouteTemplate>()
                .map(|t| t.0.as_str().to_owned())
        };
        let get = call("GET", "/declared/1").await.unwrap();
        assert_eq!(get.status(), 200);
        assert_eq!(template(&get).as_deref(), Some("/declared/{id}"));
        assert_eq!(call("HEAD", "/declared/1").await.unwrap().status(), 200);
        let put = call("PUT", "/declared/1").await.unwrap();
        assert_eq!(put.status(), 405);
        assert_eq!(put.headers()["allow"], "GET,HEAD");
        assert_eq!(template(&put).as_deref(), Some("/declared/{id}"));
        let slipped = call("GET", "/slipped").await.unwrap();
        assert_eq!(slipped.status(), 404);
        assert_eq!(template(&slipped).as_deref(), Some("/slipped"));
    }
}
