//! Access tokens (contract §4) and the opaque random tokens behind refresh and reset flows.
//!
//! An access token is a JWS-signed JWT (RFC 7519) with header `alg` (the configured
//! algorithm), `kid` (the RFC 7638 thumbprint of the signing key) and `typ: "at+jwt"`
//! (RFC 9068), and only the claims `iss`, `aud`, `sub` (user id), `sid` (session id), `jti`
//! (UUIDv7), `iat` and `exp`: no email, name or roles.
//!
//! Verification follows RFC 8725 (JWT BCP): the algorithm is pinned by configuration and
//! never chosen by the header (§3.1; this refuses `alg: none`, HS256 signed with a public
//! key and RS256/EdDSA swaps); the key is chosen only by `kid` among our own keys of that
//! algorithm, so `jwk`, `jku`, `x5u` and `x5c` headers are never consulted (§3.10); `typ`
//! must be `at+jwt` (§3.11), which keeps other JWTs from being replayed as access tokens
//! (§3.12); `iss` and `aud` are checked (§3.8, §3.9); `exp`, `nbf` and `iat` are checked
//! against the injected clock with the configured leeway. Every failure is the same
//! [`Error::Unauthenticated`] to callers. Whether the session is still active is the
//! caller's check, not this module's.
//!
//! Refresh and reset tokens are 256 random bits from the OS generator, base64url without
//! padding; only their SHA-256 ([`hash_token`]) is ever stored.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::anyhow;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use uuid::{NoContext, Timestamp, Uuid};
use zeroize::Zeroizing;

use crate::config::JwtAlg;
use crate::error::{Error, Result};
use crate::keys::{KeyStore, SigningKey};

pub mod signing;

/// The `typ` header of every access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Longer tokens are refused before any parsing: ours are well under 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The contract's ceiling on `RAMPART_JWT_LEEWAY`.
const MAX_LEEWAY: Duration = Duration::from_secs(60);
/// Random bytes in a refresh or reset token (256 bits).
const RANDOM_TOKEN_BYTES: usize = 32;
/// Verified tokens remembered at most. A token is only remembered after it passed every
/// check, so an attacker cannot fill this with forgeries; 65 536 entries are ~8 MiB.
const VERIFIED_CACHE_MAX: usize = 65_536;

/// What a verified access token says. `iss` and `aud` were checked, so they are not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    /// The user.
    pub sub: Uuid,
    /// The session (login) the token was issued from.
    pub sid: Uuid,
    pub jti: Uuid,
    pub iat: i64,
    pub exp: i64,
}

/// A freshly signed access token. `Debug` does not print the token.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub jti: Uuid,
    /// Seconds until `exp` (the response's `expiresIn`).
    pub expires_in: u64,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"[REDACTED]")
            .field("jti", &self.jti)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Claims as we write them.
#[derive(Serialize)]
struct IssuedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: Uuid,
    sid: Uuid,
    jti: Uuid,
    iat: i64,
    exp: i64,
}

/// Claims as we read them: everything optional, so a missing claim is our decision, not a
/// parse error; a claim of the wrong JSON type (an `iss` array, a fractional `exp`) or a
/// duplicated member still fails to parse, and that refuses the token.
#[derive(Deserialize)]
struct ReceivedClaims {
    iss: Option<String>,
    aud: Option<Audience>,
    sub: Option<String>,
    sid: Option<String>,
    jti: Option<String>,
    iat: Option<i64>,
    exp: Option<i64>,
    nbf: Option<i64>,
}

/// RFC 7519 §4.1.3: one string, or an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Why a token was refused. Never shown to callers (they all see `Unauthenticated`); it
/// exists so tests prove each attack is refused for the intended reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    TooLong,
    Malformed,
    Algorithm,
    Type,
    CriticalHeader,
    MissingKid,
    UnknownKid,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    Claims,
}

/// Issues and verifies access tokens with the keys of one [`KeyStore`].
pub struct TokenService {
    alg: Algorithm,
    active_kid: String,
    encoding_key: EncodingKey,
    /// Every key of the configured algorithm, by `kid`.
    decoding_keys: HashMap<String, DecodingKey>,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: i64,
    leeway_secs: i64,
    verified: VerifiedCache,
}

/// Tokens this service has verified, by the SHA-256 of their text, until their `exp`.
///
/// Clients send the same access token for its whole lifetime, so after the first request
/// a token's signature and claims are known good: a repeated token costs one SHA-256 (a
/// microsecond) instead of an RSA or Ed25519 verification (~50 µs). What stays per request:
/// - the time checks (`exp`, `nbf`, `iat` with the leeway), against the injected clock, so
///   an entry can never outlive its token;
/// - everything that is not the token's own validity: whether its session is live is the
///   caller's check, made on every request, so revocation is exactly as before.
///
/// The cache belongs to the service, and the service to one key set: keys are loaded at
/// start and never change in a running process, and a service built on other keys starts
/// with an empty cache, so a token is never trusted after its key left the key set.
/// Only successes are kept (a failure is not cached, so nothing an attacker sends can fill
/// it); when full, expired entries are dropped, and if it is still full it starts over.
#[derive(Default)]
struct VerifiedCache {
    entries: Mutex<HashMap<[u8; 32], Verified>>,
}

/// What a verified token says, with its `nbf` for the time checks of a repeated use.
#[derive(Clone)]
struct Verified {
    claims: AccessClaims,
    nbf: Option<i64>,
}

