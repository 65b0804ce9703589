//! Metric names and the label values this crate records (contract §12). Each
//! instrumentation point is one call here or one `metrics::counter!` line, so the series
//! stay in one list ([`SERIES`]) that the docs, the alert rules and their test check
//! against. Every label value is from a fixed set: no user input ever becomes a label.
//!
//! Without a recorder installed (`RAMPART_METRICS_BIND` unset, or in-process tests) each
//! `metrics::` call is a no-op.

use axum::http::HeaderMap;
use rampart_core::Error;

/// The context an incoming `traceparent` (and `tracestate`) names (W3C Trace Context, the
/// propagator `OTEL_PROPAGATORS` defaults to); an empty context when there is none or it
/// is malformed. The propagator is a plain value, not the global one behind a lock.
pub fn incoming_context(headers: &HeaderMap) -> opentelemetry::Context {
    use opentelemetry::propagation::TextMapPropagator;
    opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Headers(headers))
}

struct Headers<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

static METRICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks the process-wide metrics recorder installed (the binary calls it when
/// `RAMPART_METRICS_BIND` is set). Until then the per-request series are not built at all.
///
/// Call it only **after** `metrics::set_global_recorder` (or an exporter's
/// `install_recorder`): `record_http` keeps each thread's handles to the HTTP series for
/// good, and a handle taken while no recorder is installed is a no-op forever. The store is
/// `Release` and [`metrics_enabled`]'s load `Acquire`, so a request thread that sees the
/// flag also sees the installed recorder.
pub fn enable_metrics() {
    METRICS.store(true, std::sync::atomic::Ordering::Release);
}

/// Whether [`enable_metrics`] was called.
pub fn metrics_enabled() -> bool {
    METRICS.load(std::sync::atomic::Ordering::Acquire)
}

/// One route's HTTP series handles, by method (the latency) and by method and status (the
/// count).
#[derive(Default)]
struct RouteSeries {
    durations: Vec<(&'static str, metrics::Histogram)>,
    counts: Vec<(&'static str, u16, metrics::Counter)>,
}

thread_local! {
    /// The HTTP series' handles this thread has used, by route label. `metrics::counter!`
    /// with labels builds and hashes its key and looks it up in the recorder's registry on
    /// every call (most of the ~3 000 instructions metrics cost a `/users/me` before this
    /// cache, ~600 with it: docs/benchmarks.md); a handle found here is one `str`-keyed
    /// lookup and two atomic updates. Bounded like the series themselves: route labels are templates or
    /// `unmatched`, methods and statuses come from fixed sets. The handles are the global
    /// recorder's (the binary installs it before serving), so a recorder made current with
    /// `metrics::with_local_recorder` does not see these two series.
    static HTTP_SERIES: std::cell::RefCell<std::collections::HashMap<Box<str>, RouteSeries>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Counts a request in `rampart_http_requests_total` and its latency in
/// `rampart_http_request_duration_seconds`. `route` must be a route template or `unmatched`
/// (never a raw path: it becomes a label, and a cache key of this thread's).
pub(crate) fn record_http(method: &'static str, route: &str, status: u16, elapsed: f64) {
    HTTP_SERIES.with_borrow_mut(|routes| {
        if !routes.contains_key(route) {
            routes.insert(route.into(), RouteSeries::default());
        }
        let Some(series) = routes.get_mut(route) else {
            return;
        };
        let count = match series
            .counts
            .iter()
            .find(|(m, s, _)| *m == method && *s == status)
        {
            Some((_, _, counter)) => counter,
            None => {
                let counter = metrics::counter!(
                    HTTP_REQUESTS,
                    "method" => method,
                    "route" => route.to_owned(),
                    "status" => status.to_string()
                );
                series.counts.push((method, status, counter));
                &series.counts[series.counts.len() - 1].2
            }
        };
        count.increment(1);
        let duration = match series.durations.iter().find(|(m, _)| *m == method) {
            Some((_, histogram)) => histogram,
            None => {
                let histogram =
                    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route.to_owned());
                series.durations.push((method, histogram));
                &series.durations[series.durations.len() - 1].1
            }
        };
        duration.record(elapsed);
    });
}

pub const HTTP_REQUESTS: &str = "rampart_http_requests_total";
pub const HTTP_DURATION: &str = "rampart_http_request_duration_seconds";
pub const LOGINS: &str = "rampart_logins_total";
pub const LOCKOUTS: &str = "rampart_lockouts_total";
pub const REFRESH_REUSE: &str = "rampart_refresh_reuse_total";
pub const AUTHZ_DENIED: &str = "rampart_authz_denied_total";
pub const RATE_LIMITED: &str = "rampart_rate_limited_total";

/// Every series Rampart exports besides the `process_*` ones, with its help text.
pub const SERIES: &[(&str, &str)] = &[
    (
        HTTP_REQUESTS,
        "HTTP requests by method, route template and status",
    ),
    (
        HTTP_DURATION,
        "HTTP request latency in seconds by method and route template",
    ),
    (
        LOGINS,
        "Login attempts by method (password, passkey, mfa) and outcome",
    ),
    (
        LOCKOUTS,
        "Lockouts started after repeated failed credentials",
    ),
    (
        REFRESH_REUSE,
        "Refresh tokens presented again after rotation (session revoked)",
    ),
    (
        AUTHZ_DENIED,
        "Requests refused for a missing permission (403)",
    ),
    (RATE_LIMITED, "Requests refused with 429 by limit"),
    (
        rampart_core::passwords::HASH_QUEUE_DEPTH,
        "Password hash jobs waiting for a thread",
    ),
    (
        rampart_core::passwords::HASH_REJECTED,
        "Password hash jobs refused at capacity (503)",
    ),
    (
        rampart_store::POOL_CONNECTIONS,
        "Database pool connections by state (idle, in_use, max)",
    ),
    (rampart_store::audit::EVENTS, "Audit records committed"),
    (
        rampart_store::REDIS_UP,
        "1 when Redis answered its last check, 0 when not (absent without Redis)",
    ),
];

/// The `method` label of HTTP series: the standard methods, `other` for anything else
/// (a client can send any token as a method).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Login methods (`method` label of [`LOGINS`]).
pub const LOGIN_PASSWORD: &str = "password";
pub const LOGIN_PASSKEY: &str = "passkey";
pub const LOGIN_MFA: &str = "mfa";

/// Counts one login attempt of `method` by its result: `success`, `mfa_required` (the
/// password was right, a second factor is due), `failure` (wrong credentials),
/// `locked` (refused by the lockout or a rate limit, 429), `unavailable` (503, e.g. the
/// hash pool is full) or `error` (anything else: the token expired, a 500…).
pub fn login<T>(
    method: &'static str,
    result: &Result<T, Error>,
    mfa_required: impl Fn(&T) -> bool,
) {
    let outcome = match result {
        Ok(v) if mfa_required(v) => "mfa_required",
        Ok(_) => "success",
        Err(Error::InvalidCredentials) => "failure",
        Err(Error::RateLimited { .. }) => "locked",
        Err(Error::Unavailable(_)) => "unavailable",
        Err(_) => "error",
    };
    metrics::counter!(LOGINS, "method" => method, "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Method};
    use proptest::prelude::*;

    use super::{incoming_context, method_label};

    const LABELS: [&str; 8] = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
    ];

    proptest! {
        /// Any method a client can send maps into the fixed label set (bounded series).
        #[test]
        fn method_labels_are_bounded(token in "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}") {
            let method = Method::from_bytes(token.as_bytes()).unwrap();
            prop_assert!(LABELS.contains(&method_label(&method)));
        }

        /// Hostile `traceparent` values never panic the extraction.
        #[test]
        fn any_traceparent_is_harmless(value in "[ -~]{0,200}") {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert("traceparent", v);
            }
            let _ = incoming_context(&headers);
        }
    }
}
