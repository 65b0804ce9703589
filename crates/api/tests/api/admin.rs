//! Administrator actions of contract v1.1 (§5) over real HTTP, on both stores: the MFA
//! reset (`DELETE /users/{id}/mfa`) with its anti-escalation rule, and anti-escalation of
//! role edits under concurrency (the caller's permissions are read under the RBAC lock,
//! not before it).

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem};
use crate::identity::{PASSWORD, Session, refresh_cookie};

backend_tests!(
    mfa_reset_turns_mfa_off_and_ends_every_session,
    mfa_reset_is_idempotent_and_needs_every_permission_of_the_target,
    role_grant_racing_the_loss_of_that_permission_never_escalates,
    role_assignment_racing_the_loss_of_its_permission_never_escalates,
);

/// What a user with MFA on has: TOTP secret, live tokens from an MFA login, and an
/// `mfaToken` of a second login still waiting for its code.
pub(crate) struct MfaUser {
    pub(crate) session: Session,
    secret: Vec<u8>,
    pending_mfa_token: String,
}

impl TestApp {
    fn totp_now(&self, secret: &[u8]) -> String {
        let now = self.state.clock.now().unix_timestamp();
        rampart_core::totp::code_at_step(secret, rampart_core::totp::step_of(now))
    }

    async fn password_login_mfa_token(&self, email: &str) -> String {
        let r = self.login(email, PASSWORD).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["mfaRequired"], true, "{body}");
        body["mfaToken"].as_str().unwrap().to_owned()
    }

    /// Registers a user and turns its MFA on through the store (test set-up only: the
    /// HTTP enrolment has tests of its own), then logs it in with password and code, and
    /// starts a second login that stops at the `mfaToken`.
    pub(crate) async fn mfa_user(&self, tag: &str) -> MfaUser {
        let registered = self.new_session(tag).await;
        let id = Uuid::parse_str(&registered.user_id).unwrap();
        let secret = rampart_core::totp::generate_secret().unwrap();
        let place = rampart_core::crypto::Place {
            table: "users",
            column: "totp_secret",
            row_id: &registered.user_id,
        };
        let sealed = self.state.data_keys.encrypt(&secret, &place).unwrap();
        let now_ms = self.state.clock.now_ms();
        rampart_store::mfa::set_pending_secret(&self.state.db, id, &sealed, now_ms)
            .await
            .unwrap();
        let step = rampart_core::totp::step_of(self.state.clock.now().unix_timestamp());
        let event = rampart_core::audit::NewAuditEvent::new(
            "auth.mfa_enabled",
            rampart_core::audit::Outcome::Success,
        );
        let epoch = rampart_store::users::find_credentials(
            &self.state.db,
            &rampart_core::users::normalize_email(&registered.email),
        )
        .await
        .unwrap()
        .unwrap()
        .credential_epoch;
        let ended = rampart_store::mfa::enable(
            &self.state.db,
            id,
            epoch,
            &sealed,
            step - 1,
            &["a-recovery-code-digest".to_owned()],
            Uuid::now_v7(),
            now_ms,
            &event,
        )
        .await
        .unwrap();
        self.state.sessions_ended(&ended);

        let token = self.password_login_mfa_token(&registered.email).await;
        let r = self
            .post_json(
                "/api/v1/auth/mfa/verify",
                json!({"mfaToken": token, "code": self.totp_now(&secret)}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let refresh = refresh_cookie(&r).unwrap();
        let body: Value = r.json().await.unwrap();
        let session = Session {
            email: registered.email.clone(),
            user_id: registered.user_id.clone(),
            access: body["accessToken"].as_str().unwrap().to_owned(),
            refresh,
        };
        let pending_mfa_token = self.password_login_mfa_token(&registered.email).await;
        // The next code is of the next step: the one just used cannot be replayed.
        self.clock.advance(time::Duration::seconds(30));
        MfaUser {
            session,
            secret,
            pending_mfa_token,
        }
    }

    pub(crate) async fn reset_mfa(&self, caller: &Session, user_id: &str) -> reqwest::Response {
        self.call(
            Method::DELETE,
            &format!("/api/v1/users/{user_id}/mfa"),
            &caller.access,
            None,
        )
        .await
    }

    async fn mfa_enabled(&self, user_id: &str) -> bool {
        let id = Uuid::parse_str(user_id).unwrap();
        rampart_store::users::get(&self.state.db, id)
            .await
            .unwrap()
            .unwrap()
            .mfa_enabled
    }

    async fn events_of(&self, action: &str) -> Vec<rampart_core::audit::AuditRecord> {
        self.audit_events()
            .await
            .into_iter()
            .filter(|e| e.action == action)
            .collect()
    }
}

async fn mfa_reset_turns_mfa_off_and_ends_every_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("root").await;
    let owner = app.mfa_user("owner").await;
    // Before: the tokens work and a login asks for the second factor.
    assert_eq!(
        app.get_auth("/api/v1/users/me", &owner.session.access)
            .await
            .status(),
        200
    );
    assert!(app.mfa_enabled(&owner.session.user_id).await);

    let r = app.reset_mfa(&admin, &owner.session.user_id).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.text().await.unwrap(), "");

    // Every session ended at once: the access token and the refresh token are refused.
    problem(
        app.get_auth("/api/v1/users/me", &owner.session.access)
            .await,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(app.refresh(&owner.session.refresh).await.status(), 401);
    // The login waiting for its code is dead, even with a code of the old secret.
    problem(
        app.post_json(
            "/api/v1/auth/mfa/verify",
            json!({"mfaToken": owner.pending_mfa_token, "code": app.totp_now(&owner.secret)}),
        )
        .await,
        401,
        "unauthenticated",
    )
    .await;
    // A password login completes without a second factor, and the user view says so.
    let r = app.login(&owner.session.email, PASSWORD).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body.get("mfaRequired").is_none(), "{body}");
    let access = body["accessToken"].as_str().unwrap().to_owned();
    let me: Value = app
        .get_auth("/api/v1/users/me", &access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["mfaEnabled"], false);
    // The administrator's own session is untouched.
    assert_eq!(
        app.get_auth("/api/v1/users/me", &admin.access)
            .await
            .status(),
        200
    );

    let events = app.events_of("auth.mfa_reset").await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(
        (
            event.actor_id.map(|id| id.to_string()),
            event.target_type.as_deref(),
            event.target_id.as_deref(),
            event.outcome,
        ),
        (
            Some(admin.user_id.clone()),
            Some("user"),
            Some(owner.session.user_id.as_str()),
            rampart_core::audit::Outcome::Success,
        )
    );
    assert!(event.request_id.is_some());
    // The only live session of the owner is the login made after the reset.
    let owner_id = Uuid::parse_str(&owner.session.user_id).unwrap();
    let live =
        rampart_store::sessions::list_live(&app.state.db, owner_id, app.state.clock.now_ms())
            .await
            .unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    app.finish().await;
}

