//! RBAC: the catalogue sync (idempotent, retiring and un-retiring), roles and their
//! grants, what a user may do, and the holder guard that never leaves the system without
//! an active user holding `roles:assign` (also under concurrent removals).

use std::collections::BTreeSet;

use rampart_core::Error;
use rampart_core::rbac::{
    AUDIT, CATALOGUE, FeatureDef, PermissionDef, RoleName, all_permissions, members_of,
    user_defaults,
};
use rampart_core::users::{DisplayName, User, UserStatus};
use rampart_store::Db;
use rampart_store::rbac::{self, Role, SyncReport};
use rampart_store::users::{self, ADMIN_ROLE_ID, USER_ROLE_ID};
use uuid::Uuid;

use crate::users::{
    DAY_MS, DELETE_USER, DISABLE_USER, T0, all_events, assert_chain_intact, count, create_user,
    event, events, execute_for, i64s_for, login,
};

backend_tests!(
    migrated: sync_seeds_the_catalogue_and_built_in_roles_once,
    sync_retires_what_the_code_dropped_and_brings_it_back,
    list_permissions_and_roles_are_sorted,
    user_permissions_is_the_union_of_active_roles_of_an_active_user,
    create_role_conflicts_and_validates_writing_nothing,
    update_and_delete_role_refuse_built_in_and_missing_roles,
    set_user_roles_replaces_roles_and_refuses_unknown_names,
    the_only_admin_keeps_admin_until_a_second_one_exists,
    the_only_source_of_roles_assign_cannot_lose_it,
    concurrent_removals_of_two_admins_leave_exactly_one,
    concurrent_role_changes_of_one_user_each_record_the_change_they_made,
);

/// The `notes` feature without `notes:read_any`.
const NOTES_WITHOUT_READ_ANY: FeatureDef = FeatureDef {
    name: "notes",
    description: "Notes (the example business module)",
    permissions: &[
        PermissionDef {
            name: "notes:read",
            description: "List and read one's own notes",
        },
        PermissionDef {
            name: "notes:write",
            description: "Create, change and delete one's own notes",
        },
        PermissionDef {
            name: "notes:manage_any",
            description: "Read, change and delete any user's notes",
        },
    ],
    members: &["notes:read", "notes:write"],
};

pub async fn sync(db: &Db) -> SyncReport {
    rbac::sync_catalogue(db, CATALOGUE, &user_defaults(), T0)
        .await
        .unwrap()
}

fn all_names() -> Vec<String> {
    let mut names: Vec<String> = all_permissions().map(|p| p.name.to_owned()).collect();
    names.sort();
    names
}

