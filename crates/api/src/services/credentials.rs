//! The credential step every use case shares (contract §4): lockout keys and attempt
//! reservation, the login password check, re-authentication of a signed-in user, the
//! second-factor challenge of a login, and `start_session` with its credential-epoch
//! check. `services::auth`, `services::mfa` and `services::password_reset` call down into
//! this module and never into each other.
//!
//! Invariants:
//! - Every password or code check is preceded by a reservation on the email's lockout keys
//!   (`rampart_store::lockout::reserve`); a refused reservation answers 429 with
//!   `Retry-After` and the hash or code is never checked. Each reserved attempt ends in
//!   exactly one outcome: `failed` (counted, may lock), `succeeded` (a completed login:
//!   resets the counter unless a lock is in force) or `release` (a right password that is
//!   not a completed login: the slot is given back).
//! - The counter is per normalised email whether or not an account exists, and an unknown
//!   email costs one password verification (against a dummy hash) like a known one.
//! - A session starts only at the credential epoch read together with the hash or in the
//!   challenge that was checked (`rampart_store::sessions::create` re-checks it under a
//!   lock), so a login racing a credential change never yields a working token.

use std::time::Duration;

use rampart_core::audit::Outcome;
use rampart_core::config::LockoutScope;
use rampart_core::passwords::Verification;
use rampart_core::tokens::{self, IssuedToken};
use rampart_core::users::{Credentials, User, UserStatus, normalize_email};
use rampart_core::{Error, Result};
use rampart_store::lockout::{self, LockoutPolicy};

use crate::telemetry;
use rampart_store::sessions::{self, NewRefreshToken, NewSession};
use rampart_store::{mfa, users};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::services::meta::RequestMeta;
use crate::state::AppState;

/// The window of every lockout counter whose length is not `RAMPART_LOCKOUT_SECONDS`: the
/// per-email ceiling below and the password-reset throttle (`services::password_reset`).
/// The purge (`crate::jobs`) keeps counter rows at least this long.
pub(crate) const FIXED_WINDOW_MS: i64 = 3_600_000;

/// NIST SP 800-63B §5.2.2: at most 100 consecutive failures per account; here per email
/// per hour across all client IPs, when the main counter is per email + IP.
const EMAIL_CEILING: LockoutPolicy = LockoutPolicy {
    max_failures: 100,
    window_ms: FIXED_WINDOW_MS,
    lock_ms: FIXED_WINDOW_MS,
    max_lock_ms: FIXED_WINDOW_MS,
};

/// How long the `mfaToken` of a login's password step lives.
pub const MFA_TOKEN_TTL: Duration = Duration::from_secs(300);

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn retry_after(retry_at_ms: i64, now_ms: i64) -> Error {
    let left_ms = (retry_at_ms - now_ms).max(0);
    let secs = ((left_ms + 999) / 1000).max(1);
    Error::RateLimited {
        retry_after_secs: u64::try_from(secs).unwrap_or(1),
    }
}

/// A new or refreshed login: what the response body and the refresh cookie carry.
pub struct LoginOutcome {
    pub user: User,
    pub access: IssuedToken,
    pub refresh_token: String,
    pub refresh_max_age_secs: i64,
}

/// The lockout counters one attempt for an email counts against.
pub(crate) struct Attempt {
    keys: Vec<(String, LockoutPolicy)>,
}

