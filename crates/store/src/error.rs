//! Maps `sqlx::Error` into `rampart_core::Error`: a unique violation (detected by kind,
//! because SQLite reports no constraint names) becomes `Conflict`; a database that cannot
//! be reached, is shutting down or starting up, or is out of connections becomes
//! `Unavailable` (503, and the pool reconnects by itself once it answers again);
//! everything else becomes `Internal` with a short context naming the operation. Never
//! includes bound values.

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
    if is_unavailable(&err) {
        tracing::warn!(operation = what, error = %err, "database unavailable");
        return Error::Unavailable("the database is unavailable");
    }
    Error::Internal(anyhow::Error::new(err).context(what))
}

/// Errors that say "the database cannot serve now", not "this request is wrong": I/O and
/// TLS failures, pool timeouts, and the server-side codes for connection loss (class 08),
/// shutdown and start-up (57P01–57P03) and too many connections (53300); on SQLite, a
/// database still busy or locked after the busy timeout.
fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db_err) => db_err.code().is_some_and(|code| {
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
                || (db_err
                    .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                    .is_some()
                    && matches!(&*code, "5" | "6" | "261" | "262" | "517"))
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_unavailable() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            map_sqlx_error(io, "reading"),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            map_sqlx_error(sqlx::Error::PoolTimedOut, "reading"),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            map_sqlx_error(sqlx::Error::RowNotFound, "reading"),
            Error::Internal(_)
        ));
    }
}
