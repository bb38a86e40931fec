//! Errors of the authorization server: RFC 6749 / OIDC error codes for the
//! protocol endpoints, and typed errors for client management.

use std::borrow::Cow;
use std::fmt;

use tenancy_core::StoreError;

/// An RFC 6749 §4.1.2.1 / §5.2, OIDC Core §3.1.2.6, RFC 6750 §3.1 or
/// RFC 7009 §2.2.1 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// Missing, repeated or malformed parameter.
    InvalidRequest,
    /// Client authentication failed.
    InvalidClient,
    /// The code, refresh token or PKCE verifier is invalid, expired,
    /// revoked, or issued to another client or redirect URI.
    InvalidGrant,
    /// The client may not use this grant or response type.
    UnauthorizedClient,
    /// The grant type is not supported.
    UnsupportedGrantType,
    /// The response type is not supported.
    UnsupportedResponseType,
    /// A scope is unknown, malformed, or not allowed for the client.
    InvalidScope,
    /// The user or the server refused.
    AccessDenied,
    /// `prompt=none` and the user is not signed in.
    LoginRequired,
    /// `prompt=none` and consent is needed.
    ConsentRequired,
    /// `prompt=none` and some interaction is needed.
    InteractionRequired,
    /// The `request` parameter is not supported.
    RequestNotSupported,
    /// The `request_uri` parameter is not supported.
    RequestUriNotSupported,
    /// The access token is invalid (userinfo).
    InvalidToken,
    /// The access token lacks a scope (userinfo needs `openid`).
    InsufficientScope,
    /// Revocation of this kind of token is not supported.
    UnsupportedTokenType,
    /// The server failed; details are in its log.
    ServerError,
    /// The server is overloaded or a dependency is down.
    TemporarilyUnavailable,
}

impl OAuthErrorCode {
    /// The `error` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::UnsupportedResponseType => "unsupported_response_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::AccessDenied => "access_denied",
            OAuthErrorCode::LoginRequired => "login_required",
            OAuthErrorCode::ConsentRequired => "consent_required",
            OAuthErrorCode::InteractionRequired => "interaction_required",
            OAuthErrorCode::RequestNotSupported => "request_not_supported",
            OAuthErrorCode::RequestUriNotSupported => "request_uri_not_supported",
            OAuthErrorCode::InvalidToken => "invalid_token",
            OAuthErrorCode::InsufficientScope => "insufficient_scope",
            OAuthErrorCode::UnsupportedTokenType => "unsupported_token_type",
            OAuthErrorCode::ServerError => "server_error",
            OAuthErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol error: its code and a description for the client developer
/// (never a secret, never an internal detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    /// The code.
    pub code: OAuthErrorCode,
    /// The `error_description`.
    pub description: Cow<'static, str>,
}

impl OAuthError {
    /// An error with `code` and `description`.
    pub fn new(code: OAuthErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    pub(crate) fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, description)
    }

    pub(crate) fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(OAuthErrorCode::InvalidGrant, description)
    }

    pub(crate) fn invalid_client() -> Self {
        Self::new(
            OAuthErrorCode::InvalidClient,
            "client authentication failed",
        )
    }

    pub(crate) fn invalid_scope(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(OAuthErrorCode::InvalidScope, description)
    }

    /// A failure of the server: logged here with its cause, answered as
    /// `server_error` (or `temporarily_unavailable` for an overload).
    pub fn server(error: &dyn std::error::Error) -> Self {
        tracing::error!(%error, "oauth request failed");
        Self::new(OAuthErrorCode::ServerError, "the server failed; try again")
    }

    pub(crate) fn from_auth(error: crate::Error) -> Self {
        use crate::Error as E;
        match error {
            E::Overloaded { .. } | E::RateLimited { .. } => Self::new(
                OAuthErrorCode::TemporarilyUnavailable,
                "the server is busy; try again shortly",
            ),
            E::InvalidRefreshToken | E::RefreshTokenReused | E::SessionInactive => {
                Self::invalid_grant("the refresh token is invalid, expired or revoked")
            }
            E::AccountDisabled | E::NotAMember | E::TenantNotActive { .. } => {
                Self::invalid_grant("the user can no longer act in this tenant")
            }
            other => Self::server(&other),
        }
    }

    /// The HTTP status of the answer: 401 for `invalid_client` and
    /// `invalid_token`, 403 for `insufficient_scope`, 503 for
    /// `temporarily_unavailable`, 500 for `server_error`, else 400.
    pub fn status(&self) -> u16 {
        match self.code {
            OAuthErrorCode::InvalidClient | OAuthErrorCode::InvalidToken => 401,
            OAuthErrorCode::InsufficientScope => 403,
            OAuthErrorCode::TemporarilyUnavailable => 503,
            OAuthErrorCode::ServerError => 500,
            _ => 400,
        }
    }
}

/// What client management can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A field of the registration is invalid.
    #[error("{field}: {reason}")]
    InvalidInput {
        /// The field, such as `redirect_uris[0]`.
        field: String,
        /// Why.
        reason: String,
    },
    /// No such client in this tenant.
    #[error("oauth client not found")]
    NotFound,
    /// The client is public: it has no secret to rotate.
    #[error("a public client has no secret")]
    PublicClient,
    /// The tenant is not active.
    #[error(transparent)]
    Auth(#[from] crate::Error),
    /// A store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ClientError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(_) => ClientError::NotFound,
            other => ClientError::Store(other),
        }
    }
}

impl ClientError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ClientError::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
