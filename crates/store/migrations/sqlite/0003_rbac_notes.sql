-- RBAC catalogue and grants, and notes (the example business module). The catalogue
-- (features → permissions) is synced from the code (store::rbac::sync_catalogue): what the
-- code no longer declares is retired (retired_at_ms set), never deleted, and a retired
-- permission is granted by no role. UUIDs are hyphenated TEXT; instants are epoch
-- milliseconds (INTEGER).

CREATE TABLE features (
    name          TEXT    PRIMARY KEY
                  CHECK (name GLOB '[a-z]*' AND name NOT GLOB '*[^a-z0-9_]*'),
    description   TEXT    NOT NULL,
    retired_at_ms INTEGER
) STRICT;

-- Permission names never contain a comma: the role view aggregates them into one
-- comma-separated column (store::rbac). `feature:action`, each part [a-z][a-z0-9_]*.
CREATE TABLE permissions (
    name          TEXT    PRIMARY KEY
                  CHECK (name GLOB '[a-z]*:[a-z]*' AND name NOT GLOB '*:*:*'
                         AND name NOT GLOB '*[^a-z0-9_:]*'),
    feature       TEXT    NOT NULL REFERENCES features (name),
    description   TEXT    NOT NULL,
    retired_at_ms INTEGER
) STRICT;

CREATE INDEX permissions_feature ON permissions (feature);

CREATE TABLE role_permissions (
    role_id    TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    permission TEXT NOT NULL REFERENCES permissions (name),
    PRIMARY KEY (role_id, permission)
) STRICT;

CREATE INDEX role_permissions_permission ON role_permissions (permission);

-- Owned objects: every read and write of a note names its owner in the WHERE clause
-- unless the caller may act on any note (store::notes::Scope).
CREATE TABLE notes (
    id            TEXT    PRIMARY KEY,
    owner_id      TEXT    NOT NULL REFERENCES users (id),
    title         TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;

CREATE INDEX notes_owner_id_id ON notes (owner_id, id);
