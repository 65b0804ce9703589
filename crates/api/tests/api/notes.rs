//! Notes' own rules (contract §7): plain-text titles, sanitised HTML bodies, limits. Who may
//! see and change a note is the shared ownership contract's (`owned.rs`).

use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(note_fields_are_validated, note_html_is_sanitised);

const NOTES: &str = "/api/v1/notes";

async fn note_fields_are_validated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("notes").await;
    let note = app
        .create_ok(NOTES, &s, json!({"title": "t", "body": ""}))
        .await;
    let path = format!("{NOTES}/{}", note["id"].as_str().unwrap());
    let refused = async |m, path: &str, body| app.refused_fields(m, path, &s, body).await;
    let (long_title, long_body) = ("t".repeat(201), "b".repeat(20_001));
    let long = json!({"title": long_title, "body": ""});
    assert_eq!(refused(Method::POST, NOTES, long).await, ["title"]);
    let long = json!({"title": "t", "body": long_body});
    assert_eq!(refused(Method::POST, NOTES, long).await, ["body"]);
    let both = json!({"title": " ", "body": "\u{0}"});
    assert_eq!(refused(Method::POST, NOTES, both).await, ["title", "body"]);
    let control = json!({"title": "a\u{7}"});
    assert_eq!(refused(Method::PATCH, &path, control).await, ["title"]);
    assert_eq!(refused(Method::PATCH, &path, json!({})).await, ["body"]);
    app.finish().await;
}

async fn note_html_is_sanitised(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("xss").await;
    let rel = r#"rel="noopener noreferrer""#;
    for (input, stored) in [
        ("<script>alert(1)</script><p>ok</p>", "<p>ok</p>".to_owned()),
        ("<img src=x onerror=alert(1)>", String::new()),
        (
            r#"<a href="javascript:alert(1)">x</a>"#,
            format!("<a {rel}>x</a>"),
        ),
        (
            r#"<a href="https://e.example">x</a>"#,
            format!(r#"<a href="https://e.example" {rel}>x</a>"#),
        ),
        (r#"<p onclick="x()" style="a">t</p>"#, "<p>t</p>".to_owned()),
        (
            "<iframe src=//evil></iframe><svg><script>alert(1)</script></svg>",
            String::new(),
        ),
    ] {
        let title = "<b>title stays text</b>";
        let note = app
            .create_ok(NOTES, &s, json!({"title": title, "body": input}))
            .await;
        assert_eq!(
            (&note["body"], &note["title"]),
            (&json!(stored), &json!(title))
        );
        let path = format!("{NOTES}/{}", note["id"].as_str().unwrap());
        let again: serde_json::Value = app.get_auth(&path, &s.access).await.json().await.unwrap();
        assert_eq!(again["body"], stored, "{input}");
    }
    app.finish().await;
}
