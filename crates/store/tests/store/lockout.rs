//! Lockout: the fifth failure in a window locks the key once, windows and locks expire,
//! clearing resets, and concurrent failures are all counted.

use rampart_store::Db;
use rampart_store::lockout::{self, LockoutPolicy};

use crate::users::{T0, assert_chain_intact, event, events, i64s_by_text};

backend_tests!(
    migrated: fifth_failure_locks_once_until_the_lock_expires,
    a_failure_after_the_window_starts_a_new_count,
    clear_forgets_failures_and_locks,
    a_policy_of_one_failure_locks_at_once,
    parallel_failures_are_all_counted,
    parallel_failures_lock_exactly_once,
);

const WINDOW: i64 = 900_000;
const LOCK: i64 = 600_000;
const POLICY: LockoutPolicy = LockoutPolicy {
    max_failures: 5,
    window_ms: WINDOW,
    lock_ms: LOCK,
};
const KEY: &str = "victim@example.org";

async fn fail(db: &Db, key: &str, now_ms: i64, policy: &LockoutPolicy) -> Option<i64> {
    let failed = event("auth.login_failed").with_details(serde_json::json!({"key": key}));
    lockout::record_failure(
        db,
        key,
        now_ms,
        policy,
        Some(&failed),
        &event("auth.lockout").with_target("email", key),
    )
    .await
    .unwrap()
}

async fn failures(db: &Db, key: &str) -> Option<i64> {
    i64s_by_text(
        db,
        "SELECT CAST(failures AS BIGINT) FROM lockouts WHERE key = $1",
        key,
    )
    .await
    .into_iter()
    .next()
    .flatten()
}

async fn fifth_failure_locks_once_until_the_lock_expires(db: Db) {
    for n in 0..4 {
        assert_eq!(fail(&db, KEY, T0 + n * 1_000, &POLICY).await, None);
    }
    assert_eq!(failures(&db, KEY).await, Some(4));
    assert_eq!(
        lockout::locked_until(&db, KEY, T0 + 4_000).await.unwrap(),
        None
    );

    let now = T0 + 5_000;
    let until = now + LOCK;
    assert_eq!(fail(&db, KEY, now, &POLICY).await, Some(until));
    assert_eq!(failures(&db, KEY).await, Some(0));
    let lockouts = events(&db, "auth.lockout").await;
    assert_eq!(lockouts.len(), 1);
    assert_eq!(
        (lockouts[0].at_ms, lockouts[0].target_id.as_deref()),
        (now, Some(KEY))
    );
    // The failure that locked is recorded before the lock.
    let failed = events(&db, "auth.login_failed").await;
    assert_eq!(failed.len(), 5);
    assert!(failed[0].seq < lockouts[0].seq);

    assert_eq!(
        lockout::locked_until(&db, KEY, now).await.unwrap(),
        Some(until)
    );
    assert_eq!(
        lockout::locked_until(&db, KEY, until - 1).await.unwrap(),
        Some(until)
    );
    assert_eq!(lockout::locked_until(&db, KEY, until).await.unwrap(), None);
    assert_eq!(
        lockout::locked_until(&db, "other@example.org", now)
            .await
            .unwrap(),
        None
    );

    // A failure while locked changes nothing but is still recorded as a failure.
    assert_eq!(fail(&db, KEY, now + 1, &POLICY).await, Some(until));
    assert_eq!(failures(&db, KEY).await, Some(0));
    assert_eq!(events(&db, "auth.lockout").await.len(), 1);
    assert_eq!(events(&db, "auth.login_failed").await.len(), 6);

    // After the lock, counting starts again at 1, and five more failures lock again.
    for n in 0..4 {
        assert_eq!(fail(&db, KEY, until + n, &POLICY).await, None);
    }
    assert_eq!(failures(&db, KEY).await, Some(4));
    assert_eq!(
        fail(&db, KEY, until + 10, &POLICY).await,
        Some(until + 10 + LOCK)
    );
    assert_eq!(events(&db, "auth.lockout").await.len(), 2);
    assert_chain_intact(&db).await;
}

