//! `rampart audit verify` on both stores: 0 and the count when intact, 1 naming the first
//! broken record after tampering (which first needs the append-only triggers removed).
//! Audit checkpoints (contract §8): `audit checkpoint`, `audit verify --checkpoint`
//! against truncation, rewriting, forged and hostile checkpoint files, and the checkpoint
//! lines a running server logs, verified against its JWKS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rampart_core::audit::{AuditRecord, GENESIS_HASH, NewAuditEvent, Outcome, chain_hash};
use rampart_store::audit::AuditFilter;
use rampart_store::{Backend, Db};
use serde_json::{Value, json};

use crate::support::{Output, PgDb, Server, path_str, run, tempdir};

async fn append_three(url: &str) -> Db {
    let db = Db::connect(url, 2).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    for (i, action) in ["auth.register", "auth.login_succeeded", "auth.logout"]
        .iter()
        .enumerate()
    {
        let event =
            NewAuditEvent::new(*action, Outcome::Success).with_request_id(format!("req-{i}"));
        rampart_store::audit::append(&mut tx, &event, 1_700_000_000_000 + i as i64)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    db
}

async fn tamper(db: &Db) {
    let statements: &[&'static str] = match db.backend() {
        Backend::Sqlite => &[
            "DROP TRIGGER audit_events_no_update",
            "UPDATE audit_events SET action = 'auth.nothing_happened' WHERE seq = 2",
        ],
        Backend::Postgres => &[
            "ALTER TABLE audit_events DISABLE TRIGGER USER",
            "UPDATE audit_events SET action = 'auth.nothing_happened' WHERE seq = 2",
        ],
    };
    for sql in statements {
        match db {
            Db::Sqlite(pool) => {
                sqlx::raw_sql(*sql).execute(pool).await.unwrap();
            }
            Db::Postgres(pool) => {
                sqlx::raw_sql(*sql).execute(pool).await.unwrap();
            }
        }
    }
}

async fn verify_cycle(url: &str) {
    let dir = tempdir();
    let env = [("DATABASE_URL", url)];
    let out = run(dir.path(), &env, &["migrate"]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let out = run(dir.path(), &env, &["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("0 record(s)"), "{}", out.stdout);

    let db = append_three(url).await;
    let out = run(dir.path(), &env, &["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("3 record(s)"), "{}", out.stdout);

    tamper(&db).await;
    db.close().await;
    let out = run(dir.path(), &env, &["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("seq=2"),
        "names the first broken record: {}",
        out.stdout
    );
}

#[tokio::test]
async fn audit_verify_on_sqlite() {
    let dir = tempdir();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    verify_cycle(&url).await;
}

#[tokio::test]
async fn audit_verify_on_postgres() {
    let Some(pg) = PgDb::create().await else {
        return;
    };
    verify_cycle(&pg.url).await;
}

const CHECKPOINT_TYPE: &str = "audit-checkpoint+jwt";

/// Appends `n` events in one committed transaction.
async fn append(db: &Db, n: usize, tag: &str) {
    let mut tx = db.begin().await.unwrap();
    for i in 0..n {
        let event = NewAuditEvent::new("note.created", Outcome::Success)
            .with_request_id(format!("{tag}-{i}"));
        rampart_store::audit::append(&mut tx, &event, 1_700_000_000_000 + i as i64)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn execute(db: &Db, sql: &'static str) {
    match db {
        Db::Sqlite(pool) => {
            sqlx::raw_sql(sql).execute(pool).await.unwrap();
        }
        Db::Postgres(pool) => {
            sqlx::raw_sql(sql).execute(pool).await.unwrap();
        }
    }
}

/// Removes the append-only guard as the file owner (SQLite) or a superuser (PostgreSQL)
/// could, bypassing what the serving role cannot.
async fn disable_append_only(db: &Db) {
    match db.backend() {
        Backend::Sqlite => {
            execute(db, "DROP TRIGGER audit_events_no_update").await;
            execute(db, "DROP TRIGGER audit_events_no_delete").await;
        }
        Backend::Postgres => execute(db, "ALTER TABLE audit_events DISABLE TRIGGER USER").await,
    }
}

/// Changes record `seq`'s action and recomputes its hash and every later record's
/// `prev_hash` and `hash`, so the chain verifies again: a full rewrite from `seq` on.
async fn rewrite_from(db: &Db, seq: i64) {
    let mut records: Vec<AuditRecord> =
        rampart_store::audit::list(db, &AuditFilter::default(), 10_000, None)
            .await
            .unwrap();
    records.reverse();
    let mut prev: Option<String> = None;
    for record in records.iter_mut().filter(|r| r.seq >= seq) {
        if record.seq == seq {
            record.action = "auth.nothing_happened".into();
        }
        if let Some(prev) = prev.take() {
            record.prev_hash = prev;
        }
        record.hash = chain_hash(record);
        prev = Some(record.hash.clone());
        const UPDATE: &str =
            "UPDATE audit_events SET action = $1, prev_hash = $2, hash = $3 WHERE seq = $4";
        let changed = match db {
            Db::Sqlite(pool) => sqlx::query(UPDATE)
                .bind(&record.action)
                .bind(&record.prev_hash)
                .bind(&record.hash)
                .bind(record.seq)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
            Db::Postgres(pool) => sqlx::query(UPDATE)
                .bind(&record.action)
                .bind(&record.prev_hash)
                .bind(&record.hash)
                .bind(record.seq)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
        };
        assert_eq!(changed, 1);
    }
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// `rampart audit checkpoint`: exit 0 and exactly one line, the token.
async fn checkpoint(dir: &Path, env: &[(&str, &str)]) -> String {
    let out = run(dir, env, &["audit", "checkpoint"]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    lines[0].to_owned()
}

async fn verify_with(dir: &Path, env: &[(&str, &str)], files: &[&PathBuf]) -> Output {
    let mut args = vec!["audit".to_owned(), "verify".to_owned()];
    for file in files {
        args.push("--checkpoint".to_owned());
        args.push(path_str(file));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(dir, env, &args).await
}

fn write(path: PathBuf, content: impl AsRef<[u8]>) -> PathBuf {
    std::fs::write(&path, content).unwrap();
    path
}

fn assert_exit(out: &Output, code: i32, needles: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}{}",
        out.stdout,
        out.stderr
    );
    for needle in needles {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} missing from:\n{}{}",
            out.stdout,
            out.stderr
        );
    }
}

async fn checkpoint_cycle(url: &str, alg: &str) {
    let dir = tempdir();
    let d = dir.path();
    let env = [("DATABASE_URL", url), ("RAMPART_JWT_ALG", alg)];
    assert!(run(d, &env, &["migrate"]).await.status.success());
    let out = run(d, &env, &["keys", "generate"]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let kid = out.stdout.trim().to_owned();

    // The empty chain: seq 0 and the genesis hash.
    let cp0 = checkpoint(d, &env).await;
    let parts = segments(&cp0);
    assert_eq!(
        decode_part(&parts[0]),
        json!({"alg": alg, "typ": CHECKPOINT_TYPE, "kid": kid})
    );
    let claims = decode_part(&parts[1]);
    assert_eq!(
        (&claims["seq"], &claims["hash"]),
        (&json!(0), &json!(GENESIS_HASH))
    );

    let db = Db::connect(url, 2).await.unwrap();
    append(&db, 3, "a").await;
    let cp3 = checkpoint(d, &env).await;
    let claims = decode_part(&segments(&cp3)[1]);
    let (head_seq, head_hash) = rampart_store::audit::head(&db).await.unwrap().unwrap();
    assert_eq!(head_seq, 3);
    assert_eq!(claims["seq"], json!(3));
    assert_eq!(claims["hash"], json!(head_hash));
    let iat = claims["iat"].as_i64().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - 120..=now).contains(&iat), "iat {iat}, now {now}");
    assert_eq!(
        claims.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["hash", "iat", "seq"]
    );

    append(&db, 3, "b").await;
    let cp6 = checkpoint(d, &env).await;
    assert_eq!(decode_part(&segments(&cp6)[1])["seq"], json!(6));

    // More events after the checkpoints: every one holds. Blank lines and CRLF are fine.
    append(&db, 2, "c").await;
    let early = write(d.join("early.txt"), format!("\n{cp0}\n\n  {cp3}\r\n\n"));
    let late = write(d.join("late.txt"), &cp6); // no final line break
    let out = verify_with(d, &env, &[&early, &late]).await;
    assert_exit(
        &out,
        0,
        &[
            "audit chain intact: 8 record(s) verified",
            "early.txt:2 holds: seq=0",
            "early.txt:4 holds: seq=3",
            "late.txt:1 holds: seq=6",
            "3 checkpoint(s) hold",
        ],
    );

    // A file without checkpoints, or that cannot be read, fails rather than passes.
    let empty = write(d.join("empty.txt"), "\n \n");
    assert_exit(
        &verify_with(d, &env, &[&empty]).await,
        1,
        &["holds no checkpoint"],
    );
    let missing = d.join("missing.txt");
    assert_exit(
        &verify_with(d, &env, &[&missing]).await,
        1,
        &["cannot read it"],
    );

    // Forged: a true statement of the head, signed by a key outside the directory.
    let other = d.join("other-keys");
    let other_str = path_str(&other);
    let out = run(d, &env, &["keys", "generate", "--dir", &other_str]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let mut other_env = env.to_vec();
    other_env.push(("RAMPART_JWT_KEYS_DIR", &other_str));
    let forged = checkpoint(d, &other_env).await;
    assert_eq!(decode_part(&segments(&forged)[1])["seq"], json!(8));
    let forged_file = write(d.join("forged.txt"), format!("{forged}\n"));
    let out = verify_with(d, &env, &[&forged_file]).await;
    assert_exit(
        &out,
        1,
        &["forged.txt:1 refused: its kid names no key in the key directory"],
    );
    // … and the same under our kid.
    let mut header = decode_part(&segments(&forged)[0]);
    header["kid"] = json!(kid);
    let parts = segments(&forged);
    let under_our_kid = format!("{}.{}.{}", b64(&header), parts[1], parts[2]);
    // Tampered: our checkpoint of seq 6 moved back to seq 2 (to cover a truncation).
    let parts = segments(&cp6);
    let mut claims = decode_part(&parts[1]);
    claims["seq"] = json!(2);
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let file = write(
        d.join("tampered.txt"),
        format!("{under_our_kid}\n{tampered}\n{cp3}\n"),
    );
    let out = verify_with(d, &env, &[&file]).await;
    assert_exit(
        &out,
        1,
        &[
            "tampered.txt:1 refused: its signature does not verify",
            "tampered.txt:2 refused: its signature does not verify",
            "tampered.txt:3 holds: seq=3",
        ],
    );

    // Hostile lines: none panics (exit 1, not 101), each is refused, a good one still holds.
    let mut access_header = decode_part(&segments(&cp3)[0]);
    access_header["typ"] = json!("at+jwt");
    let none_header = json!({"alg": "none", "typ": CHECKPOINT_TYPE, "kid": kid});
    let mut hostile: Vec<u8> = Vec::new();
    for line in [
        "garbage".to_owned(),
        "a.b.c".to_owned(),
        format!("{}.{}.", b64(&none_header), segments(&cp3)[1]),
        format!(
            "{}.{}.{}",
            b64(&access_header),
            segments(&cp3)[1],
            segments(&cp3)[2]
        ),
        "\u{0}\u{0}.\u{7f}.\u{feff}".to_owned(),
    ] {
        hostile.extend(line.as_bytes());
        hostile.push(b'\n');
    }
    hostile.extend(vec![b'A'; 4 * 1024 * 1024]);
    hostile.extend(b"\n\xff\xfe\xfd\n");
    hostile.extend(cp3.as_bytes());
    let file = write(d.join("hostile.txt"), &hostile);
    let out = verify_with(d, &env, &[&file]).await;
    assert_exit(
        &out,
        1,
        &[
            "hostile.txt:1 refused: not a compact JWS",
            "hostile.txt:2 refused: not a compact JWS",
            "hostile.txt:3 refused: not a compact JWS",
            "hostile.txt:4 refused: typ is not audit-checkpoint+jwt",
            "hostile.txt:5 refused: not a compact JWS",
            "hostile.txt:6 refused: longer than 8192 bytes",
            "hostile.txt:7 refused: not UTF-8 text",
            "hostile.txt:8 holds: seq=3",
        ],
    );
    assert_eq!(out.stdout.matches("refused").count(), 7, "{}", out.stdout);

    // Truncation: the newest four records go, bypassing the triggers. The chain alone
    // still verifies; the checkpoint of seq 6 does not.
    disable_append_only(&db).await;
    execute(&db, "DELETE FROM audit_events WHERE seq > 4").await;
    let out = run(d, &env, &["audit", "verify"]).await;
    assert_exit(&out, 0, &["audit chain intact: 4 record(s) verified"]);
    let out = verify_with(d, &env, &[&early, &late]).await;
    assert_exit(
        &out,
        1,
        &[
            "early.txt:2 holds: seq=0",
            "early.txt:4 holds: seq=3",
            "late.txt:1 FAILED: truncated: the chain ends at seq=4 but the checkpoint names seq=6",
        ],
    );
    assert!(!out.stdout.contains("checkpoint(s) hold"), "{}", out.stdout);
    assert_exit(
        &verify_with(d, &env, &[&early]).await,
        0,
        &["2 checkpoint(s) hold"],
    );

    // Rewriting: record 3 changed and the chain recomputed after it, so plain verify
    // passes; the checkpoint of seq 3 does not.
    rewrite_from(&db, 3).await;
    let (_, new_hash) = rampart_store::audit::head(&db).await.unwrap().unwrap();
    assert_ne!(new_hash, head_hash);
    let out = run(d, &env, &["audit", "verify"]).await;
    assert_exit(&out, 0, &["audit chain intact: 4 record(s) verified"]);
    let rewritten_hash = rampart_store::audit::list(&db, &AuditFilter::default(), 10, None)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.seq == 3)
        .unwrap()
        .hash;
    let out = verify_with(d, &env, &[&early]).await;
    assert_exit(
        &out,
        1,
        &[
            "early.txt:2 holds: seq=0",
            &format!(
                "early.txt:4 FAILED: rewritten: record seq=3 has hash {rewritten_hash}, the checkpoint says {head_hash}"
            ),
        ],
    );
    db.close().await;
}

#[tokio::test]
async fn audit_checkpoints_catch_truncation_and_rewriting_on_sqlite() {
    let dir = tempdir();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    checkpoint_cycle(&url, "RS256").await;
}

#[tokio::test]
async fn audit_checkpoints_catch_truncation_and_rewriting_on_postgres() {
    let Some(pg) = PgDb::create().await else {
        return;
    };
    checkpoint_cycle(&pg.url, "EdDSA").await;
}

/// The checkpoint lines a server has logged so far, in order.
fn logged_checkpoints(server: &Server) -> Vec<String> {
    server
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            (v["message"] == "audit checkpoint")
                .then(|| v["checkpoint"].as_str().map(str::to_owned))?
        })
        .collect()
}

async fn wait_for_checkpoints(server: &Server, count: usize) -> Vec<String> {
    for _ in 0..200 {
        let found = logged_checkpoints(server);
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "fewer than {count} audit checkpoint line(s): {}",
        server.log()
    );
}

/// Verifies `token` as an outside party would: with the key its `kid` names in the JWKS.
fn verify_against_jwks(token: &str, jwks: &Value) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some(CHECKPOINT_TYPE));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let kid = header.kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == json!(kid))
        .unwrap_or_else(|| panic!("{kid} not in {jwks}"));
    assert_eq!(jwk["alg"], "EdDSA");
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

async fn server_checkpoint_cycle(url: &str) {
    let dir = tempdir();
    let d = dir.path();
    let env = [
        ("DATABASE_URL", url),
        ("RAMPART_JWT_ALG", "EdDSA"),
        ("RAMPART_COOKIE_SECURE", "false"),
        ("RAMPART_AUDIT_CHECKPOINT_INTERVAL", "1s"),
    ];
    let mut server = Server::start(d, &env, &[]).await;
    let jwks: Value = server
        .client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // At start: the (empty) chain's checkpoint, verifiable with the JWKS alone.
    let first = wait_for_checkpoints(&server, 1).await;
    let claims = verify_against_jwks(&first[0], &jwks);
    assert_eq!(
        (&claims["seq"], &claims["hash"]),
        (&json!(0), &json!(GENESIS_HASH))
    );

    // The chain grows (a registration is audited): the next interval logs its head.
    let r = server
        .client
        .post(server.url("/api/v1/auth/register"))
        .json(&json!({"email": "cp@example.org", "password": "checkpoint passphrase 4d2a", "displayName": "Cp"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let db = Db::connect(url, 2).await.unwrap();
    let (seq, hash) = rampart_store::audit::head(&db).await.unwrap().unwrap();
    db.close().await;
    assert_eq!(seq, 1);
    let logged = wait_for_checkpoints(&server, 2).await;
    assert_eq!(logged.len(), 2, "one line per growth: {logged:?}");
    let claims = verify_against_jwks(&logged[1], &jwks);
    assert_eq!(
        (&claims["seq"], &claims["hash"]),
        (&json!(seq), &json!(hash))
    );

    // Intervals in which the chain did not grow log nothing.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(logged_checkpoints(&server), logged);

    // The logged lines are what `audit verify --checkpoint` takes.
    let file = write(d.join("from-log.txt"), logged.join("\n"));
    let out = verify_with(d, &env, &[&file]).await;
    assert_exit(&out, 0, &["2 checkpoint(s) hold"]);

    // The job stops with the server.
    assert!(server.stop_with("TERM").await.success());
    let log = server.log();
    let done = log.find("shutdown complete").unwrap();
    assert!(!log[done..].contains("audit checkpoint"), "{log}");
}

#[tokio::test]
async fn server_logs_audit_checkpoints_verifiable_with_its_jwks_on_sqlite() {
    let dir = tempdir();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    server_checkpoint_cycle(&url).await;
}

#[tokio::test]
async fn server_logs_audit_checkpoints_verifiable_with_its_jwks_on_postgres() {
    let Some(pg) = PgDb::create().await else {
        return;
    };
    server_checkpoint_cycle(&pg.url).await;
}
