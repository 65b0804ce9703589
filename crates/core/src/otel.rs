//! OpenTelemetry spans (contract §12), built directly on the OpenTelemetry API rather than
//! bridged from `tracing` spans: a bridged span costs a `tracing` span, its field
//! formatting for every subscriber layer and then the OpenTelemetry span; a direct one is
//! the OpenTelemetry span alone (docs/benchmarks.md, "Observability overhead").
//!
//! Invariants:
//! - Until [`install`] is called (the binary calls it when `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   is set), every function here is one load of a `OnceLock` and a branch: no span, no
//!   allocation.
//! - A span's parent is the current OpenTelemetry context: the request's server span,
//!   which the access log attaches to the request's future.
//! - Span names and attributes come from fixed sets chosen by the caller (a `&'static str`
//!   name, attributes the caller builds from constants): never a statement's values, a key,
//!   a token or a password.

use std::future::Future;
use std::sync::OnceLock;

use opentelemetry::trace::{FutureExt, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;

/// The SDK's own tracer, not the API's type-erased `BoxedTracer`: that one boxes every
/// span once more and reaches it through a vtable.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Installs the tracer every span is made with. Only the first call counts.
pub fn install(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
}

/// The installed tracer, if traces are exported.
pub fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// Runs `call` in a child span `name` of the current context (kind `kind`, with
/// `attributes`), ended when `call` finishes or is dropped. Without a tracer it is `call`;
/// inside a span that was not sampled (a head sampler such as
/// `parentbased_traceidratio` dropped the request's trace) it is `call` too: the child
/// would be dropped with its parent, so it is not built at all.
pub async fn in_span<F, A>(name: &'static str, kind: SpanKind, attributes: A, call: F) -> F::Output
where
    F: Future,
    A: FnOnce() -> Vec<KeyValue>,
{
    let Some(tracer) = TRACER.get() else {
        return call.await;
    };
    let parent = Context::current();
    if parent.has_active_span() && !parent.span().span_context().is_sampled() {
        return call.await;
    }
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes())
        .start_with_context(tracer, &parent);
    let cx = parent.with_span(span);
    let output = call.with_context(cx.clone()).await;
    cx.span().end();
    output
}
