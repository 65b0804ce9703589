//! Passkeys (contract §10) over real HTTP, on both stores, with a software authenticator
//! of our own (aws-lc-rs keys, a minimal CBOR encoder, "none" attestation).

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::backend_tests;
use crate::harness::{Backend, TestApp, problem};
use crate::identity::{PASSWORD, Session};

const ORIGIN: &str = "https://app.example";
const RP_ID: &str = "app.example";
const UP: u8 = 0x01;
const UV: u8 = 0x04;
const AT: u8 = 0x40;

enum Cbor<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    Text(&'a str),
    Map(Vec<(Cbor<'a>, Cbor<'a>)>),
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    if n < 24 {
        out.push(major << 5 | n as u8);
    } else if n < 256 {
        out.extend([major << 5 | 24, n as u8]);
    } else {
        out.push(major << 5 | 25);
        out.extend((n as u16).to_be_bytes());
    }
}

fn cbor(v: &Cbor, out: &mut Vec<u8>) {
    match v {
        Cbor::Int(i) if *i >= 0 => head(out, 0, *i as u64),
        Cbor::Int(i) => head(out, 1, (-1 - *i) as u64),
        Cbor::Bytes(b) => {
            head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Cbor::Text(t) => {
            head(out, 3, t.len() as u64);
            out.extend_from_slice(t.as_bytes());
        }
        Cbor::Map(items) => {
            head(out, 5, items.len() as u64);
            for (k, v) in items {
                cbor(k, out);
                cbor(v, out);
            }
        }
    }
}

enum Key {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

struct Authenticator {
    key: Key,
    id: Vec<u8>,
    user_handle: Vec<u8>,
    counter: u32,
}

impl Authenticator {
    fn new(alg: &str, counter: u32) -> Self {
        let key = match alg {
            "ES256" => Key::Es256(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap()),
            _ => Key::EdDsa(Ed25519KeyPair::generate().unwrap()),
        };
        let mut id = vec![0u8; 32];
        SystemRandom::new().fill(&mut id).unwrap();
        Self {
            key,
            id,
            user_handle: Vec::new(),
            counter,
        }
    }

    fn cose(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.key {
            Key::Es256(k) => {
                let point = k.public_key().as_ref();
                let map = Cbor::Map(vec![
                    (Cbor::Int(1), Cbor::Int(2)),
                    (Cbor::Int(3), Cbor::Int(-7)),
                    (Cbor::Int(-1), Cbor::Int(1)),
                    (Cbor::Int(-2), Cbor::Bytes(&point[1..33])),
                    (Cbor::Int(-3), Cbor::Bytes(&point[33..65])),
                ]);
                cbor(&map, &mut out);
            }
            Key::EdDsa(k) => {
                let map = Cbor::Map(vec![
                    (Cbor::Int(1), Cbor::Int(1)),
                    (Cbor::Int(3), Cbor::Int(-8)),
                    (Cbor::Int(-1), Cbor::Int(6)),
                    (Cbor::Int(-2), Cbor::Bytes(k.public_key().as_ref())),
                ]);
                cbor(&map, &mut out);
            }
        }
        out
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        match &self.key {
            Key::Es256(k) => k
                .sign(&SystemRandom::new(), data)
                .unwrap()
                .as_ref()
                .to_vec(),
            Key::EdDsa(k) => k.sign(data).as_ref().to_vec(),
        }
    }
}

struct Opts<'a> {
    origin: &'a str,
    rp_id: &'a str,
    flags: u8,
    typ: &'a str,
    counter: Option<u32>,
    tamper: bool,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Self {
            origin: ORIGIN,
            rp_id: RP_ID,
            flags: UP | UV,
            typ: "",
            counter: None,
            tamper: false,
        }
    }
}

fn client_data(typ: &str, challenge: &str, origin: &str) -> Vec<u8> {
    json!({"type": typ, "challenge": challenge, "origin": origin, "crossOrigin": false})
        .to_string()
        .into_bytes()
}

