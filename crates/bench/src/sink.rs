//! `rampart-bench otlp-sink`: an OTLP/HTTP trace receiver that discards what it receives,
//! for the observability overhead figures (docs/benchmarks.md). In production the
//! collector runs on its own host; here it shares the two cores with the server, so it is
//! made as cheap as a receiver can be (one runtime thread, no decoding) and its CPU shows
//! as "other processes" in the load report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::post;

#[derive(clap::Args, Clone)]
pub struct SinkArgs {
    /// Address to listen on (`OTEL_EXPORTER_OTLP_ENDPOINT=http://<this>` for the server).
    #[arg(long, default_value = "127.0.0.1:4318")]
    pub bind: SocketAddr,
}

pub fn run(args: &SinkArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let received = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let counts = received.clone();
        let app = Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let counts = counts.clone();
                async move {
                    counts.0.fetch_add(1, Ordering::Relaxed);
                    counts.1.fetch_add(body.len() as u64, Ordering::Relaxed);
                    // An empty ExportTraceServiceResponse.
                    (
                        [(header::CONTENT_TYPE, "application/x-protobuf")],
                        Bytes::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("cannot listen on {}", args.bind))?;
        println!("otlp-sink listening on {}", listener.local_addr()?);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        println!(
            "otlp-sink received {} exports, {} bytes",
            received.0.load(Ordering::Relaxed),
            received.1.load(Ordering::Relaxed)
        );
        Ok(())
    })
}
