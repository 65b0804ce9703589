//! The ownership contract (§7) every owned module keeps, proven for each resource the
//! OpenAPI document marks `x-rampart-owned` (every route declared through the kit's
//! `Resource::route`): a new module is tested by being registered, with bodies derived
//! from its documented request schemas. On both stores:
//!
//! - the creator owns what they create, and each change writes its audit event (actor,
//!   target, request id);
//! - another user's object is 404 for read, change and delete, stays unchanged, and the
//!   refused attempts write no event;
//! - lists show only one's own objects, page by page, and refuse another list's cursor;
//! - unknown fields (`ownerId`, `id`, `createdAt`, anything) are 400 naming the field,
//!   before anything is written;
//! - `<feature>:read_any` reads anyone's object but gets 403 writing it (404 for a missing
//!   one) and still lists only its own; `<feature>:manage_any` reads, changes and deletes
//!   anyone's, and the owner stays the owner.

use std::collections::BTreeMap;

use reqwest::{Method, Response};
use serde_json::{Map, Value, json};

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem};
use crate::identity::Session;
use crate::openapi::{body_schema, document, minimal, operations, resolve};

backend_tests!(every_owned_resource_keeps_the_ownership_contract);

/// The routes of one owned resource, as the OpenAPI document describes them.
#[derive(Debug, Default)]
pub struct OwnedResource {
    /// `notes`: the permissions' prefix.
    pub feature: String,
    /// `note`: the audit events' prefix and target type.
    pub kind: String,
    /// `/api/v1/notes` (POST creates, GET lists).
    pub collection: String,
    /// `/api/v1/notes/{id}` (GET, PATCH, DELETE).
    pub item: String,
    /// A valid creation body and a valid patch (changing every field it can).
    pub create_body: Value,
    pub patch_body: Value,
}

/// Every owned resource of the document, by feature.
pub fn owned_resources(doc: &Value) -> Vec<OwnedResource> {
    let mut found: BTreeMap<String, OwnedResource> = BTreeMap::new();
    for (method, path, op) in operations(doc) {
        let Some(mark) = op.get("x-rampart-owned") else {
            continue;
        };
        let feature = mark["feature"].as_str().unwrap().to_owned();
        let r = found.entry(feature.clone()).or_default();
        r.feature = feature;
        r.kind = mark["kind"].as_str().unwrap().to_owned();
        match (method.as_str(), path.ends_with("/{id}")) {
            ("POST", false) => {
                r.collection = path.clone();
                r.create_body = minimal(doc, body_schema(doc, &op));
            }
            ("PATCH", true) => r.patch_body = every_field(doc, body_schema(doc, &op)),
            (_, true) => r.item = path.clone(),
            (_, false) => r.collection = path.clone(),
        }
    }
    found.into_values().collect()
}

/// Every property of an object schema, with a value that differs from [`minimal`]'s.
fn every_field(doc: &Value, schema: &Value) -> Value {
    let mut fields = Map::new();
    for (name, property) in schema["properties"].as_object().unwrap() {
        let value = match minimal(doc, resolve(doc, property)) {
            Value::String(s) if s.starts_with("https://") => json!("https://example.org/patched"),
            Value::String(_) => json!("patched"),
            other => other,
        };
        fields.insert(name.clone(), value);
    }
    Value::Object(fields)
}

async fn every_owned_resource_keeps_the_ownership_contract(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let resources = owned_resources(&document(&app).await);
    let features: Vec<&str> = resources.iter().map(|r| r.feature.as_str()).collect();
    assert!(
        features.contains(&"notes"),
        "owned resources found: {features:?}"
    );
    for resource in &resources {
        owned_resource_contract(&app, resource).await;
    }
    app.finish().await;
}

impl TestApp {
    /// Creates an object through `path` as `who`: 201, and the object.
    pub async fn create_ok(&self, path: &str, who: &Session, body: Value) -> Value {
        let r = self
            .call(Method::POST, path, &who.access, Some(body.clone()))
            .await;
        json_of(r, 201, &format!("POST {path} {body}")).await.0
    }