/// The counters of `normalized_email` (whatever was typed, account or not) under the
/// configured scope.
pub(crate) fn attempt_for(state: &AppState, normalized_email: &str, meta: &RequestMeta) -> Attempt {
    let config = &state.config;
    // Whatever was typed is the key, but a `|` in it must not forge an `email|ip` key.
    let escaped = normalized_email.replace('%', "%25").replace('|', "%7C");
    let policy = LockoutPolicy {
        max_failures: config.login_max_failures,
        window_ms: ms(config.lockout_seconds),
        lock_ms: ms(config.lockout_seconds),
        max_lock_ms: ms(config.lockout_max_seconds),
    };
    let keys = match config.lockout_scope {
        LockoutScope::Email => vec![(escaped, policy)],
        LockoutScope::EmailIp => vec![
            // A client is its IPv6 network (`RAMPART_IPV6_PREFIX`), as for every per-IP limit.
            (
                format!(
                    "{escaped}|{}",
                    rampart_core::net::client_key(meta.ip, config.ipv6_prefix)
                ),
                policy,
            ),
            (escaped, EMAIL_CEILING),
        ],
    };
    Attempt { keys }
}

impl Attempt {
    fn refs(&self) -> Vec<(&str, &LockoutPolicy)> {
        self.keys.iter().map(|(k, p)| (k.as_str(), p)).collect()
    }

    /// Counts this attempt on every key before anything is checked; 429 when any refuses.
    pub(crate) async fn reserve(&self, state: &AppState) -> Result<()> {
        let now_ms = state.clock.now_ms();
        match lockout::reserve(&state.db, &self.refs(), now_ms).await? {
            None => Ok(()),
            Some(retry_at) => {
                metrics::counter!(telemetry::RATE_LIMITED, "limit" => "lockout").increment(1);
                Err(retry_after(retry_at, now_ms))
            }
        }
    }

    /// The check failed: appends `failure_action` and locks the keys whose window is full.
    pub(crate) async fn failed(
        &self,
        state: &AppState,
        meta: &RequestMeta,
        actor: Option<Uuid>,
        failure_action: &str,
    ) -> Result<()> {
        let mut failure = meta.event(failure_action, Outcome::Failure);
        let mut locked = meta.event("auth.lockout", Outcome::Failure);
        if let Some(actor) = actor {
            failure = failure
                .with_actor(actor)
                .with_target("user", actor.to_string());
            locked = locked
                .with_actor(actor)
                .with_target("user", actor.to_string());
        }
        let locked_until = lockout::record_failure(
            &state.db,
            &self.refs(),
            state.clock.now_ms(),
            Some(&failure),
            &locked,
        )
        .await?;
        if locked_until.is_some() {
            metrics::counter!(telemetry::LOCKOUTS).increment(1);
        }
        Ok(())
    }

    /// The check passed but completed no login: gives the reserved slot back.
    pub(crate) async fn release(&self, state: &AppState) -> Result<()> {
        let keys: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        lockout::release(&state.db, &keys).await
    }

    /// The counter a completed login resets (the ceiling only decays with time).
    fn primary(&self) -> Option<&str> {
        self.keys.first().map(|(k, _)| k.as_str())
    }
}

