//! Passkeys (contract §10): registration with password re-authentication, management, and
//! discoverable sign-in. The ceremony checks are `rampart_core::passkeys`; the single-use
//! challenges, the credentials and the session binding are `rampart_store::passkeys`.
//!
//! Invariants:
//! - Registration starts only after the password is re-checked (403
//!   `reauthentication_failed`, counted for lockout, like `/auth/password`).
//! - A challenge is taken (deleted) before its response is checked: whatever the outcome,
//!   it never works twice, and any instance can finish what another started.
//! - A sign-in reads the user's credential epoch before it verifies the signature, and the
//!   session is created at that epoch in the transaction that advances the passkey's
//!   counter (compare-and-set) and re-checks the passkey exists: a sign-in racing a
//!   password reset, an account disable or the passkey's removal yields no live session.
//! - Every refusal of a sign-in response is the same 401 `invalid_credentials`; a counter
//!   that did not grow is also audited (`auth.passkey_counter_regressed`).
//! - Nothing of a credential (public key, attestation, signature) reaches a log line, an
//!   audit record or a response body: audit records name the passkey by its id.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rampart_core::audit::Outcome;
use rampart_core::passkeys::{self as rp, CEREMONY_TTL, MAX_PER_USER, Refusal, RelyingParty};
use rampart_core::users::{UserStatus, normalize_email};
use rampart_core::{Error, Result, tokens};
use rampart_store::passkeys::{self as store, Ceremony, Passkey, PasskeyUse};
use rampart_store::users;
use serde_json::Value;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::services::credentials::{self, LoginOutcome, ms};
use crate::services::meta::RequestMeta;
use crate::state::AppState;
use crate::telemetry;

fn not_live_challenge() -> Error {
    Error::validation(
        "credential",
        "does not answer a live registration challenge of this account",
    )
}

