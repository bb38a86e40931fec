//! Settings of [`Auth`](crate::Auth) and the mistakes [`AuthBuilder::build`](crate::AuthBuilder::build) refuses.

use tenancy_core::{StoreError, ValidationError};

use crate::authenticator::Authenticator;
use crate::key_encryption::KeyEncryption;
use crate::keys::KeyAlgorithm;
use crate::limits::AbuseLimits;
use crate::lockout::LockoutPolicy;
use crate::password::{Argon2Config, PasswordPolicy};
use crate::session::{Retention, SessionConfig};
use crate::token::TokenConfig;

/// Settings of [`Auth`](crate::Auth). Start from [`AuthConfig::new`] and change what
/// differs with the `with_*` setters (or assign the fields).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Access tokens.
    pub tokens: TokenConfig,
    /// Sessions.
    pub sessions: SessionConfig,
    /// Failed-login limits.
    pub lockout: LockoutPolicy,
    /// Limits on registrations, account mail, login rate and the password
    /// hashing queue.
    pub limits: AbuseLimits,
    /// Who may create accounts (default [`RegistrationMode::Open`]).
    pub registration: RegistrationMode,
    /// How long ended records are kept before
    /// [`Auth::purge_expired`](crate::Auth::purge_expired) deletes them.
    pub retention: Retention,
    /// Rules for new passwords.
    pub password: PasswordPolicy,
    /// argon2id costs.
    pub argon2: Argon2Config,
    /// The algorithm new signing keys use (default EdDSA).
    pub algorithm: KeyAlgorithm,
    /// Must be set to sign with HS256, a shared secret.
    pub allow_hs256: bool,
    /// How private signing keys are protected at rest (see
    /// [`crate::key_encryption`]). Required for stores that outlive the
    /// process.
    pub key_encryption: KeyEncryption,
    /// The API key prefix, such as `tnc_live`.
    pub api_key_prefix: String,
    /// Capacity of the verified-token cache (default 10,000 tokens; 0 turns it off).
    pub token_cache_capacity: usize,
    /// How many sessions the authenticator remembers, so tokens of a known
    /// session are checked against it without a store read (default
    /// 100,000, about 64 bytes each; 0 reads the store at each token's
    /// first verification).
    pub session_cache_capacity: usize,
}

impl AuthConfig {
    /// Defaults for tokens issued by `issuer` for `audience`.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            tokens: TokenConfig::new(issuer, audience),
            sessions: SessionConfig::default(),
            lockout: LockoutPolicy::default(),
            limits: AbuseLimits::default(),
            registration: RegistrationMode::Open,
            retention: Retention::default(),
            password: PasswordPolicy::default(),
            argon2: Argon2Config::default(),
            algorithm: KeyAlgorithm::EdDsa,
            allow_hs256: false,
            key_encryption: KeyEncryption::Unconfigured,
            api_key_prefix: "tnc_live".to_owned(),
            token_cache_capacity: Authenticator::DEFAULT_CACHE_CAPACITY,
            session_cache_capacity: Authenticator::DEFAULT_SESSION_CACHE_CAPACITY,
        }
    }

    /// Replaces the access-token settings.
    pub fn with_tokens(mut self, tokens: TokenConfig) -> Self {
        self.tokens = tokens;
        self
    }

    /// Replaces the session settings.
    pub fn with_sessions(mut self, sessions: SessionConfig) -> Self {
        self.sessions = sessions;
        self
    }

    /// Replaces the failed-login limits.
    pub fn with_lockout(mut self, lockout: LockoutPolicy) -> Self {
        self.lockout = lockout;
        self
    }

    /// Replaces the limits on account flows.
    pub fn with_limits(mut self, limits: AbuseLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets who may create accounts.
    pub fn with_registration(mut self, registration: RegistrationMode) -> Self {
        self.registration = registration;
        self
    }

    /// Replaces how long ended records are kept.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Replaces the rules for new passwords.
    pub fn with_password_policy(mut self, password: PasswordPolicy) -> Self {
        self.password = password;
        self
    }

    /// Replaces the argon2id costs.
    pub fn with_argon2(mut self, argon2: Argon2Config) -> Self {
        self.argon2 = argon2;
        self
    }

    /// Signs new keys with `algorithm`. HS256 also needs
    /// [`AuthConfig::with_hs256_allowed`].
    pub fn with_algorithm(mut self, algorithm: KeyAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Allows HS256, a shared secret every verifier must hold.
    pub fn with_hs256_allowed(mut self, allowed: bool) -> Self {
        self.allow_hs256 = allowed;
        self
    }

    /// Sets how private signing keys are protected at rest, such as
    /// `KeyEncryption::key(KeyEncryptionKey::from_base64("2026-05", &secret)?)`.
    pub fn with_key_encryption(mut self, key_encryption: KeyEncryption) -> Self {
        self.key_encryption = key_encryption;
        self
    }

    /// Sets the API key prefix, such as `tnc_test` (checked when building).
    pub fn with_api_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.api_key_prefix = prefix.into();
        self
    }

    /// Sets the verified-token cache capacity (0 turns it off).
    pub fn with_token_cache_capacity(mut self, capacity: usize) -> Self {
        self.token_cache_capacity = capacity;
        self
    }

    /// Sets how many sessions the authenticator remembers (0 turns it off).
    pub fn with_session_cache_capacity(mut self, capacity: usize) -> Self {
        self.session_cache_capacity = capacity;
        self
    }
}

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RegistrationMode {
    /// Anyone may register (rate-limited per client, see
    /// [`AbuseLimits::registration`]), and invitees without an account get
    /// one on accepting.
    #[default]
    Open,
    /// [`Auth::register`](crate::Auth::register) answers
    /// [`Error::InvitationRequired`](crate::Error::InvitationRequired);
    /// accepting an invitation still creates the invitee's account.
    InviteOnly,
    /// No new accounts: registering and accepting an invitation as a new
    /// user answer [`Error::RegistrationClosed`](crate::Error::RegistrationClosed).
    /// Existing users still accept invitations.
    Closed,
}

/// A configuration mistake found when building [`Auth`](crate::Auth).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// HS256 was chosen without `allow_hs256`.
    #[error("HS256 signs with a shared secret; set allow_hs256 to use it")]
    Hs256NotAllowed,
    /// The store keeps signing keys beyond this process and no
    /// key-encryption key is configured: set
    /// [`AuthConfig::key_encryption`] (or, knowingly,
    /// `KeyEncryption::InsecurePlaintext`).
    #[error("a key-encryption key is required to store private signing keys beyond this process")]
    KeyEncryptionRequired,
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
