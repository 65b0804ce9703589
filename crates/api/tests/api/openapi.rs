//! The OpenAPI document `/openapi.json` serves is usable by client generators and describes
//! what the server really answers: every response object has its required `description`
//! (OpenAPI 3.1), and the status codes the route policies and the body checks send are
//! listed on every operation they apply to — derived from the document itself, so a new
//! route cannot forget them. Likewise strict JSON (contract §1): every operation with a
//! request body refuses an unknown field and a duplicate key with 400 naming it. Every 4xx
//! and 5xx response is documented as a `Problem` (`application/problem+json`), and what the
//! server really answers — problems and successes, the login's two 200 shapes among them —
//! matches the schema the document gives for that status and media type.

use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem};
use crate::identity::{PASSWORD, Session, unique_email};

backend_tests!(
    every_response_has_a_description,
    every_operation_documents_what_its_policy_and_body_can_answer,
    every_operation_with_a_body_answers_415_as_documented,
    every_operation_with_a_body_refuses_unknown_fields_and_duplicate_keys,
    every_error_response_is_a_problem_document,
    real_answers_match_their_documented_schemas,
);

/// Every operation of the document as (method, path, operation object).
pub fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("responses").is_some() {
                all.push((method.to_uppercase(), path.clone(), op.clone()));
            }
        }
    }
    all
}

pub async fn document(app: &TestApp) -> Value {
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn every_response_has_a_description(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = document(&app).await;
    let ops = operations(&doc);
    assert!(!ops.is_empty());
    let mut checked = 0;
    let mut missing = Vec::new();
    for (method, path, op) in &ops {
        let responses = op["responses"].as_object().unwrap();
        assert!(!responses.is_empty(), "{method} {path} has no responses");
        for (status, response) in responses {
            checked += 1;
            let ok = response["description"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty());
            if !ok {
                missing.push(format!("{method} {path} {status}"));
            }
        }
    }
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "responses without a description"
    );
    // Every operation has at least its success response and one check's answer.
    assert!(
        checked >= 2 * ops.len(),
        "{checked} responses for {} operations",
        ops.len()
    );
    app.finish().await;
}

async fn every_operation_documents_what_its_policy_and_body_can_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = document(&app).await;
    let mut missing = Vec::new();
    let mut with_body = Vec::new();
    for (method, path, op) in operations(&doc) {
        let policy = op["x-rampart-policy"].as_str().unwrap();
        // The outer pipeline can answer these on any route.
        let mut required: Vec<&str> = vec!["413", "414", "415", "500", "503"];
        if op.get("requestBody").is_some() {
            required.push("400");
            with_body.push(format!("{method} {path}"));
        }
        // The health checks are exempt from the client-address and rate-limit checks.
        if !path.starts_with("/health/") {
            required.extend(["400", "429"]);
        }
        if policy != "public" {
            required.push("401");
        }
        if policy.starts_with("permission:") {
            required.push("403");
        }
        for status in required {
            if op["responses"].get(status).is_none() {
                missing.push(format!("{method} {path} lacks {status}"));
            }
        }
        // The security requirement and the 401/403 come from the policy, not from the
        // annotation: bearer for protected routes (none, or an optional one, for public
        // routes), 401 and 403 only where the policy answers them (or the handler's own
        // reasons add them), the 403 naming the permission.
        let security = op.get("security");
        if policy == "public" {
            let optional = security
                .and_then(Value::as_array)
                .is_none_or(|reqs| reqs.contains(&json!({})));
            if !optional {
                missing.push(format!("{method} {path} public but requires {security:?}"));
            }
        } else if security != Some(&json!([{"bearer": []}])) {
            missing.push(format!("{method} {path} security {security:?}"));
        }
        if let Some(permission) = policy.strip_prefix("permission:") {
            let described = op["responses"]["403"]["description"]
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("The caller lacks the `{permission}`")));
            if !described {
                missing.push(format!("{method} {path} 403 does not name {permission}"));
            }
        }
    }
    assert_eq!(missing, Vec::<String>::new());
    // The routes the issue found undocumented are among those checked.
    for op in [
        "POST /api/v1/auth/login",
        "POST /api/v1/auth/mfa/verify",
        "POST /api/v1/auth/register",
        "POST /api/v1/auth/password-reset/request",
        "POST /api/v1/auth/password-reset/confirm",
    ] {
        assert!(
            with_body.iter().any(|o| o == op),
            "{op} not a body operation: {with_body:?}"
        );
    }
    app.finish().await;
}

