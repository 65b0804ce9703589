//! Notes, the example business module (contract §7): the ownership pattern every module
//! copies. Ownership is part of the SQL (`store::notes::Scope`), never a check after
//! loading; another user's note is 404 unless the caller holds `notes:read_any` (read only:
//! a write is then 403) or `notes:manage_any` (read and write). HTML bodies are sanitised
//! on write against an allowlist, and the length limit applies to what is stored, after
//! sanitising (which can grow a body: every link gets a `rel`); titles are plain text.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use rampart_core::audit::Outcome;
use rampart_core::{Error, FieldError, Result};
use rampart_store::notes::{self, Note, Scope};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::services::meta::RequestMeta;
use crate::state::AppState;

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

pub async fn create(
    state: &AppState,
    meta: &RequestMeta,
    caller: AuthUser,
    title: &str,
    body: &str,
) -> Result<Note> {
    let body = validate(Some(title), Some(body))?.unwrap_or_default();
    let id = Uuid::now_v7();
    let event = meta
        .event("note.created", Outcome::Success)
        .with_actor(caller.user_id)
        .with_target("note", id.to_string());
    notes::create(
        &state.db,
        id,
        caller.user_id,
        title,
        &body,
        state.clock.now_ms(),
        &event,
    )
    .await
}

async fn may(state: &AppState, caller: AuthUser, permission: &str) -> Result<bool> {
    Ok(state
        .permissions
        .get(state, caller.user_id)
        .await?
        .contains(permission))
}

pub async fn get(state: &AppState, caller: AuthUser, id: Uuid) -> Result<Note> {
    let scope = if may(state, caller, "notes:read_any").await?
        || may(state, caller, "notes:manage_any").await?
    {
        Scope::Any
    } else {
        Scope::Owner(caller.user_id)
    };
    notes::get(&state.db, id, scope)
        .await?
        .ok_or(Error::NotFound)
}

/// The scope a write runs in: own notes, or any note with `notes:manage_any`. A caller who
/// may only read others' notes gets 403 for one that exists, 404 otherwise.
async fn write_scope(state: &AppState, caller: AuthUser, id: Uuid) -> Result<Scope> {
    if may(state, caller, "notes:manage_any").await? {
        return Ok(Scope::Any);
    }
    if may(state, caller, "notes:read_any").await?
        && let Some(note) = notes::get(&state.db, id, Scope::Any).await?
        && note.owner_id != caller.user_id
    {
        return Err(Error::Forbidden);
    }
    Ok(Scope::Owner(caller.user_id))
}

pub async fn update(
    state: &AppState,
    meta: &RequestMeta,
    caller: AuthUser,
    id: Uuid,
    title: Option<&str>,
    body: Option<&str>,
) -> Result<Note> {
    let sanitized = validate(title, body)?;
    if title.is_none() && body.is_none() {
        return Err(Error::validation("body", "must change title or body"));
    }
    let scope = write_scope(state, caller, id).await?;
    let event = meta
        .event("note.updated", Outcome::Success)
        .with_actor(caller.user_id)
        .with_target("note", id.to_string());
    notes::update(
        &state.db,
        id,
        scope,
        title,
        sanitized.as_deref(),
        state.clock.now_ms(),
        &event,
    )
    .await?
    .ok_or(Error::NotFound)
}

pub async fn delete(
    state: &AppState,
    meta: &RequestMeta,
    caller: AuthUser,
    id: Uuid,
) -> Result<()> {
    let scope = write_scope(state, caller, id).await?;
    let event = meta
        .event("note.deleted", Outcome::Success)
        .with_actor(caller.user_id)
        .with_target("note", id.to_string());
    if notes::delete(&state.db, id, scope, state.clock.now_ms(), &event).await? {
        Ok(())
    } else {
        Err(Error::NotFound)
    }
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
