//! Authentication at the HTTP boundary: the bearer-token extractors, the session-liveness
//! cache, the refresh cookie and the cross-site checks of cookie-authenticated routes.
//! A request that carries the refresh cookie more than once (a sibling subdomain can plant
//! a second one) is unauthenticated: which one a browser sends first is not defined, so
//! neither is used and nothing is consumed (contract §4).
//!
//! Two extractors, deliberately distinct:
//! - [`AuthUser`]: a verified access token whose session is live (checked through
//!   [`Authentication`]'s liveness cache, falling back to the database). Every authenticated route uses it,
//!   except the one below.
//! - [`VerifiedToken`]: signature and claims only. Only for handlers whose single query
//!   re-checks session liveness itself (`GET /users/me` reads the user *through* the live
//!   session, so the request costs one database round trip). Its name says what it is not.
//!
//! Session liveness (contract §4): a token of a logged-out, revoked or password-changed
//! session is refused at once. Ending a session evicts it from this instance's cache in
//! the same request and, with Redis, from every other instance's within milliseconds
//! ([`crate::invalidation`]); entries expire after [`SESSION_CACHE_TTL`] whatever happens,
//! which bounds how long any instance can keep trusting a session ended elsewhere, also
//! when Redis is down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use rampart_core::tokens::{AccessClaims, TokenService};
use rampart_core::{Clock, Error};
use rampart_store::Db;
use uuid::Uuid;

use crate::problem::ApiError;

/// How long a positive liveness answer is trusted without asking the database.
pub const SESSION_CACHE_TTL: Duration = Duration::from_secs(1);
const SESSION_CACHE_MAX: usize = 100_000;

/// The authentication component: verifies bearer tokens and answers whether their
/// session is live. It holds only what that takes (the token service, the database, the
/// clock and the liveness cache); extractors reach it through [`FromRef`], so this module
/// knows nothing of the application state that composes it.
pub struct Authentication {
    tokens: Arc<TokenService>,
    db: Db,
    clock: Arc<dyn Clock>,
    sessions: SessionCache,
}

impl Authentication {
    pub fn new(tokens: Arc<TokenService>, db: Db, clock: Arc<dyn Clock>) -> Self {
        Self {
            tokens,
            db,
            clock,
            sessions: SessionCache::default(),
        }
    }

    /// The request's bearer token, verified (signature, algorithm, kid, typ, iss, aud,
    /// exp/nbf) but **not** checked for session liveness.
    pub fn verify(&self, headers: &HeaderMap) -> Result<AccessClaims, Error> {
        let token = bearer(headers).ok_or(Error::Unauthenticated)?;
        let now = self.clock.now().unix_timestamp();
        self.tokens.verify(token, now)
    }

    /// A verified token whose session is live, from the cache or the database.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<AuthUser, Error> {
        Ok(self.authenticate_claims(headers).await?.0)
    }

    /// [`Self::authenticate`], with the token's verified claims.
    pub async fn authenticate_claims(
        &self,
        headers: &HeaderMap,
    ) -> Result<(AuthUser, AccessClaims), Error> {
        let claims = self.verify(headers)?;
        let live = match self.sessions.get(claims.sid) {
            Some(user) => Some(user),
            None => {
                let generation = self.sessions.generation();
                let read_at = Instant::now();
                let user =
                    rampart_store::sessions::live_user(&self.db, claims.sid, self.clock.now_ms())
                        .await?;
                if let Some(user) = user {
                    self.sessions.put(claims.sid, user, generation, read_at);
                }
                user
            }
        };
        match live {
            Some(user) if user == claims.sub => Ok((
                AuthUser {
                    user_id: claims.sub,
                    session_id: claims.sid,
                },
                claims,
            )),
            _ => Err(Error::Unauthenticated),
        }
    }

    /// Forgets ended sessions at once. Use `AppState::sessions_ended`, which also tells
    /// the other instances.
    pub(crate) fn sessions_ended<'a>(&self, session_ids: impl IntoIterator<Item = &'a Uuid>) {
        self.sessions.evict(session_ids);
    }

    /// Forgets every cached session (when invalidation messages may have been missed).
    pub(crate) fn forget_sessions(&self) {
        self.sessions.clear();
    }
}

