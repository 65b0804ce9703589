//! Who is asking, for the audit trail: client IP, request id and user agent.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use rampart_core::audit::{NewAuditEvent, Outcome};

use crate::extract::{ClientIp, RequestId};
use crate::problem::Problem;

const MAX_USER_AGENT: usize = 512;

#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub ip: IpAddr,
    pub request_id: String,
    pub user_agent: Option<String>,
}

impl RequestMeta {
    /// An audit event carrying this request's IP, user agent and request id.
    pub fn event(&self, action: &str, outcome: Outcome) -> NewAuditEvent {
        let mut event = NewAuditEvent::new(action, outcome)
            .with_ip_address(self.ip.to_string())
            .with_request_id(self.request_id.clone());
        if let Some(ua) = &self.user_agent {
            event = event.with_user_agent(ua.clone());
        }
        event
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        let RequestId(request_id) = RequestId::from_request_parts(parts, state).await?;
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
        Ok(Self {
            ip,
            request_id,
            user_agent,
        })
    }
}
