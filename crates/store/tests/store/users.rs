//! Users: registration with its event or not at all, credentials for every account state,
//! the user view (also through a session in one query), and changes with their events.
//! Also holds the fixtures the sessions and lockout tests share.

use rampart_core::Error;
use rampart_core::audit::{AuditRecord, NewAuditEvent, Outcome, VerifyOutcome};
use rampart_core::users::{DisplayName, Email, User, UserStatus};
use rampart_store::Db;
use rampart_store::audit::{self, AuditFilter};
use rampart_store::sessions::{self, NewRefreshToken, NewSession};
use rampart_store::users::{self, ADMIN_ROLE_ID, NewUser, USER_ROLE_ID};
use uuid::Uuid;

backend_tests!(
    migrated: seeded_roles_have_their_fixed_ids,
    create_then_get_round_trips,
    duplicate_email_in_another_case_conflicts_and_writes_nothing,
    find_credentials_covers_deleted_and_disabled_users,
    get_for_session_answers_only_for_a_live_session_of_an_active_user,
    update_display_name_appends_its_event,
    change_password_revokes_every_live_session,
    set_password_hash_only_replaces_the_verified_hash,
);

pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// An arbitrary "now" for the tests' fake clock.
pub const T0: i64 = 1_800_000_000_000;

pub fn event(action: &str) -> NewAuditEvent {
    NewAuditEvent::new(action, Outcome::Success)
}

/// Registers `email` with password hash `hash-of-<email>` at [`T0`].
pub async fn create_user(db: &Db, email: &str) -> User {
    let email = Email::parse(email, "email").unwrap();
    let name = DisplayName::parse("Test User", "displayName").unwrap();
    let hash = format!("hash-of-{}", email.normalized());
    let id = Uuid::now_v7();
    let new = NewUser {
        id,
        email: &email,
        display_name: &name,
        password_hash: &hash,
        now_ms: T0,
    };
    let audit = event("auth.register").with_actor(id);
    users::create(db, &new, &audit).await.unwrap()
}

/// Starts a session for `user_id` at `now_ms` lasting `max_age_ms`, with the refresh token
/// whose hash is `token_hash` (valid for 7 days, capped by the session).
pub async fn login(
    db: &Db,
    user_id: Uuid,
    token_hash: &str,
    now_ms: i64,
    max_age_ms: i64,
) -> rampart_core::users::Session {
    let epoch = i64s_for(db, SELECT_EPOCH, user_id).await[0].unwrap();
    let session = NewSession {
        id: Uuid::now_v7(),
        user_id,
        credential_epoch: epoch,
        now_ms,
        expires_at_ms: now_ms + max_age_ms,
        ip_address: Some("192.0.2.7".into()),
        user_agent: Some("test-agent".into()),
    };
    let refresh = refresh_token(token_hash, now_ms + 7 * DAY_MS);
    let audit = event("auth.login_succeeded").with_actor(user_id);
    sessions::create(db, &session, &refresh, None, &audit)
        .await
        .unwrap()
        .expect("the user is usable at its current epoch")
}

/// The user's credential epoch.
pub const SELECT_EPOCH: &str = "SELECT credential_epoch FROM users WHERE id = $1";

/// The credential epoch of `id` (0 for a missing user).
pub async fn epoch(db: &Db, id: Uuid) -> i64 {
    i64s_for(db, SELECT_EPOCH, id)
        .await
        .first()
        .copied()
        .flatten()
        .unwrap_or(0)
}

pub fn refresh_token(token_hash: &str, expires_at_ms: i64) -> NewRefreshToken {
    NewRefreshToken {
        id: Uuid::now_v7(),
        token_hash: token_hash.to_owned(),
        expires_at_ms,
    }
}

/// Runs `sql` with `$1` bound to `id` (hyphenated TEXT on SQLite, uuid on PostgreSQL).
pub async fn execute_for(db: &Db, sql: &'static str, id: Uuid) -> u64 {
    match db {
        Db::Sqlite(pool) => sqlx::query(sql)
            .bind(id.hyphenated().to_string())
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
        Db::Postgres(pool) => sqlx::query(sql)
            .bind(id)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
    }
}

/// The single BIGINT column of `sql`'s rows, with `$1` bound to `id` as in [`execute_for`].
pub async fn i64s_for(db: &Db, sql: &'static str, id: Uuid) -> Vec<Option<i64>> {
    match db {
        Db::Sqlite(pool) => sqlx::query_scalar(sql)
            .bind(id.hyphenated().to_string())
            .fetch_all(pool)
            .await
            .unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql)
            .bind(id)
            .fetch_all(pool)
            .await
            .unwrap(),
    }
}

