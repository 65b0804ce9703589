//! Notes: the owner's CRUD with its events, another owner's note indistinguishable from a
//! missing one unless the scope is `Any`, and the owner-only paginated list.

use rampart_store::Db;
use rampart_store::notes::{self, Note, Scope};
use uuid::Uuid;

use crate::users::{T0, all_events, assert_chain_intact, create_user, event, events};

backend_tests!(
    migrated: owner_creates_reads_updates_and_deletes,
    another_owners_note_is_not_found_unless_scope_is_any,
    list_own_pages_through_only_the_owners_notes,
);

async fn create_note(db: &Db, owner: Uuid, title: &str, now_ms: i64) -> Note {
    let id = Uuid::now_v7();
    let audit = event("note.created")
        .with_actor(owner)
        .with_target("note", id.to_string());
    notes::create(db, id, owner, title, "<p>body</p>", now_ms, &audit)
        .await
        .unwrap()
}

async fn owner_creates_reads_updates_and_deletes(db: Db) {
    let owner = create_user(&db, "owner@example.org").await;
    let note = create_note(&db, owner.id, "First", T0 + 1).await;
    assert_eq!(
        (
            note.owner_id,
            note.title.as_str(),
            note.body.as_str(),
            note.created_at_ms,
            note.updated_at_ms
        ),
        (owner.id, "First", "<p>body</p>", T0 + 1, T0 + 1)
    );
    let scope = Scope::Owner(owner.id);
    assert_eq!(
        notes::get(&db, note.id, scope).await.unwrap(),
        Some(note.clone())
    );
    assert_eq!(notes::get(&db, Uuid::now_v7(), scope).await.unwrap(), None);
    let recorded = events(&db, "note.created").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].target_id, Some(note.id.to_string()));

    let audit = event("note.updated").with_actor(owner.id);
    let retitled = notes::update(&db, note.id, scope, Some("Renamed"), None, T0 + 2, &audit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            retitled.title.as_str(),
            retitled.body.as_str(),
            retitled.created_at_ms,
            retitled.updated_at_ms
        ),
        ("Renamed", "<p>body</p>", T0 + 1, T0 + 2)
    );
    let rewritten = notes::update(
        &db,
        note.id,
        scope,
        None,
        Some("<p>new</p>"),
        T0 + 3,
        &audit,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (rewritten.title.as_str(), rewritten.body.as_str()),
        ("Renamed", "<p>new</p>")
    );
    assert_eq!(
        notes::get(&db, note.id, scope).await.unwrap(),
        Some(rewritten)
    );
    assert_eq!(events(&db, "note.updated").await.len(), 2);
    let missing = notes::update(&db, Uuid::now_v7(), scope, Some("x"), None, T0 + 4, &audit)
        .await
        .unwrap();
    assert_eq!(missing, None);
    assert_eq!(events(&db, "note.updated").await.len(), 2);

    let audit = event("note.deleted").with_actor(owner.id);
    assert!(
        notes::delete(&db, note.id, scope, T0 + 5, &audit)
            .await
            .unwrap()
    );
    assert_eq!(notes::get(&db, note.id, scope).await.unwrap(), None);
    assert!(
        !notes::delete(&db, note.id, scope, T0 + 6, &audit)
            .await
            .unwrap()
    );
    assert_eq!(events(&db, "note.deleted").await.len(), 1);
    assert_chain_intact(&db).await;
}

async fn another_owners_note_is_not_found_unless_scope_is_any(db: Db) {
    let alice = create_user(&db, "alice@example.org").await;
    let mallory = create_user(&db, "mallory@example.org").await;
    let note = create_note(&db, alice.id, "Private", T0).await;
    let before = all_events(&db).await.len();

    let theirs = Scope::Owner(mallory.id);
    assert_eq!(notes::get(&db, note.id, theirs).await.unwrap(), None);
    let updated = notes::update(
        &db,
        note.id,
        theirs,
        Some("Defaced"),
        Some("<p>pwned</p>"),
        T0 + 1,
        &event("note.updated"),
    )
    .await
    .unwrap();
    assert_eq!(updated, None);
    assert!(
        !notes::delete(&db, note.id, theirs, T0 + 2, &event("note.deleted"))
            .await
            .unwrap()
    );
    assert_eq!(
        notes::get(&db, note.id, Scope::Owner(alice.id))
            .await
            .unwrap(),
        Some(note.clone())
    );
    assert_eq!(all_events(&db).await.len(), before);

    // `Any` (an administrator's scope) reads and writes it.
    assert_eq!(
        notes::get(&db, note.id, Scope::Any).await.unwrap(),
        Some(note.clone())
    );
    let moderated = notes::update(
        &db,
        note.id,
        Scope::Any,
        Some("Moderated"),
        None,
        T0 + 3,
        &event("note.updated").with_actor(mallory.id),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (moderated.owner_id, moderated.title.as_str()),
        (alice.id, "Moderated")
    );
    assert!(
        notes::delete(&db, note.id, Scope::Any, T0 + 4, &event("note.deleted"))
            .await
            .unwrap()
    );
    assert_eq!(notes::get(&db, note.id, Scope::Any).await.unwrap(), None);
    assert_eq!(all_events(&db).await.len(), before + 2);
    assert_chain_intact(&db).await;
}

async fn list_own_pages_through_only_the_owners_notes(db: Db) {
    let alice = create_user(&db, "alice@example.org").await;
    let bob = create_user(&db, "bob@example.org").await;
    let mut own = Vec::new();
    for n in 0..5 {
        own.push(create_note(&db, alice.id, &format!("a{n}"), T0 + n).await);
        create_note(&db, bob.id, &format!("b{n}"), T0 + n).await;
    }
    own.sort_by_key(|n| n.id);

    let first = notes::list_own(&db, alice.id, 2, None).await.unwrap();
    assert_eq!(first, own[..2]);
    let second = notes::list_own(&db, alice.id, 2, Some(first[1].id))
        .await
        .unwrap();
    assert_eq!(second, own[2..4]);
    let third = notes::list_own(&db, alice.id, 2, Some(second[1].id))
        .await
        .unwrap();
    assert_eq!(third, own[4..]);
    assert!(
        notes::list_own(&db, alice.id, 2, Some(third[0].id))
            .await
            .unwrap()
            .is_empty()
    );
    let bobs = notes::list_own(&db, bob.id, 100, None).await.unwrap();
    assert_eq!(bobs.len(), 5);
    assert!(bobs.iter().all(|n| n.owner_id == bob.id));
    assert!(
        notes::list_own(&db, Uuid::now_v7(), 100, None)
            .await
            .unwrap()
            .is_empty()
    );
}
