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
        users::get(&db, registered.id)
            .await
            .unwrap()
            .unwrap()
            .email_verified
            == false
    );
}
