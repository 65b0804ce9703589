//! The one integration-test binary of the HTTP layer: every test drives the real router
//! served on a random port, and (through `backend_tests!`) runs on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod admin;
mod authz;
mod bookmarks;
mod console;
mod credentials;
mod edges;
mod identity;
mod lifecycle;
mod mfa;
mod notes;
mod openapi;
mod owned;
mod passkeys;
mod pipeline;
mod policies;
mod races;
mod revocation;
mod scale;