/// `POST /register/start`: the password, then creation options for the caller.
pub async fn register_start(
    state: &AppState,
    meta: &RequestMeta,
    user: AuthUser,
    password: String,
) -> Result<(Uuid, Value)> {
    let reauthenticated = credentials::reauthenticate(
        state,
        meta,
        user,
        password,
        "auth.passkey_reauthentication_failed",
    )
    .await?;
    reauthenticated.attempt.release(state).await?;
    let account = users::get(&state.db, user.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let handle = store::user_handle(&state.db, user.user_id, &tokens::random_token()?).await?;
    let handle = URL_SAFE_NO_PAD
        .decode(handle.as_bytes())
        .map_err(Error::internal)?;
    let exclude = store::credential_ids(&state.db, user.user_id)
        .await?
        .iter()
        .filter_map(|id| URL_SAFE_NO_PAD.decode(id.as_bytes()).ok())
        .collect();
    let (options, ceremony) = state.relying_party.start_registration(
        &handle,
        &account.email,
        &account.display_name,
        exclude,
    )?;
    let id = Uuid::now_v7();
    let now_ms = state.clock.now_ms();
    store::create_challenge(
        &state.db,
        id,
        Ceremony::Register,
        Some(user.user_id),
        &ceremony,
        now_ms,
        now_ms.saturating_add(ms(CEREMONY_TTL)),
    )
    .await?;
    Ok((id, options))
}

/// `POST /register/finish`: verifies the response and stores the passkey.
pub async fn register_finish(
    state: &AppState,
    meta: &RequestMeta,
    user: AuthUser,
    challenge_id: Uuid,
    name: &str,
    credential: &Value,
) -> Result<Passkey> {
    let name = rp::parse_name(name, "name").map_err(|e| Error::Validation(vec![e]))?;
    let now_ms = state.clock.now_ms();
    let (owner, ceremony) =
        store::take_challenge(&state.db, challenge_id, Ceremony::Register, now_ms)
            .await?
            .ok_or_else(not_live_challenge)?;
    if owner != Some(user.user_id) {
        return Err(not_live_challenge());
    }
    let verified = state
        .relying_party
        .finish_registration(credential, &ceremony)?;
    let id = Uuid::now_v7();
    let credential_id = URL_SAFE_NO_PAD.encode(&verified.credential_id);
    let transports = serde_json::to_string(&verified.transports).map_err(Error::internal)?;
    let aaguid = verified.aaguid.to_string();
    let event = meta
        .event("auth.passkey_added", Outcome::Success)
        .with_actor(user.user_id)
        .with_target("passkey", id.to_string());
    store::insert(
        &state.db,
        &store::NewPasskey {
            id,
            user_id: user.user_id,
            credential_id: &credential_id,
            name: &name,
            credential: &verified.credential,
            sign_count: i64::from(verified.sign_count),
            backup_eligible: verified.backup_eligible,
            backed_up: verified.backed_up,
            transports: &transports,
            aaguid: &aaguid,
            now_ms,
        },
        MAX_PER_USER,
        &event,
    )
    .await
}

pub async fn list(state: &AppState, user: AuthUser) -> Result<Vec<Passkey>> {
    store::list(&state.db, user.user_id).await
}

pub async fn rename(state: &AppState, user: AuthUser, id: Uuid, name: &str) -> Result<Passkey> {
    let name = rp::parse_name(name, "name").map_err(|e| Error::Validation(vec![e]))?;
    store::rename(&state.db, id, user.user_id, &name).await
}

/// `DELETE /{id}`: the passkey and every session that signed in with it.
pub async fn remove(state: &AppState, meta: &RequestMeta, user: AuthUser, id: Uuid) -> Result<()> {
    let event = meta
        .event("auth.passkey_removed", Outcome::Success)
        .with_actor(user.user_id)
        .with_target("passkey", id.to_string());
    let ended = store::delete(&state.db, id, user.user_id, state.clock.now_ms(), &event).await?;
    state.sessions_ended(&ended);
    Ok(())
}

/// `POST /login/start`: request options for a discoverable sign-in.
pub async fn login_start(state: &AppState) -> Result<(Uuid, Value)> {
    let (options, ceremony) = state.relying_party.start_login()?;
    let id = Uuid::now_v7();
    let now_ms = state.clock.now_ms();
    store::create_challenge(
        &state.db,
        id,
        Ceremony::Login,
        None,
        &ceremony,
        now_ms,
        now_ms.saturating_add(ms(CEREMONY_TTL)),
    )
    .await?;
    Ok((id, options))
}

/// `POST /login/finish`: the challenge (401 `unauthenticated` when not live), then the
/// credential (401 `invalid_credentials` for every refusal), then a session.
pub async fn login_finish(
    state: &AppState,
    meta: &RequestMeta,
    challenge_id: Uuid,
    credential: &Value,
) -> Result<LoginOutcome> {
    let outcome = passkey_login(state, meta, challenge_id, credential).await;
    telemetry::login(telemetry::LOGIN_PASSKEY, &outcome, |_| false);
    outcome
}

async fn passkey_login(
    state: &AppState,
    meta: &RequestMeta,
    challenge_id: Uuid,
    credential: &Value,
) -> Result<LoginOutcome> {
    let presented = RelyingParty::presented(credential).ok_or_else(|| {
        Error::validation("credential", "must be an AuthenticationResponseJSON object")
    })?;
    let now_ms = state.clock.now_ms();
    let (_, ceremony) = store::take_challenge(&state.db, challenge_id, Ceremony::Login, now_ms)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let credential_id = URL_SAFE_NO_PAD.encode(&presented.credential_id);
    let Some(stored) = store::find_by_credential_id(&state.db, &credential_id).await? else {
        return Err(Error::InvalidCredentials);
    };
    // Discoverable: the response names its user; it must be the credential's owner.
    let handle_matches = presented
        .user_handle
        .as_ref()
        .is_some_and(|h| URL_SAFE_NO_PAD.encode(h) == stored.user_handle);
    if !handle_matches {
        return Err(Error::InvalidCredentials);
    }
    // The epoch is read before the signature is checked: a session is only made at it.
    let account = users::get(&state.db, stored.user_id)
        .await?
        .ok_or(Error::InvalidCredentials)?;
    let account_credentials = users::find_credentials(&state.db, &normalize_email(&account.email))
        .await?
        .filter(|c| c.user_id == stored.user_id && !c.deleted)
        .filter(|c| c.status == UserStatus::Active)
        .ok_or(Error::InvalidCredentials)?;
    let asserted =
        match state
            .relying_party
            .finish_login(&presented, &ceremony, &stored.credential)?
        {
            Ok(asserted) => asserted,
            Err(Refusal::CounterRegressed) => {
                let event = meta
                    .event("auth.passkey_counter_regressed", Outcome::Denied)
                    .with_actor(stored.user_id)
                    .with_target("passkey", stored.id.to_string());
                rampart_store::audit::record(&state.db, &event, state.clock.now_ms()).await?;
                tracing::warn!(passkey = %stored.id, "passkey signature counter did not grow");
                return Err(Error::InvalidCredentials);
            }
            Err(Refusal::Invalid) => return Err(Error::InvalidCredentials),
        };
    let update = PasskeyUse {
        id: stored.id,
        old_count: stored.sign_count,
        new_count: i64::from(asserted.sign_count),
        credential: asserted.credential,
        backup_eligible: asserted.backup_eligible,
        backed_up: asserted.backed_up,
    };
    credentials::start_session_with(
        state,
        meta,
        stored.user_id,
        account_credentials.credential_epoch,
        None,
        Some(&update),
    )
    .await
}