/// The password step of a login: reserves the attempt, checks `password` against the
/// account of `email` (or a dummy hash), counts a failure, and upgrades an outdated hash.
/// The credentials come back only for an active, non-deleted account whose password
/// matched; everything else is `InvalidCredentials`, after the same work.
pub(crate) async fn check_password(
    state: &AppState,
    meta: &RequestMeta,
    email: &str,
    password: String,
) -> Result<(Attempt, Credentials)> {
    let normalized = normalize_email(email);
    // Shed load is refused before anything is written: reserving and releasing an attempt
    // costs two write transactions, which made a 503 take hundreds of milliseconds under
    // a flood (docs/benchmarks.md). The place taken here is the one the check uses below,
    // so an admitted login is not refused for capacity after its writes.
    let admission = state.hashes.admit()?;
    let attempt = attempt_for(state, &normalized, meta);
    attempt.reserve(state).await?;
    // Read before the check: a session is only ever made at this epoch.
    let credentials = users::find_credentials(&state.db, &normalized).await?;
    let stored_hash = credentials
        .as_ref()
        .map(|c| c.password_hash.expose().clone());
    let verification = match state
        .hashes
        .verify_admitted(admission, password.clone(), stored_hash)
        .await
    {
        Ok(verification) => verification,
        Err(e) => {
            // Never checked (it waited past the bound for a thread, 503): the slot goes
            // back, so shed load cannot fill a victim's window without a single guess
            // being tried.
            attempt.release(state).await?;
            return Err(e);
        }
    };
    let usable = credentials
        .as_ref()
        .filter(|c| !c.deleted && c.status == UserStatus::Active);
    let (credentials, needs_rehash) = match (usable, verification) {
        (Some(c), Verification::Valid { needs_rehash }) => (c.clone(), needs_rehash),
        _ => {
            let actor = credentials.as_ref().map(|c| c.user_id);
            attempt
                .failed(state, meta, actor, "auth.login_failed")
                .await?;
            return Err(Error::InvalidCredentials);
        }
    };
    if needs_rehash {
        // Outdated parameters or an imported bcrypt hash: upgrade now that we know the
        // password (compare-and-set, and the epoch stays). A failure must not fail the login.
        match state.hashes.hash(password).await {
            Ok(hash) => {
                if let Err(e) = users::set_password_hash(
                    &state.db,
                    credentials.user_id,
                    credentials.password_hash.expose(),
                    &hash,
                )
                .await
                {
                    tracing::warn!(error = %e, "password rehash not stored");
                }
            }
            Err(e) => tracing::warn!(error = %e, "password rehash skipped"),
        }
    }
    Ok((attempt, credentials))
}

/// A signed-in user who re-entered the password, checked under a reserved attempt.
pub(crate) struct Reauthenticated {
    /// Read through the caller's live session before the check.
    pub credentials: Credentials,
    /// The caller ends it: `failed` for a wrong second factor, else `release`.
    pub attempt: Attempt,
}

