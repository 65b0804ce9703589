//! The audit trail: appended with its change or not at all, refused by the database when
//! altered, and any tampering that bypasses the database shows up in `verify`.

use rampart_core::audit::{AuditRecord, NewAuditEvent, Outcome, VerifyOutcome};
use rampart_store::audit::{self, AuditFilter};
use rampart_store::{Backend, Db};
use uuid::Uuid;

backend_tests!(
    migrated: empty_chain_is_intact,
    committed_appends_verify_and_read_back_unchanged,
    rolled_back_append_leaves_no_event,
    database_refuses_update_delete_and_truncate,
    parallel_writers_never_fork_the_chain,
    altered_record_is_detected,
    deleted_record_is_detected,
    verify_pages_through_more_than_one_page,
    list_filters_and_paginates_newest_first,
    head_is_the_newest_committed_record_and_verify_keeps_asked_hashes,
    the_counter_counts_committed_records_only,
);

fn event(action: &str) -> NewAuditEvent {
    NewAuditEvent::new(action, Outcome::Success)
}

/// Appends `event` in its own committed transaction.
async fn append_committed(db: &Db, event: &NewAuditEvent, at_ms: i64) -> AuditRecord {
    let mut tx = db.begin().await.unwrap();
    let record = audit::append(&mut tx, event, at_ms).await.unwrap();
    tx.commit().await.unwrap();
    record
}

async fn all_newest_first(db: &Db) -> Vec<AuditRecord> {
    audit::list(db, &AuditFilter::default(), 10_000, None)
        .await
        .unwrap()
}

async fn execute(db: &Db, sql: &'static str) -> Result<u64, sqlx::Error> {
    match db {
        Db::Sqlite(pool) => sqlx::query(sql)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        Db::Postgres(pool) => sqlx::query(sql)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
    }
}

/// Removes the append-only guard, as an attacker with direct database access could.
async fn disable_append_only_triggers(db: &Db) {
    match db.backend() {
        Backend::Sqlite => {
            execute(db, "DROP TRIGGER audit_events_no_update")
                .await
                .unwrap();
            execute(db, "DROP TRIGGER audit_events_no_delete")
                .await
                .unwrap();
        }
        Backend::Postgres => {
            execute(db, "ALTER TABLE audit_events DISABLE TRIGGER USER")
                .await
                .unwrap();
        }
    }
}

fn assert_broken_at(outcome: VerifyOutcome, expected: &AuditRecord) {
    match outcome {
        VerifyOutcome::Broken {
            seq,
            id,
            ref reason,
        } => {
            assert_eq!((seq, id), (expected.seq, expected.id), "{reason}");
        }
        VerifyOutcome::Intact { count } => panic!("tampering not detected ({count} records)"),
    }
}

async fn empty_chain_is_intact(db: Db) {
    assert_eq!(
        audit::verify(&db).await.unwrap(),
        VerifyOutcome::Intact { count: 0 }
    );
}

async fn committed_appends_verify_and_read_back_unchanged(db: Db) {
    let actor = Uuid::now_v7();
    let full = NewAuditEvent::new("user.updated", Outcome::Denied)
        .with_actor(actor)
        .with_target("user", "u-1")
        .with_ip_address("2001:db8::1")
        .with_user_agent("")
        .with_request_id("req-1")
        .with_details(serde_json::json!({"fields": ["email"], "a": {"z": 1, "b": null}}));
    let first = append_committed(&db, &full, 1_000).await;
    assert_eq!(
        (first.seq, first.prev_hash.as_str()),
        (1, rampart_core::audit::GENESIS_HASH)
    );
    assert_eq!(
        first.details,
        r#"{"a":{"b":null,"z":1},"fields":["email"]}"#
    );

    // Two events in one transaction chain onto each other.
    let mut tx = db.begin().await.unwrap();
    let second = audit::append(&mut tx, &event("note.created"), 2_000)
        .await
        .unwrap();
    let third = audit::append(&mut tx, &event("note.updated"), 2_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        (second.seq, second.prev_hash.as_str()),
        (2, first.hash.as_str())
    );
    assert_eq!(
        (third.seq, third.prev_hash.as_str()),
        (3, second.hash.as_str())
    );

    assert_eq!(
        audit::verify(&db).await.unwrap(),
        VerifyOutcome::Intact { count: 3 }
    );
    // Every field, including Some("") and None, reads back as appended.
    assert_eq!(all_newest_first(&db).await, vec![third, second, first]);
}

