//! `RAMPART_ENV=production` refuses to start (exit 2, one stderr line per problem naming
//! its variable) before binding a port or writing a file; a complete configuration starts.

use crate::support::{Server, borrow, path_str, run, tempdir};

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
