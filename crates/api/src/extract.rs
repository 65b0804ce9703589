//! Extractors: strict JSON bodies, the request id and the client IP.
//!
//! `ApiJson<T>` is the only way a handler reads a body. It is strict where serde and axum
//! are lenient: duplicate keys are rejected at every depth (serde_json keeps the last one
//! for maps), unknown fields are rejected by `deny_unknown_fields` on every request type,
//! there is no implicit conversion (`"5"` is not a number) and `null` is only accepted
//! where the type is an `Option`. Every failure becomes a `validation_failed` entry naming
//! the field, with a message that names no Rust type.

use std::fmt;
use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use rampart_core::FieldError;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::problem::Problem;

/// The id of this request (contract §1): the client's if it was well-formed, else a UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The client's address as the trusted-proxy rules resolve it.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .ok_or_else(|| Problem::for_status(StatusCode::INTERNAL_SERVER_ERROR))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .ok_or_else(|| Problem::for_status(StatusCode::INTERNAL_SERVER_ERROR))
    }
}

/// Whether a `Content-Type` value is JSON in UTF-8 (the only body the API accepts).
pub fn is_json_utf8(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|param| {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let name = name.trim();
        if name.eq_ignore_ascii_case("charset") {
            value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        } else {
            // Unknown parameters are tolerated; an empty one (trailing `;`) too.
            true
        }
    })
}

/// A strictly parsed JSON body.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_utf8);
        if !json {
            return Err(Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE)
            } else {
                Problem::validation(vec![FieldError::new("body", "could not be read")])
            }
        })?;
        parse_strict(&bytes)
            .map(ApiJson)
            .map_err(Problem::validation)
    }
}

/// A strictly parsed query string: unknown parameters, repeated parameters and values of
/// the wrong type are `validation_failed` for `query.<name>`.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize::<_, T>(de)
            .map(ApiQuery)
            .map_err(|err| {
                let path = dotted_path(err.path());
                let mut entry = data_error(&path, &err.inner().to_string());
                if entry.field == "body" {
                    entry.field = "query".to_owned();
                }
                entry.field = if entry.field.starts_with("query") {
                    entry.field
                } else {
                    format!("query.{}", entry.field)
                };
                Problem::validation(vec![entry])
            })
    }
}

/// The query of a route that takes no parameters (the unpaginated lists, contract §5):
/// as `ApiQuery<NoQuery>`, any parameter is `validation_failed` for `query.<name>`.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// A path parameter; a malformed one (e.g. not a UUID) is `validation_failed` for
/// `path.<name>`, and the raw segment is never echoed.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::Path;
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let field = match e.kind() {
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::InvalidUtf8InPathParam { key } => format!("path.{key}"),
                    _ => {
                        // A single unnamed parameter: name it by the route's only capture.
                        let name = parts
                            .extensions
                            .get::<axum::extract::MatchedPath>()
                            .and_then(|m| {
                                let p = m.as_str();
                                let start = p.rfind('{')? + 1;
                                let end = p[start..].find('}')? + start;
                                Some(p[start..end].to_owned())
                            })
                            .unwrap_or_else(|| "id".to_owned());
                        format!("path.{name}")
                    }
                };
                Err(Problem::validation(vec![FieldError::new(
                    field,
                    "is not a valid identifier",
                )]))
            }
            Err(_) => Err(Problem::for_status(StatusCode::INTERNAL_SERVER_ERROR)),
        }
    }
}

/// Parses `bytes` as `T` with the strict rules of this module.
pub fn parse_strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Vec<FieldError>> {
    let value = match std::str::from_utf8(bytes) {
        Err(_) => return Err(vec![FieldError::new("body", "must be UTF-8 encoded JSON")]),
        Ok(text) => {
            let mut de = serde_json::Deserializer::from_str(text);
            let parsed = StrictValue::deserialize_with(&mut de).and_then(|v| de.end().map(|()| v));
            match parsed {
                Ok(v) => v,
                Err(e) => return Err(vec![syntax_error(&e)]),
            }
        }
    };
    // serde's derived structs also accept a JSON array (fields by position); every request
    // body of the API is an object, so anything else is refused up front.
    if !value.is_object() {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    }
    serde_path_to_error::deserialize::<_, T>(value).map_err(|err| {
        let path = dotted_path(err.path());
        vec![data_error(&path, &err.inner().to_string())]
    })
}

fn syntax_error(err: &serde_json::Error) -> FieldError {
    let msg = err.to_string();
    if let Some(key) = msg.strip_prefix("duplicate key ").and_then(backticked) {
        return FieldError::new(key, "appears more than once");
    }
    FieldError::new("body", "is not valid JSON")
}

