//! Tests of the real `rampart` binary: configuration refusals, development start-up, key
//! commands, graceful shutdown on signals, logs, migrations and `audit verify`, on SQLite
//! and (where storage is involved) PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admin;
mod audit;
mod cluster;
mod crash;
mod data_keys;
mod keys;
mod least_privilege;
mod logs;
mod observability;
mod outage;
mod private_services;
mod production;
mod purge;
mod queries;
mod redis_tls;
mod restart;
mod serve;
