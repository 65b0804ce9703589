//! "Refused at once" (contract §4, §6) as the contract writes it, both stores: for every
//! path that ends a session, and every kind of RBAC change, the caller's answer is first
//! cached (a 200 on a route whose extractor goes through the session and permission caches,
//! not `/users/me`, which skips them), then the change is made, and the very next request
//! with the old token is refused. No sleep, no retry: a path that forgets to evict the
//! cache still gets a 200 from the warm entry and fails its row.
//!
//! The same table runs again with a second instance (same database, keys and Redis) that
//! had cached the answer too: it must refuse the old token within [`ANNOUNCED_WITHIN`] of
//! the change being answered on the first. Its caches expire after a second on their own,
//! so only the change's announcement meets that bound: a path that forgets to announce
//! fails its row.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;
use utoipa_axum::router::OpenApiRouter;

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem, redis_url};
use crate::identity::{PASSWORD, Session};
use crate::mfa::base32_decode;

backend_tests!(
    every_session_ending_path_is_refused_at_once_on_a_cached_route,
    every_rbac_change_is_refused_at_once_on_a_cached_route,
    every_session_ending_path_is_refused_by_another_instance_within_100_ms,
    every_rbac_change_is_refused_by_another_instance_within_100_ms,
);

/// Another instance refuses what one instance changed this soon after the change was
/// answered (issue 11). Its caches alone would take up to a second.
const ANNOUNCED_WITHIN: Duration = Duration::from_millis(100);

/// Authenticated through [`rampart_api::auth::AuthUser`], so through the session cache.
const SESSION_CACHED: &str = "/api/v1/auth/sessions";
/// `permission:users:read`: through the session cache and the permission cache.
const PERMISSION_CACHED: &str = "/api/v1/users";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Logout,
    LogoutAll,
    DeleteSession,
    PasswordChange,
    PasswordResetConfirm,
    TotpEnable,
    TotpDisable,
    AdminMfaReset,
    RefreshReuse,
    AdminDisable,
    AdminDelete,
    AdminEndSessions,
}

const ENDINGS: &[Ending] = &[
    Ending::Logout,
    Ending::LogoutAll,
    Ending::DeleteSession,
    Ending::PasswordChange,
    Ending::PasswordResetConfirm,
    Ending::TotpEnable,
    Ending::TotpDisable,
    Ending::AdminMfaReset,
    Ending::RefreshReuse,
    Ending::AdminDisable,
    Ending::AdminDelete,
    Ending::AdminEndSessions,
];

/// A row's set-up: the session whose old token must die (`victim`) and what the ending
/// needs. `actor` is another session of the same user where the path is taken from one.
struct Setup {
    victim: Session,
    actor: Option<Session>,
    totp_secret: Option<Vec<u8>>,
    reset_token: Option<String>,
}

impl Setup {
    fn of(victim: Session) -> Self {
        Self {
            victim,
            actor: None,
            totp_secret: None,
            reset_token: None,
        }
    }
}

