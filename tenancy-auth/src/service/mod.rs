//! [`Auth`]: registration, login, refresh, logout, sessions, tenant
//! switching, API keys, email verification and password reset.
//!
//! One module per idea: `login` (registration, login, lockout, passwords),
//! `sessions` (opening, refreshing and ending sessions, switching tenants),
//! `members` (membership and tenant changes that end sessions),
//! `api_keys`, `email` (verification and reset) and `maintenance` (key
//! rotation, revocation sync). This module holds the builder, the shared
//! state and the audit helper.

use std::sync::Arc;

use tenancy_core::{
    Actor, AuditAction, AuditContext, AuditLog, Backend, Clock, Directory, GrantCheck, Metadata,
    NewAuditEvent, StoreError, SystemClock, Target, Tenant, TenantId, TenantStatus, Transaction,
    UserId, ValidationError, truncate_to_micros,
};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::api_key::ApiKeyPrefix;
use crate::authenticator::Authenticator;
use crate::error::Error;
use crate::key_encryption::KeyEncryption;
use crate::keys::{KeyAlgorithm, KeyRing};
use crate::limits::LoginGate;
use crate::lockout::{ThrottleKey, ThrottleRule};
use crate::one_time::{Mailer, NoMailer};
use crate::password::{HashError, Password, PasswordHashString, PasswordHasher, Verification};
use crate::revocation::RevocationSet;
use crate::session::ClientInfo;
use crate::store::{AuthStore, AuthTransaction};
use crate::token::ClaimsHook;

type Result<T, E = Error> = std::result::Result<T, E>;

mod api_keys;
mod config;
mod email;
mod login;
mod maintenance;
mod members;
#[cfg(feature = "oidc")]
mod oauth;
mod registration;
mod sessions;

pub use config::{AuthConfig, ConfigError, RegistrationMode};
pub use login::{LoginRequest, LoginSuccess, PasswordLoginCheck};
pub use maintenance::PurgeReport;
pub use registration::{InvitationAcceptor, Registration};

/// The audit actions [`Auth`] records.
pub mod actions {
    /// A user logged in.
    pub const LOGIN: &str = "auth.login";
    /// A user logged out.
    pub const LOGOUT: &str = "auth.logout";
    /// Too many failed logins locked an account.
    pub const ACCOUNT_LOCKED: &str = "auth.account_locked";
    /// A locked account was unlocked (by an operator, or when its lock ran out).
    pub const ACCOUNT_UNLOCKED: &str = "auth.account_unlocked";
    /// A spent refresh token was presented again; its session was revoked.
    pub const REFRESH_TOKEN_REUSED: &str = "auth.refresh_token_reused";
    /// An API key was created.
    pub const API_KEY_CREATED: &str = "api_key.created";
    /// An API key was revoked.
    pub const API_KEY_REVOKED: &str = "api_key.revoked";
    /// A password was set with a reset link; the user's sessions ended.
    pub const PASSWORD_RESET: &str = "auth.password_reset";
}

/// Builds [`Auth`].
pub struct AuthBuilder {
    backend: Arc<dyn Backend>,
    store: Arc<dyn AuthStore>,
    config: AuthConfig,
    mailer: Arc<dyn Mailer>,
    hook: Option<Arc<dyn ClaimsHook>>,
    clock: Arc<dyn Clock>,
    grants: Option<Arc<dyn GrantCheck>>,
    seats: Option<Arc<dyn tenancy_core::Seats>>,
    password_check: Option<Arc<dyn PasswordLoginCheck>>,
}

impl AuthBuilder {
    /// Asks `check` before every password login and tenant switch whether
    /// the tenant accepts passwords (a tenant requiring single sign-on
    /// does not: [`Error::SsoRequired`](crate::Error::SsoRequired)).
    pub fn password_login_check(mut self, check: Arc<dyn PasswordLoginCheck>) -> Self {
        self.password_check = Some(check);
        self
    }

    /// Re-checks invitations against their sender's current powers when
    /// they are accepted and when the sender's roles change (see
    /// [`Directory::with_grant_check`]).
    pub fn grant_check(mut self, check: Arc<dyn GrantCheck>) -> Self {
        self.grants = Some(check);
        self
    }

    /// Refuses invitations past the tenant's seat limit (see
    /// [`Directory::with_seats`]).
    pub fn seats(mut self, seats: Arc<dyn tenancy_core::Seats>) -> Self {
        self.seats = Some(seats);
        self
    }

    /// Delivers verification and reset mail through `mailer`.
    pub fn mailer(mut self, mailer: Arc<dyn Mailer>) -> Self {
        self.mailer = mailer;
        self
    }

