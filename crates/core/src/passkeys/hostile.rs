//! Property tests: hostile and mutated responses to `finish_registration`, `presented` and
//! `finish_login`, for ES256 and EdDSA credentials. A small software authenticator
//! (aws-lc-rs keys, "none" attestation, a minimal CBOR encoder) makes one valid registration
//! and one valid assertion per algorithm; each case then breaks one of them.
//!
//! What is asserted:
//! - Nothing panics, and a refusal is always the opaque one: 400 `validation_failed` on
//!   `credential` for registration (never an internal error), `None` from `presented` or
//!   `Refusal::Invalid` from `finish_login` for sign-in.
//! - Arbitrary JSON, and a valid response with one required member replaced by a hostile
//!   value (wrong type, huge number, other string, nested junk), is always refused.
//! - Sign-in: every byte of `rawId`, `clientDataJSON`, `authenticatorData` and `signature`
//!   is bound (by the signature or the credential lookup), so any flip or truncation is
//!   refused.
//! - Registration with "none" attestation signs nothing: the AAGUID, counter and key bytes
//!   are the client's own word and may change (an authenticator could have sent them). What
//!   binds the response to this ceremony must not: any change to the client data's type,
//!   challenge (its bytes) or origin (as a parsed URL: `HTTPS://App.example` is the same
//!   origin), to the RP ID hash, to the UP/UV/AT/ED flags, and any truncation of the client
//!   data or the attestation object is refused.

use super::*;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const ORIGIN: &str = "https://app.example";
const RP_ID: &str = "app.example";
const UP: u8 = 0x01;
const UV: u8 = 0x04;
const AT: u8 = 0x40;
const ED: u8 = 0x80;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn head(out: &mut Vec<u8>, major: u8, n: usize) {
    if n < 24 {
        out.push(major << 5 | n as u8);
    } else if n < 256 {
        out.extend([major << 5 | 24, n as u8]);
    } else {
        out.push(major << 5 | 25);
        out.extend((n as u16).to_be_bytes());
    }
}

fn int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        head(out, 0, i as usize);
    } else {
        head(out, 1, (-1 - i) as usize);
    }
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    head(out, 2, b.len());
    out.extend_from_slice(b);
}

fn text(out: &mut Vec<u8>, t: &str) {
    head(out, 3, t.len());
    out.extend_from_slice(t.as_bytes());
}

enum Key {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

impl Key {
    fn new(eddsa: bool) -> Self {
        if eddsa {
            Key::EdDsa(Ed25519KeyPair::generate().unwrap())
        } else {
            Key::Es256(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap())
        }
    }

    fn cose(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Key::Es256(k) => {
                let point = k.public_key().as_ref();
                head(&mut out, 5, 5);
                int(&mut out, 1);
                int(&mut out, 2);
                int(&mut out, 3);
                int(&mut out, -7);
                int(&mut out, -1);
                int(&mut out, 1);
                int(&mut out, -2);
                bytes(&mut out, &point[1..33]);
                int(&mut out, -3);
                bytes(&mut out, &point[33..65]);
            }
            Key::EdDsa(k) => {
                head(&mut out, 5, 4);
                int(&mut out, 1);
                int(&mut out, 1);
                int(&mut out, 3);
                int(&mut out, -8);
                int(&mut out, -1);
                int(&mut out, 6);
                int(&mut out, -2);
                bytes(&mut out, k.public_key().as_ref());
            }
        }
        out
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        match self {
            Key::Es256(k) => k
                .sign(&SystemRandom::new(), data)
                .unwrap()
                .as_ref()
                .to_vec(),
            Key::EdDsa(k) => k.sign(data).as_ref().to_vec(),
        }
    }
}

fn client_data(typ: &str, challenge: &str) -> Vec<u8> {
    json!({"type": typ, "challenge": challenge, "origin": ORIGIN, "crossOrigin": false})
        .to_string()
        .into_bytes()
}

