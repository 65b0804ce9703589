-- RBAC catalogue and grants, and notes (the example business module). The catalogue
-- (features → permissions) is synced from the code (store::rbac::sync_catalogue): what the
-- code no longer declares is retired (retired_at_ms set), never deleted, and a retired
-- permission is granted by no role. Instants are epoch milliseconds (BIGINT).

CREATE TABLE features (
    name          TEXT   PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    description   TEXT   NOT NULL,
    retired_at_ms BIGINT
);

-- Permission names never contain a comma: the role view aggregates them into one
-- comma-separated column (store::rbac).
CREATE TABLE permissions (
    name          TEXT   PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$'),
    feature       TEXT   NOT NULL REFERENCES features (name),
    description   TEXT   NOT NULL,
    retired_at_ms BIGINT
);

CREATE INDEX permissions_feature ON permissions (feature);

CREATE TABLE role_permissions (
    role_id    UUID NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    permission TEXT NOT NULL REFERENCES permissions (name),
    PRIMARY KEY (role_id, permission)
);

CREATE INDEX role_permissions_permission ON role_permissions (permission);

-- Owned objects: every read and write of a note names its owner in the WHERE clause
-- unless the caller may act on any note (store::notes::Scope).
CREATE TABLE notes (
    id            UUID   PRIMARY KEY,
    owner_id      UUID   NOT NULL REFERENCES users (id),
    title         TEXT   NOT NULL,
    body          TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX notes_owner_id_id ON notes (owner_id, id);