async fn set_up(app: &TestApp, ending: Ending) -> Setup {
    let tag = format!("{ending:?}").to_lowercase();
    match ending {
        Ending::Logout | Ending::AdminDisable | Ending::AdminDelete | Ending::AdminEndSessions => {
            Setup::of(app.new_session(&tag).await)
        }
        Ending::LogoutAll | Ending::DeleteSession | Ending::PasswordChange => {
            // Taken from another session of the user, so evicting only the caller's
            // own session would not be enough.
            let victim = app.new_session(&tag).await;
            let actor = app.session_for(&victim.email, PASSWORD).await;
            Setup {
                actor: Some(actor),
                ..Setup::of(victim)
            }
        }
        Ending::PasswordResetConfirm => {
            let victim = app.new_session(&tag).await;
            let before = app.outbox().len();
            let r = app
                .post_json(
                    "/api/v1/auth/password-reset/request",
                    json!({"email": victim.email}),
                )
                .await;
            assert_eq!(r.status(), 202);
            let mail = app.wait_for_mail(before + 1).await;
            assert_eq!(mail.len(), before + 1);
            let token = crate::mfa::reset_token(&mail[before]);
            Setup {
                reset_token: Some(token),
                ..Setup::of(victim)
            }
        }
        Ending::TotpEnable => {
            // Enabling ends every *other* session: the actor sets up, the victim dies.
            let victim = app.new_session(&tag).await;
            let actor = app.session_for(&victim.email, PASSWORD).await;
            let r = app
                .call(
                    Method::POST,
                    "/api/v1/auth/mfa/totp/setup",
                    &actor.access,
                    None,
                )
                .await;
            assert_eq!(r.status(), 200);
            let setup: Value = r.json().await.unwrap();
            Setup {
                actor: Some(actor),
                totp_secret: Some(base32_decode(setup["secret"].as_str().unwrap())),
                ..Setup::of(victim)
            }
        }
        Ending::TotpDisable => {
            // Disabling ends every other session: the victim logs in with a recovery code.
            let enrolled = app.enrol(&tag).await;
            let token = app.mfa_token(&enrolled.session.email, PASSWORD).await;
            let r = app.verify(&token, &enrolled.recovery[0]).await;
            assert_eq!(r.status(), 200);
            let refresh = crate::identity::refresh_cookie(&r).unwrap();
            let body: Value = r.json().await.unwrap();
            let victim = Session {
                email: enrolled.session.email.clone(),
                user_id: enrolled.session.user_id.clone(),
                access: body["accessToken"].as_str().unwrap().to_owned(),
                refresh,
            };
            Setup {
                actor: Some(enrolled.session),
                totp_secret: Some(enrolled.secret),
                ..Setup::of(victim)
            }
        }
        Ending::AdminMfaReset => Setup::of(app.mfa_user(&tag).await.session),
        Ending::RefreshReuse => {
            // Rotate once (the session lives on); replaying the old refresh token below
            // is the reuse that ends the session.
            let victim = app.new_session(&tag).await;
            let r = app.refresh(&victim.refresh).await;
            assert_eq!(r.status(), 200);
            Setup::of(victim)
        }
    }
}

/// Takes the path; `current` is the victim's session id as `GET /auth/sessions` showed it.
async fn end(app: &TestApp, admin: &Session, ending: Ending, setup: &Setup, current: &str) {
    let victim = &setup.victim;
    let actor = setup.actor.as_ref().map(|a| a.access.as_str());
    let user = &victim.user_id;
    let (r, status) = match ending {
        Ending::Logout => (
            app.call(Method::POST, "/api/v1/auth/logout", &victim.access, None)
                .await,
            204,
        ),
        Ending::LogoutAll => (
            app.call(
                Method::POST,
                "/api/v1/auth/logout-all",
                actor.unwrap(),
                None,
            )
            .await,
            204,
        ),
        Ending::DeleteSession => (
            app.call(
                Method::DELETE,
                &format!("/api/v1/auth/sessions/{current}"),
                actor.unwrap(),
                None,
            )
            .await,
            204,
        ),
        Ending::PasswordChange => (
            app.call(
                Method::POST,
                "/api/v1/auth/password",
                actor.unwrap(),
                Some(json!({
                    "currentPassword": PASSWORD,
                    "newPassword": "another strong passphrase 9",
                })),
            )
            .await,
            204,
        ),
        Ending::PasswordResetConfirm => (
            app.post_json(
                "/api/v1/auth/password-reset/confirm",
                json!({
                    "token": setup.reset_token.as_deref().unwrap(),
                    "newPassword": "a brand new passphrase 31",
                }),
            )
            .await,
            204,
        ),
        Ending::TotpEnable => {
            let code = app.code_now(setup.totp_secret.as_deref().unwrap());
            (
                app.call(
                    Method::POST,
                    "/api/v1/auth/mfa/totp/enable",
                    actor.unwrap(),
                    Some(json!({"code": code, "password": PASSWORD})),
                )
                .await,
                200,
            )
        }
        Ending::TotpDisable => {
            let code = app.code_now(setup.totp_secret.as_deref().unwrap());
            (
                app.call(
                    Method::POST,
                    "/api/v1/auth/mfa/totp/disable",
                    actor.unwrap(),
                    Some(json!({"password": PASSWORD, "code": code})),
                )
                .await,
                204,
            )
        }
        Ending::AdminMfaReset => (app.reset_mfa(admin, user).await, 204),
        Ending::RefreshReuse => {
            let r = app.refresh(&victim.refresh).await;
            (r, 401)
        }
        Ending::AdminDisable => (
            app.call(
                Method::PATCH,
                &format!("/api/v1/users/{user}"),
                &admin.access,
                Some(json!({"status": "disabled"})),
            )
            .await,
            200,
        ),
        Ending::AdminDelete => (
            app.call(
                Method::DELETE,
                &format!("/api/v1/users/{user}"),
                &admin.access,
                None,
            )
            .await,
            204,
        ),
        Ending::AdminEndSessions => (
            app.call(
                Method::DELETE,
                &format!("/api/v1/users/{user}/sessions"),
                &admin.access,
                None,
            )
            .await,
            204,
        ),
    };
    assert_eq!(r.status(), status, "{ending:?}: the ending itself");
}

