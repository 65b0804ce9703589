//! Purge: ended sessions go with their refresh tokens while live ones keep theirs (used
//! ones too, so reuse is still detected); dead challenges, reset tokens and lockout
//! counters go and live ones stay and still work; nothing within the grace goes; the audit
//! trail is untouched; a second run finds nothing; big tables go in batches; on
//! PostgreSQL a held lock means nothing is done, and a failed or cancelled purge leaves
//! the lock free.

use std::time::Duration;

use rampart_store::lockout::{self, LockoutPolicy};
use rampart_store::purge::{
    self, BATCH, DEFAULT_GRACE_MS, PURGE_LOCK_KEY, PurgeCounts, PurgePolicy,
};
use rampart_store::sessions::{self, NewSession, Rotation};
use rampart_store::{Db, mfa, resets};
use uuid::Uuid;

use crate::users::{
    DAY_MS, T0, assert_chain_intact, count, create_user, event, i64s_by_text, i64s_for, login,
    refresh_token,
};

backend_tests!(
    migrated: ended_sessions_go_with_their_tokens_and_live_ones_keep_theirs,
    dead_challenges_and_reset_tokens_go_and_live_ones_still_work,
    stale_lockout_counters_go_and_restart_as_if_they_had_been_kept,
    big_tables_are_purged_in_batches,
    a_held_lock_means_nothing_is_done,
    a_failed_purge_leaves_the_lock_free,
    a_cancelled_purge_leaves_the_lock_free,
    a_counter_restarted_while_the_purge_waits_is_kept,
    expired_webauthn_ceremonies_go_and_live_ones_can_still_be_taken,
);

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const GRACE: i64 = DEFAULT_GRACE_MS;
const POLICY: PurgePolicy = PurgePolicy {
    lockout_window_ms: HOUR,
    ended_session_retention_ms: 7 * DAY_MS,
    grace_ms: GRACE,
};
/// When the purges run: long after [`T0`], when the test users were created.
const NOW: i64 = T0 + 40 * DAY_MS;

const SESSION_ROWS: &str = "SELECT COUNT(*) FROM sessions WHERE id = $1";
const TOKEN_ROWS: &str = "SELECT COUNT(*) FROM refresh_tokens WHERE token_hash = $1";
const CHALLENGE_ROWS: &str = "SELECT COUNT(*) FROM mfa_challenges WHERE id = $1";
const RESET_ROWS: &str = "SELECT COUNT(*) FROM user_tokens WHERE id = $1";
const LOCKOUT_ROWS: &str = "SELECT COUNT(*) FROM lockouts WHERE key = $1";
const AUDIT_ROWS: &str = "SELECT COUNT(*) FROM audit_events";

async fn purge_at_now(db: &Db) -> PurgeCounts {
    purge::purge_expired(db, NOW, &POLICY)
        .await
        .unwrap()
        .expect("no other runner holds the lock")
}

/// Purges, then checks that a second run deletes nothing and that the audit trail is the
/// same and intact.
async fn purge_twice(db: &Db) -> PurgeCounts {
    let audit_before = count(db, AUDIT_ROWS).await;
    assert!(audit_before > 0, "the fixtures appended audit events");
    let counts = purge_at_now(db).await;
    assert_eq!(purge_at_now(db).await, PurgeCounts::default(), "idempotent");
    assert_eq!(count(db, AUDIT_ROWS).await, audit_before);
    assert_chain_intact(db).await;
    counts
}

async fn session_exists(db: &Db, id: Uuid) -> bool {
    i64s_for(db, SESSION_ROWS, id).await == vec![Some(1)]
}

async fn token_exists(db: &Db, hash: &str) -> bool {
    i64s_by_text(db, TOKEN_ROWS, hash).await == vec![Some(1)]
}

async fn rotate(db: &Db, presented: &str, next: &str, now_ms: i64) -> Rotation {
    sessions::rotate(
        db,
        presented,
        &refresh_token(next, now_ms + 7 * DAY_MS),
        now_ms,
        &event("auth.refresh_reuse_detected"),
    )
    .await
    .unwrap()
}

