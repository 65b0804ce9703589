//! Sessions: login with its event and lockout reset, refresh rotation with reuse detection
//! (also under concurrent presentation of one token), revocation scoped to the owner, and
//! the liveness lookups.

use std::time::Duration;

use rampart_store::lockout::{self, LockoutPolicy};
use rampart_store::sessions::{self, NewSession, Rotation};
use rampart_store::{Backend, Db, Tx, TxConn};
use uuid::Uuid;

use crate::users::{
    DAY_MS, DELETE_USER, DISABLE_USER, SELECT_EPOCH, T0, all_events, assert_chain_intact, count,
    create_user, event, events, execute_for, i64s_by_text, i64s_for, login, refresh_token,
};

backend_tests!(
    migrated: create_clears_the_lockout_and_appends_its_event,
    rotate_exchanges_a_token_once_and_caps_it_at_the_session_end,
    replayed_token_revokes_the_whole_session_once,
    expired_unknown_and_dead_session_tokens_are_invalid,
    concurrent_rotations_of_one_token_have_exactly_one_winner,
    a_rotation_waiting_on_an_uncommitted_claim_sees_its_outcome,
    find_live_by_refresh_sees_only_unused_tokens_of_live_sessions,
    revoke_touches_only_the_owners_live_session,
    revoke_all_spares_the_exception,
    list_live_is_newest_first_without_revoked_or_expired,
    live_user_requires_a_live_session_and_a_usable_user,
    create_refuses_a_stale_credential_epoch_and_writes_nothing,
    a_session_left_at_an_old_epoch_is_dead_everywhere,
    no_session_created_while_the_epoch_moves_on_survives_it,
);

const POLICY: LockoutPolicy = LockoutPolicy {
    max_failures: 5,
    window_ms: 900_000,
    lock_ms: 900_000,
    max_lock_ms: 900_000,
};

async fn rotate(db: &Db, presented: &str, next: &str, now_ms: i64) -> Rotation {
    let next = refresh_token(next, now_ms + 7 * DAY_MS);
    sessions::rotate(
        db,
        presented,
        &next,
        now_ms,
        &event("auth.refresh_reuse_detected").with_request_id("req-reuse"),
    )
    .await
    .unwrap()
}

const TOKEN_USED_AT: &str = "SELECT used_at_ms FROM refresh_tokens WHERE token_hash = $1";
const TOKEN_EXPIRES_AT: &str = "SELECT expires_at_ms FROM refresh_tokens WHERE token_hash = $1";

async fn create_clears_the_lockout_and_appends_its_event(db: Db) {
    let user = create_user(&db, "login@example.org").await;
    for n in 0..3 {
        for key in ["login@example.org", "someone@else.org"] {
            let reserved = lockout::reserve(&db, &[(key, &POLICY)], T0 + n).await;
            assert_eq!(reserved.unwrap(), None);
        }
    }

    let new = NewSession {
        id: Uuid::now_v7(),
        user_id: user.id,
        credential_epoch: 0,
        now_ms: T0 + 100,
        expires_at_ms: T0 + 100 + DAY_MS,
        ip_address: Some("2001:db8::5".into()),
        user_agent: None,
    };
    // Asks for more than the session's life: capped.
    let refresh = refresh_token("h-first", T0 + 100 + 7 * DAY_MS);
    let audit = event("auth.login_succeeded")
        .with_actor(user.id)
        .with_target("session", new.id.to_string());
    let session = sessions::create(&db, &new, &refresh, Some("login@example.org"), &audit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            session.id,
            session.user_id,
            session.created_at_ms,
            session.last_used_at_ms
        ),
        (new.id, user.id, T0 + 100, T0 + 100)
    );
    assert_eq!(
        (
            session.expires_at_ms,
            session.ip_address.as_deref(),
            session.user_agent.as_deref()
        ),
        (T0 + 100 + DAY_MS, Some("2001:db8::5"), None)
    );
    assert_eq!(
        sessions::list_live(&db, user.id, T0 + 100).await.unwrap(),
        vec![session.clone()]
    );
    assert_eq!(
        i64s_by_text(&db, TOKEN_EXPIRES_AT, "h-first").await,
        vec![Some(T0 + 100 + DAY_MS)]
    );

    let failures = "SELECT CAST(failures AS BIGINT) FROM lockouts WHERE key = $1";
    assert!(
        i64s_by_text(&db, failures, "login@example.org")
            .await
            .is_empty()
    );
    assert_eq!(
        i64s_by_text(&db, failures, "someone@else.org").await,
        vec![Some(3)]
    );
    let recorded = events(&db, "auth.login_succeeded").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].target_id, Some(new.id.to_string()));
}

