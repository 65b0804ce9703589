//! MFA: a pending secret becomes the secret only as verified, enabling and disabling end
//! the other sessions with their event, TOTP steps and recovery codes work once (also
//! under concurrent use), login challenges die when used, expired or exhausted (a code and
//! its challenge are used up together, or neither), and key
//! rotation swaps ciphertexts only over the values it read.

use std::sync::Arc;

use rampart_core::Error;
use rampart_store::mfa::{self, Challenge, Completion, SecondFactor};
use rampart_store::{Db, users};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::users::{
    DAY_MS, DELETE_USER, T0, all_events, assert_chain_intact, count, create_user, event, events,
    execute_for, i64s_for, login,
};

backend_tests!(
    migrated: pending_then_enable_ends_other_sessions_and_stores_codes,
    enable_with_a_stale_pending_secret_conflicts_and_writes_nothing,
    accept_step_only_moves_forward,
    parallel_accept_step_has_exactly_one_winner,
    recovery_codes_work_once,
    parallel_recovery_code_use_has_exactly_one_winner,
    disable_clears_everything,
    challenges_die_after_max_failures,
    expired_challenges_are_not_live,
    challenges_are_consumed_once,
    completing_a_challenge_spends_nothing_it_loses,
    reseal_is_a_compare_and_swap,
    a_credential_change_kills_pending_challenges,
    enable_and_disable_refuse_a_stale_credential_epoch,
);

/// The single TEXT column of `sql`'s rows, with `$1` bound to `id`.
pub async fn texts_for(db: &Db, sql: &'static str, id: Uuid) -> Vec<Option<String>> {
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

fn recovery_hashes(prefix: &str) -> Vec<String> {
    (0..10).map(|n| format!("{prefix}-code-hash-{n}")).collect()
}

const RECOVERY_CODES_OF: &str = "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1";
const REVOKED_REASON: &str = "SELECT revoked_reason FROM sessions WHERE id = $1";
const TOTP_COLUMNS: &str = "SELECT COUNT(*) FROM users WHERE id = $1 AND totp_secret IS NULL AND totp_pending IS NULL \
     AND totp_last_step IS NULL AND NOT mfa_enabled";

/// Sets `sealed` as pending and enables MFA with it at step 100, keeping `keep`.
async fn enable_mfa(db: &Db, user_id: Uuid, sealed: &str, keep: Uuid, now_ms: i64) -> Vec<Uuid> {
    mfa::set_pending_secret(db, user_id, sealed, now_ms)
        .await
        .unwrap();
    let audit = event("auth.mfa_enabled")
        .with_actor(user_id)
        .with_target("user", user_id.to_string());
    mfa::enable(
        db,
        user_id,
        crate::users::epoch(db, user_id).await,
        sealed,
        100,
        &recovery_hashes(sealed),
        keep,
        now_ms,
        &audit,
    )
    .await
    .unwrap()
}

async fn pending_then_enable_ends_other_sessions_and_stores_codes(db: Db) {
    let user = create_user(&db, "mfa@example.org").await;
    let other = create_user(&db, "other@example.org").await;
    let kept = login(&db, user.id, "h-kept", T0, DAY_MS).await;
    let second = login(&db, user.id, "h-2", T0, DAY_MS).await;
    let third = login(&db, user.id, "h-3", T0 + 1, DAY_MS).await;
    let others = login(&db, other.id, "h-other", T0, DAY_MS).await;
    let now = T0 + 1_000;

    assert_eq!(mfa::totp_state(&db, user.id).await.unwrap(), None);
    assert_eq!(mfa::pending_secret(&db, user.id).await.unwrap(), None);
    mfa::set_pending_secret(&db, user.id, "sealed-1", now)
        .await
        .unwrap();
    assert_eq!(
        mfa::pending_secret(&db, user.id).await.unwrap().as_deref(),
        Some("sealed-1")
    );
    // A new setup replaces the pending secret; MFA is still off meanwhile.
    mfa::set_pending_secret(&db, user.id, "sealed-2", now)
        .await
        .unwrap();
    assert_eq!(
        mfa::pending_secret(&db, user.id).await.unwrap().as_deref(),
        Some("sealed-2")
    );
    assert_eq!(mfa::totp_state(&db, user.id).await.unwrap(), None);
    assert!(!users::get(&db, user.id).await.unwrap().unwrap().mfa_enabled);
    assert!(
        all_events(&db)
            .await
            .iter()
            .all(|e| e.action != "auth.mfa_enabled")
    );

    let audit = event("auth.mfa_enabled")
        .with_actor(user.id)
        .with_target("user", user.id.to_string());
    let revoked = mfa::enable(
        &db,
        user.id,
        crate::users::epoch(&db, user.id).await,
        "sealed-2",
        57_000_000,
        &recovery_hashes("a"),
        kept.id,
        now,
        &audit,
    )
    .await
    .unwrap();
    let mut expected = vec![second.id, third.id];
    expected.sort();
    assert_eq!(revoked, expected);

    assert_eq!(
        mfa::totp_state(&db, user.id).await.unwrap(),
        Some(("sealed-2".to_owned(), Some(57_000_000)))
    );
    assert_eq!(mfa::pending_secret(&db, user.id).await.unwrap(), None);
    let view = users::get(&db, user.id).await.unwrap().unwrap();
    assert!(view.mfa_enabled);
    assert_eq!(view.updated_at_ms, now);
    assert!(
        users::find_credentials(&db, "mfa@example.org")
            .await
            .unwrap()
            .unwrap()
            .mfa_enabled
    );
    assert_eq!(
        i64s_for(&db, RECOVERY_CODES_OF, user.id).await,
        vec![Some(10)]
    );

    // The kept session and the other user's live on; the rest ended as `mfa_enabled`.
    let live: Vec<Uuid> = rampart_store::sessions::list_live(&db, user.id, now)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live, vec![kept.id]);
    assert_eq!(
        texts_for(&db, REVOKED_REASON, second.id).await,
        vec![Some("mfa_enabled".to_owned())]
    );
    assert_eq!(
        rampart_store::sessions::live_user(&db, others.id, now)
            .await
            .unwrap(),
        Some(other.id)
    );

    let recorded = events(&db, "auth.mfa_enabled").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].actor_id, recorded[0].at_ms),
        (Some(user.id), now)
    );

    // Once on: no new setup, no second enable.
    let err = mfa::set_pending_secret(&db, user.id, "sealed-3", now)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m == "MFA is already enabled"),
        "{err:?}"
    );
    let err = mfa::enable(
        &db,
        user.id,
        crate::users::epoch(&db, user.id).await,
        "sealed-2",
        1,
        &[],
        kept.id,
        now,
        &audit,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m == "MFA is already enabled"),
        "{err:?}"
    );
    assert_eq!(events(&db, "auth.mfa_enabled").await.len(), 1);
    assert_chain_intact(&db).await;
}