    /// Adds host-defined claims to access tokens.
    pub fn claims_hook(mut self, hook: Arc<dyn ClaimsHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Uses `clock` for every timestamp and expiry check.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the configuration, loads (or creates) the signing key and the
    /// recent revocations.
    pub async fn build(self) -> Result<Auth, ConfigError> {
        let config = self.config;
        if config.algorithm == KeyAlgorithm::Hs256 && !config.allow_hs256 {
            return Err(ConfigError::Hs256NotAllowed);
        }
        install_crypto_provider();
        let prefix =
            ApiKeyPrefix::new(&config.api_key_prefix).map_err(ConfigError::ApiKeyPrefix)?;
        let hasher = PasswordHasher::with_limits(
            config.argon2,
            config.limits.hash_concurrency,
            config.limits.hash_queue,
        )
        .map_err(ConfigError::Argon2)?;
        let now = truncate_to_micros(self.clock.now());
        if matches!(config.key_encryption, KeyEncryption::Unconfigured)
            && self.store.process_encryption_key().is_none()
        {
            return Err(ConfigError::KeyEncryptionRequired);
        }
        let keys = Arc::new(
            KeyRing::load(
                self.store.clone(),
                config.algorithm,
                &config.key_encryption,
                now,
            )
            .await
            .map_err(ConfigError::Keys)?,
        );
        let revocations = Arc::new(RevocationSet::new());
        revocations
            .sync(&*self.store, now, config.sessions.absolute_timeout)
            .await
            .map_err(ConfigError::Store)?;
        let authenticator = Authenticator::new(
            keys.clone(),
            config.tokens.clone(),
            self.store.clone(),
            self.store.clone(),
            prefix.clone(),
            revocations.clone(),
            self.clock.clone(),
            config.token_cache_capacity,
            config.session_cache_capacity,
        );
        let mut directory = Directory::new(self.backend.clone()).with_clock(self.clock.clone());
        if let Some(grants) = self.grants {
            directory = directory.with_grant_check(grants);
        }
        if let Some(seats) = self.seats {
            directory = directory.with_seats(seats);
        }
        let mail_capacity = u32::try_from(config.limits.mail_queue)
            .unwrap_or(u32::MAX)
            .clamp(1, u32::MAX >> 3);
        Ok(Auth {
            inner: Arc::new(Inner {
                directory,
                backend: self.backend,
                store: self.store,
                hasher,
                prefix,
                keys,
                authenticator,
                revocations,
                mailer: self.mailer,
                hook: self.hook,
                clock: self.clock,
                logins: LoginGate::new(&config.limits),
                mail_queue: Arc::new(Semaphore::new(mail_capacity as usize)),
                mail_capacity,
                password_check: self.password_check,
                config,
            }),
        })
    }
}

/// jsonwebtoken picks its crypto backend from cargo features and panics if
/// a dependency enables both; installing aws-lc explicitly avoids that.
fn install_crypto_provider() {
    let _already_installed = jsonwebtoken::crypto::CryptoProvider::install_default(
        &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
    );
}

struct Inner {
    directory: Directory,
    backend: Arc<dyn Backend>,
    store: Arc<dyn AuthStore>,
    hasher: PasswordHasher,
    config: AuthConfig,
    prefix: ApiKeyPrefix,
    keys: Arc<KeyRing>,
    authenticator: Authenticator,
    revocations: Arc<RevocationSet>,
    mailer: Arc<dyn Mailer>,
    hook: Option<Arc<dyn ClaimsHook>>,
    clock: Arc<dyn Clock>,
    logins: LoginGate,
    /// One permit per account mail flow waiting or running in the background.
    mail_queue: Arc<Semaphore>,
    mail_capacity: u32,
    password_check: Option<Arc<dyn PasswordLoginCheck>>,
}

/// Identity for a multi-tenant app. Cheap to clone: clones share everything.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use tenancy_auth::*;
/// use tenancy_core::{Email, MemoryBackend, NewTenant, NewUser, Slug, TenantName};
///
/// let config = AuthConfig::new("https://app.example", "app")
///     .with_argon2(Argon2Config::new(1024, 1, 1)); // fast, for the example
/// let auth = Auth::builder(Arc::new(MemoryBackend::new()), Arc::new(MemoryAuthStore::new()), config)
///     .build()
///     .await?;
/// let registered = auth
///     .register(
///         Registration {
///             user: NewUser::new(Email::new("ada@acme.example")?),
///             password: Password::new("correct horse battery staple"),
///             tenant: NewTenant::new(Slug::new("acme")?, TenantName::new("Acme")?),
///         },
///         &ClientInfo::default(),
///     )
///     .await?;
/// let principal = auth
///     .authenticator()
///     .authenticate(Credentials::bearer(&format!("Bearer {}", registered.access_token.token)))
///     .await?;
/// assert_eq!(principal.user_id(), Some(registered.user.id));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Starts building over `backend` (tenants, users, memberships, audit)
    /// and `store` (credentials, sessions, keys, API keys).
    pub fn builder(
        backend: Arc<dyn Backend>,
        store: Arc<dyn AuthStore>,
        config: AuthConfig,
    ) -> AuthBuilder {
        AuthBuilder {
            backend,
            store,
            config,
            mailer: Arc::new(NoMailer),
            hook: None,
            clock: Arc::new(SystemClock),
            grants: None,
            seats: None,
            password_check: None,
        }
    }