async fn rotate_exchanges_a_token_once_and_caps_it_at_the_session_end(db: Db) {
    let user = create_user(&db, "rotate@example.org").await;
    let session = login(&db, user.id, "h-1", T0, 10 * DAY_MS).await;
    let events_before = all_events(&db).await.len();

    let t1 = T0 + 60_000;
    let Rotation::Rotated {
        session: rotated,
        refresh_expires_at_ms,
    } = rotate(&db, "h-1", "h-2", t1).await
    else {
        panic!("not rotated")
    };
    assert_eq!(
        rotated,
        rampart_core::users::Session {
            last_used_at_ms: t1,
            ..session.clone()
        }
    );
    assert_eq!(refresh_expires_at_ms, t1 + 7 * DAY_MS);
    assert_eq!(
        i64s_by_text(&db, TOKEN_USED_AT, "h-1").await,
        vec![Some(t1)]
    );
    assert_eq!(i64s_by_text(&db, TOKEN_USED_AT, "h-2").await, vec![None]);
    assert_eq!(
        sessions::list_live(&db, user.id, t1).await.unwrap()[0].last_used_at_ms,
        t1
    );

    // Five days later the next token would outlive the session: its expiry is capped.
    let t2 = T0 + 5 * DAY_MS;
    let Rotation::Rotated {
        session: rotated,
        refresh_expires_at_ms,
    } = rotate(&db, "h-2", "h-3", t2).await
    else {
        panic!("not rotated")
    };
    assert_eq!(rotated.last_used_at_ms, t2);
    assert_eq!(refresh_expires_at_ms, session.expires_at_ms);
    assert_eq!(
        i64s_by_text(&db, TOKEN_EXPIRES_AT, "h-3").await,
        vec![Some(session.expires_at_ms)]
    );
    // A successful rotation is not an audit event.
    assert_eq!(all_events(&db).await.len(), events_before);
}

async fn replayed_token_revokes_the_whole_session_once(db: Db) {
    let user = create_user(&db, "replay@example.org").await;
    let session = login(&db, user.id, "h-1", T0, DAY_MS).await;
    let kept = login(&db, user.id, "h-other", T0, DAY_MS).await;
    assert!(matches!(
        rotate(&db, "h-1", "h-2", T0 + 1).await,
        Rotation::Rotated { .. }
    ));

    assert_eq!(
        rotate(&db, "h-1", "h-x", T0 + 2).await,
        Rotation::Reused {
            session_id: session.id,
            user_id: user.id
        }
    );
    assert_eq!(
        sessions::live_user(&db, session.id, T0 + 2).await.unwrap(),
        None
    );
    assert_eq!(
        i64s_for(
            &db,
            "SELECT COUNT(*) FROM sessions WHERE id = $1 AND revoked_reason = 'refresh_reuse' \
             AND revoked_at_ms IS NOT NULL",
            session.id
        )
        .await,
        vec![Some(1)]
    );
    // The whole family is dead: the token issued by the rotation too.
    assert_eq!(rotate(&db, "h-2", "h-y", T0 + 3).await, Rotation::Invalid);
    // Replaying again changes nothing more.
    assert_eq!(rotate(&db, "h-1", "h-z", T0 + 4).await, Rotation::Invalid);
    assert!(i64s_by_text(&db, TOKEN_USED_AT, "h-x").await.is_empty());
    // Another session of the same user lives on.
    assert_eq!(
        sessions::live_user(&db, kept.id, T0 + 4).await.unwrap(),
        Some(user.id)
    );

    let recorded = events(&db, "auth.refresh_reuse_detected").await;
    assert_eq!(recorded.len(), 1);
    let reuse = &recorded[0];
    assert_eq!(
        (
            reuse.actor_id,
            reuse.target_type.as_deref(),
            reuse.target_id.clone()
        ),
        (Some(user.id), Some("session"), Some(session.id.to_string()))
    );
    assert_eq!(
        (reuse.request_id.as_deref(), reuse.at_ms),
        (Some("req-reuse"), T0 + 2)
    );
    assert_chain_intact(&db).await;
}

