//! Renders every non-2xx response as the contract's problem document (see `crate::problem`).

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::extract::RequestId;
use crate::problem::Problem;

pub async fn layer(req: Request, next: Next) -> Response {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let problem = match response.extensions().get::<Problem>() {
        Some(problem) => problem.clone(),
        None => Problem::for_status(status),
    };
    let mut rendered = problem.render(&request_id);
    // Keep headers set by inner layers (CORS, `Allow` on 405) but never their body or type.
    let (parts, _) = response.into_parts();
    for name in parts.headers.keys() {
        if name == header::CONTENT_TYPE
            || name == header::CONTENT_LENGTH
            || rendered.headers().contains_key(name)
        {
            continue;
        }
        for value in parts.headers.get_all(name) {
            rendered.headers_mut().append(name.clone(), value.clone());
        }
    }
    rendered
}
