//! SSO errors.

use tenancy_core::StoreError;

/// What an SSO store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SsoStoreError {
    /// No such connection in this tenant.
    #[error("connection not found")]
    ConnectionNotFound,
    /// No such domain in this tenant.
    #[error("domain not found")]
    DomainNotFound,
    /// The domain is already claimed (by this or another tenant).
    #[error("the domain is already claimed")]
    DomainTaken,
    /// The external identity is already linked to a user.
    #[error("the identity is already linked")]
    IdentityTaken,
    /// The pending sign-in's state is already recorded.
    #[error("the sign-in state already exists")]
    StateTaken,
    /// The tenant does not exist.
    #[error("tenant not found")]
    TenantNotFound,
    /// The backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`super::Sso`]'s operations can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SsoError {
    /// Input broke a rule (a URL, a domain, a name).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which input.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No enabled connection by that name or id.
    #[error("unknown or disabled connection")]
    UnknownConnection,
    /// No tenant verified this email's domain, or it has no enabled connection.
    #[error("no single sign-on connection for this email")]
    NoConnectionForEmail,
    /// The callback's `state` is unknown, used, expired, or not this browser's.
    #[error("invalid or expired sign-in state")]
    InvalidState,
    /// The provider answered the authorization with an error (`access_denied`, …).
    #[error("the identity provider refused the sign-in: {error}")]
    ProviderRefused {
        /// The provider's `error` code.
        error: String,
    },
    /// The callback carried no code.
    #[error("the callback has no authorization code")]
    MissingCode,
    /// The provider's URL is refused by the network policy (private,
    /// loopback, link-local address, plain http, …).
    #[error("the identity provider's address is not allowed: {0}")]
    AddressRefused(String),
    /// The provider could not be reached or answered something unusable
    /// (discovery, JWKS, user info).
    #[error("the identity provider is unavailable")]
    ProviderUnavailable(#[source] tenancy_core::BoxError),
    /// The code exchange failed (`invalid_grant`: reused or expired code,
    /// wrong PKCE verifier; or bad client credentials).
    #[error("the code exchange failed")]
    CodeExchange(#[source] tenancy_core::BoxError),
    /// The token answer has no ID token.
    #[error("the identity provider returned no id token")]
    MissingIdToken,
    /// The ID token failed validation (signature, `iss`, `aud`, `exp`, `nonce`).
    #[error("the id token is invalid")]
    InvalidIdToken(#[source] tenancy_core::BoxError),
    /// The provider gave no email address, or none it marks verified.
    #[error("the identity provider gave no verified email address")]
    EmailNotVerified,
    /// The email's domain is not a verified domain of the connection's tenant.
    #[error("the email's domain does not belong to this tenant")]
    DomainMismatch,
    /// The email's domain is verified by a tenant: a social provider's
    /// word on it (an address a former employee still holds there) does
    /// not create or link an account; the organization's own sign-in does.
    #[error("this email belongs to an organization: sign in through its single sign-on")]
    UseOrganizationSso,
    /// An account with this email already exists and has access beyond
    /// what this enterprise connection grants (memberships in other
    /// tenants, or roles above the connection's default role): it is not
    /// linked automatically. The user signs in by an existing method
    /// first and links the provider from there.
    #[error("an account with this email exists: sign in with it and link this provider")]
    LinkConfirmationRequired,
    /// The account does not exist and this connection does not create users.
    #[error("no account for this identity, and sign-up through it is off")]
    SignupNotAllowed,
    /// The DNS TXT challenge did not verify the domain.
    #[error("the domain's TXT record was not found")]
    DomainNotVerified,
    /// DNS lookup failed.
    #[error("dns lookup failed")]
    Dns(#[source] tenancy_core::BoxError),
    /// An account operation failed (disabled account, not a member,
    /// inactive tenant, closed registration, …).
    #[error(transparent)]
    Auth(#[from] crate::Error),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] SsoStoreError),
    /// The client secret could not be sealed or opened.
    #[error(transparent)]
    Keys(#[from] crate::KeyError),
}

impl From<StoreError> for SsoError {
    fn from(error: StoreError) -> Self {
        SsoError::Store(SsoStoreError::Store(error))
    }
}

impl From<tenancy_core::ValidationError> for SsoError {
    fn from(error: tenancy_core::ValidationError) -> Self {
        SsoError::Auth(crate::Error::InvalidInput(error))
    }
}
