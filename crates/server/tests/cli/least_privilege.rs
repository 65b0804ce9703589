//! The deployment guide's least-privilege PostgreSQL setup, followed to the letter on a
//! fresh database: an owner role runs `rampart migrate`, `docs/sql/grant-dml-role.sql` (the
//! very file the guide tells operators to run, through `psql` as it says) gives a second
//! role rows and nothing else, and a production `rampart serve` runs as that role. The
//! serving role cannot switch the audit trail's triggers off, change or remove its records,
//! or change the schema; the owner could (which is why it must not serve).

use reqwest::Url;
use sqlx::{Connection, PgConnection};

use crate::support::{
    PgDb, Server, borrow, login, path_str, register, run, run_with_stdin, status_and_body, tempdir,
};

const PASSWORD: &str = "least privilege passphrase 7";
const DATA_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn grant_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/sql/grant-dml-role.sql")
}

/// Two cluster-wide roles of this test's own, dropped after the database that mentions
/// them (declare the guard before the [`PgDb`], so it is dropped after it).
struct Roles {
    admin: String,
    names: Vec<String>,
}

impl Drop for Roles {
    fn drop(&mut self) {
        let (admin, names) = (self.admin.clone(), self.names.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    for name in names {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP ROLE IF EXISTS {name}"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                }
            });
        })
        .join();
    }
}

fn as_role(url: &str, role: &str) -> String {
    let mut url = Url::parse(url).unwrap();
    url.set_username(role).unwrap();
    url.set_password(None).unwrap();
    url.to_string()
}

/// The error PostgreSQL answers `sql` with, run as whoever `conn` is.
async fn refused(conn: &mut PgConnection, sql: &'static str) -> String {
    match sqlx::raw_sql(sql).execute(&mut *conn).await {
        Ok(done) => panic!("`{sql}` was allowed ({} rows)", done.rows_affected()),
        Err(e) => e.to_string(),
    }
}

fn psql_present() -> bool {
    let found = std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "psql is needed in CI (the guide runs its grant script with it)"
        );
        eprintln!("notice: psql missing, skipping the least-privilege test");
    }
    found
}

