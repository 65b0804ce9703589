-- Least privilege on PostgreSQL: the role that runs `rampart serve` may read and write
-- rows, never change the schema (docs/deployment.md, section 1).
--
-- Run once, after the first `rampart migrate`, as the owner role (or a superuser), in the
-- Rampart database:
--
--   psql "postgres://rampart_owner@db.internal/rampart?sslmode=verify-full" \
--        -v owner=rampart_owner -v app=rampart_app -f docs/sql/grant-dml-role.sql
--
-- Both roles must exist (CREATE ROLE ... LOGIN PASSWORD ...), and `owner` must own the
-- database (CREATE DATABASE rampart OWNER rampart_owner), so it owns the schema `public`.
-- Running it again is harmless. Tested by crates/server/tests/cli/least_privilege.rs.

\set ON_ERROR_STOP on

-- Only the owner creates objects in the schema (PostgreSQL < 15 lets every role do so).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app";

-- Rows of every table, today's and (default privileges) those later migrations create.
-- No TRUNCATE, REFERENCES or TRIGGER; DDL needs ownership, which `app` never has.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"app";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"app";

-- The audit trail is append-only: read and append, nothing else (its triggers refuse
-- UPDATE, DELETE and TRUNCATE as well, but only the owner could switch them off).
REVOKE UPDATE, DELETE ON audit_events FROM :"app";

-- `serve` only checks that no migration is pending; applying them is the owner's job.
REVOKE INSERT, UPDATE, DELETE ON _sqlx_migrations FROM :"app";
