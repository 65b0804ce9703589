//! A PostgreSQL server (or database, or role) whose `default_transaction_isolation` is
//! REPEATABLE READ does not change the stores' logic: `Db` runs every transaction, and
//! every statement run on its own, READ COMMITTED, so a lost race is still a clean
//! "someone else won" instead of a serialization error (a 500).

use std::time::Duration;

use rampart_store::{Db, TxConn};
use uuid::Uuid;

use crate::harness::run_postgres_repeatable_read;
use crate::sessions;
use crate::users::create_user;

macro_rules! repeatable_read_tests {
    ($($name:ident => $body:path),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run_postgres_repeatable_read(|db| async move {
                    assert_database_default_is_repeatable_read(&db).await;
                    $body(db).await;
                })
                .await;
            }
        )+
    };
}

repeatable_read_tests!(
    concurrent_rotations_still_have_exactly_one_winner =>
        sessions::concurrent_rotations_of_one_token_have_exactly_one_winner,
    a_rotation_waiting_on_a_claim_still_sees_its_outcome =>
        sessions::a_rotation_waiting_on_an_uncommitted_claim_sees_its_outcome,
    a_statement_of_its_own_that_loses_a_race_reports_it =>
        a_compare_and_swap_losing_to_a_commit_returns_false,
    transactions_say_read_committed => transactions_are_read_committed,
);

const DATABASE_DEFAULTS: &str = "SELECT array_to_string(s.setconfig, ',') \
     FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
     WHERE d.datname = current_database() AND s.setrole = 0";

/// The test really runs where a plain session would be REPEATABLE READ.
async fn assert_database_default_is_repeatable_read(db: &Db) {
    let Db::Postgres(pool) = db else {
        panic!("PostgreSQL only")
    };
    let defaults: String = sqlx::query_scalar(DATABASE_DEFAULTS)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(defaults, "default_transaction_isolation=repeatable read");
}

async fn transactions_are_read_committed(db: Db) {
    let mut tx = db.begin().await.unwrap();
    let TxConn::Postgres(pg) = tx.conn() else {
        panic!("PostgreSQL only")
    };
    let level: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(&mut **pg)
        .await
        .unwrap();
    assert_eq!(level, "read committed");
    tx.rollback().await.unwrap();
}

/// `mfa::reseal` is one compare-and-swap statement run on the pool. Blocked behind a
/// transaction that changes the same row and then commits, it must answer `false` (the
/// row changed: retry), not fail with "could not serialize access".
async fn a_compare_and_swap_losing_to_a_commit_returns_false(db: Db) {
    let user = create_user(&db, "cas@example.org").await;
    let mut other = db.begin().await.unwrap();
    let TxConn::Postgres(pg) = other.conn() else {
        panic!("PostgreSQL only")
    };
    sqlx::query("UPDATE users SET totp_pending = 'sealed-by-someone' WHERE id = $1")
        .bind(user.id)
        .execute(&mut **pg)
        .await
        .unwrap();
    let cas = {
        let db = db.clone();
        let id: Uuid = user.id;
        tokio::spawn(async move {
            rampart_store::mfa::reseal(&db, id, None, Some("new-seal"), None, None).await
        })
    };
    wait_for_a_lock_wait(&db).await;
    other.commit().await.unwrap();
    assert!(!cas.await.unwrap().unwrap(), "the row changed meanwhile");
}

async fn wait_for_a_lock_wait(db: &Db) {
    let Db::Postgres(pool) = db else {
        panic!("PostgreSQL only")
    };
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the compare-and-swap never waited on the changed row");
}