/// `names` and one more, as a set of permissions.
fn with(names: &[&str], more: &str) -> BTreeSet<String> {
    names
        .iter()
        .chain([&more])
        .map(|n| (*n).to_owned())
        .collect()
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

async fn role(db: &Db, id: Uuid) -> Role {
    rbac::get_role(db, id).await.unwrap().unwrap()
}

/// Creates a custom role `name` granting `permissions`.
pub async fn create_role(db: &Db, name: &str, permissions: &[&str]) -> Role {
    let name = RoleName::parse(name, "name").unwrap();
    rbac::create_role(
        db,
        None,
        &name,
        "A custom role",
        &strings(permissions),
        T0,
        &event("role.created"),
    )
    .await
    .unwrap()
}

pub async fn set_roles(db: &Db, user_id: Uuid, roles: &[&str]) -> rampart_core::Result<User> {
    rbac::set_user_roles(
        db,
        None,
        user_id,
        &strings(roles),
        T0 + 1,
        &event("user.roles_changed").with_target("user", user_id.to_string()),
    )
    .await
}

/// Registers `email` with the roles `admin` and `user` (after a sync).
pub async fn create_admin(db: &Db, email: &str) -> User {
    let user = create_user(db, email).await;
    set_roles(db, user.id, &["admin", "user"]).await.unwrap()
}

async fn sync_seeds_the_catalogue_and_built_in_roles_once(db: Db) {
    let first = sync(&db).await;
    assert_eq!(
        first,
        SyncReport {
            added: all_names(),
            retired: vec![]
        }
    );
    assert_eq!(role(&db, ADMIN_ROLE_ID).await.permissions, all_names());
    let mut defaults = strings(&user_defaults());
    defaults.sort();
    assert_eq!(role(&db, USER_ROLE_ID).await.permissions, defaults);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM features").await,
        i64::try_from(CATALOGUE.len()).unwrap()
    );

    // A grant the user role should not have is taken away by the next sync.
    execute_for(
        &db,
        "INSERT INTO role_permissions (role_id, permission) VALUES ($1, 'users:read')",
        USER_ROLE_ID,
    )
    .await;
    assert_eq!(sync(&db).await, SyncReport::default());
    assert_eq!(role(&db, USER_ROLE_ID).await.permissions, defaults);
    let before = role(&db, ADMIN_ROLE_ID).await;

    // The next run is a no-op.
    assert_eq!(sync(&db).await, SyncReport::default());
    assert_eq!(role(&db, ADMIN_ROLE_ID).await, before);
    assert_eq!(role(&db, USER_ROLE_ID).await.permissions, defaults);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM role_permissions").await,
        i64::try_from(all_names().len() + defaults.len()).unwrap()
    );

    // A default the code does not declare is refused before anything is written.
    let bad = rbac::sync_catalogue(&db, CATALOGUE, &["nope:nothing"], T0).await;
    assert!(matches!(bad, Err(Error::Internal(_))), "{bad:?}");
}

