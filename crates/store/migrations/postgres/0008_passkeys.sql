-- Passkeys (WebAuthn, contract §10).
--
-- webauthn_user_handles: the random user handle a user's passkeys carry (never the email or
-- the id), made at the user's first registration start.
CREATE TABLE webauthn_user_handles (
    user_id     UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    user_handle TEXT NOT NULL UNIQUE
);

-- webauthn_challenges: a ceremony in progress (registration of user_id, or a discoverable
-- login when user_id is NULL): the library's serialised state, single use (taken by one
-- DELETE … RETURNING), until expires_at_ms.
CREATE TABLE webauthn_challenges (
    id            UUID    PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind IN ('register', 'login')),
    user_id       UUID    REFERENCES users (id) ON DELETE CASCADE,
    state         TEXT    NOT NULL,
    created_at_ms BIGINT  NOT NULL,
    expires_at_ms BIGINT  NOT NULL
);

CREATE INDEX webauthn_challenges_expires ON webauthn_challenges (expires_at_ms);

-- passkeys: credential_id (base64url) is unique across all users; credential is the
-- library's serialised credential (public key, counter, flags); sign_count mirrors its
-- counter for compare-and-set.
CREATE TABLE passkeys (
    id              UUID    PRIMARY KEY,
    user_id         UUID    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id   TEXT    NOT NULL UNIQUE,
    name            TEXT    NOT NULL,
    credential      TEXT    NOT NULL,
    sign_count      BIGINT  NOT NULL CHECK (sign_count >= 0),
    backup_eligible BOOLEAN NOT NULL,
    backed_up       BOOLEAN NOT NULL,
    transports      TEXT    NOT NULL,
    aaguid          TEXT    NOT NULL,
    created_at_ms   BIGINT  NOT NULL,
    last_used_at_ms BIGINT
);

CREATE INDEX passkeys_user_id ON passkeys (user_id);

-- The passkey a session logged in with: removing the passkey ends the session.
ALTER TABLE sessions ADD COLUMN passkey_id UUID;
CREATE INDEX sessions_passkey_id ON sessions (passkey_id);
