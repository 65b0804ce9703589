-- Identity: users, roles and their grants, sessions with their refresh-token families, and
-- login lockout counters. Ids are UUIDv7; instants are epoch milliseconds (BIGINT) so
-- expiry and lockout comparisons behave the same as on SQLite.

-- A soft-deleted user keeps its row (deleted_at_ms set); the unique normalised email
-- covers every row, deleted or not.
CREATE TABLE users (
    id               UUID    PRIMARY KEY,
    email            TEXT    NOT NULL,
    email_normalized TEXT    NOT NULL UNIQUE,
    password_hash    TEXT    NOT NULL,
    display_name     TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('active', 'disabled')),
    mfa_enabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms    BIGINT  NOT NULL,
    updated_at_ms    BIGINT  NOT NULL,
    deleted_at_ms    BIGINT
);

-- Role names never contain a comma: the user view aggregates them into one
-- comma-separated column (store::users).
CREATE TABLE roles (
    id            UUID    PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]*$'),
    description   TEXT    NOT NULL,
    built_in      BOOLEAN NOT NULL,
    created_at_ms BIGINT  NOT NULL,
    updated_at_ms BIGINT  NOT NULL
);

-- Fixed ids, identical in migrations/sqlite (store::users::{ADMIN_ROLE_ID, USER_ROLE_ID}).
INSERT INTO roles (id, name, description, built_in, created_at_ms, updated_at_ms) VALUES
    ('00000000-0000-7000-8000-000000000001', 'admin', 'Administrators: every permission',
     TRUE, 1795440000000, 1795440000000),
    ('00000000-0000-7000-8000-000000000002', 'user', 'Members: their own account and data',
     TRUE, 1795440000000, 1795440000000);

CREATE TABLE user_roles (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id UUID NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role_id)
);

CREATE INDEX user_roles_role_id ON user_roles (role_id);

-- One login. expires_at_ms is its hard end (login + maximum age); a revoked session has
-- both revoked_at_ms and revoked_reason.
CREATE TABLE sessions (
    id              UUID   PRIMARY KEY,
    user_id         UUID   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at_ms   BIGINT NOT NULL,
    last_used_at_ms BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    ip_address      TEXT,
    user_agent      TEXT,
    revoked_at_ms   BIGINT,
    revoked_reason  TEXT,
    CHECK ((revoked_at_ms IS NULL) = (revoked_reason IS NULL))
);

CREATE INDEX sessions_user_id ON sessions (user_id);

-- The refresh tokens of a session: only the SHA-256 (hex) of a token is stored. used_at_ms
-- is set when the token is rotated; presenting it again is reuse.
CREATE TABLE refresh_tokens (
    id            UUID   PRIMARY KEY,
    session_id    UUID   NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash    TEXT   NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms    BIGINT
);

CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

-- Failed-login counters per key (a normalised email, or "email|ip"), kept whether or not
-- an account exists.
CREATE TABLE lockouts (
    key                  TEXT    PRIMARY KEY,
    failures             INTEGER NOT NULL CHECK (failures >= 0),
    window_started_at_ms BIGINT  NOT NULL,
    locked_until_ms      BIGINT
);
