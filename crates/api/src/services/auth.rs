//! Registration, login, refresh-token rotation, logout, session management and password
//! change (contract §4).
//!
//! Invariants:
//! - An unknown email costs one password verification (against a dummy hash), like a known
//!   one, and answers exactly like a wrong password: `invalid_credentials`, same body.
//!   Disabled and deleted accounts answer the same way.
//! - Lockout is kept per normalised email whether or not an account exists (or per
//!   email + client IP with `RAMPART_LOCKOUT_SCOPE=email_ip`, plus a per-email ceiling of
//!   100 attempts an hour), reserved before the password is checked
//!   (`services::credentials`). It blocks new logins only; existing sessions are untouched.
//! - A login's session is made at the credential epoch read with the hash it checked; a
//!   password change is compare-and-set on the verified hash and moves the epoch on, so no
//!   token of a request that checked the old password works once the change is answered.
//! - Refresh tokens rotate on every use; a rotated token presented again ends its whole
//!   session (RFC 9700 §4.14.2); the store decides the winner of concurrent rotations.
//! - Ending sessions evicts them from this instance's liveness cache in the same request.

use rampart_core::audit::Outcome;
use rampart_core::tokens;
use rampart_core::users::{DisplayName, Email, User};
use rampart_core::{Error, FieldError, Result};
use rampart_store::sessions::{self, NewRefreshToken, Rotation};
use rampart_store::users::{self, NewUser};
use uuid::Uuid;

use crate::auth::AuthUser;
pub use crate::services::credentials::LoginOutcome;
use crate::services::credentials::{self, ms};
use crate::services::meta::RequestMeta;
use crate::state::AppState;
use crate::telemetry;

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
    let user = users::create(
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
    .await?;
    // After the commit, in the background: a failed send never fails the registration.
    crate::services::lifecycle::mail_verification_later(state, &user);
    Ok(user)
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
    let step = password_login(state, meta, email, password).await;
    telemetry::login(telemetry::LOGIN_PASSWORD, &step, |s| {
        matches!(s, LoginStep::MfaRequired { .. })
    });
    step
}

async fn password_login(
    state: &AppState,
    meta: &RequestMeta,
    email: &str,
    password: String,
) -> Result<LoginStep> {
    let (attempt, credentials) = credentials::check_password(state, meta, email, password).await?;
    if credentials.mfa_enabled {
        // The password step alone is not a successful login: the counter is not reset,
        // but a right password gives its slot back.
        attempt.release(state).await?;
        let (mfa_token, expires_in) = credentials::issue_mfa_challenge(state, &credentials).await?;
        return Ok(LoginStep::MfaRequired {
            mfa_token,
            expires_in,
        });
    }
    credentials::start_session(
        state,
        meta,
        credentials.user_id,
        credentials.credential_epoch,
        &attempt,
    )
    .await
    .map(LoginStep::Complete)
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
            metrics::counter!(telemetry::REFRESH_REUSE).increment(1);
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

/// `POST /password`: re-authentication, then a compare-and-set on the verified hash, so of
/// concurrent changes with the same current password exactly one wins (contract §4).
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
    state
        .password_policy
        .check(&new, Some(&email), "newPassword")
        .map_err(Error::Validation)?;
    let reauthenticated =
        credentials::reauthenticate(state, meta, user, current, "auth.password_change_failed")
            .await?;
    // The current password was right: its slot goes back whatever happens next.
    reauthenticated.attempt.release(state).await?;
    let hash = state.hashes.hash(new).await?;
    let event = meta
        .event("auth.password_changed", Outcome::Success)
        .with_actor(user.user_id)
        .with_target("user", user.user_id.to_string());
    let changed = users::change_password(
        &state.db,
        user.user_id,
        reauthenticated.credentials.password_hash.expose(),
        &hash,
        state.clock.now_ms(),
        &event,
    )
    .await;
    match changed {
        Ok(ended) => {
            state.sessions_ended(&ended);
            Ok(())
        }
        // A concurrent change won: 401 if it already ended this session, else 403.
        Err(Error::ReauthenticationFailed) => {
            let live =
                sessions::live_user(&state.db, user.session_id, state.clock.now_ms()).await?;
            Err(match live {
                Some(_) => Error::ReauthenticationFailed,
                None => Error::Unauthenticated,
            })
        }
        Err(e) => Err(e),
    }
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