async fn mfa_reset_is_idempotent_and_needs_every_permission_of_the_target(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("root").await;
    let owner = app.mfa_user("owner").await;
    assert_eq!(
        app.reset_mfa(&admin, &owner.session.user_id).await.status(),
        204
    );
    // Again, MFA already off: the same answer, nothing changed, nothing recorded.
    let fresh = app.session_for(&owner.session.email, PASSWORD).await;
    assert_eq!(
        app.reset_mfa(&admin, &owner.session.user_id).await.status(),
        204
    );
    assert_eq!(app.events_of("auth.mfa_reset").await.len(), 1);
    assert_eq!(
        app.get_auth("/api/v1/users/me", &fresh.access)
            .await
            .status(),
        200
    );

    // A member (no users:update) is refused by the route's policy.
    let other = app.mfa_user("other").await;
    let member = app.new_session("member").await;
    problem(
        app.reset_mfa(&member, &other.session.user_id).await,
        403,
        "forbidden",
    )
    .await;
    assert!(app.mfa_enabled(&other.session.user_id).await);

    // users:update, but not every permission of the target: refused, MFA stays on.
    app.make_role("desk", &["users:update", "users:read"]).await;
    let desk = app.new_session("desk").await;
    app.grant_roles(&desk.user_id, &["desk", "user"]).await;
    let target_admin = app.mfa_user("boss").await;
    app.grant_roles(&target_admin.session.user_id, &["admin", "user"])
        .await;
    problem(
        app.reset_mfa(&desk, &target_admin.session.user_id).await,
        403,
        "forbidden",
    )
    .await;
    assert!(app.mfa_enabled(&target_admin.session.user_id).await);
    assert_eq!(
        app.get_auth("/api/v1/users/me", &target_admin.session.access)
            .await
            .status(),
        200
    );
    // A disabled admin still counts as holding its permissions.
    app.call(
        Method::PATCH,
        &format!("/api/v1/users/{}", target_admin.session.user_id),
        &admin.access,
        Some(json!({"status": "disabled"})),
    )
    .await
    .error_for_status()
    .unwrap();
    problem(
        app.reset_mfa(&desk, &target_admin.session.user_id).await,
        403,
        "forbidden",
    )
    .await;
    assert!(app.mfa_enabled(&target_admin.session.user_id).await);
    // Within the caller's permissions (a plain member): allowed.
    assert_eq!(
        app.reset_mfa(&desk, &other.session.user_id).await.status(),
        204
    );
    assert!(!app.mfa_enabled(&other.session.user_id).await);
    assert_eq!(app.events_of("auth.mfa_reset").await.len(), 2);

    // Unknown, deleted and malformed ids.
    problem(
        app.reset_mfa(&admin, &Uuid::now_v7().to_string()).await,
        404,
        "not_found",
    )
    .await;
    let gone = app.mfa_user("gone").await;
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/v1/users/{}", gone.session.user_id),
            &admin.access,
            None,
        )
        .await
        .status(),
        204
    );
    problem(
        app.reset_mfa(&admin, &gone.session.user_id).await,
        404,
        "not_found",
    )
    .await;
    problem(
        app.reset_mfa(&admin, "not-a-uuid").await,
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(app.events_of("auth.mfa_reset").await.len(), 2);
    app.finish().await;
}

