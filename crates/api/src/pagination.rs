//! Cursor pagination (contract §5): `limit` 1–100 (default 20) and an opaque `cursor`.
//! Cursors are base64url of `<kind>:<position>`; a cursor of another list or a tampered
//! one is `validation_failed` for `query.cursor`, never a 500. A list route takes a
//! [`PageQuery`] and answers a [`Page`]; [`by_id`] is the whole of a list keyed by UUIDv7
//! ids (creation order).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rampart_core::{Error, FieldError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The query of a paginated list.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Opaque; from a previous page's `nextCursor`.
    cursor: Option<String>,
}

impl PageQuery {
    pub fn parts(&self) -> (Option<u32>, Option<&str>) {
        (self.limit, self.cursor.as_deref())
    }
}

/// One page of a list: `{"items": […], "nextCursor": null | "…"}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Present when there may be more: pass it as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// The list helper for rows keyed by a UUIDv7 id: checks `query`'s limit and cursor (a
/// cursor of list `kind` only), fetches at most `limit` rows after the cursor's id with
/// `fetch(after, limit)`, and pages them as `T`.
pub async fn by_id<R, T>(
    query: &PageQuery,
    kind: &str,
    fetch: impl AsyncFnOnce(Option<Uuid>, u32) -> Result<Vec<R>, Error>,
    id: impl Fn(&R) -> Uuid,
) -> Result<Page<T>, Error>
where
    T: for<'r> From<&'r R>,
{
    let (limit, cursor) = query.parts();
    let limit = self::limit(limit)?;
    let after = decode_uuid(kind, cursor)?;
    let rows = fetch(after, limit).await?;
    Ok(Page {
        next_cursor: next(&rows, limit, kind, |r| id(r).to_string()),
        items: rows.iter().map(T::from).collect(),
    })
}

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

pub fn limit(requested: Option<u32>) -> Result<u32, Error> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(Error::Validation(vec![FieldError::new(
            "query.limit",
            "must be between 1 and 100",
        )])),
    }
}

pub fn encode(kind: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{position}"))
}

fn bad_cursor() -> Error {
    Error::Validation(vec![FieldError::new(
        "query.cursor",
        "is not a valid cursor",
    )])
}

/// The position inside a cursor of `kind`.
pub fn decode(kind: &str, cursor: &str) -> Result<String, Error> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| bad_cursor())?;
    let text = String::from_utf8(bytes).map_err(|_| bad_cursor())?;
    let (k, position) = text.split_once(':').ok_or_else(bad_cursor)?;
    if k != kind || position.is_empty() {
        return Err(bad_cursor());
    }
    Ok(position.to_owned())
}

pub fn decode_uuid(kind: &str, cursor: Option<&str>) -> Result<Option<uuid::Uuid>, Error> {
    cursor
        .map(|c| decode(kind, c).and_then(|p| uuid::Uuid::parse_str(&p).map_err(|_| bad_cursor())))
        .transpose()
}

pub fn decode_i64(kind: &str, cursor: Option<&str>) -> Result<Option<i64>, Error> {
    cursor
        .map(|c| decode(kind, c).and_then(|p| p.parse::<i64>().map_err(|_| bad_cursor())))
        .transpose()
}

/// The next cursor: present only when the page is full (there may be more).
pub fn next<T>(
    items: &[T],
    limit: u32,
    kind: &str,
    position: impl Fn(&T) -> String,
) -> Option<String> {
    if items.len() < limit as usize {
        return None;
    }
    items.last().map(|last| encode(kind, &position(last)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let id = uuid::Uuid::now_v7();
        let c = encode("users", &id.to_string());
        assert_eq!(decode_uuid("users", Some(&c)).unwrap(), Some(id));
        assert!(decode_uuid("notes", Some(&c)).is_err());
        assert!(decode_uuid("users", Some("!!")).is_err());
        assert!(decode_uuid("users", Some(&encode("users", "x"))).is_err());
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(101)).is_err());
        assert_eq!(limit(None).unwrap(), 20);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn refused(result: Result<impl std::fmt::Debug, Error>) -> bool {
            match result {
                Err(Error::Validation(errors)) => {
                    errors == vec![FieldError::new("query.cursor", "is not a valid cursor")]
                }
                _ => false,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn a_cursor_round_trips(kind in "[a-z_]{1,12}", position in any::<String>()) {
                prop_assume!(!position.is_empty());
                let cursor = encode(&kind, &position);
                prop_assert_eq!(decode(&kind, &cursor).ok(), Some(position));
                let other = format!("{kind}x");
                prop_assert!(refused(decode(&other, &cursor)));
            }

            #[test]
            fn typed_cursors_round_trip(id in any::<u128>(), n in any::<i64>()) {
                let id = uuid::Uuid::from_u128(id);
                prop_assert_eq!(
                    decode_uuid("users", Some(&encode("users", &id.to_string()))).ok(),
                    Some(Some(id))
                );
                prop_assert_eq!(
                    decode_i64("audit", Some(&encode("audit", &n.to_string()))).ok(),
                    Some(Some(n))
                );
                prop_assert!(refused(decode_uuid("notes", Some(&encode("users", &id.to_string())))));
                prop_assert!(refused(decode_i64("audit", Some(&encode("audit", &id.to_string())))));
            }

            /// Any text either decodes, and then is exactly the cursor this module would have
            /// written for that position, or is refused naming `query.cursor`.
            #[test]
            fn arbitrary_cursors_decode_or_are_refused(
                cursor in prop_oneof![any::<String>(), "[A-Za-z0-9_=+/-]{0,48}"],
            ) {
                for kind in ["users", "notes", "audit"] {
                    match decode(kind, &cursor) {
                        Ok(position) => prop_assert_eq!(encode(kind, &position), cursor.clone()),
                        Err(e) => prop_assert!(refused(Err::<(), _>(e))),
                    }
                    let uuid = decode_uuid(kind, Some(&cursor));
                    prop_assert!(uuid.is_ok() || refused(uuid));
                    let n = decode_i64(kind, Some(&cursor));
                    prop_assert!(n.is_ok() || refused(n));
                }
            }

            #[test]
            fn a_tampered_cursor_is_refused_or_another_canonical_cursor(
                position in "[0-9a-f-]{1,36}",
                at in any::<prop::sample::Index>(),
                with in "[A-Za-z0-9_=+/!-]",
            ) {
                let cursor = encode("users", &position);
                let i = at.index(cursor.len());
                let tampered = format!("{}{with}{}", &cursor[..i], &cursor[i + 1..]);
                match decode("users", &tampered) {
                    Ok(p) => prop_assert_eq!(encode("users", &p), tampered),
                    Err(e) => prop_assert!(refused(Err::<(), _>(e))),
                }
            }
        }
    }
}
