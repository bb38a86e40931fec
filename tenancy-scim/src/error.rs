//! SCIM error responses (RFC 7644 §3.12) and the store's errors.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;
use tenancy_core::StoreError;

use crate::schema::ERROR;

/// The SCIM media type, answered on every SCIM route and accepted beside
/// `application/json`.
pub const SCIM_JSON: &str = "application/scim+json";

/// The `scimType` of a `400` or `409` (RFC 7644 Table 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScimType {
    /// The filter does not parse or cannot be applied.
    InvalidFilter,
    /// The filter matches more results than the service answers at once.
    TooMany,
    /// A unique attribute (`userName`) is already taken.
    Uniqueness,
    /// The change targets an attribute that cannot change.
    Mutability,
    /// The body does not parse or lacks what the schema requires.
    InvalidSyntax,
    /// The PATCH path is malformed or names nothing the schema has.
    InvalidPath,
    /// The PATCH path selects nothing.
    NoTarget,
    /// A value is missing or of the wrong type.
    InvalidValue,
    /// The `If-Match` version does not match.
    InvalidVers,
}

impl ScimType {
    /// The keyword as written in the body.
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
        }
    }
}

/// A SCIM error answer: a status, an optional `scimType` and a detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The error keyword, for `400` and `409`.
    pub scim_type: Option<ScimType>,
    /// What went wrong, for people.
    pub detail: String,
}

impl ScimError {
    /// An error of `status` without `scimType`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type: None,
            detail: detail.into(),
        }
    }

    /// A `400` with `scim_type`.
    pub fn bad_request(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            scim_type: Some(scim_type),
            detail: detail.into(),
        }
    }

    /// `404`: no such resource in the token's tenant.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "resource not found")
    }

    /// `409 uniqueness`.
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            scim_type: Some(ScimType::Uniqueness),
            detail: detail.into(),
        }
    }

    /// `412`: the `If-Match` version is not the current one.
    pub fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "the resource changed since the version in If-Match",
        )
    }

    /// `401`: no valid SCIM token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "a valid SCIM bearer token is required",
        )
    }

    /// `500`/`503` for a failure of the service itself; the cause goes to
    /// the log, not to the client.
    pub fn unavailable(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "scim request failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is unavailable; retry later",
        )
    }

    /// The error as an `application/scim+json` answer; a `401` carries
    /// the `Bearer` challenge (RFC 6750).
    pub fn to_response(&self) -> Response<Bytes> {
        let mut body = json!({
            "schemas": [ERROR],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let (Some(kind), Some(object)) = (self.scim_type, body.as_object_mut()) {
            object.insert("scimType".into(), kind.as_str().into());
        }
        let mut response = Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scim\""),
            );
        }
        response
    }
}

impl From<crate::filter::FilterError> for ScimError {
    fn from(error: crate::filter::FilterError) -> Self {
        Self::bad_request(ScimType::InvalidFilter, error.to_string())
    }
}

/// What a [`crate::ScimStore`] can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScimStoreError {
    /// No such token or user record in the tenant.
    #[error("not found")]
    NotFound,
    /// Another user record of the tenant has this `userName` (compared
    /// without case), or the SDK user already has a record; another group
    /// of the tenant has this `displayName`.
    #[error("a user with this userName or account already exists in the tenant")]
    Conflict,
    /// The record changed since it was read.
    #[error("the record changed since it was read")]
    VersionMismatch,
    /// The tenant does not exist.
    #[error("tenant not found")]
    TenantNotFound,
    /// A group member is not a user record of the group's tenant.
    #[error("a group member is not a user of the tenant")]
    UnknownMember,
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
