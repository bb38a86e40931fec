//! Error types.

use tenancy_core::{DirectoryError, StoreError, TenantStatus, ValidationError};
use time::OffsetDateTime;

use crate::keys::KeyError;
use crate::password::{HashError, PasswordRejected};

/// Why an access token was refused. For logs and tests: every variant
/// answers the client alike (see [`AuthError::www_authenticate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejection {
    /// Longer than the 8 KiB limit; not parsed at all.
    #[error("token too large")]
    TooLarge,
    /// Not a JWS compact token, or an algorithm (such as `none`) that is not supported.
    #[error("token malformed")]
    Malformed,
    /// No `kid` in the header.
    #[error("token names no key")]
    MissingKid,
    /// The `kid` names no known key.
    #[error("token names an unknown key")]
    UnknownKid,
    /// The header's `alg` differs from the key's algorithm (algorithm confusion).
    #[error("token algorithm does not match its key")]
    AlgorithmMismatch,
    /// The signature does not verify: the token was tampered with or forged.
    #[error("token signature invalid")]
    BadSignature,
    /// Issued by someone else.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// Meant for another audience.
    #[error("token audience not accepted")]
    WrongAudience,
    /// Past its `exp` (plus leeway).
    #[error("token expired")]
    Expired,
    /// Before its `nbf` (minus leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// Its session was revoked (logout, reuse detection, removal) or has
    /// ended.
    #[error("token session revoked")]
    Revoked,
    /// Its `sid` names no session: the token was minted outside this
    /// service (a leaked signing key), or its session was purged.
    #[error("token names no session")]
    UnknownSession,
    /// Its `sid` names a session of another user or tenant: minted outside
    /// this service.
    #[error("token session belongs to another user or tenant")]
    SessionMismatch,
    /// Required claims are missing or malformed.
    #[error("token claims invalid")]
    InvalidClaims,
}

/// Why an API key was refused. For logs and tests: every variant answers
/// the client alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeyRejection {
    /// Not `<prefix>_<id>_<secret>`.
    #[error("api key malformed")]
    Malformed,
    /// No key with this id.
    #[error("api key unknown")]
    Unknown,
    /// The id exists but the secret is wrong.
    #[error("api key secret wrong")]
    WrongSecret,
    /// Revoked.
    #[error("api key revoked")]
    Revoked,
    /// Past its expiry.
    #[error("api key expired")]
    Expired,
    /// Belongs to another tenant than the one the request addresses.
    #[error("api key belongs to another tenant")]
    WrongTenant,
}

/// What [`crate::Authenticator::authenticate`] can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credentials were presented.
    #[error("no credentials")]
    MissingCredentials,
    /// The `Authorization` header names a scheme other than `Bearer`
    /// (such as `Basic`): to the caller, no usable credentials.
    #[error("unsupported authorization scheme")]
    UnsupportedScheme,
    /// The `Authorization` header says `Bearer` but is not `Bearer <token>`
    /// (no token, or more than one).
    #[error("malformed authorization header")]
    MalformedHeader,
    /// The access token was refused.
    #[error("invalid access token: {0}")]
    InvalidToken(TokenRejection),
    /// The API key was refused.
    #[error("invalid api key: {0}")]
    InvalidApiKey(ApiKeyRejection),
    /// A store or key lookup failed: not the caller's fault (answer 503).
    #[error("authentication unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AuthError {
    /// Whether the caller should be answered 401 (true) or 503 (false).
    pub fn is_unauthorized(&self) -> bool {
        !matches!(self, AuthError::Unavailable(_))
    }

    /// The `WWW-Authenticate` value for the answer, per RFC 6750:
    /// `Bearer realm="…"` alone when no usable credentials came (none, or
    /// another scheme), with `error="invalid_request"` for a malformed
    /// header (answered 400), and with
    /// `error="invalid_token"` for any refused token or key. The
    /// description reveals only expiry (so clients know to refresh), never
    /// which check failed. `None` for [`AuthError::Unavailable`].
    pub fn www_authenticate(&self, realm: &str) -> Option<String> {
        let realm = realm.replace(['"', '\\'], "");
        let (error, description) = match self {
            AuthError::MissingCredentials | AuthError::UnsupportedScheme => {
                return Some(format!("Bearer realm=\"{realm}\""));
            }
            AuthError::MalformedHeader => ("invalid_request", "malformed Authorization header"),
            AuthError::InvalidToken(TokenRejection::Expired) => {
                ("invalid_token", "the access token expired")
            }
            AuthError::InvalidToken(_) | AuthError::InvalidApiKey(_) => {
                ("invalid_token", "the credentials are invalid")
            }
            AuthError::Unavailable(_) => return None,
        };
        Some(format!(
            "Bearer realm=\"{realm}\", error=\"{error}\", error_description=\"{description}\""
        ))
    }
}

