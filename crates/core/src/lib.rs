//! Rampart's domain: the error type every layer speaks, typed configuration, the clock,
//! signing keys and the audit hash chain. Nothing here knows about HTTP or SQL: `api`
//! and `store` depend on this crate, never the other way round.

pub mod audit;
pub mod clock;
pub mod config;
pub mod config_docs;
pub mod crypto;
pub mod error;
pub mod fields;
pub mod keys;
pub mod mail;
pub mod net;
pub mod otel;
pub mod passkeys;
pub mod passwords;
pub mod rbac;
pub mod tokens;
pub mod totp;
pub mod users;

pub use clock::{Clock, SystemClock};
pub use error::{Error, FieldError, Result};
