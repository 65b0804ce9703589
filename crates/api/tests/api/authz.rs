//! Authorisation (contract §5–8) over real HTTP, on both stores: deny-by-default routes,
//! user and role administration with the anti-escalation rules, owned notes, the audit API.

use std::collections::BTreeMap;

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem};
use crate::identity::{PASSWORD, Session};

/// Every route of the API and the policy it must declare, except the owned modules' routes
/// (see [`expected_policies`]). A route added without an entry here, or with another
/// policy, fails `routes_and_policies_match_the_openapi_document`.
const POLICIES: &[(&str, &str, &str)] = &[
    ("GET", "/.well-known/jwks.json", "public"),
    ("GET", "/health/live", "public"),
    ("GET", "/health/ready", "public"),
    ("POST", "/api/v1/auth/register", "public"),
    ("POST", "/api/v1/auth/login", "public"),
    ("POST", "/api/v1/auth/refresh", "public"),
    ("POST", "/api/v1/auth/logout", "public"),
    ("POST", "/api/v1/auth/logout-all", "authenticated"),
    ("GET", "/api/v1/auth/sessions", "authenticated"),
    ("DELETE", "/api/v1/auth/sessions/{id}", "authenticated"),
    ("POST", "/api/v1/auth/password", "authenticated"),
    (
        "POST",
        "/api/v1/auth/passkeys/register/start",
        "authenticated",
    ),
    (
        "POST",
        "/api/v1/auth/passkeys/register/finish",
        "authenticated",
    ),
    ("GET", "/api/v1/auth/passkeys", "authenticated"),
    ("PATCH", "/api/v1/auth/passkeys/{id}", "authenticated"),
    ("DELETE", "/api/v1/auth/passkeys/{id}", "authenticated"),
    ("POST", "/api/v1/auth/passkeys/login/start", "public"),
    ("POST", "/api/v1/auth/passkeys/login/finish", "public"),
    ("POST", "/api/v1/auth/mfa/verify", "public"),
    ("POST", "/api/v1/auth/mfa/totp/setup", "authenticated"),
    ("POST", "/api/v1/auth/mfa/totp/enable", "authenticated"),
    ("POST", "/api/v1/auth/email/verify/request", "authenticated"),
    ("POST", "/api/v1/auth/email/verify/confirm", "public"),
    ("POST", "/api/v1/auth/email/change/confirm", "public"),
    ("POST", "/api/v1/users/me/email", "authenticated"),
    ("POST", "/api/v1/users/me/delete", "authenticated"),
    ("GET", "/api/v1/users/me/export", "authenticated"),
    ("POST", "/api/v1/auth/mfa/totp/disable", "authenticated"),
    ("POST", "/api/v1/auth/password-reset/request", "public"),
    ("POST", "/api/v1/auth/password-reset/confirm", "public"),
    ("GET", "/api/v1/users/me", "authenticated"),
    ("PATCH", "/api/v1/users/me", "authenticated"),
    ("GET", "/api/v1/users", "permission:users:read"),
    ("GET", "/api/v1/users/{id}", "permission:users:read"),
    ("PATCH", "/api/v1/users/{id}", "permission:users:update"),
    ("DELETE", "/api/v1/users/{id}", "permission:users:delete"),
    (
        "DELETE",
        "/api/v1/users/{id}/sessions",
        "permission:users:update",
    ),
    (
        "DELETE",
        "/api/v1/users/{id}/mfa",
        "permission:users:update",
    ),
    ("PUT", "/api/v1/users/{id}/roles", "permission:roles:assign"),
    ("GET", "/api/v1/rbac/permissions", "permission:roles:read"),
    ("GET", "/api/v1/rbac/roles", "permission:roles:read"),
    ("POST", "/api/v1/rbac/roles", "permission:roles:write"),
    ("PATCH", "/api/v1/rbac/roles/{id}", "permission:roles:write"),
    (
        "DELETE",
        "/api/v1/rbac/roles/{id}",
        "permission:roles:write",
    ),
    ("GET", "/api/v1/audit/events", "permission:audit:read"),
    ("GET", "/api/v1/audit/verify", "permission:audit:read"),
    ("GET", "/api/v1/users/me/permissions", "authenticated"),
];