fn dotted_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        let piece = match segment {
            Segment::Seq { index } => index.to_string(),
            Segment::Map { key } => key.clone(),
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => continue,
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&piece);
    }
    out
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn backticked(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

/// Turns a serde data error into a sentence for a person. serde's own messages name Rust
/// types (`expected struct RegisterRequest`), which the contract forbids in responses.
fn data_error(path: &str, msg: &str) -> FieldError {
    let at = |p: &str| {
        if p.is_empty() {
            "body".to_owned()
        } else {
            p.to_owned()
        }
    };
    if msg.starts_with("unknown field") {
        // serde_path_to_error already records the unknown key as the last segment.
        let field = backticked(msg).unwrap_or_default();
        let full = if path == field || path.ends_with(&format!(".{field}")) {
            path.to_owned()
        } else {
            join(path, field)
        };
        return FieldError::new(full, "is not an allowed field");
    }
    if msg.starts_with("missing field") {
        let field = backticked(msg).unwrap_or_default();
        return FieldError::new(join(path, field), "is required");
    }
    if msg.starts_with("duplicate field") {
        let field = backticked(msg).unwrap_or_default();
        return FieldError::new(join(path, field), "appears more than once");
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        let expected = rest
            .split_once("expected ")
            .map(|(_, e)| e)
            .unwrap_or_default();
        let null = rest.starts_with("null");
        let issue = if null {
            "must not be null".to_owned()
        } else {
            format!("must be {}", describe_expected(expected))
        };
        return FieldError::new(at(path), issue);
    }
    if msg.starts_with("unknown variant") {
        let options: Vec<&str> = msg
            .split_once("expected ")
            .map(|(_, rest)| rest.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        return FieldError::new(at(path), format!("must be one of: {}", options.join(", ")));
    }
    if msg.starts_with("invalid length") {
        return FieldError::new(at(path), "has the wrong number of items");
    }
    if msg.starts_with("invalid value") {
        let expected = msg
            .split_once("expected ")
            .map(|(_, e)| e)
            .unwrap_or_default();
        return FieldError::new(at(path), format!("must be {}", describe_expected(expected)));
    }
    // Custom messages come from our own validating newtypes and are written for people.
    FieldError::new(at(path), msg.to_owned())
}

fn describe_expected(expected: &str) -> &'static str {
    let e = expected.to_ascii_lowercase();
    if e.contains("string") || e.contains("char") {
        "a string"
    } else if e.contains("bool") {
        "true or false"
    } else if e.starts_with('u') || e.starts_with('i') || e.contains("integer") {
        "an integer in range"
    } else if e.starts_with('f') || e.contains("number") {
        "a number"
    } else if e.contains("sequence") || e.contains("array") || e.contains("tuple") {
        "a list"
    } else if e.contains("map") || e.contains("struct") || e.contains("object") {
        "an object"
    } else if e.contains("uuid") {
        "a UUID"
    } else {
        "a value of the right type"
    }
}

/// A `serde_json::Value` that refuses duplicate object keys at any depth.
struct StrictValue;

impl StrictValue {
    fn deserialize_with<'de, D: Deserializer<'de>>(de: D) -> Result<serde_json::Value, D::Error> {
        de.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

struct Seed;

impl<'de> de::DeserializeSeed<'de> for Seed {
    type Value = serde_json::Value;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(StrictVisitor)
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Seed)? {
            items.push(item);
        }
        Ok(items.into())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            let value = map.next_value_seed(Seed)?;
            object.insert(key, value);
        }
        Ok(object.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Sample {
        email: String,
        age: u32,
        nick: Option<String>,
        tags: Option<Vec<String>>,
    }

    fn errs(body: &str) -> Vec<FieldError> {
        parse_strict::<Sample>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn accepts_valid_and_optional_null() {
        let s: Sample = parse_strict(br#"{"email":"a@b.c","age":5,"nick":null}"#).unwrap();
        assert_eq!(s.age, 5);
        assert!(s.nick.is_none());
    }

    #[test]
    fn rejects_each_kind_of_bad_input_naming_the_field() {
        let cases = [
            (
                r#"{"email":"a","age":5,"role":"admin"}"#,
                "role",
                "is not an allowed field",
            ),
            (r#"{"age":5}"#, "email", "is required"),
            (
                r#"{"email":"a","age":"5"}"#,
                "age",
                "must be an integer in range",
            ),
            (r#"{"email":null,"age":5}"#, "email", "must not be null"),
            (
                r#"{"email":"a","age":-1}"#,
                "age",
                "must be an integer in range",
            ),
            (
                r#"{"email":"a","email":"b","age":1}"#,
                "email",
                "appears more than once",
            ),
            (
                r#"{"email":"a","age":1,"tags":[1]}"#,
                "tags.0",
                "must be a string",
            ),
            (r#"{"email":"a","age":1"#, "body", "is not valid JSON"),
            (r#"[1,2]"#, "body", "must be a JSON object"),
            (r#"["a@b.c",5,null,null]"#, "body", "must be a JSON object"),
            (r#"{"email":"a","age":1} x"#, "body", "is not valid JSON"),
        ];
        for (body, field, issue) in cases {
            let e = errs(body);
            assert_eq!(e.len(), 1, "{body}");
            assert_eq!(e[0].field, field, "{body}");
            assert_eq!(e[0].issue, issue, "{body}");
        }
    }

    #[tokio::test]
    async fn a_route_without_parameters_refuses_any() {
        async fn query(uri: &str) -> Result<(), Vec<FieldError>> {
            let (mut parts, ()) = axum::http::Request::builder()
                .uri(uri)
                .body(())
                .unwrap()
                .into_parts();
            ApiQuery::<NoQuery>::from_request_parts(&mut parts, &())
                .await
                .map(|_| ())
                .map_err(|p| p.errors)
        }
        assert_eq!(query("/x").await, Ok(()));
        assert_eq!(query("/x?").await, Ok(()));
        for (uri, field) in [
            ("/x?limit=5", "query.limit"),
            ("/x?foo", "query.foo"),
            ("/x?a=1&a=2", "query.a"),
        ] {
            let errors = query(uri).await.unwrap_err();
            assert_eq!(errors.len(), 1, "{uri}");
            assert_eq!(errors[0].field, field, "{uri}");
            assert_eq!(errors[0].issue, "is not an allowed field", "{uri}");
        }
    }

    #[test]
    fn nested_duplicate_keys_are_refused() {
        let r = parse_strict::<serde_json::Value>(br#"{"a":{"b":1,"b":2}}"#);
        assert_eq!(r.unwrap_err()[0].issue, "appears more than once");
    }

    #[test]
    fn content_type_rules() {
        assert!(is_json_utf8("application/json"));
        assert!(is_json_utf8("Application/JSON; charset=UTF-8"));
        assert!(is_json_utf8("application/json;charset=\"utf-8\""));
        assert!(!is_json_utf8("application/json; charset=latin1"));
        assert!(!is_json_utf8("text/plain"));
        assert!(!is_json_utf8("application/x-www-form-urlencoded"));
        assert!(!is_json_utf8("application/jsonp"));
    }

    mod props {
        use super::*;
        use futures_util::FutureExt;
        use proptest::prelude::*;
        use serde_json::Value;

        /// A JSON value without floats (serde_json's default float parsing is best-effort,
        /// so floats need not round-trip bit for bit) and with any keys and strings.
        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<String>().prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                    prop::collection::btree_map(any::<String>(), inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn object() -> impl Strategy<Value = serde_json::Map<String, Value>> {
            prop::collection::btree_map(any::<String>(), json(), 0..6)
                .prop_map(|m| m.into_iter().collect())
        }

        /// `key` as a JSON string with every UTF-16 unit escaped: equal to `key` once decoded,
        /// different as text.
        fn escaped(key: &str) -> String {
            let mut out = String::from("\"");
            for unit in key.encode_utf16() {
                out.push_str(&format!("\\u{unit:04x}"));
            }
            out.push('"');
            out
        }

        /// An object whose members are `members` and then one of their keys again, nested
        /// in `wrappers` (`Some(name)`: `{"name": …}`, `None`: `[…]`). Returns the text and
        /// the repeated key.
        fn with_duplicate(
            members: &serde_json::Map<String, Value>,
            index: prop::sample::Index,
            value: &Value,
            escape: bool,
            wrappers: &[Option<String>],
        ) -> (String, String) {
            let keys: Vec<&String> = members.keys().collect();
            let key = keys[index.index(keys.len())].clone();
            let mut text = serde_json::to_string(members).unwrap();
            text.pop();
            let repeat = if escape {
                escaped(&key)
            } else {
                serde_json::to_string(&key).unwrap()
            };
            text.push_str(&format!(",{repeat}:{value}}}"));
            for wrapper in wrappers.iter().rev() {
                text = match wrapper {
                    Some(name) => format!("{{{}:{text}}}", serde_json::to_string(name).unwrap()),
                    None => format!("[{text}]"),
                };
            }
            (text, key)
        }

        fn sample() -> impl Strategy<Value = Sample> {
            (
                any::<String>(),
                any::<u32>(),
                prop::option::of(any::<String>()),
                prop::option::of(prop::collection::vec(any::<String>(), 0..4)),
            )
                .prop_map(|(email, age, nick, tags)| Sample {
                    email,
                    age,
                    nick,
                    tags,
                })
        }

        fn query<T: DeserializeOwned>(raw: &str) -> Result<T, Vec<FieldError>> {
            let (mut parts, ()) = axum::http::Request::builder()
                .uri(format!("/x?{raw}"))
                .body(())
                .unwrap()
                .into_parts();
            ApiQuery::<T>::from_request_parts(&mut parts, &())
                .now_or_never()
                .expect("the query extractor never waits")
                .map(|ApiQuery(q)| q)
                .map_err(|p| p.errors)
        }

        /// Characters a client can put in a query string as they are (plus `%`, so that
        /// escapes both valid and broken occur).
        const QUERY: &str = "[a-zA-Z0-9=&%+;._~!$'()*,/:@?-]{0,64}";

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn strict_json_never_panics_on_arbitrary_bytes(bytes in any::<Vec<u8>>()) {
                let _ = parse_strict::<Value>(&bytes);
                let _ = parse_strict::<Sample>(&bytes);
            }

            #[test]
            fn strict_json_never_panics_on_json_like_text(text in "[\\[\\]{}\":,0-9a-z.eE+\\\\ -]{0,64}") {
                let _ = parse_strict::<Value>(text.as_bytes());
                let _ = parse_strict::<Sample>(text.as_bytes());
            }

            #[test]
            fn a_duplicate_key_at_any_depth_is_never_accepted(
                members in object().prop_filter("has a key", |m| !m.is_empty()),
                index in any::<prop::sample::Index>(),
                value in json(),
                escape in any::<bool>(),
                wrappers in prop::collection::vec(prop::option::of("[a-z]{1,5}"), 0..4),
            ) {
                let (text, key) = with_duplicate(&members, index, &value, escape, &wrappers);
                // The text is JSON that a lenient parser accepts (keeping the last value).
                prop_assert!(serde_json::from_str::<Value>(&text).is_ok());
                let errors = parse_strict::<Value>(text.as_bytes()).unwrap_err();
                prop_assert_eq!(errors.len(), 1);
                prop_assert_eq!(&errors[0].issue, "appears more than once");
                if !key.contains('`') {
                    prop_assert_eq!(&errors[0].field, &key);
                }
                prop_assert!(parse_strict::<Sample>(text.as_bytes()).is_err());
            }

            #[test]
            fn a_valid_object_round_trips(members in object()) {
                let value = Value::Object(members);
                let text = serde_json::to_vec(&value).unwrap();
                prop_assert_eq!(parse_strict::<Value>(&text), Ok(value.clone()));
                let pretty = serde_json::to_vec_pretty(&value).unwrap();
                prop_assert_eq!(parse_strict::<Value>(&pretty), Ok(value));
            }

            #[test]
            fn a_valid_request_body_round_trips(body in sample()) {
                let text = serde_json::to_vec(&body).unwrap();
                prop_assert_eq!(parse_strict::<Sample>(&text), Ok(body));
            }

            #[test]
            fn arbitrary_query_strings_never_panic(raw in QUERY) {
                use crate::routes::{audit::EventQuery, users::PageQuery};
                for field in query::<PageQuery>(&raw).err().into_iter().flatten() {
                    prop_assert!(field.field.starts_with("query"), "{field:?}");
                }
                for field in query::<EventQuery>(&raw).err().into_iter().flatten() {
                    prop_assert!(field.field.starts_with("query"), "{field:?}");
                }
                for field in query::<NoQuery>(&raw).err().into_iter().flatten() {
                    prop_assert!(field.field.starts_with("query"), "{field:?}");
                }
            }

            #[test]
            fn a_page_query_round_trips(
                limit in prop::option::of(any::<u32>()),
                cursor in prop::option::of(any::<String>()),
            ) {
                let mut out = form_urlencoded::Serializer::new(String::new());
                if let Some(limit) = limit {
                    out.append_pair("limit", &limit.to_string());
                }
                if let Some(cursor) = &cursor {
                    out.append_pair("cursor", cursor);
                }
                let raw = out.finish();
                let q = query::<crate::routes::users::PageQuery>(&raw).unwrap();
                prop_assert_eq!(q.parts(), (limit, cursor.as_deref()));
            }
        }
    }
}
