//! Route policies cannot be bypassed or misspelled (issue 12, item 1): a router built with
//! a route that declares no policy — however it was mounted — or with a permission the
//! catalogue does not declare is refused by `build_router`, naming it; every route the
//! application serves declares one, and each still answers as before on both stores. The
//! request-time half (a route forced past the start-up check is refused) is unit-tested
//! beside `rampart_api::policies::GuardLayer`.

use axum::routing::{any, get, put};
use rampart_api::routing::{Policy, route, undocumented};
use reqwest::Method;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    every_served_route_declares_a_policy,
    every_public_route_still_answers,
);

/// A documented operation for the mistakes below.
#[utoipa::path(get, path = "/api/v1/clippings", responses((status = 200, description = "ok")))]
async fn list_clippings() -> &'static str {
    "should never be served"
}

fn build_error(app: &TestApp, extra: OpenApiRouter<rampart_api::AppState>) -> String {
    match rampart_api::build_router(app.state.clone(), extra) {
        Ok(_) => panic!("the router was built"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn an_unpoliced_route_refuses_to_build_however_it_was_mounted() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let handler = || async { "should never be served" };

    // `.route()` on the extra router.
    let extra = OpenApiRouter::new().route("/api/v1/clippings", get(handler));
    let err = build_error(&app, extra);
    assert!(err.contains("GET /api/v1/clippings"), "{err}");

    // Inside a module router that is merged, next to a policed route.
    let module = OpenApiRouter::new()
        .routes(route(Policy::Authenticated, routes!(list_clippings)))
        .route("/api/v1/clippings/{id}", axum::routing::delete(handler));
    let err = build_error(&app, OpenApiRouter::new().merge(module));
    assert!(err.contains("DELETE /api/v1/clippings/{id}"), "{err}");
    assert!(!err.contains("GET /api/v1/clippings,"), "{err}");

    // Nested under a prefix.
    let nested = OpenApiRouter::new().route("/{id}", get(handler));
    let err = build_error(&app, OpenApiRouter::new().nest("/api/v1/things", nested));
    assert!(err.contains("GET /api/v1/things/{id}"), "{err}");

    // Another method on a path whose other methods are declared.
    let extra = OpenApiRouter::new().route("/api/v1/users/me", put(handler));
    let err = build_error(&app, extra);
    assert!(err.contains("PUT /api/v1/users/me"), "{err}");
    assert!(!err.contains("GET /api/v1/users/me"), "{err}");

    // Any method, and a whole service.
    let extra = OpenApiRouter::new()
        .route("/api/v1/any", any(handler))
        .route_service(
            "/api/v1/service",
            tower::service_fn(|_req: axum::extract::Request| async {
                Ok::<_, std::convert::Infallible>(axum::response::Response::new(
                    axum::body::Body::empty(),
                ))
            }),
        );
    let err = build_error(&app, extra);
    assert!(err.contains("ANY /api/v1/any"), "{err}");
    assert!(err.contains("ANY /api/v1/service"), "{err}");

    // Declared, documented or not, they build.
    let extra = OpenApiRouter::new()
        .routes(route(Policy::Authenticated, routes!(list_clippings)))
        .routes(undocumented(
            utoipa::openapi::HttpMethod::Delete,
            "/api/v1/clippings/{id}",
            Policy::Authenticated,
            handler,
        ));
    assert!(rampart_api::build_router(app.state.clone(), extra).is_ok());
    app.finish().await;
}

#[tokio::test]
async fn a_permission_outside_the_catalogue_refuses_to_build() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let extra = OpenApiRouter::new().routes(route(
        Policy::Permission("clipping:read"),
        routes!(list_clippings),
    ));
    let err = build_error(&app, extra);
    assert!(
        err.contains("GET /api/v1/clippings: clipping:read"),
        "{err}"
    );
    assert!(err.contains("catalogue"), "{err}");

    // Undocumented routes are checked too.
    let extra = OpenApiRouter::new().routes(undocumented(
        utoipa::openapi::HttpMethod::Post,
        "/api/v1/clippings",
        Policy::Permission("clippings:write"),
        || async { "should never be served" },
    ));
    let err = build_error(&app, extra);
    assert!(
        err.contains("POST /api/v1/clippings: clippings:write"),
        "{err}"
    );

    // A catalogued permission builds.
    let extra = OpenApiRouter::new().routes(route(
        Policy::Permission("notes:read"),
        routes!(list_clippings),
    ));
    assert!(rampart_api::build_router(app.state.clone(), extra).is_ok());
    app.finish().await;
}

/// What the application serves is exactly what its document declares, plus Swagger UI and
/// the console.
async fn every_served_route_declares_a_policy(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut declared = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["x-rampart-policy"].is_string(), "{method} {path}");
            declared.push((method.to_uppercase(), path.clone()));
        }
    }
    for path in ["/openapi.json", "/docs", "/docs/", "/docs/{*rest}"] {
        declared.push(("GET".to_owned(), path.to_owned()));
    }
    // The web console (contract §13): static pages and the mailed links' redirects.
    for (method, path) in rampart_api::console::ROUTES {
        declared.push((method.to_owned(), path.to_owned()));
    }
    declared.sort();
    let router = rampart_api::build_router(app.state.clone(), OpenApiRouter::new()).unwrap();
    let mut served = rampart_api::policies::served_routes(&router).unwrap();
    served.sort();
    assert_eq!(served, declared);
    app.finish().await;
}

/// The guard lets every declared public route through: none answers the guard's 404
/// (protected routes' 401s are checked in `authz::every_protected_route_refuses_…`).
async fn every_public_route_still_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["x-rampart-policy"] != "public" {
                continue;
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut req = app.client.request(m, app.url(path));
            if op.get("requestBody").is_some() {
                req = req.json(&serde_json::json!({}));
            }
            let status = req.send().await.unwrap().status();
            assert_ne!(status, 404, "{method} {path}");
            assert!(status.as_u16() < 500, "{method} {path}: {status}");
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked}");
    for path in ["/docs/", "/openapi.json"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    app.finish().await;
}