/// One valid registration and one valid sign-in, with what the checks need.
struct Fixture {
    rp: RelyingParty,
    registration: Value,
    registration_state: String,
    /// Where the authenticator data starts in the attestation object.
    auth_data_at: usize,
    login: Value,
    login_state: String,
    stored: String,
}

fn fixture(eddsa: bool) -> Fixture {
    let rp = RelyingParty::new(RP_ID, "Rampart", vec![Url::parse(ORIGIN).unwrap()]);
    let key = Key::new(eddsa);
    let mut id = vec![0u8; 32];
    SystemRandom::new().fill(&mut id).unwrap();
    let user_handle = [9u8; USER_HANDLE_BYTES];
    let (options, registration_state) = rp
        .start_registration(&user_handle, "u@example.com", "U", Vec::new())
        .unwrap();
    let cdj = client_data("webauthn.create", options["challenge"].as_str().unwrap());
    let mut auth = Sha256::digest(RP_ID.as_bytes()).to_vec();
    auth.push(UP | UV | AT);
    auth.extend(1u32.to_be_bytes());
    auth.extend([0u8; 16]);
    auth.extend((id.len() as u16).to_be_bytes());
    auth.extend(&id);
    auth.extend(key.cose());
    let mut att = Vec::new();
    head(&mut att, 5, 3);
    text(&mut att, "fmt");
    text(&mut att, "none");
    text(&mut att, "attStmt");
    head(&mut att, 5, 0);
    text(&mut att, "authData");
    bytes(&mut att, &auth);
    let auth_data_at = att.len() - auth.len();
    let registration = json!({
        "id": b64(&id), "rawId": b64(&id), "type": "public-key",
        "response": {"clientDataJSON": b64(&cdj), "attestationObject": b64(&att),
                     "transports": ["internal"]},
        "clientExtensionResults": {},
    });
    let stored = rp
        .finish_registration(&registration, &registration_state)
        .unwrap()
        .credential;

    let (options, login_state) = rp.start_login().unwrap();
    let cdj = client_data("webauthn.get", options["challenge"].as_str().unwrap());
    let mut auth = Sha256::digest(RP_ID.as_bytes()).to_vec();
    auth.push(UP | UV);
    auth.extend(2u32.to_be_bytes());
    let mut signed = auth.clone();
    signed.extend(Sha256::digest(&cdj));
    let login = json!({
        "id": b64(&id), "rawId": b64(&id), "type": "public-key",
        "response": {"clientDataJSON": b64(&cdj), "authenticatorData": b64(&auth),
                     "signature": b64(&key.sign(&signed)), "userHandle": b64(&user_handle)},
        "clientExtensionResults": {},
    });
    Fixture {
        rp,
        registration,
        registration_state,
        auth_data_at,
        login,
        login_state,
        stored,
    }
}

/// Fixtures for ES256 (index 0) and EdDSA (index 1), made once.
static FIXTURES: LazyLock<[Fixture; 2]> = LazyLock::new(|| [fixture(false), fixture(true)]);

/// The outcome of a registration: `Ok(true)` registered, `Ok(false)` refused the opaque way,
/// `Err` anything else (an internal error).
fn register_outcome(f: &Fixture, credential: &Value) -> std::result::Result<bool, String> {
    match f.rp.finish_registration(credential, &f.registration_state) {
        Ok(_) => Ok(true),
        Err(Error::Validation(errors)) if errors.len() == 1 && errors[0].field == "credential" => {
            Ok(false)
        }
        Err(other) => Err(format!("{other:?}")),
    }
}

/// The outcome of a sign-in: `Ok(true)` signed in, `Ok(false)` refused as `Invalid` (or not
/// a response at all), `Err` anything else.
fn login_outcome(f: &Fixture, credential: &Value) -> std::result::Result<bool, String> {
    let Some(presented) = RelyingParty::presented(credential) else {
        return Ok(false);
    };
    match f.rp.finish_login(&presented, &f.login_state, &f.stored) {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(Refusal::Invalid)) => Ok(false),
        other => Err(format!("{other:?}")),
    }
}