impl TestApp {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Response {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    /// Gives an existing user these roles directly in the store (test set-up only).
    pub async fn grant_roles(&self, user_id: &str, roles: &[&str]) {
        let id = uuid::Uuid::parse_str(user_id).unwrap();
        let names: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        let event = rampart_core::audit::NewAuditEvent::new(
            "user.roles_changed",
            rampart_core::audit::Outcome::Success,
        );
        rampart_store::rbac::set_user_roles(
            &self.state.db,
            None,
            id,
            &names,
            self.state.clock.now_ms(),
            &event,
        )
        .await
        .unwrap();
        self.state.permissions_changed();
    }

    /// A fresh user holding the `admin` role.
    pub async fn admin_session(&self, tag: &str) -> Session {
        let s = self.new_session(tag).await;
        self.grant_roles(&s.user_id, &["admin", "user"]).await;
        s
    }

    /// Creates a custom role through the store and returns its id.
    pub async fn make_role(&self, name: &str, permissions: &[&str]) -> String {
        let perms: Vec<String> = permissions.iter().map(|p| (*p).to_owned()).collect();
        let event = rampart_core::audit::NewAuditEvent::new(
            "role.created",
            rampart_core::audit::Outcome::Success,
        );
        let role = rampart_store::rbac::create_role(
            &self.state.db,
            None,
            &rampart_core::rbac::RoleName::parse(name, "name").unwrap(),
            "test role",
            &perms,
            self.state.clock.now_ms(),
            &event,
        )
        .await
        .unwrap();
        self.state.permissions_changed();
        role.id.to_string()
    }
}

fn body_for(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("PATCH", "/api/v1/users/{id}") => Some(json!({"displayName": "X"})),
        ("PUT", "/api/v1/users/{id}/roles") => Some(json!({"roles": ["user"]})),
        ("POST", "/api/v1/rbac/roles") => {
            Some(json!({"name": "r1", "description": "d", "permissions": []}))
        }
        ("PATCH", "/api/v1/rbac/roles/{id}") => Some(json!({"description": "d"})),
        ("PATCH", "/api/v1/users/me") => Some(json!({"displayName": "X"})),
        ("POST", "/api/v1/auth/mfa/totp/enable") => {
            Some(json!({"code": "123456", "password": "x"}))
        }
        ("POST", "/api/v1/auth/mfa/totp/disable") => {
            Some(json!({"password": "x", "code": "123456"}))
        }
        ("POST", "/api/v1/auth/password") => {
            Some(json!({"currentPassword": "x", "newPassword": "y"}))
        }
        _ => None,
    }
}

backend_tests!(
    routes_and_policies_match_the_openapi_document,
    every_protected_route_refuses_without_token_or_permission,
    user_administration,
    disabling_or_deleting_a_user_ends_their_sessions_at_once,
    anti_escalation_rules,
    last_holder_of_roles_assign_is_protected,
    role_administration,
    grants_and_revocations_take_effect_on_the_next_request,
    mass_assignment_is_rejected,
    audit_api_filters_and_paginates,
    contract_events_are_recorded_with_actor_and_request_id,
);

/// [`POLICIES`], plus the routes of every owned module the document marks
/// (`x-rampart-owned`): reads need `<feature>:read`, the rest `<feature>:write`, so a new
/// owned module needs no entry here.
fn expected_policies(doc: &Value) -> BTreeMap<(String, String), String> {
    let mut expected: BTreeMap<(String, String), String> = POLICIES
        .iter()
        .map(|(m, p, pol)| (((*m).to_owned(), (*p).to_owned()), (*pol).to_owned()))
        .collect();
    for (method, path, op) in crate::openapi::operations(doc) {
        if let Some(feature) = op["x-rampart-owned"]["feature"].as_str() {
            let action = if method == "GET" { "read" } else { "write" };
            expected.insert((method, path), format!("permission:{feature}:{action}"));
        }
    }
    expected
}

async fn routes_and_policies_match_the_openapi_document(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut documented = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let policy = op["x-rampart-policy"].as_str().unwrap_or("<none>");
            documented.insert((method.to_uppercase(), path.clone()), policy.to_owned());
        }
    }
    let expected = expected_policies(&doc);
    assert!(expected.contains_key(&("PATCH".to_owned(), "/api/v1/notes/{id}".to_owned())));
    assert_eq!(documented, expected);
    app.finish().await;
}

