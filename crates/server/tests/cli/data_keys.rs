//! Data-key rotation: TOTP secrets sealed under the old key keep working after
//! `rampart keys rotate-data` re-seals them under the new one, and the old key can go.

use serde_json::{Value, json};

use sqlx::Connection;

use crate::support::{Server, run, tempdir};

const K1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const PASSWORD: &str = "rotation passphrase 3x";

fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut n, mut out) = (0u64, 0, Vec::new());
    for c in s.bytes() {
        bits = (bits << 5) | ALPHABET.iter().position(|a| *a == c).unwrap() as u64;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

fn code(secret: &[u8], offset: i64) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    rampart_core::totp::code_at_step(secret, rampart_core::totp::step_of(now) + offset)
}

async fn post(server: &Server, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = server.client.post(server.url(path)).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn mfa_login(server: &Server, code: &str) -> u16 {
    let r = post(
        server,
        "/api/v1/auth/login",
        None,
        json!({"email": "keeper@example.org", "password": PASSWORD}),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    let token = body["mfaToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no mfaToken: {body}"))
        .to_owned();
    post(
        server,
        "/api/v1/auth/mfa/verify",
        None,
        json!({"mfaToken": token, "code": code}),
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn rotate_data_reseals_secrets_under_the_new_key() {
    let dir = tempdir();
    let with_k1 = [("RAMPART_JWT_ALG", "EdDSA"), ("RAMPART_DATA_KEY", K1)];
    let mut server = Server::start(dir.path(), &with_k1, &[]).await;
    post(
        &server,
        "/api/v1/auth/register",
        None,
        json!({"email": "keeper@example.org", "password": PASSWORD, "displayName": "R"}),
    )
    .await;
    let r = post(
        &server,
        "/api/v1/auth/login",
        None,
        json!({"email": "keeper@example.org", "password": PASSWORD}),
    )
    .await;
    let token = r.json::<Value>().await.unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let setup: Value = post(
        &server,
        "/api/v1/auth/mfa/totp/setup",
        Some(&token),
        json!({}),
    )
    .await
    .json()
    .await
    .unwrap();
    let secret = base32_decode(setup["secret"].as_str().unwrap());
    let r = post(
        &server,
        "/api/v1/auth/mfa/totp/enable",
        Some(&token),
        json!({"code": code(&secret, -1), "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(server.stop_with("TERM").await.success());

    // With only the new key and no rotation, the old seal does not open.
    let only_k2 = [("RAMPART_JWT_ALG", "EdDSA"), ("RAMPART_DATA_KEY", K2)];
    let mut server = Server::start(dir.path(), &only_k2, &[]).await;
    assert_eq!(mfa_login(&server, &code(&secret, 0)).await, 401);
    assert!(server.stop_with("TERM").await.success());

    // Rotate with the old key still known, then the old key can go.
    let rotating = [("RAMPART_DATA_KEY", K2), ("RAMPART_DATA_KEYS_OLD", K1)];
    let out = run(dir.path(), &rotating, &["keys", "rotate-data"]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("re-sealed 1"), "{}", out.stdout);
    let out = run(dir.path(), &rotating, &["keys", "rotate-data"]).await;
    assert!(
        out.stdout.contains("re-sealed 0"),
        "idempotent: {}",
        out.stdout
    );
    // Each run is audited with the count it re-sealed, and nothing else.
    assert_eq!(
        rotation_events(dir.path()).await,
        [
            ("success".to_owned(), json!({"count": 1})),
            ("success".to_owned(), json!({"count": 0}))
        ]
    );
    let mut server = Server::start(dir.path(), &only_k2, &[]).await;
    assert_eq!(mfa_login(&server, &code(&secret, 1)).await, 200);
    assert!(server.stop_with("TERM").await.success());
}

/// `keys.data_rotated` events of the development database in `dir`, oldest first.
async fn rotation_events(dir: &std::path::Path) -> Vec<(String, Value)> {
    let url = format!("sqlite://{}?mode=ro", dir.join("data/rampart.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT outcome, details FROM audit_events WHERE action = 'keys.data_rotated' ORDER BY seq",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    rows.into_iter()
        .map(|(outcome, details)| (outcome, serde_json::from_str(&details).unwrap()))
        .collect()
}

/// Without an explicit RAMPART_DATA_KEY, `rotate-data` used to generate a throwaway key
/// and re-seal every secret under it (exit 0). It is a configuration refusal now: exit 2
/// naming the variable, before any key is generated or the database is opened.
#[tokio::test]
async fn rotate_data_without_a_data_key_is_refused() {
    let dir = tempdir();
    for env in [
        &[][..],
        &[("RAMPART_DATA_KEYS_OLD", K1)],
        &[
            ("RAMPART_ENV", "production"),
            ("DATABASE_URL", "sqlite://./data/rampart.db"),
        ],
    ] {
        let out = run(dir.path(), env, &["keys", "rotate-data"]).await;
        assert_eq!(out.status.code(), Some(2), "{env:?}: {}", out.stderr);
        let problems: Vec<&str> = out.stderr.lines().skip(1).collect();
        assert_eq!(problems.len(), 1, "{env:?}: {}", out.stderr);
        assert!(
            problems[0].starts_with("RAMPART_DATA_KEY: "),
            "{}",
            out.stderr
        );
        assert!(!dir.path().join("data").exists(), "no key, no database");
    }
}