async fn rolled_back_append_leaves_no_event(db: Db) {
    let kept = append_committed(&db, &event("auth.register"), 1).await;

    let mut tx = db.begin().await.unwrap();
    audit::append(&mut tx, &event("auth.login_succeeded"), 2)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let mut tx = db.begin().await.unwrap();
    audit::append(&mut tx, &event("auth.logout"), 3)
        .await
        .unwrap();
    drop(tx); // dropped without commit: rolled back too

    assert_eq!(
        audit::verify(&db).await.unwrap(),
        VerifyOutcome::Intact { count: 1 }
    );
    assert_eq!(all_newest_first(&db).await, vec![kept.clone()]);
    // The chain continues from the last committed record, not from the discarded ones.
    let next = append_committed(&db, &event("auth.logout"), 4).await;
    assert_eq!((next.seq, next.prev_hash), (2, kept.hash));
    assert_eq!(
        audit::verify(&db).await.unwrap(),
        VerifyOutcome::Intact { count: 2 }
    );
}

async fn database_refuses_update_delete_and_truncate(db: Db) {
    let record = append_committed(&db, &event("role.created"), 10).await;

    let update = execute(&db, "UPDATE audit_events SET action = 'role.deleted'").await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = execute(&db, "DELETE FROM audit_events").await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    if db.backend() == Backend::Postgres {
        let truncate = execute(&db, "TRUNCATE audit_events").await;
        assert!(truncate.unwrap_err().to_string().contains("append-only"));
    }
    // Inside a transaction the refusal holds as well.
    let mut tx = db.begin().await.unwrap();
    let refused = match tx.conn() {
        rampart_store::TxConn::Sqlite(tx) => sqlx::query("DELETE FROM audit_events")
            .execute(&mut **tx)
            .await
            .err(),
        rampart_store::TxConn::Postgres(tx) => sqlx::query("DELETE FROM audit_events")
            .execute(&mut **tx)
            .await
            .err(),
    };
    assert!(refused.is_some());
    drop(tx);

    assert_eq!(all_newest_first(&db).await, vec![record]);
    assert_eq!(
        audit::verify(&db).await.unwrap(),
        VerifyOutcome::Intact { count: 1 }
    );
}

async fn parallel_writers_never_fork_the_chain(db: Db) {
    const WRITERS: i64 = 8;
    const EACH: i64 = 25;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let db = db.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    let event = event("note.created").with_target("note", format!("{writer}-{n}"));
                    append_committed(&db, &event, writer * 1_000 + n).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let total = WRITERS * EACH;
    assert_eq!(
        audit::verify(&db).await.unwrap(),
        VerifyOutcome::Intact {
            count: total as u64
        }
    );
    let seqs: Vec<i64> = all_newest_first(&db).await.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=total).rev().collect::<Vec<_>>());
}

async fn altered_record_is_detected(db: Db) {
    let mut records = Vec::new();
    for n in 0..5 {
        records.push(append_committed(&db, &event("note.updated"), n).await);
    }
    disable_append_only_triggers(&db).await;
    let changed = execute(
        &db,
        "UPDATE audit_events SET action = 'note.viewed' WHERE seq = 3",
    )
    .await;
    assert_eq!(changed.unwrap(), 1);

    assert_broken_at(audit::verify(&db).await.unwrap(), &records[2]);
}