async fn every_protected_route_refuses_without_token_or_permission(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // A plain member: role `user` (`user_defaults()`) only.
    let member = app.new_session("member").await;
    let some_id = uuid::Uuid::now_v7().to_string();
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut denied = 0;
    for ((method, path), policy) in &expected_policies(&doc) {
        let (method, path) = (method.as_str(), path.as_str());
        if policy == "public" {
            continue;
        }
        let url = path.replace("{id}", &some_id);
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = app.client.request(m.clone(), app.url(&url));
        if let Some(body) = body_for(method, path) {
            req = req.json(&body);
        }
        problem(req.send().await.unwrap(), 401, "unauthenticated").await;
        let permission = policy.strip_prefix("permission:");
        if let Some(p) = permission
            && !rampart_core::rbac::user_defaults().contains(&p)
        {
            let r = app
                .call(m, &url, &member.access, body_for(method, path))
                .await;
            assert_eq!(r.status(), 403, "{method} {path} must need {p}");
            problem(r, 403, "forbidden").await;
            denied += 1;
        }
    }
    let events = app.audit_events().await;
    let denials: Vec<_> = events
        .iter()
        .filter(|e| e.action == "authz.denied")
        .collect();
    assert_ne!(denied, 0, "no route needs a permission a member lacks");
    assert_eq!(denials.len(), denied);
    assert!(
        denials
            .iter()
            .all(|e| e.actor_id.map(|a| a.to_string()) == Some(member.user_id.clone()))
    );
    assert!(
        denials
            .iter()
            .all(|e| e.outcome == rampart_core::audit::Outcome::Denied)
    );
    app.finish().await;
}

