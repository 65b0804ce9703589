//! Request ids (contract §1): a client's `X-Request-Id` is kept only when it matches
//! `^[A-Za-z0-9._-]{1,64}$` (so it cannot inject anything into logs or audit records);
//! anything else is replaced by a fresh UUIDv7. The id is echoed on every response.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;

use crate::extract::RequestId;

pub const HEADER: &str = "x-request-id";

pub fn is_acceptable(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Gives the request its id (the client's when acceptable, else a fresh UUIDv7) as the
/// [`RequestId`] extension, and returns the header value to echo on the response.
pub(crate) fn assign(req: &mut Request) -> Option<HeaderValue> {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    // Both values are checked ASCII, so the header conversion cannot fail.
    let header = HeaderValue::from_str(&id).ok();
    req.extensions_mut().insert(RequestId(id));
    header
}

/// Echoes the request's id on its response.
pub(crate) fn echo(header: Option<HeaderValue>, response: &mut Response) {
    if let Some(header) = header {
        response.headers_mut().insert(HEADER, header);
    }
}

#[cfg(test)]
mod tests {
    use super::is_acceptable;

    #[test]
    fn pattern() {
        assert!(is_acceptable("abc-DEF_1.2"));
        assert!(is_acceptable(&"a".repeat(64)));
        for bad in ["", "a b", "a;b", "a/b", "ä", "\n"] {
            assert!(!is_acceptable(bad), "{bad:?}");
        }
        assert!(!is_acceptable(&"a".repeat(65)));
    }
}
