//! Password resets: only the newest token works, once (also under concurrent confirms),
//! until it expires and while its user is usable; a confirm sets the password, ends every
//! session, clears exactly the user's lockout keys and appends its event, or writes
//! nothing; a password change kills outstanding tokens.

use std::sync::Arc;

use rampart_store::lockout::{self, LockoutPolicy};
use rampart_store::mfa;
use rampart_store::{Db, resets, sessions, users};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::mfa::texts_for;
use crate::users::{
    DAY_MS, DELETE_USER, DISABLE_USER, T0, all_events, assert_chain_intact, create_user, event,
    events, execute_for, i64s_by_text, login,
};

backend_tests!(
    migrated: create_supersedes_older_tokens,
    confirm_resets_once_ends_sessions_and_clears_the_lockout,
    invalid_tokens_write_nothing,
    parallel_confirms_have_exactly_one_winner,
    change_password_invalidates_outstanding_tokens,
);

const TTL: i64 = 30 * 60 * 1000;

async fn request(db: &Db, user_id: Uuid, token_hash: &str, now_ms: i64) {
    let audit = event("auth.password_reset_requested")
        .with_actor(user_id)
        .with_target("user", user_id.to_string());
    resets::create(
        db,
        Uuid::now_v7(),
        user_id,
        token_hash,
        now_ms,
        now_ms + TTL,
        &audit,
    )
    .await
    .unwrap();
}

async fn confirm(db: &Db, token_hash: &str, now_ms: i64) -> Option<(Uuid, Vec<Uuid>)> {
    resets::confirm(
        db,
        token_hash,
        "new-hash",
        now_ms,
        &event("auth.password_reset_completed"),
    )
    .await
    .unwrap()
}

async fn password_hash(db: &Db, email: &str) -> String {
    users::find_credentials(db, email)
        .await
        .unwrap()
        .unwrap()
        .password_hash
        .expose()
        .clone()
}

async fn lockout_exists(db: &Db, key: &str) -> bool {
    i64s_by_text(db, "SELECT COUNT(*) FROM lockouts WHERE key = $1", key).await == vec![Some(1)]
}

async fn create_supersedes_older_tokens(db: Db) {
    let user = create_user(&db, "forgot@example.org").await;
    let other = create_user(&db, "other@example.org").await;
    request(&db, user.id, "r-1", T0).await;
    request(&db, other.id, "r-other", T0).await;
    assert_eq!(
        resets::peek(&db, "r-1", T0 + 1).await.unwrap(),
        Some(user.id)
    );

    request(&db, user.id, "r-2", T0 + 10).await;
    assert_eq!(resets::peek(&db, "r-1", T0 + 11).await.unwrap(), None);
    assert_eq!(
        resets::peek(&db, "r-2", T0 + 11).await.unwrap(),
        Some(user.id)
    );
    // Another user's token is untouched.
    assert_eq!(
        resets::peek(&db, "r-other", T0 + 11).await.unwrap(),
        Some(other.id)
    );
    assert_eq!(
        i64s_by_text(
            &db,
            "SELECT used_at_ms FROM user_tokens WHERE token_hash = $1",
            "r-1"
        )
        .await,
        vec![Some(T0 + 10)]
    );

    // The superseded token does nothing.
    let before = all_events(&db).await.len();
    assert_eq!(confirm(&db, "r-1", T0 + 12).await, None);
    assert_eq!(all_events(&db).await.len(), before);
    assert_eq!(
        password_hash(&db, "forgot@example.org").await,
        "hash-of-forgot@example.org"
    );

    let requested = events(&db, "auth.password_reset_requested").await;
    assert_eq!(requested.len(), 3);
    assert_eq!(requested[0].at_ms, T0 + 10);
    assert_chain_intact(&db).await;
}

