//! "Refused at once" (contract §4, §6) as the contract writes it, on one instance, both
//! stores: for every path that ends a session, and every kind of RBAC change, the caller's
//! answer is first cached (a 200 on a route whose extractor goes through the session and
//! permission caches, not `/users/me`, which skips them), then the change is made, and the
//! very next request with the old token is refused. No sleep, no retry: a path that forgets
//! to evict the cache still gets a 200 from the warm entry and fails its row.

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem};
use crate::identity::{PASSWORD, Session};
use crate::mfa::base32_decode;

backend_tests!(
    every_session_ending_path_is_refused_at_once_on_a_cached_route,
    every_rbac_change_is_refused_at_once_on_a_cached_route,
);

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
    let admin = app.admin_session("admin").await;
    let mut not_refused: Vec<(Ending, u16)> = Vec::new();
    for &ending in ENDINGS {
        let setup = set_up(&app, ending).await;
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

        end(&app, &admin, ending, &setup, current[0]).await;

        // The very next request with the old token.
        let r = app.get_auth(SESSION_CACHED, &setup.victim.access).await;
        if r.status() == 401 {
            problem(r, 401, "unauthenticated").await;
        } else {
            not_refused.push((ending, r.status().as_u16()));
        }
    }
    // Every row runs; the failure names each path whose old token still got in, and what
    // it got.
    assert_eq!(
        not_refused,
        Vec::new(),
        "ended sessions whose old token was still accepted on {SESSION_CACHED} (path, status)"
    );
    app.finish().await;
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
    let admin = app.admin_session("admin").await;
    let changes = [
        ("viewer-a", RbacChange::GrantRemovedFromRole),
        ("viewer-b", RbacChange::RoleDeleted),
        ("viewer-c", RbacChange::RoleRemovedFromUser),
    ];
    let mut not_refused: Vec<(RbacChange, u16)> = Vec::new();
    for (role, change) in changes {
        let member = app.new_session(role).await;
        let role_id = app.make_role(role, &["users:read"]).await;
        app.grant_roles(&member.user_id, &["user", role]).await;
        // Warm: the session and the permissions are now cached.
        let r = app.get_auth(PERMISSION_CACHED, &member.access).await;
        assert_eq!(r.status(), 200, "{change:?}: warm-up");

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

        let r = app.get_auth(PERMISSION_CACHED, &member.access).await;
        if r.status() == 403 {
            problem(r, 403, "forbidden").await;
        } else {
            not_refused.push((change, r.status().as_u16()));
        }
    }
    assert_eq!(
        not_refused,
        Vec::new(),
        "revoked permissions still honoured on {PERMISSION_CACHED} (change, status)"
    );
    app.finish().await;
}