const RACE_ITERATIONS: usize = 40;

/// One request as the race sends it.
struct Call {
    method: Method,
    path: String,
    token: String,
    body: Value,
}

/// Sends both calls released by one barrier and returns their statuses.
async fn race(app: &Arc<TestApp>, first: Call, second: Call) -> (u16, u16) {
    let barrier = Arc::new(Barrier::new(2));
    let send = |call: Call| {
        let (app, barrier) = (app.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            app.call(call.method, &call.path, &call.token, Some(call.body))
                .await
                .status()
                .as_u16()
        })
    };
    let (first, second) = (send(first), send(second));
    (first.await.unwrap(), second.await.unwrap())
}

/// Sets a role's grants through the store (test set-up only, not a `role.updated`).
async fn set_grants(app: &TestApp, role_id: &str, permissions: &[&str]) {
    let permissions: Vec<String> = permissions.iter().map(|p| (*p).to_owned()).collect();
    rampart_store::rbac::update_role(
        &app.state.db,
        None,
        Uuid::parse_str(role_id).unwrap(),
        None,
        Some(&permissions),
        app.state.clock.now_ms(),
        &rampart_core::audit::NewAuditEvent::new(
            "test.reset",
            rampart_core::audit::Outcome::Success,
        ),
    )
    .await
    .unwrap();
    app.state.permissions_changed();
}

/// The targets of the last `n` events among `actions`, in commit (chain) order.
async fn last_targets(app: &TestApp, actions: &[&str], n: usize) -> Vec<String> {
    let events: Vec<String> = app
        .audit_events()
        .await
        .into_iter()
        .filter(|e| actions.contains(&e.action.as_str()))
        .map(|e| e.target_id.unwrap_or_default())
        .collect();
    events[events.len() - n..].to_vec()
}