async fn user_administration(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("admin").await;
    let mut ids = vec![admin.user_id.clone()];
    for i in 0..4 {
        ids.push(app.new_session(&format!("u{i}")).await.user_id);
    }
    // Pagination: 5 users, pages of 2.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/users?limit=2&cursor={c}"),
            None => "/api/v1/users?limit=2".to_owned(),
        };
        let r = app.get_auth(&path, &admin.access).await;
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
            assert!(item.get("passwordHash").is_none());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    for bad in [
        "?limit=0",
        "?limit=101",
        "?limit=abc",
        "?cursor=garbage",
        "?sort=email",
        "?limit=1&limit=2",
    ] {
        let r = app
            .get_auth(&format!("/api/v1/users{bad}"), &admin.access)
            .await;
        let doc = problem(r, 400, "validation_failed").await;
        assert!(
            doc["errors"][0]["field"]
                .as_str()
                .unwrap()
                .starts_with("query"),
            "{bad}: {doc}"
        );
    }
    // Get, patch, 404s.
    let target = &ids[1];
    let r = app
        .get_auth(&format!("/api/v1/users/{target}"), &admin.access)
        .await;
    assert_eq!(r.status(), 200);
    problem(
        app.get_auth(
            &format!("/api/v1/users/{}", uuid::Uuid::now_v7()),
            &admin.access,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let doc = problem(
        app.get_auth("/api/v1/users/not-a-uuid", &admin.access)
            .await,
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(doc["errors"][0]["field"], "path.id");
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{target}"),
            &admin.access,
            Some(json!({"displayName": "Renamed"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["displayName"], "Renamed");
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{target}"),
            &admin.access,
            Some(json!({"status": "frozen"})),
        )
        .await;
    problem(r, 400, "validation_failed").await;
    app.finish().await;
}

async fn disabling_or_deleting_a_user_ends_their_sessions_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("admin").await;
    let victim = app.new_session("disabled").await;
    assert_eq!(
        app.get_auth("/api/v1/auth/sessions", &victim.access)
            .await
            .status(),
        200
    );
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", victim.user_id),
            &admin.access,
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "disabled");
    problem(
        app.get_auth("/api/v1/auth/sessions", &victim.access).await,
        401,
        "unauthenticated",
    )
    .await;
    problem(app.refresh(&victim.refresh).await, 401, "unauthenticated").await;
    problem(
        app.login(&victim.email, PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    // Re-enabled: can log in again.
    app.call(
        Method::PATCH,
        &format!("/api/v1/users/{}", victim.user_id),
        &admin.access,
        Some(json!({"status": "active"})),
    )
    .await;
    assert_eq!(app.login(&victim.email, PASSWORD).await.status(), 200);

    let gone = app.new_session("deleted").await;
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{}", gone.user_id),
            &admin.access,
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    problem(
        app.get_auth("/api/v1/users/me", &gone.access).await,
        401,
        "unauthenticated",
    )
    .await;
    problem(
        app.get_auth(&format!("/api/v1/users/{}", gone.user_id), &admin.access)
            .await,
        404,
        "not_found",
    )
    .await;
    problem(
        app.login(&gone.email, PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{}", gone.user_id),
            &admin.access,
            None,
        )
        .await;
    problem(r, 404, "not_found").await;

    let other = app.new_session("ended").await;
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{}/sessions", other.user_id),
            &admin.access,
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    problem(
        app.get_auth("/api/v1/auth/sessions", &other.access).await,
        401,
        "unauthenticated",
    )
    .await;
    app.finish().await;
}

async fn put_roles(app: &TestApp, who: &Session, user: &str, roles: Value) -> Response {
    app.call(
        Method::PUT,
        &format!("/api/v1/users/{user}/roles"),
        &who.access,
        Some(json!({"roles": roles})),
    )
    .await
}

async fn anti_escalation_rules(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let _admin = app.admin_session("root").await;
    // A helpdesk role: may read users and assign roles, nothing else.
    let helpdesk_role = app
        .make_role("helpdesk", &["users:read", "roles:assign", "roles:read"])
        .await;
    let _ = helpdesk_role;
    let desk = app.new_session("desk").await;
    app.grant_roles(&desk.user_id, &["user", "helpdesk"]).await;
    let target = app.new_session("target").await;
    // Cannot grant admin (holds permissions the helpdesk lacks).
    problem(
        put_roles(&app, &desk, &target.user_id, json!(["user", "admin"])).await,
        403,
        "forbidden",
    )
    .await;
    // Cannot change its own roles, even to something harmless.
    problem(
        put_roles(&app, &desk, &desk.user_id, json!(["user"])).await,
        403,
        "forbidden",
    )
    .await;
    // A role within its own permissions is fine.
    let r = put_roles(&app, &desk, &target.user_id, json!(["user", "helpdesk"])).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["roles"],
        json!(["helpdesk", "user"])
    );
    // Unknown role → 400; missing user → 404.
    problem(
        put_roles(&app, &desk, &target.user_id, json!(["nope"])).await,
        400,
        "validation_failed",
    )
    .await;
    problem(
        put_roles(
            &app,
            &desk,
            &uuid::Uuid::now_v7().to_string(),
            json!(["user"]),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    // Creating a role needs roles:write and only grants what one holds.
    let writer_role = app
        .make_role("writer", &["roles:write", "roles:read", "notes:read"])
        .await;
    let _ = writer_role;
    let writer = app.new_session("writer").await;
    app.grant_roles(&writer.user_id, &["writer"]).await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/rbac/roles",
            &writer.access,
            Some(json!({"name": "sneaky", "description": "d", "permissions": ["users:delete"]})),
        )
        .await;
    problem(r, 403, "forbidden").await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/rbac/roles",
            &writer.access,
            Some(json!({"name": "reader", "description": "d", "permissions": ["notes:read"]})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/rbac/roles/{id}"),
            &writer.access,
            Some(json!({"permissions": ["notes:read", "audit:read"]})),
        )
        .await;
    problem(r, 403, "forbidden").await;
    app.finish().await;
}

async fn last_holder_of_roles_assign_is_protected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let only = app.admin_session("only").await;
    let disable = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", only.user_id),
            &only.access,
            Some(json!({"status": "disabled"})),
        )
        .await;
    problem(disable, 403, "forbidden").await;
    let delete = app
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{}", only.user_id),
            &only.access,
            None,
        )
        .await;
    problem(delete, 403, "forbidden").await;
    assert_eq!(
        app.get_auth("/api/v1/users/me", &only.access)
            .await
            .status(),
        200
    );
    // With a second admin, the first may go.
    let second = app.admin_session("second").await;
    let delete = app
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{}", only.user_id),
            &second.access,
            None,
        )
        .await;
    assert_eq!(delete.status(), 204);
    // `third` holds roles:assign (and roles:write) through `assigner`; `second` through
    // `admin`.
    let third = app.new_session("third").await;
    let assign = app
        .make_role(
            "assigner",
            &["roles:assign", "roles:write", "roles:read", "notes:read"],
        )
        .await;
    app.grant_roles(&third.user_id, &["assigner"]).await;
    let r = app
        .call(
            Method::PUT,
            &format!("/api/v1/users/{}/roles", second.user_id),
            &third.access,
            Some(json!({"roles": ["user"]})),
        )
        .await;
    // Another holder remains (`third`), so `second` losing admin is allowed…
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["roles"], json!(["user"]));
    // …and takes effect at once: `second` may no longer read roles.
    problem(
        app.get_auth("/api/v1/rbac/roles", &second.access).await,
        403,
        "forbidden",
    )
    .await;
    // Now `third` is the last holder: a role edit that would take roles:assign from it is
    // refused, and so is deleting the role that grants it.
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/rbac/roles/{assign}"),
            &third.access,
            Some(json!({"permissions": ["roles:write", "roles:read", "notes:read"]})),
        )
        .await;
    problem(r, 403, "forbidden").await;
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/rbac/roles/{assign}"),
            &third.access,
            None,
        )
        .await;
    problem(r, 403, "forbidden").await;
    // The role is unchanged: it still grants roles:assign.
    let roles: Value = app
        .get_auth("/api/v1/rbac/roles", &third.access)
        .await
        .json()
        .await
        .unwrap();
    let assigner: Vec<&Value> = roles["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"] == assign.as_str())
        .collect();
    assert_eq!(assigner.len(), 1, "{roles}");
    assert_eq!(
        assigner[0]["permissions"],
        json!(["notes:read", "roles:assign", "roles:read", "roles:write"])
    );
    app.finish().await;
}