/// The documented 415 is what the server answers: every operation with a request body
/// refuses a body that is not JSON, before authentication.
async fn every_operation_with_a_body_answers_415_as_documented(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = document(&app).await;
    let id = uuid::Uuid::now_v7().to_string();
    let mut sent = Vec::new();
    for (method, path, op) in operations(&doc) {
        if op.get("requestBody").is_none() {
            continue;
        }
        let url = app.url(&path.replace("{id}", &id));
        let r = app
            .client
            .request(Method::from_bytes(method.as_bytes()).unwrap(), url)
            .header("content-type", "text/plain")
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415, "{method} {path}");
        problem(r, 415, "unsupported_media_type").await;
        sent.push(format!("{method} {path}"));
    }
    for op in [
        "POST /api/v1/auth/login",
        "POST /api/v1/auth/mfa/verify",
        "POST /api/v1/auth/register",
        "POST /api/v1/auth/password-reset/request",
        "POST /api/v1/auth/password-reset/confirm",
    ] {
        assert!(sent.iter().any(|o| o == op), "{op} not tried: {sent:?}");
    }
    app.finish().await;
}

/// Follows `$ref`s (`#/components/schemas/…`) until a schema that is not a reference.
pub fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
        schema = &doc["components"]["schemas"][name];
        assert!(!schema.is_null(), "dangling $ref {reference}");
    }
    schema
}

/// The smallest value of the schema's shape: strings "x" (a URL for `format: uri`), integers 1, booleans true,
/// arrays [], objects with their required properties; a nullable type takes its non-null
/// alternative, an enum its first value.
pub fn minimal(doc: &Value, schema: &Value) -> Value {
    let schema = resolve(doc, schema);
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    for combinator in ["oneOf", "anyOf"] {
        if let Some(options) = schema[combinator].as_array() {
            let option = options
                .iter()
                .find(|o| o["type"] != "null")
                .unwrap_or_else(|| panic!("{combinator} of nulls only: {schema}"));
            return minimal(doc, option);
        }
    }
    if let Some(parts) = schema["allOf"].as_array() {
        let mut merged = Map::new();
        for part in parts {
            if let Value::Object(fields) = minimal(doc, part) {
                merged.extend(fields);
            }
        }
        return Value::Object(merged);
    }
    let kind = match &schema["type"] {
        Value::String(kind) => kind.as_str(),
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or_else(|| panic!("no non-null type in {schema}")),
        _ if schema.get("properties").is_some() => "object",
        other => panic!("schema without a type: {other} in {schema}"),
    };
    match kind {
        "string" if schema["format"] == "uri" => json!("https://example.org/x"),
        "string" if schema["format"] == "uuid" => json!("01900000-0000-7000-8000-000000000000"),
        "string" => json!("x"),
        "integer" | "number" => json!(1),
        "boolean" => json!(true),
        "array" => json!([]),
        "object" => Value::Object(object_fields(doc, schema)),
        other => panic!("unexpected type {other} in {schema}"),
    }
}

/// The required properties of an object schema with their minimal values.
fn object_fields(doc: &Value, schema: &Value) -> Map<String, Value> {
    let mut fields = Map::new();
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap();
        let property = &schema["properties"][name];
        assert!(
            !property.is_null(),
            "required {name} not a property of {schema}"
        );
        fields.insert(name.to_owned(), minimal(doc, property));
    }
    fields
}

/// The JSON request body schema of an operation, with its `$ref`s followed.
pub fn body_schema<'a>(doc: &'a Value, op: &'a Value) -> &'a Value {
    let schema = &op["requestBody"]["content"]["application/json"]["schema"];
    assert!(!schema.is_null(), "a request body that is not JSON: {op}");
    resolve(doc, schema)
}