async fn sync_retires_what_the_code_dropped_and_brings_it_back(db: Db) {
    sync(&db).await;
    let support = create_role(&db, "support", &["notes:read_any", "users:read"]).await;
    let member = create_user(&db, "support@example.org").await;
    set_roles(&db, member.id, &["support", "user"])
        .await
        .unwrap();
    assert!(
        rbac::user_permissions(&db, member.id)
            .await
            .unwrap()
            .contains("notes:read_any")
    );

    // The code drops `notes:read_any` and the whole `audit` feature; the rest stays.
    let reduced: Vec<FeatureDef> = CATALOGUE
        .iter()
        .filter(|f| f.name != AUDIT.name)
        .map(|f| match f.name {
            "notes" => NOTES_WITHOUT_READ_ANY,
            _ => *f,
        })
        .collect();
    let report = rbac::sync_catalogue(&db, &reduced, &members_of(&reduced), T0 + 10)
        .await
        .unwrap();
    assert_eq!(
        report,
        SyncReport {
            added: vec![],
            retired: strings(&["audit:read", "notes:read_any"]),
        }
    );
    assert_eq!(role(&db, support.id).await.permissions, ["users:read"]);
    let held = rbac::user_permissions(&db, member.id).await.unwrap();
    assert_eq!(held, with(&members_of(&reduced), "users:read"));
    let admin = role(&db, ADMIN_ROLE_ID).await.permissions;
    assert!(!admin.contains(&"notes:read_any".to_owned()));
    assert!(!admin.contains(&"audit:read".to_owned()));
    let listed: Vec<String> = rbac::list_permissions(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(!listed.contains(&"notes:read_any".to_owned()));
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM role_permissions WHERE permission = 'notes:read_any'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM features WHERE name = 'audit' AND retired_at_ms IS NOT NULL"
        )
        .await,
        1
    );
    // A retired permission cannot be granted again.
    assert_eq!(
        rbac::unknown_permissions(&db, &strings(&["notes:read_any", "users:read"]))
            .await
            .unwrap(),
        ["notes:read_any"]
    );
    let regrant = rbac::update_role(
        &db,
        None,
        support.id,
        None,
        Some(&strings(&["notes:read_any"])),
        T0 + 11,
        &event("role.updated"),
    )
    .await;
    assert!(matches!(regrant, Err(Error::Validation(_))), "{regrant:?}");

    // The code declares them again: active again, the admin role gets them back, the
    // custom role does not (its grant was removed, not suspended).
    let report = sync(&db).await;
    assert_eq!(
        report,
        SyncReport {
            added: strings(&["audit:read", "notes:read_any"]),
            retired: vec![],
        }
    );
    assert_eq!(role(&db, ADMIN_ROLE_ID).await.permissions, all_names());
    assert_eq!(role(&db, support.id).await.permissions, ["users:read"]);
    assert!(
        !rbac::user_permissions(&db, member.id)
            .await
            .unwrap()
            .contains("notes:read_any")
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM features WHERE retired_at_ms IS NOT NULL"
        )
        .await,
        0
    );
    assert!(
        rbac::unknown_permissions(&db, &strings(&["notes:read_any"]))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn list_permissions_and_roles_are_sorted(db: Db) {
    assert!(rbac::list_permissions(&db).await.unwrap().is_empty());
    sync(&db).await;
    let permissions = rbac::list_permissions(&db).await.unwrap();
    let names: Vec<String> = permissions.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, all_names());
    let audit_read = permissions.iter().find(|p| p.name == "audit:read").unwrap();
    assert_eq!(
        (audit_read.feature.as_str(), audit_read.description.as_str()),
        (AUDIT.name, AUDIT.permissions[0].description)
    );

    create_role(&db, "support-team", &["users:read"]).await;
    create_role(&db, "auditor", &["audit:read", "users:read"]).await;
    let roles = rbac::list_roles(&db).await.unwrap();
    let summary: Vec<(&str, bool, usize)> = roles
        .iter()
        .map(|r| (r.name.as_str(), r.built_in, r.permissions.len()))
        .collect();
    assert_eq!(
        summary,
        [
            ("admin", true, all_names().len()),
            ("auditor", false, 2),
            ("support-team", false, 1),
            ("user", true, user_defaults().len()),
        ]
    );
    assert_eq!(roles[1].permissions, ["audit:read", "users:read"]);
    assert_eq!(
        rbac::get_role(&db, roles[1].id).await.unwrap().as_ref(),
        Some(&roles[1])
    );
    assert_eq!(rbac::get_role(&db, Uuid::now_v7()).await.unwrap(), None);
    assert_eq!(
        rbac::unknown_roles(&db, &strings(&["user", "nobody", "auditor", "nobody"]))
            .await
            .unwrap(),
        ["nobody"]
    );
}