async fn enable_with_a_stale_pending_secret_conflicts_and_writes_nothing(db: Db) {
    let user = create_user(&db, "stale@example.org").await;
    let kept = login(&db, user.id, "h-kept", T0, DAY_MS).await;
    let other = login(&db, user.id, "h-other", T0, DAY_MS).await;
    let audit = event("auth.mfa_enabled").with_actor(user.id);
    let before = all_events(&db).await.len();

    // No setup yet.
    let err = mfa::enable(
        &db,
        user.id,
        crate::users::epoch(&db, user.id).await,
        "sealed-a",
        1,
        &recovery_hashes("a"),
        kept.id,
        T0,
        &audit,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");

    // The code was verified against "sealed-a", but a new setup replaced it meanwhile.
    mfa::set_pending_secret(&db, user.id, "sealed-a", T0)
        .await
        .unwrap();
    mfa::set_pending_secret(&db, user.id, "sealed-b", T0)
        .await
        .unwrap();
    let err = mfa::enable(
        &db,
        user.id,
        crate::users::epoch(&db, user.id).await,
        "sealed-a",
        1,
        &recovery_hashes("a"),
        kept.id,
        T0,
        &audit,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m == "MFA setup is no longer pending"),
        "{err:?}"
    );

    assert_eq!(mfa::totp_state(&db, user.id).await.unwrap(), None);
    assert_eq!(
        mfa::pending_secret(&db, user.id).await.unwrap().as_deref(),
        Some("sealed-b")
    );
    assert!(!users::get(&db, user.id).await.unwrap().unwrap().mfa_enabled);
    assert_eq!(
        i64s_for(&db, RECOVERY_CODES_OF, user.id).await,
        vec![Some(0)]
    );
    assert_eq!(
        rampart_store::sessions::live_user(&db, other.id, T0 + 1)
            .await
            .unwrap(),
        Some(user.id)
    );
    assert_eq!(all_events(&db).await.len(), before);

    // Missing and deleted users.
    let missing = Uuid::now_v7();
    let err = mfa::set_pending_secret(&db, missing, "x", T0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound), "{err:?}");
    let err = mfa::enable(
        &db,
        missing,
        crate::users::epoch(&db, missing).await,
        "x",
        1,
        &[],
        kept.id,
        T0,
        &audit,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotFound), "{err:?}");
    execute_for(&db, DELETE_USER, user.id).await;
    let err = mfa::enable(
        &db,
        user.id,
        crate::users::epoch(&db, user.id).await,
        "sealed-b",
        1,
        &[],
        kept.id,
        T0,
        &audit,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotFound), "{err:?}");
    assert_eq!(mfa::pending_secret(&db, user.id).await.unwrap(), None);
}

