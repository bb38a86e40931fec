//! RFC 9457 problem details: every error answer of the SDK's HTTP surface.

use std::fmt;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use serde::Serialize;
use time::OffsetDateTime;

/// The media type of problem answers.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The kinds of problem the SDK answers, to match on instead of comparing
/// `type` strings. Each has a stable `type` URI
/// (`urn:tenancy:problem:<slug>`), a status and a title; problems a host
/// makes with [`Problem::new`] and a slug of its own are
/// [`ProblemKind::Other`].
///
/// ```
/// use tenancy_http::{Problem, ProblemKind};
///
/// let problem = Problem::not_found();
/// assert_eq!(problem.problem_kind(), ProblemKind::NotFound);
/// assert_eq!(problem.kind(), "urn:tenancy:problem:not-found");
/// assert_eq!(ProblemKind::RateLimited.status(), 429);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// 400: the request is malformed.
    BadRequest,
    /// 401: no valid credentials; see `WWW-Authenticate`.
    Unauthorized,
    /// 401: wrong email or password.
    InvalidCredentials,
    /// 401: the refresh token is unknown, spent or its session ended.
    InvalidRefreshToken,
    /// 400: a one-time token (reset, verification) is invalid or expired.
    InvalidToken,
    /// 403: authenticated but not allowed.
    Forbidden,
    /// 403: the tenant is suspended or deleted.
    TenantInactive,
    /// 403: the caller is no longer an active member.
    MembershipInactive,
    /// 403: self-service registration is off.
    RegistrationClosed,
    /// 403: registration needs an invitation.
    InvitationRequired,
    /// 404: not found, or in another tenant (never told apart).
    NotFound,
    /// 405: the path exists but not with this method; see `Allow`.
    MethodNotAllowed,
    /// 409: a uniqueness rule or the current state forbids the change.
    Conflict,
    /// 410: the invitation was accepted, revoked or expired.
    InvitationUnusable,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 422: the body or query parsed but a field is invalid; see `errors`.
    Validation,
    /// 422: the change would pass a per-tenant bound.
    LimitExceeded,
    /// 422: the export is over the limit; narrow it.
    ExportTooLarge,
    /// 429: too many failed logins for the account; see `Retry-After`.
    AccountLocked,
    /// 429: too many failed attempts from this client; see `Retry-After`.
    Throttled,
    /// 429: over a rate or concurrency limit; see `Retry-After`.
    RateLimited,
    /// 500: an internal failure (logged, never described).
    Internal,
    /// 503: a dependency such as the database is unavailable.
    Unavailable,
    /// 503: the server is saturated; see `Retry-After`.
    Overloaded,
    /// A kind the SDK does not define (a host's own).
    Other,
}

