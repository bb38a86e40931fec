//! The OAuth 2.0 / OpenID Connect authorization server (feature `oidc`).
//!
//! - [`OAuthProvider`]: register clients (per tenant, or global for the
//!   host's first-party apps), validate authorization requests, issue
//!   single-use authorization codes bound to client, redirect URI, PKCE
//!   challenge, nonce, user, tenant and session, and answer the
//!   `authorization_code`, `refresh_token` and `client_credentials` grants
//!   with access tokens (the SDK's own JWTs, with `client_id` and `scope`),
//!   refresh tokens (the SDK's rotating families) and ID tokens (RS256 by
//!   default); userinfo, RFC 7662 introspection, RFC 7009 revocation, and
//!   RP-initiated logout.
//! - [`OAuthStore`]: clients, pending requests, codes, consents and the
//!   grants riding on sessions; [`MemoryOAuthStore`] and (feature
//!   `postgres`) `PgOAuthStore`.
//!
//! The HTTP endpoints are `tenancy_http::oidc::OidcModule`.

mod error;
#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod provider;
mod store;
mod types;

pub use error::{ClientError, OAuthError, OAuthErrorCode};
#[cfg(feature = "memory")]
pub use memory::MemoryOAuthStore;
#[cfg(feature = "postgres")]
pub use postgres::{PgOAuthStore, migrator};
pub use provider::{
    AuthorizeError, AuthorizeStep, ClientCredentials, IdTokenHint, OAuthProvider, ProviderConfig,
    SignedIn, TokenResponse, actions, uri_texts,
};
pub use store::OAuthStore;
pub use types::{
    AuthorizationCode, AuthorizationRequest, ClientId, ClientKind, ClientSecret, CodeRedemption,
    Consent, GrantType, Interaction, InteractionId, InvalidRedirectUri, NewOAuthClient,
    OAuthClient, OIDC_SCOPES, Prompt, RedirectUri, SessionGrant, is_oidc_scope,
};
