//! Settings of [`Auth`] and the mistakes [`AuthBuilder::build`] refuses.

use tenancy_core::{StoreError, ValidationError};

use crate::authenticator::Authenticator;
use crate::keys::KeyAlgorithm;
use crate::lockout::LockoutPolicy;
use crate::password::{Argon2Config, PasswordPolicy};
use crate::session::SessionConfig;
use crate::token::TokenConfig;

/// Settings of [`Auth`]. Start from [`AuthConfig::new`] and change fields.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Access tokens.
    pub tokens: TokenConfig,
    /// Sessions.
    pub sessions: SessionConfig,
    /// Failed-login limits.
    pub lockout: LockoutPolicy,
    /// Rules for new passwords.
    pub password: PasswordPolicy,
    /// argon2id costs.
    pub argon2: Argon2Config,
    /// The algorithm new signing keys use (default EdDSA).
    pub algorithm: KeyAlgorithm,
    /// Must be set to sign with HS256, a shared secret.
    pub allow_hs256: bool,
    /// The API key prefix, such as `tnc_live`.
    pub api_key_prefix: String,
    /// Capacity of the verified-token cache (default 10,000 tokens; 0 turns it off).
    pub token_cache_capacity: usize,
}

impl AuthConfig {
    /// Defaults for tokens issued by `issuer` for `audience`.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            tokens: TokenConfig::new(issuer, audience),
            sessions: SessionConfig::default(),
            lockout: LockoutPolicy::default(),
            password: PasswordPolicy::default(),
            argon2: Argon2Config::default(),
            algorithm: KeyAlgorithm::EdDsa,
            allow_hs256: false,
            api_key_prefix: "tnc_live".to_owned(),
            token_cache_capacity: Authenticator::DEFAULT_CACHE_CAPACITY,
        }
    }
}

/// A configuration mistake found when building [`Auth`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// HS256 was chosen without `allow_hs256`.
    #[error("HS256 signs with a shared secret; set allow_hs256 to use it")]
    Hs256NotAllowed,
    /// The API key prefix is invalid.
    #[error(transparent)]
    ApiKeyPrefix(ValidationError),
    /// The argon2 parameters are invalid.
    #[error(transparent)]
    Argon2(crate::password::HashError),
    /// Loading or creating the signing key failed.
    #[error(transparent)]
    Keys(crate::keys::KeyError),
    /// Reading revoked sessions failed.
    #[error(transparent)]
    Store(StoreError),
}