async fn user_permissions_is_the_union_of_active_roles_of_an_active_user(db: Db) {
    sync(&db).await;
    create_role(&db, "reader", &["users:read", "notes:read"]).await;
    let user = create_user(&db, "union@example.org").await;
    let defaults: BTreeSet<String> = strings(&user_defaults()).into_iter().collect();
    assert_eq!(
        rbac::user_permissions(&db, user.id).await.unwrap(),
        defaults
    );
    set_roles(&db, user.id, &["user", "reader"]).await.unwrap();
    assert_eq!(
        rbac::user_permissions(&db, user.id).await.unwrap(),
        with(&user_defaults(), "users:read")
    );
    assert!(
        rbac::user_permissions(&db, Uuid::now_v7())
            .await
            .unwrap()
            .is_empty()
    );

    execute_for(&db, DISABLE_USER, user.id).await;
    assert!(
        rbac::user_permissions(&db, user.id)
            .await
            .unwrap()
            .is_empty()
    );
    execute_for(
        &db,
        "UPDATE users SET status = 'active' WHERE id = $1",
        user.id,
    )
    .await;
    assert_eq!(
        rbac::user_permissions(&db, user.id).await.unwrap(),
        with(&user_defaults(), "users:read")
    );
    execute_for(&db, DELETE_USER, user.id).await;
    assert!(
        rbac::user_permissions(&db, user.id)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn create_role_conflicts_and_validates_writing_nothing(db: Db) {
    sync(&db).await;
    let name = RoleName::parse("support", "name").unwrap();
    let audit = event("role.created").with_request_id("req-role");
    // Duplicates in the input are granted once.
    let created = rbac::create_role(
        &db,
        None,
        &name,
        "Support staff",
        &strings(&["users:read", "notes:read_any", "users:read"]),
        T0 + 5,
        &audit,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            created.name.as_str(),
            created.description.as_str(),
            created.built_in,
            created.created_at_ms,
            created.updated_at_ms
        ),
        ("support", "Support staff", false, T0 + 5, T0 + 5)
    );
    assert_eq!(created.permissions, ["notes:read_any", "users:read"]);
    assert_eq!(created.id.get_version_num(), 7);
    assert_eq!(
        rbac::get_role(&db, created.id).await.unwrap(),
        Some(created.clone())
    );
    let recorded = events(&db, "role.created").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (
            recorded[0].target_type.as_deref(),
            recorded[0].target_id.clone()
        ),
        (Some("role"), Some(created.id.to_string()))
    );

    let roles_before = count(&db, "SELECT COUNT(*) FROM roles").await;
    let grants_before = count(&db, "SELECT COUNT(*) FROM role_permissions").await;
    let taken = rbac::create_role(&db, None, &name, "Again", &[], T0 + 6, &audit).await;
    assert!(
        matches!(&taken, Err(Error::Conflict(m)) if m == "role name taken"),
        "{taken:?}"
    );
    let other = RoleName::parse("other", "name").unwrap();
    let unknown = rbac::create_role(
        &db,
        None,
        &other,
        "Unknown grants",
        &strings(&["users:read", "nope:nothing", "users:fly"]),
        T0 + 7,
        &audit,
    )
    .await;
    match unknown {
        Err(Error::Validation(errors)) => {
            assert_eq!(errors.len(), 2, "{errors:?}");
            assert!(
                errors.iter().all(|e| e.field == "permissions"),
                "{errors:?}"
            );
        }
        unexpected => panic!("{unexpected:?}"),
    }
    assert_eq!(count(&db, "SELECT COUNT(*) FROM roles").await, roles_before);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM role_permissions").await,
        grants_before
    );
    assert_eq!(events(&db, "role.created").await.len(), 1);
    assert_chain_intact(&db).await;
}

