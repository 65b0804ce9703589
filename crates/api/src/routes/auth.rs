//! `/api/v1/auth` (contract §4): registration, login, refresh, logout, sessions, password.
//! Handlers extract, call one service function and shape the response; the refresh token
//! only ever travels in the `HttpOnly` cookie, never in a body, and a request carrying it
//! twice is refused before anything is looked up. Every email field is at most 254
//! characters: routes that take any text as an email (login, reset request) check that
//! bound here, on the form, before the service counts or looks up anything.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rampart_core::Error;
use rampart_core::users::check_email_length;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{self, AuthUser};
use crate::extract::{ApiJson, ApiPath, ApiQuery, NoQuery};
use crate::problem::ApiError;
use crate::routes::users::UserResponse;
use crate::routing::{Policy, RouteLimit, route, route_limited};
use crate::services::auth as service;
use crate::services::meta::RequestMeta;
use crate::services::mfa as mfa_service;
use crate::services::password_reset as reset_service;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(route_limited(
            Policy::Public,
            RouteLimit::Register,
            routes!(register),
        ))
        .routes(route_limited(
            Policy::Public,
            RouteLimit::Login,
            routes!(login),
        ))
        // Cookie-authenticated: the handler checks the cookie and the origin.
        .routes(route(Policy::Public, routes!(refresh)))
        // Access token or refresh cookie: the handler accepts either.
        .routes(route(Policy::Public, routes!(logout)))
        .routes(route(Policy::Authenticated, routes!(logout_all)))
        .routes(route(Policy::Authenticated, routes!(list_sessions)))
        .routes(route(Policy::Authenticated, routes!(delete_session)))
        .routes(route(Policy::Authenticated, routes!(change_password)))
        .routes(route(Policy::Authenticated, routes!(mfa_setup)))
        .routes(route(Policy::Authenticated, routes!(mfa_enable)))
        .routes(route(Policy::Authenticated, routes!(mfa_disable)))
        .routes(route_limited(
            Policy::Public,
            RouteLimit::Login,
            routes!(mfa_verify),
        ))
        .routes(route_limited(
            Policy::Public,
            RouteLimit::Reset,
            routes!(reset_request),
        ))
        .routes(route_limited(
            Policy::Public,
            RouteLimit::Reset,
            routes!(reset_confirm),
        ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegisterRequest {
    /// At most 254 characters after trimming.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// At least `RAMPART_PASSWORD_MIN_LENGTH` (default 12) and at most 128 characters,
    /// not a common password, not containing the email's local part.
    password: String,
    /// 1–100 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    display_name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
    user: UserResponse,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionResponse {
    id: Uuid,
    created_at: String,
    last_used_at: String,
    ip_address: Option<String>,
    user_agent: Option<String>,
    /// The session of the access token that asked.
    current: bool,
}

impl SessionResponse {
    /// `session` as its user sees it; `current` when it is `current_session`.
    pub(crate) fn of(session: rampart_core::users::Session, current_session: Uuid) -> Self {
        Self {
            current: session.id == current_session,
            id: session.id,
            created_at: crate::routes::rfc3339(session.created_at_ms),
            last_used_at: crate::routes::rfc3339(session.last_used_at_ms),
            ip_address: session.ip_address,
            user_agent: session.user_agent,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SessionsResponse {
    items: Vec<SessionResponse>,
}

pub(crate) fn login_response(state: &AppState, outcome: service::LoginOutcome) -> Response {
    let body = LoginResponse {
        access_token: outcome.access.token,
        token_type: "Bearer",
        expires_in: outcome.access.expires_in,
        user: UserResponse::from(&outcome.user),
    };
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    if let Some(cookie) = auth::refresh_cookie(
        state.config.cookie_secure,
        &outcome.refresh_token,
        outcome.refresh_max_age_secs,
    ) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn with_cleared_cookie(state: &AppState, mut response: Response) -> Response {
    if let Some(cookie) = auth::clear_refresh_cookie(state.config.cookie_secure) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Create an account (role `user`, status `active`).
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = UserResponse),
        (status = 400, description = "Invalid input or weak password"),
        (status = 409, description = "Email already registered"),
        (status = 429, description = "Too many registrations from this address"),
    ))]
async fn register(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let user =
        service::register(&state, &meta, &req.email, req.password, &req.display_name).await?;
    Ok((StatusCode::CREATED, axum::Json(UserResponse::from(&user))).into_response())
}

/// Exchange email and password for an access token and a refresh cookie.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in (`LoginResponse`, refresh cookie set); or, with MFA on, the second step to take (`MfaRequiredResponse`, no cookie)", body = inline(LoginStepResponse)),
        (status = 400, description = "Malformed body, or an email over 254 characters"),
        (status = 401, description = "Wrong email/password pair (invalid_credentials)"),
        (status = 429, description = "Rate limited or email locked out"),
        (status = 503, description = "Password hashing at capacity, the database does not answer, or the request timed out"),
    ))]
async fn login(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    check_email_length(&req.email, "email").map_err(|e| Error::Validation(vec![e]))?;
    match service::login(&state, &meta, &req.email, req.password).await? {
        service::LoginStep::Complete(outcome) => Ok(login_response(&state, outcome)),
        service::LoginStep::MfaRequired {
            mfa_token,
            expires_in,
        } => Ok(
            axum::Json(LoginStepResponse::MfaRequired(MfaRequiredResponse {
                mfa_required: true,
                mfa_token,
                expires_in,
            }))
            .into_response(),
        ),
    }
}

/// Rotate the refresh cookie and get a new access token.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    responses(
        (status = 200, description = "Rotated; new refresh cookie set", body = LoginResponse),
        (status = 401, description = "Missing, invalid, expired or reused refresh token"),
        (status = 403, description = "Cross-site request"),
    ))]
