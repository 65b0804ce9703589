//! Validated types for the fields most modules take (parse, don't validate): once parsed,
//! code cannot hold an invalid one. `N` is the limit in characters (Unicode scalar values).
//!
//! - [`PlainText<N>`]: 1–N characters, not only whitespace, no control characters; stored
//!   as given (a client must still insert it as text, never as HTML).
//! - [`HttpUrl<N>`]: an absolute `http`/`https` URL (WHATWG URL parsing), stored in its
//!   normalised form; at most N characters both as sent and normalised.
//! - [`Html<N>`]: HTML sanitised to the allowlist of contract §7 (`p br b i em strong ul ol
//!   li a[href] code pre blockquote`; `href` only http, https, mailto; every link gets
//!   `rel="noopener noreferrer"`; comments, and `script`/`style` with their content, go).
//!   No NUL, at most N characters as sent and once sanitised (sanitising can grow a body),
//!   so the limit holds for what is stored and served.
//!
//! Request types keep such fields as `String` and parse them with [`Field::parse`], then
//! [`AllValid::all_valid`] reports every failed field at once (contract §1: one `errors`
//! entry per problem), not only the first as a failing `Deserialize` would.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use crate::error::{Error, FieldError};

/// A field type parsed from text sent for the input `field`.
pub trait Field: Sized {
    fn parse(raw: &str, field: &str) -> Result<Self, FieldError>;

    /// An optional field (a patch): `None` stays `None`.
    fn parse_optional(raw: Option<&str>, field: &str) -> Result<Option<Self>, FieldError> {
        raw.map(|r| Self::parse(r, field)).transpose()
    }
}

fn too_long<const N: usize>(field: &str) -> FieldError {
    FieldError::new(field, format!("must be at most {N} characters"))
}

/// Plain text of 1–N characters (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainText<const N: usize>(String);