/// Live sessions seen recently: session id → (user id, when it was checked).
///
/// Every eviction bumps a generation; an answer read from the database is only cached if
/// no eviction happened while it was being read, so a read that raced with a revocation
/// (here or, through [`crate::invalidation`], on another instance) is never cached.
#[derive(Default)]
struct SessionCache {
    entries: Mutex<HashMap<Uuid, (Uuid, Instant)>>,
    generation: AtomicU64,
}

impl SessionCache {
    /// Read before asking the database; pass to [`Self::put`].
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn get(&self, session_id: Uuid) -> Option<Uuid> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&session_id)
            .filter(|(_, at)| at.elapsed() < SESSION_CACHE_TTL)
            .map(|(user, _)| *user)
    }

    /// Caches an answer read from the database. `read_at` is taken *before* the read, so
    /// an entry never outlives [`SESSION_CACHE_TTL`] counted from when it may have gone
    /// stale.
    fn put(&self, session_id: Uuid, user_id: Uuid, generation: u64, read_at: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if entries.len() >= SESSION_CACHE_MAX {
            entries.retain(|_, (_, at)| at.elapsed() < SESSION_CACHE_TTL);
            if entries.len() >= SESSION_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(session_id, (user_id, read_at));
    }

    fn evict<'a>(&self, session_ids: impl IntoIterator<Item = &'a Uuid>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        for id in session_ids {
            entries.remove(id);
        }
    }

    fn clear(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }
}

/// The bearer token of the request, verified (signature, algorithm, kid, typ, iss, aud,
/// exp/nbf) but **not** checked for session liveness. See the module docs.
#[derive(Debug, Clone)]
pub struct VerifiedToken(pub AccessClaims);

/// A caller with a verified token whose session is live.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

/// `Authorization: Bearer <token>`, the scheme compared case-insensitively (RFC 9110).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl<S> FromRequestParts<S> for VerifiedToken
where
    S: Send + Sync,
    Arc<Authentication>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // The route's policy layer already verified this request's token.
        if let Some(verified) = parts.extensions.get::<VerifiedToken>() {
            return Ok(verified.clone());
        }
        let auth = Arc::<Authentication>::from_ref(state);
        Ok(Self(auth.verify(&parts.headers)?))
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    Arc<Authentication>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // The route's policy layer already authenticated this request.
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(*user);
        }
        let auth = Arc::<Authentication>::from_ref(state);
        Ok(auth.authenticate(&parts.headers).await?)
    }
}

impl<S> axum::extract::OptionalFromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    Arc<Authentication>: FromRef<S>,
{
    type Rejection = ApiError;

    /// `None` without an `Authorization` header; an invalid token is still a 401.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, ApiError> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        <Self as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

/// The refresh cookie's name: `__Secure-` requires `Secure`, which
/// `RAMPART_COOKIE_SECURE=false` (development over plain HTTP) drops.
pub fn refresh_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Secure-rampart_refresh"
    } else {
        "rampart_refresh"
    }
}

pub const REFRESH_COOKIE_PATH: &str = "/api/v1/auth";

/// `Set-Cookie` for a refresh token living `max_age_secs` more seconds.
pub fn refresh_cookie(secure: bool, token: &str, max_age_secs: i64) -> Option<HeaderValue> {
    let name = refresh_cookie_name(secure);
    let secure_attr = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={token}; Max-Age={}; Path={REFRESH_COOKIE_PATH}; HttpOnly{secure_attr}; SameSite=Strict",
        max_age_secs.max(0)
    ))
    .ok()
}

/// `Set-Cookie` that removes the refresh cookie.
pub fn clear_refresh_cookie(secure: bool) -> Option<HeaderValue> {
    refresh_cookie(secure, "", 0)
}

/// The refresh token from the request's cookies: exactly one cookie of that name across
/// every `Cookie` header, with a plausible value. Missing, empty, oversized or present
/// more than once is [`Error::Unauthenticated`].
pub fn refresh_token_from(headers: &HeaderMap, secure: bool) -> Result<String, Error> {
    let name = refresh_cookie_name(secure);
    let mut values = headers
        .get_all(header::COOKIE)
        .iter()
        // A header that is not visible ASCII cannot be searched for a duplicate: refuse it
        // rather than skip it.
        .map(|v| v.to_str().map_err(|_| Error::Unauthenticated))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim());
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Error::Unauthenticated);
    };
    if value.is_empty() || value.len() > 128 {
        return Err(Error::Unauthenticated);
    }
    Ok(value.to_owned())
}