/// The single BIGINT column of `sql`'s rows, with `$1` bound to the text `arg`.
pub async fn i64s_by_text(db: &Db, sql: &'static str, arg: &str) -> Vec<Option<i64>> {
    match db {
        Db::Sqlite(pool) => sqlx::query_scalar(sql)
            .bind(arg)
            .fetch_all(pool)
            .await
            .unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql)
            .bind(arg)
            .fetch_all(pool)
            .await
            .unwrap(),
    }
}

/// A single count with no parameters.
pub async fn count(db: &Db, sql: &'static str) -> i64 {
    match db {
        Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

/// Every audit event with `action`, newest first.
pub async fn events(db: &Db, action: &str) -> Vec<AuditRecord> {
    let filter = AuditFilter {
        action: Some(action.to_owned()),
        ..Default::default()
    };
    audit::list(db, &filter, 1_000, None).await.unwrap()
}

pub async fn all_events(db: &Db) -> Vec<AuditRecord> {
    audit::list(db, &AuditFilter::default(), 10_000, None)
        .await
        .unwrap()
}

pub async fn assert_chain_intact(db: &Db) {
    let outcome = audit::verify(db).await.unwrap();
    assert!(
        matches!(outcome, VerifyOutcome::Intact { .. }),
        "{outcome:?}"
    );
}

pub const DISABLE_USER: &str = "UPDATE users SET status = 'disabled' WHERE id = $1";
pub const DELETE_USER: &str = "UPDATE users SET deleted_at_ms = 1 WHERE id = $1";

async fn seeded_roles_have_their_fixed_ids(db: Db) {
    let built_in = |id| {
        let db = db.clone();
        async move {
            i64s_for(
                &db,
                "SELECT COUNT(*) FROM roles WHERE id = $1 AND built_in",
                id,
            )
            .await
        }
    };
    assert_eq!(built_in(ADMIN_ROLE_ID).await, vec![Some(1)]);
    assert_eq!(built_in(USER_ROLE_ID).await, vec![Some(1)]);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM roles WHERE name IN ('admin', 'user')"
        )
        .await,
        2
    );
}

async fn create_then_get_round_trips(db: Db) {
    let email = Email::parse("  Ada.Lovelace@Example.ORG ", "email").unwrap();
    let name = DisplayName::parse("Ada Lovelace", "displayName").unwrap();
    let id = Uuid::now_v7();
    let new = NewUser {
        id,
        email: &email,
        display_name: &name,
        password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA",
        now_ms: T0,
    };
    let audit = event("auth.register")
        .with_actor(id)
        .with_target("user", id.to_string());
    let created = users::create(&db, &new, &audit).await.unwrap();

    let expected = User {
        id,
        email: "Ada.Lovelace@Example.ORG".into(),
        display_name: "Ada Lovelace".into(),
        status: UserStatus::Active,
        roles: vec!["user".into()],
        mfa_enabled: false,
        email_verified: false,
        created_at_ms: T0,
        updated_at_ms: T0,
    };
    assert_eq!(created, expected);
    assert_eq!(users::get(&db, id).await.unwrap(), Some(expected));
    assert_eq!(users::get(&db, Uuid::now_v7()).await.unwrap(), None);

    let credentials = users::find_credentials(&db, "ada.lovelace@example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(credentials.user_id, id);
    assert_eq!(
        credentials.password_hash.expose(),
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA"
    );
    assert!(!format!("{credentials:?}").contains("argon2"));

    let recorded = events(&db, "auth.register").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].actor_id, Some(id));
    assert_eq!(recorded[0].at_ms, T0);

    // Roles come back sorted by name, through both read paths.
    execute_for(
        &db,
        "INSERT INTO user_roles (user_id, role_id) \
         SELECT u.id, r.id FROM users u, roles r WHERE u.id = $1 AND r.name = 'admin'",
        id,
    )
    .await;
    let user = users::get(&db, id).await.unwrap().unwrap();
    assert_eq!(user.roles, vec!["admin".to_owned(), "user".to_owned()]);
    let session = login(&db, id, "h-roles", T0, DAY_MS).await;
    let via_session = users::get_for_session(&db, id, session.id, T0 + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(via_session, user);
}

async fn duplicate_email_in_another_case_conflicts_and_writes_nothing(db: Db) {
    let first = create_user(&db, "Grace@Example.org").await;

    let email = Email::parse("grace@EXAMPLE.ORG", "email").unwrap();
    let name = DisplayName::parse("Impostor", "displayName").unwrap();
    let new = NewUser {
        id: Uuid::now_v7(),
        email: &email,
        display_name: &name,
        password_hash: "other",
        now_ms: T0 + 1,
    };
    let err = users::create(&db, &new, &event("auth.register"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(message) if message == "email already registered"),
        "{err:?}"
    );

    assert_eq!(count(&db, "SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM user_roles").await, 1);
    assert_eq!(events(&db, "auth.register").await.len(), 1);
    assert_eq!(users::get(&db, new.id).await.unwrap(), None);
    assert_eq!(
        users::get(&db, first.id)
            .await
            .unwrap()
            .unwrap()
            .display_name,
        "Test User"
    );
    assert_chain_intact(&db).await;
}

