//! Lockout: attempts are reserved before the check (at most `max_failures` per window, also
//! in parallel), the failure at a full window locks once, consecutive locks double up to the
//! cap, the streak ends with a success or 24 hours without a lock, and a success never
//! lifts a lock in force.

use rampart_store::Db;
use rampart_store::lockout::{self, LockoutPolicy, STREAK_RESET_MS};

use crate::users::{T0, assert_chain_intact, event, events, i64s_by_text};

backend_tests!(
    migrated: reservations_stop_at_the_maximum_until_the_window_ends,
    the_failure_at_a_full_window_locks_once_until_the_lock_expires,
    consecutive_locks_double_up_to_the_cap,
    the_streak_ends_with_a_success_or_a_day_without_a_lock,
    a_success_never_lifts_a_lock_in_force,
    a_refusal_on_one_key_counts_on_none,
    a_released_attempt_gives_its_slot_back,
    clear_forgets_attempts_locks_and_the_streak,
    a_plain_counter_counts_and_audits_once_per_window,
    parallel_reservations_let_exactly_the_maximum_through,
    parallel_failures_lock_exactly_once,
);

const WINDOW: i64 = 900_000;
const LOCK: i64 = 600_000;
const MAX_LOCK: i64 = 2_400_000;
const POLICY: LockoutPolicy = LockoutPolicy {
    max_failures: 5,
    window_ms: WINDOW,
    lock_ms: LOCK,
    max_lock_ms: MAX_LOCK,
};
const KEY: &str = "victim@example.org";

async fn reserve(db: &Db, key: &str, now_ms: i64) -> Option<i64> {
    lockout::reserve(db, &[(key, &POLICY)], now_ms)
        .await
        .unwrap()
}

async fn fail(db: &Db, key: &str, now_ms: i64) -> Option<i64> {
    let failed = event("auth.login_failed").with_details(serde_json::json!({"key": key}));
    lockout::record_failure(
        db,
        &[(key, &POLICY)],
        now_ms,
        Some(&failed),
        &event("auth.lockout").with_target("email", key),
    )
    .await
    .unwrap()
}

/// One sequential attempt that fails its check; the lock it wrote, if any.
async fn wrong(db: &Db, key: &str, now_ms: i64) -> Option<i64> {
    assert_eq!(reserve(db, key, now_ms).await, None, "reserved at {now_ms}");
    fail(db, key, now_ms).await
}

/// Five wrong attempts from `now_ms`; the lock the fifth wrote.
async fn lock_out(db: &Db, key: &str, now_ms: i64) -> i64 {
    for n in 0..4 {
        assert_eq!(wrong(db, key, now_ms + n).await, None);
    }
    wrong(db, key, now_ms + 4).await.expect("the fifth locks")
}

