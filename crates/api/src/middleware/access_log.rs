//! One structured log line per request: request id, method, route template (never the raw
//! path, which may hold ids or tokens), status, latency and client IP. Never a body, a
//! header value, a cookie or a query string. The request's span carries the request id so
//! every event logged while serving it (e.g. an internal error's cause) carries it too.
//!
//! The same layer records the HTTP metrics (contract §12; labels from fixed sets: the
//! method or `other`, the route template or `unmatched`, the status) and, when traces are
//! exported ([`rampart_core::otel::tracer`]), opens the OpenTelemetry server span
//! `METHOD route`, continuing an incoming W3C `traceparent`, attaches it to the request's
//! future (database, Redis and hashing spans become its children) and puts its `trace_id`
//! on the request's `tracing` span, so every log line of the request carries it. The span
//! never holds the path, the query, a header or a body.

use std::future::Future;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use opentelemetry::trace::{FutureExt, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use tracing::Instrument;
use tracing::field::Empty;

use crate::extract::{ClientIp, RequestId};
use crate::telemetry;

/// The matched route's template, left on the response by the policy guard
/// ([`crate::policies::GuardLayer`]) for the access log's `route` field.
#[derive(Clone)]
pub struct RouteTemplate(pub(crate) MatchedPath);

/// Serves `req` with `inner` inside the request's span (and OpenTelemetry server span),
/// then records the metrics and logs the access line.
pub(crate) async fn around<F, Fut>(req: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let started = Instant::now();
    let client_ip = req.extensions().get::<ClientIp>().map(|c| c.0);
    let method = req.method().clone();
    // Field values are only formatted when the span is enabled (not at `warn`).
    let span = tracing::info_span!(
        "request",
        request_id = req
            .extensions()
            .get::<RequestId>()
            .map_or("", |r| r.0.as_str()),
        trace_id = Empty
    );
    // The server span starts before the route is known (for its trace id) and is named
    // when the response is: `update_name` below.
    let otel = rampart_core::otel::tracer().map(|tracer| {
        let parent = telemetry::incoming_context(req.headers());
        let server = tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        parent.with_span(server)
    });
    let call = inner(req).instrument(span.clone());
    let response = match &otel {
        Some(cx) => {
            let trace_id = cx.span().span_context().trace_id();
            span.record("trace_id", tracing::field::display(trace_id));
            call.with_context(cx.clone()).await
        }
        None => call.await,
    };
    let template = response.extensions().get::<RouteTemplate>();
    let route = template.map_or("<unmatched>", |t| t.0.as_str());
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let method_label = telemetry::method_label(&method);
    let route_label = template.map_or("unmatched", |t| t.0.as_str());
    if telemetry::metrics_enabled() {
        telemetry::record_http(method_label, route_label, status, elapsed.as_secs_f64());
    }
    if let Some(cx) = otel {
        end_server_span(&cx, method_label, route_label.to_owned(), status);
    }
    span.in_scope(|| {
        tracing::info!(
            target: "rampart::access",
            method = %method,
            route,
            status,
            latency_ms = (latency_ms * 1000.0).round() / 1000.0,
            client_ip = %client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            "request"
        );
    });
    response
}

/// Names the server span `METHOD route`, sets its status and route, and ends it. A span
/// that is not recorded (not sampled) is only ended: nothing is formatted for it.
fn end_server_span(cx: &Context, method: &str, route: String, status: u16) {
    let span = cx.span();
    if span.is_recording() {
        span.update_name(format!("{method} {route}"));
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        span.set_attribute(KeyValue::new("http.route", route));
    }
    span.end();
}
