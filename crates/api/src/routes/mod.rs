//! One module per feature, each exporting `fn routes() -> OpenApiRouter<AppState>`.

pub mod health;
pub mod jwks;