async fn attempts(db: &Db, key: &str) -> Option<i64> {
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

async fn reservations_stop_at_the_maximum_until_the_window_ends(db: Db) {
    for n in 0..5 {
        assert_eq!(reserve(&db, KEY, T0 + n).await, None);
    }
    assert_eq!(attempts(&db, KEY).await, Some(5));
    // No slot left: refused until the window that started at T0 ends, nothing counted.
    assert_eq!(reserve(&db, KEY, T0 + 10).await, Some(T0 + WINDOW));
    assert_eq!(attempts(&db, KEY).await, Some(5));
    assert_eq!(
        lockout::locked_until(&db, KEY, T0 + 10).await.unwrap(),
        None
    );
    // A new window starts the count again at 1.
    assert_eq!(reserve(&db, KEY, T0 + WINDOW).await, None);
    assert_eq!(attempts(&db, KEY).await, Some(1));
    // Other keys are independent.
    assert_eq!(reserve(&db, "other@example.org", T0).await, None);
}

async fn the_failure_at_a_full_window_locks_once_until_the_lock_expires(db: Db) {
    for n in 0..4 {
        assert_eq!(wrong(&db, KEY, T0 + n * 1_000).await, None);
    }
    assert_eq!(attempts(&db, KEY).await, Some(4));
    let now = T0 + 5_000;
    let until = now + LOCK;
    assert_eq!(wrong(&db, KEY, now).await, Some(until));
    assert_eq!(attempts(&db, KEY).await, Some(0));
    let lockouts = events(&db, "auth.lockout").await;
    assert_eq!(lockouts.len(), 1);
    assert_eq!(
        (lockouts[0].at_ms, lockouts[0].target_id.as_deref()),
        (now, Some(KEY))
    );
    let failed = events(&db, "auth.login_failed").await;
    assert_eq!(failed.len(), 5);
    // The failure that locked is recorded before the lock.
    assert!(failed[0].seq < lockouts[0].seq);

    // Locked: every reservation is refused with the lock's end, nothing is counted.
    assert_eq!(reserve(&db, KEY, now + 1).await, Some(until));
    assert_eq!(reserve(&db, KEY, until - 1).await, Some(until));
    assert_eq!(attempts(&db, KEY).await, Some(0));
    assert_eq!(
        lockout::locked_until(&db, KEY, until - 1).await.unwrap(),
        Some(until)
    );
    // A late failure of an attempt reserved before the lock writes no second lock.
    assert_eq!(fail(&db, KEY, now + 2).await, None);
    assert_eq!(events(&db, "auth.lockout").await.len(), 1);
    assert_eq!(events(&db, "auth.login_failed").await.len(), 6);

    // After the lock, counting starts again at 1.
    assert_eq!(lockout::locked_until(&db, KEY, until).await.unwrap(), None);
    assert_eq!(reserve(&db, KEY, until).await, None);
    assert_eq!(attempts(&db, KEY).await, Some(1));
    assert_chain_intact(&db).await;
}

async fn consecutive_locks_double_up_to_the_cap(db: Db) {
    let first = lock_out(&db, KEY, T0).await;
    assert_eq!(first, T0 + 4 + LOCK);
    let second = lock_out(&db, KEY, first).await;
    assert_eq!(second, first + 4 + 2 * LOCK);
    let third = lock_out(&db, KEY, second).await;
    assert_eq!(third, second + 4 + MAX_LOCK, "4 × LOCK capped at MAX_LOCK");
    let fourth = lock_out(&db, KEY, third).await;
    assert_eq!(fourth, third + 4 + MAX_LOCK);
    assert_eq!(events(&db, "auth.lockout").await.len(), 4);
}

async fn the_streak_ends_with_a_success_or_a_day_without_a_lock(db: Db) {
    let first = lock_out(&db, KEY, T0).await;
    // A success after the lock resets the counter and the streak.
    assert_eq!(reserve(&db, KEY, first).await, None);
    lockout::succeeded(&db, KEY, first).await.unwrap();
    assert_eq!(attempts(&db, KEY).await, None);
    let again = lock_out(&db, KEY, first + 10).await;
    assert_eq!(again, first + 14 + LOCK, "a fresh streak");

    // The next lock within 24 hours of the last one's end doubles…
    let start = again + STREAK_RESET_MS - 100;
    assert_eq!(lock_out(&db, KEY, start).await, start + 4 + 2 * LOCK);
    // …but 24 hours after a lock without a new one, the streak restarts.
    let ended = start + 4 + 2 * LOCK;
    let later = ended + STREAK_RESET_MS;
    assert_eq!(lock_out(&db, KEY, later).await, later + 4 + LOCK);
}

async fn a_success_never_lifts_a_lock_in_force(db: Db) {
    // The right password is reserved first; four wrong ones fill the window and lock.
    assert_eq!(reserve(&db, KEY, T0).await, None);
    for n in 1..4 {
        assert_eq!(wrong(&db, KEY, T0 + n).await, None);
    }
    let until = wrong(&db, KEY, T0 + 4).await.expect("the window is full");
    // The right password's success arrives late: the lock stays.
    lockout::succeeded(&db, KEY, T0 + 5).await.unwrap();
    assert_eq!(
        lockout::locked_until(&db, KEY, T0 + 5).await.unwrap(),
        Some(until)
    );
    assert_eq!(reserve(&db, KEY, T0 + 6).await, Some(until));
    // Once the lock is over, a success does reset.
    lockout::succeeded(&db, KEY, until).await.unwrap();
    assert_eq!(attempts(&db, KEY).await, None);
}

async fn a_refusal_on_one_key_counts_on_none(db: Db) {
    let tight = LockoutPolicy {
        max_failures: 2,
        ..POLICY
    };
    let keys = [("victim@example.org|192.0.2.1", &POLICY), (KEY, &tight)];
    assert_eq!(lockout::reserve(&db, &keys, T0).await.unwrap(), None);
    assert_eq!(lockout::reserve(&db, &keys, T0 + 1).await.unwrap(), None);
    assert_eq!(
        lockout::reserve(&db, &keys, T0 + 2).await.unwrap(),
        Some(T0 + WINDOW)
    );
    assert_eq!(attempts(&db, "victim@example.org|192.0.2.1").await, Some(2));
    assert_eq!(attempts(&db, KEY).await, Some(2));
}

async fn a_released_attempt_gives_its_slot_back(db: Db) {
    for n in 0..5 {
        assert_eq!(reserve(&db, KEY, T0 + n).await, None);
    }
    lockout::release(&db, &[KEY]).await.unwrap();
    assert_eq!(attempts(&db, KEY).await, Some(4));
    assert_eq!(reserve(&db, KEY, T0 + 10).await, None);
    assert_eq!(reserve(&db, KEY, T0 + 11).await, Some(T0 + WINDOW));
    // Releasing a key without a row is fine.
    lockout::release(&db, &["nobody@example.org"])
        .await
        .unwrap();
}

async fn clear_forgets_attempts_locks_and_the_streak(db: Db) {
    let until = lock_out(&db, KEY, T0).await;
    lockout::clear(&db, KEY).await.unwrap();
    assert_eq!(
        lockout::locked_until(&db, KEY, T0 + 10).await.unwrap(),
        None
    );
    assert_eq!(attempts(&db, KEY).await, None);
    // The next lock starts a new streak.
    assert_eq!(lock_out(&db, KEY, until).await, until + 4 + LOCK);
    lockout::clear(&db, "nobody@example.org").await.unwrap();
}

async fn a_plain_counter_counts_and_audits_once_per_window(db: Db) {
    let over = event("auth.password_reset_throttled");
    let key = "reset|victim@example.org";
    let mut counts = Vec::new();
    for n in 0..5 {
        counts.push(
            lockout::count(&db, key, T0 + n, 3_600_000, 3, &over)
                .await
                .unwrap(),
        );
    }
    assert_eq!(counts, [1, 2, 3, 4, 5]);
    assert_eq!(events(&db, "auth.password_reset_throttled").await.len(), 1);
    // A new window starts again at 1.
    let n = lockout::count(&db, key, T0 + 3_600_000, 3_600_000, 3, &over)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

async fn parallel_reservations_let_exactly_the_maximum_through(db: Db) {
    const CALLERS: usize = 16;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let db = db.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                reserve(&db, KEY, T0).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let allowed = outcomes.iter().filter(|o| o.is_none()).count();
    let refused = outcomes.iter().filter(|o| **o == Some(T0 + WINDOW)).count();
    assert_eq!((allowed, refused), (5, CALLERS - 5), "{outcomes:?}");
    assert_eq!(attempts(&db, KEY).await, Some(5));
}

async fn parallel_failures_lock_exactly_once(db: Db) {
    const CALLERS: usize = 5;
    for n in 0..CALLERS {
        assert_eq!(reserve(&db, KEY, T0 + n as i64).await, None);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let db = db.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                fail(&db, KEY, T0 + 10).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let locked = outcomes
        .iter()
        .filter(|o| **o == Some(T0 + 10 + LOCK))
        .count();
    let open = outcomes.iter().filter(|o| o.is_none()).count();
    assert_eq!((locked, open), (1, CALLERS - 1), "{outcomes:?}");
    assert_eq!(events(&db, "auth.lockout").await.len(), 1);
    assert_eq!(events(&db, "auth.login_failed").await.len(), CALLERS);
    assert_eq!(attempts(&db, KEY).await, Some(0));
    assert_eq!(
        lockout::locked_until(&db, KEY, T0 + 11).await.unwrap(),
        Some(T0 + 10 + LOCK)
    );
    assert_chain_intact(&db).await;
}
