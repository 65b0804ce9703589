//! Role-based access control: the permission catalogue the code declares, the newtypes for
//! permission and role names, and the anti-escalation rules (contract §5–6).
//!
//! Each module declares its feature and its `feature:action` permissions in
//! [`CATALOGUE`] (an owned module in one line, with [`owned_feature!`](crate::owned_feature)); `rampart migrate`
//! syncs it into the database, retiring permissions the code no longer declares (a retired
//! permission grants nothing). The built-in roles are defined here too: `admin` holds every
//! permission, `user` holds what each feature grants its members ([`user_defaults`]).

use std::collections::BTreeSet;

use crate::error::FieldError;

/// A permission as a module declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermissionDef {
    pub name: &'static str,
    pub description: &'static str,
}

/// A feature (module) and the permissions it declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureDef {
    pub name: &'static str,
    pub description: &'static str,
    pub permissions: &'static [PermissionDef],
    /// The permissions of this feature every member (the built-in `user` role) holds: only
    /// what they need for their own data; everything else is granted through roles.
    pub members: &'static [&'static str],
}

/// The feature of an owned module (contract §7): `<name>:read` and `<name>:write` on one's
/// own objects, both held by every member, and `<name>:read_any` / `<name>:manage_any` on
/// anyone's, granted through roles.
#[macro_export]
macro_rules! owned_feature {
    ($name:literal, $description:literal) => {
        $crate::rbac::FeatureDef {
            name: $name,
            description: $description,
            permissions: &[
                $crate::rbac::PermissionDef {
                    name: concat!($name, ":read"),
                    description: concat!("List and read one's own ", $name),
                },
                $crate::rbac::PermissionDef {
                    name: concat!($name, ":write"),
                    description: concat!("Create, change and delete one's own ", $name),
                },
                $crate::rbac::PermissionDef {
                    name: concat!($name, ":read_any"),
                    description: concat!("Read any user's ", $name),
                },
                $crate::rbac::PermissionDef {
                    name: concat!($name, ":manage_any"),
                    description: concat!("Read, change and delete any user's ", $name),
                },
            ],
            members: &[concat!($name, ":read"), concat!($name, ":write")],
        }
    };
}

pub const USERS: FeatureDef = FeatureDef {
    name: "users",
    description: "User administration",
    permissions: &[
        PermissionDef {
            name: "users:read",
            description: "List and view any user",
        },
        PermissionDef {
            name: "users:update",
            description: "Change any user's display name or status, end their sessions",
        },
        PermissionDef {
            name: "users:delete",
            description: "Soft-delete any user",
        },
    ],
    members: &[],
};

pub const ROLES: FeatureDef = FeatureDef {
    name: "roles",
    description: "Roles and their permissions",
    permissions: &[
        PermissionDef {
            name: "roles:read",
            description: "List roles and permissions",
        },
        PermissionDef {
            name: "roles:write",
            description: "Create, change and delete roles",
        },
        PermissionDef {
            name: "roles:assign",
            description: "Assign roles to users",
        },
    ],
    members: &[],
};

pub const NOTES: FeatureDef = owned_feature!("notes", "Notes (the example business module)");

pub const AUDIT: FeatureDef = FeatureDef {
    name: "audit",
    description: "The audit trail",
    permissions: &[PermissionDef {
        name: "audit:read",
        description: "Query audit events",
    }],
    members: &[],
};

/// Every feature the code declares, one line each.
#[rustfmt::skip]
pub const CATALOGUE: &[FeatureDef] = &[
    USERS,
    ROLES,
    NOTES,
    AUDIT,
    owned_feature!("bookmarks", "Bookmarks: saved links"),
];

/// What the built-in `user` role holds: every feature's `members` permissions.
pub fn user_defaults() -> Vec<&'static str> {
    members_of(CATALOGUE)
}

/// The `members` permissions of every feature of `catalogue`.
pub fn members_of(catalogue: &[FeatureDef]) -> Vec<&'static str> {
    catalogue
        .iter()
        .flat_map(|f| f.members.iter().copied())
        .collect()
}

