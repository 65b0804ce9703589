//! The `bookmarks` table: saved links of a user, an owned module on the kit
//! ([`crate::owned`]), which scopes every statement to the owner and audits every change.
//! URLs and titles arrive validated and normalised and are stored as given.

use crate::owned::{Bind, Value, owned_table};

owned_table! {
    pub const TABLE: OwnedTable<Bookmark, BookmarkPatch> = "bookmarks" {
        columns: "url, title",
        insert: "$4, $5",
        // A missing url or title keeps the stored one.
        update: "url = COALESCE($4, url), title = COALESCE($5, title)",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Bookmark {
    /// An http or https URL, normalised.
    pub url: String,
    pub title: String,
}

impl Bind for Bookmark {
    fn values(&self) -> Vec<Value<'_>> {
        vec![self.url.as_str().into(), self.title.as_str().into()]
    }
}

/// A change: `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookmarkPatch {
    pub url: Option<String>,
    pub title: Option<String>,
}

impl Bind for BookmarkPatch {
    fn values(&self) -> Vec<Value<'_>> {
        vec![self.url.as_deref().into(), self.title.as_deref().into()]
    }
}