async fn expired_unknown_and_dead_session_tokens_are_invalid(db: Db) {
    let user = create_user(&db, "invalid@example.org").await;
    let other = create_user(&db, "disabled@example.org").await;
    let session = login(&db, user.id, "h-1", T0, DAY_MS).await;

    assert_eq!(
        rotate(&db, "h-unknown", "h-n1", T0 + 1).await,
        Rotation::Invalid
    );
    // A token expires at its expires_at_ms (7 days here).
    assert_eq!(
        rotate(&db, "h-1", "h-n2", T0 + 7 * DAY_MS).await,
        Rotation::Invalid
    );
    assert_eq!(i64s_by_text(&db, TOKEN_USED_AT, "h-1").await, vec![None]);

    // A token outlived by its session's end: capped at login, so it has expired too.
    login(&db, user.id, "h-short", T0, 1_000).await;
    assert_eq!(
        i64s_by_text(&db, TOKEN_EXPIRES_AT, "h-short").await,
        vec![Some(T0 + 1_000)]
    );
    assert_eq!(
        rotate(&db, "h-short", "h-n3", T0 + 1_000).await,
        Rotation::Invalid
    );

    // An unused token of a revoked session: invalid, and left as it was.
    let revoked = login(&db, user.id, "h-revoked", T0, DAY_MS).await;
    assert!(
        sessions::revoke(&db, revoked.id, user.id, "logout", T0 + 1, None)
            .await
            .unwrap()
    );
    assert_eq!(
        rotate(&db, "h-revoked", "h-n4", T0 + 2).await,
        Rotation::Invalid
    );
    assert_eq!(
        i64s_by_text(&db, TOKEN_USED_AT, "h-revoked").await,
        vec![None]
    );

    // Disabled or deleted users cannot refresh.
    login(&db, other.id, "h-disabled", T0, DAY_MS).await;
    execute_for(&db, DISABLE_USER, other.id).await;
    assert_eq!(
        rotate(&db, "h-disabled", "h-n5", T0 + 2).await,
        Rotation::Invalid
    );
    let deleted = create_user(&db, "deleted@example.org").await;
    login(&db, deleted.id, "h-deleted", T0, DAY_MS).await;
    execute_for(&db, DELETE_USER, deleted.id).await;
    assert_eq!(
        rotate(&db, "h-deleted", "h-n6", T0 + 2).await,
        Rotation::Invalid
    );

    // None of this stored a next token or an event, or touched the live session.
    for next in ["h-n1", "h-n2", "h-n3", "h-n4", "h-n5", "h-n6"] {
        assert!(i64s_by_text(&db, TOKEN_USED_AT, next).await.is_empty());
    }
    assert!(events(&db, "auth.refresh_reuse_detected").await.is_empty());
    assert_eq!(
        sessions::list_live(&db, user.id, T0 + 1_000).await.unwrap(),
        vec![session]
    );
}

pub async fn concurrent_rotations_of_one_token_have_exactly_one_winner(db: Db) {
    const CALLERS: usize = 16;
    let user = create_user(&db, "race@example.org").await;
    let session = login(&db, user.id, "h-race", T0, DAY_MS).await;

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|n| {
            let db = db.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                rotate(&db, "h-race", &format!("h-next-{n}"), T0 + 1).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }

    let rotated: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, Rotation::Rotated { .. }))
        .collect();
    let reused = outcomes
        .iter()
        .filter(|o| matches!(o, Rotation::Reused { .. }))
        .count();
    let invalid = outcomes
        .iter()
        .filter(|o| matches!(o, Rotation::Invalid))
        .count();
    assert_eq!(rotated.len(), 1, "{outcomes:?}");
    assert_eq!(rotated.len() + reused + invalid, CALLERS);
    // Every loser ran after the winner committed and saw the token as used: the first of
    // them revoked the session, the rest found it revoked.
    assert_eq!((reused, invalid), (1, CALLERS - 2), "{outcomes:?}");
    assert_eq!(events(&db, "auth.refresh_reuse_detected").await.len(), 1);
    assert_eq!(
        i64s_for(
            &db,
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = $1",
            session.id
        )
        .await,
        vec![Some(2)]
    );
    assert_eq!(
        sessions::live_user(&db, session.id, T0 + 2).await.unwrap(),
        None
    );
    assert_chain_intact(&db).await;
}

