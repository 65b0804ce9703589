-- Account lifecycle (contract §11): verified emails, email change, and one token mechanism
-- for every single-use link Rampart mails.
--
-- email_verified: whether the owner of the address proved it by a link. Accounts that
-- existed before this migration are NOT verified (nobody ever proved those addresses),
-- except the accounts made by `rampart admin create`: an operator typed those addresses
-- on the server. They are recognisable by the audit event that command has always written
-- in the same transaction as the account (store::users::create_admin): action
-- `user.roles_changed`, the new user as both actor and target, details `"via":"cli"` and
-- `"created":true` (canonical JSON, keys sorted). No API route can write such an event:
-- the API's role changes have the caller as actor and nobody may change their own roles.
-- Accounts promoted with `--promote-existing` stay as they were (the command proved the
-- password, not the address). From now on `admin create` inserts verified accounts.
ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0
    CHECK (email_verified IN (0, 1));

UPDATE users SET email_verified = 1
WHERE EXISTS (
    SELECT 1 FROM audit_events a
    WHERE a.action = 'user.roles_changed'
      AND a.actor_id = users.id
      AND a.target_type = 'user'
      AND a.target_id = users.id
      AND a.details LIKE '%"created":true%'
      AND a.details LIKE '%"via":"cli"%'
);

-- One table of single-use mailed tokens (store::tokens): password reset, email
-- verification, email change. It is the former password_resets table (its rows are reset
-- tokens and keep working); its indexes (user_id, expires_at_ms, used_at_ms) come along.
-- Only the digest of a token is stored. `email` is the address the token is about: the
-- address a verification link was sent to (it verifies only while the account still has
-- it), the new address of an email change; NULL for resets. `session_id` is the session
-- that asked for an email change: the one session the confirmed change keeps.
ALTER TABLE password_resets RENAME TO user_tokens;
ALTER TABLE user_tokens ADD COLUMN purpose TEXT NOT NULL DEFAULT 'password_reset'
    CHECK (purpose IN ('password_reset', 'email_verify', 'email_change'));
ALTER TABLE user_tokens ADD COLUMN email TEXT;
ALTER TABLE user_tokens ADD COLUMN session_id TEXT;

CREATE INDEX user_tokens_user_id_purpose ON user_tokens (user_id, purpose);
