//! Users and sessions as the domain sees them, and the newtypes that make invalid input
//! impossible past the boundary: an [`Email`] is trimmed, well-formed, at most 254
//! characters (RFC 5321; [`check_email_length`] is the same bound for forms that take any
//! text, such as login) and carries its case-folded form for uniqueness; a [`DisplayName`] is 1–100 characters with no control
//! characters (contract §4). Nothing here serialises: response types live in `api`.

use uuid::Uuid;

use crate::error::{FieldError, Redacted};

/// A syntactically valid email address as the user typed it (trimmed), plus the form used
/// for uniqueness and lockout (`normalized`: lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    display: String,
    normalized: String,
}

impl Email {
    /// Characters (Unicode scalar values) after trimming (contract §4, RFC 5321).
    pub const MAX_LEN: usize = 254;

    /// Parses an address for `field`. The rules are deliberately simple (one `@`, a
    /// non-empty local part of at most 64 bytes, a dotted domain, no spaces or control
    /// characters, at most [`Self::MAX_LEN`] characters): deliverability is proven by
    /// mail, not by a regex.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldError> {
        let invalid = || FieldError::new(field, "must be a valid email address");
        check_email_length(raw, field)?;
        let trimmed = raw.trim();
        // Lower-casing can change an address (`İ` becomes `i` and a combining dot, a
        // local part can grow past 64 bytes): the key it is stored and looked up under must
        // be as well-formed as what was typed.
        let normalized = trimmed.to_lowercase();
        if !Self::well_formed(trimmed) || !Self::well_formed(&normalized) {
            return Err(invalid());
        }
        check_email_length(&normalized, field)?;
        Ok(Self {
            display: trimmed.to_owned(),
            normalized,
        })
    }

    fn well_formed(address: &str) -> bool {
        if address.is_empty() || address.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return false;
        }
        let Some((local, domain)) = address.rsplit_once('@') else {
            return false;
        };
        // `|` and `%` are legal in a local part but practically unused; refusing them keeps
        // lockout keys (`email|ip`, escaped for anything typed) unambiguous.
        if local.is_empty() || local.len() > 64 || local.contains(['@', '|', '%']) {
            return false;
        }
        // Letters (any script, for IDNs), digits, '-' and '.': nothing that could act as a
        // separator elsewhere (lockout keys are `email|ip`).
        let chars_ok = domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        chars_ok
            && domain.contains('.')
            && domain
                .split('.')
                .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
    }

    /// The address as the user wrote it, trimmed.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// Lower-cased: the key for uniqueness, lookup and lockout.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The part before the last `@`, lower-cased (the password policy refuses passwords
    /// that contain it).
    pub fn local_part(&self) -> &str {
        self.normalized
            .rsplit_once('@')
            .map_or(self.normalized.as_str(), |(local, _)| local)
    }
}

/// The one rule every email field enforces, also those that otherwise take any text
/// (login, password-reset request: their answer must not depend on whether the text is an
/// address): at most [`Email::MAX_LEN`] characters after trimming. Checked on the form
/// before anything is looked up or counted, so no lockout or throttle key is ever made
/// from a longer one.
pub fn check_email_length(raw: &str, field: &str) -> Result<(), FieldError> {
    if raw.trim().chars().count() > Email::MAX_LEN {
        return Err(FieldError::new(field, "must be at most 254 characters"));
    }
    Ok(())
}

