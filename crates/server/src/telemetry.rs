//! Logging: JSON lines on stdout by default, human-readable with `RAMPART_LOG_FORMAT=pretty`.
//! What is logged is decided where it is logged (see `rampart_api::middleware::access_log`):
//! never bodies, tokens, cookies, passwords or `Authorization`. (Audit checkpoints are
//! logged on purpose: signed statements of the audit chain head, holding no secret.)

use rampart_core::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

pub fn init(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let result = match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("rampart: logging already initialised: {e}");
    }
}
