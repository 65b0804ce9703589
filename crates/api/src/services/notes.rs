//! Notes, the example business module (contract §7): what a note may hold. Ownership and
//! auditing are the kit's (`crate::owned`). HTML bodies are sanitised on write against an
//! allowlist, and the length limit applies to what is stored, after sanitising (which can
//! grow a body: every link gets a `rel`); titles are plain text.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use rampart_core::{Error, FieldError, Result};
use rampart_store::notes::{Note, NotePatch};

pub const TITLE_MAX: usize = 200;
pub const BODY_MAX: usize = 20_000;

static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let tags: HashSet<&'static str> = [
        "p",
        "br",
        "b",
        "i",
        "em",
        "strong",
        "ul",
        "ol",
        "li",
        "a",
        "code",
        "pre",
        "blockquote",
    ]
    .into_iter()
    .collect();
    let mut attributes = HashMap::new();
    attributes.insert("a", ["href"].into_iter().collect::<HashSet<&'static str>>());
    let mut builder = ammonia::Builder::empty();
    builder
        .tags(tags)
        .tag_attributes(attributes)
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer"))
        .strip_comments(true);
    builder
});

/// The allowlist of contract §7; everything else is removed (its text kept, except for
/// `script`/`style`, whose content goes too).
pub fn sanitize(body: &str) -> String {
    SANITIZER.clean(body).to_string()
}

fn check_title(title: &str) -> std::result::Result<(), FieldError> {
    let n = title.chars().count();
    if n == 0 || title.trim().is_empty() {
        return Err(FieldError::new("title", "must not be empty"));
    }
    if n > TITLE_MAX {
        return Err(FieldError::new("title", "must be at most 200 characters"));
    }
    if title.chars().any(char::is_control) {
        return Err(FieldError::new(
            "title",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// The limit holds for the body as sent and for `stored`, the sanitised body: sanitising
/// can grow a body (every link gets a `rel`), and what is stored is what readers get.
fn check_body(raw: &str, stored: &str) -> std::result::Result<(), FieldError> {
    if raw.contains('\0') {
        return Err(FieldError::new("body", "must not contain NUL characters"));
    }
    if raw.chars().count() > BODY_MAX {
        return Err(FieldError::new("body", "must be at most 20000 characters"));
    }
    if stored.chars().count() > BODY_MAX {
        return Err(FieldError::new(
            "body",
            "must be at most 20000 characters once sanitised",
        ));
    }
    Ok(())
}

/// Checks the title and the body, and returns the body as it will be stored.
fn validate(title: Option<&str>, body: Option<&str>) -> Result<Option<String>> {
    let mut errors = Vec::new();
    if let Some(t) = title
        && let Err(e) = check_title(t)
    {
        errors.push(e);
    }
    let sanitized = body.map(|b| (b, sanitize(b)));
    if let Some((raw, stored)) = &sanitized
        && let Err(e) = check_body(raw, stored)
    {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(sanitized.map(|(_, stored)| stored))
    } else {
        Err(Error::Validation(errors))
    }
}

/// The note to store for a create request: the title checked, the body checked and
/// sanitised.
pub fn new_note(title: &str, body: &str) -> Result<Note> {
    let body = validate(Some(title), Some(body))?.unwrap_or_default();
    Ok(Note {
        title: title.to_owned(),
        body,
    })
}

/// The change to apply for an update request: at least one of title and body.
pub fn patch(title: Option<&str>, body: Option<&str>) -> Result<NotePatch> {
    let sanitized = validate(title, body)?;
    if title.is_none() && body.is_none() {
        return Err(Error::validation("body", "must change title or body"));
    }
    Ok(NotePatch {
        title: title.map(str::to_owned),
        body: sanitized,
    })
}

#[cfg(test)]
mod tests {
    use super::{BODY_MAX, sanitize, validate};
    use rampart_core::Error;

    #[test]
    fn the_limit_is_on_the_sanitised_body() {
        let link = r#"<a href="https://e.example">l</a>"#;
        let grown = sanitize(link).chars().count();
        assert!(grown > link.len());
        // Just under the limit as sent, over it once every link has its `rel`.
        let n = BODY_MAX / link.len();
        let body = link.repeat(n);
        assert!(body.chars().count() <= BODY_MAX);
        assert!(n * grown > BODY_MAX);
        let Err(Error::Validation(errors)) = validate(None, Some(&body)) else {
            panic!("accepted a body over the limit once sanitised");
        };
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "body");
        assert_eq!(
            errors[0].issue,
            "must be at most 20000 characters once sanitised"
        );
        // As sent, the limit holds too, whatever sanitising would leave.
        let script = format!("<script>{}</script>ok", "x".repeat(BODY_MAX));
        assert!(validate(None, Some(&script)).is_err());
        // At the limit once sanitised: accepted, and stored sanitised.
        let fits = link.repeat(BODY_MAX / grown);
        assert_eq!(
            validate(None, Some(&fits)).unwrap().unwrap(),
            sanitize(link).repeat(BODY_MAX / grown)
        );
    }

    #[test]
    fn allowlist() {
        assert_eq!(sanitize("<p>hi <b>there</b></p>"), "<p>hi <b>there</b></p>");
        assert_eq!(sanitize("<script>alert(1)</script>ok"), "ok");
        assert_eq!(sanitize("<img src=x onerror=alert(1)>"), "");
        assert_eq!(
            sanitize(r#"<a href="https://e.example" onclick="x()">l</a>"#),
            r#"<a href="https://e.example" rel="noopener noreferrer">l</a>"#
        );
        assert_eq!(
            sanitize(r#"<a href="javascript:alert(1)">l</a>"#),
            r#"<a rel="noopener noreferrer">l</a>"#
        );
        assert_eq!(sanitize(r#"<p style="color:red">x</p>"#), "<p>x</p>");
        assert_eq!(sanitize("<div><span>x</span></div>"), "x");
        assert!(sanitize(r#"<a href="mailto:a@b.c">m</a>"#).contains("mailto:a@b.c"));
    }
}
