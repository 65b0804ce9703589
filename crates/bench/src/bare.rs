//! `rampart-bench bare-server`: the baseline `/users/me` is compared with, a minimal axum +
//! sqlx server with no safety at all. It serves `GET /api/v1/users/me` by running the very
//! query Rampart's handler runs (`rampart_store::users::get_for_session`) on a
//! `rampart_store::Db` built the way `rampart serve` builds it (`Db::connect` with the
//! `RAMPART_DB_POOL_SIZE` its configuration parser reads from the same environment), and
//! answers with the same `UserResponse` written by serde_json. Everything else is left
//! out: the bearer token's payload is decoded without checking its signature, issuer,
//! audience or expiry, and there is no middleware, no rate limit, no logging, no problem
//! documents (a bad request gets a bare status). Never expose it: any forged token reads
//! any user.
//!
//! It runs as a process of its own so that its CPU is read from `/proc/<pid>/stat` exactly
//! like the server's, on a runtime built like the server's (multi-thread, one worker per
//! core). `GET /health/ready` answers 200 once the pool is connected, for the bench's
//! start-up wait.

use std::net::SocketAddr;

use anyhow::{Context as _, Result, anyhow};
use axum::Router;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rampart_api::routes::users::UserResponse;
use rampart_core::clock::{Clock as _, SystemClock};
use rampart_core::config::{Config, Sources};
use rampart_store::Db;
use serde::Deserialize;
use uuid::Uuid;

#[derive(clap::Args)]
pub struct BareArgs {
    /// The database Rampart uses (for SQLite, relative to the working directory, as for
    /// the server).
    #[arg(long)]
    pub database_url: String,
    /// Address to listen on.
    #[arg(long, env = "RAMPART_BIND")]
    pub bind: SocketAddr,
}

pub fn run(args: &BareArgs) -> Result<()> {
    // The pool size comes from the server's own configuration parser, so the same
    // environment gives both processes the same pool.
    let sources = Sources::gather(None).map_err(|problems| anyhow!(problems.join("; ")))?;
    let config = Config::load(&sources).map_err(|problems| anyhow!(problems.join("; ")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args, config.db_pool_size))
}

async fn serve(args: &BareArgs, pool_size: u32) -> Result<()> {
    let db = Db::connect(&args.database_url, pool_size).await?;
    let app = Router::new()
        .route("/api/v1/users/me", get(get_me))
        .route("/health/ready", get(|| async { StatusCode::OK }))
        .with_state(db);
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn get_me(State(db): State<Db>, headers: HeaderMap) -> Response {
    let Some(subject) = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(unverified_subject)
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let now_ms = SystemClock.now_ms();
    match rampart_store::users::get_for_session(&db, subject.sub, subject.sid, now_ms).await {
        Ok(Some(user)) => match serde_json::to_vec(&UserResponse::from(&user)) {
            Ok(body) => (
                [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                body,
            )
                .into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Ok(None) => StatusCode::UNAUTHORIZED.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The user and session an access token names.
#[derive(Debug, PartialEq, Eq, Deserialize)]
struct Subject {
    sub: Uuid,
    sid: Uuid,
}

/// The `sub` and `sid` claims of a compact JWS, read from its payload **without verifying
/// anything**; `None` when the token is not three dot-separated parts with a base64url JSON
/// payload holding both.
fn unverified_subject(token: &str) -> Option<Subject> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(payload: &str) -> String {
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn reads_sub_and_sid_without_verifying() {
        let (sub, sid) = (Uuid::now_v7(), Uuid::now_v7());
        let payload = format!(r#"{{"iss":"rampart","sub":"{sub}","sid":"{sid}","exp":1}}"#);
        assert_eq!(
            unverified_subject(&token(&payload)),
            Some(Subject { sub, sid })
        );
    }

    #[test]
    fn refuses_what_is_not_a_token_with_both_claims() {
        let sub = Uuid::now_v7();
        assert_eq!(unverified_subject(""), None);
        assert_eq!(unverified_subject("a.b"), None);
        assert_eq!(unverified_subject("a.!!!.c"), None);
        assert_eq!(unverified_subject(&token("not json")), None);
        assert_eq!(
            unverified_subject(&token(&format!(r#"{{"sub":"{sub}"}}"#))),
            None
        );
        let both = format!(r#"{{"sub":"{sub}","sid":"{sub}"}}"#);
        assert_eq!(unverified_subject(&format!("{}.extra", token(&both))), None);
    }
}