async fn accept_step_only_moves_forward(db: Db) {
    let user = create_user(&db, "steps@example.org").await;
    let kept = login(&db, user.id, "h-kept", T0, DAY_MS).await;
    // MFA off: nothing to accept.
    assert!(!mfa::accept_step(&db, user.id, 1).await.unwrap());

    enable_mfa(&db, user.id, "sealed", kept.id, T0).await;
    // The enabling code's step (100) cannot be replayed, nor anything before it.
    assert!(!mfa::accept_step(&db, user.id, 100).await.unwrap());
    assert!(!mfa::accept_step(&db, user.id, 99).await.unwrap());
    assert!(mfa::accept_step(&db, user.id, 101).await.unwrap());
    assert!(!mfa::accept_step(&db, user.id, 101).await.unwrap());
    assert!(mfa::accept_step(&db, user.id, 105).await.unwrap());
    assert!(!mfa::accept_step(&db, user.id, 103).await.unwrap());
    assert_eq!(
        mfa::totp_state(&db, user.id).await.unwrap(),
        Some(("sealed".to_owned(), Some(105)))
    );
    // Another user's steps are their own.
    assert!(!mfa::accept_step(&db, Uuid::now_v7(), 200).await.unwrap());
}

async fn parallel_accept_step_has_exactly_one_winner(db: Db) {
    const CALLERS: usize = 16;
    let user = create_user(&db, "race@example.org").await;
    let kept = login(&db, user.id, "h-kept", T0, DAY_MS).await;
    enable_mfa(&db, user.id, "sealed", kept.id, T0).await;

    let barrier = Arc::new(Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let db = db.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                mfa::accept_step(&db, user.id, 200).await.unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(
        mfa::totp_state(&db, user.id).await.unwrap(),
        Some(("sealed".to_owned(), Some(200)))
    );
}

async fn recovery_codes_work_once(db: Db) {
    let user = create_user(&db, "codes@example.org").await;
    let other = create_user(&db, "codes2@example.org").await;
    let kept = login(&db, user.id, "h-kept", T0, DAY_MS).await;
    let others = login(&db, other.id, "h-other", T0, DAY_MS).await;
    enable_mfa(&db, user.id, "mine", kept.id, T0).await;
    enable_mfa(&db, other.id, "theirs", others.id, T0).await;

    let code = "mine-code-hash-3";
    assert!(
        mfa::use_recovery_code(&db, user.id, code, T0 + 5)
            .await
            .unwrap()
    );
    assert!(
        !mfa::use_recovery_code(&db, user.id, code, T0 + 6)
            .await
            .unwrap()
    );
    assert!(
        !mfa::use_recovery_code(&db, user.id, "unknown", T0)
            .await
            .unwrap()
    );
    // Another user's code is not this user's.
    assert!(
        !mfa::use_recovery_code(&db, user.id, "theirs-code-hash-0", T0)
            .await
            .unwrap()
    );
    assert!(
        mfa::use_recovery_code(&db, other.id, "theirs-code-hash-0", T0)
            .await
            .unwrap()
    );
    assert_eq!(
        i64s_for(
            &db,
            "SELECT used_at_ms FROM recovery_codes WHERE user_id = $1 AND used_at_ms IS NOT NULL",
            user.id
        )
        .await,
        vec![Some(T0 + 5)]
    );
    // The other nine still work.
    assert!(
        mfa::use_recovery_code(&db, user.id, "mine-code-hash-9", T0)
            .await
            .unwrap()
    );
}

async fn parallel_recovery_code_use_has_exactly_one_winner(db: Db) {
    const CALLERS: usize = 16;
    let user = create_user(&db, "codes-race@example.org").await;
    let kept = login(&db, user.id, "h-kept", T0, DAY_MS).await;
    enable_mfa(&db, user.id, "sealed", kept.id, T0).await;

    let barrier = Arc::new(Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let db = db.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                mfa::use_recovery_code(&db, user.id, "sealed-code-hash-0", T0 + 1)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
}

async fn disable_clears_everything(db: Db) {
    let user = create_user(&db, "off@example.org").await;
    let kept = login(&db, user.id, "h-kept", T0, DAY_MS).await;
    enable_mfa(&db, user.id, "sealed", kept.id, T0).await;
    let later = login(&db, user.id, "h-later", T0 + 10, DAY_MS).await;
    let challenge = Uuid::now_v7();
    mfa::create_challenge(
        &db,
        challenge,
        user.id,
        crate::users::epoch(&db, user.id).await,
        "c-hash",
        T0 + 10,
        T0 + 300_000,
    )
    .await
    .unwrap();
    let now = T0 + 20;

    let audit = event("auth.mfa_disabled")
        .with_actor(user.id)
        .with_target("user", user.id.to_string());
    let revoked = mfa::disable(
        &db,
        user.id,
        crate::users::epoch(&db, user.id).await,
        kept.id,
        now,
        &audit,
    )
    .await
    .unwrap();
    assert_eq!(revoked, vec![later.id]);
    assert_eq!(
        texts_for(&db, REVOKED_REASON, later.id).await,
        vec![Some("mfa_disabled".to_owned())]
    );
    assert_eq!(
        rampart_store::sessions::live_user(&db, kept.id, now)
            .await
            .unwrap(),
        Some(user.id)
    );

    assert_eq!(mfa::totp_state(&db, user.id).await.unwrap(), None);
    assert_eq!(mfa::pending_secret(&db, user.id).await.unwrap(), None);
    assert_eq!(i64s_for(&db, TOTP_COLUMNS, user.id).await, vec![Some(1)]);
    assert_eq!(
        i64s_for(&db, RECOVERY_CODES_OF, user.id).await,
        vec![Some(0)]
    );
    let view = users::get(&db, user.id).await.unwrap().unwrap();
    assert_eq!((view.mfa_enabled, view.updated_at_ms), (false, now));
    // A login waiting for its second factor cannot finish any more.
    assert_eq!(
        mfa::live_challenge(&db, "c-hash", now, 5).await.unwrap(),
        None
    );
    assert!(!mfa::accept_step(&db, user.id, 500).await.unwrap());
    assert!(
        !mfa::use_recovery_code(&db, user.id, "sealed-code-hash-1", now)
            .await
            .unwrap()
    );
    let recorded = events(&db, "auth.mfa_disabled").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].actor_id, Some(user.id));

    // Off already: refused, nothing written.
    let err = mfa::disable(
        &db,
        user.id,
        crate::users::epoch(&db, user.id).await,
        kept.id,
        now,
        &audit,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m == "MFA is not enabled"),
        "{err:?}"
    );
    let err = mfa::disable(
        &db,
        Uuid::now_v7(),
        crate::users::epoch(&db, Uuid::now_v7()).await,
        kept.id,
        now,
        &audit,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotFound), "{err:?}");
    assert_eq!(events(&db, "auth.mfa_disabled").await.len(), 1);

    // Enabling again brings only the new codes.
    enable_mfa(&db, user.id, "resealed", kept.id, now + 1).await;
    assert!(
        !mfa::use_recovery_code(&db, user.id, "sealed-code-hash-2", now + 2)
            .await
            .unwrap()
    );
    assert!(
        mfa::use_recovery_code(&db, user.id, "resealed-code-hash-2", now + 2)
            .await
            .unwrap()
    );
    assert_chain_intact(&db).await;
}