/// Replaces every `{param}` of a path template with `value`.
fn fill_path(path: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').unwrap() + open;
        out.push_str(&rest[..open]);
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Contract §1 (strict JSON): every operation of the document with a JSON request body —
/// found in the document, so a new route cannot be forgotten — answers 400
/// `validation_failed` to an otherwise valid-shaped body with an unknown field, and to a
/// body with a duplicate key, before any lookup (a fresh UUID in `{id}` must not give 404)
/// and before anything is written (no audit event appears).
async fn every_operation_with_a_body_refuses_unknown_fields_and_duplicate_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin: Session = app.admin_session("strict").await;
    let doc = document(&app).await;
    let id = uuid::Uuid::now_v7().to_string();
    let events_before = app.audit_events().await.len();
    let mut sent = Vec::new();
    let mut wrong = Vec::new();
    for (method, path, op) in operations(&doc) {
        if op.get("requestBody").is_none() {
            continue;
        }
        let schema = body_schema(&doc, &op);
        let Value::Object(valid) = minimal(&doc, schema) else {
            panic!("{method} {path}: a request body that is not an object: {schema}");
        };
        // The duplicated key is one of the operation's own properties: a required one
        // where there is one, else the first declared.
        // A body that must be `{}` (no properties at all) has no key to duplicate: the
        // unknown-field case alone covers it.
        let no_properties = schema["properties"]
            .as_object()
            .is_none_or(|p| p.is_empty())
            && schema["additionalProperties"] == json!(false);
        let (key, value) = match valid.iter().next() {
            Some((key, value)) => (key.clone(), value.clone()),
            None if no_properties => (String::new(), Value::Null),
            None => {
                // An empty body by contract (`/passkeys/login/start` takes `{}`): no key to
                // duplicate; its unknown-field refusal is tested in `passkeys.rs`.
                if schema["properties"]
                    .as_object()
                    .is_some_and(|p| p.is_empty())
                    || schema.get("properties").is_none()
                {
                    sent.push(format!("{method} {path}"));
                    continue;
                }
                let (key, property) = schema["properties"]
                    .as_object()
                    .and_then(|p| p.iter().next())
                    .unwrap_or_else(|| panic!("{method} {path}: a body without properties"));
                (key.clone(), minimal(&doc, property))
            }
        };
        let mut unknown = valid.clone();
        unknown.insert("zzUnknown".into(), json!(1));
        let mut rest = valid.clone();
        rest.remove(&key);
        let mut duplicate = format!("{{{k}:{value},{k}:{value}", k = json!(key));
        for (k, v) in &rest {
            duplicate.push_str(&format!(",{}:{v}", json!(k)));
        }
        duplicate.push('}');
        let public = op["x-rampart-policy"] == "public";
        let url = app.url(&fill_path(&path, &id));
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        // Each refusal names what it refuses, so a 400 for some other reason (a value
        // the minimal body gets wrong) cannot pass for it.
        for (case, body, field) in [
            (
                "unknown field",
                Value::Object(unknown).to_string(),
                "zzUnknown",
            ),
            ("duplicate key", duplicate, key.as_str()),
        ] {
            if no_properties && case == "duplicate key" {
                continue;
            }
            let mut req = app
                .client
                .request(m.clone(), &url)
                .header("content-type", "application/json")
                .body(body.clone());
            if !public {
                req = req.bearer_auth(&admin.access);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            if status != 400 {
                let text = r.text().await.unwrap();
                wrong.push(format!("{method} {path} {case} {body} -> {status} {text}"));
                continue;
            }
            let doc = problem(r, 400, "validation_failed").await;
            let errors = doc["errors"].as_array().unwrap();
            let fields: Vec<&str> = errors
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect();
            if fields != [field] {
                wrong.push(format!(
                    "{method} {path} {case} {body} -> errors {errors:?}"
                ));
            }
        }
        sent.push(format!("{method} {path}"));
    }
    assert_eq!(wrong, Vec::<String>::new(), "bodies not refused with 400");
    // Nothing was written: no request got as far as an audited change.
    assert_eq!(app.audit_events().await.len(), events_before);
    // The admin's session survived every refused request (logout-all, password change…).
    assert_eq!(
        app.get_auth("/api/v1/users/me", &admin.access)
            .await
            .status(),
        200
    );
    // Every body operation of the document was tried, the known ones among them.
    let with_body = operations(&doc)
        .iter()
        .filter(|(_, _, op)| op.get("requestBody").is_some())
        .count();
    assert_eq!(sent.len(), with_body);
    for op in [
        "POST /api/v1/auth/login",
        "POST /api/v1/auth/register",
        "POST /api/v1/auth/password-reset/confirm",
        "PATCH /api/v1/users/{id}",
        "PUT /api/v1/users/{id}/roles",
        "POST /api/v1/rbac/roles",
        "PATCH /api/v1/notes/{id}",
    ] {
        assert!(sent.iter().any(|o| o == op), "{op} not tried: {sent:?}");
    }
    app.finish().await;
}

/// Every 4xx and 5xx response of every operation — found in the document, so a new route
/// cannot forget it — has exactly one media type, `application/problem+json`, whose schema
/// is the `Problem` component; 429 documents `Retry-After` and 401 `WWW-Authenticate`.
async fn every_error_response_is_a_problem_document(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = document(&app).await;
    let problem = &doc["components"]["schemas"]["Problem"];
    let mut required: Vec<&str> = problem["required"]
        .as_array()
        .unwrap_or_else(|| panic!("no Problem schema: {problem}"))
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    required.sort_unstable();
    assert_eq!(
        required,
        ["code", "detail", "requestId", "status", "title", "type"]
    );
    let codes = problem["properties"]["code"]["enum"].as_array().unwrap();
    for code in [
        "validation_failed",
        "unauthenticated",
        "rate_limited",
        "unavailable",
    ] {
        assert!(codes.contains(&json!(code)), "{code} not in {codes:?}");
    }
    let expected =
        json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}});
    let mut wrong = Vec::new();
    let mut checked = Vec::new();
    for (method, path, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().unwrap() {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            checked.push(format!("{method} {path} {status}"));
            if response["content"] != expected {
                wrong.push(format!("{method} {path} {status}: {}", response["content"]));
            }
            let header = match status.as_str() {
                "429" => Some("Retry-After"),
                "401" => Some("WWW-Authenticate"),
                _ => None,
            };
            if let Some(header) = header
                && response["headers"].get(header).is_none()
            {
                wrong.push(format!("{method} {path} {status}: no {header} header"));
            }
        }
    }
    assert_eq!(
        wrong,
        Vec::<String>::new(),
        "error responses not documented as problems"
    );
    // Every operation has some (at least 413, 414, 415, 500, 503), the routes that answer a
    // problem of their own among them.
    assert!(checked.len() >= 5 * operations(&doc).len(), "{checked:?}");
    for response in [
        "GET /health/ready 503",
        "POST /api/v1/auth/login 401",
        "POST /api/v1/auth/login 429",
        "POST /api/v1/auth/password 403",
        "GET /api/v1/notes/{id} 404",
        "POST /api/v1/rbac/roles 409",
    ] {
        assert!(
            checked.iter().any(|c| c == response),
            "{response} not checked"
        );
    }
    app.finish().await;
}

