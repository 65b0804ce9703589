//! The request pipeline of contract §1–3, as tower/axum layers. `crate::build_router`
//! stacks them; the order there is part of the contract (route → rate limit → body →
//! authentication → …).

pub mod access_log;
pub mod client_ip;
pub mod cors;
pub mod edge;
pub mod limits;
pub mod problem;
pub mod rate_limit;
pub mod request_id;
pub mod security_headers;
