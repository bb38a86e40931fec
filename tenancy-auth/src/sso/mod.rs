//! Sign-in through external identity providers (feature `sso`): the
//! relying-party side of OAuth 2.0 (RFC 6749, PKCE RFC 7636) and OpenID
//! Connect Core 1.0.
//!
//! - **Social connections** ([`SocialConnection`]) are configured in code
//!   by the host: GitHub-style OAuth2 providers (authorize, token, user and
//!   emails endpoints) through the `oauth2` crate, and OpenID providers
//!   found by issuer discovery (Google-style) through the `openidconnect`
//!   crate.
//! - **Enterprise connections** ([`EnterpriseConnection`]) are registered
//!   per tenant by its admins: an OpenID provider's issuer, a client id and
//!   a client secret kept encrypted under the host's key-encryption key
//!   ([`crate::key_encryption`]), the role given to members created just in
//!   time, and whether it is enabled.
//! - **Email domains** ([`EmailDomain`]) are claimed by one tenant each and
//!   verified by a DNS TXT record ([`DnsTxtResolver`]) or by an operator;
//!   signing in by email routes `ada@acme.example` to the connection of the
//!   tenant that verified `acme.example`.
//! - **Policy** ([`SsoPolicy`]): a tenant may require single sign-on, and
//!   password logins into it are then refused ([`SsoPasswordCheck`]).
//!
//! [`Sso`] runs the flows: [`Sso::start`] builds the provider's
//! authorization URL with `state`, a PKCE S256 challenge and (OIDC) a
//! `nonce`, and records the pending sign-in (10 minutes, single use);
//! [`Sso::finish`] checks the callback, exchanges the code, validates the ID
//! token (signature by the provider's JWKS, `iss`, `aud`, `exp`, `nonce`)
//! or reads the user and verified emails (OAuth2), then resolves the
//! account: an identity seen before signs in its user; otherwise a user
//! with the same email is linked only when the provider vouches for the
//! email; a new user is created where the connection allows; enterprise
//! connections add a membership with their default role just in time.
//!
//! Every URL the server fetches (discovery, JWKS, token, user info) is
//! checked against [`NetworkPolicy`]: private, loopback, link-local and
//! other non-public addresses are refused after resolution unless the host
//! opts in, and redirects are not followed.

mod connection;
mod dns;
mod error;
#[cfg(feature = "memory")]
mod memory;
mod net;
#[cfg(feature = "postgres")]
pub mod postgres;
mod provider;
mod service;
mod store;

pub use connection::{
    ClientSecret, ConnectionId, ConnectionRef, ConnectionUpdate, DomainName, EmailDomain,
    EnterpriseConnection, ExternalIdentity, NewEnterpriseConnection, OAuth2Endpoints, SealedSecret,
    SignInState, SocialConnection, SocialProtocol, SsoPolicy,
};
pub use dns::{DnsTxtResolver, NoDnsResolver, StaticDnsResolver, TXT_RECORD_PREFIX};
pub use error::{SsoError, SsoStoreError};
#[cfg(feature = "memory")]
pub use memory::MemorySsoStore;
pub use net::NetworkPolicy;
pub use service::{
    Callback, SignInStart, SignInTarget, SignedIn, Sso, SsoConfig, SsoPasswordCheck, StartSignIn,
};
pub use store::{MAX_PER_TENANT, SsoStore};

/// The audit actions the SSO service records.
pub mod actions {
    /// A user signed in through an external identity provider.
    pub const SIGNED_IN: &str = "sso.signed_in";
    /// An external identity was linked to an existing user (by a verified email).
    pub const IDENTITY_LINKED: &str = "sso.identity_linked";
    /// A user was created on their first sign-in through a provider.
    pub const USER_CREATED: &str = "sso.user_created";
    /// A membership was created just in time by an enterprise connection:
    /// the directory's own published `member.provisioned` (metadata
    /// `source: "sso"` and the connection), so outbox consumers hear of
    /// the new member as they do of SCIM's.
    pub const MEMBER_PROVISIONED: &str = tenancy_core::actions::MEMBER_PROVISIONED;
    /// An enterprise connection was registered.
    pub const CONNECTION_CREATED: &str = "sso.connection_created";
    /// An enterprise connection was changed.
    pub const CONNECTION_UPDATED: &str = "sso.connection_updated";
    /// An enterprise connection was deleted.
    pub const CONNECTION_DELETED: &str = "sso.connection_deleted";
    /// An email domain was claimed by a tenant.
    pub const DOMAIN_ADDED: &str = "sso.domain_added";
    /// An email domain was verified (DNS or operator).
    pub const DOMAIN_VERIFIED: &str = "sso.domain_verified";
    /// An email domain was released.
    pub const DOMAIN_REMOVED: &str = "sso.domain_removed";
    /// The tenant's SSO policy changed.
    pub const POLICY_CHANGED: &str = "sso.policy_changed";
}