fn register(options: &Value, a: &mut Authenticator, o: &Opts) -> Value {
    a.user_handle = B64.decode(options["user"]["id"].as_str().unwrap()).unwrap();
    let typ = if o.typ.is_empty() {
        "webauthn.create"
    } else {
        o.typ
    };
    let cdj = client_data(typ, options["challenge"].as_str().unwrap(), o.origin);
    let mut auth = Sha256::digest(o.rp_id.as_bytes()).to_vec();
    auth.push(o.flags | AT);
    auth.extend(a.counter.to_be_bytes());
    auth.extend([0u8; 16]);
    auth.extend((a.id.len() as u16).to_be_bytes());
    auth.extend(&a.id);
    auth.extend(a.cose());
    let mut att = Vec::new();
    cbor(
        &Cbor::Map(vec![
            (Cbor::Text("fmt"), Cbor::Text("none")),
            (Cbor::Text("attStmt"), Cbor::Map(vec![])),
            (Cbor::Text("authData"), Cbor::Bytes(&auth)),
        ]),
        &mut att,
    );
    json!({
        "id": B64.encode(&a.id), "rawId": B64.encode(&a.id), "type": "public-key",
        "response": {"clientDataJSON": B64.encode(&cdj), "attestationObject": B64.encode(&att),
                     "transports": ["internal"]},
        "authenticatorAttachment": "platform", "clientExtensionResults": {},
    })
}

fn assertion(options: &Value, a: &mut Authenticator, o: &Opts) -> Value {
    let counter = o.counter.unwrap_or_else(|| {
        if a.counter > 0 {
            a.counter += 1;
        }
        a.counter
    });
    let typ = if o.typ.is_empty() {
        "webauthn.get"
    } else {
        o.typ
    };
    let cdj = client_data(typ, options["challenge"].as_str().unwrap(), o.origin);
    let mut auth = Sha256::digest(o.rp_id.as_bytes()).to_vec();
    auth.push(o.flags);
    auth.extend(counter.to_be_bytes());
    let mut signed = auth.clone();
    signed.extend(Sha256::digest(&cdj));
    let mut sig = a.sign(&signed);
    if o.tamper {
        let last = sig.len() - 1;
        sig[last] ^= 1;
    }
    json!({
        "id": B64.encode(&a.id), "rawId": B64.encode(&a.id), "type": "public-key",
        "response": {"clientDataJSON": B64.encode(&cdj), "authenticatorData": B64.encode(&auth),
                     "signature": B64.encode(&sig), "userHandle": B64.encode(&a.user_handle)},
        "authenticatorAttachment": "platform", "clientExtensionResults": {},
    })
}

const PK: &str = "/api/v1/auth/passkeys";

impl TestApp {
    async fn pk_register_start(&self, s: &Session) -> (String, Value) {
        let r = self
            .call(
                Method::POST,
                &format!("{PK}/register/start"),
                &s.access,
                Some(json!({"password": PASSWORD})),
            )
            .await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        (
            body["challengeId"].as_str().unwrap().to_owned(),
            body["publicKey"].clone(),
        )
    }

    async fn pk_register_finish(&self, s: &Session, id: &str, cred: Value) -> reqwest::Response {
        self.call(
            Method::POST,
            &format!("{PK}/register/finish"),
            &s.access,
            Some(json!({"challengeId": id, "name": "laptop", "credential": cred})),
        )
        .await
    }

    /// Registers `a` for `s`; returns the passkey view.
    async fn pk_add(&self, s: &Session, a: &mut Authenticator) -> Value {
        let (id, options) = self.pk_register_start(s).await;
        let cred = register(&options, a, &Opts::default());
        let r = self.pk_register_finish(s, &id, cred).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }

