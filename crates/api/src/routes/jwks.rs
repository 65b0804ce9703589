//! The JSON Web Key Set (RFC 7517) of every public key that may still verify a live token:
//! the key directory's keys of `RAMPART_JWT_ALG` only (contract §9).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::routing::{Policy, route};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(route(Policy::Public, routes!(jwks)))
}

/// Public signing keys of the configured algorithm, active first.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys",
    responses((status = 200, description = "RFC 7517 JWK Set", body = serde_json::Value)))]
async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.keys.jwks(state.config.jwt_alg)).into_response();
    // Shorter than any rotation overlap (the access-token lifetime), so clients that cache
    // it see a new key before tokens signed with it reach them.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}