async fn ended_sessions_go_with_their_tokens_and_live_ones_keep_theirs(db: Db) {
    let user = create_user(&db, "purge@example.org").await;

    // Live, with a rotation chain: a (used, expired), b (used, expired), c (used,
    // unexpired), d (unused, unexpired, the current one).
    let live = login(&db, user.id, "a", NOW - 10 * DAY_MS, 30 * DAY_MS).await;
    assert!(matches!(
        rotate(&db, "a", "b", NOW - 9 * DAY_MS).await,
        Rotation::Rotated { .. }
    ));
    assert!(matches!(
        rotate(&db, "b", "c", NOW - 2 * DAY_MS - 1).await,
        Rotation::Rotated { .. }
    ));
    assert!(matches!(
        rotate(&db, "c", "d", NOW - 10 * MINUTE).await,
        Rotation::Rotated { .. }
    ));

    // Live, holding only unused tokens that expired: one before the grace (goes), one
    // within it (stays).
    let stale = NewSession {
        id: Uuid::now_v7(),
        user_id: user.id,
        credential_epoch: 0,
        now_ms: NOW - DAY_MS,
        expires_at_ms: NOW + 29 * DAY_MS,
        ip_address: None,
        user_agent: None,
    };
    sessions::create(
        &db,
        &stale,
        &refresh_token("stale-expired", NOW - GRACE - 1),
        None,
        &event("auth.login_succeeded"),
    )
    .await
    .unwrap()
    .unwrap();
    let other = NewSession {
        id: Uuid::now_v7(),
        ..stale.clone()
    };
    sessions::create(
        &db,
        &other,
        &refresh_token("recently-expired", NOW - MINUTE),
        None,
        &event("auth.login_succeeded"),
    )
    .await
    .unwrap()
    .unwrap();

    // Past its hard end (a day ago), with a used and an unused token: all go.
    let aged_out = login(&db, user.id, "x", NOW - 31 * DAY_MS, 30 * DAY_MS).await;
    assert!(matches!(
        rotate(&db, "x", "y", NOW - 30 * DAY_MS).await,
        Rotation::Rotated { .. }
    ));
    // Past its hard end, but within the grace: stays (its unused token expired long ago).
    let just_ended = login(
        &db,
        user.id,
        "j",
        NOW - 30 * DAY_MS - 10 * MINUTE,
        30 * DAY_MS,
    )
    .await;

    // Revoked 8 days ago (more than the retention): goes, with its used and unused tokens.
    let revoked_long_ago = login(&db, user.id, "r1", NOW - 20 * DAY_MS, 30 * DAY_MS).await;
    assert!(matches!(
        rotate(&db, "r1", "r2", NOW - 19 * DAY_MS).await,
        Rotation::Rotated { .. }
    ));
    assert!(
        sessions::revoke(
            &db,
            revoked_long_ago.id,
            user.id,
            "logout",
            NOW - 8 * DAY_MS,
            None
        )
        .await
        .unwrap()
    );
    // Revoked yesterday: stays, with its (still unexpired) token.
    let revoked_recently = login(&db, user.id, "n", NOW - 3 * DAY_MS, 30 * DAY_MS).await;
    assert!(
        sessions::revoke(
            &db,
            revoked_recently.id,
            user.id,
            "logout",
            NOW - DAY_MS,
            None
        )
        .await
        .unwrap()
    );

    let counts = purge_twice(&db).await;
    assert_eq!(
        counts,
        PurgeCounts {
            sessions: 2,
            refresh_tokens: 6,
            ..PurgeCounts::default()
        }
    );
    for (id, kept) in [
        (live.id, true),
        (stale.id, true),
        (other.id, true),
        (aged_out.id, false),
        (just_ended.id, true),
        (revoked_long_ago.id, false),
        (revoked_recently.id, true),
    ] {
        assert_eq!(session_exists(&db, id).await, kept, "session {id}");
    }
    for (hash, kept) in [
        ("a", true),
        ("b", true),
        ("c", true),
        ("d", true),
        ("stale-expired", false),
        ("recently-expired", true),
        ("x", false),
        ("y", false),
        ("j", false),
        ("r1", false),
        ("r2", false),
        ("n", true),
    ] {
        assert_eq!(token_exists(&db, hash).await, kept, "token {hash}");
    }
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM refresh_tokens t \
             WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = t.session_id)"
        )
        .await,
        0
    );

    // The live session still works, and reuse of a used token (expired or not) is still
    // detected: the thief-rotated-first case survives the purge.
    assert_eq!(
        rotate(&db, "stale-expired", "z", NOW).await,
        Rotation::Invalid
    );
    assert!(matches!(
        rotate(&db, "d", "e", NOW).await,
        Rotation::Rotated { .. }
    ));
    assert_eq!(
        rotate(&db, "a", "f", NOW).await,
        Rotation::Reused {
            session_id: live.id,
            user_id: user.id
        }
    );
    assert_eq!(sessions::live_user(&db, live.id, NOW).await.unwrap(), None);
}

