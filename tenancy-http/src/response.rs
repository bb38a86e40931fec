//! Building answers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::problem::Problem;

/// A JSON answer, with `X-Content-Type-Options: nosniff`.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Result<Response<Bytes>, Problem> {
    let bytes = serde_json::to_vec(body).map_err(|e| Problem::internal(&e))?;
    let mut response = Response::new(Bytes::from(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
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