async fn role_administration(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("admin").await;
    let perms: Value = app
        .get_auth("/api/v1/rbac/permissions", &admin.access)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = perms["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in rampart_core::rbac::all_permissions() {
        assert!(names.contains(&p.name), "{} missing", p.name);
    }
    assert!(
        perms["items"][0].get("feature").is_some()
            && perms["items"][0].get("description").is_some()
    );
    let roles: Value = app
        .get_auth("/api/v1/rbac/roles", &admin.access)
        .await
        .json()
        .await
        .unwrap();
    let items = roles["items"].as_array().unwrap();
    let admin_role = items.iter().find(|r| r["name"] == "admin").unwrap();
    let user_role = items.iter().find(|r| r["name"] == "user").unwrap();
    assert_eq!(admin_role["builtIn"], true);
    assert_eq!(
        admin_role["permissions"].as_array().unwrap().len(),
        names.len()
    );
    let mut defaults = rampart_core::rbac::user_defaults();
    defaults.sort_unstable();
    assert_eq!(user_role["permissions"], json!(defaults));
    for key in [
        "id",
        "name",
        "description",
        "permissions",
        "builtIn",
        "createdAt",
        "updatedAt",
    ] {
        assert!(admin_role.get(key).is_some(), "{key}");
    }
    // Built-ins cannot be changed or deleted.
    let admin_id = admin_role["id"].as_str().unwrap();
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/rbac/roles/{admin_id}"),
            &admin.access,
            Some(json!({"description": "x"})),
        )
        .await;
    problem(r, 409, "conflict").await;
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/rbac/roles/{admin_id}"),
            &admin.access,
            None,
        )
        .await;
    problem(r, 409, "conflict").await;
    // Create, conflict, invalid name, unknown permission, update, delete.
    let create = |body: Value| {
        app.call(
            Method::POST,
            "/api/v1/rbac/roles",
            &admin.access,
            Some(body),
        )
    };
    let r = create(
        json!({"name": "auditor", "description": "reads the trail", "permissions": ["audit:read"]}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let role: Value = r.json().await.unwrap();
    assert_eq!(role["builtIn"], false);
    problem(
        create(json!({"name": "auditor", "description": "", "permissions": []})).await,
        409,
        "conflict",
    )
    .await;
    problem(
        create(json!({"name": "Bad Name", "description": "", "permissions": []})).await,
        400,
        "validation_failed",
    )
    .await;
    problem(
        create(json!({"name": "ghostly", "description": "", "permissions": ["ghost:read"]})).await,
        400,
        "validation_failed",
    )
    .await;
    problem(
        create(json!({"name": "ghostly", "description": "", "permissions": ["not a permission"]}))
            .await,
        400,
        "validation_failed",
    )
    .await;
    let id = role["id"].as_str().unwrap();
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/rbac/roles/{id}"),
            &admin.access,
            Some(json!({"permissions": ["audit:read", "users:read"]})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["permissions"],
        json!(["audit:read", "users:read"])
    );
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/rbac/roles/{id}"),
            &admin.access,
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/rbac/roles/{id}"),
            &admin.access,
            None,
        )
        .await;
    problem(r, 404, "not_found").await;
    app.finish().await;
}

