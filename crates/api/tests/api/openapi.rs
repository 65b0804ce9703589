//! The OpenAPI document `/openapi.json` serves is usable by client generators and describes
//! what the server really answers: every response object has its required `description`
//! (OpenAPI 3.1), and the status codes the route policies and the body checks send are
//! listed on every operation they apply to — derived from the document itself, so a new
//! route cannot forget them.

use reqwest::Method;
use serde_json::Value;

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem};

backend_tests!(
    every_response_has_a_description,
    every_operation_documents_what_its_policy_and_body_can_answer,
    every_operation_with_a_body_answers_415_as_documented,
);

/// Every operation of the document as (method, path, operation object).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
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

async fn document(app: &TestApp) -> Value {
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
        let mut required: Vec<&str> = vec!["413", "415"];
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