async fn update_and_delete_role_refuse_built_in_and_missing_roles(db: Db) {
    sync(&db).await;
    let support = create_role(&db, "support", &["users:read"]).await;
    let audit = event("role.updated");

    let described = rbac::update_role(
        &db,
        None,
        support.id,
        Some("Helpdesk"),
        None,
        T0 + 5,
        &audit,
    )
    .await
    .unwrap();
    assert_eq!(described.description, "Helpdesk");
    assert_eq!(described.permissions, ["users:read"]);
    assert_eq!(described.updated_at_ms, T0 + 5);
    let regranted = rbac::update_role(
        &db,
        None,
        support.id,
        None,
        Some(&strings(&["notes:read_any", "audit:read"])),
        T0 + 6,
        &audit,
    )
    .await
    .unwrap();
    assert_eq!(regranted.description, "Helpdesk");
    assert_eq!(regranted.permissions, ["audit:read", "notes:read_any"]);
    assert_eq!(role(&db, support.id).await, regranted);
    assert_eq!(events(&db, "role.updated").await.len(), 2);

    for id in [ADMIN_ROLE_ID, USER_ROLE_ID] {
        let changed = rbac::update_role(&db, None, id, Some("x"), None, T0 + 7, &audit).await;
        assert!(
            matches!(&changed, Err(Error::Conflict(m)) if m == "built-in roles cannot be changed"),
            "{changed:?}"
        );
        let deleted = rbac::delete_role(&db, id, T0 + 7, &event("role.deleted")).await;
        assert!(matches!(deleted, Err(Error::Conflict(_))), "{deleted:?}");
    }
    let missing =
        rbac::update_role(&db, None, Uuid::now_v7(), Some("x"), None, T0 + 7, &audit).await;
    assert!(matches!(missing, Err(Error::NotFound)), "{missing:?}");
    let unknown = rbac::update_role(
        &db,
        None,
        support.id,
        Some("changed"),
        Some(&strings(&["nope:nothing"])),
        T0 + 7,
        &audit,
    )
    .await;
    assert!(matches!(unknown, Err(Error::Validation(_))), "{unknown:?}");
    assert_eq!(role(&db, support.id).await, regranted);
    assert_eq!(events(&db, "role.updated").await.len(), 2);

    // Deleting takes the role away from its holders.
    let member = create_user(&db, "member@example.org").await;
    set_roles(&db, member.id, &["support", "user"])
        .await
        .unwrap();
    assert_eq!(
        rbac::users_with_role(&db, support.id).await.unwrap(),
        [member.id]
    );
    rbac::delete_role(&db, support.id, T0 + 8, &event("role.deleted"))
        .await
        .unwrap();
    assert_eq!(rbac::get_role(&db, support.id).await.unwrap(), None);
    assert_eq!(
        users::get(&db, member.id).await.unwrap().unwrap().roles,
        ["user"]
    );
    assert!(
        rbac::users_with_role(&db, support.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        rbac::user_permissions(&db, member.id).await.unwrap().len(),
        user_defaults().len()
    );
    let again = rbac::delete_role(&db, support.id, T0 + 9, &event("role.deleted")).await;
    assert!(matches!(again, Err(Error::NotFound)), "{again:?}");
    assert_eq!(events(&db, "role.deleted").await.len(), 1);
    assert_chain_intact(&db).await;
}

async fn set_user_roles_replaces_roles_and_refuses_unknown_names(db: Db) {
    sync(&db).await;
    create_role(&db, "support", &["users:read"]).await;
    let user = create_user(&db, "roles@example.org").await;

    let changed = set_roles(&db, user.id, &["user", "support", "support"])
        .await
        .unwrap();
    assert_eq!(changed.roles, ["support", "user"]);
    assert_eq!(changed.updated_at_ms, T0 + 1);
    assert_eq!(
        users::get(&db, user.id).await.unwrap(),
        Some(changed.clone())
    );
    let recorded = events(&db, "user.roles_changed").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].target_id, Some(user.id.to_string()));

    let unknown = set_roles(&db, user.id, &["user", "nobody"]).await;
    match unknown {
        Err(Error::Validation(errors)) => {
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].field, "roles");
        }
        unexpected => panic!("{unexpected:?}"),
    }
    let missing = set_roles(&db, Uuid::now_v7(), &["user"]).await;
    assert!(matches!(missing, Err(Error::NotFound)), "{missing:?}");
    let deleted = create_user(&db, "gone@example.org").await;
    execute_for(&db, DELETE_USER, deleted.id).await;
    let gone = set_roles(&db, deleted.id, &["user"]).await;
    assert!(matches!(gone, Err(Error::NotFound)), "{gone:?}");
    assert_eq!(users::get(&db, user.id).await.unwrap(), Some(changed));
    assert_eq!(events(&db, "user.roles_changed").await.len(), 1);

    // No roles at all is allowed (for a user who holds nothing that must survive).
    assert!(set_roles(&db, user.id, &[]).await.unwrap().roles.is_empty());
    assert_chain_intact(&db).await;
}

