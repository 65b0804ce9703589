-- Append-only, hash-chained audit trail (rampart_core::audit). seq is assigned by the
-- application as previous seq + 1 inside the appending transaction, never by AUTOINCREMENT,
-- so the chain has no gaps. UUIDs are hyphenated TEXT; instants are epoch milliseconds.
CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    at_ms       INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    actor_id    TEXT,
    target_type TEXT,
    target_id   TEXT,
    ip_address  TEXT,
    user_agent  TEXT,
    request_id  TEXT,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    details     TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
) STRICT;

CREATE INDEX audit_events_action ON audit_events (action);
CREATE INDEX audit_events_actor_id ON audit_events (actor_id);
CREATE INDEX audit_events_target_id ON audit_events (target_id);
CREATE INDEX audit_events_at_ms ON audit_events (at_ms);

-- The database itself refuses to change or remove a record.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
