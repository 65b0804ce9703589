//! Rampart's storage: SQLite and PostgreSQL behind one repository layer.
//!
//! Each feature module (`audit`, `users`, `sessions`, `lockout`…) keeps its SQL in `const`
//! strings with `$N` placeholders next to the function that runs it: one text where the
//! dialects agree, two texts side by side where they differ. [`Db`] holds one pool per
//! backend and the [`with_pool!`]/[`with_tx!`] macros expand a query body once per backend,
//! so no SQL is ever built with `format!`. Errors leave this crate as `rampart_core::Error`
//! (unique violations become `Conflict`), except for the startup functions on [`Db`], which
//! return `anyhow` errors that never contain a database URL.

/// Runs `$body` with `$pool` bound to the concrete pool of `$db` (a `&Db`), once per
/// backend, so the same query code compiles against `SqlitePool` and `PgPool`.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::Db::Sqlite($pool) => $body,
            $crate::Db::Postgres($pool) => $body,
        }
    };
}

/// Like [`with_pool!`] for a `&mut Tx`: `$conn` is the transaction's `&mut` connection
/// (pass it to sqlx as `&mut *$conn`).
macro_rules! with_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::Tx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

pub mod audit;
pub mod bookmarks;
mod cache;
mod db;
mod error;
pub mod lockout;
pub mod mail;
pub mod mfa;
pub mod notes;
pub mod owned;
pub mod passkeys;
pub mod purge;
pub mod rbac;
pub mod resets;
pub mod sessions;
mod types;
pub mod users;

pub use cache::{Limit, Redis};
pub use db::{Backend, Db, Tx};