impl<const N: usize> Field for PlainText<N> {
    fn parse(raw: &str, field: &str) -> Result<Self, FieldError> {
        if raw.trim().is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        if raw.chars().count() > N {
            return Err(too_long::<N>(field));
        }
        if raw.chars().any(char::is_control) {
            return Err(FieldError::new(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// An absolute http or https URL of at most N characters (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl<const N: usize>(String);

impl<const N: usize> Field for HttpUrl<N> {
    fn parse(raw: &str, field: &str) -> Result<Self, FieldError> {
        // Counted before parsing, so a huge input costs no parse.
        if raw.chars().count() > N {
            return Err(too_long::<N>(field));
        }
        let invalid = || FieldError::new(field, "must be an http or https URL");
        let url = url::Url::parse(raw).map_err(|_| invalid())?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(invalid());
        }
        let normalised = String::from(url);
        if normalised.chars().count() > N {
            return Err(too_long::<N>(field));
        }
        Ok(Self(normalised))
    }
}

static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let tags: HashSet<&'static str> = HTML_TAGS.iter().copied().collect();
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

/// The tags [`Html`] keeps (contract §7).
pub const HTML_TAGS: &[&str] = &[
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
];

/// HTML sanitised to the allowlist, at most N characters (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Html<const N: usize>(String);

impl<const N: usize> Html<N> {
    /// The allowlist of contract §7 applied to `html`; everything else is removed (its text
    /// kept, except for `script`/`style`, whose content goes too).
    pub fn sanitize(html: &str) -> String {
        SANITIZER.clean(html).to_string()
    }
}

impl<const N: usize> Field for Html<N> {
    fn parse(raw: &str, field: &str) -> Result<Self, FieldError> {
        if raw.contains('\0') {
            return Err(FieldError::new(field, "must not contain NUL characters"));
        }
        if raw.chars().count() > N {
            return Err(too_long::<N>(field));
        }
        let stored = Self::sanitize(raw);
        if stored.chars().count() > N {
            return Err(FieldError::new(
                field,
                format!("must be at most {N} characters once sanitised"),
            ));
        }
        Ok(Self(stored))
    }
}

macro_rules! text_newtype {
    ($($name:ident),+) => {$(
        impl<const N: usize> $name<N> {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl<const N: usize> From<$name<N>> for String {
            fn from(value: $name<N>) -> Self {
                value.0
            }
        }
    )+};
}
text_newtype!(PlainText, HttpUrl, Html);

/// Several parsed fields at once: `(a, b).all_valid()?` is `(a, b)` when every field
/// parsed, else a validation error listing every field that did not.
pub trait AllValid {
    type Output;
    fn all_valid(self) -> Result<Self::Output, Error>;
}

macro_rules! all_valid_tuple {
    ($($t:ident),+) => {
        impl<$($t),+> AllValid for ($(Result<$t, FieldError>,)+) {
            type Output = ($($t,)+);

            #[allow(non_snake_case)]
            fn all_valid(self) -> Result<Self::Output, Error> {
                let ($($t,)+) = self;
                let mut errors = Vec::new();
                $(let $t = $t.map_err(|e| errors.push(e)).ok();)+
                match ($($t,)+) {
                    ($(Some($t),)+) => Ok(($($t,)+)),
                    _ => Err(Error::Validation(errors)),
                }
            }
        }
    };
}
all_valid_tuple!(A);
all_valid_tuple!(A, B);
all_valid_tuple!(A, B, C);
all_valid_tuple!(A, B, C, D);
all_valid_tuple!(A, B, C, D, E);
all_valid_tuple!(A, B, C, D, E, F);

#[cfg(test)]
mod tests {
    use super::*;

    type Title = PlainText<200>;
    type Link = HttpUrl<2048>;
    type Body = Html<20_000>;

    fn issue<T: std::fmt::Debug>(result: Result<T, FieldError>) -> String {
        result.unwrap_err().issue
    }

    #[test]
    fn plain_text() {
        assert_eq!(Title::parse("<b>x</b>", "t").unwrap().as_str(), "<b>x</b>");
        assert_eq!(issue(Title::parse(" \t", "t")), "must not be empty");
        assert_eq!(issue(Title::parse("", "t")), "must not be empty");
        assert_eq!(
            issue(Title::parse("a\u{7}", "t")),
            "must not contain control characters"
        );
        assert!(Title::parse(&"é".repeat(200), "t").is_ok());
        assert_eq!(
            issue(Title::parse(&"é".repeat(201), "t")),
            "must be at most 200 characters"
        );
    }

    #[test]
    fn http_urls() {
        let url = |raw: &str| Link::parse(raw, "url").map(String::from);
        assert_eq!(url("https://Example.org").unwrap(), "https://example.org/");
        assert_eq!(
            url(" http://e.example/a b ").unwrap(),
            "http://e.example/a%20b"
        );
        for bad in [
            "",
            "example.org",
            "javascript:alert(1)",
            "ftp://e.example/",
            "mailto:a@b.c",
        ] {
            assert_eq!(issue(url(bad)), "must be an http or https URL", "{bad}");
        }
        let long = format!("https://e.example/{}", "a".repeat(2048));
        assert_eq!(issue(url(&long)), "must be at most 2048 characters");
        // Fits as sent, not once percent-encoded.
        let grows = format!("https://e.example/{}x", " ".repeat(2000));
        assert_eq!(issue(url(&grows)), "must be at most 2048 characters");
    }

    #[test]
    fn html_allowlist() {
        let clean = |raw: &str| String::from(Body::parse(raw, "body").unwrap());
        assert_eq!(clean("<p>hi <b>there</b></p>"), "<p>hi <b>there</b></p>");
        assert_eq!(clean("<script>alert(1)</script>ok"), "ok");
        assert_eq!(clean("<img src=x onerror=alert(1)>"), "");
        assert_eq!(
            clean(r#"<a href="https://e.example" onclick="x()">l</a>"#),
            r#"<a href="https://e.example" rel="noopener noreferrer">l</a>"#
        );
        assert_eq!(
            clean(r#"<a href="javascript:alert(1)">l</a>"#),
            r#"<a rel="noopener noreferrer">l</a>"#
        );
        assert_eq!(clean(r#"<p style="color:red">x</p>"#), "<p>x</p>");
        assert_eq!(clean("<div><span>x</span></div>"), "x");
        assert!(clean(r#"<a href="mailto:a@b.c">m</a>"#).contains("mailto:a@b.c"));
        assert_eq!(clean(""), "");
        assert_eq!(
            issue(Body::parse("a\0b", "body")),
            "must not contain NUL characters"
        );
    }

    #[test]
    fn the_html_limit_is_on_the_sanitised_text() {
        let link = r#"<a href="https://e.example">l</a>"#;
        let grown = Body::sanitize(link).chars().count();
        assert!(grown > link.len());
        // Just under the limit as sent, over it once every link has its `rel`.
        let n = 20_000 / link.len();
        let body = link.repeat(n);
        assert!(body.chars().count() <= 20_000 && n * grown > 20_000);
        let refused = Body::parse(&body, "body").unwrap_err();
        assert_eq!(
            refused,
            FieldError::new("body", "must be at most 20000 characters once sanitised")
        );
        // As sent, the limit holds too, whatever sanitising would leave.
        let script = format!("<script>{}</script>ok", "x".repeat(20_000));
        assert_eq!(
            issue(Body::parse(&script, "body")),
            "must be at most 20000 characters"
        );
        // At the limit once sanitised: accepted, and kept sanitised.
        let fits = link.repeat(20_000 / grown);
        assert_eq!(
            Body::parse(&fits, "body").unwrap().as_str(),
            Body::sanitize(link).repeat(20_000 / grown)
        );
    }

    #[test]
    fn all_valid_reports_every_failed_field() {
        let ok = (Title::parse("t", "title"), Body::parse("b", "body")).all_valid();
        let (title, body) = ok.unwrap();
        assert_eq!((title.as_str(), body.as_str()), ("t", "b"));
        let both = (Title::parse("", "title"), Link::parse("x", "url")).all_valid();
        let Err(Error::Validation(errors)) = both else {
            panic!("accepted invalid fields");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["title", "url"]);
        assert_eq!(Title::parse_optional(None, "title"), Ok(None));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Where a parsed HTML text has a `<`, an allowed tag starts.
        fn only_allowed_tags(html: &str) -> bool {
            html.match_indices('<').all(|(i, _)| {
                let rest = html[i + 1..].trim_start_matches('/');
                let name: String = rest
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .collect();
                HTML_TAGS.contains(&name.as_str())
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn plain_text_never_panics_and_round_trips(raw in any::<String>()) {
                match PlainText::<20>::parse(&raw, "f") {
                    Ok(text) => {
                        prop_assert_eq!(text.as_str(), raw.as_str());
                        prop_assert!(raw.chars().count() <= 20);
                        prop_assert_eq!(PlainText::<20>::parse(text.as_str(), "f"), Ok(text));
                    }
                    Err(e) => prop_assert_eq!(e.field, "f"),
                }
            }

            #[test]
            fn urls_never_panic_and_normalise_once(
                raw in prop_oneof![
                    any::<String>(),
                    "(https?|ftp|javascript)://[a-zA-Z0-9.%@:/?#\\[\\] -]{0,40}",
                ],
            ) {
                match HttpUrl::<64>::parse(&raw, "url") {
                    Ok(url) => {
                        let text = url.as_str();
                        prop_assert!(text.starts_with("http://") || text.starts_with("https://"));
                        prop_assert!(text.chars().count() <= 64);
                        prop_assert_eq!(HttpUrl::<64>::parse(text, "url"), Ok(url.clone()));
                    }
                    Err(e) => prop_assert_eq!(e.field, "url"),
                }
            }

            #[test]
            fn html_never_panics_and_keeps_only_the_allowlist(
                raw in prop_oneof![
                    any::<String>(),
                    "(<(/?)(p|a|b|script|img|svg|style|div|iframe)( href=\"[a-z:/.]{0,12}\"| onclick=x)?>|[a-z <>&\"'=]){0,24}",
                ],
            ) {
                match Html::<200>::parse(&raw, "body") {
                    Ok(html) => {
                        prop_assert!(html.as_str().chars().count() <= 200);
                        prop_assert!(only_allowed_tags(html.as_str()), "{}", html.as_str());
                        prop_assert!(!html.as_str().to_ascii_lowercase().contains("href=\"javascript"));
                        prop_assert_eq!(Html::<200>::parse(html.as_str(), "body"), Ok(html.clone()));
                    }
                    Err(e) => prop_assert_eq!(e.field, "body"),
                }
            }
        }
    }
}
