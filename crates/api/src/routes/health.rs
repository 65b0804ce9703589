//! Health checks (contract §3). Liveness says the process runs; readiness says this
//! instance can serve: the database (and Redis, when configured) answers, a signing key
//! is loaded, and it is not
//! draining for shutdown. Exempt from rate limits (mounted outside them).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::Problem;
use crate::routing::exempt_public;
use crate::state::AppState;

const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(exempt_public(routes!(live)))
        .routes(exempt_public(routes!(ready)))
}

#[derive(Serialize, ToSchema)]
pub struct LiveResponse {
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadyChecks {
    database: &'static str,
    signing_key: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shutdown: Option<&'static str>,
}

#[derive(Serialize, ToSchema)]
pub struct ReadyResponse {
    status: &'static str,
    checks: ReadyChecks,
}

/// The process is running.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process runs", body = LiveResponse)))]
async fn live() -> Json<LiveResponse> {
    Json(LiveResponse { status: "ok" })
}

/// The instance can serve requests.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready", body = ReadyResponse),
        (status = 503, description = "Not ready; the failing checks are named", content_type = "application/problem+json"),
    ))]
async fn ready(State(state): State<AppState>) -> Response {
    let database = match tokio::time::timeout(PING_TIMEOUT, state.db.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(error = format!("{e:#}"), "readiness: database ping failed");
            "failing"
        }
        Err(_) => "failing",
    };
    let redis = match &state.redis {
        None => None,
        Some(redis) => Some(
            match tokio::time::timeout(PING_TIMEOUT, redis.ping()).await {
                // Answering is not enough: the instance must also hear other instances'
                // invalidations (crate::invalidation).
                Ok(Ok(())) if state.invalidations_subscribed() => {
                    state.rate_limits.redis_answered();
                    "ok"
                }
                Ok(Ok(())) => {
                    tracing::warn!("readiness: not subscribed to invalidations yet");
                    "failing"
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = format!("{e:#}"), "readiness: redis ping failed");
                    "failing"
                }
                Err(_) => "failing",
            },
        ),
    };
    // The key store is loaded at start and never empty; the check guards future reloads.
    let signing_key = if state.keys.keys().is_empty() {
        "failing"
    } else {
        "ok"
    };
    let draining = state.is_draining();
    let checks = ReadyChecks {
        database,
        signing_key,
        redis,
        shutdown: draining.then_some("draining"),
    };
    let redis_ok = redis.is_none_or(|r| r == "ok");
    if database == "ok" && signing_key == "ok" && redis_ok && !draining {
        return (
            StatusCode::OK,
            Json(ReadyResponse {
                status: "ready",
                checks,
            }),
        )
            .into_response();
    }
    let mut failing = Vec::new();
    if database != "ok" {
        failing.push("database");
    }
    if signing_key != "ok" {
        failing.push("signingKey");
    }
    if !redis_ok {
        failing.push("redis");
    }
    if draining {
        failing.push("shutdown");
    }
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("Not ready: {}", failing.join(", ")),
    )
    .with_extension("checks", serde_json::to_value(&checks).unwrap_or_default())
    .into_response()
}