async fn challenges_die_after_max_failures(db: Db) {
    let user = create_user(&db, "challenge@example.org").await;
    let id = Uuid::now_v7();
    mfa::create_challenge(
        &db,
        id,
        user.id,
        crate::users::epoch(&db, user.id).await,
        "c-1",
        T0,
        T0 + 300_000,
    )
    .await
    .unwrap();
    assert_eq!(
        mfa::live_challenge(&db, "c-1", T0, 5).await.unwrap(),
        Some(Challenge {
            id,
            user_id: user.id,
            failures: 0,
            credential_epoch: 0,
        })
    );
    assert_eq!(mfa::live_challenge(&db, "c-2", T0, 5).await.unwrap(), None);
    for n in 1..=4 {
        assert_eq!(mfa::challenge_failed(&db, id).await.unwrap(), n);
        assert_eq!(
            mfa::live_challenge(&db, "c-1", T0, 5)
                .await
                .unwrap()
                .map(|c| c.failures),
            Some(n)
        );
    }
    assert_eq!(mfa::challenge_failed(&db, id).await.unwrap(), 5);
    assert_eq!(mfa::live_challenge(&db, "c-1", T0, 5).await.unwrap(), None);
    // The limit is the caller's: the row only counts.
    assert_eq!(
        mfa::live_challenge(&db, "c-1", T0, 6)
            .await
            .unwrap()
            .map(|c| c.failures),
        Some(5)
    );
    let err = mfa::challenge_failed(&db, Uuid::now_v7())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound), "{err:?}");

    // Concurrent wrong codes are all counted.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { mfa::challenge_failed(&db, id).await.unwrap() })
        })
        .collect();
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (6..=13).collect::<Vec<i64>>());
}