/// Marks the token used inside `tx`, as a concurrent winner's claim does.
async fn claim_in(tx: &mut Tx, token_hash: &str, now_ms: i64) -> u64 {
    const CLAIM: &str = "UPDATE refresh_tokens SET used_at_ms = $2 \
         WHERE token_hash = $1 AND used_at_ms IS NULL";
    match tx.conn() {
        TxConn::Sqlite(tx) => sqlx::query(CLAIM)
            .bind(token_hash)
            .bind(now_ms)
            .execute(&mut **tx)
            .await
            .unwrap()
            .rows_affected(),
        TxConn::Postgres(tx) => sqlx::query(CLAIM)
            .bind(token_hash)
            .bind(now_ms)
            .execute(&mut **tx)
            .await
            .unwrap()
            .rows_affected(),
    }
}

/// Waits until a `rotate` is blocked behind the open claim: on PostgreSQL until a
/// connection to this test's database waits on a lock; on SQLite, whose writers wait in `BEGIN IMMEDIATE` where nothing
/// shows it, for a moment.
async fn until_blocked(db: &Db) {
    match db.backend() {
        Backend::Postgres => {
            for _ in 0..500 {
                let waiting = count(
                    db,
                    "SELECT COUNT(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .await;
                if waiting > 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("rotate never waited on the claimed row");
        }
        Backend::Sqlite => tokio::time::sleep(Duration::from_millis(200)).await,
    }
}

/// The PostgreSQL READ COMMITTED case made deterministic: a rotation that starts while
/// another transaction holds an uncommitted claim on the same token waits for it, then
/// acts on its outcome: reuse once it commits, a normal rotation if it rolls back.
pub async fn a_rotation_waiting_on_an_uncommitted_claim_sees_its_outcome(db: Db) {
    let user = create_user(&db, "waiter@example.org").await;
    for commit in [true, false] {
        let hash = if commit {
            "h-committed"
        } else {
            "h-rolled-back"
        };
        let session = login(&db, user.id, hash, T0, DAY_MS).await;

        let mut winner = db.begin().await.unwrap();
        assert_eq!(claim_in(&mut winner, hash, T0 + 1).await, 1);
        let waiter = {
            let db = db.clone();
            tokio::spawn(async move { rotate(&db, hash, &format!("{hash}-next"), T0 + 2).await })
        };
        until_blocked(&db).await;
        assert!(!waiter.is_finished());

        if commit {
            winner.commit().await.unwrap();
            assert_eq!(
                waiter.await.unwrap(),
                Rotation::Reused {
                    session_id: session.id,
                    user_id: user.id
                }
            );
        } else {
            winner.rollback().await.unwrap();
            assert!(matches!(
                waiter.await.unwrap(),
                Rotation::Rotated { session: ref s, .. } if s.id == session.id
            ));
        }
    }
    assert_eq!(events(&db, "auth.refresh_reuse_detected").await.len(), 1);
    assert_chain_intact(&db).await;
}

async fn find_live_by_refresh_sees_only_unused_tokens_of_live_sessions(db: Db) {
    let user = create_user(&db, "cookie@example.org").await;
    let session = login(&db, user.id, "h-1", T0, DAY_MS).await;
    let find = |hash: &'static str, now: i64| {
        let db = db.clone();
        async move {
            sessions::find_live_by_refresh(&db, hash, now)
                .await
                .unwrap()
        }
    };

    assert_eq!(find("h-1", T0 + 1).await, Some(session.clone()));
    assert_eq!(find("h-unknown", T0 + 1).await, None);
    // Expired with its session (the token was capped at the session's end).
    assert_eq!(find("h-1", T0 + DAY_MS).await, None);

    assert!(matches!(
        rotate(&db, "h-1", "h-2", T0 + 5).await,
        Rotation::Rotated { .. }
    ));
    assert_eq!(find("h-1", T0 + 6).await, None);
    assert_eq!(find("h-2", T0 + 6).await.map(|s| s.id), Some(session.id));
    // A lookup is not a use: the used token stays merely used, the session live.
    assert_eq!(find("h-1", T0 + 7).await, None);
    assert!(
        sessions::live_user(&db, session.id, T0 + 7)
            .await
            .unwrap()
            .is_some()
    );

    assert!(
        sessions::revoke(&db, session.id, user.id, "logout", T0 + 8, None)
            .await
            .unwrap()
    );
    assert_eq!(find("h-2", T0 + 9).await, None);
}

async fn revoke_touches_only_the_owners_live_session(db: Db) {
    let alice = create_user(&db, "alice@example.org").await;
    let mallory = create_user(&db, "mallory@example.org").await;
    let session = login(&db, alice.id, "h-a", T0, DAY_MS).await;
    let audit = event("auth.logout").with_actor(mallory.id);

    assert!(
        !sessions::revoke(&db, session.id, mallory.id, "logout", T0 + 1, Some(&audit))
            .await
            .unwrap()
    );
    assert!(
        !sessions::revoke(
            &db,
            Uuid::now_v7(),
            alice.id,
            "logout",
            T0 + 1,
            Some(&audit)
        )
        .await
        .unwrap()
    );
    assert_eq!(
        sessions::live_user(&db, session.id, T0 + 1).await.unwrap(),
        Some(alice.id)
    );
    assert_eq!(
        i64s_for(
            &db,
            "SELECT revoked_at_ms FROM sessions WHERE id = $1",
            session.id
        )
        .await,
        vec![None]
    );
    assert!(events(&db, "auth.logout").await.is_empty());

    let audit = event("auth.logout").with_actor(alice.id);
    assert!(
        sessions::revoke(&db, session.id, alice.id, "logout", T0 + 2, Some(&audit))
            .await
            .unwrap()
    );
    assert_eq!(
        sessions::live_user(&db, session.id, T0 + 2).await.unwrap(),
        None
    );
    // Already revoked: false, and no second event.
    assert!(
        !sessions::revoke(&db, session.id, alice.id, "logout", T0 + 3, Some(&audit))
            .await
            .unwrap()
    );
    assert_eq!(events(&db, "auth.logout").await.len(), 1);

    // An expired session cannot be revoked either.
    let ended = login(&db, alice.id, "h-ended", T0, 10).await;
    assert!(
        !sessions::revoke(&db, ended.id, alice.id, "logout", T0 + 10, None)
            .await
            .unwrap()
    );
}

async fn revoke_all_spares_the_exception(db: Db) {
    let alice = create_user(&db, "alice@example.org").await;
    let bob = create_user(&db, "bob@example.org").await;
    let s1 = login(&db, alice.id, "h-1", T0, DAY_MS).await;
    let s2 = login(&db, alice.id, "h-2", T0 + 1, DAY_MS).await;
    let s3 = login(&db, alice.id, "h-3", T0 + 2, DAY_MS).await;
    let bobs = login(&db, bob.id, "h-b", T0, DAY_MS).await;
    let audit = event("auth.logout_all").with_actor(alice.id);
    let now = T0 + 10;

    let revoked = sessions::revoke_all(&db, alice.id, Some(s2.id), "logout_all", now, Some(&audit))
        .await
        .unwrap();
    let mut expected = vec![s1.id, s3.id];
    expected.sort();
    assert_eq!(revoked, expected);
    // The epoch moved on and the kept session moved with it: still live.
    assert_eq!(i64s_for(&db, SELECT_EPOCH, alice.id).await, vec![Some(1)]);
    assert_eq!(
        sessions::live_user(&db, s2.id, now).await.unwrap(),
        Some(alice.id)
    );
    assert_eq!(
        sessions::list_live(&db, alice.id, now)
            .await
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        vec![s2.id]
    );
    assert_eq!(
        sessions::live_user(&db, bobs.id, now).await.unwrap(),
        Some(bob.id)
    );
    assert_eq!(events(&db, "auth.logout_all").await.len(), 1);

    // Nothing left to revoke but the exception: empty, and no event.
    let none = sessions::revoke_all(&db, alice.id, Some(s2.id), "logout_all", now, Some(&audit))
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(events(&db, "auth.logout_all").await.len(), 1);

    // Without an exception the last one goes too.
    let last = sessions::revoke_all(&db, alice.id, None, "logout_all", now, None)
        .await
        .unwrap();
    assert_eq!(last, vec![s2.id]);
    assert!(
        sessions::list_live(&db, alice.id, now)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn list_live_is_newest_first_without_revoked_or_expired(db: Db) {
    let user = create_user(&db, "list@example.org").await;
    let oldest = login(&db, user.id, "h-1", T0, DAY_MS).await;
    let revoked = login(&db, user.id, "h-2", T0 + 1, DAY_MS).await;
    let short = login(&db, user.id, "h-3", T0 + 2, 100).await;
    let newest = login(&db, user.id, "h-4", T0 + 3, DAY_MS).await;
    let other = create_user(&db, "other@example.org").await;
    login(&db, other.id, "h-5", T0 + 4, DAY_MS).await;
    sessions::revoke(&db, revoked.id, user.id, "logout", T0 + 5, None)
        .await
        .unwrap();

    let ids = |sessions: Vec<rampart_core::users::Session>| {
        sessions.into_iter().map(|s| s.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(sessions::list_live(&db, user.id, T0 + 10).await.unwrap()),
        vec![newest.id, short.id, oldest.id]
    );
    // `short` ends at T0 + 102.
    assert_eq!(
        ids(sessions::list_live(&db, user.id, T0 + 102).await.unwrap()),
        vec![newest.id, oldest.id]
    );
    assert_eq!(
        sessions::list_live(&db, user.id, T0 + 10).await.unwrap()[0],
        newest
    );
}

async fn live_user_requires_a_live_session_and_a_usable_user(db: Db) {
    let user = create_user(&db, "live@example.org").await;
    let live = login(&db, user.id, "h-1", T0, DAY_MS).await;
    let revoked = login(&db, user.id, "h-2", T0, DAY_MS).await;
    let short = login(&db, user.id, "h-3", T0, 100).await;
    sessions::revoke(&db, revoked.id, user.id, "logout", T0 + 1, None)
        .await
        .unwrap();
    let now = T0 + 100;

    assert_eq!(
        sessions::live_user(&db, live.id, now).await.unwrap(),
        Some(user.id)
    );
    assert_eq!(
        sessions::live_user(&db, revoked.id, now).await.unwrap(),
        None
    );
    assert_eq!(sessions::live_user(&db, short.id, now).await.unwrap(), None);
    assert_eq!(
        sessions::live_user(&db, short.id, now - 1).await.unwrap(),
        Some(user.id)
    );
    assert_eq!(
        sessions::live_user(&db, Uuid::now_v7(), now).await.unwrap(),
        None
    );

    execute_for(&db, DISABLE_USER, user.id).await;
    assert_eq!(sessions::live_user(&db, live.id, now).await.unwrap(), None);
    execute_for(
        &db,
        "UPDATE users SET status = 'active' WHERE id = $1",
        user.id,
    )
    .await;
    assert_eq!(
        sessions::live_user(&db, live.id, now).await.unwrap(),
        Some(user.id)
    );
    execute_for(&db, DELETE_USER, user.id).await;
    assert_eq!(sessions::live_user(&db, live.id, now).await.unwrap(), None);
}

fn new_session(user_id: Uuid, credential_epoch: i64, now_ms: i64) -> NewSession {
    NewSession {
        id: Uuid::now_v7(),
        user_id,
        credential_epoch,
        now_ms,
        expires_at_ms: now_ms + DAY_MS,
        ip_address: None,
        user_agent: None,
    }
}

const COUNT_SESSIONS: &str = "SELECT COUNT(*) FROM sessions WHERE user_id = $1";

async fn create_refuses_a_stale_credential_epoch_and_writes_nothing(db: Db) {
    let user = create_user(&db, "stale@example.org").await;
    // A login read epoch 0 and checked the password; meanwhile the password changed.
    sessions::revoke_all(&db, user.id, None, "password_changed", T0, None)
        .await
        .unwrap();
    assert_eq!(i64s_for(&db, SELECT_EPOCH, user.id).await, vec![Some(1)]);
    let audit = event("auth.login_succeeded").with_actor(user.id);
    lockout::reserve(&db, &[("stale@example.org", &POLICY)], T0)
        .await
        .unwrap();
    let stale = sessions::create(
        &db,
        &new_session(user.id, 0, T0 + 1),
        &refresh_token("h-stale", T0 + DAY_MS),
        Some("stale@example.org"),
        &audit,
    )
    .await
    .unwrap();
    assert_eq!(stale, None);
    assert_eq!(i64s_for(&db, COUNT_SESSIONS, user.id).await, vec![Some(0)]);
    assert!(events(&db, "auth.login_succeeded").await.is_empty());
    let failures = "SELECT CAST(failures AS BIGINT) FROM lockouts WHERE key = $1";
    assert_eq!(
        i64s_by_text(&db, failures, "stale@example.org").await,
        vec![Some(1)],
        "a refused session resets nothing"
    );
    // At the current epoch it works; for a disabled or deleted user it does not.
    let fresh = sessions::create(
        &db,
        &new_session(user.id, 1, T0 + 2),
        &refresh_token("h-fresh", T0 + DAY_MS),
        None,
        &audit,
    )
    .await
    .unwrap();
    assert!(fresh.is_some());
    execute_for(&db, DISABLE_USER, user.id).await;
    let disabled = sessions::create(
        &db,
        &new_session(user.id, 1, T0 + 3),
        &refresh_token("h-disabled", T0 + DAY_MS),
        None,
        &audit,
    )
    .await
    .unwrap();
    assert_eq!(disabled, None);
    assert_eq!(i64s_for(&db, COUNT_SESSIONS, user.id).await, vec![Some(1)]);
    assert_eq!(events(&db, "auth.login_succeeded").await.len(), 1);
}

async fn a_session_left_at_an_old_epoch_is_dead_everywhere(db: Db) {
    let user = create_user(&db, "old-epoch@example.org").await;
    let session = login(&db, user.id, "h-old", T0, DAY_MS).await;
    let now = T0 + 10;
    assert_eq!(
        sessions::live_user(&db, session.id, now).await.unwrap(),
        Some(user.id)
    );
    // The epoch moves on without the session being revoked (as for a session inserted
    // after the revocation by a login that checked the old credentials).
    execute_for(
        &db,
        "UPDATE users SET credential_epoch = credential_epoch + 1 WHERE id = $1",
        user.id,
    )
    .await;
    assert_eq!(
        sessions::live_user(&db, session.id, now).await.unwrap(),
        None
    );
    assert_eq!(
        rampart_store::users::get_for_session(&db, user.id, session.id, now)
            .await
            .unwrap(),
        None
    );
    assert!(
        rampart_store::users::credentials_for_session(&db, user.id, session.id, now)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        sessions::find_live_by_refresh(&db, "h-old", now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(rotate(&db, "h-old", "h-next", now).await, Rotation::Invalid);
    // The refused rotation left the token unused.
    assert_eq!(i64s_by_text(&db, TOKEN_USED_AT, "h-old").await, vec![None]);
}

async fn no_session_created_while_the_epoch_moves_on_survives_it(db: Db) {
    const LOGINS: usize = 8;
    let user = create_user(&db, "racer@example.org").await;
    for round in 0..5_i64 {
        // Every login read the epoch before the change committed.
        let epoch = i64s_for(&db, SELECT_EPOCH, user.id).await[0].unwrap();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(LOGINS + 1));
        let mut tasks = Vec::new();
        for n in 0..LOGINS {
            let db = db.clone();
            let barrier = barrier.clone();
            let user_id = user.id;
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let token = format!("h-{round}-{n}");
                sessions::create(
                    &db,
                    &new_session(user_id, epoch, T0 + round),
                    &refresh_token(&token, T0 + DAY_MS),
                    None,
                    &event("auth.login_succeeded"),
                )
                .await
                .unwrap()
                .map(|s| (s.id, token))
            }));
        }
        let change = {
            let db = db.clone();
            let barrier = barrier.clone();
            let user_id = user.id;
            tokio::spawn(async move {
                barrier.wait().await;
                sessions::revoke_all(&db, user_id, None, "password_changed", T0 + round, None)
                    .await
                    .unwrap()
            })
        };
        change.await.unwrap();
        // Whatever the order, once the change is done no session of those logins lives.
        for task in tasks {
            if let Some((id, token)) = task.await.unwrap() {
                let now = T0 + round + 1;
                assert_eq!(sessions::live_user(&db, id, now).await.unwrap(), None);
                assert_eq!(
                    rotate(&db, &token, &format!("{token}-next"), now).await,
                    Rotation::Invalid
                );
            }
        }
    }
}
