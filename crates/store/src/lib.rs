//! Rampart's storage: SQLite and PostgreSQL behind one repository layer.
//!
//! Each feature module (`audit`, `users`, `sessions`, `lockout`…) keeps its SQL in `const`
//! strings with `$N` placeholders next to the function that runs it: one text where the
//! dialects agree, two texts side by side where they differ. [`Db`] holds one pool per
//! backend and the `with_pool!`/`with_tx!` macros expand a query body once per backend,
//! so no SQL is ever built with `format!`. Errors leave this crate as `rampart_core::Error`
//! (unique violations become `Conflict`), except for the startup functions on [`Db`], which
//! return `anyhow` errors that never contain a database URL.

/// Runs `$body` with `$pool` bound to the concrete pool of `$db` (a `&Db`), once per
/// backend, so the same query code compiles against `SqlitePool` and `PgPool`. `$body`
/// (which awaits) runs in a `db.query` span ([`db::traced`]).
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::Db::Sqlite($pool) => {
                $crate::db::traced($crate::Backend::Sqlite, async { $body }).await
            }
            $crate::Db::Postgres($pool) => {
                $crate::db::traced($crate::Backend::Postgres, async { $body }).await
            }
        }
    };
}

/// Like [`with_pool!`] for a `&mut Tx`: `$conn` is the transaction's `&mut` connection
/// (pass it to sqlx as `&mut *$conn`).
macro_rules! with_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx.conn() {
            $crate::TxConn::Sqlite(tx) => {
                let $conn = &mut **tx;
                $crate::db::traced($crate::Backend::Sqlite, async { $body }).await
            }
            $crate::TxConn::Postgres(tx) => {
                let $conn = &mut **tx;
                $crate::db::traced($crate::Backend::Postgres, async { $body }).await
            }
        }
    };
}

pub mod audit;
pub mod bookmarks;
mod cache;
#[doc(hidden)]
pub mod db;
mod error;
pub mod lifecycle;
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
pub mod tokens;
mod types;
pub mod users;

pub use cache::{Limit, REDIS_UP, Redis};
pub use db::{Backend, Db, POOL_CONNECTIONS, Tx, TxConn};
