//! Second factor and account recovery (contract §4): TOTP (RFC 6238) with encrypted
//! secrets, single-use recovery codes, the login `mfaToken`, and password reset by email.
//!
//! Invariants:
//! - A TOTP secret is only ever stored sealed (XChaCha20-Poly1305 under the data key, bound
//!   to its row), and a code is accepted at most once: the store advances the user's last
//!   accepted step atomically (RFC 6238 §5.2).
//! - An `mfaToken` is single-use, lives 5 minutes, belongs to one user's password step and
//!   dies after 5 wrong codes; wrong codes count as failed logins for the lockout.
//! - A reset request answers the same, at once, whatever the email: the lookup, the token
//!   and the mail happen after the response, outside any transaction. Only the newest token
//!   of a user works, once, for `RAMPART_PASSWORD_RESET_TTL`; a weak new password does not
//!   use it up; completing a reset ends every session and clears the email's lockout, and
//!   never removes MFA.

use std::time::Duration;

use rampart_core::audit::Outcome;
use rampart_core::crypto::Place;
use rampart_core::passwords::Verification;
use rampart_core::totp;
use rampart_core::users::{Email, normalize_email};
use rampart_core::{Error, Result, tokens};
use rampart_store::lockout::{self, LockoutPolicy};
use rampart_store::mail::Message;
use rampart_store::{mfa, resets, users};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::auth::AuthUser;
use crate::services::auth::{FIXED_WINDOW_MS, LoginOutcome, lockout_keys, start_session};
use crate::services::meta::RequestMeta;
use crate::state::AppState;

pub const MFA_TOKEN_TTL: Duration = Duration::from_secs(300);
pub const MFA_MAX_FAILURES: i64 = 5;

