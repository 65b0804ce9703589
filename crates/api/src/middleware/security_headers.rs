//! Security headers on every response (contract §2). JSON responses get a CSP that allows
//! nothing; the Swagger UI pages under `/docs` get one that allows their own scripts and
//! styles only; the console under `/console` gets contract §13's. `Cache-Control: no-store` and `Vary: Origin` on everything under `/api/v1`.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;

const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
// Swagger UI's bundle injects inline styles; scripts come from the binary itself.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

#[derive(Clone, Copy)]
pub struct SecurityHeaders {
    pub hsts: bool,
}

/// Which CSP and caching rules a request's path falls under.
#[derive(Clone, Copy)]
pub(crate) struct PathClass {
    docs: bool,
    console: bool,
    api: bool,
}

pub(crate) fn classify(path: &str) -> PathClass {
    PathClass {
        docs: path == "/docs" || path.starts_with("/docs/"),
        console: path == "/console" || path.starts_with("/console/"),
        api: path == "/api/v1" || path.starts_with("/api/v1/"),
    }
}

// Names and values built at compile time: `from_static` is a `const fn`, so none of them is
// parsed or checked per response (they were, at ~2 % of a `/me` request's CPU).
const COOP: HeaderName = HeaderName::from_static("cross-origin-opener-policy");
const CORP: HeaderName = HeaderName::from_static("cross-origin-resource-policy");
const PERMISSIONS_POLICY: HeaderName = HeaderName::from_static("permissions-policy");
const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const DENY: HeaderValue = HeaderValue::from_static("DENY");
const NO_REFERRER: HeaderValue = HeaderValue::from_static("no-referrer");
const SAME_ORIGIN: HeaderValue = HeaderValue::from_static("same-origin");
const PERMISSIONS: HeaderValue = HeaderValue::from_static(
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
);
const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000; includeSubDomains");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
const API_CSP_VALUE: HeaderValue = HeaderValue::from_static(API_CSP);
const DOCS_CSP_VALUE: HeaderValue = HeaderValue::from_static(DOCS_CSP);
const CONSOLE_CSP_VALUE: HeaderValue = HeaderValue::from_static(crate::console::CSP);

/// Sets the security headers of a response to a request of `class`.
pub(crate) fn apply(cfg: SecurityHeaders, class: PathClass, response: &mut Response) {
    let PathClass { docs, console, api } = class;
    let h = response.headers_mut();
    // Room for all of them at once, rather than the map growing as they are added.
    h.reserve(10);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    h.insert(header::X_FRAME_OPTIONS, DENY);
    h.insert(header::REFERRER_POLICY, NO_REFERRER);
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        if docs {
            DOCS_CSP_VALUE
        } else if console {
            CONSOLE_CSP_VALUE
        } else {
            API_CSP_VALUE
        },
    );
    h.insert(COOP, SAME_ORIGIN);
    h.insert(CORP, SAME_ORIGIN);
    h.insert(PERMISSIONS_POLICY, PERMISSIONS);
    if cfg.hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
    h.remove(header::SERVER);
    h.remove(X_POWERED_BY);
    if api {
        h.insert(header::CACHE_CONTROL, NO_STORE);
        let has_origin = h
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("origin"))
            });
        if !has_origin {
            h.append(header::VARY, ORIGIN);
        }
    }
}