async fn expired_challenges_are_not_live(db: Db) {
    let user = create_user(&db, "expiry@example.org").await;
    let id = Uuid::now_v7();
    let expires = T0 + 300_000;
    mfa::create_challenge(
        &db,
        id,
        user.id,
        crate::users::epoch(&db, user.id).await,
        "c-exp",
        T0,
        expires,
    )
    .await
    .unwrap();
    assert!(
        mfa::live_challenge(&db, "c-exp", expires - 1, 5)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        mfa::live_challenge(&db, "c-exp", expires, 5).await.unwrap(),
        None
    );
    // A token hash is unique.
    let err = mfa::create_challenge(&db, Uuid::now_v7(), user.id, 0, "c-exp", T0, expires)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
}

async fn challenges_are_consumed_once(db: Db) {
    const CALLERS: usize = 16;
    let user = create_user(&db, "consume@example.org").await;
    let first = Uuid::now_v7();
    mfa::create_challenge(
        &db,
        first,
        user.id,
        crate::users::epoch(&db, user.id).await,
        "c-first",
        T0,
        T0 + 300_000,
    )
    .await
    .unwrap();
    assert!(mfa::consume_challenge(&db, first, T0 + 1).await.unwrap());
    assert!(!mfa::consume_challenge(&db, first, T0 + 2).await.unwrap());
    assert_eq!(
        mfa::live_challenge(&db, "c-first", T0 + 3, 5)
            .await
            .unwrap(),
        None
    );
    assert!(
        !mfa::consume_challenge(&db, Uuid::now_v7(), T0)
            .await
            .unwrap()
    );

    let raced = Uuid::now_v7();
    mfa::create_challenge(
        &db,
        raced,
        user.id,
        crate::users::epoch(&db, user.id).await,
        "c-raced",
        T0,
        T0 + 300_000,
    )
    .await
    .unwrap();
    let barrier = Arc::new(Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let db = db.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                mfa::consume_challenge(&db, raced, T0 + 1).await.unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM mfa_challenges WHERE used_at_ms IS NOT NULL"
        )
        .await,
        2
    );
}