impl VerifiedCache {
    fn get(&self, digest: &[u8; 32]) -> Option<Verified> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(digest).cloned()
    }

    fn put(&self, digest: [u8; 32], verified: Verified, now: i64, leeway: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= VERIFIED_CACHE_MAX {
            entries.retain(|_, v| v.claims.exp.saturating_add(leeway) > now);
            if entries.len() >= VERIFIED_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(digest, verified);
    }

    fn remove(&self, digest: &[u8; 32]) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.remove(digest);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl fmt::Debug for TokenService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.decoding_keys.keys().collect();
        kids.sort();
        f.debug_struct("TokenService")
            .field("alg", &self.alg)
            .field("active_kid", &self.active_kid)
            .field("verifying_kids", &kids)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl_secs", &self.ttl_secs)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// Refuses an active key of another algorithm than `alg`, a zero `ttl` and a `leeway`
    /// above 60 s. Keys of another algorithm in the store are not used for verification.
    /// Signs and verifies one probe token, so a key the JWT library cannot use fails here,
    /// at start, rather than at the first login.
    pub fn new(
        keys: Arc<KeyStore>,
        alg: JwtAlg,
        issuer: String,
        audience: String,
        ttl: Duration,
        leeway: Duration,
    ) -> Result<TokenService> {
        let active = keys.active();
        if active.alg() != alg {
            return Err(Error::internal(anyhow!(
                "the active signing key {} is an {} key but the configured algorithm (RAMPART_JWT_ALG) is {}; rotate to a key of that algorithm or change the setting",
                active.kid(),
                active.alg().as_str(),
                alg.as_str()
            )));
        }
        if ttl.as_secs() == 0 {
            return Err(Error::internal(anyhow!(
                "the access token lifetime must be at least one second"
            )));
        }
        if leeway > MAX_LEEWAY {
            return Err(Error::internal(anyhow!(
                "the access token leeway must be at most 60 seconds"
            )));
        }
        let ttl_secs = i64::try_from(ttl.as_secs())
            .map_err(|_| Error::internal(anyhow!("the access token lifetime is too long")))?;
        let leeway_secs = i64::try_from(leeway.as_secs()).unwrap_or(0);

        let decoding_keys = keys
            .keys()
            .iter()
            .filter(|key| key.alg() == alg)
            .map(|key| Ok((key.kid().to_owned(), decoding_key(key)?)))
            .collect::<Result<HashMap<_, _>>>()?;

        signing::install();
        let jwt_alg = jwt_algorithm(alg);
        let mut validation = Validation::new(jwt_alg);
        // Time is checked against the injected clock in `check`, not the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer.as_str()]);
        validation.set_audience(&[audience.as_str()]);

        let service = TokenService {
            alg: jwt_alg,
            active_kid: active.kid().to_owned(),
            encoding_key: encoding_key(active)?,
            decoding_keys,
            validation,
            issuer,
            audience,
            ttl_secs,
            leeway_secs,
            verified: VerifiedCache::default(),
        };
        let now = OffsetDateTime::now_utc();
        let probe = service.issue(Uuid::nil(), Uuid::nil(), now)?;
        service
            .check_uncached(&probe.token, now.unix_timestamp())
            .map_err(|reason| {
                Error::internal(anyhow!(
                    "the active signing key {} cannot verify its own token ({reason:?})",
                    service.active_kid
                ))
            })?;
        Ok(service)
    }

    /// The `kid` new tokens carry.
    pub fn active_kid(&self) -> &str {
        &self.active_kid
    }

    /// Signs an access token for `user_id` in session `session_id`, issued at `now`.
    pub fn issue(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<IssuedToken> {
        let iat = now.unix_timestamp();
        let exp = iat.saturating_add(self.ttl_secs);
        let jti = Uuid::new_v7(Timestamp::from_unix(
            NoContext,
            u64::try_from(iat).unwrap_or(0),
            now.nanosecond(),
        ));
        let mut header = Header::new(self.alg);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(self.active_kid.clone());
        let claims = IssuedClaims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: user_id,
            sid: session_id,
            jti,
            iat,
            exp,
        };
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding_key)
            .map_err(|e| Error::internal(anyhow!("cannot sign an access token: {e}")))?;
        Ok(IssuedToken {
            token,
            jti,
            expires_in: self.ttl_secs.unsigned_abs(),
        })
    }

    /// Verifies `token` at `now_unix` (seconds). Every failure is
    /// [`Error::Unauthenticated`], with no detail.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<AccessClaims> {
        self.check(token, now_unix)
            .map_err(|_| Error::Unauthenticated)
    }

    /// Verifies `token` without the cache, every time: for benchmarks that measure the
    /// cryptography itself. Requests use [`Self::verify`].
    pub fn verify_uncached(&self, token: &str, now_unix: i64) -> Result<AccessClaims> {
        self.check_uncached(token, now_unix)
            .map(|verified| verified.claims)
            .map_err(|_| Error::Unauthenticated)
    }

    fn check(&self, token: &str, now: i64) -> Result<AccessClaims, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::TooLong);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(known) = self.verified.get(&digest) {
            return match self.check_times(&known, now) {
                Ok(()) => Ok(known.claims),
                Err(rejection) => {
                    self.verified.remove(&digest);
                    Err(rejection)
                }
            };
        }
        let verified = self.check_uncached(token, now)?;
        let claims = verified.claims.clone();
        self.verified.put(digest, verified, now, self.leeway_secs);
        Ok(claims)
    }

    /// `exp`, `nbf` and `iat` against `now`, with the leeway: checked on every use of a
    /// token, cached or not.
    fn check_times(&self, verified: &Verified, now: i64) -> Result<(), Rejection> {
        let leeway = self.leeway_secs;
        if verified.claims.exp.saturating_add(leeway) <= now {
            return Err(Rejection::Expired);
        }
        if verified
            .nbf
            .is_some_and(|nbf| nbf.saturating_sub(leeway) > now)
        {
            return Err(Rejection::NotYetValid);
        }
        // Issued in the future beyond the leeway: forged, or a badly skewed instance.
        if verified.claims.iat.saturating_sub(leeway) > now {
            return Err(Rejection::NotYetValid);
        }
        Ok(())
    }

    fn check_uncached(&self, token: &str, now: i64) -> Result<Verified, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::TooLong);
        }
        // Compact JWS only: exactly three segments.
        if token.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(Rejection::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        if header.alg != self.alg {
            return Err(Rejection::Algorithm);
        }
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(Rejection::Type);
        }
        // RFC 7515 §4.1.11: we understand no extension, so any `crit` must be refused.
        if header.crit.is_some() {
            return Err(Rejection::CriticalHeader);
        }
        let kid = header.kid.as_deref().ok_or(Rejection::MissingKid)?;
        let key = self.decoding_keys.get(kid).ok_or(Rejection::UnknownKid)?;

        let claims = jsonwebtoken::decode::<ReceivedClaims>(token, key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => Rejection::Signature,
                ErrorKind::InvalidAlgorithm => Rejection::Algorithm,
                ErrorKind::InvalidIssuer => Rejection::Issuer,
                ErrorKind::InvalidAudience => Rejection::Audience,
                ErrorKind::MissingRequiredClaim(_) => Rejection::Claims,
                _ => Rejection::Malformed,
            })?
            .claims;

        let exp = claims.exp.ok_or(Rejection::Claims)?;
        let iat = claims.iat.ok_or(Rejection::Claims)?;
        // The claims that matter are only known here; the times are checked before the
        // issuer and audience, as always.
        let times = Verified {
            claims: AccessClaims {
                sub: Uuid::nil(),
                sid: Uuid::nil(),
                jti: Uuid::nil(),
                iat,
                exp,
            },
            nbf: claims.nbf,
        };
        self.check_times(&times, now)?;
        if claims.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(Rejection::Issuer);
        }
        let audience_ok = match &claims.aud {
            Some(Audience::One(aud)) => *aud == self.audience,
            Some(Audience::Many(auds)) => auds.contains(&self.audience),
            None => false,
        };
        if !audience_ok {
            return Err(Rejection::Audience);
        }
        let uuid = |value: Option<String>| {
            value
                .and_then(|text| Uuid::try_parse(&text).ok())
                .ok_or(Rejection::Claims)
        };
        Ok(Verified {
            claims: AccessClaims {
                sub: uuid(claims.sub)?,
                sid: uuid(claims.sid)?,
                jti: uuid(claims.jti)?,
                iat,
                exp,
            },
            nbf: claims.nbf,
        })
    }
}