fn secret_place(user_id: &str) -> Place<'_> {
    Place {
        table: "users",
        column: "totp_secret",
        row_id: user_id,
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub struct MfaSetup {
    pub secret: String,
    pub otpauth_uri: String,
}

pub async fn setup(state: &AppState, user: AuthUser) -> Result<MfaSetup> {
    let account = users::get(&state.db, user.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    if account.mfa_enabled {
        return Err(Error::Conflict("MFA is already enabled".into()));
    }
    let secret = Zeroizing::new(totp::generate_secret()?);
    let id = user.user_id.to_string();
    let sealed = state.data_keys.encrypt(&secret, &secret_place(&id))?;
    mfa::set_pending_secret(&state.db, user.user_id, &sealed, state.clock.now_ms()).await?;
    Ok(MfaSetup {
        secret: totp::encode_secret(&secret),
        otpauth_uri: totp::otpauth_uri(&secret, &state.config.jwt_issuer, &account.email),
    })
}

pub async fn enable(
    state: &AppState,
    meta: &RequestMeta,
    user: AuthUser,
    code: &str,
) -> Result<Vec<String>> {
    let id = user.user_id.to_string();
    let sealed = mfa::pending_secret(&state.db, user.user_id)
        .await?
        .ok_or_else(|| Error::validation("code", "start with /mfa/totp/setup first"))?;
    let secret = state.data_keys.decrypt(&sealed, &secret_place(&id))?;
    let now = state.clock.now().unix_timestamp();
    let step = totp::verify(&secret, code, now, None)
        .ok_or_else(|| Error::validation("code", "is not the current code"))?;
    let codes = totp::generate_recovery_codes()?;
    let hashes: Vec<String> = codes
        .iter()
        .filter_map(|c| totp::normalize_recovery_code(c))
        .filter_map(|c| recovery_digests(state, user.user_id, &c).into_iter().next())
        .collect();
    let event = meta
        .event("auth.mfa_enabled", Outcome::Success)
        .with_actor(user.user_id)
        .with_target("user", id.clone());
    let ended = mfa::enable(
        &state.db,
        user.user_id,
        &sealed,
        step,
        &hashes,
        user.session_id,
        state.clock.now_ms(),
        &event,
    )
    .await?;
    state.sessions_ended(&ended);
    Ok(codes)
}

/// Recovery codes have 50 bits: they are stored as keyed digests bound to their user, so a
/// copy of the database alone does not let anyone test guesses offline.
fn recovery_digests(state: &AppState, user_id: Uuid, normalized: &str) -> Vec<String> {
    let message = format!("{user_id}\0{normalized}");
    state.data_keys.digests("recovery-code", message.as_bytes())
}

/// Checks a TOTP or recovery code for `user_id`, consuming it on success.
async fn check_code(state: &AppState, user_id: Uuid, code: &str) -> Result<bool> {
    let trimmed = code.trim();
    if trimmed.len() == totp::DIGITS && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let Some((sealed, last_step)) = mfa::totp_state(&state.db, user_id).await? else {
            return Ok(false);
        };
        let id = user_id.to_string();
        // A seal that does not open here (moved from another row, tampered, or under a
        // retired key) is a refused code, and a loud log line, never a 500 to the client.
        let secret = match state.data_keys.decrypt(&sealed, &secret_place(&id)) {
            Ok(secret) => secret,
            Err(e) => {
                tracing::error!(error = %e, user = %user_id, "TOTP secret does not decrypt");
                return Ok(false);
            }
        };
        let now = state.clock.now().unix_timestamp();
        return match totp::verify(&secret, trimmed, now, last_step) {
            Some(step) => mfa::accept_step(&state.db, user_id, step).await,
            None => Ok(false),
        };
    }
    match totp::normalize_recovery_code(code) {
        Some(normalized) => {
            // Made under the active key or, during a rotation, an old one.
            for digest in recovery_digests(state, user_id, &normalized) {
                if mfa::use_recovery_code(&state.db, user_id, &digest, state.clock.now_ms()).await?
                {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        None => Ok(false),
    }
}

pub async fn disable(
    state: &AppState,
    meta: &RequestMeta,
    user: AuthUser,
    password: String,
    code: &str,
) -> Result<()> {
    let account = users::get(&state.db, user.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let normalized = normalize_email(&account.email);
    let keys = lockout_keys(state, &normalized, meta);
    keys.check(state, state.clock.now_ms()).await?;
    let credentials = users::find_credentials(&state.db, &normalized)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let password_ok = matches!(
        state
            .hashes
            .verify(password, Some(credentials.password_hash.expose().clone()))
            .await?,
        Verification::Valid { .. }
    );
    let code_ok =
        password_ok && account.mfa_enabled && check_code(state, user.user_id, code).await?;
    if !(password_ok && code_ok) {
        keys.record_failure(
            state,
            meta,
            Some(user.user_id),
            "auth.mfa_failed",
            state.clock.now_ms(),
        )
        .await?;
        return Err(Error::ReauthenticationFailed);
    }
    let event = meta
        .event("auth.mfa_disabled", Outcome::Success)
        .with_actor(user.user_id)
        .with_target("user", user.user_id.to_string());
    let ended = mfa::disable(
        &state.db,
        user.user_id,
        user.session_id,
        state.clock.now_ms(),
        &event,
    )
    .await?;
    state.sessions_ended(&ended);
    Ok(())
}

/// The password step of an MFA login: a single-use token for the second step.
pub async fn issue_challenge(state: &AppState, user_id: Uuid) -> Result<(String, u64)> {
    let token = tokens::random_token()?;
    let now_ms = state.clock.now_ms();
    mfa::create_challenge(
        &state.db,
        Uuid::now_v7(),
        user_id,
        &tokens::hash_token(&token),
        now_ms,
        now_ms.saturating_add(ms(MFA_TOKEN_TTL)),
    )
    .await?;
    Ok((token, MFA_TOKEN_TTL.as_secs()))
}

pub async fn verify_login(
    state: &AppState,
    meta: &RequestMeta,
    mfa_token: &str,
    code: &str,
) -> Result<LoginOutcome> {
    let now_ms = state.clock.now_ms();
    let challenge = mfa::live_challenge(
        &state.db,
        &tokens::hash_token(mfa_token),
        now_ms,
        MFA_MAX_FAILURES,
    )
    .await?
    .ok_or(Error::Unauthenticated)?;
    let account = users::get(&state.db, challenge.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let normalized = normalize_email(&account.email);
    let keys = lockout_keys(state, &normalized, meta);
    keys.check(state, now_ms).await?;
    // The attempt is counted before the code is checked (one atomic increment), so
    // parallel guesses with one token cannot get past the limit; a right code consumes the
    // token anyway.
    let attempts = mfa::challenge_failed(&state.db, challenge.id).await?;
    if attempts > MFA_MAX_FAILURES {
        return Err(Error::Unauthenticated);
    }
    if !check_code(state, challenge.user_id, code).await? {
        keys.record_failure(
            state,
            meta,
            Some(challenge.user_id),
            "auth.mfa_failed",
            state.clock.now_ms(),
        )
        .await?;
        return Err(Error::InvalidCredentials);
    }
    if !mfa::consume_challenge(&state.db, challenge.id, state.clock.now_ms()).await? {
        return Err(Error::Unauthenticated);
    }
    start_session(state, meta, challenge.user_id, keys.primary()).await
}

/// `POST /password-reset/request`: everything after the response, so that the answer and
/// its timing never depend on the email.
pub fn request_reset(state: &AppState, meta: &RequestMeta, email: &str) {
    let state = state.clone();
    let meta = meta.clone();
    let email = email.to_owned();
    tokio::spawn(async move {
        if let Err(e) = send_reset(&state, &meta, &email).await {
            tracing::warn!(error = %e, "password reset request not completed");
        }
    });
}

async fn send_reset(state: &AppState, meta: &RequestMeta, email: &str) -> Result<()> {
    let normalized = normalize_email(email);
    let now_ms = state.clock.now_ms();
    // At most RAMPART_RESET_RATE_PER_HOUR messages per email per hour: one atomic counter
    // that locks at the first request over the limit (so concurrent requests cannot slip
    // through between a check and an increment).
    let throttle_key = format!("reset|{normalized}");
    let throttle = LockoutPolicy {
        max_failures: state.config.reset_rate_per_hour.saturating_add(1),
        window_ms: FIXED_WINDOW_MS,
        lock_ms: FIXED_WINDOW_MS,
    };
    let throttled = meta.event("auth.password_reset_throttled", Outcome::Denied);
    let over_limit = lockout::record_failure(
        &state.db,
        &throttle_key,
        now_ms,
        &throttle,
        None,
        &throttled,
    )
    .await?
    .is_some();
    if over_limit {
        return Ok(());
    }
    let Some(user) = users::find_by_email(&state.db, &normalized).await? else {
        let event = meta.event("auth.password_reset_requested", Outcome::Failure);
        rampart_store::audit::record(&state.db, &event, now_ms).await?;
        return Ok(());
    };
    if user.status != rampart_core::users::UserStatus::Active {
        return Ok(());
    }
    let token = tokens::random_token()?;
    let event = meta
        .event("auth.password_reset_requested", Outcome::Success)
        .with_actor(user.id)
        .with_target("user", user.id.to_string());
    resets::create(
        &state.db,
        Uuid::now_v7(),
        user.id,
        &tokens::hash_token(&token),
        now_ms,
        now_ms.saturating_add(ms(state.config.password_reset_ttl)),
        &event,
    )
    .await?;
    let link = format!(
        "{}/reset-password?token={token}",
        state.config.public_url.trim_end_matches('/')
    );
    let minutes = state.config.password_reset_ttl.as_secs() / 60;
    let message = Message {
        to: user.email.clone(),
        subject: "Reset your password".to_owned(),
        // CRLF line endings: mail is CRLF on the wire, and it keeps the body 8bit (the
        // link readable) rather than quoted-printable.
        text: format!(
            "Someone asked to reset the password of your account.\r\n\r\n\
             To choose a new password, open this link within {minutes} minutes:\r\n\r\n\
             {link}\r\n\r\n\
             If this was not you, ignore this message: your password stays as it is.\r\n"
        ),
    };
    // Sent after the transaction committed; a failure is logged, never shown to the client.
    state.mailer.send(&message).await.map_err(Error::Internal)
}

pub async fn confirm_reset(
    state: &AppState,
    meta: &RequestMeta,
    token: &str,
    new_password: String,
) -> Result<()> {
    let invalid = || Error::validation("token", "is invalid or expired");
    let hash = tokens::hash_token(token);
    let user_id = resets::peek(&state.db, &hash, state.clock.now_ms())
        .await?
        .ok_or_else(invalid)?;
    let user = users::get(&state.db, user_id).await?.ok_or_else(invalid)?;
    let email = Email::parse(&user.email, "email").ok();
    state
        .password_policy
        .check(&new_password, email.as_ref(), "newPassword")
        .map_err(Error::Validation)?;
    let new_hash = state.hashes.hash(new_password).await?;
    let event = meta.event("auth.password_reset_completed", Outcome::Success);
    let (_, ended) = resets::confirm(&state.db, &hash, &new_hash, state.clock.now_ms(), &event)
        .await?
        .ok_or_else(invalid)?;
    state.sessions_ended(&ended);
    Ok(())
}
