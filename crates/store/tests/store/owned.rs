//! The owned-table kit, with the notes table as its example: the owner's CRUD with its
//! events, another owner's row indistinguishable from a missing one unless the scope is
//! `Any`, scoped keyset pages, and `audited` appending nothing for a change that matched
//! nothing or failed.
#![allow(clippy::disallowed_types)] // The kit's own tests: scopes are what they test.

use rampart_core::Error;
use rampart_store::Db;
use rampart_store::notes::{Note, NotePatch, TABLE};
use rampart_store::owned::{OWNER_CONDITION, Owned, Scope, audited};
use uuid::Uuid;

use crate::users::{T0, all_events, assert_chain_intact, create_user, event, events};

backend_tests!(
    migrated: owner_creates_reads_updates_and_deletes,
    another_owners_row_is_not_found_unless_scope_is_any,
    lists_page_through_the_scopes_rows_only,
    audited_appends_nothing_unless_something_changed,
);

fn note(title: &str) -> Note {
    Note {
        title: title.to_owned(),
        body: "<p>body</p>".to_owned(),
    }
}

fn retitle(title: &str) -> NotePatch {
    NotePatch {
        title: Some(title.to_owned()),
        body: None,
    }
}

async fn create(db: &Db, owner: Uuid, title: &str, now_ms: i64) -> Owned<Note> {
    let id = Uuid::now_v7();
    let audit = event("note.created").with_target("note", id.to_string());
    TABLE
        .create(db, id, owner, &note(title), now_ms, &audit)
        .await
        .unwrap()
}

#[test]
fn every_statement_but_the_insert_is_owner_scoped() {
    let [insert, rest @ ..] = TABLE.statements();
    assert!(insert.starts_with("INSERT INTO notes"), "{insert}");
    for sql in rest {
        assert!(sql.contains(OWNER_CONDITION), "{sql}");
    }
}

async fn owner_creates_reads_updates_and_deletes(db: Db) {
    let owner = create_user(&db, "owner@example.org").await;
    let created = create(&db, owner.id, "First", T0 + 1).await;
    assert_eq!(
        (
            created.owner_id,
            &created.fields,
            created.created_at_ms,
            created.updated_at_ms
        ),
        (owner.id, &note("First"), T0 + 1, T0 + 1)
    );
    let scope = Scope::Owner(owner.id);
    assert_eq!(
        TABLE.get(&db, created.id, scope).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(TABLE.get(&db, Uuid::now_v7(), scope).await.unwrap(), None);
    assert_eq!(events(&db, "note.created").await.len(), 1);

    let audit = event("note.updated");
    let renamed = TABLE
        .update(&db, created.id, scope, &retitle("Renamed"), T0 + 2, &audit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (renamed.fields.title.as_str(), renamed.fields.body.as_str()),
        ("Renamed", "<p>body</p>")
    );
    assert_eq!(
        (renamed.created_at_ms, renamed.updated_at_ms),
        (T0 + 1, T0 + 2)
    );
    let body_only = NotePatch {
        title: None,
        body: Some("<p>new</p>".to_owned()),
    };
    let rewritten = TABLE
        .update(&db, created.id, scope, &body_only, T0 + 3, &audit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            rewritten.fields.title.as_str(),
            rewritten.fields.body.as_str()
        ),
        ("Renamed", "<p>new</p>")
    );
    assert_eq!(
        TABLE.get(&db, created.id, scope).await.unwrap(),
        Some(rewritten)
    );
    let x = retitle("x");
    let missing = TABLE.update(&db, Uuid::now_v7(), scope, &x, T0 + 4, &audit);
    assert_eq!(missing.await.unwrap(), None);
    assert_eq!(events(&db, "note.updated").await.len(), 2);

    let audit = event("note.deleted");
    assert!(
        TABLE
            .delete(&db, created.id, scope, T0 + 5, &audit)
            .await
            .unwrap()
    );
    assert_eq!(TABLE.get(&db, created.id, scope).await.unwrap(), None);
    assert!(
        !TABLE
            .delete(&db, created.id, scope, T0 + 6, &audit)
            .await
            .unwrap()
    );
    assert_eq!(events(&db, "note.deleted").await.len(), 1);
    assert_chain_intact(&db).await;
}

