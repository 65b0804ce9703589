//! Maps `sqlx::Error` into `rampart_core::Error`: a unique violation (detected by kind,
//! because SQLite reports no constraint names) becomes `Conflict`; everything else becomes
//! `Internal` with a short context naming the operation. Never includes bound values.

use rampart_core::Error;

pub(crate) trait DbResultExt<T> {
    /// `what` names the operation, e.g. "appending an audit event".
    fn db_context(self, what: &'static str) -> rampart_core::Result<T>;
}

impl<T> DbResultExt<T> for Result<T, sqlx::Error> {
    fn db_context(self, what: &'static str) -> rampart_core::Result<T> {
        self.map_err(|err| map_sqlx_error(err, what))
    }
}

pub(crate) fn map_sqlx_error(err: sqlx::Error, what: &'static str) -> Error {
    if let sqlx::Error::Database(db_err) = &err
        && db_err.is_unique_violation()
    {
        return Error::Conflict(format!("{what}: already exists"));
    }
    Error::Internal(anyhow::Error::new(err).context(what))
}