/// Cookie-authenticated routes refuse cross-site requests (contract §4): an `Origin` that
/// is present and neither allowlisted nor the origin of `RAMPART_PUBLIC_URL` (where the
/// console is served from, contract §13), or `Sec-Fetch-Site: cross-site`.
pub fn check_same_site(
    headers: &HeaderMap,
    allowed_origins: &[String],
    public_url: &str,
) -> Result<(), Error> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| {
            allowed_origins.iter().any(|a| a == o)
                || public_origin(public_url).as_deref() == Some(o)
        });
        if !allowed {
            return Err(Error::Forbidden);
        }
    }
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
    if cross_site {
        return Err(Error::Forbidden);
    }
    Ok(())
}

/// The origin (`scheme://host[:port]`) of `RAMPART_PUBLIC_URL`, as a browser sends it in
/// `Origin`; `None` for a URL without one.
pub fn public_origin(public_url: &str) -> Option<String> {
    let url = url::Url::parse(public_url).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bEaReR abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn cookies() {
        let v = refresh_cookie(true, "tok", 60).unwrap();
        assert_eq!(
            v,
            "__Secure-rampart_refresh=tok; Max-Age=60; Path=/api/v1/auth; HttpOnly; Secure; SameSite=Strict"
        );
        let v = clear_refresh_cookie(false).unwrap();
        assert_eq!(
            v,
            "rampart_refresh=; Max-Age=0; Path=/api/v1/auth; HttpOnly; SameSite=Strict"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; rampart_refresh=xyz; __Secure-rampart_refresh=sec"),
        );
        assert_eq!(refresh_token_from(&h, false).unwrap(), "xyz");
        assert_eq!(refresh_token_from(&h, true).unwrap(), "sec");
    }

    #[test]
    fn a_refresh_cookie_sent_twice_is_refused() {
        let cookies = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::COOKIE, HeaderValue::from_static(v));
            }
            h
        };
        let refused = [
            &["rampart_refresh=a; rampart_refresh=b"][..],
            &["rampart_refresh=a; rampart_refresh=a"],
            &["rampart_refresh=a", "rampart_refresh=b"],
            &["x=1; rampart_refresh=a", "y=2;rampart_refresh=b"],
            &["rampart_refresh=a; rampart_refresh="],
            &["rampart_refresh =a; rampart_refresh=b"],
            &[],
            &["rampart_refresh="],
            &["other=1"],
        ];
        for values in refused {
            assert!(
                matches!(
                    refresh_token_from(&cookies(values), false),
                    Err(Error::Unauthenticated)
                ),
                "{values:?}"
            );
        }
        // The other name does not count: only the configured one is the refresh cookie.
        let h = cookies(&["rampart_refresh=a; __Secure-rampart_refresh=b"]);
        assert_eq!(refresh_token_from(&h, false).unwrap(), "a");
        assert_eq!(refresh_token_from(&h, true).unwrap(), "b");
        let h = cookies(&["x=1", "rampart_refresh=a"]);
        assert_eq!(refresh_token_from(&h, false).unwrap(), "a");
    }

    #[test]
    fn same_site() {
        let allowed = vec!["https://app.example".to_owned()];
        let mut h = HeaderMap::new();
        assert!(check_same_site(&h, &allowed, "https://app.example").is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        assert!(check_same_site(&h, &allowed, "https://app.example").is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(check_same_site(&h, &allowed, "https://app.example").is_err());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_same_site(&h, &allowed, "https://app.example").is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(check_same_site(&h, &allowed, "https://app.example").is_ok());
    }

    /// The console's origin (that of `RAMPART_PUBLIC_URL`) is accepted without being
    /// allowlisted; its path and a default port do not matter, another port does.
    #[test]
    fn same_site_accepts_the_public_url_origin() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(check_same_site(&h, &[], "http://127.0.0.1:8080/base/").is_ok());
        assert!(check_same_site(&h, &[], "http://127.0.0.1:8081").is_err());
        assert!(check_same_site(&h, &[], "not a url").is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        assert!(check_same_site(&h, &[], "https://app.example:443/x").is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_same_site(&h, &[], "https://app.example").is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Bytes an HTTP header value may hold (visible ASCII, space, tab, obs-text).
        fn header_value() -> impl Strategy<Value = HeaderValue> {
            prop::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..96)
                .prop_map(|bytes| HeaderValue::from_bytes(&bytes).unwrap())
        }

        /// Header values made of cookie syntax, so that names and separators collide often.
        fn cookie_like() -> impl Strategy<Value = HeaderValue> {
            "([ ;=]|rampart_refresh|__Secure-|[a-z0-9]{1,4}){0,12}"
                .prop_map(|s| HeaderValue::from_str(&s).unwrap())
        }

        /// Other cookies: any name but the refresh cookie's, with a cookie-octet value.
        fn other_cookie() -> impl Strategy<Value = String> {
            (
                "[A-Za-z0-9_.-]{1,12}",
                "[A-Za-z0-9!#$%&'()*+./:<>?@\\[\\]^_`{|}~-]{0,16}",
            )
                .prop_filter("not the refresh cookie", |(name, _)| {
                    name != refresh_cookie_name(true) && name != refresh_cookie_name(false)
                })
                .prop_map(|(name, value)| format!("{name}={value}"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn authorization_parsing_never_panics(value in prop_oneof![header_value(), "(?i:bearer)[ \t]{0,3}[ -~]{0,20}".prop_map(|s| HeaderValue::from_str(&s).unwrap())]) {
                let mut h = HeaderMap::new();
                h.insert(header::AUTHORIZATION, value);
                if let Some(token) = bearer(&h) {
                    prop_assert!(!token.is_empty());
                    prop_assert_eq!(token, token.trim());
                }
            }

            #[test]
            fn a_bearer_token_round_trips(
                scheme in "(?i:bearer)",
                token in "[A-Za-z0-9._~+/-]{1,200}=*",
            ) {
                let mut h = HeaderMap::new();
                h.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("{scheme} {token}")).unwrap(),
                );
                prop_assert_eq!(bearer(&h), Some(token.as_str()));
            }

            #[test]
            fn cookie_parsing_never_panics(
                values in prop::collection::vec(prop_oneof![header_value(), cookie_like()], 0..4),
                secure in any::<bool>(),
            ) {
                let mut h = HeaderMap::new();
                for v in values {
                    h.append(header::COOKIE, v);
                }
                if let Ok(token) = refresh_token_from(&h, secure) {
                    prop_assert!(!token.is_empty() && token.len() <= 128);
                }
            }

            /// The cookie this server sets comes back, among any others and split over any
            /// number of `Cookie` headers, as the same token.
            #[test]
            fn a_single_refresh_cookie_round_trips(
                token in "[A-Za-z0-9_-]{1,128}",
                secure in any::<bool>(),
                before in prop::collection::vec(other_cookie(), 0..4),
                after in prop::collection::vec(other_cookie(), 0..4),
                split in any::<bool>(),
            ) {
                let set = refresh_cookie(secure, &token, 60).unwrap();
                let (pair, _) = set.to_str().unwrap().split_once(';').unwrap();
                let mut all = before;
                all.push(pair.to_owned());
                all.extend(after);
                let mut h = HeaderMap::new();
                if split {
                    for c in &all {
                        h.append(header::COOKIE, HeaderValue::from_str(c).unwrap());
                    }
                } else {
                    h.insert(header::COOKIE, HeaderValue::from_str(&all.join("; ")).unwrap());
                }
                prop_assert_eq!(refresh_token_from(&h, secure).ok(), Some(token.clone()));
                // Sent twice (even with the same value), it is refused.
                h.append(header::COOKIE, HeaderValue::from_str(pair).unwrap());
                prop_assert!(matches!(refresh_token_from(&h, secure), Err(Error::Unauthenticated)));
            }

            #[test]
            fn an_oversized_refresh_cookie_is_refused(token in "[A-Za-z0-9_-]{129,300}", secure in any::<bool>()) {
                let mut h = HeaderMap::new();
                h.insert(
                    header::COOKIE,
                    HeaderValue::from_str(&format!("{}={token}", refresh_cookie_name(secure))).unwrap(),
                );
                prop_assert!(matches!(refresh_token_from(&h, secure), Err(Error::Unauthenticated)));
            }
        }
    }
}