    /// The fields a `validation_failed` answer to this request names, in order.
    pub async fn refused_fields(
        &self,
        m: Method,
        path: &str,
        who: &Session,
        body: Value,
    ) -> Vec<String> {
        let doc = problem(
            self.call(m, path, &who.access, Some(body)).await,
            400,
            "validation_failed",
        )
        .await;
        let errors = doc["errors"].as_array().unwrap().iter();
        errors
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A request's response and the request id it was answered with.
async fn send(
    app: &TestApp,
    m: Method,
    path: &str,
    who: &Session,
    body: Option<Value>,
) -> Response {
    app.call(m, path, &who.access, body).await
}

async fn json_of(r: Response, status: u16, what: &str) -> (Value, String) {
    assert_eq!(r.status().as_u16(), status, "{what}");
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = if status == 204 {
        Value::Null
    } else {
        r.json().await.unwrap()
    };
    (body, rid)
}

/// The one event `action` with this request id: the caller as actor, the object as target.
async fn assert_event(
    app: &TestApp,
    r: &OwnedResource,
    what: &str,
    actor: &Session,
    id: &str,
    rid: &str,
) {
    let action = format!("{}.{what}", r.kind);
    let events = app.audit_events().await;
    let matching: Vec<_> = events
        .iter()
        .filter(|e| e.action == action && e.request_id.as_deref() == Some(rid))
        .collect();
    assert_eq!(matching.len(), 1, "{action} for request {rid}");
    let e = matching[0];
    assert_eq!(
        e.actor_id.map(|a| a.to_string()).as_deref(),
        Some(actor.user_id.as_str()),
        "{action} actor"
    );
    assert_eq!(
        (e.target_type.as_deref(), e.target_id.as_deref()),
        (Some(r.kind.as_str()), Some(id)),
        "{action} target"
    );
}

/// Every id of `who`'s list, walked page by page with `limit=1`.
async fn listed(app: &TestApp, r: &OwnedResource, who: &Session) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = cursor.map_or("limit=1".to_owned(), |c| format!("limit=1&cursor={c}"));
        let path = format!("{}?{query}", r.collection);
        let (page, _) = json_of(send(app, Method::GET, &path, who, None).await, 200, "list").await;
        for item in page["items"].as_array().unwrap() {
            assert_eq!(
                item["ownerId"],
                who.user_id.as_str(),
                "{}: a list shows another user's object",
                r.feature
            );
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

pub async fn owned_resource_contract(app: &TestApp, r: &OwnedResource) {
    let f = r.feature.as_str();
    let (collection, patch, create) = (r.collection.as_str(), &r.patch_body, &r.create_body);
    let item = |id: &str| r.item.replace("{id}", id);
    let alice = app.new_session(&format!("{f}-alice")).await;
    let bob = app.new_session(&format!("{f}-bob")).await;
    let get = async |id: &str, who: &Session| send(app, Method::GET, &item(id), who, None).await;

    // The creator owns it; creation is audited.
    let r_ = send(app, Method::POST, collection, &alice, Some(create.clone())).await;
    let (original, rid) = json_of(r_, 201, &format!("{f}: create {create}")).await;
    let id = original["id"].as_str().unwrap().to_owned();
    assert_eq!(
        original["ownerId"],
        alice.user_id.as_str(),
        "{f}: owned by its creator"
    );
    assert_event(app, r, "created", &alice, &id, &rid).await;
    let (read, _) = json_of(get(&id, &alice).await, 200, "the owner reads it").await;
    assert_eq!(read, original);

    // Another user: 404 for read, change and delete; nothing changes, nothing is audited.
    let before = app.audit_events().await.len();
    let their_get = get(&id, &bob).await;
    assert_eq!(
        their_get.status(),
        404,
        "{f}: another user's object must be 404 on read"
    );
    problem(their_get, 404, "not_found").await;
    let their_patch = send(app, Method::PATCH, &item(&id), &bob, Some(patch.clone())).await;
    assert_eq!(
        their_patch.status(),
        404,
        "{f}: another user's object must be 404 on change"
    );
    let their_delete = send(app, Method::DELETE, &item(&id), &bob, None).await;
    assert_eq!(
        their_delete.status(),
        404,
        "{f}: another user's object must be 404 on delete"
    );
    let (still, _) = json_of(get(&id, &alice).await, 200, "still there").await;
    assert_eq!(
        still, original,
        "{f}: another user's refused writes changed it"
    );
    assert_eq!(
        app.audit_events().await.len(),
        before,
        "{f}: refused writes were audited"
    );

    // Lists: one's own only, page by page; another list's cursor is refused.
    let r_ = send(app, Method::POST, collection, &bob, Some(create.clone())).await;
    let (bobs, _) = json_of(r_, 201, "bob creates").await;
    let r_ = send(app, Method::POST, collection, &alice, Some(create.clone())).await;
    let (second, _) = json_of(r_, 201, "alice creates another").await;
    let second = second["id"].as_str().unwrap().to_owned();
    assert_eq!(
        listed(app, r, &alice).await,
        [id.clone(), second.clone()],
        "{f}: alice's list"
    );
    assert_eq!(
        listed(app, r, &bob).await,
        [bobs["id"].as_str().unwrap()],
        "{f}: bob's list"
    );
    let users_cursor = format!("{collection}?cursor=dXNlcnM6eA");
    let r_ = send(app, Method::GET, &users_cursor, &alice, None).await;
    problem(r_, 400, "validation_failed").await;

    // Unknown fields, ownerId first among them: 400 naming the field, nothing written.
    let before = app.audit_events().await.len();
    for (method, path, base) in [
        (Method::POST, collection.to_owned(), create),
        (Method::PATCH, item(&id), patch),
    ] {
        for (field, value) in [
            ("ownerId", json!(bob.user_id)),
            ("id", json!(bobs["id"])),
            ("createdAt", json!("2020-01-01T00:00:00.000Z")),
            ("zzUnknown", json!(1)),
        ] {
            let mut body = base.clone();
            body[field] = value;
            let r_ = send(app, method.clone(), &path, &bob, Some(body)).await;
            assert_eq!(r_.status(), 400, "{f}: {method} {path} with {field}");
            let doc = problem(r_, 400, "validation_failed").await;
            assert_eq!(
                doc["errors"][0]["field"], field,
                "{f}: {method} {path}: {doc}"
            );
        }
    }
    assert_eq!(
        app.audit_events().await.len(),
        before,
        "{f}: a refused body wrote an event"
    );
    assert_eq!(
        listed(app, r, &bob).await.len(),
        1,
        "{f}: a refused create stored something"
    );

    // read_any: reads anyone's; writes are 403 (404 when missing); lists stay own.
    let reader = app.new_session(&format!("{f}-reader")).await;
    let perms = |over: &str| {
        [
            format!("{f}:read"),
            format!("{f}:write"),
            format!("{f}:{over}"),
        ]
    };
    let [a, b, c] = perms("read_any");
    app.make_role(&format!("{f}-reader"), &[&a, &b, &c]).await;
    app.grant_roles(&reader.user_id, &[&format!("{f}-reader")])
        .await;
    let before = app.audit_events().await.len();
    let (seen, _) = json_of(
        get(&id, &reader).await,
        200,
        &format!("{f}: read_any reads"),
    )
    .await;
    assert_eq!(seen, original);
    let missing = uuid::Uuid::now_v7().to_string();
    for (target, status) in [(id.as_str(), 403), (missing.as_str(), 404)] {
        let r_ = send(
            app,
            Method::PATCH,
            &item(target),
            &reader,
            Some(patch.clone()),
        )
        .await;
        assert_eq!(r_.status(), status, "{f}: read_any changing {target}");
        let r_ = send(app, Method::DELETE, &item(target), &reader, None).await;
        assert_eq!(r_.status(), status, "{f}: read_any deleting {target}");
    }
    assert!(
        listed(app, r, &reader).await.is_empty(),
        "{f}: read_any lists others' objects"
    );
    assert_eq!(
        json_of(get(&id, &alice).await, 200, "").await.0,
        original,
        "{f}: read_any changed it"
    );
    assert_eq!(
        app.audit_events().await.len(),
        before,
        "{f}: read_any's refused writes were audited"
    );

    // manage_any: reads, changes and deletes anyone's; the owner stays.
    let manager = app.new_session(&format!("{f}-manager")).await;
    let [a, b, c] = perms("manage_any");
    app.make_role(&format!("{f}-manager"), &[&a, &b, &c]).await;
    app.grant_roles(&manager.user_id, &[&format!("{f}-manager")])
        .await;
    json_of(
        get(&id, &manager).await,
        200,
        &format!("{f}: manage_any reads"),
    )
    .await;
    let r_ = send(
        app,
        Method::PATCH,
        &item(&id),
        &manager,
        Some(patch.clone()),
    )
    .await;
    let (managed, rid) = json_of(r_, 200, &format!("{f}: manage_any changes {patch}")).await;
    assert_eq!(
        managed["ownerId"],
        alice.user_id.as_str(),
        "{f}: the owner stays"
    );
    let without_time = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("updatedAt");
        v
    };
    assert_ne!(
        without_time(&managed),
        without_time(&original),
        "{f}: the patch changed nothing"
    );
    assert_event(app, r, "updated", &manager, &id, &rid).await;
    let r_ = send(app, Method::DELETE, &item(&second), &manager, None).await;
    let (_, rid) = json_of(r_, 204, &format!("{f}: manage_any deletes")).await;
    assert_event(app, r, "deleted", &manager, &second, &rid).await;
    assert_eq!(
        get(&second, &alice).await.status(),
        404,
        "{f}: deleted by manage_any"
    );

    // The owner changes and deletes their own, each audited once.
    let r_ = send(app, Method::PATCH, &item(&id), &alice, Some(patch.clone())).await;
    let (_, rid) = json_of(r_, 200, &format!("{f}: the owner changes it")).await;
    assert_event(app, r, "updated", &alice, &id, &rid).await;
    let r_ = send(app, Method::DELETE, &item(&id), &alice, None).await;
    let (_, rid) = json_of(r_, 204, &format!("{f}: the owner deletes it")).await;
    assert_event(app, r, "deleted", &alice, &id, &rid).await;
    assert_eq!(get(&id, &alice).await.status(), 404, "{f}: deleted");
    let before = app.audit_events().await.len();
    let again = send(app, Method::DELETE, &item(&id), &alice, None).await;
    assert_eq!(again.status(), 404, "{f}: deleting twice");
    assert_eq!(
        app.audit_events().await.len(),
        before,
        "{f}: a second delete was audited"
    );
}
