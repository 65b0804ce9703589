//! The one mailed-token mechanism (`store::tokens`, contract §4 Recovery and §11): purposes
//! never cross, "newest only" is per purpose, and `admin create` makes verified accounts
//! where registration does not.

use rampart_core::users::{DisplayName, Email};
use rampart_store::tokens::{self, NewToken, Purpose};
use rampart_store::users::{self, NewUser};
use rampart_store::{Db, lifecycle};
use uuid::Uuid;

use crate::users::{T0, create_user, event};

backend_tests!(
    migrated: purposes_never_cross_and_newest_only_is_per_purpose,
    verification_needs_the_address_it_was_sent_to,
    admin_create_makes_verified_accounts,
);

mod before_0009 {
    use super::migration_0009_verifies_only_accounts_made_by_admin_create;
    backend_tests!(empty: migration_0009_verifies_only_accounts_made_by_admin_create);
}

async fn store(db: &Db, user_id: Uuid, purpose: Purpose, hash: &str, email: Option<&str>) {
    tokens::create(
        db,
        &NewToken {
            id: Uuid::now_v7(),
            user_id,
            purpose,
            token_hash: hash,
            email,
            session_id: None,
            now_ms: T0,
            expires_at_ms: T0 + 1000,
        },
        None,
    )
    .await
    .unwrap();
}

async fn purposes_never_cross_and_newest_only_is_per_purpose(db: Db) {
    let user = create_user(&db, "cross@example.org").await;
    store(&db, user.id, Purpose::PasswordReset, "reset", None).await;
    store(
        &db,
        user.id,
        Purpose::EmailVerify,
        "verify",
        Some(&user.email),
    )
    .await;
    // A verification token does not supersede the reset token, and neither works for the
    // other's purpose.
    let peek = |purpose, hash: &'static str| {
        let db = db.clone();
        async move { tokens::peek(&db, purpose, hash, T0 + 1).await.unwrap() }
    };
    assert!(peek(Purpose::PasswordReset, "reset").await.is_some());
    assert!(peek(Purpose::EmailVerify, "verify").await.is_some());
    assert!(peek(Purpose::EmailVerify, "reset").await.is_none());
    assert!(peek(Purpose::PasswordReset, "verify").await.is_none());
    assert!(peek(Purpose::EmailChange, "verify").await.is_none());
    // A newer verification token supersedes the older one only.
    store(
        &db,
        user.id,
        Purpose::EmailVerify,
        "verify2",
        Some(&user.email),
    )
    .await;
    assert!(peek(Purpose::EmailVerify, "verify").await.is_none());
    assert!(peek(Purpose::EmailVerify, "verify2").await.is_some());
    assert!(peek(Purpose::PasswordReset, "reset").await.is_some());
    // Expiry.
    assert!(
        tokens::peek(&db, Purpose::EmailVerify, "verify2", T0 + 1000)
            .await
            .unwrap()
            .is_none()
    );
}

async fn verification_needs_the_address_it_was_sent_to(db: Db) {
    let user = create_user(&db, "addr@example.org").await;
    store(
        &db,
        user.id,
        Purpose::EmailVerify,
        "stale",
        Some("old@example.org"),
    )
    .await;
    let verified = lifecycle::verify_email(&db, "stale", T0 + 1, &event("auth.email_verified"))
        .await
        .unwrap();
    assert_eq!(verified, None, "another address");
    assert!(
        !users::get(&db, user.id)
            .await
            .unwrap()
            .unwrap()
            .email_verified
    );
    // Refused, so the token was not used up: it is still there (and still refused).
    assert!(
        tokens::peek(&db, Purpose::EmailVerify, "stale", T0 + 1)
            .await
            .unwrap()
            .is_some()
    );
    store(
        &db,
        user.id,
        Purpose::EmailVerify,
        "fresh",
        Some("ADDR@example.org"),
    )
    .await;
    let verified = lifecycle::verify_email(&db, "fresh", T0 + 1, &event("auth.email_verified"))
        .await
        .unwrap();
    assert_eq!(verified, Some(user.id));
    assert!(
        users::get(&db, user.id)
            .await
            .unwrap()
            .unwrap()
            .email_verified
    );
    let again = lifecycle::verify_email(&db, "fresh", T0 + 2, &event("auth.email_verified"))
        .await
        .unwrap();
    assert_eq!(again, None, "single use");
}

