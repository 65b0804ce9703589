//! 414 over 2048 bytes of request target, checked before routing. (413 and 415 are checked
//! after routing, in `crate::routing`, and by `ApiJson` for streamed bodies.)

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;

pub const MAX_TARGET_BYTES: usize = 2048;

/// 414 when the request target is over [`MAX_TARGET_BYTES`].
pub(crate) fn too_long(req: &Request) -> Option<Response> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    (target > MAX_TARGET_BYTES)
        .then(|| Problem::for_status(StatusCode::URI_TOO_LONG).into_response())
}