async fn confirm_resets_once_ends_sessions_and_clears_the_lockout(db: Db) {
    // `_` would be a wildcard to an unescaped LIKE (`%` is refused in addresses).
    let email = "a_b_c@example.org";
    let user = create_user(&db, email).await;
    let neighbour = create_user(&db, "axbyc@example.org").await;
    let first = login(&db, user.id, "h-1", T0, DAY_MS).await;
    login(&db, user.id, "h-2", T0 + 1, DAY_MS).await;
    let neighbours = login(&db, neighbour.id, "h-n", T0, DAY_MS).await;
    let kept = login(&db, user.id, "h-kept", T0, DAY_MS).await;
    // MFA stays on through a reset.
    mfa::set_pending_secret(&db, user.id, "sealed", T0)
        .await
        .unwrap();
    let revoked_by_mfa = mfa::enable(
        &db,
        user.id,
        crate::users::epoch(&db, user.id).await,
        "sealed",
        7,
        &["code".to_owned()],
        kept.id,
        T0,
        &event("auth.mfa_enabled"),
    )
    .await
    .unwrap();
    assert_eq!(revoked_by_mfa.len(), 2);
    let after_mfa = login(&db, user.id, "h-3", T0 + 2, DAY_MS).await;

    let policy = LockoutPolicy {
        max_failures: 100,
        window_ms: DAY_MS,
        lock_ms: DAY_MS,
        max_lock_ms: DAY_MS,
    };
    let cleared = [
        email.to_owned(),
        format!("{email}|192.0.2.1"),
        format!("{email}|2001:db8::1"),
    ];
    let kept_keys = [
        "axbyc@example.org".to_owned(),
        "axbyc@example.org|192.0.2.1".to_owned(),
        format!("{email}.evil|192.0.2.1"),
        format!("x{email}|192.0.2.1"),
        format!("reset|{email}"),
    ];
    for key in cleared.iter().chain(&kept_keys) {
        assert_eq!(
            lockout::reserve(&db, &[(key.as_str(), &policy)], T0)
                .await
                .unwrap(),
            None
        );
    }
    request(&db, user.id, "r-1", T0 + 100).await;

    let now = T0 + 200;
    let (who, revoked) = confirm(&db, "r-1", now).await.unwrap();
    assert_eq!(who, user.id);
    let mut expected = vec![kept.id, after_mfa.id];
    expected.sort();
    assert_eq!(revoked, expected);
    assert!(
        sessions::list_live(&db, user.id, now)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        texts_for(
            &db,
            "SELECT revoked_reason FROM sessions WHERE id = $1",
            kept.id
        )
        .await,
        vec![Some("password_reset".to_owned())]
    );
    // Sessions ended earlier keep their own reason.
    assert_eq!(
        texts_for(
            &db,
            "SELECT revoked_reason FROM sessions WHERE id = $1",
            first.id
        )
        .await,
        vec![Some("mfa_enabled".to_owned())]
    );
    assert_eq!(
        sessions::live_user(&db, neighbours.id, now).await.unwrap(),
        Some(neighbour.id)
    );

    assert_eq!(password_hash(&db, email).await, "new-hash");
    let view = users::get(&db, user.id).await.unwrap().unwrap();
    assert_eq!(view.updated_at_ms, now);
    assert!(view.mfa_enabled);
    assert_eq!(
        mfa::totp_state(&db, user.id).await.unwrap(),
        Some(("sealed".to_owned(), Some(7)))
    );

    for key in &cleared {
        assert!(!lockout_exists(&db, key).await, "{key} not cleared");
    }
    for key in &kept_keys {
        assert!(lockout_exists(&db, key).await, "{key} cleared");
    }

    let recorded = events(&db, "auth.password_reset_completed").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (
            recorded[0].actor_id,
            recorded[0].target_type.as_deref(),
            recorded[0].target_id.clone(),
            recorded[0].at_ms
        ),
        (Some(user.id), Some("user"), Some(user.id.to_string()), now)
    );

    // Used: works no more, writes nothing.
    let before = all_events(&db).await.len();
    assert_eq!(resets::peek(&db, "r-1", now + 1).await.unwrap(), None);
    let again = resets::confirm(
        &db,
        "r-1",
        "another-hash",
        now + 1,
        &event("auth.password_reset_completed"),
    )
    .await
    .unwrap();
    assert_eq!(again, None);
    assert_eq!(password_hash(&db, email).await, "new-hash");
    assert_eq!(all_events(&db).await.len(), before);
    assert_chain_intact(&db).await;
}

