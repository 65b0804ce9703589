-- Identity: users, roles and their grants, sessions with their refresh-token families, and
-- login lockout counters. Ids are UUIDv7 as hyphenated TEXT; instants are epoch
-- milliseconds (INTEGER); booleans are INTEGER 0/1.

-- A soft-deleted user keeps its row (deleted_at_ms set); the unique normalised email
-- covers every row, deleted or not.
CREATE TABLE users (
    id               TEXT    PRIMARY KEY,
    email            TEXT    NOT NULL,
    email_normalized TEXT    NOT NULL UNIQUE,
    password_hash    TEXT    NOT NULL,
    display_name     TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('active', 'disabled')),
    mfa_enabled      INTEGER NOT NULL DEFAULT 0 CHECK (mfa_enabled IN (0, 1)),
    created_at_ms    INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL,
    deleted_at_ms    INTEGER
) STRICT;

-- Role names never contain a comma: the user view aggregates them into one
-- comma-separated column (store::users).
CREATE TABLE roles (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE
                  CHECK (name GLOB '[a-z]*' AND name NOT GLOB '*[^a-z0-9_-]*'),
    description   TEXT    NOT NULL,
    built_in      INTEGER NOT NULL CHECK (built_in IN (0, 1)),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;

-- Fixed ids, identical in migrations/postgres (store::users::{ADMIN_ROLE_ID, USER_ROLE_ID}).
INSERT INTO roles (id, name, description, built_in, created_at_ms, updated_at_ms) VALUES
    ('00000000-0000-7000-8000-000000000001', 'admin', 'Administrators: every permission',
     1, 1795440000000, 1795440000000),
    ('00000000-0000-7000-8000-000000000002', 'user', 'Members: their own account and data',
     1, 1795440000000, 1795440000000);

CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role_id)
) STRICT;

CREATE INDEX user_roles_role_id ON user_roles (role_id);

-- One login. expires_at_ms is its hard end (login + maximum age); a revoked session has
-- both revoked_at_ms and revoked_reason.
CREATE TABLE sessions (
    id              TEXT    PRIMARY KEY,
    user_id         TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at_ms   INTEGER NOT NULL,
    last_used_at_ms INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    ip_address      TEXT,
    user_agent      TEXT,
    revoked_at_ms   INTEGER,
    revoked_reason  TEXT,
    CHECK ((revoked_at_ms IS NULL) = (revoked_reason IS NULL))
) STRICT;

CREATE INDEX sessions_user_id ON sessions (user_id);

-- The refresh tokens of a session: only the SHA-256 (hex) of a token is stored. used_at_ms
-- is set when the token is rotated; presenting it again is reuse.
CREATE TABLE refresh_tokens (
    id            TEXT    PRIMARY KEY,
    session_id    TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash    TEXT    NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms    INTEGER
) STRICT;

CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

-- Failed-login counters per key (a normalised email, or "email|ip"), kept whether or not
-- an account exists.
CREATE TABLE lockouts (
    key                  TEXT    PRIMARY KEY,
    failures             INTEGER NOT NULL CHECK (failures >= 0),
    window_started_at_ms INTEGER NOT NULL,
    locked_until_ms      INTEGER
) STRICT;