/// What the account operations of [`crate::Auth`] can fail with. Each
/// method's documentation names the variants it returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Wrong email or password, or an unknown email: one answer for all.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Too many failed logins for this account.
    #[error("account locked until {until}")]
    AccountLocked {
        /// When logins are allowed again (for `Retry-After`).
        until: OffsetDateTime,
    },
    /// Too many failed logins from this client.
    #[error("too many failed logins from this client; retry after {until}")]
    ClientThrottled {
        /// When logins are allowed again (for `Retry-After`).
        until: OffsetDateTime,
    },
    /// Too many attempts of this kind from this client, or for this
    /// address: logins (of any outcome), registrations, reset or
    /// verification mail.
    #[error("too many requests; retry after {until}")]
    RateLimited {
        /// When to try again (for `Retry-After`).
        until: OffsetDateTime,
    },
    /// The service is saturated (password hashing or the mail queue is
    /// full): not the caller's fault, try again shortly (answer 503).
    #[error("too busy; retry after {until}")]
    Overloaded {
        /// When to try again (for `Retry-After`).
        until: OffsetDateTime,
    },
    /// Registration is closed: no new accounts, neither by registering nor
    /// by accepting an invitation.
    #[error("registration is closed")]
    RegistrationClosed,
    /// Registration is by invitation only: accept an invitation instead.
    #[error("registration is by invitation only")]
    InvitationRequired,
    /// The user account is disabled.
    #[error("account disabled")]
    AccountDisabled,
    /// The user has no active membership in the tenant asked for (or in any tenant).
    #[error("no active membership in this tenant")]
    NotAMember,
    /// The tenant requires its members to sign in through its identity
    /// provider: password logins into it are refused (see
    /// [`crate::PasswordLoginCheck`]).
    #[error("this tenant requires single sign-on")]
    SsoRequired {
        /// The tenant.
        tenant_id: tenancy_core::TenantId,
    },
    /// The session cannot do this without a fresh sign-in: it was opened
    /// through one tenant's identity provider and speaks for that tenant
    /// only.
    #[error("sign in again to do this")]
    ReauthenticationRequired,
    /// The tenant is suspended or deleted.
    #[error("tenant is {status}")]
    TenantNotActive {
        /// Its status.
        status: TenantStatus,
    },
    /// The new password breaks the policy.
    #[error(transparent)]
    WeakPassword(#[from] PasswordRejected),
    /// The refresh token is malformed or unknown.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// The refresh token was already used: its session is now revoked.
    #[error("refresh token reused; the session has been revoked")]
    RefreshTokenReused,
    /// The session is revoked or expired.
    #[error("session is no longer active")]
    SessionInactive,
    /// No such session for this user.
    #[error("session not found")]
    SessionNotFound,
    /// The verification or reset token is malformed, unknown, used or expired.
    #[error("invalid or expired token")]
    InvalidOneTimeToken,
    /// The operation needs a user, and an API key is calling.
    #[error("this operation needs a signed-in user")]
    UserRequired,
    /// Input broke a validation rule.
    #[error(transparent)]
    InvalidInput(#[from] ValidationError),
    /// A tenant or membership workflow failed.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing keys failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Password hashing failed.
    #[error(transparent)]
    Hashing(#[from] HashError),
    /// The mailer failed.
    #[error("sending mail failed")]
    Mail(#[source] tenancy_core::BoxError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn www_authenticate_follows_rfc_6750() {
        assert_eq!(
            AuthError::MissingCredentials
                .www_authenticate("app")
                .unwrap(),
            "Bearer realm=\"app\""
        );
        assert_eq!(
            AuthError::InvalidToken(TokenRejection::Expired)
                .www_authenticate("app")
                .unwrap(),
            "Bearer realm=\"app\", error=\"invalid_token\", error_description=\"the access token expired\""
        );
        let forged = AuthError::InvalidToken(TokenRejection::BadSignature).www_authenticate("app");
        let revoked_key =
            AuthError::InvalidApiKey(ApiKeyRejection::Revoked).www_authenticate("app");
        assert_eq!(forged, revoked_key);
        assert!(
            AuthError::MalformedHeader
                .www_authenticate("a\"pp")
                .unwrap()
                .starts_with("Bearer realm=\"app\", error=\"invalid_request\"")
        );
        assert_eq!(
            AuthError::UnsupportedScheme
                .www_authenticate("app")
                .unwrap(),
            "Bearer realm=\"app\""
        );
        let unavailable = AuthError::Unavailable("db down".into());
        assert_eq!(unavailable.www_authenticate("app"), None);
        assert!(!unavailable.is_unauthorized());
    }
}
