//! The one error type of the domain. Each case maps to exactly one status and `code` of the
//! contract's §1 table (the mapping lives in `api::problem`); `Internal` carries the cause for
//! the log and is never shown to a client.

use std::fmt;

/// One problem with one input, as the contract's `errors` entries show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the input (`email`, `query.limit`, `path.id`, `body`).
    pub field: String,
    /// A sentence a person understands; never a type name or a secret.
    pub issue: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, issue: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            issue: issue.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("unauthenticated")]
    Unauthenticated,
    #[error("forbidden")]
    Forbidden,
    #[error("reauthentication failed")]
    ReauthenticationFailed,
    /// The password (and second factor) were right but the account's email is not verified
    /// while `RAMPART_REQUIRE_VERIFIED_EMAIL` is on (contract §11).
    #[error("email unverified")]
    EmailUnverified,
    #[error("rate limited, retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

impl Error {
    pub fn validation(field: impl Into<String>, issue: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, issue)])
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }
}

impl From<anyhow::Error> for Error {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps a secret so that `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted<T>(pub T);

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl<T> Redacted<T> {
    pub fn expose(&self) -> &T {
        &self.0
    }
}