async fn deleted_record_is_detected(db: Db) {
    let mut records = Vec::new();
    for n in 0..5 {
        records.push(append_committed(&db, &event("note.deleted"), n).await);
    }
    disable_append_only_triggers(&db).await;
    assert_eq!(
        execute(&db, "DELETE FROM audit_events WHERE seq = 3")
            .await
            .unwrap(),
        1
    );

    assert_broken_at(audit::verify(&db).await.unwrap(), &records[3]);
}

async fn verify_pages_through_more_than_one_page(db: Db) {
    // verify reads 1000 rows per page; a break in the second page must still be found.
    let mut tx = db.begin().await.unwrap();
    let mut last = None;
    for n in 0..1_005 {
        last = Some(
            audit::append(&mut tx, &event("authz.denied"), n)
                .await
                .unwrap(),
        );
    }
    tx.commit().await.unwrap();
    assert_eq!(
        audit::verify(&db).await.unwrap(),
        VerifyOutcome::Intact { count: 1_005 }
    );

    disable_append_only_triggers(&db).await;
    execute(&db, "UPDATE audit_events SET at_ms = 0 WHERE seq = 1005")
        .await
        .unwrap();
    assert_broken_at(audit::verify(&db).await.unwrap(), &last.unwrap());
}

async fn list_filters_and_paginates_newest_first(db: Db) {
    let alice = Uuid::now_v7();
    let bob = Uuid::now_v7();
    let mut all = Vec::new();
    for n in 0..10_i64 {
        let actor = if n % 2 == 0 { alice } else { bob };
        let action = if n < 5 {
            "auth.login_succeeded"
        } else {
            "note.created"
        };
        let event = event(action)
            .with_actor(actor)
            .with_target("note", format!("n{}", n % 3));
        all.push(append_committed(&db, &event, 1_000 + n * 10).await);
    }
    all.reverse(); // newest first

    let list = |filter: AuditFilter, limit: u32, after: Option<i64>| {
        let db = db.clone();
        async move { audit::list(&db, &filter, limit, after).await.unwrap() }
    };
    let seqs = |records: &[AuditRecord]| records.iter().map(|r| r.seq).collect::<Vec<_>>();

    assert_eq!(list(AuditFilter::default(), 100, None).await, all);

    // Keyset pagination: three pages of 4, 4 and 2, then nothing.
    let page1 = list(AuditFilter::default(), 4, None).await;
    let page2 = list(AuditFilter::default(), 4, Some(page1[3].seq)).await;
    let page3 = list(AuditFilter::default(), 4, Some(page2[3].seq)).await;
    assert_eq!(seqs(&page1), vec![10, 9, 8, 7]);
    assert_eq!(seqs(&page2), vec![6, 5, 4, 3]);
    assert_eq!(seqs(&page3), vec![2, 1]);
    assert!(list(AuditFilter::default(), 4, Some(1)).await.is_empty());

    let by_action = AuditFilter {
        action: Some("note.created".into()),
        ..Default::default()
    };
    assert_eq!(
        seqs(&list(by_action, 100, None).await),
        vec![10, 9, 8, 7, 6]
    );

    let by_actor = AuditFilter {
        actor_id: Some(bob),
        ..Default::default()
    };
    assert_eq!(
        seqs(&list(by_actor.clone(), 100, None).await),
        vec![10, 8, 6, 4, 2]
    );
    assert_eq!(seqs(&list(by_actor, 2, Some(8)).await), vec![6, 4]);

    let by_target = AuditFilter {
        target_id: Some("n0".into()),
        ..Default::default()
    };
    assert_eq!(seqs(&list(by_target, 100, None).await), vec![10, 7, 4, 1]);

    // from/to are inclusive: at_ms 1030..=1060 are seq 4..=7.
    let window = AuditFilter {
        from_ms: Some(1_030),
        to_ms: Some(1_060),
        ..Default::default()
    };
    assert_eq!(seqs(&list(window, 100, None).await), vec![7, 6, 5, 4]);

    let combined = AuditFilter {
        action: Some("auth.login_succeeded".into()),
        actor_id: Some(alice),
        from_ms: Some(1_010),
        ..Default::default()
    };
    assert_eq!(seqs(&list(combined, 100, None).await), vec![5, 3]);

    let nobody = AuditFilter {
        actor_id: Some(Uuid::now_v7()),
        ..Default::default()
    };
    assert!(list(nobody, 100, None).await.is_empty());
}

