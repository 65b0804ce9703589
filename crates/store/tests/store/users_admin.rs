//! User administration: the paginated list, changes by an administrator (disabling ends
//! every session), soft deletion, lookup by email, and the `rampart admin create`
//! bootstrap in both of its branches.

use rampart_core::Error;
use rampart_core::users::{DisplayName, Email, UserStatus};
use rampart_store::Db;
use rampart_store::users::{self, NewUser, Promotion, USER_DELETED, USER_DISABLED};
use uuid::Uuid;

use crate::rbac::{create_admin, create_role, set_roles, sync};
use crate::users::{
    DAY_MS, T0, assert_chain_intact, create_user, event, events, execute_for, i64s_for, login,
};

backend_tests!(
    migrated: list_pages_by_id_without_deleted_users,
    update_admin_changes_name_and_status_and_disabling_ends_sessions,
    soft_delete_hides_the_user_and_ends_its_sessions,
    find_by_email_sees_only_non_deleted_users,
    create_admin_creates_and_never_takes_an_existing_email,
    promote_to_admin_only_while_the_verified_hash_is_in_place,
);

const SESSIONS_REVOKED_FOR: &str =
    "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND revoked_reason = $2";

async fn revoked_for(db: &Db, user_id: Uuid, reason: &str) -> i64 {
    match db {
        Db::Sqlite(pool) => sqlx::query_scalar(SESSIONS_REVOKED_FOR)
            .bind(user_id.hyphenated().to_string())
            .bind(reason)
            .fetch_one(pool)
            .await
            .unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(SESSIONS_REVOKED_FOR)
            .bind(user_id)
            .bind(reason)
            .fetch_one(pool)
            .await
            .unwrap(),
    }
}

async fn list_pages_by_id_without_deleted_users(db: Db) {
    sync(&db).await;
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(create_user(&db, &format!("list-{n}@example.org")).await);
    }
    created[1] = set_roles(&db, created[1].id, &["admin", "user"])
        .await
        .unwrap();
    users::soft_delete(&db, created[2].id, T0 + 1, &event("user.deleted"))
        .await
        .unwrap();
    let mut expected: Vec<_> = created
        .iter()
        .filter(|u| u.id != created[2].id)
        .cloned()
        .collect();
    expected.sort_by_key(|u| u.id);

    let first = users::list(&db, 2, None).await.unwrap();
    assert_eq!(first, expected[..2]);
    assert_eq!(first[1].roles, ["admin", "user"]);
    let second = users::list(&db, 2, Some(first[1].id)).await.unwrap();
    assert_eq!(second, expected[2..4]);
    let third = users::list(&db, 2, Some(second[1].id)).await.unwrap();
    assert!(third.is_empty());
    assert_eq!(users::list(&db, 100, None).await.unwrap(), expected);
    // A deleted user's id still works as a cursor.
    let after_deleted = users::list(&db, 100, Some(created[2].id)).await.unwrap();
    assert!(after_deleted.iter().all(|u| u.id > created[2].id));
    assert_eq!(after_deleted.len(), 2);
}

async fn update_admin_changes_name_and_status_and_disabling_ends_sessions(db: Db) {
    // No admin exists: changing a user who holds nothing that must survive is not guarded.
    sync(&db).await;
    let user = create_user(&db, "target@example.org").await;
    let other = create_user(&db, "bystander@example.org").await;
    let first = login(&db, user.id, "h-1", T0, DAY_MS).await;
    let second = login(&db, user.id, "h-2", T0 + 1, DAY_MS).await;
    let others = login(&db, other.id, "h-3", T0, DAY_MS).await;
    let audit = event("user.updated").with_target("user", user.id.to_string());

    let name = DisplayName::parse("New Name", "displayName").unwrap();
    let (renamed, revoked) = users::update_admin(&db, user.id, Some(&name), None, T0 + 5, &audit)
        .await
        .unwrap();
    assert_eq!(
        (
            renamed.display_name.as_str(),
            renamed.status,
            renamed.updated_at_ms
        ),
        ("New Name", UserStatus::Active, T0 + 5)
    );
    assert!(revoked.is_empty());

    let (disabled, revoked) = users::update_admin(
        &db,
        user.id,
        None,
        Some(UserStatus::Disabled),
        T0 + 6,
        &audit,
    )
    .await
    .unwrap();
    assert_eq!(
        (disabled.display_name.as_str(), disabled.status),
        ("New Name", UserStatus::Disabled)
    );
    let mut expected = vec![first.id, second.id];
    expected.sort();
    assert_eq!(revoked, expected);
    assert_eq!(revoked_for(&db, user.id, USER_DISABLED).await, 2);
    assert_eq!(
        i64s_for(
            &db,
            "SELECT COUNT(*) FROM sessions WHERE id = $1 AND revoked_at_ms IS NULL",
            others.id
        )
        .await,
        vec![Some(1)]
    );
    assert_eq!(users::get(&db, user.id).await.unwrap(), Some(disabled));

    let (active, revoked) =
        users::update_admin(&db, user.id, None, Some(UserStatus::Active), T0 + 7, &audit)
            .await
            .unwrap();
    assert_eq!(active.status, UserStatus::Active);
    assert!(revoked.is_empty());
    assert_eq!(events(&db, "user.updated").await.len(), 3);

    let missing = users::update_admin(&db, Uuid::now_v7(), Some(&name), None, T0, &audit).await;
    assert!(matches!(missing, Err(Error::NotFound)), "{missing:?}");
    users::soft_delete(&db, other.id, T0 + 8, &event("user.deleted"))
        .await
        .unwrap();
    let deleted = users::update_admin(
        &db,
        other.id,
        None,
        Some(UserStatus::Disabled),
        T0 + 9,
        &audit,
    )
    .await;
    assert!(matches!(deleted, Err(Error::NotFound)), "{deleted:?}");
    assert_eq!(events(&db, "user.updated").await.len(), 3);
    assert_chain_intact(&db).await;
}