    pub(crate) fn now(&self) -> OffsetDateTime {
        truncate_to_micros(self.inner.clock.now())
    }

    /// The request authenticator.
    pub fn authenticator(&self) -> &Authenticator {
        &self.inner.authenticator
    }

    /// The tenant and membership workflows, on the same backend and clock.
    pub fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// The password hasher.
    pub fn hasher(&self) -> &PasswordHasher {
        &self.inner.hasher
    }

    /// The tenant, user and membership store.
    #[cfg(any(feature = "sso", feature = "oidc"))]
    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// Admits one sign-in attempt of `client` under the per-client login
    /// rate and concurrency ([`AbuseLimits`](crate::AbuseLimits)), or says
    /// when to retry ([`Error::RateLimited`](crate::Error::RateLimited)).
    #[cfg(feature = "sso")]
    pub(crate) fn admit_sign_in(&self, client: &ClientInfo) -> Result<crate::limits::LoginPermit> {
        self.inner
            .logins
            .admit(client.ip, self.now())
            .map_err(|until| Error::RateLimited { until })
    }

    /// The signing keys.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.inner.keys
    }

    /// The JWKS document to publish at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Arc<serde_json::Value> {
        self.inner.keys.jwks()
    }

    /// Hashes a new password; a full hashing queue answers
    /// [`Error::Overloaded`](crate::Error::Overloaded).
    async fn hash_password(&self, password: &Password) -> Result<PasswordHashString> {
        let hashed = self.inner.hasher.hash(password).await;
        hashed.map_err(|e| self.hash_error(e))
    }

    async fn verify_password(
        &self,
        password: &Password,
        stored: &PasswordHashString,
    ) -> Result<Verification> {
        let verified = self.inner.hasher.verify(password, stored).await;
        verified.map_err(|e| self.hash_error(e))
    }

    async fn verify_dummy(&self, password: &Password) -> Result<Verification> {
        let verified = self.inner.hasher.verify_dummy(password).await;
        verified.map_err(|e| self.hash_error(e))
    }

    fn hash_error(&self, error: HashError) -> Error {
        match error {
            HashError::Overloaded { retry_after } => Error::Overloaded {
                until: self.now() + retry_after,
            },
            other => Error::Hashing(other),
        }
    }

    /// Counts one attempt against `key` under `rule`; past the rule,
    /// [`Error::RateLimited`](crate::Error::RateLimited) with the time the key is free again.
    async fn count_attempt(&self, key: &ThrottleKey, rule: &ThrottleRule) -> Result<()> {
        let now = self.now();
        let state = self
            .inner
            .store
            .record_login_failure(key, rule, now)
            .await?;
        match state.locked_at(now) {
            Some(until) => Err(Error::RateLimited { until }),
            None => Ok(()),
        }
    }

    /// Opens a transaction over the auth store and the core backend.
    pub(crate) async fn begin(&self) -> Result<Box<dyn AuthTransaction>> {
        Ok(self.inner.store.begin(&*self.inner.backend).await?)
    }

    fn audit_event(
        &self,
        context: &AuditContext,
        action: &str,
        target: (&str, String),
        metadata: serde_json::Value,
    ) -> Result<NewAuditEvent, ValidationError> {
        Ok(NewAuditEvent::new(
            context,
            AuditAction::new(action)?,
            Target::new(target.0, target.1)?,
            Metadata::new(metadata)?,
            self.now(),
        ))
    }

    /// Records an event as part of `tx`: it commits with the change it
    /// describes, or neither does.
    pub(crate) async fn audit_in(
        &self,
        tx: &dyn Transaction,
        tenant_id: TenantId,
        context: &AuditContext,
        action: &str,
        target: (&str, String),
        metadata: serde_json::Value,
    ) -> Result<()> {
        let event = self.audit_event(context, action, target, metadata)?;
        tx.append_audit(tenant_id, event).await?;
        Ok(())
    }

    /// Records an event on its own, logging a failure: for events about
    /// attempts (failed logins, lockouts) that must not fail the answer.
    async fn audit(
        &self,
        tenant_id: TenantId,
        context: &AuditContext,
        action: &str,
        target: (&str, String),
        metadata: serde_json::Value,
    ) {
        let result = match self.audit_event(context, action, target, metadata) {
            Ok(event) => self
                .inner
                .backend
                .append_audit(tenant_id, event)
                .await
                .map(|_| ()),
            Err(invalid) => Err(StoreError::InvalidInput(invalid)),
        };
        if let Err(error) = result {
            tracing::error!(%tenant_id, action, %error, "writing audit event failed");
        }
    }

    pub(crate) fn context(user: UserId, client: &ClientInfo) -> AuditContext {
        AuditContext {
            actor: Actor::User(user),
            ip: client.ip,
            user_agent: client.user_agent.clone(),
        }
    }
}

pub(crate) fn ensure_active(tenant: &Tenant) -> Result<()> {
    match tenant.status {
        TenantStatus::Active => Ok(()),
        status => Err(Error::TenantNotActive { status }),
    }
}
