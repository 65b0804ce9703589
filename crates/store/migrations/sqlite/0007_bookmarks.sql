-- Bookmarks: an owned module (store::bookmarks) on the owned-table kit (store::owned), whose
-- statements scope every row to its owner. UUIDs are hyphenated TEXT; instants are epoch
-- milliseconds (INTEGER).
CREATE TABLE bookmarks (
    id            TEXT    PRIMARY KEY,
    owner_id      TEXT    NOT NULL REFERENCES users (id),
    url           TEXT    NOT NULL,
    title         TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;

CREATE INDEX bookmarks_owner_id_id ON bookmarks (owner_id, id);
