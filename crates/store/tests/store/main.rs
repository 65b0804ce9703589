//! The storage integration suite: one binary, every test run against SQLite (a fresh temp
//! file) and PostgreSQL (a fresh database under `TEST_POSTGRES_URL`) via `backend_tests!`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod harness;

mod audit;
mod isolation;
mod lockout;
mod mail;
mod mfa;
mod migrations;
mod owned;
mod purge;
mod rbac;
mod redis;
mod resets;
mod sessions;
mod tokens;
mod users;
mod users_admin;
