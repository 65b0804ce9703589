//! Account lifecycle (contract §11): email verification, email change, self-service
//! deletion and the data export.
//!
//! Invariants:
//! - Every link is a `store::tokens` token (digest at rest, single use, newest only per
//!   user and purpose, `RAMPART_EMAIL_TOKEN_TTL`), mailed from the one template set
//!   (`rampart_core::mail`) after its transaction committed; a failed send is logged and
//!   never fails the request that caused it (registration included).
//! - A confirm token is parsed (`tokens::parse_mailed_token`) before any lookup; a bad,
//!   used, superseded or expired one is 400 `validation_failed` for `token`.
//! - The email-change request answers 202 whether or not the new address is taken: the
//!   token and the mails do not depend on it, and the mails go out after the response; only
//!   the confirm, when the unique address decides, can answer 409.
//! - Changing the email and deleting the account re-ask for the password through
//!   `credentials::reauthenticate` (a wrong one is 403 `reauthentication_failed`, counted
//!   for lockout, 429 while locked).
//! - Resends, change requests and exports are counted per user per hour in the shared
//!   database (`lockout::count`), so the limits hold across instances.

use rampart_core::audit::AuditRecord;
use rampart_core::audit::Outcome;
use rampart_core::mail::Template;
use rampart_core::users::{Email, Session, User, mask_email};
use rampart_core::{Error, Result, tokens};
use rampart_store::lifecycle::{self, EmailChange};
use rampart_store::mail::Message;
use rampart_store::tokens::{NewToken, Purpose};
use rampart_store::{lockout, sessions, users};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::services::credentials::{self, FIXED_WINDOW_MS, ms};
use crate::services::meta::RequestMeta;
use crate::state::AppState;

/// Exports per user per hour: the export is the heaviest read (every note and audit
/// record of the account), and a stolen access token must not turn it into a flood.
pub const EXPORTS_PER_HOUR: i64 = 5;

fn invalid_token() -> Error {
    Error::validation("token", "is invalid or expired")
}

/// Counts one event of `kind` for `user_id` in the hour; `Some(retry_after_secs)` when it
/// is over `limit`.
async fn over_hourly_limit(
    state: &AppState,
    meta: &RequestMeta,
    kind: &str,
    user_id: Uuid,
    limit: i64,
) -> Result<Option<u64>> {
    let key = format!("{kind}|{user_id}");
    let now_ms = state.clock.now_ms();
    let throttled = meta
        .event(&format!("{kind}_throttled"), Outcome::Denied)
        .with_actor(user_id)
        .with_target("user", user_id.to_string());
    let n = lockout::count(
        &state.db,
        &key,
        now_ms,
        FIXED_WINDOW_MS,
        limit.saturating_add(1),
        &throttled,
    )
    .await?;
    if n <= limit {
        return Ok(None);
    }
    let started = lifecycle::window_started(&state.db, &key)
        .await?
        .unwrap_or(now_ms);
    let left_ms = (started + FIXED_WINDOW_MS - now_ms).clamp(1, FIXED_WINDOW_MS);
    Ok(Some(u64::try_from((left_ms + 999) / 1000).unwrap_or(1)))
}

async fn send(state: &AppState, to: &str, template: Template<'_>) -> Result<()> {
    let rendered = template.render(&state.config.public_url);
    let message = Message {
        to: to.to_owned(),
        subject: rendered.subject,
        text: rendered.text,
        html: Some(rendered.html),
    };
    state.mailer.send(&message).await.map_err(Error::Internal)
}

/// A new verification token for `user` (its current address) and the mail carrying it.
async fn mail_verification(state: &AppState, user_id: Uuid, email: &str) -> Result<()> {
    let token = tokens::random_token()?;
    let now_ms = state.clock.now_ms();
    let digest = tokens::hash_token(&token);
    rampart_store::tokens::create(
        &state.db,
        &NewToken {
            id: Uuid::now_v7(),
            user_id,
            purpose: Purpose::EmailVerify,
            token_hash: &digest,
            email: Some(email),
            session_id: None,
            now_ms,
            expires_at_ms: now_ms.saturating_add(ms(state.config.email_token_ttl)),
        },
        None,
    )
    .await?;
    send(
        state,
        email,
        Template::VerifyEmail {
            token: &token,
            ttl: state.config.email_token_ttl,
        },
    )
    .await
}

