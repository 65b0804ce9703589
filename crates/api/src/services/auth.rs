//! Registration, login, refresh-token rotation, logout, session management and password
//! change (contract §4).
//!
//! Invariants:
//! - An unknown email costs one password verification (against a dummy hash), like a known
//!   one, and answers exactly like a wrong password: `invalid_credentials`, same body.
//!   Disabled and deleted accounts answer the same way.
//! - Lockout is kept per normalised email whether or not an account exists (or per
//!   email + client IP with `RAMPART_LOCKOUT_SCOPE=email_ip`, plus a per-email ceiling of
//!   100 failures an hour). It blocks new logins only; existing sessions are untouched.
//! - Refresh tokens rotate on every use; a rotated token presented again ends its whole
//!   session (RFC 9700 §4.14.2); the store decides the winner of concurrent rotations.
//! - Ending sessions evicts them from this instance's liveness cache in the same request.

use std::time::Duration;

use rampart_core::audit::Outcome;
use rampart_core::tokens::{self, IssuedToken};
use rampart_core::users::{DisplayName, Email, User, normalize_email};
use rampart_core::{Error, FieldError, Result};
use rampart_store::lockout::{self, LockoutPolicy};
use rampart_store::sessions::{self, NewRefreshToken, NewSession, Rotation};
use rampart_store::users::{self, NewUser};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::services::meta::RequestMeta;
use crate::state::AppState;

/// A new or refreshed login: what the response body and the refresh cookie carry.
pub struct LoginOutcome {
    pub user: User,
    pub access: IssuedToken,
    pub refresh_token: String,
    pub refresh_max_age_secs: i64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn retry_after(until_ms: i64, now_ms: i64) -> Error {
    let left_ms = (until_ms - now_ms).max(0);
    let secs = ((left_ms + 999) / 1000).max(1);
    Error::RateLimited {
        retry_after_secs: u64::try_from(secs).unwrap_or(1),
    }
}

/// The lockout counters a failed attempt for `email` counts against.
pub(crate) struct LockoutKeys {
    keys: Vec<(String, LockoutPolicy)>,
}

/// The window of every lockout counter whose length is not `RAMPART_LOCKOUT_SECONDS`: the
/// per-email ceiling below and the password-reset throttle (`services::mfa`). The purge
/// (`crate::jobs`) keeps counter rows at least this long.
pub(crate) const FIXED_WINDOW_MS: i64 = 3_600_000;

/// NIST SP 800-63B §5.2.2: at most 100 consecutive failures per account; here per email
/// per hour across all client IPs, when the main counter is per email + IP.
const EMAIL_CEILING: LockoutPolicy = LockoutPolicy {
    max_failures: 100,
    window_ms: FIXED_WINDOW_MS,
    lock_ms: FIXED_WINDOW_MS,
};

pub(crate) fn lockout_keys(
    state: &AppState,
    normalized_email: &str,
    meta: &RequestMeta,
) -> LockoutKeys {
    let config = &state.config;
    // Whatever was typed is the key, but a `|` in it must not forge an `email|ip` key.
    let escaped = normalized_email.replace('%', "%25").replace('|', "%7C");
    let normalized_email = escaped.as_str();
    let policy = LockoutPolicy {
        max_failures: config.login_max_failures,
        window_ms: ms(config.lockout_seconds),
        lock_ms: ms(config.lockout_seconds),
    };
    let keys = match config.lockout_scope {
        rampart_core::config::LockoutScope::Email => vec![(normalized_email.to_owned(), policy)],
        rampart_core::config::LockoutScope::EmailIp => vec![
            (format!("{normalized_email}|{}", meta.ip), policy),
            (normalized_email.to_owned(), EMAIL_CEILING),
        ],
    };
    LockoutKeys { keys }
}

impl LockoutKeys {
    pub(crate) async fn check(&self, state: &AppState, now_ms: i64) -> Result<()> {
        for (key, _) in &self.keys {
            if let Some(until) = lockout::locked_until(&state.db, key, now_ms).await? {
                return Err(retry_after(until, now_ms));
            }
        }
        Ok(())
    }

    /// Counts one failure; `failure_event` is appended once, with the first counter.
    pub(crate) async fn record_failure(
        &self,
        state: &AppState,
        meta: &RequestMeta,
        actor: Option<Uuid>,
        failure_action: &str,
        now_ms: i64,
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
        for (i, (key, policy)) in self.keys.iter().enumerate() {
            let event = (i == 0).then_some(&failure);
            lockout::record_failure(&state.db, key, now_ms, policy, event, &locked).await?;
        }
        Ok(())
    }