async fn find_credentials_covers_deleted_and_disabled_users(db: Db) {
    let active = create_user(&db, "active@example.org").await;
    let disabled = create_user(&db, "disabled@example.org").await;
    let deleted = create_user(&db, "deleted@example.org").await;
    assert_eq!(execute_for(&db, DISABLE_USER, disabled.id).await, 1);
    assert_eq!(execute_for(&db, DELETE_USER, deleted.id).await, 1);

    let find = |email: &'static str| {
        let db = db.clone();
        async move { users::find_credentials(&db, email).await.unwrap() }
    };
    let a = find("active@example.org").await.unwrap();
    assert_eq!(
        (a.user_id, a.status, a.deleted, a.mfa_enabled),
        (active.id, UserStatus::Active, false, false)
    );
    assert_eq!(a.password_hash.expose(), "hash-of-active@example.org");
    let d = find("disabled@example.org").await.unwrap();
    assert_eq!(
        (d.user_id, d.status, d.deleted),
        (disabled.id, UserStatus::Disabled, false)
    );
    let x = find("deleted@example.org").await.unwrap();
    assert_eq!(
        (x.user_id, x.status, x.deleted),
        (deleted.id, UserStatus::Active, true)
    );
    assert!(find("nobody@example.org").await.is_none());
    // Lookup is by the normalised form only.
    assert!(find("Active@example.org").await.is_none());

    // A deleted user is gone from the user view; a disabled one is shown as disabled.
    assert_eq!(users::get(&db, deleted.id).await.unwrap(), None);
    assert_eq!(
        users::get(&db, disabled.id).await.unwrap().unwrap().status,
        UserStatus::Disabled
    );
}

async fn get_for_session_answers_only_for_a_live_session_of_an_active_user(db: Db) {
    let alice = create_user(&db, "alice@example.org").await;
    let bob = create_user(&db, "bob@example.org").await;
    let now = T0 + 1_000;

    let live = login(&db, alice.id, "h-live", T0, DAY_MS).await;
    let revoked = login(&db, alice.id, "h-revoked", T0, DAY_MS).await;
    let expired = login(&db, alice.id, "h-expired", T0, 1_000).await;
    let bobs = login(&db, bob.id, "h-bob", T0, DAY_MS).await;
    assert!(
        sessions::revoke(&db, revoked.id, alice.id, "logout", now, None)
            .await
            .unwrap()
    );

    let view = |user: Uuid, session: Uuid| {
        let db = db.clone();
        async move {
            users::get_for_session(&db, user, session, now)
                .await
                .unwrap()
        }
    };
    assert_eq!(view(alice.id, live.id).await, Some(alice.clone()));
    assert_eq!(view(alice.id, revoked.id).await, None);
    // expires_at_ms == now: the session has ended.
    assert_eq!(view(alice.id, expired.id).await, None);
    assert_eq!(view(alice.id, bobs.id).await, None);
    assert_eq!(view(bob.id, live.id).await, None);
    assert_eq!(view(alice.id, Uuid::now_v7()).await, None);
    assert_eq!(view(bob.id, bobs.id).await, Some(bob.clone()));

    execute_for(&db, DISABLE_USER, alice.id).await;
    assert_eq!(view(alice.id, live.id).await, None);
    execute_for(&db, DELETE_USER, bob.id).await;
    assert_eq!(view(bob.id, bobs.id).await, None);
}

async fn update_display_name_appends_its_event(db: Db) {
    let user = create_user(&db, "rename@example.org").await;
    let name = DisplayName::parse("Renamed Person", "displayName").unwrap();
    let audit = event("user.updated")
        .with_actor(user.id)
        .with_target("user", user.id.to_string())
        .with_details(serde_json::json!({"fields": ["displayName"]}));

    let updated = users::update_display_name(&db, user.id, &name, T0 + 5, &audit)
        .await
        .unwrap();
    assert_eq!(updated.display_name, "Renamed Person");
    assert_eq!((updated.created_at_ms, updated.updated_at_ms), (T0, T0 + 5));
    assert_eq!(updated.roles, vec!["user".to_owned()]);
    assert_eq!(users::get(&db, user.id).await.unwrap(), Some(updated));

    let recorded = events(&db, "user.updated").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (
            recorded[0].actor_id,
            recorded[0].target_id.clone(),
            recorded[0].at_ms
        ),
        (Some(user.id), Some(user.id.to_string()), T0 + 5)
    );

    // Missing or deleted: NotFound, and no event.
    let missing = users::update_display_name(&db, Uuid::now_v7(), &name, T0 + 6, &audit).await;
    assert!(matches!(missing, Err(Error::NotFound)), "{missing:?}");
    execute_for(&db, DELETE_USER, user.id).await;
    let deleted = users::update_display_name(&db, user.id, &name, T0 + 7, &audit).await;
    assert!(matches!(deleted, Err(Error::NotFound)), "{deleted:?}");
    assert_eq!(events(&db, "user.updated").await.len(), 1);
}