async fn head_is_the_newest_committed_record_and_verify_keeps_asked_hashes(db: Db) {
    assert_eq!(audit::head(&db).await.unwrap(), None);
    let mut records = Vec::new();
    for n in 0..4 {
        records.push(append_committed(&db, &event("note.created"), n).await);
    }
    // An uncommitted append does not move the head others see.
    let mut tx = db.begin().await.unwrap();
    audit::append(&mut tx, &event("note.updated"), 9)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        audit::head(&db).await.unwrap(),
        Some((4, records[3].hash.clone()))
    );

    let keep = std::collections::BTreeSet::from([0, 2, 4, 7]);
    let (outcome, kept) = audit::verify_keeping(&db, &keep).await.unwrap();
    assert_eq!(outcome, VerifyOutcome::Intact { count: 4 });
    assert_eq!(
        kept,
        std::collections::BTreeMap::from([
            (2, records[1].hash.clone()),
            (4, records[3].hash.clone()),
        ])
    );

    // Only records the walk verified are kept: none at or after a break.
    disable_append_only_triggers(&db).await;
    execute(&db, "UPDATE audit_events SET at_ms = 99 WHERE seq = 3")
        .await
        .unwrap();
    let (outcome, kept) = audit::verify_keeping(&db, &keep).await.unwrap();
    assert_broken_at(outcome, &records[2]);
    assert_eq!(
        kept,
        std::collections::BTreeMap::from([(2, records[1].hash.clone())])
    );
}

/// Polls `future` with `recorder` as the metrics recorder of every poll, whichever thread
/// runs it: the counters it records are `recorder`'s alone, not shared with parallel tests.
struct Recorded<F> {
    recorder: std::sync::Arc<metrics_exporter_prometheus::PrometheusRecorder>,
    future: std::pin::Pin<Box<F>>,
}

impl<F: std::future::Future> std::future::Future for Recorded<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.get_mut();
        let recorder = std::sync::Arc::clone(&this.recorder);
        metrics::with_local_recorder(recorder.as_ref(), || this.future.as_mut().poll(cx))
    }
}

/// `rampart_audit_events_total` counts a record when its transaction commits: not when it is
/// rolled back, nor when the transaction is dropped unfinished.
async fn the_counter_counts_committed_records_only(db: Db) {
    let recorder =
        std::sync::Arc::new(metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder());
    let handle = recorder.handle();
    let counted = || {
        handle
            .render()
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{} ", audit::EVENTS)))
            .map_or(0, |value| value.trim().parse::<u64>().unwrap())
    };
    let steps = async {
        let mut tx = db.begin().await.unwrap();
        audit::append(&mut tx, &event("rolled.back"), 1)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(counted(), 0, "a rolled-back record was counted");

        let mut tx = db.begin().await.unwrap();
        audit::append(&mut tx, &event("dropped"), 2).await.unwrap();
        drop(tx);
        assert_eq!(
            counted(),
            0,
            "a record of a dropped transaction was counted"
        );

        let mut tx = db.begin().await.unwrap();
        audit::append(&mut tx, &event("first"), 3).await.unwrap();
        audit::append(&mut tx, &event("second"), 4).await.unwrap();
        assert_eq!(counted(), 0, "records were counted before their commit");
        tx.commit().await.unwrap();
        assert_eq!(counted(), 2);

        append_committed(&db, &event("third"), 5).await;
        assert_eq!(counted(), 3);
    };
    Recorded {
        recorder: std::sync::Arc::clone(&recorder),
        future: Box::pin(steps),
    }
    .await;
    assert_eq!(all_newest_first(&db).await.len(), 3);
}