/// Re-asks `user` for the password (`/auth/password`, `/auth/mfa/totp/*`): reserves an
/// attempt on the user's email (429 while locked), reads the credentials through the
/// caller's live session (401 once it has ended), and checks `password` against them.
/// A wrong password is counted as `failure_action` and answers 403
/// `reauthentication_failed`.
pub(crate) async fn reauthenticate(
    state: &AppState,
    meta: &RequestMeta,
    user: AuthUser,
    password: String,
    failure_action: &str,
) -> Result<Reauthenticated> {
    let account = users::get(&state.db, user.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let attempt = attempt_for(state, &normalize_email(&account.email), meta);
    attempt.reserve(state).await?;
    let Some(credentials) = users::credentials_for_session(
        &state.db,
        user.user_id,
        user.session_id,
        state.clock.now_ms(),
    )
    .await?
    else {
        attempt.release(state).await?;
        return Err(Error::Unauthenticated);
    };
    let verification = match state
        .hashes
        .verify(password, Some(credentials.password_hash.expose().clone()))
        .await
    {
        Ok(verification) => verification,
        Err(e) => {
            // Never checked: give the slot back (see `check_password`).
            attempt.release(state).await?;
            return Err(e);
        }
    };
    if !verification.is_valid() {
        attempt
            .failed(state, meta, Some(user.user_id), failure_action)
            .await?;
        return Err(Error::ReauthenticationFailed);
    }
    Ok(Reauthenticated {
        credentials,
        attempt,
    })
}

/// The password step of an MFA login: a single-use token for the second step, bound to
/// the credential epoch the password was checked under.
pub(crate) async fn issue_mfa_challenge(
    state: &AppState,
    credentials: &Credentials,
) -> Result<(String, u64)> {
    let token = tokens::random_token()?;
    let now_ms = state.clock.now_ms();
    mfa::create_challenge(
        &state.db,
        Uuid::now_v7(),
        credentials.user_id,
        credentials.credential_epoch,
        &tokens::hash_token(&token),
        now_ms,
        now_ms.saturating_add(ms(MFA_TOKEN_TTL)),
    )
    .await?;
    Ok((token, MFA_TOKEN_TTL.as_secs()))
}

/// Completes a login: a session at `credential_epoch` (the epoch read before the password
/// or code was checked), its first refresh token and access token. The attempt's counter
/// resets in the same transaction. 401 `invalid_credentials`, with nothing written, when
/// the user's credentials changed (or the user was disabled or deleted) since that read;
/// 403 `email_unverified`, with nothing written, when `RAMPART_REQUIRE_VERIFIED_EMAIL` is
/// on and the account's email is not verified.
pub(crate) async fn start_session(
    state: &AppState,
    meta: &RequestMeta,
    user_id: Uuid,
    credential_epoch: i64,
    attempt: &Attempt,
) -> Result<LoginOutcome> {
    let started = start_session_with(
        state,
        meta,
        user_id,
        credential_epoch,
        attempt.primary(),
        None,
    )
    .await;
    if let Err(Error::EmailUnverified) = started {
        // The slot goes back: a right password is not a failure, nor a completed login.
        attempt.release(state).await?;
    }
    started
}

/// [`start_session`] for any sign-in method: `passkey` (a passkey sign-in's counter update,
/// applied in the session's transaction and recorded on the session) or a password login;
/// `clear_lockout_key` is the counter a completed login resets, if any. The audit event says
/// which (`details.method`).
pub(crate) async fn start_session_with(
    state: &AppState,
    meta: &RequestMeta,
    user_id: Uuid,
    credential_epoch: i64,
    clear_lockout_key: Option<&str>,
    passkey: Option<&rampart_store::passkeys::PasskeyUse>,
) -> Result<LoginOutcome> {
    let now = state.clock.now();
    let now_ms = state.clock.now_ms();
    let session_id = Uuid::now_v7();
    let session_end = now_ms.saturating_add(ms(state.config.session_max_age));
    let (refresh_token, refresh_hash) = tokens::new_refresh_token()?;
    let refresh_expires = now_ms
        .saturating_add(ms(state.config.refresh_token_ttl))
        .min(session_end);
    if state.config.require_verified_email {
        // Contract §11: only after the password (and second factor) were right, so the
        // answer reveals nothing more than a successful login would; no tokens
        // (`start_session` gives the lockout slot back).
        let verified = users::get(&state.db, user_id)
            .await?
            .is_some_and(|user| user.email_verified);
        if !verified {
            return Err(Error::EmailUnverified);
        }
    }
    let method = if passkey.is_some() {
        "passkey"
    } else {
        "password"
    };
    let event = meta
        .event("auth.login_succeeded", Outcome::Success)
        .with_actor(user_id)
        .with_target("session", session_id.to_string())
        .with_details(serde_json::json!({ "method": method }));
    let new_session = NewSession {
        id: session_id,
        user_id,
        credential_epoch,
        now_ms,
        expires_at_ms: session_end,
        ip_address: Some(meta.ip.to_string()),
        user_agent: meta.user_agent.clone(),
    };
    let refresh = NewRefreshToken {
        id: Uuid::now_v7(),
        token_hash: refresh_hash,
        expires_at_ms: refresh_expires,
    };
    let created = match passkey {
        Some(update) => {
            sessions::create_with_passkey(
                &state.db,
                &new_session,
                &refresh,
                clear_lockout_key,
                &event,
                update,
            )
            .await?
        }
        None => {
            sessions::create(&state.db, &new_session, &refresh, clear_lockout_key, &event).await?
        }
    };
    created.ok_or(Error::InvalidCredentials)?;
    let access = state.tokens.issue(user_id, session_id, now)?;
    let user = users::get(&state.db, user_id)
        .await?
        .ok_or(Error::InvalidCredentials)?;
    Ok(LoginOutcome {
        user,
        access,
        refresh_token,
        refresh_max_age_secs: (refresh_expires - now_ms) / 1000,
    })
}