async fn change_password_revokes_every_live_session(db: Db) {
    let user = create_user(&db, "changer@example.org").await;
    let other = create_user(&db, "other@example.org").await;
    let now = T0 + 10_000;
    let first = login(&db, user.id, "h-1", T0, DAY_MS).await;
    let second = login(&db, user.id, "h-2", T0 + 1, DAY_MS).await;
    let ended = login(&db, user.id, "h-3", T0, 10).await;
    let others = login(&db, other.id, "h-4", T0, DAY_MS).await;

    let audit = event("auth.password_changed").with_actor(user.id);
    assert_eq!(i64s_for(&db, SELECT_EPOCH, user.id).await, vec![Some(0)]);
    let revoked = users::change_password(
        &db,
        user.id,
        "hash-of-changer@example.org",
        "new-hash",
        now,
        &audit,
    )
    .await
    .unwrap();
    // The credential epoch moved on: sessions made at the old one are dead.
    assert_eq!(i64s_for(&db, SELECT_EPOCH, user.id).await, vec![Some(1)]);
    let mut expected = vec![first.id, second.id];
    expected.sort();
    assert_eq!(revoked, expected);

    assert!(
        sessions::list_live(&db, user.id, now)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        i64s_for(
            &db,
            "SELECT COUNT(*) FROM sessions WHERE user_id = $1 \
             AND revoked_reason = 'password_changed'",
            user.id
        )
        .await,
        vec![Some(2)]
    );
    // The already-ended session is left as it was; other users are untouched.
    assert_eq!(
        i64s_for(
            &db,
            "SELECT revoked_at_ms FROM sessions WHERE id = $1",
            ended.id
        )
        .await,
        vec![None]
    );
    assert_eq!(
        sessions::live_user(&db, others.id, now).await.unwrap(),
        Some(other.id)
    );
    assert_eq!(
        users::find_credentials(&db, "changer@example.org")
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .expose(),
        "new-hash"
    );
    assert_eq!(
        users::get(&db, user.id)
            .await
            .unwrap()
            .unwrap()
            .updated_at_ms,
        now
    );
    let recorded = events(&db, "auth.password_changed").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].actor_id, Some(user.id));

    // Compare-and-set: a second change verified against the old hash writes nothing.
    let raced = users::change_password(
        &db,
        user.id,
        "hash-of-changer@example.org",
        "raced-hash",
        now,
        &audit,
    )
    .await;
    assert!(
        matches!(raced, Err(Error::ReauthenticationFailed)),
        "{raced:?}"
    );
    assert_eq!(i64s_for(&db, SELECT_EPOCH, user.id).await, vec![Some(1)]);
    let missing = users::change_password(&db, Uuid::now_v7(), "x", "y", now, &audit).await;
    assert!(
        matches!(missing, Err(Error::ReauthenticationFailed)),
        "{missing:?}"
    );
    assert_eq!(events(&db, "auth.password_changed").await.len(), 1);
    assert_chain_intact(&db).await;
}

async fn set_password_hash_only_replaces_the_verified_hash(db: Db) {
    let user = create_user(&db, "rehash@example.org").await;
    let before = all_events(&db).await.len();
    let stored = || {
        let db = db.clone();
        async move {
            users::find_credentials(&db, "rehash@example.org")
                .await
                .unwrap()
                .unwrap()
                .password_hash
                .expose()
                .clone()
        }
    };

    users::set_password_hash(&db, user.id, "hash-of-rehash@example.org", "rehashed")
        .await
        .unwrap();
    assert_eq!(stored().await, "rehashed");

    // A rehash computed from a hash that has since changed (a password change won the
    // race) writes nothing.
    users::set_password_hash(&db, user.id, "hash-of-rehash@example.org", "stale")
        .await
        .unwrap();
    assert_eq!(stored().await, "rehashed");

    // Not a user-visible change: no event, updated_at_ms unchanged, and the same password
    // under new parameters ends no session (the credential epoch stays).
    assert_eq!(all_events(&db).await.len(), before);
    assert_eq!(i64s_for(&db, SELECT_EPOCH, user.id).await, vec![Some(0)]);
    assert_eq!(
        users::get(&db, user.id)
            .await
            .unwrap()
            .unwrap()
            .updated_at_ms,
        T0
    );
}