async fn completing_a_challenge_spends_nothing_it_loses(db: Db) {
    const CALLERS: usize = 8;
    let user = create_user(&db, "complete@example.org").await;
    let kept = login(&db, user.id, "h-kept", T0, DAY_MS).await;
    enable_mfa(&db, user.id, "sealed", kept.id, T0).await;
    let epoch = crate::users::epoch(&db, user.id).await;
    let challenge = |id: Uuid, hash: &'static str| {
        let db = db.clone();
        async move {
            mfa::create_challenge(&db, id, user.id, epoch, hash, T0, T0 + 300_000)
                .await
                .unwrap();
            id
        }
    };
    let code = |i: usize| SecondFactor::RecoveryCode(vec![format!("sealed-code-hash-{i}")]);

    // One challenge, a different valid code each: one completes, and the losers' codes
    // stay unused.
    let raced = challenge(Uuid::now_v7(), "c-complete").await;
    let barrier = Arc::new(Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (db, barrier, factor) = (db.clone(), barrier.clone(), code(i));
            tokio::spawn(async move {
                barrier.wait().await;
                mfa::complete_challenge(&db, raced, user.id, &factor, T0 + 1)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let winners: Vec<usize> = (0..CALLERS)
        .filter(|i| outcomes[*i] == Completion::Completed)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Completion::ChallengeUsed)
            .count(),
        CALLERS - 1,
        "{outcomes:?}"
    );
    let used = "SELECT COUNT(*) FROM recovery_codes WHERE used_at_ms IS NOT NULL";
    assert_eq!(count(&db, used).await, 1);

    // A used code is refused and leaves the challenge live; a code tried after another
    // (the digest under an old data key) still counts.
    let next = challenge(Uuid::now_v7(), "c-next").await;
    assert_eq!(
        mfa::complete_challenge(&db, next, user.id, &code(winners[0]), T0 + 2)
            .await
            .unwrap(),
        Completion::FactorRefused
    );
    assert!(
        mfa::live_challenge(&db, "c-next", T0 + 3, 5)
            .await
            .unwrap()
            .is_some()
    );
    let loser = (winners[0] + 1) % CALLERS;
    let rotated = SecondFactor::RecoveryCode(vec![
        "unknown-hash".to_owned(),
        format!("sealed-code-hash-{loser}"),
    ]);
    assert_eq!(
        mfa::complete_challenge(&db, next, user.id, &rotated, T0 + 3)
            .await
            .unwrap(),
        Completion::Completed
    );
    assert_eq!(count(&db, used).await, 2);

    // A TOTP step: accepted once; the second challenge it came with stays live, and a
    // used challenge leaves the step unaccepted.
    let (a, b) = (
        challenge(Uuid::now_v7(), "c-step-a").await,
        challenge(Uuid::now_v7(), "c-step-b").await,
    );
    let step = SecondFactor::TotpStep(150);
    assert_eq!(
        mfa::complete_challenge(&db, a, user.id, &step, T0 + 4)
            .await
            .unwrap(),
        Completion::Completed
    );
    assert_eq!(
        mfa::complete_challenge(&db, b, user.id, &step, T0 + 5)
            .await
            .unwrap(),
        Completion::FactorRefused
    );
    assert!(
        mfa::live_challenge(&db, "c-step-b", T0 + 6, 5)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        mfa::complete_challenge(&db, a, user.id, &SecondFactor::TotpStep(151), T0 + 7)
            .await
            .unwrap(),
        Completion::ChallengeUsed
    );
    assert_eq!(
        mfa::totp_state(&db, user.id).await.unwrap(),
        Some(("sealed".to_owned(), Some(150)))
    );
}