async fn a_failure_after_the_window_starts_a_new_count(db: Db) {
    for n in 0..4 {
        assert_eq!(fail(&db, KEY, T0 + n, &POLICY).await, None);
    }
    // The window started at T0 and ends at T0 + WINDOW: this failure is the first of a new one.
    assert_eq!(fail(&db, KEY, T0 + WINDOW, &POLICY).await, None);
    assert_eq!(failures(&db, KEY).await, Some(1));
    for n in 1..4 {
        assert_eq!(fail(&db, KEY, T0 + WINDOW + n, &POLICY).await, None);
    }
    assert_eq!(failures(&db, KEY).await, Some(4));
    // The new window runs from T0 + WINDOW: its fifth failure locks.
    let now = T0 + 2 * WINDOW - 1;
    assert_eq!(fail(&db, KEY, now, &POLICY).await, Some(now + LOCK));
    assert_eq!(events(&db, "auth.lockout").await.len(), 1);
}

async fn clear_forgets_failures_and_locks(db: Db) {
    for n in 0..4 {
        fail(&db, KEY, T0 + n, &POLICY).await;
    }
    lockout::clear(&db, KEY).await.unwrap();
    assert_eq!(failures(&db, KEY).await, None);
    for n in 0..4 {
        assert_eq!(fail(&db, KEY, T0 + 10 + n, &POLICY).await, None);
    }
    assert!(fail(&db, KEY, T0 + 20, &POLICY).await.is_some());
    assert!(
        lockout::locked_until(&db, KEY, T0 + 21)
            .await
            .unwrap()
            .is_some()
    );

    lockout::clear(&db, KEY).await.unwrap();
    assert_eq!(
        lockout::locked_until(&db, KEY, T0 + 21).await.unwrap(),
        None
    );
    assert_eq!(fail(&db, KEY, T0 + 22, &POLICY).await, None);
    assert_eq!(failures(&db, KEY).await, Some(1));
    // Clearing a key that has no row is fine.
    lockout::clear(&db, "nobody@example.org").await.unwrap();
}

async fn a_policy_of_one_failure_locks_at_once(db: Db) {
    let strict = LockoutPolicy {
        max_failures: 1,
        ..POLICY
    };
    assert_eq!(fail(&db, KEY, T0, &strict).await, Some(T0 + LOCK));
    assert_eq!(
        fail(&db, KEY, T0 + LOCK, &strict).await,
        Some(T0 + 2 * LOCK)
    );
    assert_eq!(events(&db, "auth.lockout").await.len(), 2);
}

async fn parallel_failures_are_all_counted(db: Db) {
    const CALLERS: i64 = 16;
    let lenient = LockoutPolicy {
        max_failures: 100,
        ..POLICY
    };
    let tasks: Vec<_> = (0..CALLERS)
        .map(|n| {
            let db = db.clone();
            tokio::spawn(async move { fail(&db, KEY, T0 + n, &lenient).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), None);
    }
    assert_eq!(failures(&db, KEY).await, Some(CALLERS));
    assert_eq!(
        events(&db, "auth.login_failed").await.len(),
        CALLERS as usize
    );
    assert_chain_intact(&db).await;
}

async fn parallel_failures_lock_exactly_once(db: Db) {
    const CALLERS: usize = 16;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let db = db.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                fail(&db, KEY, T0, &POLICY).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    // Failures 1–4 leave the key open; the 5th locks it; the other 11 find it locked.
    let locked = outcomes.iter().filter(|o| **o == Some(T0 + LOCK)).count();
    let open = outcomes.iter().filter(|o| o.is_none()).count();
    assert_eq!((open, locked), (4, CALLERS - 4), "{outcomes:?}");
    assert_eq!(events(&db, "auth.lockout").await.len(), 1);
    assert_eq!(events(&db, "auth.login_failed").await.len(), CALLERS);
    assert_eq!(failures(&db, KEY).await, Some(0));
    assert_eq!(
        lockout::locked_until(&db, KEY, T0 + 1).await.unwrap(),
        Some(T0 + LOCK)
    );
    assert_chain_intact(&db).await;
}
