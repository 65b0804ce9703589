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

/// Sets the security headers of a response to a request of `class`.
pub(crate) fn apply(cfg: SecurityHeaders, class: PathClass, response: &mut Response) {
    let PathClass { docs, console, api } = class;
    let h = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        if docs {
            DOCS_CSP
        } else if console {
            crate::console::CSP
        } else {
            API_CSP
        },
    );
    set(
        h,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        h,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    set(
        h,
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
    );
    if cfg.hsts {
        set(
            h,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        );
    }
    h.remove(header::SERVER);
    h.remove("x-powered-by");
    if api {
        set(h, header::CACHE_CONTROL, "no-store");
        let has_origin = h
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("origin"))
            });
        if !has_origin {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}