async fn soft_delete_hides_the_user_and_ends_its_sessions(db: Db) {
    sync(&db).await;
    create_admin(&db, "admin@example.org").await;
    create_role(&db, "support", &["users:read"]).await;
    let user = create_user(&db, "leaving@example.org").await;
    set_roles(&db, user.id, &["support", "user"]).await.unwrap();
    let first = login(&db, user.id, "h-1", T0, DAY_MS).await;
    let ended = login(&db, user.id, "h-2", T0, 10).await;

    let audit = event("user.deleted").with_target("user", user.id.to_string());
    let revoked = users::soft_delete(&db, user.id, T0 + 100, &audit)
        .await
        .unwrap();
    assert_eq!(revoked, [first.id]);
    assert_eq!(revoked_for(&db, user.id, USER_DELETED).await, 1);
    assert_eq!(
        i64s_for(
            &db,
            "SELECT revoked_at_ms FROM sessions WHERE id = $1",
            ended.id
        )
        .await,
        vec![None]
    );
    assert_eq!(users::get(&db, user.id).await.unwrap(), None);
    let credentials = users::find_credentials(&db, "leaving@example.org")
        .await
        .unwrap()
        .unwrap();
    assert!(credentials.deleted);
    // Nothing else is removed.
    assert_eq!(
        i64s_for(
            &db,
            "SELECT COUNT(*) FROM user_roles WHERE user_id = $1",
            user.id
        )
        .await,
        vec![Some(2)]
    );
    assert_eq!(
        i64s_for(
            &db,
            "SELECT deleted_at_ms FROM users WHERE id = $1",
            user.id
        )
        .await,
        vec![Some(T0 + 100)]
    );
    let recorded = events(&db, "user.deleted").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].target_id, Some(user.id.to_string()));

    let again = users::soft_delete(&db, user.id, T0 + 101, &audit).await;
    assert!(matches!(again, Err(Error::NotFound)), "{again:?}");
    let missing = users::soft_delete(&db, Uuid::now_v7(), T0 + 101, &audit).await;
    assert!(matches!(missing, Err(Error::NotFound)), "{missing:?}");
    assert_eq!(events(&db, "user.deleted").await.len(), 1);
    assert_chain_intact(&db).await;
}

async fn find_by_email_sees_only_non_deleted_users(db: Db) {
    let user = create_user(&db, "Finder@Example.org").await;
    assert_eq!(
        users::find_by_email(&db, "finder@example.org")
            .await
            .unwrap(),
        Some(user.clone())
    );
    assert_eq!(
        users::find_by_email(&db, "nobody@example.org")
            .await
            .unwrap(),
        None
    );
    execute_for(
        &db,
        "UPDATE users SET deleted_at_ms = 1 WHERE id = $1",
        user.id,
    )
    .await;
    assert_eq!(
        users::find_by_email(&db, "finder@example.org")
            .await
            .unwrap(),
        None
    );
}