async fn the_only_admin_keeps_admin_until_a_second_one_exists(db: Db) {
    sync(&db).await;
    let first = create_admin(&db, "first@example.org").await;
    let session = login(&db, first.id, "h-first", T0, DAY_MS).await;
    let events_before = all_events(&db).await.len();

    let demoted = set_roles(&db, first.id, &["user"]).await;
    assert!(matches!(demoted, Err(Error::Forbidden)), "{demoted:?}");
    let disabled = users::update_admin(
        &db,
        first.id,
        None,
        Some(UserStatus::Disabled),
        T0 + 2,
        &event("user.updated"),
    )
    .await;
    assert!(matches!(disabled, Err(Error::Forbidden)), "{disabled:?}");
    let deleted = users::soft_delete(&db, first.id, T0 + 2, &event("user.deleted")).await;
    assert!(matches!(deleted, Err(Error::Forbidden)), "{deleted:?}");

    // Nothing changed: still an active admin with a live session, no new events.
    assert_eq!(
        users::get(&db, first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        i64s_for(
            &db,
            "SELECT COUNT(*) FROM sessions WHERE id = $1 AND revoked_at_ms IS NULL",
            session.id
        )
        .await,
        vec![Some(1)]
    );
    assert_eq!(all_events(&db).await.len(), events_before);

    // Changes that keep the holder pass: a new name, or roles that keep `admin`.
    let name = DisplayName::parse("Still Admin", "displayName").unwrap();
    users::update_admin(
        &db,
        first.id,
        Some(&name),
        None,
        T0 + 3,
        &event("user.updated"),
    )
    .await
    .unwrap();
    set_roles(&db, first.id, &["admin"]).await.unwrap();

    // With a second admin, the first may go, by any of the three routes.
    let second = create_admin(&db, "second@example.org").await;
    let third = create_admin(&db, "third@example.org").await;
    assert_eq!(
        set_roles(&db, first.id, &["user"]).await.unwrap().roles,
        ["user"]
    );
    let (disabled, revoked) = users::update_admin(
        &db,
        second.id,
        None,
        Some(UserStatus::Disabled),
        T0 + 4,
        &event("user.updated"),
    )
    .await
    .unwrap();
    assert_eq!((disabled.status, revoked.len()), (UserStatus::Disabled, 0));
    // The disabled admin no longer counts, so the last active one is protected again.
    let last = users::soft_delete(&db, third.id, T0 + 5, &event("user.deleted")).await;
    assert!(matches!(last, Err(Error::Forbidden)), "{last:?}");
    users::update_admin(
        &db,
        second.id,
        None,
        Some(UserStatus::Active),
        T0 + 6,
        &event("user.updated"),
    )
    .await
    .unwrap();
    users::soft_delete(&db, third.id, T0 + 7, &event("user.deleted"))
        .await
        .unwrap();
    assert_eq!(users::get(&db, third.id).await.unwrap(), None);
    assert_chain_intact(&db).await;
}

async fn the_only_source_of_roles_assign_cannot_lose_it(db: Db) {
    sync(&db).await;
    let delegator = create_role(&db, "delegator", &["roles:assign", "users:read"]).await;
    let holder = create_user(&db, "delegate@example.org").await;
    set_roles(&db, holder.id, &["delegator"]).await.unwrap();
    let audit = event("role.updated");

    let stripped = rbac::update_role(
        &db,
        None,
        delegator.id,
        None,
        Some(&strings(&["users:read"])),
        T0 + 2,
        &audit,
    )
    .await;
    assert!(matches!(stripped, Err(Error::Forbidden)), "{stripped:?}");
    let deleted = rbac::delete_role(&db, delegator.id, T0 + 2, &event("role.deleted")).await;
    assert!(matches!(deleted, Err(Error::Forbidden)), "{deleted:?}");
    assert_eq!(role(&db, delegator.id).await, delegator);
    assert_eq!(
        users::get(&db, holder.id).await.unwrap().unwrap().roles,
        ["delegator"]
    );
    assert!(events(&db, "role.updated").await.is_empty());
    assert!(events(&db, "role.deleted").await.is_empty());

    // Grants that keep `roles:assign` pass.
    rbac::update_role(
        &db,
        None,
        delegator.id,
        None,
        Some(&strings(&["roles:assign"])),
        T0 + 3,
        &audit,
    )
    .await
    .unwrap();
    // Once an admin holds it too, the custom role may lose it.
    create_admin(&db, "admin@example.org").await;
    rbac::update_role(&db, None, delegator.id, None, Some(&[]), T0 + 4, &audit)
        .await
        .unwrap();
    rbac::delete_role(&db, delegator.id, T0 + 5, &event("role.deleted"))
        .await
        .unwrap();
    assert_chain_intact(&db).await;
}

async fn concurrent_removals_of_two_admins_leave_exactly_one(db: Db) {
    sync(&db).await;
    let mut survivor = create_admin(&db, "admin-0@example.org").await;
    for round in 1..=4 {
        let other = create_admin(&db, &format!("admin-{round}@example.org")).await;
        let (a, b) = (survivor.id, other.id);
        let demote = {
            let db = db.clone();
            tokio::spawn(async move { set_roles(&db, a, &["user"]).await })
        };
        let delete = {
            let db = db.clone();
            tokio::spawn(async move {
                users::soft_delete(&db, b, T0 + 10, &event("user.deleted")).await
            })
        };
        let demoted = demote.await.unwrap();
        let deleted = delete.await.unwrap();
        let refused = [demoted.is_err(), deleted.is_err()];
        assert_eq!(
            refused.iter().filter(|r| **r).count(),
            1,
            "round {round}: {demoted:?} {deleted:?}"
        );
        assert!(
            matches!(demoted, Ok(_) | Err(Error::Forbidden))
                && matches!(deleted, Ok(_) | Err(Error::Forbidden))
        );
        survivor = if demoted.is_err() {
            users::get(&db, a).await.unwrap().unwrap()
        } else {
            users::get(&db, b).await.unwrap().unwrap()
        };
        assert!(survivor.roles.contains(&"admin".to_owned()));
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM users u JOIN user_roles ur ON ur.user_id = u.id \
                 JOIN roles r ON r.id = ur.role_id \
                 WHERE r.name = 'admin' AND u.deleted_at_ms IS NULL"
            )
            .await,
            1
        );
    }
    assert_chain_intact(&db).await;
}

