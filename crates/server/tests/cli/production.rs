//! `RAMPART_ENV=production` refuses to start (exit 2, one stderr line per problem naming
//! its variable) before binding a port or writing a file; a complete configuration starts.

use crate::support::{Server, borrow, path_str, run, run_with_stdin, tempdir};

const DATA_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[tokio::test]
async fn production_with_nothing_configured_names_every_problem() {
    let dir = tempdir();
    let out = run(
        dir.path(),
        &[
            ("RAMPART_ENV", "production"),
            ("RAMPART_BIND", "127.0.0.1:0"),
        ],
        &["serve"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    for var in [
        "RAMPART_JWT_KEYS_DIR",
        "RAMPART_ALLOWED_ORIGINS",
        "RAMPART_DATA_KEY",
        "RAMPART_SMTP_URL",
        "RAMPART_PUBLIC_URL",
    ] {
        assert!(
            out.stderr.lines().any(|l| l.starts_with(var)),
            "{var} not named on a line of its own: {}",
            out.stderr
        );
    }
    // Nothing was generated or created: no keys, no database.
    assert!(!dir.path().join("data").exists());
    // The default command is `serve` too.
    let out = run(dir.path(), &[("RAMPART_ENV", "production")], &[]).await;
    assert_eq!(out.status.code(), Some(2));
}

/// A working production environment: keys made beforehand, migrations applied.
async fn complete_env(dir: &std::path::Path) -> Vec<(String, String)> {
    let keys = dir.join("keys");
    let out = run(
        dir,
        &[],
        &[
            "keys",
            "generate",
            "--dir",
            &path_str(&keys),
            "--alg",
            "EdDSA",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
    let db = format!("sqlite://{}", dir.join("prod.db").display());
    let env: Vec<(String, String)> = [
        ("RAMPART_ENV", "production"),
        ("RAMPART_JWT_KEYS_DIR", keys.to_str().unwrap()),
        ("RAMPART_JWT_ALG", "EdDSA"),
        ("RAMPART_ALLOWED_ORIGINS", "https://app.example"),
        ("RAMPART_DATA_KEY", DATA_KEY),
        ("RAMPART_SMTP_URL", "smtps://mailer:pw@mail.example:465"),
        ("RAMPART_PUBLIC_URL", "https://api.example"),
        ("DATABASE_URL", db.as_str()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    env
}

#[tokio::test]
async fn each_production_rule_refuses_on_its_own() {
    let dir = tempdir();
    let env = complete_env(dir.path()).await;
    let cases: &[(&str, Option<&str>)] = &[
        ("RAMPART_JWT_KEYS_DIR", Some("/nonexistent/keys")),
        ("RAMPART_ALLOWED_ORIGINS", None),
        ("RAMPART_ALLOWED_ORIGINS", Some("*")),
        ("RAMPART_DATA_KEY", None),
        ("RAMPART_SMTP_URL", None),
        ("RAMPART_SMTP_URL", Some("smtp://mail.example:25")),
        ("RAMPART_COOKIE_SECURE", Some("false")),
        ("RAMPART_PUBLIC_URL", Some("http://api.example")),
        ("RAMPART_PUBLIC_URL", None),
        (
            "DATABASE_URL",
            Some("postgres://app:secretpw@db.example:5432/rampart?sslmode=require"),
        ),
        ("RAMPART_RATE_LIMIT_PER_MINUT", Some("100")),
        // Unset: never silently a fresh local SQLite file.
        ("DATABASE_URL", None),
        // The floors of protections (contract §9).
        ("RAMPART_ARGON2_MEMORY_KIB", Some("7167")),
        ("RAMPART_ARGON2_ITERATIONS", Some("1")),
        ("RAMPART_LOCKOUT_SECONDS", Some("59")),
        ("RAMPART_LOGIN_MAX_FAILURES", Some("101")),
        ("RAMPART_TRUSTED_PROXIES", Some("0.0.0.0/0")),
        ("RAMPART_ACCESS_TOKEN_TTL", Some("2h")),
    ];
    for (var, value) in cases {
        let mut case: Vec<(String, String)> =
            env.iter().filter(|(k, _)| k != var).cloned().collect();
        if let Some(v) = value {
            case.push(((*var).to_owned(), (*v).to_owned()));
        }
        let out = run(dir.path(), &borrow(&case), &["serve"]).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{var}={value:?}: {}",
            out.stderr
        );
        let problems: Vec<&str> = out.stderr.lines().skip(1).collect();
        assert_eq!(problems.len(), 1, "{var}={value:?}: {}", out.stderr);
        assert!(problems[0].starts_with(var), "{var}: {}", out.stderr);
        assert!(
            !out.stderr.contains("secretpw"),
            "secret echoed: {}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn complete_production_configuration_starts_hardened() {
    let dir = tempdir();
    let env = complete_env(dir.path()).await;
    // Production never migrates by itself: pending migrations refuse the start.
    let out = run(dir.path(), &borrow(&env), &["serve"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("rampart migrate"), "{}", out.stderr);
    let out = run(dir.path(), &borrow(&env), &["migrate"]).await;
    assert!(out.status.success(), "{}", out.stderr);

    let mut server = Server::start(dir.path(), &borrow(&env), &["serve"]).await;
    let r = server
        .client
        .get(server.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    for path in ["/docs/", "/openapi.json"] {
        let r = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} must be off in production");
    }
    assert!(server.stop_with("TERM").await.success());

    // RAMPART_DOCS=true turns the docs back on.
    let mut with_docs = env.clone();
    with_docs.push(("RAMPART_DOCS".into(), "true".into()));
    let mut server = Server::start(dir.path(), &borrow(&with_docs), &["serve"]).await;
    let r = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(server.stop_with("TERM").await.success());
}

#[tokio::test]
async fn bad_values_are_refused_in_development_too() {
    let dir = tempdir();
    let out = run(
        dir.path(),
        &[
            ("RAMPART_RATE_LIMIT_PER_MINUTE", "lots"),
            ("RAMPART_ACCESS_TOKEN_TTL", "15 minutes"),
        ],
        &["serve"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("RAMPART_RATE_LIMIT_PER_MINUTE"));
    assert!(out.stderr.contains("RAMPART_ACCESS_TOKEN_TTL"));
    assert!(!dir.path().join("data").exists());
}

/// Contract §9: every problem in one run. A malformed data key used to stop at parsing and
/// hide the production rules: now it is one line among seven, one per problem.
#[tokio::test]
async fn a_malformed_value_hides_no_production_rule() {
    let dir = tempdir();
    let env = complete_env(dir.path()).await;
    let broken = [
        ("RAMPART_DATA_KEY", "c2hvcnQ="),
        ("RAMPART_ARGON2_MEMORY_KIB", "8"),
        ("RAMPART_LOCKOUT_SECONDS", "1"),
        ("RAMPART_LOGIN_MAX_FAILURES", "1000"),
        ("RAMPART_TRUSTED_PROXIES", "0.0.0.0/0"),
        ("RAMPART_ACCESS_TOKEN_TTL", "24h"),
        ("RAMPART_COOKIE_SECURE", "false"),
    ];
    let mut case: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !broken.iter().any(|(b, _)| b == k))
        .cloned()
        .collect();
    case.extend(
        broken
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let out = run(dir.path(), &borrow(&case), &["serve"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let problems: Vec<&str> = out.stderr.lines().skip(1).collect();
    let named: Vec<&str> = problems
        .iter()
        .map(|l| l.split_once(':').map_or(*l, |(name, _)| name))
        .collect();
    let mut expected: Vec<&str> = broken.iter().map(|(k, _)| *k).collect();
    let mut got = named.clone();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, expected, "{}", out.stderr);
    assert_eq!(
        problems[0],
        "RAMPART_DATA_KEY: must be 32 random bytes, base64-encoded"
    );
}

/// The CLI commands that open the database apply the production database rules: a remote
/// PostgreSQL without certificate checks, or no DATABASE_URL at all, is refused before any
/// connection, exit 2, one line naming DATABASE_URL.
#[tokio::test]
async fn database_commands_apply_the_production_database_rules() {
    let dir = tempdir();
    let env = complete_env(dir.path()).await;
    let without_db: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "DATABASE_URL")
        .cloned()
        .collect();
    let mut insecure = without_db.clone();
    insecure.push((
        "DATABASE_URL".into(),
        "postgres://app:secretpw@db.example:5432/rampart?sslmode=verify-full&sslmode=disable"
            .into(),
    ));
    let commands: &[&[&str]] = &[
        &["migrate"],
        &["purge"],
        &["audit", "verify"],
        &["keys", "rotate-data"],
        &["admin", "create", "--email", "root@example.org"],
    ];
    for env in [&without_db, &insecure] {
        for args in commands {
            let out =
                run_with_stdin(dir.path(), &borrow(env), args, "a long admin passphrase\n").await;
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
            let problems: Vec<&str> = out.stderr.lines().skip(1).collect();
            assert_eq!(problems.len(), 1, "{args:?}: {}", out.stderr);
            assert!(
                problems[0].starts_with("DATABASE_URL: "),
                "{args:?}: {}",
                out.stderr
            );
            assert!(
                !out.stderr.contains("secretpw"),
                "secret echoed: {}",
                out.stderr
            );
        }
    }
    assert!(!dir.path().join("data").exists(), "nothing was created");
    // Key commands do not touch the database: not refused.
    let out = run(
        dir.path(),
        &borrow(&without_db),
        &[
            "keys",
            "generate",
            "--dir",
            &path_str(&dir.path().join("more-keys")),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
}

/// `active` naming a key file that is gone: the refusal says how to recover (restore it,
/// or rotate), not `keys generate`, which would leave `active` as it is.
#[tokio::test]
async fn a_lost_active_key_names_the_way_back() {
    let dir = tempdir();
    let env = complete_env(dir.path()).await;
    let keys = dir.path().join("keys");
    let kid = std::fs::read_to_string(keys.join("active")).unwrap();
    std::fs::remove_file(keys.join(format!("{}.pem", kid.trim()))).unwrap();
    let out = run(dir.path(), &borrow(&env), &["serve"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let problems: Vec<&str> = out.stderr.lines().skip(1).collect();
    assert_eq!(problems.len(), 1, "{}", out.stderr);
    assert!(
        problems[0].starts_with("RAMPART_JWT_KEYS_DIR: "),
        "{}",
        out.stderr
    );
    assert!(problems[0].contains("restore that file"), "{}", out.stderr);
    assert!(
        problems[0].contains(&format!("rampart keys rotate --dir {}", keys.display())),
        "{}",
        out.stderr
    );
}
