//! Bookmarks' own rules: http/https URLs of at most 2048 characters, stored normalised, and
//! plain-text titles of at most 200. Ownership is the shared contract's (`owned.rs`).

use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(bookmark_fields_are_validated_and_urls_normalised);

const BOOKMARKS: &str = "/api/v1/bookmarks";

async fn bookmark_fields_are_validated_and_urls_normalised(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("bookmarks").await;
    let saved = json!({"url": "HTTPS://Example.ORG", "title": "<b>Example</b>"});
    let b = app.create_ok(BOOKMARKS, &s, saved).await;
    assert_eq!(
        (&b["url"], &b["title"]),
        (&json!("https://example.org/"), &json!("<b>Example</b>"))
    );
    let path = format!("{BOOKMARKS}/{}", b["id"].as_str().unwrap());
    let refused = async |m, path: &str, body| app.refused_fields(m, path, &s, body).await;
    for url in [
        "javascript:alert(1)",
        "ftp://e.example/f",
        "/relative",
        "e.example",
        "",
    ] {
        let body = json!({"url": url, "title": "t"});
        assert_eq!(
            refused(Method::POST, BOOKMARKS, body).await,
            ["url"],
            "{url}"
        );
    }
    let at_limit = format!("https://e.example/{}", "a".repeat(2048 - 18));
    let b = app
        .create_ok(BOOKMARKS, &s, json!({"url": at_limit, "title": "t"}))
        .await;
    assert_eq!(b["url"].as_str().map(str::len), Some(2048));
    let over = json!({"url": format!("{at_limit}a"), "title": "t".repeat(201)});
    assert_eq!(
        refused(Method::POST, BOOKMARKS, over).await,
        ["url", "title"]
    );
    let grows = format!("https://e.example/{}x", " ".repeat(700));
    let over = json!({"url": grows});
    assert_eq!(refused(Method::PATCH, &path, over).await, ["url"]);
    let empty = json!({"title": " "});
    assert_eq!(refused(Method::PATCH, &path, empty).await, ["title"]);
    assert_eq!(refused(Method::PATCH, &path, json!({})).await, ["body"]);
    let r = app.call(
        Method::PATCH,
        &path,
        &s.access,
        Some(json!({"url": "http://e.example/b"})),
    );
    let changed: serde_json::Value = r.await.json().await.unwrap();
    assert_eq!(
        (&changed["url"], &changed["title"]),
        (&json!("http://e.example/b"), &json!("<b>Example</b>"))
    );
    app.finish().await;
}