/// Two role changes of one user released together: whatever order they commit in, each
/// `user.roles_changed` starts where the one before it ended (`from` is read inside the
/// changing transaction, not before it), and the last `to` is what the user holds.
async fn concurrent_role_changes_of_one_user_each_record_the_change_they_made(db: Db) {
    const ROUNDS: usize = 10;
    sync(&db).await;
    create_role(&db, "left", &[]).await;
    create_role(&db, "right", &[]).await;
    let user = create_user(&db, "swinging@example.org").await;
    for _ in 0..ROUNDS {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = [["user", "left"], ["user", "right"]]
            .into_iter()
            .map(|roles| {
                let (db, barrier) = (db.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    set_roles(&db, user.id, &roles).await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
    // Newest first as listed: reversed into chain (commit) order.
    let changes: Vec<(Vec<String>, Vec<String>)> = all_events(&db)
        .await
        .into_iter()
        .rev()
        .filter(|e| e.action == "user.roles_changed")
        .map(|e| {
            let details: serde_json::Value = serde_json::from_str(&e.details).unwrap();
            let names = |v: &serde_json::Value| -> Vec<String> {
                serde_json::from_value(v.clone()).unwrap()
            };
            (names(&details["from"]), names(&details["to"]))
        })
        .collect();
    assert_eq!(changes.len(), 2 * ROUNDS);
    assert_eq!(changes[0].0, strings(&["user"]));
    for pair in changes.windows(2) {
        assert_eq!(pair[1].0, pair[0].1, "{changes:?}");
    }
    let held = users::get(&db, user.id).await.unwrap().unwrap().roles;
    assert_eq!(changes.last().unwrap().1, held);
}
