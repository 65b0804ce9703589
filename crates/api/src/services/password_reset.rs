//! Account recovery by email (contract §4, Recovery): `/password-reset/request` and
//! `/password-reset/confirm`.
//!
//! Invariants:
//! - A request answers the same, at once, whatever the email: the lookup, the token and the
//!   mail happen after the response, outside any transaction. At most
//!   `RAMPART_RESET_RATE_PER_HOUR` messages per email per hour (one atomic counter).
//! - Only the newest token of a user works, once, for `RAMPART_PASSWORD_RESET_TTL`; of
//!   concurrent confirms of one token exactly one wins (the store claims it with one
//!   conditional update); a weak new password does not use it up; completing a reset ends
//!   every session and pending `mfaToken` (the credential epoch moves on), clears the
//!   email's lockout, and never removes MFA.

use rampart_core::audit::Outcome;
use rampart_core::mail::Template;
use rampart_core::users::{Email, UserStatus, normalize_email};
use rampart_core::{Error, Result, tokens};
use rampart_store::mail::Message;
use rampart_store::{lockout, resets, users};
use uuid::Uuid;

use crate::services::credentials::{FIXED_WINDOW_MS, ms};
use crate::services::meta::RequestMeta;
use crate::state::AppState;

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
    // (so concurrent requests cannot slip through between a check and an increment); the
    // first request over the limit in a window is audited.
    let throttle_key = format!("reset|{normalized}");
    let limit = i64::from(state.config.reset_rate_per_hour);
    let throttled = meta.event("auth.password_reset_throttled", Outcome::Denied);
    let n = lockout::count(
        &state.db,
        &throttle_key,
        now_ms,
        FIXED_WINDOW_MS,
        limit.saturating_add(1),
        &throttled,
    )
    .await?;
    if n > limit {
        return Ok(());
    }
    let Some(user) = users::find_by_email(&state.db, &normalized).await? else {
        let event = meta.event("auth.password_reset_requested", Outcome::Failure);
        rampart_store::audit::record(&state.db, &event, now_ms).await?;
        return Ok(());
    };
    if user.status != UserStatus::Active {
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
    let rendered = Template::PasswordReset {
        token: &token,
        ttl: state.config.password_reset_ttl,
    }
    .render(&state.config.public_url);
    let message = Message {
        to: user.email.clone(),
        subject: rendered.subject,
        text: rendered.text,
        html: Some(rendered.html),
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