async fn grants_and_revocations_take_effect_on_the_next_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("admin").await;
    let member = app.new_session("member").await;
    problem(
        app.get_auth("/api/v1/users", &member.access).await,
        403,
        "forbidden",
    )
    .await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/rbac/roles",
            &admin.access,
            Some(json!({"name": "viewer", "description": "", "permissions": ["users:read"]})),
        )
        .await;
    let role_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.call(
        Method::PUT,
        &format!("/api/v1/users/{}/roles", member.user_id),
        &admin.access,
        Some(json!({"roles": ["user", "viewer"]})),
    )
    .await;
    assert_eq!(
        app.get_auth("/api/v1/users", &member.access).await.status(),
        200
    );
    // Revoke the grant from the role: refused on the very next request.
    app.call(
        Method::PATCH,
        &format!("/api/v1/rbac/roles/{role_id}"),
        &admin.access,
        Some(json!({"permissions": []})),
    )
    .await;
    problem(
        app.get_auth("/api/v1/users", &member.access).await,
        403,
        "forbidden",
    )
    .await;
    // Grant back, then delete the role.
    app.call(
        Method::PATCH,
        &format!("/api/v1/rbac/roles/{role_id}"),
        &admin.access,
        Some(json!({"permissions": ["users:read"]})),
    )
    .await;
    assert_eq!(
        app.get_auth("/api/v1/users", &member.access).await.status(),
        200
    );
    app.call(
        Method::DELETE,
        &format!("/api/v1/rbac/roles/{role_id}"),
        &admin.access,
        None,
    )
    .await;
    problem(
        app.get_auth("/api/v1/users", &member.access).await,
        403,
        "forbidden",
    )
    .await;
    // Unassigning works the same way.
    app.call(
        Method::PUT,
        &format!("/api/v1/users/{}/roles", member.user_id),
        &admin.access,
        Some(json!({"roles": ["admin"]})),
    )
    .await;
    assert_eq!(
        app.get_auth("/api/v1/audit/events", &member.access)
            .await
            .status(),
        200
    );
    app.call(
        Method::PUT,
        &format!("/api/v1/users/{}/roles", member.user_id),
        &admin.access,
        Some(json!({"roles": ["user"]})),
    )
    .await;
    problem(
        app.get_auth("/api/v1/audit/events", &member.access).await,
        403,
        "forbidden",
    )
    .await;
    app.finish().await;
}

async fn mass_assignment_is_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("admin").await;
    let member = app.new_session("member").await;
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::PATCH,
            "/api/v1/users/me".into(),
            json!({"displayName": "x", "roles": ["admin"]}),
            "roles",
        ),
        (
            Method::PATCH,
            "/api/v1/users/me".into(),
            json!({"displayName": "x", "status": "active"}),
            "status",
        ),
        (
            Method::PATCH,
            "/api/v1/users/me".into(),
            json!({"displayName": "x", "id": member.user_id}),
            "id",
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{}", member.user_id),
            json!({"displayName": "x", "roles": ["admin"]}),
            "roles",
        ),
        (
            Method::POST,
            "/api/v1/notes".into(),
            json!({"title": "t", "body": "b", "ownerId": admin.user_id}),
            "ownerId",
        ),
        (
            Method::POST,
            "/api/v1/notes".into(),
            json!({"title": "t", "body": "b", "id": uuid::Uuid::now_v7()}),
            "id",
        ),
        (
            Method::POST,
            "/api/v1/rbac/roles".into(),
            json!({"name": "x1", "description": "", "permissions": [], "builtIn": true}),
            "builtIn",
        ),
    ];
    for (method, path, body, field) in cases {
        let token = if path.contains(&member.user_id) {
            &admin.access
        } else {
            &member.access
        };
        let token = if path.starts_with("/api/v1/rbac") {
            &admin.access
        } else {
            token
        };
        let doc = problem(
            app.call(method, &path, token, Some(body)).await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(doc["errors"][0]["field"], field, "{path}: {doc}");
    }
    let me: Value = app
        .get_auth("/api/v1/users/me", &member.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["roles"], json!(["user"]));
    assert_eq!(me["displayName"], "Test User");
    app.finish().await;
}