impl ProblemKind {
    /// The slug after `urn:tenancy:problem:` (`""` for [`Self::Other`]).
    pub fn slug(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::InvalidCredentials => "invalid-credentials",
            Self::InvalidRefreshToken => "invalid-refresh-token",
            Self::InvalidToken => "invalid-token",
            Self::Forbidden => "forbidden",
            Self::TenantInactive => "tenant-inactive",
            Self::MembershipInactive => "membership-inactive",
            Self::RegistrationClosed => "registration-closed",
            Self::InvitationRequired => "invitation-required",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict => "conflict",
            Self::InvitationUnusable => "invitation-unusable",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::Validation => "validation",
            Self::LimitExceeded => "limit-exceeded",
            Self::ExportTooLarge => "export-too-large",
            Self::AccountLocked => "account-locked",
            Self::Throttled => "throttled",
            Self::RateLimited => "rate-limited",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::Overloaded => "overloaded",
            Self::Other => "",
        }
    }

    /// The status this kind answers with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::InvalidRefreshToken => StatusCode::UNAUTHORIZED,
            Self::InvalidToken => StatusCode::BAD_REQUEST,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::TenantInactive => StatusCode::FORBIDDEN,
            Self::MembershipInactive => StatusCode::FORBIDDEN,
            Self::RegistrationClosed => StatusCode::FORBIDDEN,
            Self::InvitationRequired => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::InvitationUnusable => StatusCode::GONE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            Self::LimitExceeded => StatusCode::UNPROCESSABLE_ENTITY,
            Self::ExportTooLarge => StatusCode::UNPROCESSABLE_ENTITY,
            Self::AccountLocked => StatusCode::TOO_MANY_REQUESTS,
            Self::Throttled => StatusCode::TOO_MANY_REQUESTS,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::Other => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The title.
    pub fn title(self) -> &'static str {
        match self {
            Self::BadRequest => "Bad request",
            Self::Unauthorized => "Unauthorized",
            Self::InvalidCredentials => "Invalid credentials",
            Self::InvalidRefreshToken => "Invalid refresh token",
            Self::InvalidToken => "Invalid or expired token",
            Self::Forbidden => "Forbidden",
            Self::TenantInactive => "Tenant not active",
            Self::MembershipInactive => "Membership not active",
            Self::RegistrationClosed => "Registration closed",
            Self::InvitationRequired => "Invitation required",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Conflict => "Conflict",
            Self::InvitationUnusable => "Invitation no longer usable",
            Self::PayloadTooLarge => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::Validation => "Invalid request",
            Self::LimitExceeded => "Limit exceeded",
            Self::ExportTooLarge => "Export too large",
            Self::AccountLocked => "Account locked",
            Self::Throttled => "Too many failed attempts",
            Self::RateLimited => "Too many requests",
            Self::Internal => "Internal server error",
            Self::Unavailable => "Service unavailable",
            Self::Overloaded => "Overloaded",
            Self::Other => "Error",
        }
    }

    /// The kind named by `slug`.
    pub fn from_slug(slug: &str) -> Self {
        match slug {
            "bad-request" => Self::BadRequest,
            "unauthorized" => Self::Unauthorized,
            "invalid-credentials" => Self::InvalidCredentials,
            "invalid-refresh-token" => Self::InvalidRefreshToken,
            "invalid-token" => Self::InvalidToken,
            "forbidden" => Self::Forbidden,
            "tenant-inactive" => Self::TenantInactive,
            "membership-inactive" => Self::MembershipInactive,
            "registration-closed" => Self::RegistrationClosed,
            "invitation-required" => Self::InvitationRequired,
            "not-found" => Self::NotFound,
            "method-not-allowed" => Self::MethodNotAllowed,
            "conflict" => Self::Conflict,
            "invitation-unusable" => Self::InvitationUnusable,
            "payload-too-large" => Self::PayloadTooLarge,
            "unsupported-media-type" => Self::UnsupportedMediaType,
            "validation" => Self::Validation,
            "limit-exceeded" => Self::LimitExceeded,
            "export-too-large" => Self::ExportTooLarge,
            "account-locked" => Self::AccountLocked,
            "throttled" => Self::Throttled,
            "rate-limited" => Self::RateLimited,
            "internal" => Self::Internal,
            "unavailable" => Self::Unavailable,
            "overloaded" => Self::Overloaded,
            _ => Self::Other,
        }
    }
}

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
    /// Extension members (RFC 9457 §3.2), beside the standard ones.
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    extensions: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    www_authenticate: Option<String>,
    #[serde(skip)]
    retry_after: Option<u64>,
    #[serde(skip)]
    allow: Option<String>,
    #[serde(skip)]
    headers: Vec<(HeaderName, HeaderValue)>,
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
            extensions: serde_json::Map::new(),
            www_authenticate: None,
            retry_after: None,
            allow: None,
            headers: Vec::new(),
        }))
    }

    /// A problem of one of the SDK's kinds, with its status and title.
    pub fn of(kind: ProblemKind) -> Self {
        Self::new(kind.status(), kind.slug(), kind.title())
    }

    /// The `type` URI.
    pub fn kind(&self) -> &str {
        &self.0.kind
    }

    /// The kind, for matching; [`ProblemKind::Other`] for a host's own.
    pub fn problem_kind(&self) -> ProblemKind {
        self.0
            .kind
            .strip_prefix("urn:tenancy:problem:")
            .map_or(ProblemKind::Other, ProblemKind::from_slug)
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
        Self::of(ProblemKind::BadRequest).with_detail(detail)
    }

    /// 422: the body parsed but its fields are invalid.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::of(ProblemKind::Validation).with_field(field, message)
    }

    /// 413: the body is longer than `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::of(ProblemKind::PayloadTooLarge)
            .with_detail(format!("the body may be at most {limit} bytes"))
    }

    /// 415: the body is not JSON (by its `Content-Type`).
    pub fn unsupported_media_type() -> Self {
        Self::of(ProblemKind::UnsupportedMediaType).with_detail("expected application/json")
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
        Self::of(ProblemKind::Forbidden).with_detail(detail)
    }

    /// 404: not found, or in another tenant (never told apart).
    pub fn not_found() -> Self {
        Self::of(ProblemKind::NotFound)
    }

    /// 409: a uniqueness rule or the current state forbids the change.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::of(ProblemKind::Conflict).with_detail(detail)
    }

    /// 500: an internal failure; `error` is logged, not sent.
    pub fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error, source = ?error.source(), "internal error");
        Self::of(ProblemKind::Internal)
    }

    /// 503: a dependency (database) is unavailable; `error` is logged, not sent.
    pub fn unavailable(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error, source = ?error.source(), "service unavailable");
        Self::of(ProblemKind::Unavailable)
    }

    /// 405: the path exists, not with this method; `allow` lists the
    /// methods it has (the `Allow` header).
    pub fn method_not_allowed(allow: &[http::Method]) -> Self {
        let list = allow
            .iter()
            .map(http::Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut problem = Self::of(ProblemKind::MethodNotAllowed)
            .with_detail(format!("this path answers {list}"));
        problem.0.allow = Some(list);
        problem
    }

    /// 429: over a rate or concurrency limit until `until`.
    pub fn rate_limited(until: OffsetDateTime, now: OffsetDateTime) -> Self {
        Self::of(ProblemKind::RateLimited)
            .with_detail("too many requests; try again later")
            .retry_after(until, now)
    }

    /// 503: saturated until about `until`; nothing went wrong, try again.
    pub fn overloaded(until: OffsetDateTime, now: OffsetDateTime) -> Self {
        Self::of(ProblemKind::Overloaded)
            .with_detail("the server is busy; try again shortly")
            .retry_after(until, now)
    }

    /// Adds an extension member (RFC 9457 §3.2) naming what the problem is
    /// about (`"feature": "sso"`). The standard members (`type`, `title`,
    /// `status`, `detail`, `instance`, `errors`) cannot be replaced this way.
    pub fn with_extension(mut self, name: &str, value: serde_json::Value) -> Self {
        const RESERVED: [&str; 6] = ["type", "title", "status", "detail", "instance", "errors"];
        if !RESERVED.contains(&name) {
            self.0.extensions.insert(name.to_owned(), value);
        }
        self
    }

    /// The extension members added with [`Problem::with_extension`].
    pub fn extensions(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0.extensions
    }

    /// Adds `name: value` to the answer, for headers the problem's own
    /// fields do not cover (`RateLimit`, `RateLimit-Policy`).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// The extra headers added with [`Problem::with_header`].
    pub fn extra_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.0.headers
    }

    /// The `Allow` value of a `405`, if any.
    pub fn allow(&self) -> Option<&str> {
        self.0.allow.as_deref()
    }

    /// The problem as an HTTP response; records its type on the request
    /// span ([`crate::trace`]).
    pub fn to_response(&self) -> Response<Bytes> {
        crate::trace::record("problem", &self.0.kind.as_str());
        tracing::debug!(
            target: "tenancy_http::trace",
            status = self.0.status,
            "answered with a problem"
        );
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
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
        if let Some(value) = self
            .0
            .allow
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(header::ALLOW, value);
        }
        for (name, value) in &self.0.headers {
            headers.append(name.clone(), value.clone());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in [
            ProblemKind::NotFound,
            ProblemKind::RateLimited,
            ProblemKind::Overloaded,
            ProblemKind::MethodNotAllowed,
            ProblemKind::Validation,
        ] {
            let problem = Problem::of(kind);
            assert_eq!(problem.problem_kind(), kind);
            assert_eq!(problem.status(), kind.status());
        }
        let own = Problem::new(StatusCode::IM_A_TEAPOT, "teapot", "Teapot");
        assert_eq!(own.problem_kind(), ProblemKind::Other);
        let allow = Problem::method_not_allowed(&[http::Method::GET, http::Method::POST]);
        let response = allow.to_response();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "GET, POST");
    }

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
        let extended = Problem::new(StatusCode::PAYMENT_REQUIRED, "x", "X")
            .with_extension("feature", serde_json::json!("sso"))
            .with_extension("status", serde_json::json!(200))
            .to_response();
        let body: serde_json::Value = serde_json::from_slice(extended.body()).unwrap();
        assert_eq!(body["feature"], "sso");
        assert_eq!(body["status"], 402);
        let invalid = Problem::invalid("email", "invalid email address").to_response();
        let body: serde_json::Value = serde_json::from_slice(invalid.body()).unwrap();
        assert_eq!(body["errors"][0]["field"], "email");
    }
}