/// The caller's role `granter` holds `audit:read`; an administrator takes it away while the
/// caller grants it to another role, both released by one barrier. Whatever the order,
/// the caller's grant may only have committed while the caller still held `audit:read`:
/// then its `role.updated` comes before the administrator's in the audit chain (which is
/// appended in commit order); otherwise it is 403 and the other role grants nothing.
async fn role_grant_racing_the_loss_of_that_permission_never_escalates(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let admin = app.admin_session("root").await;
    let granter_role = app
        .make_role("granter", &["roles:write", "roles:read", "audit:read"])
        .await;
    let other_role = app.make_role("other", &[]).await;
    let caller = app.new_session("caller").await;
    app.grant_roles(&caller.user_id, &["granter", "user"]).await;
    let (mut granted_first, mut refused) = (0, 0);
    for i in 0..RACE_ITERATIONS {
        set_grants(
            &app,
            &granter_role,
            &["roles:write", "roles:read", "audit:read"],
        )
        .await;
        set_grants(&app, &other_role, &[]).await;
        let (take_away, grant) = race(
            &app,
            Call {
                method: Method::PATCH,
                path: format!("/api/v1/rbac/roles/{granter_role}"),
                token: admin.access.clone(),
                body: json!({"permissions": ["roles:write", "roles:read"]}),
            },
            Call {
                method: Method::PATCH,
                path: format!("/api/v1/rbac/roles/{other_role}"),
                token: caller.access.clone(),
                body: json!({"permissions": ["audit:read"]}),
            },
        )
        .await;
        assert_eq!(take_away, 200, "iteration {i}");
        let other_now =
            rampart_store::rbac::get_role(&app.state.db, Uuid::parse_str(&other_role).unwrap())
                .await
                .unwrap()
                .unwrap()
                .permissions;
        match grant {
            200 => {
                granted_first += 1;
                assert_eq!(
                    last_targets(&app, &["role.updated"], 2).await,
                    [other_role.as_str(), granter_role.as_str()],
                    "iteration {i}: the grant committed after the caller lost audit:read"
                );
                assert_eq!(other_now, ["audit:read"], "iteration {i}");
            }
            403 => {
                refused += 1;
                assert_eq!(
                    last_targets(&app, &["role.updated"], 1).await,
                    [granter_role.as_str()],
                    "iteration {i}"
                );
                assert!(other_now.is_empty(), "iteration {i}: {other_now:?}");
            }
            status => panic!("iteration {i}: the grant got {status}"),
        }
    }
    assert_eq!(granted_first + refused, RACE_ITERATIONS);
    eprintln!("{backend:?}: {granted_first} granted first, {refused} refused");
    let app = Arc::into_inner(app).unwrap();
    app.finish().await;
}

/// As above for `PUT /users/{id}/roles`: the caller assigns a role granting `audit:read`
/// while an administrator takes `audit:read` away from the caller's own role.
async fn role_assignment_racing_the_loss_of_its_permission_never_escalates(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let admin = app.admin_session("root").await;
    let assigner_role = app
        .make_role("assigner", &["roles:assign", "users:read", "audit:read"])
        .await;
    app.make_role("auditor", &["audit:read"]).await;
    let caller = app.new_session("caller").await;
    app.grant_roles(&caller.user_id, &["assigner", "user"])
        .await;
    let target = app.new_session("target").await;
    let target_id = Uuid::parse_str(&target.user_id).unwrap();
    let (mut granted_first, mut refused) = (0, 0);
    for i in 0..RACE_ITERATIONS {
        set_grants(
            &app,
            &assigner_role,
            &["roles:assign", "users:read", "audit:read"],
        )
        .await;
        rampart_store::rbac::set_user_roles(
            &app.state.db,
            None,
            target_id,
            &["user".to_owned()],
            app.state.clock.now_ms(),
            &rampart_core::audit::NewAuditEvent::new(
                "test.reset",
                rampart_core::audit::Outcome::Success,
            ),
        )
        .await
        .unwrap();
        let (take_away, grant) = race(
            &app,
            Call {
                method: Method::PATCH,
                path: format!("/api/v1/rbac/roles/{assigner_role}"),
                token: admin.access.clone(),
                body: json!({"permissions": ["roles:assign", "users:read"]}),
            },
            Call {
                method: Method::PUT,
                path: format!("/api/v1/users/{}/roles", target.user_id),
                token: caller.access.clone(),
                body: json!({"roles": ["auditor", "user"]}),
            },
        )
        .await;
        assert_eq!(take_away, 200, "iteration {i}");
        let roles_now = rampart_store::users::get(&app.state.db, target_id)
            .await
            .unwrap()
            .unwrap()
            .roles;
        let actions = ["role.updated", "user.roles_changed"];
        match grant {
            200 => {
                granted_first += 1;
                assert_eq!(
                    last_targets(&app, &actions, 2).await,
                    [target.user_id.as_str(), assigner_role.as_str()],
                    "iteration {i}: the assignment committed after the caller lost audit:read"
                );
                assert_eq!(roles_now, ["auditor", "user"], "iteration {i}");
            }
            403 => {
                refused += 1;
                assert_eq!(
                    last_targets(&app, &actions, 1).await,
                    [assigner_role.as_str()],
                    "iteration {i}"
                );
                assert_eq!(roles_now, ["user"], "iteration {i}");
            }
            status => panic!("iteration {i}: the assignment got {status}"),
        }
    }
    assert_eq!(granted_first + refused, RACE_ITERATIONS);
    eprintln!("{backend:?}: {granted_first} assigned first, {refused} refused");
    let app = Arc::into_inner(app).unwrap();
    app.finish().await;
}