    async fn pk_login_start(&self) -> (String, Value) {
        let r = self
            .client
            .post(self.url(&format!("{PK}/login/start")))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        (
            body["challengeId"].as_str().unwrap().to_owned(),
            body["publicKey"].clone(),
        )
    }

    async fn pk_login_finish(&self, id: &str, cred: &Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("{PK}/login/finish")))
            .json(&json!({"challengeId": id, "credential": cred}))
            .send()
            .await
            .unwrap()
    }

    async fn pk_login(&self, a: &mut Authenticator, o: &Opts<'_>) -> reqwest::Response {
        let (id, options) = self.pk_login_start().await;
        let cred = assertion(&options, a, o);
        self.pk_login_finish(&id, &cred).await
    }
}

async fn registers_and_signs_in_with_es256_and_eddsa(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("pk").await;
    for alg in ["ES256", "EdDSA"] {
        let mut a = Authenticator::new(alg, 0);
        let view = app.pk_add(&s, &mut a).await;
        assert_eq!(view["name"], "laptop");
        assert_eq!(view["lastUsedAt"], Value::Null);
        assert_eq!(view["backupEligible"], false);
        let keys: Vec<&String> = view.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 6, "{view}");
        let r = app.pk_login(&mut a, &Opts::default()).await;
        assert_eq!(r.status(), 200, "{alg}");
        assert!(r.headers().get("set-cookie").is_some());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["user"]["id"].as_str().unwrap(), s.user_id);
        let me = app
            .get_auth("/api/v1/users/me", body["accessToken"].as_str().unwrap())
            .await;
        assert_eq!(me.status(), 200);
    }
    // The user handle never reveals the email or the id; options list existing passkeys.
    let (_, options) = app.pk_register_start(&s).await;
    let handle = B64.decode(options["user"]["id"].as_str().unwrap()).unwrap();
    let text = String::from_utf8_lossy(&handle).to_lowercase();
    assert!(handle.len() >= 16);
    assert!(!text.contains(&s.email.to_lowercase()) && !text.contains(&s.user_id));
    assert!(!options["user"]["id"].as_str().unwrap().contains(&s.user_id));
    assert_eq!(options["excludeCredentials"].as_array().unwrap().len(), 2);
    assert_eq!(options["authenticatorSelection"]["residentKey"], "required");
    // The list holds both, and nothing of their keys.
    let r = app.call(Method::GET, PK, &s.access, None).await;
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert!(list["items"][0]["lastUsedAt"].is_string());
    // Audit: added, and the login says passkey; no key material anywhere in the records.
    let events: Vec<(String, Option<String>)> = sqlx_events(&app).await;
    assert!(events.iter().any(|(a, _)| a == "auth.passkey_added"));
    assert!(events.iter().any(|(a, d)| a == "auth.login_succeeded"
        && d.as_deref().is_some_and(|d| d.contains("\"passkey\""))));
    assert!(events.iter().any(|(a, d)| a == "auth.login_succeeded"
        && d.as_deref().is_some_and(|d| d.contains("\"password\""))));
    app.finish().await;
}

async fn sqlx_events(app: &TestApp) -> Vec<(String, Option<String>)> {
    let filter = rampart_store::audit::AuditFilter::default();
    let records = rampart_store::audit::list(&app.state.db, &filter, 1000, None)
        .await
        .unwrap();
    // No key material, signature or secret in any record.
    for r in &records {
        assert!(
            !r.details.contains("cred") && !r.details.contains("publicKey"),
            "{}",
            r.details
        );
    }
    records
        .into_iter()
        .map(|r| (r.action, Some(r.details)))
        .collect()
}

