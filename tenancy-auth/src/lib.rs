//! Identity for the tenancy SDK: passwords, lockout, JWT access tokens with
//! rotating keys and a JWKS, sessions with single-use refresh-token
//! families, and tenant-scoped API keys, over store traits with in-memory
//! and Postgres adapters.
//!
//! - [`Auth`] runs the account workflows: register, login, refresh, logout,
//!   sessions, tenant switching, API keys, invitations, email verification,
//!   password reset. Each workflow that writes is one transaction with its
//!   audit event ([`AuthTransaction`]), across the auth and core stores.
//! - [`Authenticator`] turns a request's `Authorization` header (or cookie)
//!   into a [`Principal`], or an [`AuthError`] that knows its
//!   `WWW-Authenticate` answer. Framework integrations call only this.
//! - Passwords: argon2id (OWASP parameters by default) on the blocking pool,
//!   a NIST SP 800-63B policy with a 10,000-entry blocklist, equal work for
//!   unknown accounts, rehash on login when parameters grow.
//! - Tokens: EdDSA by default (ES256, RS256; HS256 by explicit opt-in),
//!   verified with the algorithm pinned to the key named by `kid`, bound to
//!   a live session of their own user and tenant, checked against a
//!   revocation set and cached once verified.
//! - Signing keys: private halves stored as JWE under a key-encryption key
//!   the host holds ([`key_encryption`]), rotatable.
//! - Abuse limits ([`AbuseLimits`]): registration switch and throttle,
//!   per-address and per-client limits and a cooldown on reset and
//!   verification mail (sent in the background, so the answer reveals no
//!   account), per-client login rate and concurrency, a bounded hashing
//!   queue that answers [`Error::Overloaded`] instead of queueing.
//! - Retention: [`Auth::purge_expired`] deletes ended sessions, spent
//!   refresh tokens, old counters and used one-time tokens.
//!
//! # Features
//!
//! - `memory` (default): [`MemoryAuthStore`].
//! - `postgres`: [`postgres::PgAuthStore`] and its migrations (2000–2999),
//!   plus [`postgres::listen_revocations`] to learn of revocations at once.
//! - `testkit`: [`testkit`], the conformance suites every auth store passes.
//! - `oidc`: [`oidc`], the OAuth 2.0 / OpenID Connect authorization server
//!   (clients, authorization codes with PKCE, ID tokens, introspection,
//!   revocation) over the sessions and refresh-token families above.
//! - `sso`: [`sso`], sign-in through external identity providers: social
//!   connections (OAuth2, OpenID Connect), per-tenant enterprise OIDC
//!   connections, verified email domains and the tenant SSO policy.
//! - `testkit-idp`: [`testkit::idp::SimulatedIdp`], a simulated external
//!   OpenID Connect and GitHub-style OAuth 2.0 provider for relying-party
//!   tests (turns on `testkit`).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod api_key;
mod authenticator;
mod error;
pub mod key_encryption;
mod keys;
mod limits;
mod lockout;
#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "oidc")]
#[cfg_attr(docsrs, doc(cfg(feature = "oidc")))]
pub mod oidc;
mod one_time;
mod password;
#[cfg(feature = "postgres")]
pub mod postgres;
mod principal;
mod revocation;
mod secret;
mod service;
mod session;
#[cfg(feature = "sso")]
pub mod sso;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod token;

pub use api_key::{ApiKey, ApiKeyPrefix, ApiKeySecret, NewApiKey, Scope};
pub use authenticator::{Authenticator, Credentials};
pub use error::{ApiKeyRejection, AuthError, Error, TokenRejection};
pub use key_encryption::{EncryptedJwk, KeyEncryption, KeyEncryptionKey, StoredPrivateKey};
pub use keys::{KeyAlgorithm, KeyError, KeyRing, PrivateJwk, StoredKey};
pub use limits::AbuseLimits;
pub use lockout::{LockoutPolicy, ThrottleKey, ThrottleRule, ThrottleState};
#[cfg(feature = "memory")]
pub use memory::MemoryAuthStore;
pub use one_time::{Mail, Mailer, NoMailer, OneTimeToken, TokenPurpose};
pub use password::{
    Argon2Config, HashError, Password, PasswordHashString, PasswordHasher, PasswordPolicy,
    PasswordRejected, Verification,
};
pub use principal::{AuthMethod, OAuthAccess, Principal, Subject};
pub use revocation::RevocationSet;
pub use secret::SecretToken;
pub use service::{
    Auth, AuthBuilder, AuthConfig, ConfigError, InvitationAcceptor, LoginRequest, LoginSuccess,
    PasswordLoginCheck, PurgeReport, Registration, RegistrationMode, actions,
};
pub use session::{
    ClientInfo, RefreshRecord, RefreshToken, RefreshTokenOwner, Retention, Revocation,
    RevokeReason, RotateOutcome, Session, SessionConfig, SessionPurge,
};
pub use store::{
    ApiKeyStore, AuthStore, AuthTransaction, AuthTransactions, CredentialStore, KeyStore,
    LockoutStore, OneTimeTokenStore, SessionStore,
};
pub use token::{AccessToken, ClaimsHook, TokenConfig};