async fn every_session_ending_path_is_refused_at_once_on_a_cached_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    session_endings(&app, None).await;
    app.finish().await;
}

async fn every_session_ending_path_is_refused_by_another_instance_within_100_ms(backend: Backend) {
    let Some((a, b)) = two_instances(backend).await else {
        return;
    };
    session_endings(&a, Some(&b)).await;
    b.finish().await;
    a.finish().await;
}

/// Two instances of one deployment sharing the database, the signing keys and Redis, both
/// subscribed to its announcements; `None` (skip) outside CI without `TEST_REDIS_URL`.
async fn two_instances(backend: Backend) -> Option<(TestApp, TestApp)> {
    let url = redis_url()?;
    // The polls below are many requests from one address.
    let env = [
        ("REDIS_URL", url.as_str()),
        ("RAMPART_RATE_LIMIT_PER_MINUTE", "100000"),
    ];
    let a = TestApp::spawn_with(backend, &env, OpenApiRouter::new()).await;
    let b = a.sibling(backend, &env).await;
    a.until_ready().await;
    b.until_ready().await;
    Some((a, b))
}

/// Polls `path` on `other` with `token` (every ~2 ms) until it answers `refused`; every
/// answer before must be `200`, and none may come to a request sent [`ANNOUNCED_WITHIN`]
/// or later after `since`. `Err` says what was seen instead.
async fn refused_by_other(
    other: &TestApp,
    path: &str,
    token: &str,
    refused: u16,
    since: Instant,
) -> Result<Duration, String> {
    loop {
        let sent = since.elapsed();
        let status = other.get_auth(path, token).await.status().as_u16();
        if status == refused {
            return Ok(since.elapsed());
        }
        if status != 200 {
            return Err(format!("{status} at +{} ms", sent.as_millis()));
        }
        if sent >= ANNOUNCED_WITHIN {
            return Err(format!(
                "still 200 for a request sent at +{} ms",
                sent.as_millis()
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs every row of [`ENDINGS`] on `app`; with `other`, also on the second instance.
async fn session_endings(app: &TestApp, other: Option<&TestApp>) {
    let admin = app.admin_session("admin").await;
    let mut not_refused: Vec<(Ending, u16)> = Vec::new();
    let mut late_elsewhere: Vec<(Ending, String)> = Vec::new();
    for &ending in ENDINGS {
        let setup = set_up(app, ending).await;
        // Warm: this answer puts the victim's session in the liveness cache.
        let r = app.get_auth(SESSION_CACHED, &setup.victim.access).await;
        assert_eq!(r.status(), 200, "{ending:?}: warm-up");
        let listed: Value = r.json().await.unwrap();
        let current: Vec<&str> = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["current"] == true)
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(current.len(), 1, "{ending:?}: {listed}");
        if let Some(other) = other {
            let r = other.get_auth(SESSION_CACHED, &setup.victim.access).await;
            let status = r.status();
            let body = r.text().await.unwrap();
            assert_eq!(
                status, 200,
                "{ending:?}: warm-up on the other instance: {body}"
            );
        }

        end(app, &admin, ending, &setup, current[0]).await;
        let since = Instant::now();

        // The very next request with the old token.
        let r = app.get_auth(SESSION_CACHED, &setup.victim.access).await;
        if r.status() == 401 {
            problem(r, 401, "unauthenticated").await;
        } else {
            not_refused.push((ending, r.status().as_u16()));
        }
        if let Some(other) = other {
            let token = &setup.victim.access;
            match refused_by_other(other, SESSION_CACHED, token, 401, since).await {
                Ok(lag) => {
                    eprintln!("{ending:?}: refused by the other instance at +{lag:?}");
                    problem(
                        other.get_auth(SESSION_CACHED, token).await,
                        401,
                        "unauthenticated",
                    )
                    .await;
                }
                Err(seen) => late_elsewhere.push((ending, seen)),
            }
        }
    }
    // Every row runs; the failure names each path whose old token still got in, and what
    // it got.
    assert_eq!(
        not_refused,
        Vec::new(),
        "ended sessions whose old token was still accepted on {SESSION_CACHED} (path, status)"
    );
    assert_eq!(
        late_elsewhere,
        Vec::new(),
        "ended sessions the other instance did not refuse within {ANNOUNCED_WITHIN:?}"
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RbacChange {
    /// `PATCH /rbac/roles/{id}` without the permission.
    GrantRemovedFromRole,
    /// `DELETE /rbac/roles/{id}`.
    RoleDeleted,
    /// `PUT /users/{id}/roles` without the role.
    RoleRemovedFromUser,
}

async fn every_rbac_change_is_refused_at_once_on_a_cached_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    rbac_changes(&app, None).await;
    app.finish().await;
}

async fn every_rbac_change_is_refused_by_another_instance_within_100_ms(backend: Backend) {
    let Some((a, b)) = two_instances(backend).await else {
        return;
    };
    rbac_changes(&a, Some(&b)).await;
    b.finish().await;
    a.finish().await;
}

/// Makes every kind of RBAC change on `app`; with `other`, also checks the second instance.
async fn rbac_changes(app: &TestApp, other: Option<&TestApp>) {
    let admin = app.admin_session("admin").await;
    let changes = [
        ("viewer-a", RbacChange::GrantRemovedFromRole),
        ("viewer-b", RbacChange::RoleDeleted),
        ("viewer-c", RbacChange::RoleRemovedFromUser),
    ];
    let mut not_refused: Vec<(RbacChange, u16)> = Vec::new();
    let mut late_elsewhere: Vec<(RbacChange, String)> = Vec::new();
    for (role, change) in changes {
        let member = app.new_session(role).await;
        let role_id = app.make_role(role, &["users:read"]).await;
        app.grant_roles(&member.user_id, &["user", role]).await;
        // Warm: the session and the permissions are now cached.
        let r = app.get_auth(PERMISSION_CACHED, &member.access).await;
        assert_eq!(r.status(), 200, "{change:?}: warm-up");
        if let Some(other) = other {
            let r = other.get_auth(PERMISSION_CACHED, &member.access).await;
            assert_eq!(r.status(), 200, "{change:?}: warm-up on the other instance");
        }

        let r = match change {
            RbacChange::GrantRemovedFromRole => {
                app.call(
                    Method::PATCH,
                    &format!("/api/v1/rbac/roles/{role_id}"),
                    &admin.access,
                    Some(json!({"permissions": []})),
                )
                .await
            }
            RbacChange::RoleDeleted => {
                app.call(
                    Method::DELETE,
                    &format!("/api/v1/rbac/roles/{role_id}"),
                    &admin.access,
                    None,
                )
                .await
            }
            RbacChange::RoleRemovedFromUser => {
                app.call(
                    Method::PUT,
                    &format!("/api/v1/users/{}/roles", member.user_id),
                    &admin.access,
                    Some(json!({"roles": ["user"]})),
                )
                .await
            }
        };
        let expected = match change {
            RbacChange::RoleDeleted => 204,
            RbacChange::GrantRemovedFromRole | RbacChange::RoleRemovedFromUser => 200,
        };
        assert_eq!(r.status(), expected, "{change:?}: the change itself");
        let since = Instant::now();

        let r = app.get_auth(PERMISSION_CACHED, &member.access).await;
        if r.status() == 403 {
            problem(r, 403, "forbidden").await;
        } else {
            not_refused.push((change, r.status().as_u16()));
        }
        if let Some(other) = other {
            let token = &member.access;
            match refused_by_other(other, PERMISSION_CACHED, token, 403, since).await {
                Ok(lag) => {
                    eprintln!("{change:?}: refused by the other instance at +{lag:?}");
                    problem(
                        other.get_auth(PERMISSION_CACHED, token).await,
                        403,
                        "forbidden",
                    )
                    .await;
                }
                Err(seen) => late_elsewhere.push((change, seen)),
            }
        }
    }
    assert_eq!(
        not_refused,
        Vec::new(),
        "revoked permissions still honoured on {PERMISSION_CACHED} (change, status)"
    );
    assert_eq!(
        late_elsewhere,
        Vec::new(),
        "revoked permissions the other instance still honoured after {ANNOUNCED_WITHIN:?}"
    );
}
