//! Logging, metrics and traces (contract §12).
//!
//! Logging: JSON lines on stdout by default, human-readable with `RAMPART_LOG_FORMAT=pretty`.
//! What is logged is decided where it is logged (see `rampart_api::middleware::access_log`):
//! never bodies, tokens, cookies, passwords or `Authorization`. (Audit checkpoints are
//! logged on purpose: signed statements of the audit chain head, holding no secret.)
//!
//! Traces: only with `OTEL_EXPORTER_OTLP_ENDPOINT` set (the standard `OTEL_*` variables
//! configure the rest: `OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_PROTOCOL` — `http/protobuf`
//! only —, `OTEL_TRACES_SAMPLER`/`_ARG`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`). The spans are made with the
//! OpenTelemetry API directly ([`rampart_core::otel`]), not bridged from `tracing` spans,
//! which cost several times more per request. Unset, no tracer is installed and each span
//! site is one branch: no cost.
//!
//! Metrics: only with `RAMPART_METRICS_BIND` set, served by [`serve_metrics`] on that
//! listener alone.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rampart_api::AppState;
use rampart_core::config::{Config, LogFormat};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Flushes and stops the trace exporter when dropped (at the end of `serve`).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // The exporter's blocking HTTP client must not be dropped on an async thread.
            let _ = std::thread::spawn(move || {
                if let Err(e) = provider.shutdown() {
                    eprintln!("rampart: flushing traces failed: {e}");
                }
            })
            .join();
        }
    }
}

/// Installs logging, and the trace exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
/// Fails only on an OTLP protocol this build does not speak or an exporter that cannot
/// be built.
pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    let endpoint = otel_var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .or_else(|| otel_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
    let provider = match endpoint {
        Some(_) => Some(tracer_provider()?),
        None => None,
    };
    // One global filter (per-layer filters lost events here: a Filtered layer's state
    // leaked between events on PostgreSQL start-up).
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stdout)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stdout)
            .boxed(),
    };
    let result = tracing_subscriber::registry()
        .with(fmt)
        .with(filter)
        .try_init();
    if let Err(e) = result {
        eprintln!("rampart: logging already initialised: {e}");
    } else if let Some(provider) = &provider {
        // Incoming `traceparent` is read with W3C Trace Context by the access log
        // (`rampart_api::telemetry::incoming_context`).
        rampart_core::otel::install(provider.tracer("rampart"));
    }
    Ok(Telemetry { provider })
}

fn otel_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn tracer_provider() -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    if let Some(protocol) = otel_var("OTEL_EXPORTER_OTLP_PROTOCOL")
        && protocol.trim() != "http/protobuf"
    {
        anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: this build exports traces over http/protobuf only"
        );
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .context("cannot build the OTLP trace exporter")?;
    // The SDK reads OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES and OTEL_TRACES_SAMPLER.
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(otel_var("OTEL_SERVICE_NAME").unwrap_or_else(|| "rampart".to_owned()))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Every series' help text, and the histogram buckets of the request latency.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often the exporter's histograms are maintained between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// The longest a scrape waits for Redis to answer its PING.
const REDIS_CHECK: Duration = Duration::from_millis(500);

/// Installs the process-wide Prometheus recorder; call before anything records.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(rampart_api::telemetry::HTTP_DURATION.to_owned()),
            LATENCY_BUCKETS,
        )
        .context("metric buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    rampart_api::telemetry::enable_metrics();
    for (name, help) in rampart_api::telemetry::SERIES {
        // The exporter takes the kind from the first use; help text is all it needs here.
        metrics::describe_counter!(*name, *help);
    }
    // The unlabelled counters exist from the start, at 0 (alerts see a series, not a gap).
    use rampart_api::telemetry as t;
    for name in [
        t::LOCKOUTS,
        t::REFRESH_REUSE,
        t::AUTHZ_DENIED,
        rampart_core::passwords::HASH_REJECTED,
        rampart_store::audit::EVENTS,
    ] {
        metrics::counter!(name).increment(0);
    }
    Ok(handle)
}

/// Binds `addr` and serves `GET /metrics` there (and nothing else: 404) until the task
/// is aborted. Returns the bound address (port 0 picks one) and the task.
pub async fn serve_metrics(
    addr: SocketAddr,
    handle: PrometheusHandle,
    state: AppState,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (RAMPART_METRICS_BIND): {e}"))?;
    let local = listener.local_addr()?;
    let process = metrics_process::Collector::default();
    process.describe();
    let upkeep = handle.clone();
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let (handle, state, process) = (handle.clone(), state.clone(), process.clone());
            async move {
                process.collect();
                state.hashes.record_metrics();
                state.db.record_pool_metrics();
                if let Some(redis) = &state.redis {
                    redis.record_up(REDIS_CHECK).await;
                }
                handle.run_upkeep();
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    let router = router.fallback(|| async { StatusCode::NOT_FOUND.into_response() });
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        let server = std::future::IntoFuture::into_future(axum::serve(listener, router));
        tokio::pin!(server);
        loop {
            tokio::select! {
                result = &mut server => {
                    if let Err(e) = result {
                        tracing::error!(error = %e, "metrics listener failed");
                    }
                    break;
                }
                _ = tick.tick() => upkeep.run_upkeep(),
            }
        }
    });
    Ok((local, task))
}
