//! Building answers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::problem::Problem;

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Result<Response<Bytes>, Problem> {
    let bytes = serde_json::to_vec(body).map_err(|e| Problem::internal(&e))?;
    let mut response = Response::new(Bytes::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// An empty `204 No Content`.
pub fn no_content() -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Adds a `Set-Cookie` header.
pub(crate) fn add_cookie(response: &mut Response<Bytes>, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}