async fn invalid_tokens_write_nothing(db: Db) {
    let user = create_user(&db, "expired@example.org").await;
    let disabled = create_user(&db, "disabled@example.org").await;
    let deleted = create_user(&db, "deleted@example.org").await;
    let session = login(&db, user.id, "h-1", T0, DAY_MS).await;
    request(&db, user.id, "r-exp", T0).await;
    request(&db, disabled.id, "r-disabled", T0).await;
    request(&db, deleted.id, "r-deleted", T0).await;
    execute_for(&db, DISABLE_USER, disabled.id).await;
    execute_for(&db, DELETE_USER, deleted.id).await;
    let before = all_events(&db).await.len();

    let expiry = T0 + TTL;
    assert_eq!(
        resets::peek(&db, "r-exp", expiry - 1).await.unwrap(),
        Some(user.id)
    );
    assert_eq!(resets::peek(&db, "r-exp", expiry).await.unwrap(), None);
    assert_eq!(confirm(&db, "r-exp", expiry).await, None);
    assert_eq!(confirm(&db, "unknown", T0 + 1).await, None);
    assert_eq!(resets::peek(&db, "unknown", T0 + 1).await.unwrap(), None);
    for token in ["r-disabled", "r-deleted"] {
        assert_eq!(resets::peek(&db, token, T0 + 1).await.unwrap(), None);
        assert_eq!(confirm(&db, token, T0 + 1).await, None);
    }

    assert_eq!(all_events(&db).await.len(), before);
    assert_eq!(
        password_hash(&db, "expired@example.org").await,
        "hash-of-expired@example.org"
    );
    assert_eq!(
        password_hash(&db, "disabled@example.org").await,
        "hash-of-disabled@example.org"
    );
    assert_eq!(
        sessions::live_user(&db, session.id, expiry).await.unwrap(),
        Some(user.id)
    );
    // Nothing was used up: the expired token is still unused, merely too old.
    assert_eq!(
        i64s_by_text(
            &db,
            "SELECT used_at_ms FROM user_tokens WHERE token_hash = $1",
            "r-exp"
        )
        .await,
        vec![None]
    );
}

async fn parallel_confirms_have_exactly_one_winner(db: Db) {
    const CALLERS: usize = 16;
    let user = create_user(&db, "race@example.org").await;
    login(&db, user.id, "h-1", T0, DAY_MS).await;
    request(&db, user.id, "r-race", T0).await;

    let barrier = Arc::new(Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|n| {
            let db = db.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                resets::confirm(
                    &db,
                    "r-race",
                    &format!("hash-{n}"),
                    T0 + 1,
                    &event("auth.password_reset_completed"),
                )
                .await
                .unwrap()
                .map(|_| n)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        winners.extend(task.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        password_hash(&db, "race@example.org").await,
        format!("hash-{}", winners[0])
    );
    assert_eq!(events(&db, "auth.password_reset_completed").await.len(), 1);
    assert_chain_intact(&db).await;
}

async fn change_password_invalidates_outstanding_tokens(db: Db) {
    let user = create_user(&db, "changer@example.org").await;
    let other = create_user(&db, "bystander@example.org").await;
    request(&db, user.id, "r-mine", T0).await;
    request(&db, other.id, "r-theirs", T0).await;

    let audit = event("auth.password_changed").with_actor(user.id);
    users::change_password(
        &db,
        user.id,
        "hash-of-changer@example.org",
        "changed-hash",
        T0 + 5,
        &audit,
    )
    .await
    .unwrap();
    assert_eq!(resets::peek(&db, "r-mine", T0 + 6).await.unwrap(), None);
    assert_eq!(confirm(&db, "r-mine", T0 + 6).await, None);
    assert_eq!(
        password_hash(&db, "changer@example.org").await,
        "changed-hash"
    );
    assert_eq!(
        i64s_by_text(
            &db,
            "SELECT used_at_ms FROM user_tokens WHERE token_hash = $1",
            "r-mine"
        )
        .await,
        vec![Some(T0 + 5)]
    );
    assert_eq!(
        resets::peek(&db, "r-theirs", T0 + 6).await.unwrap(),
        Some(other.id)
    );
}