async fn reseal_is_a_compare_and_swap(db: Db) {
    let pending_only = create_user(&db, "pending@example.org").await;
    let enabled = create_user(&db, "enabled@example.org").await;
    let _plain = create_user(&db, "plain@example.org").await;
    mfa::set_pending_secret(&db, pending_only.id, "old-p", T0)
        .await
        .unwrap();
    let kept = login(&db, enabled.id, "h-kept", T0, DAY_MS).await;
    enable_mfa(&db, enabled.id, "old-s", kept.id, T0).await;

    assert_eq!(
        mfa::sealed_secrets(&db).await.unwrap(),
        vec![
            (pending_only.id, None, Some("old-p".to_owned())),
            (enabled.id, Some("old-s".to_owned()), None),
        ]
    );
    let before = all_events(&db).await.len();

    // Wrong old values (the row changed since it was read): nothing changes.
    assert!(
        !mfa::reseal(
            &db,
            pending_only.id,
            None,
            None,
            Some("other"),
            Some("new-p")
        )
        .await
        .unwrap()
    );
    assert!(
        !mfa::reseal(
            &db,
            pending_only.id,
            Some("old-p"),
            Some("new-p"),
            Some("old-p"),
            Some("new-p")
        )
        .await
        .unwrap()
    );
    assert_eq!(
        mfa::pending_secret(&db, pending_only.id)
            .await
            .unwrap()
            .as_deref(),
        Some("old-p")
    );

    assert!(
        mfa::reseal(
            &db,
            pending_only.id,
            None,
            None,
            Some("old-p"),
            Some("new-p")
        )
        .await
        .unwrap()
    );
    assert!(
        mfa::reseal(&db, enabled.id, Some("old-s"), Some("new-s"), None, None)
            .await
            .unwrap()
    );
    // The same swap again finds the new values: refused.
    assert!(
        !mfa::reseal(&db, enabled.id, Some("old-s"), Some("new-s"), None, None)
            .await
            .unwrap()
    );
    assert_eq!(
        mfa::sealed_secrets(&db).await.unwrap(),
        vec![
            (pending_only.id, None, Some("new-p".to_owned())),
            (enabled.id, Some("new-s".to_owned()), None),
        ]
    );
    assert_eq!(
        mfa::totp_state(&db, enabled.id).await.unwrap(),
        Some(("new-s".to_owned(), Some(100)))
    );
    // Not a user-visible change: no event, updated_at_ms unchanged.
    assert_eq!(all_events(&db).await.len(), before);
    assert_eq!(
        users::get(&db, pending_only.id)
            .await
            .unwrap()
            .unwrap()
            .updated_at_ms,
        T0
    );
}

async fn a_credential_change_kills_pending_challenges(db: Db) {
    let user = create_user(&db, "pending@example.org").await;
    let id = Uuid::now_v7();
    mfa::create_challenge(&db, id, user.id, 0, "c-pending", T0, T0 + 300_000)
        .await
        .unwrap();
    assert!(
        mfa::live_challenge(&db, "c-pending", T0, 5)
            .await
            .unwrap()
            .is_some()
    );
    // A password change, reset, disable… ends every session through the epoch bump.
    rampart_store::sessions::revoke_all(&db, user.id, None, "password_changed", T0 + 1, None)
        .await
        .unwrap();
    assert_eq!(
        mfa::live_challenge(&db, "c-pending", T0 + 2, 5)
            .await
            .unwrap(),
        None
    );
    // A challenge of the password step after the change is live.
    mfa::create_challenge(
        &db,
        Uuid::now_v7(),
        user.id,
        1,
        "c-new",
        T0 + 3,
        T0 + 300_000,
    )
    .await
    .unwrap();
    assert!(
        mfa::live_challenge(&db, "c-new", T0 + 3, 5)
            .await
            .unwrap()
            .is_some()
    );
}

async fn enable_and_disable_refuse_a_stale_credential_epoch(db: Db) {
    let user = create_user(&db, "epoch@example.org").await;
    let kept = login(&db, user.id, "h-kept", T0, DAY_MS).await;
    mfa::set_pending_secret(&db, user.id, "sealed", T0)
        .await
        .unwrap();
    // The password was checked at epoch 0; a password change moved it on meanwhile.
    rampart_store::sessions::revoke_all(&db, user.id, Some(kept.id), "password_changed", T0, None)
        .await
        .unwrap();
    let audit = event("auth.mfa_enabled").with_actor(user.id);
    let err = mfa::enable(&db, user.id, 0, "sealed", 1, &[], kept.id, T0 + 1, &audit)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthenticated), "{err:?}");
    assert!(!users::get(&db, user.id).await.unwrap().unwrap().mfa_enabled);
    assert!(events(&db, "auth.mfa_enabled").await.is_empty());
    // At the current epoch it works, and the caller's session moves to the new epoch.
    mfa::enable(&db, user.id, 1, "sealed", 1, &[], kept.id, T0 + 2, &audit)
        .await
        .unwrap();
    assert_eq!(crate::users::epoch(&db, user.id).await, 2);
    assert_eq!(
        rampart_store::sessions::live_user(&db, kept.id, T0 + 3)
            .await
            .unwrap(),
        Some(user.id)
    );
    let audit = event("auth.mfa_disabled").with_actor(user.id);
    let err = mfa::disable(&db, user.id, 1, kept.id, T0 + 4, &audit)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthenticated), "{err:?}");
    assert!(users::get(&db, user.id).await.unwrap().unwrap().mfa_enabled);
}