/// After a registration committed: the verification mail, in the background, so that
/// neither a slow nor a failed send changes the registration's answer.
pub fn mail_verification_later(state: &AppState, user: &User) {
    let state = state.clone();
    let (user_id, email) = (user.id, user.email.clone());
    tokio::spawn(async move {
        if let Err(e) = mail_verification(&state, user_id, &email).await {
            tracing::warn!(error = %e, "verification mail not sent");
        }
    });
}

/// `POST /auth/email/verify/request`: a new link (the older ones stop working), at most
/// `RAMPART_RESET_RATE_PER_HOUR` per user per hour; nothing when already verified. The
/// answer is 202 in every case.
pub async fn request_verification(
    state: &AppState,
    meta: &RequestMeta,
    user: AuthUser,
) -> Result<()> {
    let account = users::get(&state.db, user.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    if account.email_verified {
        return Ok(());
    }
    let limit = i64::from(state.config.reset_rate_per_hour);
    if over_hourly_limit(state, meta, "auth.email_verification", user.user_id, limit)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = mail_verification(&state, account.id, &account.email).await {
            tracing::warn!(error = %e, "verification mail not sent");
        }
    });
    Ok(())
}

/// `POST /auth/email/verify/confirm`.
pub async fn confirm_verification(state: &AppState, meta: &RequestMeta, token: &str) -> Result<()> {
    let token = tokens::parse_mailed_token(token).ok_or_else(invalid_token)?;
    let event = meta.event("auth.email_verified", Outcome::Success);
    lifecycle::verify_email(
        &state.db,
        &tokens::hash_token(token),
        state.clock.now_ms(),
        &event,
    )
    .await?
    .ok_or_else(invalid_token)?;
    Ok(())
}