#[tokio::test]
async fn serve_runs_as_the_guides_dml_role_which_cannot_rewrite_the_audit_trail() {
    if !psql_present() {
        return;
    }
    let Ok(admin) = std::env::var("TEST_POSTGRES_URL") else {
        // PgDb::create decides between skipping and failing.
        assert!(PgDb::create().await.is_none());
        return;
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (owner, app) = (
        format!("rampart_owner_{suffix}"),
        format!("rampart_app_{suffix}"),
    );
    let _roles = Roles {
        admin: admin.clone(),
        names: vec![app.clone(), owner.clone()],
    };
    let pg = PgDb::create().await.unwrap();
    let db_name = Url::parse(&pg.url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();

    // What the guide asks of a database administrator: two login roles, the database
    // owned by the first (so it owns the schema).
    let mut superuser = PgConnection::connect(&admin).await.unwrap();
    for sql in [
        format!("CREATE ROLE {owner} LOGIN"),
        format!("CREATE ROLE {app} LOGIN"),
        format!("ALTER DATABASE {db_name} OWNER TO {owner}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut superuser)
            .await
            .unwrap();
    }
    superuser.close().await.unwrap();
    let (owner_url, app_url) = (as_role(&pg.url, &owner), as_role(&pg.url, &app));

    // A production environment (loopback database, so no TLS needed).
    let dir = tempdir();
    let keys = dir.path().join("keys");
    let out = run(
        dir.path(),
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
    let env_as = |database_url: &str| -> Vec<(String, String)> {
        [
            ("RAMPART_ENV", "production"),
            ("RAMPART_JWT_KEYS_DIR", &path_str(&keys)),
            ("RAMPART_JWT_ALG", "EdDSA"),
            ("RAMPART_ALLOWED_ORIGINS", "https://app.example"),
            ("RAMPART_DATA_KEY", DATA_KEY),
            ("RAMPART_SMTP_URL", "smtps://mailer:pw@mail.example:465"),
            ("RAMPART_PUBLIC_URL", "https://api.example"),
            ("DATABASE_URL", database_url),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    };
    let (owner_env, app_env) = (env_as(&owner_url), env_as(&app_url));

    // 1. The owner migrates.
    let out = run(dir.path(), &borrow(&owner_env), &["migrate"]).await;
    assert!(out.status.success(), "migrate as the owner: {}", out.stderr);

    // 2. The owner runs the guide's grant script, exactly as the guide shows.
    let psql = std::process::Command::new("psql")
        .arg(&owner_url)
        .args([
            "-X",
            "-q",
            "-v",
            &format!("owner={owner}"),
            "-v",
            &format!("app={app}"),
        ])
        .arg("-f")
        .arg(grant_script())
        .output()
        .unwrap();
    assert!(
        psql.status.success(),
        "the grant script failed: {}",
        String::from_utf8_lossy(&psql.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&psql.stderr), "", "no warnings");

    // 3. Production serves as the DML role: a migrated schema is checked, not touched.
    let mut server = Server::start(dir.path(), &borrow(&app_env), &["serve"]).await;
    let (status, body) = status_and_body(
        server
            .client
            .get(server.url("/health/ready"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &body["checks"]["database"]),
        (200, &"ok".into()),
        "{body}"
    );

    let out = run_with_stdin(
        dir.path(),
        &borrow(&app_env),
        &["admin", "create", "--email", "root@example.org"],
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert!(
        out.status.success(),
        "admin create as the DML role: {}",
        out.stderr
    );
    register(&server, "someone@example.org", PASSWORD).await;
    login(&server, "someone@example.org", PASSWORD).await;
    let root = login(&server, "root@example.org", PASSWORD).await;
    let (status, events) = status_and_body(
        server
            .client
            .get(server.url("/api/v1/audit/events"))
            .bearer_auth(&root.access)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{events}");
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in ["auth.register", "auth.login_succeeded"] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
    let out = run(dir.path(), &borrow(&app_env), &["audit", "verify"]).await;
    assert!(
        out.status.success(),
        "audit verify as the DML role: {}",
        out.stderr
    );

    // 4. What the serving role must not do.
    let mut as_app = PgConnection::connect(&app_url).await.unwrap();
    for (sql, expected) in [
        (
            "ALTER TABLE audit_events DISABLE TRIGGER USER",
            "must be owner of table audit_events",
        ),
        (
            "UPDATE audit_events SET action = 'auth.nothing_happened'",
            "permission denied for table audit_events",
        ),
        (
            "DELETE FROM audit_events",
            "permission denied for table audit_events",
        ),
        (
            "TRUNCATE audit_events",
            "permission denied for table audit_events",
        ),
        (
            "DROP TABLE audit_events",
            "must be owner of table audit_events",
        ),
        (
            "CREATE TABLE backdoor (x INT)",
            "permission denied for schema public",
        ),
        (
            "DELETE FROM _sqlx_migrations",
            "permission denied for table _sqlx_migrations",
        ),
    ] {
        let error = refused(&mut as_app, sql).await;
        assert!(error.contains(expected), "`{sql}` as the DML role: {error}");
    }
    as_app.close().await.unwrap();

    // The owner could: the reason it must never be the role that serves.
    let mut as_owner = PgConnection::connect(&owner_url).await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_events")
        .fetch_one(&mut as_owner)
        .await
        .unwrap();
    let mut tx = as_owner.begin().await.unwrap();
    sqlx::raw_sql("ALTER TABLE audit_events DISABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .unwrap();
    let rewritten = sqlx::raw_sql("UPDATE audit_events SET action = 'auth.nothing_happened'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(rewritten.rows_affected(), u64::try_from(count).unwrap());
    tx.rollback().await.unwrap();

    // Nothing above touched the trail.
    let out = run(dir.path(), &borrow(&app_env), &["audit", "verify"]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let status = server.stop_with("TERM").await;
    assert!(status.success(), "{}", server.log());

    // 5. A pending migration: serve as the DML role refuses clearly, without trying DDL.
    sqlx::raw_sql(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&mut as_owner)
    .await
    .unwrap();
    as_owner.close().await.unwrap();
    let mut pending_env = app_env.clone();
    pending_env.push(("RAMPART_BIND".to_owned(), "127.0.0.1:0".to_owned()));
    let out = run(dir.path(), &borrow(&pending_env), &["serve"]).await;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("pending migration") && out.stderr.contains("rampart migrate"),
        "{}",
        out.stderr
    );
}