async fn admin_create_makes_verified_accounts(db: Db) {
    let registered = create_user(&db, "member@example.org").await;
    assert!(!registered.email_verified);
    let email = Email::parse("boss@example.org", "email").unwrap();
    let name = DisplayName::parse("Boss", "displayName").unwrap();
    let admin = users::create_admin(
        &db,
        &NewUser {
            id: Uuid::now_v7(),
            email: &email,
            display_name: &name,
            password_hash: "hash",
            now_ms: T0,
        },
        &event("user.roles_changed"),
    )
    .await
    .unwrap();
    assert!(admin.email_verified);
    assert!(
        !users::get(&db, registered.id)
            .await
            .unwrap()
            .unwrap()
            .email_verified
    );
}

/// Migration 0009 on a database at 0008: only the accounts `admin create` made (its audit
/// event: actor = target = the user, `via: cli`, `created: true`) become verified; a
/// promoted account, an API role change and a plain registration stay unverified; an
/// outstanding reset token keeps working under the new table.
async fn migration_0009_verifies_only_accounts_made_by_admin_create(db: Db) {
    use rampart_core::audit::{NewAuditEvent, Outcome};
    let backend = match db.backend() {
        rampart_store::Backend::Sqlite => "sqlite",
        rampart_store::Backend::Postgres => "postgres",
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
    match &db {
        Db::Sqlite(pool) => migrator.run_to(8, pool).await.unwrap(),
        Db::Postgres(pool) => migrator.run_to(8, pool).await.unwrap(),
    }
    let (made, promoted, granted, member) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    const INSERT: &str = "INSERT INTO users (id, email, email_normalized, password_hash, \
         display_name, status, mfa_enabled, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $2, 'h', 'N', 'active', FALSE, 0, 0)";
    const PG_INSERT: &str = "INSERT INTO users (id, email, email_normalized, password_hash, \
         display_name, status, mfa_enabled, created_at_ms, updated_at_ms) \
         VALUES ($1::uuid, $2, $2, 'h', 'N', 'active', FALSE, 0, 0)";
    for (id, email) in [
        (made, "made@example.org"),
        (promoted, "promoted@example.org"),
        (granted, "granted@example.org"),
        (member, "member@example.org"),
    ] {
        match &db {
            Db::Sqlite(pool) => {
                sqlx::query(INSERT)
                    .bind(id.to_string())
                    .bind(email)
                    .execute(pool)
                    .await
                    .unwrap();
            }
            Db::Postgres(pool) => {
                sqlx::query(PG_INSERT)
                    .bind(id.to_string())
                    .bind(email)
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }
    }
    let roles_changed = |actor: Uuid, target: Uuid, details: serde_json::Value| {
        NewAuditEvent::new("user.roles_changed", Outcome::Success)
            .with_actor(actor)
            .with_target("user", target.to_string())
            .with_details(details)
    };
    for event in [
        roles_changed(
            made,
            made,
            serde_json::json!({"via": "cli", "created": true, "to": ["admin", "user"]}),
        ),
        roles_changed(
            promoted,
            promoted,
            serde_json::json!({"via": "cli", "created": false, "added": ["admin"], "passwordVerified": true}),
        ),
        // An API role change: the caller is the actor.
        roles_changed(
            made,
            granted,
            serde_json::json!({"from": ["user"], "to": ["admin", "user"], "via": "cli", "created": true}),
        ),
    ] {
        rampart_store::audit::record(&db, &event, T0).await.unwrap();
    }
    const INSERT_RESET: &str = "INSERT INTO password_resets \
         (id, user_id, token_hash, created_at_ms, expires_at_ms) VALUES ($1, $2, 'old-reset', 0, $3)";
    const PG_INSERT_RESET: &str = "INSERT INTO password_resets \
         (id, user_id, token_hash, created_at_ms, expires_at_ms) \
         VALUES ($1::uuid, $2::uuid, 'old-reset', 0, $3)";
    match &db {
        Db::Sqlite(pool) => {
            sqlx::query(INSERT_RESET)
                .bind(Uuid::now_v7().to_string())
                .bind(member.to_string())
                .bind(T0 + 1000)
                .execute(pool)
                .await
                .unwrap();
        }
        Db::Postgres(pool) => {
            sqlx::query(PG_INSERT_RESET)
                .bind(Uuid::now_v7().to_string())
                .bind(member.to_string())
                .bind(T0 + 1000)
                .execute(pool)
                .await
                .unwrap();
        }
    }
    db.migrate().await.unwrap();
    let verified = |id| {
        let db = db.clone();
        async move { users::get(&db, id).await.unwrap().unwrap().email_verified }
    };
    assert!(verified(made).await);
    assert!(!verified(promoted).await);
    assert!(!verified(granted).await);
    assert!(!verified(member).await);
    let reset = tokens::peek(&db, Purpose::PasswordReset, "old-reset", T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reset.user_id, member);
}