async fn refresh(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth::check_same_site(
        &headers,
        &state.config.allowed_origins,
        &state.config.public_url,
    )?;
    let token = auth::refresh_token_from(&headers, state.config.cookie_secure)?;
    match service::refresh(&state, &meta, &token).await {
        Ok(outcome) => Ok(login_response(&state, outcome)),
        // A dead refresh cookie is useless to the browser: clear it with the 401.
        Err(e) => Ok(with_cleared_cookie(&state, ApiError(e).into_response())),
    }
}

/// End this session (by access token, or by refresh cookie) and clear the cookie.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "Session ended; cookie cleared"),
        (status = 401, description = "No valid access token or refresh cookie"),
        (status = 403, description = "Cross-site request with a cookie"),
    ),
    security(("bearer" = []), ()))]
async fn logout(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    user: Option<AuthUser>,
) -> Result<Response, ApiError> {
    // `Option<AuthUser>` is `None` only without an `Authorization` header; a bad token is
    // a 401, never a silent fall-back to the cookie.
    match user {
        Some(user) => service::logout(&state, &meta, user).await?,
        None => {
            auth::check_same_site(
                &headers,
                &state.config.allowed_origins,
                &state.config.public_url,
            )?;
            let token = auth::refresh_token_from(&headers, state.config.cookie_secure)?;
            service::logout_by_refresh(&state, &meta, &token).await?;
        }
    }
    Ok(with_cleared_cookie(
        &state,
        StatusCode::NO_CONTENT.into_response(),
    ))
}

/// End every session of the caller.
#[utoipa::path(post, path = "/api/v1/auth/logout-all", tag = "auth",
    responses((status = 204, description = "All sessions ended")))]
async fn logout_all(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
) -> Result<Response, ApiError> {
    service::logout_all(&state, &meta, user).await?;
    Ok(with_cleared_cookie(
        &state,
        StatusCode::NO_CONTENT.into_response(),
    ))
}

/// The caller's live sessions.
#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "auth",
    responses((status = 200, description = "The caller's live sessions", body = SessionsResponse), (status = 400, description = "A query parameter (none are accepted)")))]
async fn list_sessions(
    State(state): State<AppState>,
    user: AuthUser,
    _: ApiQuery<NoQuery>,
) -> Result<axum::Json<SessionsResponse>, ApiError> {
    let sessions =
        rampart_store::sessions::list_live(&state.db, user.user_id, state.clock.now_ms()).await?;
    let items = sessions
        .into_iter()
        .map(|s| SessionResponse::of(s, user.session_id))
        .collect();
    Ok(axum::Json(SessionsResponse { items }))
}

/// End one of the caller's sessions.
#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "auth",
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 204, description = "Session ended"),
        (status = 400, description = "Malformed id"),
        (status = 404, description = "No such session of the caller"),
    ))]
async fn delete_session(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    service::end_session(&state, &meta, user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change the password; every session of the user ends, this one included.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth",
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Changed; all sessions ended"),
        (status = 400, description = "Weak new password"),
        (status = 403, description = "Wrong current password (reauthentication_failed)"),
        (status = 429, description = "Email locked out"),
    ))]
