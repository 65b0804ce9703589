//! A lean HTTP/1.1 client: one keep-alive connection per task over hyper's connection
//! API (no pool, no per-request client), so the load generator spends as little as possible
//! of the cores it shares with the server.

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Body = Full<Bytes>;

/// One keep-alive connection.
pub struct Conn {
    sender: SendRequest<Body>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            // Ends when the connection closes; an error shows up on the next send.
            let _ = connection.await;
        });
        Ok(Self { sender })
    }

    /// Sends `request` and reads the whole answer (the body must be drained for the
    /// connection to be reused).
    pub async fn send(&mut self, request: Request<Body>) -> Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Prebuilt header values, shared by every request of a phase.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    host: HeaderValue,
    json: HeaderValue,
}

impl Target {
    pub fn new(addr: SocketAddr) -> Result<Self> {
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            json: HeaderValue::from_static("application/json"),
        })
    }

    pub fn get(&self, path: &'static str, bearer: Option<&HeaderValue>) -> Result<Request<Body>> {
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(bearer) = bearer {
            builder = builder.header(AUTHORIZATION, bearer.clone());
        }
        Ok(builder.body(Body::new(Bytes::new()))?)
    }

    pub fn post_json(&self, path: &'static str, body: Bytes) -> Result<Request<Body>> {
        Ok(Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, self.json.clone())
            .body(Body::new(body))?)
    }
}

/// `Bearer <token>` as a header value.
pub fn bearer(token: &str) -> Result<HeaderValue> {
    Ok(HeaderValue::from_str(&format!("Bearer {token}"))?)
}