/// `POST /users/me/email`: the password first (403, counted), then a change token bound
/// to the new address and to the caller's session; the link goes to the new address and a
/// notice without link to the old one, after the response. At most
/// `RAMPART_RESET_RATE_PER_HOUR` requests per user per hour send anything (the mails go
/// to an address the caller chose); the answer is 202 either way.
pub async fn request_email_change(
    state: &AppState,
    meta: &RequestMeta,
    user: AuthUser,
    new_email: &str,
    password: String,
) -> Result<()> {
    let new_email = Email::parse(new_email, "newEmail").map_err(|e| Error::Validation(vec![e]))?;
    let reauthenticated =
        credentials::reauthenticate(state, meta, user, password, "user.email_change_failed")
            .await?;
    reauthenticated.attempt.release(state).await?;
    let account = users::get(&state.db, user.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let limit = i64::from(state.config.reset_rate_per_hour);
    if over_hourly_limit(state, meta, "user.email_change", user.user_id, limit)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let token = tokens::random_token()?;
    let digest = tokens::hash_token(&token);
    let now_ms = state.clock.now_ms();
    let event = meta
        .event("user.email_change_requested", Outcome::Success)
        .with_actor(user.user_id)
        .with_target("user", user.user_id.to_string())
        .with_details(serde_json::json!({"to": mask_email(new_email.as_str())}));
    rampart_store::tokens::create(
        &state.db,
        &NewToken {
            id: Uuid::now_v7(),
            user_id: user.user_id,
            purpose: Purpose::EmailChange,
            token_hash: &digest,
            email: Some(new_email.as_str()),
            session_id: Some(user.session_id),
            now_ms,
            expires_at_ms: now_ms.saturating_add(ms(state.config.email_token_ttl)),
        },
        Some(&event),
    )
    .await?;
    let state = state.clone();
    let new_address = new_email.as_str().to_owned();
    tokio::spawn(async move {
        let ttl = state.config.email_token_ttl;
        let link = send(
            &state,
            &new_address,
            Template::ChangeEmail { token: &token, ttl },
        );
        if let Err(e) = link.await {
            tracing::warn!(error = %e, "email change link not sent");
        }
        let masked = mask_email(&new_address);
        let notice = send(
            &state,
            &account.email,
            Template::ChangeNotice { new_email: &masked },
        );
        if let Err(e) = notice.await {
            tracing::warn!(error = %e, "email change notice not sent");
        }
    });
    Ok(())
}

/// `POST /auth/email/change/confirm`: 400 for a bad token, 409 when the address is
/// taken by now; the sessions it ended leave this instance's cache at once.
pub async fn confirm_email_change(state: &AppState, meta: &RequestMeta, token: &str) -> Result<()> {
    let token = tokens::parse_mailed_token(token).ok_or_else(invalid_token)?;
    let event = meta.event("user.email_changed", Outcome::Success);
    match lifecycle::confirm_email_change(
        &state.db,
        &tokens::hash_token(token),
        state.clock.now_ms(),
        &event,
    )
    .await?
    {
        EmailChange::Invalid => Err(invalid_token()),
        EmailChange::Changed { revoked, .. } => {
            state.sessions_ended(&revoked);
            Ok(())
        }
    }
}

/// `POST /users/me/delete`: the password (403, counted), then the soft delete of §5 with
/// the user as actor: every session ends; the last active holder of `roles:assign` is
/// refused (403), decided under the RBAC lock so two such holders deleting themselves at
/// once cannot both succeed.
pub async fn delete_me(
    state: &AppState,
    meta: &RequestMeta,
    user: AuthUser,
    password: String,
) -> Result<()> {
    let reauthenticated =
        credentials::reauthenticate(state, meta, user, password, "user.delete_failed").await?;
    reauthenticated.attempt.release(state).await?;
    let event = meta
        .event("user.deleted", Outcome::Success)
        .with_actor(user.user_id)
        .with_target("user", user.user_id.to_string())
        .with_details(serde_json::json!({"self": true}));
    match users::soft_delete(&state.db, user.user_id, state.clock.now_ms(), &event).await {
        Ok(ended) => {
            state.sessions_ended(&ended);
            Ok(())
        }
        // Deleted by someone else meanwhile: this session is gone with it.
        Err(Error::NotFound) => Err(Error::Unauthenticated),
        Err(e) => Err(e),
    }
}

/// What the export holds before it is shaped for the response.
pub struct Export {
    pub exported_at_ms: i64,
    pub user: User,
    pub sessions: Vec<Session>,
    pub audit_events: Vec<AuditRecord>,
}

/// `GET /users/me/export`: the user view, the live sessions and every audit record whose
/// actor or target is the caller (newest first). Notes, passkeys and other owned rows are
/// added by the route from their modules. At most [`EXPORTS_PER_HOUR`] per user.
pub async fn export(state: &AppState, meta: &RequestMeta, user: AuthUser) -> Result<Export> {
    if let Some(retry_after_secs) =
        over_hourly_limit(state, meta, "user.export", user.user_id, EXPORTS_PER_HOUR).await?
    {
        return Err(Error::RateLimited { retry_after_secs });
    }
    let now_ms = state.clock.now_ms();
    let account = users::get_for_session(&state.db, user.user_id, user.session_id, now_ms)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let sessions = sessions::list_live(&state.db, user.user_id, now_ms).await?;
    let mut audit_events = Vec::new();
    let mut after = None;
    loop {
        let page =
            rampart_store::audit::list_concerning(&state.db, user.user_id, 500, after).await?;
        let last = page.last().map(|r| r.seq);
        let full = page.len() == 500;
        audit_events.extend(page);
        match last {
            Some(seq) if full => after = Some(seq),
            _ => break,
        }
    }
    Ok(Export {
        exported_at_ms: now_ms,
        user: account,
        sessions,
        audit_events,
    })
}