pub(crate) fn jwt_algorithm(alg: JwtAlg) -> Algorithm {
    match alg {
        JwtAlg::Rs256 => Algorithm::RS256,
        JwtAlg::EdDsa => Algorithm::EdDSA,
    }
}

/// The jsonwebtoken signing key (also signs audit checkpoints). Its aws-lc backend wants PKCS#1 DER for RSA, which its PEM
/// reader extracts from our PKCS#8 PEM; for Ed25519 it takes the PKCS#8 DER as is.
pub(crate) fn encoding_key(key: &SigningKey) -> Result<EncodingKey> {
    match key.alg() {
        JwtAlg::Rs256 => {
            let pem = Zeroizing::new(key.pkcs8_pem().0);
            EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                Error::internal(anyhow!(
                    "signing key {} is not usable for RS256: {e}",
                    key.kid()
                ))
            })
        }
        JwtAlg::EdDsa => Ok(EncodingKey::from_ed_der(key.pkcs8_der())),
    }
}

/// The verification key, from the public JWK members only.
pub(crate) fn decoding_key(key: &SigningKey) -> Result<DecodingKey> {
    let unusable = |e: &dyn fmt::Display| {
        Error::internal(anyhow!(
            "signing key {} has no usable public key: {e}",
            key.kid()
        ))
    };
    let jwk: Jwk = serde_json::from_value(key.public_jwk()).map_err(|e| unusable(&e))?;
    DecodingKey::from_jwk(&jwk).map_err(|e| unusable(&e))
}

