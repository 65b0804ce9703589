-- Passkeys (WebAuthn, contract §10).
--
-- webauthn_user_handles: the random user handle a user's passkeys carry (never the email or
-- the id), made at the user's first registration start.
CREATE TABLE webauthn_user_handles (
    user_id     TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    user_handle TEXT NOT NULL UNIQUE
) STRICT;

-- webauthn_challenges: a ceremony in progress (registration of user_id, or a discoverable
-- login when user_id is NULL): the library's serialised state, single use (taken by one
-- DELETE … RETURNING), until expires_at_ms.
CREATE TABLE webauthn_challenges (
    id            TEXT    PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind IN ('register', 'login')),
    user_id       TEXT    REFERENCES users (id) ON DELETE CASCADE,
    state         TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
) STRICT;

CREATE INDEX webauthn_challenges_expires ON webauthn_challenges (expires_at_ms);

-- passkeys: credential_id (base64url) is unique across all users; credential is the
-- library's serialised credential (public key, counter, flags); sign_count mirrors its
-- counter for compare-and-set.
CREATE TABLE passkeys (
    id              TEXT    PRIMARY KEY,
    user_id         TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id   TEXT    NOT NULL UNIQUE,
    name            TEXT    NOT NULL,
    credential      TEXT    NOT NULL,
    sign_count      INTEGER NOT NULL CHECK (sign_count >= 0),
    backup_eligible INTEGER NOT NULL CHECK (backup_eligible IN (0, 1)),
    backed_up       INTEGER NOT NULL CHECK (backed_up IN (0, 1)),
    transports      TEXT    NOT NULL,
    aaguid          TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    last_used_at_ms INTEGER
) STRICT;

CREATE INDEX passkeys_user_id ON passkeys (user_id);

-- The passkey a session logged in with: removing the passkey ends the session.
ALTER TABLE sessions ADD COLUMN passkey_id TEXT;
CREATE INDEX sessions_passkey_id ON sessions (passkey_id);
