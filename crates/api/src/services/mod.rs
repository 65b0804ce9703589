//! Use cases that span the domain (`rampart_core`) and storage (`rampart_store`). They
//! live in the HTTP crate only because it is the one crate that sees both; they take plain
//! values, never requests, and each change they make commits in one transaction together
//! with its audit event (the store functions guarantee that).

pub mod admin;
pub mod auth;
pub mod credentials;
pub mod lifecycle;
pub mod meta;
pub mod mfa;
pub mod passkeys;
pub mod password_reset;