async fn change_password(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<Response, ApiError> {
    service::change_password(&state, &meta, user, req.current_password, req.new_password).await?;
    Ok(with_cleared_cookie(
        &state,
        StatusCode::NO_CONTENT.into_response(),
    ))
}

/// The two answers of `POST /login` with 200. Untagged: the document says `oneOf` the two
/// (told apart by `accessToken` vs `mfaToken`), the body is the variant's own object.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginStepResponse {
    Complete(LoginResponse),
    MfaRequired(MfaRequiredResponse),
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MfaRequiredResponse {
    mfa_required: bool,
    /// Single-use, 5 minutes; send it with a code to `/api/v1/auth/mfa/verify`.
    mfa_token: String,
    expires_in: u64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MfaVerifyRequest {
    mfa_token: String,
    /// A TOTP code or a recovery code.
    code: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MfaSetupResponse {
    /// Base32 (RFC 4648).
    secret: String,
    otpauth_uri: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaEnableRequest {
    /// The current code of the secret from `/mfa/totp/setup`.
    code: String,
    /// The account's password: a stolen access token alone cannot enable MFA.
    password: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryCodesResponse {
    /// Ten single-use codes, shown once.
    recovery_codes: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaDisableRequest {
    password: String,
    code: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    email: String,
}

#[derive(Serialize, ToSchema)]
pub struct ResetAccepted {
    /// Always `accepted`, whether or not the email belongs to an account.
    status: &'static str,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResetConfirmRequest {
    token: String,
    new_password: String,
}

/// Complete an MFA login with a TOTP or recovery code.
#[utoipa::path(post, path = "/api/v1/auth/mfa/verify", tag = "auth", request_body = MfaVerifyRequest,
    responses(
        (status = 200, description = "Logged in; refresh cookie set", body = LoginResponse),
        (status = 401, description = "Unknown, used, expired or exhausted mfaToken (unauthenticated); wrong or replayed code (invalid_credentials)"),
        (status = 429, description = "Rate limited or account locked out"),
    ))]
async fn mfa_verify(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<MfaVerifyRequest>,
) -> Result<Response, ApiError> {
    let outcome = mfa_service::verify_login(&state, &meta, &req.mfa_token, &req.code).await?;
    Ok(login_response(&state, outcome))
}

/// Start TOTP enrolment: a new secret, not active until enabled with a code.
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp/setup", tag = "auth",
    responses((status = 200, description = "A new TOTP secret, pending until enabled", body = MfaSetupResponse),
        (status = 409, description = "MFA is already enabled")))]
async fn mfa_setup(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<axum::Json<MfaSetupResponse>, ApiError> {
    let setup = mfa_service::setup(&state, user).await?;
    Ok(axum::Json(MfaSetupResponse {
        secret: setup.secret,
        otpauth_uri: setup.otpauth_uri,
    }))
}

/// Turn TOTP on with the password and a current code; returns the recovery codes once. Ends every other session.
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp/enable", tag = "auth", request_body = MfaEnableRequest,
    responses((status = 200, description = "MFA on; the recovery codes, shown once", body = RecoveryCodesResponse),
        (status = 400, description = "Wrong code, or the password missing"),
        (status = 403, description = "Wrong password (reauthentication_failed)"),
        (status = 409, description = "MFA is already enabled"),
        (status = 429, description = "Rate limited, or account locked out")))]
async fn mfa_enable(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    ApiJson(req): ApiJson<MfaEnableRequest>,
) -> Result<axum::Json<RecoveryCodesResponse>, ApiError> {
    let recovery_codes = mfa_service::enable(&state, &meta, user, req.password, &req.code).await?;
    Ok(axum::Json(RecoveryCodesResponse { recovery_codes }))
}

/// Turn TOTP off (password and a code required). Ends every other session.
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp/disable", tag = "auth", request_body = MfaDisableRequest,
    responses((status = 204, description = "MFA off"),
        (status = 403, description = "Wrong password or code (reauthentication_failed)"),
        (status = 429, description = "Rate limited, or account locked out")))]
async fn mfa_disable(
    State(state): State<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    ApiJson(req): ApiJson<MfaDisableRequest>,
) -> Result<StatusCode, ApiError> {
    mfa_service::disable(&state, &meta, user, req.password, &req.code).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ask for a password-reset link by email. Always 202 with the same body.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/request", tag = "auth", request_body = ResetRequest,
    responses((status = 202, description = "Accepted, whether or not the email has an account", body = ResetAccepted),
        (status = 400, description = "Malformed body, or an email over 254 characters"),
        (status = 429, description = "Rate limited")))]
async fn reset_request(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Result<Response, ApiError> {
    check_email_length(&req.email, "email").map_err(|e| Error::Validation(vec![e]))?;
    reset_service::request_reset(&state, &meta, &req.email);
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(ResetAccepted { status: "accepted" }),
    )
        .into_response())
}

/// Set a new password with a reset token; every session ends.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirmRequest,
    responses((status = 204, description = "Password set; all sessions ended"),
        (status = 400, description = "Bad, used, superseded or expired token, or a weak password"),
        (status = 429, description = "Rate limited")))]
async fn reset_confirm(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(req): ApiJson<ResetConfirmRequest>,
) -> Result<StatusCode, ApiError> {
    reset_service::confirm_reset(&state, &meta, &req.token, req.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}