async fn create_admin_creates_and_never_takes_an_existing_email(db: Db) {
    sync(&db).await;
    let email = Email::parse("Root@Example.org", "email").unwrap();
    let name = DisplayName::parse("Root", "displayName").unwrap();
    let new = NewUser {
        id: Uuid::now_v7(),
        email: &email,
        display_name: &name,
        password_hash: "hash-of-root",
        now_ms: T0,
    };
    let created_event = event("user.created");
    let root = users::create_admin(&db, &new, &created_event)
        .await
        .unwrap();
    assert_eq!(
        (root.id, root.email.as_str(), root.roles.clone()),
        (
            new.id,
            "Root@Example.org",
            vec!["admin".to_owned(), "user".to_owned()]
        )
    );
    assert_eq!(users::get(&db, root.id).await.unwrap(), Some(root.clone()));
    let recorded = events(&db, "user.created").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].actor_id, recorded[0].target_id.clone()),
        (Some(root.id), Some(root.id.to_string()))
    );
    assert!(
        rampart_store::rbac::user_permissions(&db, root.id)
            .await
            .unwrap()
            .contains("roles:assign")
    );

    // An existing account (live, or soft-deleted) is never promoted by a create.
    let existing = create_user(&db, "member@example.org").await;
    let deleted = create_user(&db, "gone@example.org").await;
    users::soft_delete(&db, deleted.id, T0 + 1, &event("user.deleted"))
        .await
        .unwrap();
    for address in ["MEMBER@example.org", "gone@example.org"] {
        let email = Email::parse(address, "email").unwrap();
        let again = NewUser {
            id: Uuid::now_v7(),
            email: &email,
            display_name: &name,
            password_hash: "a-new-hash",
            now_ms: T0 + 50,
        };
        let taken = users::create_admin(&db, &again, &created_event).await;
        assert!(
            matches!(&taken, Err(Error::Conflict(m)) if m == "email already registered"),
            "{taken:?}"
        );
    }
    assert_eq!(
        users::get(&db, existing.id).await.unwrap().unwrap().roles,
        ["user"]
    );
    assert_eq!(events(&db, "user.created").await.len(), 1);
    assert_chain_intact(&db).await;
}

async fn promote_to_admin_only_while_the_verified_hash_is_in_place(db: Db) {
    sync(&db).await;
    let promoted_event = event("user.promoted");
    create_role(&db, "support", &["users:read"]).await;
    let member = create_user(&db, "member@example.org").await;
    set_roles(&db, member.id, &["support", "user"])
        .await
        .unwrap();
    let hash = "hash-of-member@example.org";

    // A hash other than the stored one (the password changed since it was verified).
    let stale = users::promote_to_admin(&db, member.id, "an-older-hash", T0 + 50, &promoted_event)
        .await
        .unwrap();
    assert_eq!(stale, Promotion::Refused);
    assert_eq!(
        users::get(&db, member.id).await.unwrap().unwrap().roles,
        ["support", "user"]
    );

    // The verified hash: `admin` is added, the rest stays.
    let Promotion::Promoted(promoted) =
        users::promote_to_admin(&db, member.id, hash, T0 + 50, &promoted_event)
            .await
            .unwrap()
    else {
        panic!("not promoted");
    };
    assert_eq!(promoted.id, member.id);
    assert_eq!(promoted.roles, ["admin", "support", "user"]);
    assert_eq!(promoted.display_name, member.display_name);
    assert_eq!(promoted.updated_at_ms, T0 + 50);
    assert_eq!(
        users::find_credentials(&db, "member@example.org")
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .expose(),
        hash
    );
    let recorded = events(&db, "user.promoted").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].actor_id, recorded[0].target_id.clone()),
        (Some(member.id), Some(member.id.to_string()))
    );

    // Again: nothing changes and nothing is recorded.
    let again = users::promote_to_admin(&db, member.id, hash, T0 + 60, &promoted_event)
        .await
        .unwrap();
    assert_eq!(again, Promotion::AlreadyAdmin(promoted.clone()));
    assert_eq!(events(&db, "user.promoted").await.len(), 1);

    // A disabled or deleted account is refused, with the right hash too.
    let disabled = create_user(&db, "disabled@example.org").await;
    users::update_admin(
        &db,
        disabled.id,
        None,
        Some(UserStatus::Disabled),
        T0 + 70,
        &event("user.updated"),
    )
    .await
    .unwrap();
    let deleted = create_user(&db, "deleted@example.org").await;
    users::soft_delete(&db, deleted.id, T0 + 70, &event("user.deleted"))
        .await
        .unwrap();
    for (id, email) in [
        (disabled.id, "disabled@example.org"),
        (deleted.id, "deleted@example.org"),
        (Uuid::now_v7(), "nobody@example.org"),
    ] {
        let hash = format!("hash-of-{email}");
        let refused = users::promote_to_admin(&db, id, &hash, T0 + 80, &promoted_event)
            .await
            .unwrap();
        assert_eq!(refused, Promotion::Refused, "{email}");
    }
    assert_eq!(
        rampart_store::rbac::users_with_role(&db, users::ADMIN_ROLE_ID)
            .await
            .unwrap(),
        [member.id]
    );
    assert_eq!(events(&db, "user.promoted").await.len(), 1);
    assert_chain_intact(&db).await;
}