pub const ADMIN_ROLE: &str = "admin";
pub const USER_ROLE: &str = "user";

/// The permission that must always keep an active holder (contract §5).
pub const ROLES_ASSIGN: &str = "roles:assign";

/// Every permission name of the catalogue.
pub fn all_permissions() -> impl Iterator<Item = &'static PermissionDef> {
    CATALOGUE.iter().flat_map(|f| f.permissions.iter())
}

fn is_name_part(part: &str) -> bool {
    let mut chars = part.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `feature:action`, each part `[a-z][a-z0-9_]*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission(String);

impl Permission {
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldError> {
        match raw.split_once(':') {
            Some((feature, action)) if is_name_part(feature) && is_name_part(action) => {
                Ok(Self(raw.to_owned()))
            }
            _ => Err(FieldError::new(
                field,
                "must be a permission like feature:action",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn feature(&self) -> &str {
        self.0.split_once(':').map_or("", |(f, _)| f)
    }
}

/// A role name: `[a-z][a-z0-9_-]{1,49}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleName(String);

impl RoleName {
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldError> {
        let mut chars = raw.chars();
        let ok = (2..=50).contains(&raw.len())
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new(
                field,
                "must be 2-50 characters: a lowercase letter, then lowercase letters, digits, - or _",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Anti-escalation (contract §5–6): nobody grants a permission they do not hold.
/// Returns the permissions of `granted` that `holder` lacks.
pub fn beyond_own<'a>(
    holder: &BTreeSet<String>,
    granted: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    granted
        .into_iter()
        .filter(|p| !holder.contains(*p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_well_formed() {
        let mut seen = BTreeSet::new();
        for feature in CATALOGUE {
            assert!(is_name_part(feature.name));
            for p in feature.permissions {
                let parsed = Permission::parse(p.name, "p").unwrap();
                assert_eq!(parsed.feature(), feature.name, "{}", p.name);
                assert!(seen.insert(p.name), "duplicate {}", p.name);
            }
        }
        for feature in CATALOGUE {
            for p in feature.members {
                assert!(feature.permissions.iter().any(|d| d.name == *p), "{p}");
            }
        }
        assert!(user_defaults().iter().all(|p| seen.contains(p)));
        assert!(seen.contains(ROLES_ASSIGN));
    }

    #[test]
    fn an_owned_feature_declares_four_permissions_and_grants_members_two() {
        let names: Vec<(&str, &str)> = NOTES
            .permissions
            .iter()
            .map(|p| (p.name, p.description))
            .collect();
        assert_eq!(
            names,
            [
                ("notes:read", "List and read one's own notes"),
                ("notes:write", "Create, change and delete one's own notes"),
                ("notes:read_any", "Read any user's notes"),
                (
                    "notes:manage_any",
                    "Read, change and delete any user's notes"
                ),
            ]
        );
        assert_eq!(NOTES.members, ["notes:read", "notes:write"]);
        assert!(user_defaults().starts_with(&["notes:read", "notes:write"]));
    }

    #[test]
    fn names() {
        assert!(Permission::parse("notes:read_any", "p").is_ok());
        for bad in [
            "notes",
            "Notes:read",
            "notes:",
            ":read",
            "notes:read:x",
            "1a:b",
            "a-b:c",
        ] {
            assert!(Permission::parse(bad, "p").is_err(), "{bad}");
        }
        assert!(RoleName::parse("support-team_2", "name").is_ok());
        for bad in ["a", "A-team", "-x", "1x", "has space", &"x".repeat(51)] {
            assert!(RoleName::parse(bad, "name").is_err(), "{bad}");
        }
    }

    #[test]
    fn escalation() {
        let mine: BTreeSet<String> = ["notes:read".to_owned()].into();
        assert!(beyond_own(&mine, ["notes:read"]).is_empty());
        assert_eq!(
            beyond_own(&mine, ["notes:read", "users:read"]),
            ["users:read"]
        );
    }
}
