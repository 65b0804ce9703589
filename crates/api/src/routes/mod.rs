//! One module per feature, each exporting `fn routes() -> OpenApiRouter<AppState>`.

pub mod audit;
pub mod auth;
pub mod health;
pub mod jwks;
pub mod lifecycle;
pub mod passkeys;
pub mod rbac;
pub mod users;

/// Declares the owned modules (`crate::owned`), one per line, and [`owned`], which merges
/// their routes: registering a module is adding its name here.
macro_rules! owned_modules {
    ($($module:ident),+ $(,)?) => {
        $(pub mod $module;)+

        /// The routes of every owned module.
        pub fn owned() -> utoipa_axum::router::OpenApiRouter<crate::state::AppState> {
            utoipa_axum::router::OpenApiRouter::new()$(.merge($module::routes()))+
        }
    };
}

owned_modules! {
    notes,
    bookmarks,
}

/// Epoch milliseconds as an RFC 3339 UTC timestamp with millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format).unwrap_or_default()
}