async fn audit_api_filters_and_paginates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("admin").await;
    let member = app.new_session("member").await;
    problem(
        app.get_auth("/api/v1/audit/events", &member.access).await,
        403,
        "forbidden",
    )
    .await;
    let r = app
        .get_auth("/api/v1/audit/events?limit=100", &admin.access)
        .await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    let items = page["items"].as_array().unwrap();
    assert!(items.len() >= 4);
    for key in [
        "id",
        "at",
        "action",
        "actorId",
        "targetType",
        "targetId",
        "ipAddress",
        "requestId",
        "outcome",
        "details",
    ] {
        assert!(items[0].get(key).is_some(), "{key}");
    }
    // Newest first.
    let ats: Vec<&str> = items.iter().map(|i| i["at"].as_str().unwrap()).collect();
    let mut sorted = ats.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ats, sorted);
    // Filters.
    let by_action: Value = app
        .get_auth("/api/v1/audit/events?action=auth.register", &admin.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_action["items"].as_array().unwrap().len(), 2);
    assert!(
        by_action["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["action"] == "auth.register")
    );
    // The actor and target filters answer exactly the stored events that match, newest
    // first; both are non-empty here (the member's registration and denial).
    let stored = app.audit_events().await;
    let newest_first = |keep: &dyn Fn(&rampart_core::audit::AuditRecord) -> bool| {
        let mut ids: Vec<String> = stored
            .iter()
            .filter(|e| keep(e))
            .map(|e| e.id.to_string())
            .collect();
        ids.reverse();
        ids
    };
    let member_id = uuid::Uuid::parse_str(&member.user_id).unwrap();
    let by_actor_expected = newest_first(&|e| e.actor_id == Some(member_id));
    let by_target_expected = newest_first(&|e| e.target_id.as_deref() == Some(&member.user_id));
    assert!(
        stored
            .iter()
            .any(|e| e.actor_id == Some(member_id) && e.action == "authz.denied")
    );
    for (filter, expected) in [
        (format!("actorId={}", member.user_id), by_actor_expected),
        (format!("targetId={}", member.user_id), by_target_expected),
    ] {
        assert!(!expected.is_empty(), "{filter}: no stored event matches");
        let page: Value = app
            .get_auth(
                &format!("/api/v1/audit/events?{filter}&limit=100"),
                &admin.access,
            )
            .await
            .json()
            .await
            .unwrap();
        let ids: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, expected, "{filter}");
    }
    let future = "2999-01-01T00:00:00Z";
    let none: Value = app
        .get_auth(
            &format!("/api/v1/audit/events?from={future}"),
            &admin.access,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(none["items"].as_array().unwrap().is_empty());
    let all: Value = app
        .get_auth(
            &format!("/api/v1/audit/events?to={future}&from=2000-01-01T00:00:00Z"),
            &admin.access,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), items.len().min(20));
    // Exactly one event's instant, inclusive at both ends.
    let at = items[0]["at"].as_str().unwrap();
    let exact: Value = app
        .get_auth(
            &format!("/api/v1/audit/events?from={at}&to={at}"),
            &admin.access,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        exact["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == items[0]["id"])
    );
    // Pagination.
    let p1: Value = app
        .get_auth("/api/v1/audit/events?limit=2", &admin.access)
        .await
        .json()
        .await
        .unwrap();
    let cursor = p1["nextCursor"].as_str().unwrap();
    let p2: Value = app
        .get_auth(
            &format!("/api/v1/audit/events?limit=2&cursor={cursor}"),
            &admin.access,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p1["items"][0]["id"], items[0]["id"]);
    assert_eq!(p2["items"][0]["id"], items[2]["id"]);
    // Malformed filters.
    for bad in [
        "actorId=nope",
        "targetId=1",
        "from=yesterday",
        "to=2020-13-01T00:00:00Z",
        "limit=0",
        "cursor=zz",
        "kind=x",
    ] {
        problem(
            app.get_auth(&format!("/api/v1/audit/events?{bad}"), &admin.access)
                .await,
            400,
            "validation_failed",
        )
        .await;
    }
    app.finish().await;
}

