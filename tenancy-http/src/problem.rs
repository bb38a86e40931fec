//! RFC 9457 problem details: every error answer of the SDK's HTTP surface.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;
use time::OffsetDateTime;

/// The media type of problem answers.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field of a request body or query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field, as a JSON pointer-like dotted path (`email`, `roles.0`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An error answer: status, a stable `type` URI, a title, a detail, and the
/// headers some answers need (`WWW-Authenticate`, `Retry-After`).
///
/// Internal failures (store or key errors) answer a generic 500/503 body;
/// the real error is logged, never sent. Boxed, so results carrying it stay small.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Problem(Box<Body>);

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Body {
    #[serde(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
    #[serde(skip)]
    www_authenticate: Option<String>,
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0.status, self.0.title)?;
        if let Some(detail) = &self.0.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl Problem {
    /// A problem of `kind` (the part after `urn:tenancy:problem:`).
    pub fn new(status: StatusCode, kind: &str, title: &str) -> Self {
        Self(Box::new(Body {
            kind: format!("urn:tenancy:problem:{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            errors: Vec::new(),
            www_authenticate: None,
            retry_after: None,
        }))
    }

    /// The `type` URI.
    pub fn kind(&self) -> &str {
        &self.0.kind
    }

    /// The title.
    pub fn title(&self) -> &str {
        &self.0.title
    }

    /// The detail, if any.
    pub fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }

    /// The field errors.
    pub fn errors(&self) -> &[FieldError] {
        &self.0.errors
    }

    /// Adds the occurrence's detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.0.detail = Some(detail.into());
        self
    }

    /// Adds one field error.
    pub fn with_field(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.0.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
        self
    }

    /// Sets the `WWW-Authenticate` header.
    pub fn with_www_authenticate(mut self, value: String) -> Self {
        self.0.www_authenticate = Some(value);
        self
    }

    /// Sets `Retry-After` to the seconds until `until`, rounded up (at
    /// least 1), so a client that waits that long is not refused again.
    pub fn retry_after(mut self, until: OffsetDateTime, now: OffsetDateTime) -> Self {
        let remaining = until - now;
        let part = i64::from(remaining.subsec_nanoseconds() > 0);
        let seconds = (remaining.whole_seconds() + part).max(1);
        self.0.retry_after = Some(u64::try_from(seconds).unwrap_or(1));
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The `WWW-Authenticate` value, if any.
    pub fn www_authenticate(&self) -> Option<&str> {
        self.0.www_authenticate.as_deref()
    }

    /// The `Retry-After` seconds, if any.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        self.0.retry_after
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request").with_detail(detail)
    }

    /// 422: the body parsed but its fields are invalid.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid request",
        )
        .with_field(field, message)
    }

    /// 413: the body is longer than `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
        )
        .with_detail(format!("the body may be at most {limit} bytes"))
    }

    /// 415: the body is not JSON (by its `Content-Type`).
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
        )
        .with_detail("expected application/json")
    }

    /// A JSON body that did not deserialize: `422` naming `field` when the
    /// JSON is well formed but a value has the wrong type or is missing
    /// (`field` is `"body"` for the document as a whole), `400` when it is
    /// not JSON at all.
    pub fn from_json_error(field: &str, error: &serde_json::Error) -> Self {
        if error.is_data() {
            Self::invalid(field, error.to_string())
        } else {
            Self::bad_request(format!("malformed JSON: {error}"))
        }
    }

    /// 403: authenticated but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").with_detail(detail)
    }

    /// 404: not found, or in another tenant (never told apart).
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found")
    }

    /// 409: a uniqueness rule or the current state forbids the change.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict").with_detail(detail)
    }

    /// 500: an internal failure; `error` is logged, not sent.
    pub fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error, source = ?error.source(), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        )
    }

    /// 503: a dependency (database) is unavailable; `error` is logged, not sent.
    pub fn unavailable(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error, source = ?error.source(), "service unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
        )
    }

    /// The problem as an HTTP response.
    pub fn to_response(&self) -> Response<Bytes> {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(value) = self
            .0
            .www_authenticate
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(seconds) = self.0.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let after = |millis: i64| {
            Problem::bad_request("x")
                .retry_after(now + time::Duration::milliseconds(millis), now)
                .retry_after_seconds()
        };
        assert_eq!(after(90_000), Some(90));
        assert_eq!(after(89_001), Some(90));
        assert_eq!(after(1), Some(1));
        assert_eq!(after(-5_000), Some(1));
    }

    #[test]
    fn renders_rfc_9457_with_headers() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let problem = Problem::new(StatusCode::TOO_MANY_REQUESTS, "locked", "Account locked")
            .with_detail("too many failed logins")
            .retry_after(now + time::Duration::seconds(90), now)
            .with_www_authenticate("Bearer realm=\"app\"".into());
        let response = problem.to_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[header::RETRY_AFTER], "90");
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"app\""
        );
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "type": "urn:tenancy:problem:locked",
                "title": "Account locked",
                "status": 429,
                "detail": "too many failed logins"
            })
        );
        let invalid = Problem::invalid("email", "invalid email address").to_response();
        let body: serde_json::Value = serde_json::from_slice(invalid.body()).unwrap();
        assert_eq!(body["errors"][0]["field"], "email");
    }
}
