//! RFC 9457 problem documents (contract §1).
//!
//! Handlers and middleware never write an error body themselves: they return a response
//! carrying a [`Problem`] extension and an empty body, and the outermost
//! [`crate::middleware::problem`] layer renders it, adding the request id. Any other non-2xx
//! response (a framework rejection, a 405 from the router, a 413 from the body limit, a
//! timeout or a caught panic) is turned into a problem document by the same layer, so no
//! error leaves the server in another shape.
//!
//! [`ProblemDocument`] is both what the renderer serialises and the `Problem` schema of the
//! OpenAPI document (media type [`PROBLEM_MEDIA_TYPE`]), which `crate::routing` attaches to
//! every 4xx and 5xx response of every operation: the documented shape cannot drift from
//! the sent one.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rampart_core::{Error, FieldError};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every problem document (RFC 9457 §3).
pub const PROBLEM_MEDIA_TYPE: &str = "application/problem+json";

/// The machine-readable codes of contract §1, the only values `code` takes.
pub const CODES: &[&str] = &[
    "validation_failed",
    "unauthenticated",
    "invalid_credentials",
    "forbidden",
    "reauthentication_failed",
    "email_unverified",
    "not_found",
    "method_not_allowed",
    "conflict",
    "payload_too_large",
    "uri_too_long",
    "unsupported_media_type",
    "rate_limited",
    "internal_error",
    "unavailable",
];

/// An RFC 9457 problem document (contract §1): the body of every non-2xx response.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Problem)]
pub struct ProblemDocument<'a> {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    kind: &'static str,
    /// The HTTP reason phrase of `status`.
    #[schema(example = "Bad Request")]
    title: &'static str,
    /// The response's status code.
    #[schema(minimum = 400, maximum = 599, example = 400)]
    status: u16,
    /// A short human sentence.
    detail: &'a str,
    /// Machine-readable; one of the contract's codes.
    #[schema(schema_with = code_schema)]
    code: &'static str,
    /// Present only for `validation_failed`: one entry per problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, min_items = 1)]
    errors: Option<Vec<ValidationIssue<'a>>>,
    /// The request's `X-Request-Id`.
    request_id: &'a str,
    /// Extension members (RFC 9457 §3.2), e.g. `checks` on a failed readiness probe.
    #[serde(flatten)]
    #[schema(ignore)]
    extensions: &'a serde_json::Map<String, serde_json::Value>,
}

/// One entry of a `validation_failed` problem's `errors`.
#[derive(Serialize, ToSchema)]
pub struct ValidationIssue<'a> {
    /// A dotted path into the body (`email`, `roles.0`), or `query.<name>`, `path.<name>`,
    /// `header.<name>`.
    #[schema(example = "email")]
    field: &'a str,
    #[schema(example = "must be a valid email address")]
    issue: &'a str,
}

fn code_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(CODES.iter().copied()))
        .description(Some("Machine-readable; one of the contract's codes."))
        .build()
}

/// What a problem document says, before the request id is known.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// Extension members (RFC 9457 §3.2), e.g. the failing checks of `/health/ready`.
    pub extensions: serde_json::Map<String, serde_json::Value>,
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        debug_assert!(CODES.contains(&code), "problem code {code} is not in CODES");
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            extensions: serde_json::Map::new(),
            retry_after_secs: None,
        }
    }

    /// The generic problem for a status that carried no problem of its own.
    pub fn for_status(status: StatusCode) -> Self {
        let (status, code, detail) = match status.as_u16() {
            401 => (status, "unauthenticated", "Authentication is required"),
            403 => (status, "forbidden", "You are not allowed to do this"),
            404 => (status, "not_found", "The requested resource was not found"),
            405 => (
                status,
                "method_not_allowed",
                "This method is not allowed on this resource",
            ),
            409 => (
                status,
                "conflict",
                "The request conflicts with the current state",
            ),
            413 => (status, "payload_too_large", "Request body is too large"),
            414 => (status, "uri_too_long", "Request target is too long"),
            415 => (
                status,
                "unsupported_media_type",
                "Request body must be application/json",
            ),
            429 => (status, "rate_limited", "Too many requests"),
            503 | 504 | 408 => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The service is unavailable, try again later",
            ),
            400..=499 => (
                StatusCode::BAD_REQUEST,
                "validation_failed",
                "Request is invalid",
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "An unexpected error occurred",
            ),
        };
        let mut problem = Self::new(status, code, detail);
        if code == "validation_failed" {
            problem.errors = vec![FieldError::new("body", "is invalid")];
        }
        problem
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut problem = Self::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "Request is invalid",
        );
        problem.errors = if errors.is_empty() {
            vec![FieldError::new("body", "is invalid")]
        } else {
            errors
        };
        problem
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut problem = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many requests, try again later",
        );
        problem.retry_after_secs = Some(retry_after_secs.max(1));
        problem
    }

    pub fn with_extension(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extensions.insert(key.to_owned(), value);
        self
    }

    /// Renders the final document. Called only by the problem middleware.
    pub(crate) fn render(&self, request_id: &str) -> Response {
        let body = ProblemDocument {
            kind: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            errors: (self.code == "validation_failed").then(|| {
                self.errors
                    .iter()
                    .map(|e| ValidationIssue {
                        field: &e.field,
                        issue: &e.issue,
                    })
                    .collect()
            }),
            request_id,
            extensions: &self.extensions,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_MEDIA_TYPE),
        );
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// The error type of every handler: a domain error on its way to a problem document.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(err: E) -> Self {
        Self(err.into())
    }
}

