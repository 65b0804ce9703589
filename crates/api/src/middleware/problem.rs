//! Renders every non-2xx response as the contract's problem document (see `crate::problem`).

use axum::http::header;
use axum::response::Response;

use crate::problem::Problem;

/// Renders `response` as the problem document of its status when it is a 4xx or 5xx.
pub(crate) fn render(request_id: &str, response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let problem = match response.extensions().get::<Problem>() {
        Some(problem) => problem.clone(),
        None => Problem::for_status(status),
    };
    let mut rendered = problem.render(request_id);
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