async fn dead_challenges_and_reset_tokens_go_and_live_ones_still_work(db: Db) {
    let user = create_user(&db, "challenged@example.org").await;
    let user_id = user.id;
    let challenge = |hash: &'static str, created: i64, expires: i64| {
        let db = db.clone();
        async move {
            let id = Uuid::now_v7();
            mfa::create_challenge(&db, id, user_id, 0, hash, created, expires)
                .await
                .unwrap();
            id
        }
    };
    let expired = challenge("c-expired", NOW - 2 * HOUR, NOW - HOUR).await;
    let expired_in_grace = challenge("c-grace", NOW - HOUR, NOW - 10 * MINUTE).await;
    let used = challenge("c-used", NOW - 2 * HOUR, NOW + HOUR).await;
    assert!(mfa::consume_challenge(&db, used, NOW - HOUR).await.unwrap());
    let used_recently = challenge("c-used-recently", NOW - 2 * MINUTE, NOW + HOUR).await;
    assert!(
        mfa::consume_challenge(&db, used_recently, NOW - MINUTE)
            .await
            .unwrap()
    );
    let live = challenge("c-live", NOW - MINUTE, NOW + 4 * MINUTE).await;

    // Creating a reset token marks the user's earlier one used.
    let reset = |user_id: Uuid, hash: &'static str, created: i64, expires: i64| {
        let db = db.clone();
        async move {
            let id = Uuid::now_v7();
            resets::create(
                &db,
                id,
                user_id,
                hash,
                created,
                expires,
                &event("auth.password_reset_requested"),
            )
            .await
            .unwrap();
            id
        }
    };
    let superseded = reset(user.id, "r-old", NOW - 3 * HOUR, NOW + DAY_MS).await;
    let newest = reset(user.id, "r-new", NOW - 2 * HOUR, NOW + DAY_MS).await;
    let second = create_user(&db, "second@example.org").await;
    let expired_reset = reset(second.id, "r-expired", NOW - 3 * HOUR, NOW - 2 * HOUR).await;
    let third = create_user(&db, "third@example.org").await;
    let reset_in_grace = reset(third.id, "r-grace", NOW - 40 * MINUTE, NOW - 5 * MINUTE).await;

    let counts = purge_twice(&db).await;
    assert_eq!(
        counts,
        PurgeCounts {
            mfa_challenges: 2,
            password_resets: 2,
            ..PurgeCounts::default()
        }
    );
    for (id, kept) in [
        (expired, false),
        (expired_in_grace, true),
        (used, false),
        (used_recently, true),
        (live, true),
    ] {
        let rows = i64s_for(&db, CHALLENGE_ROWS, id).await;
        assert_eq!(rows == vec![Some(1)], kept, "challenge {id}");
    }
    for (id, kept) in [
        (superseded, false),
        (newest, true),
        (expired_reset, false),
        (reset_in_grace, true),
    ] {
        let rows = i64s_for(&db, RESET_ROWS, id).await;
        assert_eq!(rows == vec![Some(1)], kept, "reset {id}");
    }

    // What stayed live still works; what went answers as it did before.
    let found = mfa::live_challenge(&db, "c-live", NOW, 5).await.unwrap();
    assert_eq!(found.map(|c| c.id), Some(live));
    assert_eq!(
        mfa::live_challenge(&db, "c-used", NOW, 5).await.unwrap(),
        None
    );
    assert_eq!(
        resets::peek(&db, "r-new", NOW).await.unwrap(),
        Some(user.id)
    );
    assert_eq!(resets::peek(&db, "r-old", NOW).await.unwrap(), None);
    assert_eq!(resets::peek(&db, "r-expired", NOW).await.unwrap(), None);
}

