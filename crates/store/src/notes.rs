//! The `notes` table: the example owned module (contract §7). Ownership, the audit event
//! of each change and pagination are the kit's ([`crate::owned`]); this module declares its
//! columns. Titles and bodies arrive validated and sanitised and are stored as given.

use crate::owned::{Bind, Value, owned_table};

owned_table! {
    pub const TABLE: OwnedTable<Note, NotePatch> = "notes" {
        columns: "title, body",
        insert: "$4, $5",
        // A missing title or body keeps the stored one.
        update: "title = COALESCE($4, title), body = COALESCE($5, body)",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Note {
    pub title: String,
    /// Sanitised HTML.
    pub body: String,
}

impl Bind for Note {
    fn values(&self) -> Vec<Value<'_>> {
        vec![self.title.as_str().into(), self.body.as_str().into()]
    }
}

/// A change: `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotePatch {
    pub title: Option<String>,
    pub body: Option<String>,
}

impl Bind for NotePatch {
    fn values(&self) -> Vec<Value<'_>> {
        vec![self.title.as_deref().into(), self.body.as_deref().into()]
    }
}
