//! Second factor (contract §4): TOTP (RFC 6238) with encrypted secrets, single-use
//! recovery codes, and the second step of a login (`/mfa/verify`). The credential step it
//! shares with login lives in `services::credentials`.
//!
//! Invariants:
//! - A TOTP secret is only ever stored sealed (XChaCha20-Poly1305 under the data key, bound
//!   to its row), and a code is accepted at most once: the store advances the user's last
//!   accepted step atomically (RFC 6238 §5.2).
//! - An `mfaToken` is single-use, lives 5 minutes, belongs to one user's password step,
//!   dies after 5 wrong codes and with any credential change (its epoch); each code is an
//!   attempt reserved on the email's lockout counter before it is checked, so parallel
//!   guesses across several tokens of one email are limited like passwords. A right code
//!   and its token are used up in one transaction: of concurrent verifications one
//!   completes, and a loser spends neither its code nor its token.
//! - Enabling needs the password as well as a code; enabling and disabling are
//!   compare-and-set on the credential epoch the password was checked under, and end every
//!   other session.

use rampart_core::audit::Outcome;
use rampart_core::crypto::Place;
use rampart_core::totp;
use rampart_core::users::normalize_email;
use rampart_core::{Error, Result, tokens};
use rampart_store::{mfa, users};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::auth::AuthUser;
use crate::services::credentials::{self, LoginOutcome};
use crate::services::meta::RequestMeta;
use crate::state::AppState;
use crate::telemetry;

pub use crate::services::credentials::MFA_TOKEN_TTL;
pub const MFA_MAX_FAILURES: i64 = 5;

fn secret_place(user_id: &str) -> Place<'_> {
    Place {
        table: "users",
        column: "totp_secret",
        row_id: user_id,
    }
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

/// `POST /mfa/totp/enable`: the password first (a stolen access token alone cannot put an
/// attacker's second factor on the account), then the code of the pending secret.
pub async fn enable(
    state: &AppState,
    meta: &RequestMeta,
    user: AuthUser,
    password: String,
    code: &str,
) -> Result<Vec<String>> {
    let reauthenticated =
        credentials::reauthenticate(state, meta, user, password, "auth.mfa_failed").await?;
    reauthenticated.attempt.release(state).await?;
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
        reauthenticated.credentials.credential_epoch,
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

/// Recognises `code` as a TOTP code of `user_id` for a step not yet accepted, or as a
/// recovery code (the hashes it may be stored under); `None` when it cannot be either.
/// Reads only: the store uses the factor up, or refuses it.
async fn second_factor(
    state: &AppState,
    user_id: Uuid,
    code: &str,
) -> Result<Option<mfa::SecondFactor>> {
    let trimmed = code.trim();
    if trimmed.len() == totp::DIGITS && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let Some((sealed, last_step)) = mfa::totp_state(&state.db, user_id).await? else {
            return Ok(None);
        };
        let id = user_id.to_string();
        // A seal that does not open here (moved from another row, tampered, or under a
        // retired key) is a refused code, and a loud log line, never a 500 to the client.
        let secret = match state.data_keys.decrypt(&sealed, &secret_place(&id)) {
            Ok(secret) => secret,
            Err(e) => {
                tracing::error!(error = %e, user = %user_id, "TOTP secret does not decrypt");
                return Ok(None);
            }
        };
        let now = state.clock.now().unix_timestamp();
        return Ok(totp::verify(&secret, trimmed, now, last_step).map(mfa::SecondFactor::TotpStep));
    }
    // Made under the active key or, during a rotation, an old one.
    Ok(totp::normalize_recovery_code(code).map(|normalized| {
        mfa::SecondFactor::RecoveryCode(recovery_digests(state, user_id, &normalized))
    }))
}

/// Checks a TOTP or recovery code for `user_id`, consuming it on success.
async fn check_code(state: &AppState, user_id: Uuid, code: &str) -> Result<bool> {
    match second_factor(state, user_id, code).await? {
        Some(mfa::SecondFactor::TotpStep(step)) => mfa::accept_step(&state.db, user_id, step).await,
        Some(mfa::SecondFactor::RecoveryCode(hashes)) => {
            for hash in &hashes {
                if mfa::use_recovery_code(&state.db, user_id, hash, state.clock.now_ms()).await? {
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
    let reauthenticated =
        credentials::reauthenticate(state, meta, user, password, "auth.mfa_failed").await?;
    let code_ok =
        reauthenticated.credentials.mfa_enabled && check_code(state, user.user_id, code).await?;
    if !code_ok {
        reauthenticated
            .attempt
            .failed(state, meta, Some(user.user_id), "auth.mfa_failed")
            .await?;
        return Err(Error::ReauthenticationFailed);
    }
    reauthenticated.attempt.release(state).await?;
    let event = meta
        .event("auth.mfa_disabled", Outcome::Success)
        .with_actor(user.user_id)
        .with_target("user", user.user_id.to_string());
    let ended = mfa::disable(
        &state.db,
        user.user_id,
        reauthenticated.credentials.credential_epoch,
        user.session_id,
        state.clock.now_ms(),
        &event,
    )
    .await?;
    state.sessions_ended(&ended);
    Ok(())
}

/// `POST /mfa/verify`: the token first (401 `unauthenticated` when it is not live, also
/// after a credential change), then the lockout (429), then the code.
pub async fn verify_login(
    state: &AppState,
    meta: &RequestMeta,
    mfa_token: &str,
    code: &str,
) -> Result<LoginOutcome> {
    let outcome = second_step(state, meta, mfa_token, code).await;
    telemetry::login(telemetry::LOGIN_MFA, &outcome, |_| false);
    outcome
}

async fn second_step(
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
    // Reserved on the email, whichever of its tokens the guess comes with.
    let attempt = credentials::attempt_for(state, &normalize_email(&account.email), meta);
    attempt.reserve(state).await?;
    // And on the token (one atomic increment), so parallel guesses with one token cannot
    // get past its limit either; a right code consumes the token anyway.
    let attempts = mfa::challenge_failed(&state.db, challenge.id).await?;
    if attempts > MFA_MAX_FAILURES {
        attempt.release(state).await?;
        return Err(Error::Unauthenticated);
    }
    // The code and the token are used up together: a request that loses the token to a
    // concurrent verification does not spend its code, and one that loses the code (a
    // replay) does not spend its token.
    let completion = match second_factor(state, challenge.user_id, code).await? {
        Some(factor) => {
            mfa::complete_challenge(
                &state.db,
                challenge.id,
                challenge.user_id,
                &factor,
                state.clock.now_ms(),
            )
            .await?
        }
        None => mfa::Completion::FactorRefused,
    };
    match completion {
        mfa::Completion::Completed => {}
        mfa::Completion::FactorRefused => {
            attempt
                .failed(state, meta, Some(challenge.user_id), "auth.mfa_failed")
                .await?;
            return Err(Error::InvalidCredentials);
        }
        mfa::Completion::ChallengeUsed => {
            attempt.release(state).await?;
            return Err(Error::Unauthenticated);
        }
    }
    credentials::start_session(
        state,
        meta,
        challenge.user_id,
        challenge.credential_epoch,
        &attempt,
    )
    .await
}
