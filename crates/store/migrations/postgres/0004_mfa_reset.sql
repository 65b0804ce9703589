-- MFA (TOTP secrets, recovery codes, login challenges) and password resets. A TOTP secret
-- is stored only as the caller's AEAD ciphertext (an opaque string); codes and tokens only
-- as hashes. Instants are epoch milliseconds (BIGINT).

-- totp_pending: set by setup, moved to totp_secret when MFA is enabled. totp_last_step:
-- the last accepted RFC 6238 time step; a code for a step at or before it is refused.
ALTER TABLE users
    ADD COLUMN totp_secret    TEXT,
    ADD COLUMN totp_pending   TEXT,
    ADD COLUMN totp_last_step BIGINT;

-- Each code works once (used_at_ms set when it is used).
CREATE TABLE recovery_codes (
    id         UUID   PRIMARY KEY,
    user_id    UUID   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  TEXT   NOT NULL,
    used_at_ms BIGINT,
    UNIQUE (user_id, code_hash)
);

-- The second step of an MFA login (the mfaToken): works once, until expires_at_ms, and
-- while failures stays below the caller's maximum. failures is BIGINT so that it reads as
-- an i64 on both backends.
CREATE TABLE mfa_challenges (
    id            UUID   PRIMARY KEY,
    user_id       UUID   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash    TEXT   NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    failures      BIGINT NOT NULL DEFAULT 0 CHECK (failures >= 0),
    used_at_ms    BIGINT
);

CREATE INDEX mfa_challenges_user_id ON mfa_challenges (user_id);

-- Password-reset tokens: only the newest unused one of a user works (creating one marks
-- the earlier ones used), each once, until expires_at_ms.
CREATE TABLE password_resets (
    id            UUID   PRIMARY KEY,
    user_id       UUID   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash    TEXT   NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms    BIGINT
);

CREATE INDEX password_resets_user_id ON password_resets (user_id);
