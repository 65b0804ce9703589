-- Bookmarks: an owned module (store::bookmarks) on the owned-table kit (store::owned), whose
-- statements scope every row to its owner. Instants are epoch milliseconds (BIGINT).
CREATE TABLE bookmarks (
    id            UUID   PRIMARY KEY,
    owner_id      UUID   NOT NULL REFERENCES users (id),
    url           TEXT   NOT NULL,
    title         TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX bookmarks_owner_id_id ON bookmarks (owner_id, id);