/// The normalised form of whatever was typed into an email field, valid or not: lockout
/// counters are kept per normalised email whether or not an account exists.
pub fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// An address as audit details may show it (contract §11: never in full): the first
/// character of the local part, `***`, and the domain (`j***@example.org`).
pub fn mask_email(raw: &str) -> String {
    let normalized = normalize_email(raw);
    match normalized.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// 1–100 characters (Unicode scalar values), no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldError> {
        let count = raw.chars().count();
        if count == 0 || raw.trim().is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        if count > Self::MAX_CHARS {
            return Err(FieldError::new(field, "must be at most 100 characters"));
        }
        if raw.chars().any(char::is_control) {
            return Err(FieldError::new(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Disabled,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

/// A user as every response shows it (contract §5's user view). No secret lives here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub status: UserStatus,
    /// Role names, sorted.
    pub roles: Vec<String>,
    pub mfa_enabled: bool,
    /// The owner proved the address by a mailed link (contract §11).
    pub email_verified: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What login needs to check a password; never leaves the server.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: Uuid,
    pub password_hash: Redacted<String>,
    pub status: UserStatus,
    /// Soft-deleted accounts cannot log in; they look like wrong credentials.
    pub deleted: bool,
    pub mfa_enabled: bool,
    /// Moves on with every credential change; a session is made at the epoch that was read
    /// together with the hash it was checked against (contract §4).
    pub credential_epoch: i64,
}

/// A login: what a refresh-token family and every access token issued from it belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at_ms: i64,
    pub last_used_at_ms: i64,
    /// The session's hard end: login time + `RAMPART_SESSION_MAX_AGE`.
    pub expires_at_ms: i64,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        let e = Email::parse("  Alice.Smith@Example.ORG ", "email").unwrap();
        assert_eq!(e.as_str(), "Alice.Smith@Example.ORG");
        assert_eq!(e.normalized(), "alice.smith@example.org");
        assert_eq!(e.local_part(), "alice.smith");
        for bad in [
            "",
            "   ",
            "no-at.example.org",
            "@example.org",
            "a@",
            "a@nodot",
            "a b@example.org",
            "a@exa mple.org",
            "a@.example.org",
            "a@example..org",
            "a\u{0}@example.org",
            "a@x.org|1.2.3.4",
            "a|b@example.org",
            "a%b@example.org",
            "a@ex_ample.org",
            "a@exa;mple.org",
            // Lower-cases to `a@a.i\u{307}`: the stored key would end in a combining mark.
            "A@A.İ",
        ] {
            assert!(Email::parse(bad, "email").is_err(), "{bad:?}");
        }
        let long = format!("{}@example.org", "a".repeat(65));
        assert!(Email::parse(&long, "email").is_err());
        // 32 × `İ` is 64 bytes; lower-cased, 96: the key's local part would be too long.
        let growing = format!("{}@example.org", "İ".repeat(32));
        assert!(Email::parse(&growing, "email").is_err());
        assert_eq!(normalize_email(" X@Y.Z "), "x@y.z");
    }

    /// `len` characters: a 64-character local part and a dotted domain of letters `l`.
    fn email_of_chars(len: usize, l: char) -> String {
        let local = "a".repeat(64);
        let domain_len = len - local.len() - 1 - ".org".len();
        format!("{local}@{}.org", l.to_string().repeat(domain_len))
    }

    #[test]
    fn emails_are_at_most_254_characters_after_trimming() {
        for l in ['b', 'é'] {
            let at_limit = email_of_chars(254, l);
            assert_eq!(at_limit.chars().count(), 254);
            let padded = format!("  {at_limit}\t");
            assert_eq!(Email::parse(&padded, "email").unwrap().as_str(), at_limit);
            assert!(check_email_length(&padded, "email").is_ok());

            let over = email_of_chars(255, l);
            let e = Email::parse(&over, "email").unwrap_err();
            assert_eq!(e.field, "email");
            assert_eq!(e.issue, "must be at most 254 characters");
            let e = check_email_length(&over, "email").unwrap_err();
            assert_eq!(e.issue, "must be at most 254 characters");
        }
        // Any text is measured, not only addresses.
        assert!(check_email_length(&"x".repeat(254), "email").is_ok());
        assert!(check_email_length(&"x".repeat(255), "email").is_err());
        assert!(check_email_length("", "email").is_ok());
    }

    #[test]
    fn display_names() {
        assert!(DisplayName::parse("Ada Lovelace", "displayName").is_ok());
        assert!(DisplayName::parse(&"é".repeat(100), "displayName").is_ok());
        for bad in ["", "   ", "tab\there", "nul\u{0}", "line\nbreak"] {
            assert!(DisplayName::parse(bad, "displayName").is_err(), "{bad:?}");
        }
        assert!(DisplayName::parse(&"x".repeat(101), "displayName").is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Addresses the rules accept, with upper case, non-ASCII letters (including some
        /// whose lower case is longer or depends on context) and surrounding spaces.
        fn plausible() -> impl Strategy<Value = String> {
            (
                "[ \t]{0,2}",
                "[a-zA-Z0-9._+!#'ÅÉİΣß-]{1,64}",
                prop::collection::vec("[a-zA-Z0-9ÅÉİΣßẞ]{1,12}", 2..5),
                "[ \t]{0,2}",
            )
                .prop_map(|(pre, local, labels, post)| {
                    format!("{pre}{local}@{}{post}", labels.join("."))
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn email_parsing_never_panics(raw in any::<String>()) {
                let parsed = Email::parse(&raw, "email");
                let _ = normalize_email(&raw);
                let _ = check_email_length(&raw, "email");
                if let Err(e) = parsed {
                    prop_assert_eq!(e.field, "email");
                }
            }

            #[test]
            fn email_parsing_never_panics_on_near_misses(raw in "[ a-zA-Z0-9@.|%\\-İ]{0,80}") {
                let _ = Email::parse(&raw, "email");
                let _ = normalize_email(&raw);
            }

            #[test]
            fn a_parsed_email_reparses_to_the_same_normalized_value(raw in plausible()) {
                let Ok(email) = Email::parse(&raw, "email") else {
                    return Ok(());
                };
                prop_assert_eq!(email.normalized(), normalize_email(&raw));
                prop_assert_eq!(normalize_email(email.normalized()), email.normalized());
                let again = Email::parse(email.as_str(), "email");
                prop_assert_eq!(again.as_ref(), Ok(&email));
                let padded = format!("  {}\t", email.as_str());
                let again = Email::parse(&padded, "email");
                prop_assert_eq!(again.as_ref(), Ok(&email));
            }

            /// The key an address is stored and looked up under is itself an address the
            /// rules accept.
            /// `A@A.İ` lower-cases to `a@a.i\u{307}`, which ends in a combining mark the
            /// domain rule refuses; lower-casing can also push the local part past 64 bytes
            /// or the whole past 254 characters. Such an address is refused.
            #[test]
            fn the_normalized_form_of_a_parsed_email_is_itself_valid(raw in plausible()) {
                let Ok(email) = Email::parse(&raw, "email") else {
                    return Ok(());
                };
                let from_normalized = Email::parse(email.normalized(), "email");
                prop_assert_eq!(
                    from_normalized.as_ref().map(Email::normalized),
                    Ok(email.normalized())
                );
            }

            #[test]
            fn anything_over_254_characters_is_refused(
                local in "[a-zA-Zé]{1,64}",
                labels in prop::collection::vec("[a-zA-Zé]{40,63}", 7..10),
            ) {
                let raw = format!("{local}@{}", labels.join("."));
                prop_assume!(raw.chars().count() > Email::MAX_LEN);
                let e = Email::parse(&raw, "email").unwrap_err();
                prop_assert_eq!(e.issue, "must be at most 254 characters");
                prop_assert!(check_email_length(&raw, "email").is_err());
                let padded = format!(" {raw} ");
                prop_assert!(check_email_length(&padded, "email").is_err());
            }
        }
    }
}