async fn another_owners_row_is_not_found_unless_scope_is_any(db: Db) {
    let alice = create_user(&db, "alice@example.org").await;
    let mallory = create_user(&db, "mallory@example.org").await;
    let created = create(&db, alice.id, "Private", T0).await;
    let before = all_events(&db).await.len();

    let theirs = Scope::Owner(mallory.id);
    let e = event("e");
    assert_eq!(TABLE.get(&db, created.id, theirs).await.unwrap(), None);
    let x = retitle("x");
    let defaced = TABLE.update(&db, created.id, theirs, &x, T0 + 1, &e);
    assert_eq!(defaced.await.unwrap(), None);
    let deleted = TABLE.delete(&db, created.id, theirs, T0 + 2, &e);
    assert!(!deleted.await.unwrap());
    let own = Scope::Owner(alice.id);
    assert_eq!(
        TABLE.get(&db, created.id, own).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(all_events(&db).await.len(), before);

    // `Any` (a moderator's scope) reads and writes it; the owner stays.
    assert_eq!(
        TABLE.get(&db, created.id, Scope::Any).await.unwrap(),
        Some(created.clone())
    );
    let moderated = TABLE
        .update(
            &db,
            created.id,
            Scope::Any,
            &retitle("Moderated"),
            T0 + 3,
            &event("e"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (moderated.owner_id, moderated.fields.title.as_str()),
        (alice.id, "Moderated")
    );
    assert!(
        TABLE
            .delete(&db, created.id, Scope::Any, T0 + 4, &event("e"))
            .await
            .unwrap()
    );
    assert_eq!(TABLE.get(&db, created.id, Scope::Any).await.unwrap(), None);
    assert_eq!(all_events(&db).await.len(), before + 2);
    assert_chain_intact(&db).await;
}

async fn lists_page_through_the_scopes_rows_only(db: Db) {
    let alice = create_user(&db, "alice@example.org").await;
    let bob = create_user(&db, "bob@example.org").await;
    let mut own = Vec::new();
    let mut everyone = Vec::new();
    for n in 0..5 {
        own.push(create(&db, alice.id, &format!("a{n}"), T0 + n).await);
        everyone.push(own[own.len() - 1].clone());
        everyone.push(create(&db, bob.id, &format!("b{n}"), T0 + n).await);
    }
    own.sort_by_key(|n| n.id);
    everyone.sort_by_key(|n| n.id);

    let alices = Scope::Owner(alice.id);
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = TABLE.list(&db, alices, after, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(pages.concat(), own);
    assert_eq!(
        TABLE.list(&db, Scope::Any, None, 100).await.unwrap(),
        everyone
    );
    let nobody = Scope::Owner(Uuid::now_v7());
    assert!(TABLE.list(&db, nobody, None, 100).await.unwrap().is_empty());
}

async fn audited_appends_nothing_unless_something_changed(db: Db) {
    let before = all_events(&db).await.len();
    let none = audited(&db, &event("x.none"), T0, async |_| Ok(None::<()>)).await;
    assert_eq!(none.unwrap(), None);
    let failed = audited(&db, &event("x.failed"), T0, async |_| {
        Err::<Option<()>, _>(Error::Conflict("no".into()))
    })
    .await;
    assert!(matches!(failed, Err(Error::Conflict(_))), "{failed:?}");
    assert_eq!(all_events(&db).await.len(), before);
    let done = audited(&db, &event("x.done"), T0, async |_| Ok(Some(7))).await;
    assert_eq!(done.unwrap(), Some(7));
    assert_eq!(events(&db, "x.done").await.len(), 1);
    assert_chain_intact(&db).await;
}