/// 256 bits from the OS generator, base64url without padding (43 characters): the format
/// of refresh and password-reset tokens. Fails only if the OS generator does.
pub fn random_token() -> Result<String> {
    let mut bytes = Zeroizing::new([0u8; RANDOM_TOKEN_BYTES]);
    getrandom::fill(bytes.as_mut_slice())
        .map_err(|e| Error::internal(anyhow!("the OS random generator failed: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes.as_slice()))
}

/// A new refresh token and the hash to store: `(token, hash_token(token))`.
pub fn new_refresh_token() -> Result<(String, String)> {
    let token = random_token()?;
    let hash = hash_token(&token);
    Ok((token, hash))
}

/// SHA-256 of the token's text, lowercase hex (64 characters): what the database keeps. A
/// plain hash suffices because the token carries 256 random bits; nothing to brute-force.
pub fn hash_token(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

/// A mailed token (email verification or change, contract §11) as a client sent it back:
/// exactly the form [`random_token`] makes — 43 characters of URL-safe base64 without
/// padding that decode to 32 bytes — or `None`. Hostile input is refused here before any
/// digest or lookup; the answer is the same 400 as for an unknown token.
pub fn parse_mailed_token(raw: &str) -> Option<&str> {
    const LEN: usize = (RANDOM_TOKEN_BYTES * 4).div_ceil(3);
    if raw.len() != LEN
        || !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let decoded = Zeroizing::new(URL_SAFE_NO_PAD.decode(raw).ok()?);
    (decoded.len() == RANDOM_TOKEN_BYTES).then_some(raw)
}

#[cfg(test)]
mod mailed_token_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn random_tokens_parse_and_near_misses_do_not() {
        let token = random_token().unwrap();
        assert_eq!(parse_mailed_token(&token), Some(token.as_str()));
        assert_eq!(parse_mailed_token(&token[1..]), None);
        assert_eq!(parse_mailed_token(&format!("{token}A")), None);
        assert_eq!(parse_mailed_token(&format!("{}=", &token[1..])), None);
        assert_eq!(parse_mailed_token(&format!("{}+", &token[1..])), None);
        assert_eq!(parse_mailed_token(""), None);
        // 43 characters whose last one carries bits beyond the 32 bytes.
        let mut bad = "A".repeat(42);
        bad.push('B');
        assert_eq!(parse_mailed_token(&bad), None);
    }

    proptest! {
        #[test]
        fn never_panics_and_accepts_only_the_canonical_form(raw in ".{0,64}") {
            if let Some(token) = parse_mailed_token(&raw) {
                prop_assert_eq!(token.len(), 43);
                let bytes = URL_SAFE_NO_PAD.decode(token).unwrap();
                prop_assert_eq!(URL_SAFE_NO_PAD.encode(&bytes), token);
            }
        }

        #[test]
        fn every_32_byte_value_round_trips(bytes in prop::array::uniform32(any::<u8>())) {
            let token = URL_SAFE_NO_PAD.encode(bytes);
            prop_assert_eq!(parse_mailed_token(&token), Some(token.as_str()));
        }

        #[test]
        fn base64ish_strings_of_the_right_length(raw in "[A-Za-z0-9_=+/-]{43}") {
            let ok = parse_mailed_token(&raw).is_some();
            let decodes = !raw.contains(['=', '+', '/'])
                && URL_SAFE_NO_PAD.decode(&raw).is_ok_and(|b| b.len() == 32);
            prop_assert_eq!(ok, decodes);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::LazyLock;

    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair as _;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::{Value, json};

    use super::*;
    use crate::keys;

    const ISSUER: &str = "rampart";
    const AUDIENCE: &str = "rampart-api";
    const TTL: Duration = Duration::from_secs(900);
    const LEEWAY: Duration = Duration::from_secs(30);

    /// The one RSA key of these tests (3072-bit generation is slow).
    static RSA_STORE: LazyLock<Arc<KeyStore>> = LazyLock::new(|| {
        let dir = tempfile::tempdir().unwrap();
        keys::generate(dir.path(), JwtAlg::Rs256).unwrap();
        Arc::new(KeyStore::load(dir.path()).unwrap())
    });

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn service(keys: Arc<KeyStore>, alg: JwtAlg) -> TokenService {
        TokenService::new(
            keys,
            alg,
            ISSUER.to_owned(),
            AUDIENCE.to_owned(),
            TTL,
            LEEWAY,
        )
        .unwrap()
    }

    fn ed_store(dir: &Path) -> Arc<KeyStore> {
        keys::generate(dir, JwtAlg::EdDsa).unwrap();
        Arc::new(KeyStore::load(dir).unwrap())
    }

    /// A fresh EdDSA key store in its own temp dir (kept alive by the caller).
    fn ed_service() -> (tempfile::TempDir, TokenService) {
        let dir = tempfile::tempdir().unwrap();
        let store = ed_store(dir.path());
        (dir, service(store, JwtAlg::EdDsa))
    }

    fn rsa_service() -> TokenService {
        service(Arc::clone(&RSA_STORE), JwtAlg::Rs256)
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    fn segments(token: &str) -> Vec<String> {
        token.split('.').map(str::to_owned).collect()
    }

    fn payload(token: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&segments(token)[1]).unwrap()).unwrap()
    }

    fn good_claims(now: i64) -> Value {
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": Uuid::now_v7(),
            "sid": Uuid::now_v7(),
            "jti": Uuid::now_v7(),
            "iat": now,
            "exp": now + 900,
        })
    }

    /// Signs arbitrary header members and claims with `key` (one of ours, or an attacker's).
    fn sign(key: &SigningKey, header: Value, claims: &Value) -> String {
        let mut full = json!({ "alg": key.alg().as_str() });
        full.as_object_mut()
            .unwrap()
            .extend(header.as_object().unwrap().clone());
        let header: Header = serde_json::from_value(full).unwrap();
        jsonwebtoken::encode(&header, claims, &encoding_key(key).unwrap()).unwrap()
    }

    /// Signs with the service's active key, `typ` and `kid` set as ours are.
    fn sign_as_service(service: &TokenService, key: &SigningKey, claims: &Value) -> String {
        sign(
            key,
            json!({ "typ": "at+jwt", "kid": service.active_kid() }),
            claims,
        )
    }

    fn hs256(secret: &[u8], kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(kid.to_owned());
        let token =
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap();
        // The forgery is well made: a verifier that let the header pick HS256 would accept it.
        let mut lax = Validation::new(Algorithm::HS256);
        lax.validate_exp = false;
        lax.validate_aud = false;
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(secret), &lax).unwrap();
        token
    }

    fn rejected(service: &TokenService, token: &str, now: i64) -> Rejection {
        let reason = service.check(token, now).unwrap_err();
        assert!(matches!(
            service.verify(token, now),
            Err(Error::Unauthenticated)
        ));
        reason
    }

    fn spki_pem(key: &SigningKey) -> String {
        let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(key.pkcs8_der()).unwrap();
        let der = pair.public_key().as_der().unwrap();
        let body = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    fn round_trip(service: &TokenService, alg: &str) {
        let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
        let issued = service.issue(user, session, now()).unwrap();
        assert_eq!(issued.expires_in, 900);
        assert!(!format!("{issued:?}").contains(&issued.token));

        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(format!("{:?}", header.alg), alg);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(service.active_kid()));
        assert!(header.jwk.is_none() && header.jku.is_none() && header.x5c.is_none());

        let claims = payload(&issued.token);
        let mut names: Vec<&str> = claims
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["aud", "exp", "iat", "iss", "jti", "sid", "sub"]);
        assert_eq!(claims["aud"], AUDIENCE); // a single string
        assert_eq!(claims["iss"], ISSUER);

        let t = now().unix_timestamp();
        let verified = service.verify(&issued.token, t + 1).unwrap();
        assert_eq!(
            verified,
            AccessClaims {
                sub: user,
                sid: session,
                jti: issued.jti,
                iat: t,
                exp: t + 900,
            }
        );
        assert_eq!(issued.jti.get_version_num(), 7);
        assert_ne!(service.issue(user, session, now()).unwrap().jti, issued.jti);
    }

    #[test]
    fn rs256_round_trip() {
        round_trip(&rsa_service(), "RS256");
    }

    #[test]
    fn eddsa_round_trip() {
        let (_dir, service) = ed_service();
        round_trip(&service, "EdDSA");
    }

    #[test]
    fn construction_refuses_an_active_key_of_another_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let store = ed_store(dir.path());
        let err = TokenService::new(
            store,
            JwtAlg::Rs256,
            ISSUER.into(),
            AUDIENCE.into(),
            TTL,
            LEEWAY,
        )
        .unwrap_err();
        assert!(err.to_string().contains("EdDSA"), "{err}");
        let err = TokenService::new(
            Arc::clone(&RSA_STORE),
            JwtAlg::EdDsa,
            ISSUER.into(),
            AUDIENCE.into(),
            TTL,
            LEEWAY,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Internal(_)));
        let too_lax = TokenService::new(
            Arc::clone(&RSA_STORE),
            JwtAlg::Rs256,
            ISSUER.into(),
            AUDIENCE.into(),
            TTL,
            Duration::from_secs(61),
        );
        assert!(too_lax.is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        let (_dir, service) = ed_service();
        let t = now().unix_timestamp();
        let claims = b64(&good_claims(t));
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = b64(&json!({"alg": alg, "typ": "at+jwt", "kid": service.active_kid()}));
            for signature in ["", "AAAA"] {
                let token = format!("{header}.{claims}.{signature}");
                let reason = rejected(&service, &token, t);
                assert_eq!(reason, Rejection::Malformed, "{alg}");
            }
        }
        // Our own header with an empty or null signature.
        let real = service
            .issue(Uuid::now_v7(), Uuid::now_v7(), now())
            .unwrap();
        let parts = segments(&real.token);
        let unsigned = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(rejected(&service, &unsigned, t), Rejection::Signature);
        let zeros = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode([0u8; 64])
        );
        assert_eq!(rejected(&service, &zeros, t), Rejection::Signature);
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        let t = now().unix_timestamp();
        let claims = good_claims(t);

        let rsa = rsa_service();
        let key = RSA_STORE.active();
        let pem = spki_pem(key);
        let jwk = key.public_jwk().to_string();
        let n = URL_SAFE_NO_PAD
            .decode(key.public_jwk()["n"].as_str().unwrap())
            .unwrap();
        for secret in [
            pem.as_bytes(),
            pem.trim_end().as_bytes(),
            jwk.as_bytes(),
            n.as_slice(),
            b"".as_slice(),
        ] {
            let token = hs256(secret, rsa.active_kid(), &claims);
            assert_eq!(rejected(&rsa, &token, t), Rejection::Algorithm);
        }

        let (ed_dir, ed) = ed_service();
        let ed_key_jwk = ed_active_jwk(&ed, &ed_dir);
        let x = URL_SAFE_NO_PAD
            .decode(ed_key_jwk["x"].as_str().unwrap())
            .unwrap();
        for secret in [x.as_slice(), ed_key_jwk.to_string().as_bytes()] {
            let token = hs256(secret, ed.active_kid(), &claims);
            assert_eq!(rejected(&ed, &token, t), Rejection::Algorithm);
        }
    }

    fn ed_active_jwk(service: &TokenService, dir: &tempfile::TempDir) -> Value {
        let store = KeyStore::load(dir.path()).unwrap();
        store.get(service.active_kid()).unwrap().public_jwk()
    }

    #[test]
    fn kid_must_name_one_of_our_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = ed_store(dir.path());
        let ed = service(Arc::clone(&store), JwtAlg::EdDsa);
        let key = store.active();
        let t = now().unix_timestamp();
        let claims = good_claims(t);

        let no_kid = sign(key, json!({"typ": "at+jwt"}), &claims);
        assert_eq!(rejected(&ed, &no_kid, t), Rejection::MissingKid);
        for kid in [
            "unknown",
            "",
            "../../../dev/null",
            "' OR 1=1 --",
            RSA_STORE.active().kid(),
        ] {
            let token = sign(key, json!({"typ": "at+jwt", "kid": kid}), &claims);
            assert_eq!(rejected(&ed, &token, t), Rejection::UnknownKid, "{kid}");
        }
        // The same claims with our kid verify: only the kid was wrong.
        let good = sign(key, json!({"typ": "at+jwt", "kid": key.kid()}), &claims);
        assert!(ed.verify(&good, t).is_ok());
    }

    #[test]
    fn an_embedded_attacker_jwk_is_ignored() {
        let (dir, ed) = ed_service();
        let attacker_dir = tempfile::tempdir().unwrap();
        let attacker_store = ed_store(attacker_dir.path());
        let attacker = attacker_store.active();
        let t = now().unix_timestamp();
        let claims = good_claims(t);

        // Signed by the attacker, carrying the attacker's public key, claiming our kid.
        let token = sign(
            attacker,
            json!({
                "typ": "at+jwt",
                "kid": ed.active_kid(),
                "jwk": attacker.public_jwk(),
            }),
            &claims,
        );
        assert_eq!(rejected(&ed, &token, t), Rejection::Signature);
        // … or pointing at the attacker's key by URL or certificate.
        let token = sign(
            attacker,
            json!({
                "typ": "at+jwt",
                "kid": ed.active_kid(),
                "jku": "https://attacker.example/jwks.json",
                "x5u": "https://attacker.example/cert.pem",
                "x5c": [STANDARD.encode(b"not a certificate")],
            }),
            &claims,
        );
        assert_eq!(rejected(&ed, &token, t), Rejection::Signature);

        // Those headers on a token we did sign change nothing either way.
        let store = KeyStore::load(dir.path()).unwrap();
        let token = sign(
            store.active(),
            json!({
                "typ": "at+jwt",
                "kid": ed.active_kid(),
                "jwk": attacker.public_jwk(),
                "jku": "https://attacker.example/jwks.json",
            }),
            &claims,
        );
        assert!(ed.verify(&token, t).is_ok());
    }

    #[test]
    fn keys_of_the_other_algorithm_are_refused() {
        let t = now().unix_timestamp();
        let claims = good_claims(t);
        let rsa = rsa_service();
        let rsa_key = RSA_STORE.active();

        // An Ed25519 store that also holds our RSA key file.
        let dir = tempfile::tempdir().unwrap();
        let store = ed_store(dir.path());
        std::fs::write(
            dir.path().join(format!("{}.pem", rsa_key.kid())),
            rsa_key.pkcs8_pem().expose(),
        )
        .unwrap();
        let both = Arc::new(KeyStore::load(dir.path()).unwrap());
        assert_eq!(both.keys().len(), 2);
        let ed = service(Arc::clone(&both), JwtAlg::EdDsa);

        // RS256 token by the RSA key in the same store: the algorithm is not ours.
        let rs_token = rsa
            .issue(Uuid::now_v7(), Uuid::now_v7(), now())
            .unwrap()
            .token;
        assert_eq!(rejected(&ed, &rs_token, t), Rejection::Algorithm);
        // An EdDSA header naming the RSA kid: not a key of our algorithm.
        let token = sign(
            store.active(),
            json!({"typ": "at+jwt", "kid": rsa_key.kid()}),
            &claims,
        );
        assert_eq!(rejected(&ed, &token, t), Rejection::UnknownKid);

        // The other way round: an EdDSA token to the RS256 service.
        let ed_token = ed
            .issue(Uuid::now_v7(), Uuid::now_v7(), now())
            .unwrap()
            .token;
        assert_eq!(rejected(&rsa, &ed_token, t), Rejection::Algorithm);
        // Ed25519 signature under an RS256 header with the RSA kid.
        let parts = segments(&ed_token);
        let forged_header = b64(&json!({"alg": "RS256", "typ": "at+jwt", "kid": rsa.active_kid()}));
        let swapped = format!("{forged_header}.{}.{}", parts[1], parts[2]);
        assert_eq!(rejected(&rsa, &swapped, t), Rejection::Signature);
    }

    #[test]
    fn typ_must_be_at_jwt() {
        let dir = tempfile::tempdir().unwrap();
        let store = ed_store(dir.path());
        let ed = service(Arc::clone(&store), JwtAlg::EdDsa);
        let key = store.active();
        let t = now().unix_timestamp();
        let claims = good_claims(t);
        for typ in [
            json!("JWT"),
            json!("AT+JWT"),
            json!("application/jwt"),
            json!(""),
        ] {
            let token = sign(key, json!({"typ": typ, "kid": key.kid()}), &claims);
            assert_eq!(rejected(&ed, &token, t), Rejection::Type, "{typ}");
        }
        let token = sign(key, json!({"kid": key.kid()}), &claims);
        assert_eq!(rejected(&ed, &token, t), Rejection::Type);
        // Unknown critical extensions are refused.
        let token = sign(
            key,
            json!({"typ": "at+jwt", "kid": key.kid(), "crit": ["exp"]}),
            &claims,
        );
        assert_eq!(rejected(&ed, &token, t), Rejection::CriticalHeader);
    }

    #[test]
    fn issuer_and_audience_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = ed_store(dir.path());
        let ed = service(Arc::clone(&store), JwtAlg::EdDsa);
        let key = store.active();
        let t = now().unix_timestamp();
        let with = |member: &str, value: Value| {
            let mut claims = good_claims(t);
            claims[member] = value;
            sign_as_service(&ed, key, &claims)
        };
        let without = |member: &str| {
            let mut claims = good_claims(t);
            claims.as_object_mut().unwrap().remove(member);
            sign_as_service(&ed, key, &claims)
        };

        assert_eq!(
            rejected(&ed, &with("iss", json!("evil")), t),
            Rejection::Issuer
        );
        assert_eq!(
            rejected(&ed, &with("iss", json!("Rampart")), t),
            Rejection::Issuer
        );
        assert_eq!(
            rejected(&ed, &with("iss", json!([ISSUER])), t),
            Rejection::Malformed
        );
        assert_eq!(rejected(&ed, &without("iss"), t), Rejection::Claims);
        assert_eq!(
            rejected(&ed, &with("aud", json!("other-api")), t),
            Rejection::Audience
        );
        assert_eq!(
            rejected(&ed, &with("aud", json!(["other-api"])), t),
            Rejection::Audience
        );
        assert_eq!(rejected(&ed, &without("aud"), t), Rejection::Claims);
        // An array containing our audience is accepted (RFC 7519 §4.1.3).
        let multi = with("aud", json!(["other-api", AUDIENCE]));
        assert!(ed.verify(&multi, t).is_ok());
    }

    #[test]
    fn subject_session_and_id_are_required_uuids() {
        let dir = tempfile::tempdir().unwrap();
        let store = ed_store(dir.path());
        let ed = service(Arc::clone(&store), JwtAlg::EdDsa);
        let key = store.active();
        let t = now().unix_timestamp();
        for member in ["sub", "sid", "jti", "iat", "exp"] {
            let mut claims = good_claims(t);
            claims.as_object_mut().unwrap().remove(member);
            let token = sign_as_service(&ed, key, &claims);
            assert_eq!(rejected(&ed, &token, t), Rejection::Claims, "{member}");
            if member != "iat" && member != "exp" {
                claims[member] = json!("alice@example.org");
                let token = sign_as_service(&ed, key, &claims);
                assert_eq!(rejected(&ed, &token, t), Rejection::Claims, "{member}");
            }
        }
        let mut claims = good_claims(t);
        claims["exp"] = json!((t + 900) as f64 + 0.5);
        let token = sign_as_service(&ed, key, &claims);
        assert_eq!(rejected(&ed, &token, t), Rejection::Malformed);
    }

    #[test]
    fn expiry_and_not_before_use_the_leeway() {
        let (_dir, ed) = ed_service();
        let issued = ed.issue(Uuid::now_v7(), Uuid::now_v7(), now()).unwrap();
        let exp = now().unix_timestamp() + 900;
        // Within the 30 s leeway after `exp`: accepted; at the end of it: refused.
        assert!(ed.verify(&issued.token, exp).is_ok());
        assert!(ed.verify(&issued.token, exp + 29).is_ok());
        assert_eq!(rejected(&ed, &issued.token, exp + 30), Rejection::Expired);
        assert_eq!(
            rejected(&ed, &issued.token, exp + 86_400),
            Rejection::Expired
        );
        // Issued more than the leeway in the future.
        let t = now().unix_timestamp();
        assert!(ed.verify(&issued.token, t - 30).is_ok());
        assert_eq!(rejected(&ed, &issued.token, t - 31), Rejection::NotYetValid);
    }

    #[test]
    fn nbf_in_the_future_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ed_store(dir.path());
        let ed = service(Arc::clone(&store), JwtAlg::EdDsa);
        let key = store.active();
        let t = now().unix_timestamp();
        let mut claims = good_claims(t);
        claims["nbf"] = json!(t + 120);
        let token = sign_as_service(&ed, key, &claims);
        assert_eq!(rejected(&ed, &token, t), Rejection::NotYetValid);
        assert!(ed.verify(&token, t + 90).is_ok()); // nbf - leeway <= now
        claims["nbf"] = json!(t + 10);
        let token = sign_as_service(&ed, key, &claims);
        assert!(ed.verify(&token, t).is_ok());
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let rsa = rsa_service();
        let (_dir, ed) = ed_service();
        let t = now().unix_timestamp();
        for service in [&rsa, &ed] {
            let issued = service
                .issue(Uuid::now_v7(), Uuid::now_v7(), now())
                .unwrap();
            let parts = segments(&issued.token);
            let mut claims = payload(&issued.token);
            claims["sub"] = json!(Uuid::now_v7());
            let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
            assert_eq!(rejected(service, &tampered, t), Rejection::Signature);
            let mut claims = payload(&issued.token);
            claims["exp"] = json!(t + 10 * 365 * 86_400);
            let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
            assert_eq!(rejected(service, &tampered, t), Rejection::Signature);
            // A flipped signature bit.
            let mut signature = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
            signature[0] ^= 1;
            let flipped = format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                URL_SAFE_NO_PAD.encode(signature)
            );
            assert_eq!(rejected(service, &flipped, t), Rejection::Signature);
        }
    }

    #[test]
    fn oversized_and_malformed_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ed_store(dir.path());
        let ed = service(Arc::clone(&store), JwtAlg::EdDsa);
        let t = now().unix_timestamp();
        let mut claims = good_claims(t);
        claims["pad"] = json!("x".repeat(MAX_TOKEN_BYTES));
        let big = sign_as_service(&ed, store.active(), &claims);
        assert!(big.len() > MAX_TOKEN_BYTES);
        assert_eq!(rejected(&ed, &big, t), Rejection::TooLong);
        // Other claims may be added, so a padded token under the limit verifies.
        claims["pad"] = json!("x".repeat(1000));
        let padded = sign_as_service(&ed, store.active(), &claims);
        assert!(ed.verify(&padded, t).is_ok());

        let issued = ed.issue(Uuid::now_v7(), Uuid::now_v7(), now()).unwrap();
        for bad in [
            "",
            ".",
            "..",
            "a.b.c",
            "not a token",
            &format!("{}.extra", issued.token),
            &format!(" {}", issued.token),
            &issued.token.replacen('.', "..", 1),
        ] {
            assert_eq!(rejected(&ed, bad, t), Rejection::Malformed, "{bad}");
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let before = service(ed_store(dir.path()), JwtAlg::EdDsa);
        let old = before.issue(Uuid::now_v7(), Uuid::now_v7(), now()).unwrap();

        let new_kid = keys::rotate(dir.path(), JwtAlg::EdDsa).unwrap();
        let after = service(Arc::new(KeyStore::load(dir.path()).unwrap()), JwtAlg::EdDsa);
        assert_eq!(after.active_kid(), new_kid);
        assert_ne!(after.active_kid(), before.active_kid());

        let t = now().unix_timestamp();
        assert!(after.verify(&old.token, t).is_ok());
        let new = after.issue(Uuid::now_v7(), Uuid::now_v7(), now()).unwrap();
        let header = jsonwebtoken::decode_header(&new.token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
        assert!(after.verify(&new.token, t).is_ok());
        // The old service does not know the new key.
        assert_eq!(rejected(&before, &new.token, t), Rejection::UnknownKid);
    }

    #[test]
    fn a_repeated_token_is_served_from_the_cache_with_every_time_check() {
        let dir = tempfile::tempdir().unwrap();
        let ed = service(ed_store(dir.path()), JwtAlg::EdDsa);
        let issued = ed.issue(Uuid::now_v7(), Uuid::now_v7(), now()).unwrap();
        let t = now().unix_timestamp();
        assert_eq!(ed.verified.len(), 0);
        let first = ed.verify(&issued.token, t).unwrap();
        assert_eq!(ed.verified.len(), 1);
        assert_eq!(ed.verify(&issued.token, t + 1).unwrap(), first);
        assert_eq!(ed.verified.len(), 1);
        // Time moves on: the cached token expires exactly when an uncached one would.
        let exp = first.exp;
        assert!(ed.verify(&issued.token, exp + 29).is_ok());
        assert_eq!(rejected(&ed, &issued.token, exp + 30), Rejection::Expired);
        assert_eq!(ed.verified.len(), 0, "an expired token leaves the cache");
        // Issued in the future beyond the leeway, seen from a clock that went back.
        assert!(ed.verify(&issued.token, t).is_ok());
        assert_eq!(
            rejected(&ed, &issued.token, first.iat - 31),
            Rejection::NotYetValid
        );
    }

    #[test]
    fn a_cached_token_keeps_its_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = ed_store(dir.path());
        let ed = service(Arc::clone(&store), JwtAlg::EdDsa);
        let t = now().unix_timestamp();
        let mut claims = good_claims(t);
        claims["nbf"] = json!(t + 20);
        let token = sign_as_service(&ed, store.active(), &claims);
        assert!(ed.verify(&token, t).is_ok()); // within the 30 s leeway
        assert_eq!(ed.verified.len(), 1);
        assert_eq!(rejected(&ed, &token, t - 11), Rejection::NotYetValid);
    }

    #[test]
    fn a_refused_token_is_never_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = ed_store(dir.path());
        let ed = service(Arc::clone(&store), JwtAlg::EdDsa);
        let issued = ed.issue(Uuid::now_v7(), Uuid::now_v7(), now()).unwrap();
        let t = now().unix_timestamp();
        let parts = segments(&issued.token);
        let mut claims = payload(&issued.token);
        claims["sub"] = json!(Uuid::now_v7());
        let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
        for _ in 0..3 {
            assert_eq!(rejected(&ed, &tampered, t), Rejection::Signature);
        }
        let mut claims = good_claims(t);
        claims["iss"] = json!("someone-else");
        let foreign = sign_as_service(&ed, store.active(), &claims);
        for _ in 0..3 {
            assert_eq!(rejected(&ed, &foreign, t), Rejection::Issuer);
        }
        assert_eq!(ed.verified.len(), 0);
        // The genuine token, verified once, does not make its tampered twin pass.
        assert!(ed.verify(&issued.token, t).is_ok());
        assert_eq!(rejected(&ed, &tampered, t), Rejection::Signature);
    }

    #[test]
    fn a_cached_token_is_not_trusted_by_a_service_without_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let before = service(ed_store(dir.path()), JwtAlg::EdDsa);
        let token = before
            .issue(Uuid::now_v7(), Uuid::now_v7(), now())
            .unwrap()
            .token;
        let t = now().unix_timestamp();
        assert!(before.verify(&token, t).is_ok());
        // The key leaves the key set: a service on the new set starts with its own cache.
        let other = tempfile::tempdir().unwrap();
        let after = service(ed_store(other.path()), JwtAlg::EdDsa);
        assert_eq!(rejected(&after, &token, t), Rejection::UnknownKid);
    }

    #[test]
    fn verify_uncached_checks_everything_and_caches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ed = service(ed_store(dir.path()), JwtAlg::EdDsa);
        let issued = ed.issue(Uuid::now_v7(), Uuid::now_v7(), now()).unwrap();
        let t = now().unix_timestamp();
        assert!(ed.verify_uncached(&issued.token, t).is_ok());
        assert!(ed.verify_uncached(&issued.token, t + 10_000).is_err());
        assert_eq!(ed.verified.len(), 0);
    }

    #[test]
    fn refresh_tokens_are_256_random_bits() {
        let (token, hash) = new_refresh_token().unwrap();
        assert_eq!(token.len(), 43);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap().len(), 32);
        assert_eq!(hash.len(), 64);
        assert!(hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(hash, hash_token(&token));
        let (other, other_hash) = new_refresh_token().unwrap();
        assert_ne!(token, other);
        assert_ne!(hash, other_hash);
        assert_ne!(random_token().unwrap(), random_token().unwrap());
        assert_eq!(random_token().unwrap().len(), 43);
        // FIPS 180-2 test vector.
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