    /// The counter a successful login resets (the ceiling only decays with time).
    pub(crate) fn primary(&self) -> Option<&str> {
        self.keys.first().map(|(k, _)| k.as_str())
    }
}

pub async fn register(
    state: &AppState,
    meta: &RequestMeta,
    email: &str,
    password: String,
    display_name: &str,
) -> Result<User> {
    let mut errors = Vec::new();
    let email = Email::parse(email, "email")
        .map_err(|e| errors.push(e))
        .ok();
    let display_name = DisplayName::parse(display_name, "displayName")
        .map_err(|e| errors.push(e))
        .ok();
    if let Err(mut policy) = state
        .password_policy
        .check(&password, email.as_ref(), "password")
    {
        errors.append(&mut policy);
    }
    let (Some(email), Some(display_name), true) = (email, display_name, errors.is_empty()) else {
        return Err(Error::Validation(errors));
    };
    let hash = state.hashes.hash(password).await?;
    let id = Uuid::now_v7();
    let event = meta
        .event("auth.register", Outcome::Success)
        .with_actor(id)
        .with_target("user", id.to_string());
    users::create(
        &state.db,
        &NewUser {
            id,
            email: &email,
            display_name: &display_name,
            password_hash: &hash,
            now_ms: state.clock.now_ms(),
        },
        &event,
    )
    .await
}

/// What the password step of a login leads to.
pub enum LoginStep {
    /// Logged in.
    Complete(LoginOutcome),
    /// MFA is on: the second step needs this single-use token and a code.
    MfaRequired { mfa_token: String, expires_in: u64 },
}

pub async fn login(
    state: &AppState,
    meta: &RequestMeta,
    email: &str,
    password: String,
) -> Result<LoginStep> {
    let normalized = normalize_email(email);
    let keys = lockout_keys(state, &normalized, meta);
    keys.check(state, state.clock.now_ms()).await?;

    let credentials = users::find_credentials(&state.db, &normalized).await?;
    let stored_hash = credentials
        .as_ref()
        .map(|c| c.password_hash.expose().clone());
    let verification = state.hashes.verify(password.clone(), stored_hash).await?;
    let usable = credentials
        .as_ref()
        .filter(|c| !c.deleted && c.status == rampart_core::users::UserStatus::Active);
    let (credentials, needs_rehash) = match (usable, verification) {
        (Some(c), rampart_core::passwords::Verification::Valid { needs_rehash }) => {
            (c.clone(), needs_rehash)
        }
        _ => {
            let actor = credentials.as_ref().map(|c| c.user_id);
            keys.record_failure(
                state,
                meta,
                actor,
                "auth.login_failed",
                state.clock.now_ms(),
            )
            .await?;
            return Err(Error::InvalidCredentials);
        }
    };
    if needs_rehash {
        // Outdated parameters or an imported bcrypt hash: upgrade now that we know the
        // password. A failure here must not fail the login.
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
    if credentials.mfa_enabled {
        // The password step alone is not a successful login: the counter is not reset.
        let (mfa_token, expires_in) =
            crate::services::mfa::issue_challenge(state, credentials.user_id).await?;
        return Ok(LoginStep::MfaRequired {
            mfa_token,
            expires_in,
        });
    }
    start_session(state, meta, credentials.user_id, keys.primary())
        .await
        .map(LoginStep::Complete)
}

pub(crate) async fn start_session(
    state: &AppState,
    meta: &RequestMeta,
    user_id: Uuid,
    clear_lockout_key: Option<&str>,
) -> Result<LoginOutcome> {
    let now = state.clock.now();
    let now_ms = state.clock.now_ms();
    let session_id = Uuid::now_v7();
    let session_end = now_ms.saturating_add(ms(state.config.session_max_age));
    let (refresh_token, refresh_hash) = tokens::new_refresh_token()?;
    let refresh_expires = now_ms
        .saturating_add(ms(state.config.refresh_token_ttl))
        .min(session_end);
    let event = meta
        .event("auth.login_succeeded", Outcome::Success)
        .with_actor(user_id)
        .with_target("session", session_id.to_string());
    sessions::create(
        &state.db,
        &NewSession {
            id: session_id,
            user_id,
            now_ms,
            expires_at_ms: session_end,
            ip_address: Some(meta.ip.to_string()),
            user_agent: meta.user_agent.clone(),
        },
        &NewRefreshToken {
            id: Uuid::now_v7(),
            token_hash: refresh_hash,
            expires_at_ms: refresh_expires,
        },
        clear_lockout_key,
        &event,
    )
    .await?;
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

pub async fn refresh(
    state: &AppState,
    meta: &RequestMeta,
    presented: &str,
) -> Result<LoginOutcome> {
    let now = state.clock.now();
    let now_ms = state.clock.now_ms();
    let (next_token, next_hash) = tokens::new_refresh_token()?;
    let next = NewRefreshToken {
        id: Uuid::now_v7(),
        token_hash: next_hash,
        expires_at_ms: now_ms.saturating_add(ms(state.config.refresh_token_ttl)),
    };
    let reuse = meta.event("auth.refresh_reuse_detected", Outcome::Denied);
    let rotation = sessions::rotate(
        &state.db,
        &tokens::hash_token(presented),
        &next,
        now_ms,
        &reuse,
    )
    .await?;
    match rotation {
        Rotation::Rotated {
            session,
            refresh_expires_at_ms,
        } => {
            let user = users::get(&state.db, session.user_id)
                .await?
                .ok_or(Error::Unauthenticated)?;
            let access = state.tokens.issue(session.user_id, session.id, now)?;
            Ok(LoginOutcome {
                user,
                access,
                refresh_token: next_token,
                refresh_max_age_secs: (refresh_expires_at_ms - now_ms) / 1000,
            })
        }
        Rotation::Reused { session_id, .. } => {
            state.sessions_ended([&session_id]);
            Err(Error::Unauthenticated)
        }
        Rotation::Invalid => Err(Error::Unauthenticated),
    }
}

/// Ends the session of an access token.
pub async fn logout(state: &AppState, meta: &RequestMeta, user: AuthUser) -> Result<()> {
    let event = meta
        .event("auth.logout", Outcome::Success)
        .with_actor(user.user_id)
        .with_target("session", user.session_id.to_string());
    sessions::revoke(
        &state.db,
        user.session_id,
        user.user_id,
        "logout",
        state.clock.now_ms(),
        Some(&event),
    )
    .await?;
    state.sessions_ended([&user.session_id]);
    Ok(())
}

/// Ends the session a refresh cookie belongs to.
pub async fn logout_by_refresh(
    state: &AppState,
    meta: &RequestMeta,
    presented: &str,
) -> Result<()> {
    let now_ms = state.clock.now_ms();
    let session = sessions::find_live_by_refresh(&state.db, &tokens::hash_token(presented), now_ms)
        .await?
        .ok_or(Error::Unauthenticated)?;
    logout(
        state,
        meta,
        AuthUser {
            user_id: session.user_id,
            session_id: session.id,
        },
    )
    .await
}

pub async fn logout_all(state: &AppState, meta: &RequestMeta, user: AuthUser) -> Result<()> {
    let event = meta
        .event("auth.logout_all", Outcome::Success)
        .with_actor(user.user_id)
        .with_target("user", user.user_id.to_string());
    let ended = sessions::revoke_all(
        &state.db,
        user.user_id,
        None,
        "logout_all",
        state.clock.now_ms(),
        Some(&event),
    )
    .await?;
    state.sessions_ended(&ended);
    Ok(())
}

/// `DELETE /sessions/{id}`: only the caller's own live sessions; anything else is 404.
pub async fn end_session(
    state: &AppState,
    meta: &RequestMeta,
    user: AuthUser,
    session_id: Uuid,
) -> Result<()> {
    let event = meta
        .event("auth.session_revoked", Outcome::Success)
        .with_actor(user.user_id)
        .with_target("session", session_id.to_string());
    let ended = sessions::revoke(
        &state.db,
        session_id,
        user.user_id,
        "revoked_by_user",
        state.clock.now_ms(),
        Some(&event),
    )
    .await?;
    if !ended {
        return Err(Error::NotFound);
    }
    state.sessions_ended([&session_id]);
    Ok(())
}

pub async fn change_password(
    state: &AppState,
    meta: &RequestMeta,
    user: AuthUser,
    current: String,
    new: String,
) -> Result<()> {
    let account = users::get(&state.db, user.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let email = Email::parse(&account.email, "email").map_err(|_| {
        Error::internal(anyhow::anyhow!(
            "stored email of {} does not parse",
            user.user_id
        ))
    })?;
    let keys = lockout_keys(state, email.normalized(), meta);
    keys.check(state, state.clock.now_ms()).await?;
    state
        .password_policy
        .check(&new, Some(&email), "newPassword")
        .map_err(Error::Validation)?;
    let credentials = users::find_credentials(&state.db, email.normalized())
        .await?
        .ok_or(Error::Unauthenticated)?;
    let verification = state
        .hashes
        .verify(current, Some(credentials.password_hash.expose().clone()))
        .await?;
    if !matches!(
        verification,
        rampart_core::passwords::Verification::Valid { .. }
    ) {
        keys.record_failure(
            state,
            meta,
            Some(user.user_id),
            "auth.password_change_failed",
            state.clock.now_ms(),
        )
        .await?;
        return Err(Error::ReauthenticationFailed);
    }
    let hash = state.hashes.hash(new).await?;
    let event = meta
        .event("auth.password_changed", Outcome::Success)
        .with_actor(user.user_id)
        .with_target("user", user.user_id.to_string());
    let ended =
        users::change_password(&state.db, user.user_id, &hash, state.clock.now_ms(), &event)
            .await?;
    state.sessions_ended(&ended);
    Ok(())
}

pub async fn update_display_name(
    state: &AppState,
    meta: &RequestMeta,
    user: AuthUser,
    display_name: &str,
) -> Result<User> {
    let name = DisplayName::parse(display_name, "displayName")
        .map_err(|e: FieldError| Error::Validation(vec![e]))?;
    let event = meta
        .event("user.updated", Outcome::Success)
        .with_actor(user.user_id)
        .with_target("user", user.user_id.to_string())
        .with_details(serde_json::json!({"fields": ["displayName"]}));
    users::update_display_name(&state.db, user.user_id, &name, state.clock.now_ms(), &event).await
}
