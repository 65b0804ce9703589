-- Append-only, hash-chained audit trail (rampart_core::audit). seq is assigned by the
-- application as previous seq + 1 under an advisory lock inside the appending transaction,
-- never by a sequence, so the chain has no gaps. Instants are epoch milliseconds.
CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY,
    id          UUID   NOT NULL UNIQUE,
    at_ms       BIGINT NOT NULL,
    action      TEXT   NOT NULL,
    actor_id    UUID,
    target_type TEXT,
    target_id   TEXT,
    ip_address  TEXT,
    user_agent  TEXT,
    request_id  TEXT,
    outcome     TEXT   NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    details     TEXT   NOT NULL,
    prev_hash   TEXT   NOT NULL,
    hash        TEXT   NOT NULL
);

CREATE INDEX audit_events_action ON audit_events (action);
CREATE INDEX audit_events_actor_id ON audit_events (actor_id);
CREATE INDEX audit_events_target_id ON audit_events (target_id);
CREATE INDEX audit_events_at_ms ON audit_events (at_ms);

-- The database itself refuses to change or remove a record. A superuser can still disable
-- the triggers; the hash chain is what makes that visible.
CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