fn field<'a>(v: &'a mut Value, path: &str) -> &'a mut Value {
    path.split('.').fold(v, |v, k| &mut v[k])
}

fn decoded(v: &mut Value, path: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(field(v, path).as_str().unwrap())
        .unwrap()
}

/// The bytes of a client-data challenge as the library reads them: base64url or base64,
/// padded or not.
fn lenient(s: &str) -> Option<Vec<u8>> {
    [URL_SAFE_NO_PAD, URL_SAFE, STANDARD_NO_PAD, STANDARD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

/// Whether `mutated` client data differs from `original` in what binds it to the ceremony.
fn client_data_binding_changed(original: &[u8], mutated: &[u8]) -> bool {
    let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).ok();
    let (Some(a), Some(b)) = (parse(original), parse(mutated)) else {
        return true;
    };
    // The origin as the library compares it: parsed (so `HTTPS://App.Example` is the same
    // origin), scheme, host and port.
    let strings = |v: &Value| {
        (
            v["type"].as_str().map(str::to_owned),
            v["origin"]
                .as_str()
                .and_then(|o| Url::parse(o).ok())
                .map(|u| u.origin().ascii_serialization()),
            v["challenge"].as_str().and_then(lenient),
        )
    };
    let (ta, oa, ca) = strings(&a);
    let (tb, ob, cb) = strings(&b);
    !b.is_object() || ta != tb || oa != ob || cb.is_none() || ca != cb
}

fn hostile() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        ".{0,40}".prop_map(Value::String),
        "[A-Za-z0-9_=+/-]{0,300}".prop_map(Value::String),
    ];
    let key = prop_oneof![
        prop::sample::select(vec![
            "id",
            "rawId",
            "type",
            "response",
            "clientDataJSON",
            "attestationObject",
            "authenticatorData",
            "signature",
            "userHandle",
            "transports",
            "clientExtensionResults",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z]{0,12}",
    ];
    leaf.prop_recursive(3, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Members a registration response cannot do without (replacing one is always refused).
const REGISTRATION_BOUND: [&str; 4] = [
    "type",
    "response",
    "response.clientDataJSON",
    "response.attestationObject",
];
/// Members a sign-in response cannot do without.
const LOGIN_BOUND: [&str; 6] = [
    "type",
    "rawId",
    "response",
    "response.clientDataJSON",
    "response.authenticatorData",
    "response.signature",
];
/// Binary members of a sign-in response: every byte is bound.
const LOGIN_BYTES: [&str; 4] = [
    "rawId",
    "response.clientDataJSON",
    "response.authenticatorData",
    "response.signature",
];

#[test]
fn the_unmutated_responses_succeed() {
    for f in FIXTURES.iter() {
        assert_eq!(register_outcome(f, &f.registration), Ok(true));
        assert_eq!(login_outcome(f, &f.login), Ok(true));
    }
}

/// The stored credential is the library's JSON (binary members base64url without padding,
/// as 0.6 wrote them too) and reads back to the same text, before and after a sign-in.
#[test]
fn stored_credentials_round_trip() {
    for f in FIXTURES.iter() {
        let credential: Credential = serde_json::from_str(&f.stored).unwrap();
        assert_eq!(serde_json::to_string(&credential).unwrap(), f.stored);
        let stored: Value = serde_json::from_str(&f.stored).unwrap();
        let id = f.login["rawId"].as_str().unwrap();
        assert_eq!(stored["cred_id"], id);
        assert_eq!(stored["counter"], 1);
        let presented = RelyingParty::presented(&f.login).unwrap();
        let asserted =
            f.rp.finish_login(&presented, &f.login_state, &f.stored)
                .unwrap()
                .unwrap();
        assert_eq!(asserted.sign_count, 2);
        let after: Credential = serde_json::from_str(&asserted.credential).unwrap();
        assert_eq!(serde_json::to_string(&after).unwrap(), asserted.credential);
        let after: Value = serde_json::from_str(&asserted.credential).unwrap();
        assert_eq!(after["counter"], 2);
        assert_eq!(after["cred"], stored["cred"]);
    }
}

#[test]
fn eddsa_credentials_register_and_sign_in() {
    let f = &FIXTURES[1];
    let stored: Value = serde_json::from_str(&f.stored).unwrap();
    assert_eq!(stored["cred"]["type_"], "EDDSA", "{stored}");
    // A signature by another Ed25519 key is refused.
    let mut forged = f.login.clone();
    let other = Key::new(true).sign(b"anything");
    *field(&mut forged, "response.signature") = json!(b64(&other));
    assert_eq!(login_outcome(f, &forged), Ok(false));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_json_is_refused(value in hostile(), eddsa in any::<bool>()) {
        let f = &FIXTURES[usize::from(eddsa)];
        prop_assert_eq!(register_outcome(f, &value), Ok(false));
        prop_assert_eq!(login_outcome(f, &value), Ok(false));
    }

    #[test]
    fn a_required_member_replaced_is_refused(
        value in hostile(),
        eddsa in any::<bool>(),
        reg in prop::sample::select(REGISTRATION_BOUND.to_vec()),
        login in prop::sample::select(LOGIN_BOUND.to_vec()),
    ) {
        let f = &FIXTURES[usize::from(eddsa)];
        let mut r = f.registration.clone();
        *field(&mut r, reg) = value.clone();
        prop_assert_eq!(register_outcome(f, &r), Ok(false));
        let mut l = f.login.clone();
        *field(&mut l, login) = value;
        prop_assert_eq!(login_outcome(f, &l), Ok(false));
    }

    #[test]
    fn any_flipped_or_truncated_byte_of_a_sign_in_is_refused(
        eddsa in any::<bool>(),
        path in prop::sample::select(LOGIN_BYTES.to_vec()),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
        truncate in any::<bool>(),
    ) {
        let f = &FIXTURES[usize::from(eddsa)];
        let mut l = f.login.clone();
        let mut b = decoded(&mut l, path);
        let i = at.index(b.len());
        if truncate {
            b.truncate(i);
        } else {
            b[i] ^= xor;
        }
        *field(&mut l, path) = json!(b64(&b));
        prop_assert_eq!(login_outcome(f, &l), Ok(false));
    }

    #[test]
    fn a_registration_bound_to_another_ceremony_or_cut_short_is_refused(
        eddsa in any::<bool>(),
        in_client_data in any::<bool>(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
        truncate in any::<bool>(),
    ) {
        let f = &FIXTURES[usize::from(eddsa)];
        let mut r = f.registration.clone();
        let path = if in_client_data {
            "response.clientDataJSON"
        } else {
            "response.attestationObject"
        };
        let original = decoded(&mut r, path);
        let mut b = original.clone();
        let i = at.index(b.len());
        let must_refuse = if truncate {
            b.truncate(i);
            true
        } else {
            b[i] ^= xor;
            let rp_id_hash = f.auth_data_at..f.auth_data_at + 32;
            let flags = f.auth_data_at + 32;
            if in_client_data {
                client_data_binding_changed(&original, &b)
            } else {
                rp_id_hash.contains(&i) || (i == flags && xor & (UP | UV | AT | ED) != 0)
            }
        };
        *field(&mut r, path) = json!(b64(&b));
        // Never an internal error; refused whenever the binding changed.
        let outcome = register_outcome(f, &r);
        prop_assert!(outcome.is_ok(), "{outcome:?}");
        if must_refuse {
            prop_assert_eq!(outcome, Ok(false));
        }
    }
}