async fn contract_events_are_recorded_with_actor_and_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_session("admin").await;
    let member = app.new_session("member").await;
    let with_id = |method: Method, path: String, body: Option<Value>, rid: &'static str| {
        let mut req = app
            .client
            .request(method, app.url(&path))
            .bearer_auth(&admin.access)
            .header("x-request-id", rid);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    };
    with_id(
        Method::PATCH,
        format!("/api/v1/users/{}", member.user_id),
        Some(json!({"displayName": "M"})),
        "ev-user-updated",
    )
    .await
    .unwrap();
    let r = with_id(
        Method::POST,
        "/api/v1/rbac/roles".into(),
        Some(json!({"name": "ev", "description": "", "permissions": []})),
        "ev-role-created",
    )
    .await
    .unwrap();
    let role_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    with_id(
        Method::PATCH,
        format!("/api/v1/rbac/roles/{role_id}"),
        Some(json!({"description": "x"})),
        "ev-role-updated",
    )
    .await
    .unwrap();
    with_id(
        Method::PUT,
        format!("/api/v1/users/{}/roles", member.user_id),
        Some(json!({"roles": ["user", "ev"]})),
        "ev-roles-changed",
    )
    .await
    .unwrap();
    with_id(
        Method::DELETE,
        format!("/api/v1/rbac/roles/{role_id}"),
        None,
        "ev-role-deleted",
    )
    .await
    .unwrap();
    let r = with_id(
        Method::POST,
        "/api/v1/notes".into(),
        Some(json!({"title": "t", "body": "b"})),
        "ev-note-created",
    )
    .await
    .unwrap();
    let note_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    with_id(
        Method::PATCH,
        format!("/api/v1/notes/{note_id}"),
        Some(json!({"title": "u"})),
        "ev-note-updated",
    )
    .await
    .unwrap();
    with_id(
        Method::DELETE,
        format!("/api/v1/notes/{note_id}"),
        None,
        "ev-note-deleted",
    )
    .await
    .unwrap();
    with_id(
        Method::DELETE,
        format!("/api/v1/users/{}", member.user_id),
        None,
        "ev-user-deleted",
    )
    .await
    .unwrap();
    let events = app.audit_events().await;
    for (action, rid, target) in [
        (
            "user.updated",
            "ev-user-updated",
            Some(member.user_id.as_str()),
        ),
        ("role.created", "ev-role-created", None),
        ("role.updated", "ev-role-updated", Some(role_id.as_str())),
        (
            "user.roles_changed",
            "ev-roles-changed",
            Some(member.user_id.as_str()),
        ),
        ("role.deleted", "ev-role-deleted", Some(role_id.as_str())),
        ("note.created", "ev-note-created", Some(note_id.as_str())),
        ("note.updated", "ev-note-updated", Some(note_id.as_str())),
        ("note.deleted", "ev-note-deleted", Some(note_id.as_str())),
        (
            "user.deleted",
            "ev-user-deleted",
            Some(member.user_id.as_str()),
        ),
    ] {
        let e = events
            .iter()
            .find(|e| e.action == action && e.request_id.as_deref() == Some(rid))
            .unwrap_or_else(|| panic!("{action} with request id {rid} missing"));
        assert_eq!(
            e.actor_id.map(|a| a.to_string()),
            Some(admin.user_id.clone()),
            "{action}"
        );
        if let Some(t) = target {
            assert_eq!(e.target_id.as_deref(), Some(t), "{action}");
        }
    }
    assert!(matches!(
        rampart_store::audit::verify(&app.state.db).await.unwrap(),
        rampart_core::audit::VerifyOutcome::Intact { .. }
    ));
    app.finish().await;
}

/// A documented operation that declares no policy.
#[utoipa::path(get, path = "/api/v1/undeclared", responses((status = 200, description = "ok")))]
async fn undeclared() -> &'static str {
    "should never be served"
}

#[tokio::test]
async fn a_route_without_a_policy_refuses_to_build() {
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let extra = OpenApiRouter::new().routes(routes!(undeclared));
    let err = rampart_api::build_router(app.state.clone(), extra).unwrap_err();
    assert!(err.contains("GET /api/v1/undeclared"), "{err}");
    // Declared, it builds.
    let extra = OpenApiRouter::new().routes(rampart_api::routing::route(
        rampart_api::routing::Policy::Authenticated,
        routes!(undeclared),
    ));
    assert!(rampart_api::build_router(app.state.clone(), extra).is_ok());
    app.finish().await;
}