async fn every_refusal_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("pkr").await;
    // Registration refusals: 400 validation_failed for `credential`.
    for o in [
        Opts {
            origin: "https://evil.example",
            ..Opts::default()
        },
        Opts {
            rp_id: "evil.example",
            ..Opts::default()
        },
        Opts {
            flags: UP,
            ..Opts::default()
        },
        Opts {
            typ: "webauthn.get",
            ..Opts::default()
        },
    ] {
        let (id, options) = app.pk_register_start(&s).await;
        let cred = register(&options, &mut Authenticator::new("ES256", 0), &o);
        let body = problem(
            app.pk_register_finish(&s, &id, cred).await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "credential");
    }
    // Wrong password → 403.
    let r = app
        .call(
            Method::POST,
            &format!("{PK}/register/start"),
            &s.access,
            Some(json!({"password": "wrong password here"})),
        )
        .await;
    problem(r, 403, "reauthentication_failed").await;

    let mut a = Authenticator::new("ES256", 5);
    app.pk_add(&s, &mut a).await;
    // The same credential id again (here by another user) → 400.
    let other = app.new_session("pko").await;
    let (id, options) = app.pk_register_start(&other).await;
    let own_handle = a.user_handle.clone();
    let cred = register(&options, &mut a, &Opts::default());
    a.user_handle = own_handle;
    let body = problem(
        app.pk_register_finish(&other, &id, cred).await,
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "credential");

    // Sign-in refusals: 401 invalid_credentials.
    for o in [
        Opts {
            origin: "https://evil.example",
            ..Opts::default()
        },
        Opts {
            rp_id: "evil.example",
            ..Opts::default()
        },
        Opts {
            flags: UP,
            ..Opts::default()
        },
        Opts {
            tamper: true,
            ..Opts::default()
        },
    ] {
        problem(app.pk_login(&mut a, &o).await, 401, "invalid_credentials").await;
    }
    problem(
        app.pk_login(&mut Authenticator::new("ES256", 0), &Opts::default())
            .await,
        401,
        "invalid_credentials",
    )
    .await;
    // A good one works; then a replay of its challenge is 401 unauthenticated.
    let (id, options) = app.pk_login_start().await;
    let cred = assertion(&options, &mut a, &Opts::default());
    assert_eq!(app.pk_login_finish(&id, &cred).await.status(), 200);
    problem(
        app.pk_login_finish(&id, &cred).await,
        401,
        "unauthenticated",
    )
    .await;
    // Expired challenge.
    let (id, options) = app.pk_login_start().await;
    app.clock.advance(time::Duration::seconds(301));
    let cred = assertion(&options, &mut a, &Opts::default());
    problem(
        app.pk_login_finish(&id, &cred).await,
        401,
        "unauthenticated",
    )
    .await;
    // Unknown challenge.
    problem(
        app.pk_login_finish(&uuid::Uuid::now_v7().to_string(), &cred)
            .await,
        401,
        "unauthenticated",
    )
    .await;
    // Counter regression → 401 and audited.
    problem(
        app.pk_login(
            &mut a,
            &Opts {
                counter: Some(1),
                ..Opts::default()
            },
        )
        .await,
        401,
        "invalid_credentials",
    )
    .await;
    let events = sqlx_events(&app).await;
    assert!(
        events
            .iter()
            .any(|(a, _)| a == "auth.passkey_counter_regressed")
    );
    // Another user's passkey: 404 on rename and delete.
    let list: Value = app
        .call(Method::GET, PK, &s.access, None)
        .await
        .json()
        .await
        .unwrap();
    let pid = list["items"][0]["id"].as_str().unwrap().to_owned();
    problem(
        app.call(Method::DELETE, &format!("{PK}/{pid}"), &other.access, None)
            .await,
        404,
        "not_found",
    )
    .await;
    problem(
        app.call(
            Method::PATCH,
            &format!("{PK}/{pid}"),
            &other.access,
            Some(json!({"name": "x"})),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let r = app
        .call(
            Method::PATCH,
            &format!("{PK}/{pid}"),
            &s.access,
            Some(json!({"name": ""})),
        )
        .await;
    problem(r, 400, "validation_failed").await;
    let r = app
        .call(
            Method::PATCH,
            &format!("{PK}/{pid}"),
            &s.access,
            Some(json!({"name": "phone"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    // login/start takes exactly `{}`.
    let r = app
        .client
        .post(app.url(&format!("{PK}/login/start")))
        .json(&json!({"zzUnknown": 1}))
        .send()
        .await
        .unwrap();
    let body = problem(r, 400, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "zzUnknown");
    // Hostile credential JSON: 4xx, never 500.
    for hostile in [
        json!(null),
        json!(1),
        json!("x"),
        json!({}),
        json!({"id": 1}),
        json!({"rawId": "!!", "response": {}}),
        json!({"id": "", "rawId": "", "type": "public-key", "response": {"clientDataJSON": "", "authenticatorData": "", "signature": ""}}),
    ] {
        let (id, _) = app.pk_login_start().await;
        let status = app.pk_login_finish(&id, &hostile).await.status().as_u16();
        assert!((400..500).contains(&status), "{hostile}: {status}");
        let (id, _) = app.pk_register_start(&s).await;
        let status = app
            .pk_register_finish(&s, &id, hostile.clone())
            .await
            .status()
            .as_u16();
        assert!((400..500).contains(&status), "{hostile}: {status}");
    }
    app.finish().await;
}

async fn removing_a_passkey_ends_its_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("pkd").await;
    let mut a = Authenticator::new("ES256", 0);
    let view = app.pk_add(&s, &mut a).await;
    let r = app.pk_login(&mut a, &Opts::default()).await;
    let body: Value = r.json().await.unwrap();
    let token = body["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(app.get_auth("/api/v1/users/me", &token).await.status(), 200);
    let r = app
        .call(
            Method::DELETE,
            &format!("{PK}/{}", view["id"].as_str().unwrap()),
            &s.access,
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    problem(
        app.get_auth("/api/v1/users/me", &token).await,
        401,
        "unauthenticated",
    )
    .await;
    // The password session that removed it lives on; the passkey no longer signs in.
    assert_eq!(
        app.get_auth("/api/v1/users/me", &s.access).await.status(),
        200
    );
    problem(
        app.pk_login(&mut a, &Opts::default()).await,
        401,
        "invalid_credentials",
    )
    .await;
    let events = sqlx_events(&app).await;
    assert!(events.iter().any(|(a, _)| a == "auth.passkey_removed"));
    app.finish().await;
}

async fn one_challenge_finishes_once_under_concurrency(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("pkc").await;
    let mut a = Authenticator::new("ES256", 0);
    app.pk_add(&s, &mut a).await;
    let (id, options) = app.pk_login_start().await;
    let cred = assertion(&options, &mut a, &Opts::default());
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let run = |b: std::sync::Arc<tokio::sync::Barrier>| {
        let (app, id, cred) = (&app, id.clone(), cred.clone());
        async move {
            b.wait().await;
            app.pk_login_finish(&id, &cred).await.status().as_u16()
        }
    };
    let (x, y) = tokio::join!(run(barrier.clone()), run(barrier.clone()));
    let mut statuses = [x, y];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401]);
    app.finish().await;
}

async fn a_password_reset_ends_passkey_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("pke").await;
    let mut a = Authenticator::new("ES256", 0);
    app.pk_add(&s, &mut a).await;
    let body: Value = app
        .pk_login(&mut a, &Opts::default())
        .await
        .json()
        .await
        .unwrap();
    let token = body["accessToken"].as_str().unwrap().to_owned();
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/password",
            &s.access,
            Some(json!({"currentPassword": PASSWORD, "newPassword": "another long passphrase 77"})),
        )
        .await;
    assert_eq!(r.status(), 204);
    problem(
        app.get_auth("/api/v1/users/me", &token).await,
        401,
        "unauthenticated",
    )
    .await;
    // The passkey itself still signs in.
    assert_eq!(app.pk_login(&mut a, &Opts::default()).await.status(), 200);
    app.finish().await;
}

/// The export (contract §11) lists the caller's passkeys in the passkey view, the same as
/// `GET /passkeys`, and holds none of their key material, credential ids or user handle.
async fn the_export_lists_passkeys_without_key_material(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("pkx").await;
    let mut a = Authenticator::new("ES256", 0);
    let view = app.pk_add(&s, &mut a).await;
    let r = app.get_auth("/api/v1/users/me/export", &s.access).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let export: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(export["passkeys"], json!([view]));
    let list: Value = app
        .call(Method::GET, PK, &s.access, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(export["passkeys"], list["items"]);
    for secretish in [
        B64.encode(a.cose()),
        B64.encode(&a.id),
        B64.encode(&a.user_handle),
    ] {
        assert!(!text.contains(&secretish), "the export holds {secretish}");
    }
    app.finish().await;
}

/// §10: at most 20 passkeys per user. With 19 registered, two finishes of two ceremonies
/// sent at once: exactly one 201 and one 409 `conflict`, and the list holds 20. A disabled
/// account's passkey then signs in to nothing: 401 `invalid_credentials`.
async fn the_cap_of_twenty_holds_under_racing_finishes_and_a_disabled_user_cannot_sign_in(
    backend: Backend,
) {
    let app = std::sync::Arc::new(TestApp::spawn(backend).await);
    let s = app.new_session("pkcap").await;
    let mut first = Authenticator::new("ES256", 0);
    app.pk_add(&s, &mut first).await;
    for _ in 1..19 {
        app.pk_add(&s, &mut Authenticator::new("ES256", 0)).await;
    }
    let mut finishes = Vec::new();
    for _ in 0..2 {
        let (id, options) = app.pk_register_start(&s).await;
        let cred = register(
            &options,
            &mut Authenticator::new("ES256", 0),
            &Opts::default(),
        );
        finishes.push((id, cred));
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for (id, cred) in finishes {
        let (app, barrier, access) = (app.clone(), barrier.clone(), s.access.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let body = json!({"challengeId": id, "name": "racer", "credential": cred});
            app.call(
                Method::POST,
                &format!("{PK}/register/finish"),
                &access,
                Some(body),
            )
            .await
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status() == 409 {
            problem(r, 409, "conflict").await;
            codes.push(409);
        } else {
            codes.push(r.status().as_u16());
        }
    }
    codes.sort_unstable();
    assert_eq!(codes, vec![201, 409]);
    let list: Value = app
        .call(Method::GET, PK, &s.access, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 20);

    assert_eq!(
        app.pk_login(&mut first, &Opts::default()).await.status(),
        200
    );
    let admin = app.admin_session("pkcap-admin").await;
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", s.user_id),
            &admin.access,
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    problem(
        app.pk_login(&mut first, &Opts::default()).await,
        401,
        "invalid_credentials",
    )
    .await;
    std::sync::Arc::into_inner(app).unwrap().finish().await;
}

/// The refusals that depend on the key type, for an EdDSA credential: a tampered Ed25519
/// signature, a signature by another Ed25519 key over the same data, and a counter that did
/// not grow (401 `invalid_credentials`, audited once); the next good one still signs in.
async fn eddsa_refusals_tampered_signature_and_counter_regression(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_session("pked").await;
    let mut a = Authenticator::new("EdDSA", 5);
    app.pk_add(&s, &mut a).await;
    let tampered = Opts {
        tamper: true,
        ..Opts::default()
    };
    problem(
        app.pk_login(&mut a, &tampered).await,
        401,
        "invalid_credentials",
    )
    .await;
    // Same credential id and user handle, another Ed25519 key.
    let mut impostor = Authenticator::new("EdDSA", 100);
    impostor.id = a.id.clone();
    impostor.user_handle = a.user_handle.clone();
    problem(
        app.pk_login(&mut impostor, &Opts::default()).await,
        401,
        "invalid_credentials",
    )
    .await;
    let regressed = |events: &[(String, Option<String>)]| {
        events
            .iter()
            .filter(|(a, _)| a == "auth.passkey_counter_regressed")
            .count()
    };
    assert_eq!(regressed(&sqlx_events(&app).await), 0);
    assert_eq!(app.pk_login(&mut a, &Opts::default()).await.status(), 200);
    let stale = Opts {
        counter: Some(a.counter),
        ..Opts::default()
    };
    problem(
        app.pk_login(&mut a, &stale).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(regressed(&sqlx_events(&app).await), 1);
    assert_eq!(app.pk_login(&mut a, &Opts::default()).await.status(), 200);
    app.finish().await;
}

/// Two instances of one deployment (shared database, keys and data key): for ES256 and
/// EdDSA, registration started on A finishes on B and sign-in started on A finishes on B,
/// with the session good on both; a challenge consumed on A cannot be replayed on B (401
/// `unauthenticated` for sign-in, 400 for registration), nor one consumed on B on A.
async fn ceremonies_started_on_one_instance_finish_on_another(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    let b = a.sibling(backend, &[]).await;
    b.until_ready().await;
    let s = a.new_session("pk2i").await;
    for alg in ["ES256", "EdDSA"] {
        let mut key = Authenticator::new(alg, 0);
        let (id, options) = a.pk_register_start(&s).await;
        let cred = register(&options, &mut key, &Opts::default());
        let r = b.pk_register_finish(&s, &id, cred).await;
        assert_eq!(r.status(), 201, "{alg}");
        // The registration challenge is spent on B: A refuses it, even for a new key.
        let other = register(&options, &mut Authenticator::new(alg, 0), &Opts::default());
        let body = problem(
            a.pk_register_finish(&s, &id, other).await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "credential");

        let (id, options) = a.pk_login_start().await;
        let cred = assertion(&options, &mut key, &Opts::default());
        let r = b.pk_login_finish(&id, &cred).await;
        assert_eq!(r.status(), 200, "{alg}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["user"]["id"].as_str().unwrap(), s.user_id);
        let token = body["accessToken"].as_str().unwrap();
        for app in [&a, &b] {
            assert_eq!(app.get_auth("/api/v1/users/me", token).await.status(), 200);
        }
        problem(a.pk_login_finish(&id, &cred).await, 401, "unauthenticated").await;

        // Consumed on A, replayed on B.
        let (id, options) = a.pk_login_start().await;
        let cred = assertion(&options, &mut key, &Opts::default());
        assert_eq!(a.pk_login_finish(&id, &cred).await.status(), 200);
        problem(b.pk_login_finish(&id, &cred).await, 401, "unauthenticated").await;
        let (id, options) = a.pk_register_start(&s).await;
        let [first, second] =
            [0, 1].map(|_| register(&options, &mut Authenticator::new(alg, 0), &Opts::default()));
        assert_eq!(a.pk_register_finish(&s, &id, first).await.status(), 201);
        let body = problem(
            b.pk_register_finish(&s, &id, second).await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "credential");
    }
    let list: Value = b
        .call(Method::GET, PK, &s.access, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
    b.finish().await;
    a.finish().await;
}

backend_tests!(
    the_cap_of_twenty_holds_under_racing_finishes_and_a_disabled_user_cannot_sign_in,
    registers_and_signs_in_with_es256_and_eddsa,
    eddsa_refusals_tampered_signature_and_counter_regression,
    ceremonies_started_on_one_instance_finish_on_another,
    the_export_lists_passkeys_without_key_material,
    every_refusal_is_refused,
    removing_a_passkey_ends_its_sessions,
    one_challenge_finishes_once_under_concurrency,
    a_password_reset_ends_passkey_sessions,
);
