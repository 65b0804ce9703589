//! Rampart's HTTP layer: the router, the request pipeline of contract §1–3, handlers and
//! the OpenAPI document. Handlers speak `rampart_core` types and reach storage only
//! through `rampart_store`; nothing here writes SQL.

pub mod auth;
pub mod authz;
pub mod console;
pub mod extract;
pub mod invalidation;
pub mod jobs;
pub mod middleware;
pub mod owned;
pub mod pagination;
pub mod policies;
pub mod problem;
pub mod routes;
pub mod routing;
pub mod services;
pub mod state;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use crate::problem::{ApiError, Problem};
pub use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Rampart API",
        description = "Secure-by-default backend foundation. Errors are RFC 9457 problem documents.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "keys", description = "Public signing keys"),
        (name = "auth", description = "Registration, login, sessions"),
        (name = "users", description = "Users"),
        (name = "rbac", description = "Roles and permissions"),
        (name = "audit", description = "The audit trail"),
    ),
    components(schemas(problem::ProblemDocument)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the authenticated routes refer to.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Routes subject to the global rate limit and body rules. Feature modules merge here.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::jwks::routes())
        .merge(routes::auth::routes())
        .merge(routes::passkeys::routes())
        .merge(routes::users::routes())
        .merge(routes::lifecycle::routes())
        .merge(routes::rbac::routes())
        .merge(routes::owned())
        .merge(routes::audit::routes())
}

/// The full application. `extra` lets an embedding application (or a test) add its own
/// feature routes; they get exactly the pipeline the built-in routes get.
///
/// Fails, naming them, when a route axum would serve declares no policy — documented or
/// not, however it was mounted — or a policy names a permission the catalogue does not
/// declare (deny by default, contract §6; [`policies`]).
pub fn build_router(state: AppState, extra: OpenApiRouter<AppState>) -> Result<Router, String> {
    let config = state.config.clone();
    let (api, mut openapi) = api_routes().merge(extra).split_for_parts();
    let (health, health_doc) = routes::health::routes().split_for_parts();
    openapi.merge(health_doc);
    let undeclared = routing::undeclared_operations(&openapi);
    if !undeclared.is_empty() {
        return Err(format!(
            "routes without a declared policy (public, authenticated or a permission): {}",
            undeclared.join(", ")
        ));
    }
    let mut table = policies::PolicyTable::from_document(&openapi);
    let unknown = table.unknown_permissions();
    if !unknown.is_empty() {
        return Err(format!(
            "route policies name permissions that are not in the catalogue \
             (rampart_core::rbac::CATALOGUE): {}",
            unknown.join(", ")
        ));
    }
    policies::strip_undocumented(&mut openapi);

    let mut router = api.merge(health);
    if config.docs {
        let docs: Router<AppState> = utoipa_swagger_ui::SwaggerUi::new("/docs")
            .url("/openapi.json", openapi)
            .into();
        for (method, path) in DOCS_ROUTES {
            table.declare(method, path, routing::Policy::Public);
        }
        router = router.merge(routing::guard_router(docs));
    }
    if config.console {
        for (method, path) in console::ROUTES {
            table.declare(method, path, console::POLICY);
        }
        router = router.merge(routing::guard_router(console::router()));
    }
    let undeclared = table.undeclared(&policies::served_routes(&router)?);
    if !undeclared.is_empty() {
        return Err(format!(
            "routes served without a declared policy (mount them with routing::route or \
             routing::undocumented): {}",
            undeclared.join(", ")
        ));
    }
    let guards = routing::Guards {
        limits: state.rate_limits.clone(),
        max_body_bytes: config.max_body_bytes,
    };

    let edge = Arc::new(middleware::edge::Edge {
        security: middleware::security_headers::SecurityHeaders {
            hsts: config.is_production(),
        },
        proxies: middleware::client_ip::TrustedProxies(Arc::new(config.trusted_proxies.clone())),
        cors: middleware::cors::Cors {
            allowed: Arc::new(config.allowed_origins.clone()),
        },
        state: state.clone(),
        guards,
        timeout: config.request_timeout,
    });

    Ok(router
        // Outermost of the route layers, so nothing a route carries runs before it. It
        // also leaves the route template on the response for the access log.
        .route_layer(policies::GuardLayer(table))
        .fallback(not_found)
        .with_state(state.clone())
        // Outer layers, innermost first: these see every request, matched or not.
        // Streamed bodies are cut off at the limit while `ApiJson` reads them.
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        // Request id, security headers, problem documents, client address, access log,
        // 414, CORS, panics (500), the request timeout (503) and the state and guard
        // extensions, in that order (outermost first): see `middleware::edge`.
        .layer(middleware::edge::EdgeLayer(edge)))
}

/// The OpenAPI document of every route, as `/openapi.json` serves it.
pub fn openapi_document(extra: OpenApiRouter<AppState>) -> utoipa::openapi::OpenApi {
    let (_, mut openapi) = api_routes().merge(extra).split_for_parts();
    let (_, health_doc) = routes::health::routes().split_for_parts();
    openapi.merge(health_doc);
    policies::strip_undocumented(&mut openapi);
    openapi
}

/// What Swagger UI (`RAMPART_DOCS`) serves: public, like the document it shows.
const DOCS_ROUTES: [(&str, &str); 4] = [
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/"),
    ("GET", "/docs/{*rest}"),
];

async fn not_found() -> Problem {
    Problem::for_status(StatusCode::NOT_FOUND)
}

pub(crate) fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The panic message is not shown to the client (it may hold internals).
    tracing::error!("handler panicked");
    Problem::for_status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish for at most `deadline`, and returns. The caller closes the pool.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    deadline: Duration,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_rx_graceful = stop_rx.clone();
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop_rx_graceful.wait_for(|stop| *stop).await;
    });
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);

    // Pruning the limiter's idle keys bounds its memory under many distinct clients.
    let pruner_state = state.clone();
    let pruner = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            pruner_state.rate_limits.retain_recent();
        }
    });

    // Evictions announced by other instances (with Redis).
    let subscriber = invalidation::spawn_subscriber(state.clone());

    // Deletes expired rows, one instance at a time; aborted below like the pruner.
    let purger = jobs::spawn_purge(state.clone());

    // Logs a signed audit checkpoint now and whenever the chain grew; aborted below too.
    let checkpointer = jobs::spawn_checkpoints(state.clone());

    let result = tokio::select! {
        result = &mut server => result,
        () = shutdown => {
            tracing::info!(deadline_s = deadline.as_secs(), "shutdown requested: draining");
            state.start_draining();
            let _ = stop_tx.send(true);
            match tokio::time::timeout(deadline, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("shutdown deadline passed; abandoning in-flight requests");
                    Ok(())
                }
            }
        }
    };
    pruner.abort();
    purger.abort();
    checkpointer.abort();
    if let Some(subscriber) = subscriber {
        subscriber.abort();
    }
    drop(stop_rx);
    result
}
