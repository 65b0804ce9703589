-- Indexes for the background purge (store::purge): each of its batched DELETEs selects by
-- one of these columns, so a batch reads the expired rows instead of scanning the table.
-- Partial where the column is mostly NULL, so they stay small and cheap to maintain.
CREATE INDEX sessions_expires_at ON sessions (expires_at_ms);
CREATE INDEX sessions_revoked_at ON sessions (revoked_at_ms) WHERE revoked_at_ms IS NOT NULL;
CREATE INDEX refresh_tokens_unused_expires_at ON refresh_tokens (expires_at_ms)
    WHERE used_at_ms IS NULL;
CREATE INDEX mfa_challenges_expires_at ON mfa_challenges (expires_at_ms);
CREATE INDEX mfa_challenges_used_at ON mfa_challenges (used_at_ms) WHERE used_at_ms IS NOT NULL;
CREATE INDEX password_resets_expires_at ON password_resets (expires_at_ms);
CREATE INDEX password_resets_used_at ON password_resets (used_at_ms) WHERE used_at_ms IS NOT NULL;
CREATE INDEX lockouts_window_started_at ON lockouts (window_started_at_ms);