impl From<&Error> for Problem {
    fn from(err: &Error) -> Self {
        match err {
            Error::NotFound => Problem::for_status(StatusCode::NOT_FOUND),
            Error::Conflict(what) => Problem::new(StatusCode::CONFLICT, "conflict", what.clone()),
            Error::Validation(errors) => Problem::validation(errors.clone()),
            Error::InvalidCredentials => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "Email or password is incorrect",
            ),
            Error::Unauthenticated => Problem::for_status(StatusCode::UNAUTHORIZED),
            Error::Forbidden => Problem::for_status(StatusCode::FORBIDDEN),
            Error::ReauthenticationFailed => Problem::new(
                StatusCode::FORBIDDEN,
                "reauthentication_failed",
                "The password or code is incorrect",
            ),
            Error::EmailUnverified => Problem::new(
                StatusCode::FORBIDDEN,
                "email_unverified",
                "The email address of this account is not verified yet",
            ),
            Error::RateLimited { retry_after_secs } => Problem::rate_limited(*retry_after_secs),
            Error::Unavailable(why) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("The service is unavailable: {why}"),
            ),
            Error::Internal(_) => Problem::for_status(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Error::Internal(cause) = &self.0 {
            // The full chain goes to the log, inside the request's span; the client gets the
            // generic 500 and the request id to quote.
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
        Problem::from(&self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_maps_to_a_contract_code() {
        for status in [
            400, 401, 403, 404, 405, 408, 409, 411, 413, 414, 415, 422, 429, 500, 502, 503,
        ] {
            let p = Problem::for_status(StatusCode::from_u16(status).unwrap());
            let expected = match p.status.as_u16() {
                400 => "validation_failed",
                401 => "unauthenticated",
                403 => "forbidden",
                404 => "not_found",
                405 => "method_not_allowed",
                409 => "conflict",
                413 => "payload_too_large",
                414 => "uri_too_long",
                415 => "unsupported_media_type",
                429 => "rate_limited",
                500 => "internal_error",
                503 => "unavailable",
                other => panic!("unexpected status {other}"),
            };
            assert_eq!(p.code, expected, "{status}");
            if p.code == "validation_failed" {
                assert!(!p.errors.is_empty());
            }
        }
    }

    /// The `code` enum of the `Problem` schema lists every code the mappings produce.
    #[test]
    fn every_code_sent_is_in_the_documented_enum() {
        for status in 400..=599 {
            let p = Problem::for_status(StatusCode::from_u16(status).unwrap());
            assert!(CODES.contains(&p.code), "{status} -> {}", p.code);
        }
        let errors = [
            Error::NotFound,
            Error::Conflict("x".into()),
            Error::validation("x", "y"),
            Error::InvalidCredentials,
            Error::Unauthenticated,
            Error::Forbidden,
            Error::ReauthenticationFailed,
            Error::EmailUnverified,
            Error::RateLimited {
                retry_after_secs: 1,
            },
            Error::Unavailable("x"),
            Error::internal(anyhow::anyhow!("x")),
        ];
        for err in &errors {
            let p = Problem::from(err);
            assert!(CODES.contains(&p.code), "{err:?} -> {}", p.code);
        }
    }
}
