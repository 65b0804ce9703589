-- Credential-bound sessions and growing lockouts (contract §4).
--
-- credential_epoch: bumped (store::sessions::revoke_all_in) by every change that ends all of
-- a user's sessions: password change or reset, MFA enable, disable or reset, disable,
-- delete, logout-all. A session or an MFA challenge is live only while its epoch equals its
-- user's, so a login that checked the old credentials cannot yield a working token after
-- the change.
ALTER TABLE users ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mfa_challenges ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;

-- lock_streak: consecutive locks of the key (each lasts twice the previous, up to the
-- configured maximum); last_lock_until_ms: when the latest lock ended or ends. The streak
-- continues while a new lock starts less than 24 hours after the previous one ended.
-- failures becomes BIGINT so that it reads as an i64 on both backends.
ALTER TABLE lockouts
    ALTER COLUMN failures TYPE BIGINT,
    ADD COLUMN lock_streak BIGINT NOT NULL DEFAULT 0 CHECK (lock_streak >= 0),
    ADD COLUMN last_lock_until_ms BIGINT;