const LOGIN_POLICY: LockoutPolicy = LockoutPolicy {
    max_failures: 5,
    window_ms: 15 * MINUTE,
    lock_ms: 15 * MINUTE,
    max_lock_ms: DAY_MS,
};

/// One attempt, reserved and then failed; the lock it wrote, if any.
async fn fail(db: &Db, key: &str, now_ms: i64, policy: &LockoutPolicy) -> Option<i64> {
    let reserved = lockout::reserve(db, &[(key, policy)], now_ms)
        .await
        .unwrap();
    assert_eq!(reserved, None, "{key} is not locked at {now_ms}");
    lockout::record_failure(
        db,
        &[(key, policy)],
        now_ms,
        Some(&event("auth.login_failed")),
        &event("auth.lockout"),
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

async fn lock(db: &Db, key: &str, now_ms: i64, policy: &LockoutPolicy) -> i64 {
    for n in 0..4 {
        assert_eq!(fail(db, key, now_ms + n, policy).await, None);
    }
    fail(db, key, now_ms + 4, policy).await.unwrap()
}

async fn stale_lockout_counters_go_and_restart_as_if_they_had_been_kept(db: Db) {
    // The purge looks back further than the longest window (1 h) plus the grace.
    let stale_start = NOW - GRACE - HOUR;
    fail(&db, "stale", stale_start, &LOGIN_POLICY).await;
    fail(&db, "stale", stale_start + 1, &LOGIN_POLICY).await;
    // A lock that ended recently: its streak still counts, so the row stays.
    lock(&db, "lock-expired", stale_start - 10, &LOGIN_POLICY).await;
    // A lock that ended over a day before the cutoff: nothing left to remember.
    lock(
        &db,
        "lock-long-ago",
        NOW - GRACE - 2 * DAY_MS,
        &LOGIN_POLICY,
    )
    .await;
    // Locked for a day from two hours ago.
    let long_lock = LockoutPolicy {
        lock_ms: DAY_MS,
        ..LOGIN_POLICY
    };
    let until = lock(&db, "locked", NOW - 2 * HOUR, &long_lock).await;
    // Its 15-minute window is over, but a 1-hour key could still be inside one.
    fail(&db, "in-longest-window", stale_start + 1_000, &LOGIN_POLICY).await;
    fail(&db, "in-window", NOW - MINUTE, &LOGIN_POLICY).await;

    let counts = purge_twice(&db).await;
    assert_eq!(
        counts,
        PurgeCounts {
            lockouts: 2,
            ..PurgeCounts::default()
        }
    );
    for (key, kept) in [
        ("stale", false),
        ("lock-expired", true),
        ("lock-long-ago", false),
        ("locked", true),
        ("in-longest-window", true),
        ("in-window", true),
    ] {
        let rows = i64s_by_text(&db, LOCKOUT_ROWS, key).await;
        assert_eq!(rows == vec![Some(1)], kept, "lockout {key}");
    }

    // The lock holds; a purged counter restarts at 1, as it would have with its row.
    assert_eq!(
        lockout::locked_until(&db, "locked", NOW).await.unwrap(),
        Some(until)
    );
    assert_eq!(fail(&db, "stale", NOW, &LOGIN_POLICY).await, None);
    assert_eq!(failures(&db, "stale").await, Some(1));
    assert_eq!(fail(&db, "lock-expired", NOW, &LOGIN_POLICY).await, None);
    assert_eq!(failures(&db, "lock-expired").await, Some(1));
    assert_eq!(fail(&db, "lock-long-ago", NOW, &LOGIN_POLICY).await, None);
    assert_eq!(failures(&db, "lock-long-ago").await, Some(1));
    assert_eq!(fail(&db, "in-window", NOW, &LOGIN_POLICY).await, None);
    assert_eq!(failures(&db, "in-window").await, Some(2));
}

/// Runs `sql` with the BIGINT parameters `args`.
async fn execute(db: &Db, sql: &'static str, args: &[i64]) {
    match db {
        Db::Sqlite(pool) => {
            let mut query = sqlx::query(sql);
            for arg in args {
                query = query.bind(*arg);
            }
            query.execute(pool).await.unwrap();
        }
        Db::Postgres(pool) => {
            let mut query = sqlx::query(sql);
            for arg in args {
                query = query.bind(*arg);
            }
            query.execute(pool).await.unwrap();
        }
    }
}

// $1 rows, $2 window start. One text for both dialects.
const INSERT_STALE_LOCKOUTS: &str = "WITH RECURSIVE n(i) AS \
     (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
     INSERT INTO lockouts (key, failures, window_started_at_ms, locked_until_ms) \
     SELECT 'bulk-' || i, 1, $2, NULL FROM n";

async fn big_tables_are_purged_in_batches(db: Db) {
    let rows = 2 * BATCH + BATCH / 2;
    execute(&db, INSERT_STALE_LOCKOUTS, &[rows, NOW - 2 * DAY_MS]).await;
    fail(&db, "in-window", NOW - MINUTE, &LOGIN_POLICY).await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM lockouts").await, rows + 1);

    let counts = purge_twice(&db).await;
    assert_eq!(counts.lockouts, u64::try_from(rows).unwrap());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM lockouts").await, 1);
}

async fn a_held_lock_means_nothing_is_done(db: Db) {
    fail(&db, "stale", NOW - 2 * DAY_MS, &LOGIN_POLICY).await;
    let Db::Postgres(pool) = &db else {
        // SQLite serves one instance: no lock, the purge always runs.
        assert_eq!(purge_at_now(&db).await.lockouts, 1);
        return;
    };
    let mut other = pool.acquire().await.unwrap();
    let try_lock = "SELECT pg_try_advisory_lock($1)";
    let unlock = "SELECT pg_advisory_unlock($1)";
    let took: bool = sqlx::query_scalar(try_lock)
        .bind(PURGE_LOCK_KEY)
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(took);

    assert_eq!(purge::purge_expired(&db, NOW, &POLICY).await.unwrap(), None);
    assert_eq!(
        i64s_by_text(&db, LOCKOUT_ROWS, "stale").await,
        vec![Some(1)]
    );

    let released: bool = sqlx::query_scalar(unlock)
        .bind(PURGE_LOCK_KEY)
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(released);
    assert_eq!(purge_at_now(&db).await.lockouts, 1);
    // The purge released its lock: another session takes it at once.
    let took: bool = sqlx::query_scalar(try_lock)
        .bind(PURGE_LOCK_KEY)
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(took, "the purge left its lock held");
    let released: bool = sqlx::query_scalar(unlock)
        .bind(PURGE_LOCK_KEY)
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(released);
}

// Advisory locks held in this database by any session.
const ADVISORY_LOCKS: &str = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' \
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

async fn a_failed_purge_leaves_the_lock_free(db: Db) {
    fail(&db, "stale", NOW - 2 * DAY_MS, &LOGIN_POLICY).await;
    // The last table the purge visits is missing: the purge fails after taking the lock.
    execute(&db, "ALTER TABLE lockouts RENAME TO lockouts_aside", &[]).await;
    assert!(purge::purge_expired(&db, NOW, &POLICY).await.is_err());
    execute(&db, "ALTER TABLE lockouts_aside RENAME TO lockouts", &[]).await;

    if matches!(db, Db::Postgres(_)) {
        assert_eq!(count(&db, ADVISORY_LOCKS).await, 0);
    }
    assert_eq!(purge_at_now(&db).await.lockouts, 1);
}

/// Waits until no session holds an advisory lock in this database.
async fn wait_for_no_advisory_lock(db: &Db) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count(db, ADVISORY_LOCKS).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the purge lock is still held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_cancelled_purge_leaves_the_lock_free(db: Db) {
    fail(&db, "stale", NOW - 2 * DAY_MS, &LOGIN_POLICY).await;
    let Db::Postgres(pool) = &db else {
        // No lock on SQLite; a cancelled purge is just an unfinished one.
        assert_eq!(purge_at_now(&db).await.lockouts, 1);
        return;
    };
    // Another transaction holds the stale row, so the purge blocks on it while holding
    // the purge lock, and is dropped (as `serve` aborts the purge task at shutdown).
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT key FROM lockouts WHERE key = 'stale' FOR UPDATE")
        .fetch_all(&mut *holder)
        .await
        .unwrap();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(500),
        purge::purge_expired(&db, NOW, &POLICY),
    )
    .await;
    assert!(cancelled.is_err(), "the purge waited on the row lock");
    holder.rollback().await.unwrap();
    // Its connection is closed rather than pooled with the lock held: the lock goes with
    // the session once the blocked statement ends.
    wait_for_no_advisory_lock(&db).await;
    assert!(
        purge::purge_expired(&db, NOW, &POLICY)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        i64s_by_text(&db, LOCKOUT_ROWS, "stale").await,
        vec![Some(0)]
    );
}

// What `reserve` writes when an attempt restarts a stale counter ($1 now).
const RESTART_STALE: &str =
    "UPDATE lockouts SET failures = 1, window_started_at_ms = $1 WHERE key = 'stale'";

async fn a_counter_restarted_while_the_purge_waits_is_kept(db: Db) {
    fail(&db, "stale", NOW - 2 * DAY_MS, &LOGIN_POLICY).await;
    let Db::Postgres(pool) = &db else {
        // SQLite runs writers one at a time: a restart before the purge simply wins.
        execute(&db, RESTART_STALE, &[NOW]).await;
        assert_eq!(purge_at_now(&db).await.lockouts, 0);
        return;
    };
    // The failure's transaction has restarted the counter but not committed yet when the
    // purge picks the row as stale; the purge waits for it, then re-checks the row.
    let mut failure = pool.begin().await.unwrap();
    sqlx::query(RESTART_STALE)
        .bind(NOW)
        .execute(&mut *failure)
        .await
        .unwrap();
    let purging = tokio::spawn({
        let db = db.clone();
        async move { purge::purge_expired(&db, NOW, &POLICY).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!purging.is_finished(), "the purge waits on the row lock");
    failure.commit().await.unwrap();
    let counts = purging.await.unwrap().expect("no other runner");
    assert_eq!(counts.lockouts, 0);
    assert_eq!(failures(&db, "stale").await, Some(1));
}

/// A WebAuthn ceremony (contract §10) that expired `GRACE` ago goes; one still live, or
/// expired less than `GRACE` ago, stays, and the live one can still be taken once.
async fn expired_webauthn_ceremonies_go_and_live_ones_can_still_be_taken(db: Db) {
    use rampart_store::passkeys::{self, Ceremony};
    let expired = Uuid::now_v7();
    let recent = Uuid::now_v7();
    let live = Uuid::now_v7();
    for (id, expires_at_ms) in [
        (expired, NOW - GRACE - 1),
        (recent, NOW - GRACE + 1),
        (live, NOW + 5 * MINUTE),
    ] {
        passkeys::create_challenge(&db, id, Ceremony::Login, None, "{}", T0, expires_at_ms)
            .await
            .unwrap();
    }
    let counts = purge_at_now(&db).await;
    assert_eq!(
        counts,
        PurgeCounts {
            webauthn_challenges: 1,
            ..PurgeCounts::default()
        }
    );
    assert_eq!(
        purge_at_now(&db).await,
        PurgeCounts::default(),
        "idempotent"
    );
    let taken = passkeys::take_challenge(&db, live, Ceremony::Login, NOW)
        .await
        .unwrap();
    assert_eq!(taken, Some((None, "{}".to_owned())));
    assert_eq!(
        passkeys::take_challenge(&db, live, Ceremony::Login, NOW)
            .await
            .unwrap(),
        None,
        "single use"
    );
    assert_eq!(
        passkeys::take_challenge(&db, expired, Ceremony::Login, NOW)
            .await
            .unwrap(),
        None
    );
}