/// The subset of JSON Schema the document uses (`$ref`, `type`, `enum`, `required`,
/// `properties`, `additionalProperties: false`, `items`, `minItems`, `oneOf`, `allOf`,
/// `minimum`, `maximum`): what is wrong with `value` at `at`, one line each.
fn mismatches(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let schema = resolve(doc, schema);
    let mut out = Vec::new();
    if let Some(options) = schema["oneOf"].as_array() {
        let matching = options
            .iter()
            .filter(|option| mismatches(doc, option, value, at).is_empty())
            .count();
        if matching != 1 {
            out.push(format!(
                "{at}: matches {matching} of the oneOf alternatives"
            ));
        }
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        out.extend(mismatches(doc, part, value, at));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        out.push(format!("{at}: {value} not in {allowed:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(kind) => vec![kind.as_str()],
        Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let is = |kind: &str| match kind {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        other => panic!("unexpected type {other}"),
    };
    if !types.is_empty() && !types.iter().any(|kind| is(kind)) {
        out.push(format!("{at}: {value} is not of type {types:?}"));
        return out;
    }
    match value {
        Value::Object(fields) => {
            for name in schema["required"].as_array().into_iter().flatten() {
                if !fields.contains_key(name.as_str().unwrap()) {
                    out.push(format!("{at}: required {name} missing"));
                }
            }
            for (name, field) in fields {
                match schema["properties"].get(name) {
                    Some(property) => {
                        out.extend(mismatches(doc, property, field, &format!("{at}.{name}")))
                    }
                    None if schema["additionalProperties"] == json!(false) => {
                        out.push(format!("{at}: undocumented property {name}"));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                out.push(format!("{at}: fewer than {min} items"));
            }
            if schema.get("items").is_some() {
                for (i, item) in items.iter().enumerate() {
                    out.extend(mismatches(
                        doc,
                        &schema["items"],
                        item,
                        &format!("{at}.{i}"),
                    ));
                }
            }
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap();
            if schema["minimum"].as_f64().is_some_and(|min| n < min)
                || schema["maximum"].as_f64().is_some_and(|max| n > max)
            {
                out.push(format!("{at}: {n} out of range"));
            }
        }
        _ => {}
    }
    out
}

/// What is wrong with `response` as the document describes `method path`: a status it does
/// not list, a media type the status does not list, or a body off the schema.
async fn off_document(
    doc: &Value,
    method: &str,
    path: &str,
    response: reqwest::Response,
) -> Vec<String> {
    let op = &doc["paths"][path][method.to_lowercase()];
    assert!(!op.is_null(), "{method} {path} is not in the document");
    let status = response.status().as_u16().to_string();
    let here = format!("{method} {path} {status}");
    let documented = &op["responses"][&status];
    if documented.is_null() {
        return vec![format!("{here}: undocumented status")];
    }
    let media_type = response.headers().get("content-type").map(|v| {
        v.to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_owned()
    });
    let body: Value = match &media_type {
        Some(_) => response.json().await.unwrap(),
        None => return Vec::new(),
    };
    let media_type = media_type.unwrap();
    let schema = &documented["content"][&media_type]["schema"];
    if schema.is_null() {
        return vec![format!("{here}: undocumented media type {media_type}")];
    }
    mismatches(doc, schema, &body, &here)
}

/// What the server really answers matches the document, for the problem documents of
/// several statuses and for success bodies — both shapes of the login's 200 (the MFA step
/// was once documented as the full login response).
async fn real_answers_match_their_documented_schemas(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = document(&app).await;
    let admin: Session = app.admin_session("conform").await;
    let user = app.new_session("conform").await;
    let mfa = app.enrol("conform-mfa").await;
    let missing = uuid::Uuid::now_v7();
    let mut wrong = Vec::new();
    let mut seen = Vec::new();
    let mut check = async |method: &str, path: &str, response: reqwest::Response| {
        seen.push(format!("{method} {path} {}", response.status().as_u16()));
        wrong.extend(off_document(&doc, method, path, response).await);
    };
    let register = "/api/v1/auth/register";
    let body = json!({"email": unique_email("conform"), "password": PASSWORD, "displayName": "C"});
    check("POST", register, app.post_json(register, body).await).await;
    check("POST", register, app.post_json(register, json!({})).await).await;
    let login = "/api/v1/auth/login";
    check("POST", login, app.login(&user.email, PASSWORD).await).await;
    check("POST", login, app.login(&mfa.session.email, PASSWORD).await).await;
    check(
        "POST",
        login,
        app.login(&user.email, "wrong password here").await,
    )
    .await;
    let r = app
        .client
        .post(app.url(login))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    check("POST", login, r).await;
    check("GET", "/api/v1/users/me", app.get("/api/v1/users/me").await).await;
    let me = app.get_auth("/api/v1/users/me", &user.access).await;
    check("GET", "/api/v1/users/me", me).await;
    check(
        "GET",
        "/api/v1/users",
        app.get_auth("/api/v1/users", &user.access).await,
    )
    .await;
    let users = app.get_auth("/api/v1/users?limit=0", &admin.access).await;
    check("GET", "/api/v1/users", users).await;
    let note = app
        .get_auth(&format!("/api/v1/notes/{missing}"), &admin.access)
        .await;
    check("GET", "/api/v1/notes/{id}", note).await;
    check("GET", "/health/ready", app.get("/health/ready").await).await;
    assert_eq!(wrong, Vec::<String>::new(), "answers off the document");
    for answer in [
        "POST /api/v1/auth/register 201",
        "POST /api/v1/auth/register 400",
        "POST /api/v1/auth/login 200",
        "POST /api/v1/auth/login 401",
        "POST /api/v1/auth/login 415",
        "GET /api/v1/users/me 401",
        "GET /api/v1/users 403",
        "GET /api/v1/users 400",
        "GET /api/v1/notes/{id} 404",
    ] {
        assert!(
            seen.iter().any(|s| s == answer),
            "{answer} not seen: {seen:?}"
        );
    }
    assert_eq!(
        seen.iter()
            .filter(|s| *s == "POST /api/v1/auth/login 200")
            .count(),
        2,
        "both shapes of the login's 200"
    );
    app.finish().await;
}
