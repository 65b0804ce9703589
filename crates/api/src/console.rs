//! The web console (contract §13): static pages compiled into the binary and served at
//! `/console/`, a same-origin client of the public API. Nothing here reads or writes
//! state: the pages call `/api/v1` like any client. The links Rampart mails
//! (`/reset-password`, `/verify-email`, `/confirm-email`) redirect into the console with
//! their one-time token in the fragment, which the browser never sends back to a server.
//!
//! Every response under `/console` carries the console's CSP ([`CSP`]), set by
//! [`crate::middleware::security_headers`].

use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::problem::Problem;
use crate::routing::Policy;
use crate::state::AppState;

/// The console's Content-Security-Policy, exactly as contract §13 fixes it.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

/// One embedded file: its path under `/console/`, media type and bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $media:expr) => {
        Asset {
            path: $path,
            media_type: $media,
            bytes: include_bytes!(concat!("../console/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the console consists of. `index.html` is also `/console/`.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("qr.js", JS),
    asset!("pages/public.js", JS),
    asset!("pages/account.js", JS),
    asset!("pages/admin.js", JS),
    asset!("pages/webauthn.js", JS),
    // qrcode-generator 1.4.4 (MIT), vendored from npm: see console/vendor/README.md.
    asset!("vendor/qrcode-generator-1.4.4.js", JS),
];

/// The console's routes and the policy each declares (all public: the pages are static,
/// and what they show comes from authenticated API calls).
pub const ROUTES: [(&str, &str); 6] = [
    ("GET", "/console"),
    ("GET", "/console/"),
    ("GET", "/console/{*path}"),
    ("GET", "/reset-password"),
    ("GET", "/verify-email"),
    ("GET", "/confirm-email"),
];

/// The console's routes, for [`crate::build_router`] to guard and declare as
/// [`Policy::Public`].
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { redirect("/console/") }))
        .route("/console/", get(|| async { serve("index.html") }))
        .route(
            "/console/{*path}",
            get(|Path(path): Path<String>| async move { serve(&path) }),
        )
        .route(
            "/reset-password",
            get(|RawQuery(q): RawQuery| async move { link_redirect("reset-password", q) }),
        )
        .route(
            "/verify-email",
            get(|RawQuery(q): RawQuery| async move { link_redirect("verify-email", q) }),
        )
        .route(
            "/confirm-email",
            get(|RawQuery(q): RawQuery| async move { link_redirect("confirm-email", q) }),
        )
}

/// The policy of every console route.
pub const POLICY: Policy = Policy::Public;

fn serve(path: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return Problem::for_status(StatusCode::NOT_FOUND).into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.media_type),
            ),
            // Revalidate every time: the files are not fingerprinted, and an upgraded
            // binary must not be paired with a cached older script.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        asset.bytes,
    )
        .into_response()
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => Problem::for_status(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

/// `GET /reset-password?token=…` (and the email links) → `303` to the console page with
/// the token in the fragment. Only a well-formed `token` is carried over.
fn link_redirect(page: &str, query: Option<String>) -> Response {
    redirect(&console_location(page, query.as_deref()))
}

/// Where a mailed link leads: `/console/#/<page>` plus `?token=<token>` when the query
/// holds exactly one `token` made of URL-safe base64 characters (at most 512). Anything
/// else is dropped, so nothing a link carries can reach the page except such a token.
pub fn console_location(page: &str, query: Option<&str>) -> String {
    let tokens: Vec<String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .collect();
    match tokens.as_slice() {
        [token] if is_token(token) => format!("/console/#/{page}?token={token}"),
        _ => format!("/console/#/{page}"),
    }
}

fn is_token(token: &str) -> bool {
    (1..=512).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_asset_is_embedded_and_index_loads_only_embedded_scripts() {
        let index = ASSETS
            .iter()
            .find(|a| a.path == "index.html")
            .map(|a| std::str::from_utf8(a.bytes).unwrap_or_default())
            .unwrap_or_default();
        assert!(index.contains("<script type=\"module\" src=\"app.js\">"));
        // No inline script or style: the CSP would refuse them.
        assert!(!index.contains("<script>") && !index.contains("style="));
        assert!(!index.contains("<style"));
        for asset in ASSETS {
            assert!(!asset.bytes.is_empty(), "{} is empty", asset.path);
        }
    }

    #[test]
    fn the_token_is_kept_only_when_well_formed() {
        assert_eq!(
            console_location("reset-password", Some("token=abc_DEF-123")),
            "/console/#/reset-password?token=abc_DEF-123"
        );
        for q in [
            None,
            Some(""),
            Some("token="),
            Some("token=a%20b"),
            Some("token=a&token=b"),
            Some("token=<script>"),
            Some("x=1"),
        ] {
            assert_eq!(
                console_location("verify-email", q),
                "/console/#/verify-email",
                "{q:?}"
            );
        }
        assert_eq!(
            console_location("confirm-email", Some("x=1&token=tok")),
            "/console/#/confirm-email?token=tok"
        );
    }

    proptest! {
        /// Whatever the query, the redirect stays on the console (a relative path starting
        /// `/console/#/`, never `//` or a scheme) and is a valid header value whose only
        /// addition is URL-safe token characters.
        #[test]
        fn hostile_queries_never_leave_the_console(query in ".{0,600}") {
            let location = console_location("reset-password", Some(&query));
            prop_assert!(HeaderValue::from_str(&location).is_ok());
            let rest = location.strip_prefix("/console/#/reset-password");
            prop_assert!(rest.is_some());
            let rest = rest.unwrap_or_default();
            if let Some(token) = rest.strip_prefix("?token=") {
                prop_assert!(is_token(token));
            } else {
                prop_assert_eq!(rest, "");
            }
        }

        #[test]
        fn asset_lookup_never_panics(path in ".{0,300}") {
            let response = serve(&path);
            let known = ASSETS.iter().any(|a| a.path == path);
            prop_assert_eq!(response.status().is_success(), known);
        }
    }
}
