//! [`Auth`]: registration, login, refresh, logout, sessions, tenant
//! switching, API keys, email verification and password reset.

use std::sync::Arc;

use serde_json::json;
use tenancy_core::{
    Actor, ApiKeyId, AuditAction, AuditContext, AuditLog, Backend, Clock, Directory, Email, Entity,
    Membership, MembershipStatus, MembershipStore, Metadata, NewAuditEvent, NewTenant, NewUser,
    Owner, Page, PageRequest, PageSize, SessionId, StoreError, SystemClock, Target, Tenant,
    TenantId, TenantScope, TenantStatus, TenantStore, User, UserId, UserStatus, UserStore,
    ValidationError, truncate_to_micros,
};
use time::OffsetDateTime;

use crate::api_key::{ApiKey, ApiKeyPrefix, ApiKeySecret, NewApiKey};
use crate::authenticator::Authenticator;
use crate::error::Error;
use crate::keys::{KeyAlgorithm, KeyRing};
use crate::lockout::{LockoutPolicy, ThrottleKey, ThrottleState};
use crate::one_time::{Mail, Mailer, NoMailer, OneTimeToken, TokenPurpose};
use crate::password::{Argon2Config, Password, PasswordHasher, PasswordPolicy, Verification};
use crate::principal::Principal;
use crate::revocation::RevocationSet;
use crate::secret::SecretToken;
use crate::session::{
    ClientInfo, REFRESH_PREFIX, RefreshRecord, RefreshToken, RevokeReason, RotateOutcome, Session,
    SessionConfig,
};
use crate::store::AuthStore;
use crate::token::{self, AccessToken, ClaimsHook, Grant, TokenConfig};

type Result<T, E = Error> = std::result::Result<T, E>;

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
}

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

/// A successful login, registration, refresh or tenant switch.
#[derive(Debug, Clone)]
pub struct LoginSuccess {
    /// The user.
    pub user: User,
    /// The membership the tokens act through.
    pub membership: Membership,
    /// The session.
    pub session: Session,
    /// The access token.
    pub access_token: AccessToken,
    /// The new refresh token, shown once.
    pub refresh_token: RefreshToken,
}

/// What a login presents.
#[derive(Debug, Clone)]
pub struct LoginRequest {
    /// The email as typed.
    pub email: String,
    /// The password.
    pub password: Password,
    /// The tenant to act in; `None` picks the user's oldest active membership.
    pub tenant: Option<TenantId>,
}

/// What a registration presents: a new user and their first tenant.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The new user.
    pub user: NewUser,
    /// Their password.
    pub password: Password,
    /// The tenant they will own.
    pub tenant: NewTenant,
}

/// Builds [`Auth`].
pub struct AuthBuilder {
    backend: Arc<dyn Backend>,
    store: Arc<dyn AuthStore>,
    config: AuthConfig,
    mailer: Arc<dyn Mailer>,
    hook: Option<Arc<dyn ClaimsHook>>,
    clock: Arc<dyn Clock>,
}

impl AuthBuilder {
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
        let hasher = PasswordHasher::new(config.argon2).map_err(ConfigError::Argon2)?;
        let now = truncate_to_micros(self.clock.now());
        let keys = Arc::new(
            KeyRing::load(self.store.clone(), config.algorithm, now)
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
            prefix.clone(),
            revocations.clone(),
            self.clock.clone(),
            config.token_cache_capacity,
        );
        let directory = Directory::new(self.backend.clone()).with_clock(self.clock.clone());
        Ok(Auth {
            inner: Arc::new(Inner {
                directory,
                backend: self.backend,
                store: self.store,
                hasher,
                config,
                prefix,
                keys,
                authenticator,
                revocations,
                mailer: self.mailer,
                hook: self.hook,
                clock: self.clock,
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
}

/// Identity for a multi-tenant app. Cheap to clone: clones share everything.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use tenancy_auth::*;
/// use tenancy_core::{Email, MemoryBackend, NewTenant, NewUser, Slug, TenantName};
///
/// let mut config = AuthConfig::new("https://app.example", "app");
/// config.argon2 = Argon2Config { memory_kib: 1024, iterations: 1, parallelism: 1 }; // fast, for the example
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
        }
    }

    fn now(&self) -> OffsetDateTime {
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

    /// The signing keys.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.inner.keys
    }

    /// The JWKS document to publish at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Arc<serde_json::Value> {
        self.inner.keys.jwks()
    }

    /// Rotates the signing key, then deletes keys retired for longer than
    /// an access token lives (plus leeway). Returns the new key id.
    pub async fn rotate_signing_key(&self) -> Result<String> {
        let now = self.now();
        let kid = self.inner.keys.rotate(now).await?;
        let tokens = &self.inner.config.tokens;
        self.inner
            .keys
            .prune(now, tokens.ttl + tokens.leeway)
            .await?;
        Ok(kid)
    }

    /// Reads sessions revoked elsewhere into the revocation set.
    pub async fn sync_revocations(&self) -> Result<usize> {
        let lookback = self.inner.config.sessions.absolute_timeout;
        Ok(self
            .inner
            .revocations
            .sync(&*self.inner.store, self.now(), lookback)
            .await?)
    }

    /// Spawns a task that calls [`Auth::sync_revocations`] every `interval`,
    /// logging failures. Abort the handle to stop it.
    pub fn spawn_revocation_sync(
        &self,
        interval: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let auth = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                if let Err(error) = auth.sync_revocations().await {
                    tracing::warn!(%error, "revocation sync failed");
                }
            }
        })
    }

    async fn audit(
        &self,
        tenant_id: TenantId,
        context: &AuditContext,
        action: &str,
        target: (&str, String),
        metadata: serde_json::Value,
    ) {
        let event = (|| {
            Ok::<_, ValidationError>(NewAuditEvent::new(
                context,
                AuditAction::new(action)?,
                Target::new(target.0, target.1)?,
                Metadata::new(metadata)?,
                self.now(),
            ))
        })();
        let result = match event {
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

    fn context(user: UserId, client: &ClientInfo) -> AuditContext {
        AuditContext {
            actor: Actor::User(user),
            ip: client.ip,
            user_agent: client.user_agent.clone(),
        }
    }

    /// Checks `password` against the policy and stores its hash for `user`.
    /// Returns [`Error::WeakPassword`] for a refused password.
    pub async fn set_password(&self, user: &User, password: &Password) -> Result<()> {
        self.inner
            .config
            .password
            .check(password, Some(&user.email))?;
        let hash = self.inner.hasher.hash(password).await?;
        self.inner
            .store
            .set_password_hash(user.id, &hash, self.now())
            .await?;
        Ok(())
    }

    /// Creates a user, their password and their first tenant (which they
    /// own), and logs them in there. The password is checked and hashed
    /// before anything is written.
    ///
    /// Errors: [`Error::WeakPassword`], [`Error::Directory`] (slug or email taken…).
    #[tracing::instrument(skip_all, err)]
    pub async fn register(
        &self,
        registration: Registration,
        client: &ClientInfo,
    ) -> Result<LoginSuccess> {
        let Registration {
            user,
            password,
            tenant,
        } = registration;
        self.inner
            .config
            .password
            .check(&password, Some(&user.email))?;
        let hash = self.inner.hasher.hash(&password).await?;
        let context = AuditContext {
            actor: Actor::System,
            ip: client.ip,
            user_agent: client.user_agent.clone(),
        };
        let created = self
            .inner
            .directory
            .create_tenant(tenant, Owner::New(user), &context)
            .await?;
        self.inner
            .store
            .set_password_hash(created.owner.id, &hash, self.now())
            .await?;
        self.open_session(&created.owner, &created.membership, client)
            .await
    }

    /// Logs a user in with email and password.
    ///
    /// Unknown emails and wrong passwords do the same argon2 work and both
    /// answer [`Error::InvalidCredentials`]. Failures count against the
    /// account and the client ([`ClientInfo::ip`]); past the limits the
    /// answer is [`Error::AccountLocked`] or [`Error::ClientThrottled`], with
    /// the unlock time. Other errors: [`Error::AccountDisabled`],
    /// [`Error::NotAMember`], [`Error::TenantNotActive`].
    #[tracing::instrument(skip_all, fields(tenant_id = ?request.tenant), err)]
    pub async fn login(&self, request: LoginRequest, client: &ClientInfo) -> Result<LoginSuccess> {
        let store = &self.inner.store;
        let now = self.now();
        let client_key = client.ip.map(|ip| ThrottleKey::client(&ip.to_string()));
        if let Some(key) = &client_key
            && let Some(until) = store
                .throttle_state(key)
                .await?
                .and_then(|s| s.locked_at(now))
        {
            return Err(Error::ClientThrottled { until });
        }
        let email = Email::new(&request.email).ok();
        let account_key = email.as_ref().map(ThrottleKey::account);
        let account_state = match &account_key {
            Some(key) => store.throttle_state(key).await?,
            None => None,
        };
        if let Some(until) = account_state.and_then(|s| s.locked_at(now)) {
            return Err(Error::AccountLocked { until });
        }
        self.inner
            .config
            .password
            .check_length_only(&request.password)
            .map_err(|_| Error::InvalidCredentials)?;

        let user = match &email {
            Some(email) => self.inner.backend.find_user_by_email(email).await?,
            None => None,
        };
        let stored = match &user {
            Some(user) => store.password_hash(user.id).await?,
            None => None,
        };
        let verification = match &stored {
            Some(hash) => self.inner.hasher.verify(&request.password, hash).await?,
            None => self.inner.hasher.verify_dummy(&request.password).await?,
        };
        let (user, needs_rehash) = match (user, verification) {
            (Some(user), Verification::Valid { needs_rehash }) => (user, needs_rehash),
            (user, _) => {
                return Err(self
                    .login_failed(
                        account_key.as_ref(),
                        client_key.as_ref(),
                        user.as_ref(),
                        client,
                        now,
                    )
                    .await?);
            }
        };
        if user.status == UserStatus::Disabled {
            return Err(Error::AccountDisabled);
        }
        if let Some(key) = &account_key {
            store.clear_throttle(key).await?;
        }
        if needs_rehash {
            let fresh = self.inner.hasher.hash(&request.password).await?;
            store.set_password_hash(user.id, &fresh, now).await?;
        }
        let membership = self.membership_for(&user, request.tenant).await?;
        if account_state.is_some_and(|s| s.locked_until.is_some()) {
            let context = Self::context(user.id, client);
            self.audit(
                membership.tenant_id,
                &context,
                actions::ACCOUNT_UNLOCKED,
                ("user", user.id.to_string()),
                json!({ "reason": "lock_expired" }),
            )
            .await;
        }
        self.open_session(&user, &membership, client).await
    }

    /// Counts a failed login and returns the error to answer with.
    async fn login_failed(
        &self,
        account: Option<&ThrottleKey>,
        client_key: Option<&ThrottleKey>,
        user: Option<&User>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<Error> {
        let store = &self.inner.store;
        let policy = self.inner.config.lockout;
        if let Some(key) = client_key {
            store.record_login_failure(key, &policy.client, now).await?;
        }
        let Some(key) = account else {
            return Ok(Error::InvalidCredentials);
        };
        let state: ThrottleState = store
            .record_login_failure(key, &policy.account, now)
            .await?;
        let Some(until) = state.locked_at(now) else {
            return Ok(Error::InvalidCredentials);
        };
        if let Some(user) = user {
            let context = AuditContext {
                actor: Actor::System,
                ip: client.ip,
                user_agent: client.user_agent.clone(),
            };
            for tenant in self.user_tenant_ids(user.id).await? {
                self.audit(
                    tenant,
                    &context,
                    actions::ACCOUNT_LOCKED,
                    ("user", user.id.to_string()),
                    json!({ "until": until.unix_timestamp() }),
                )
                .await;
            }
        }
        Ok(Error::AccountLocked { until })
    }

    async fn user_tenant_ids(&self, user: UserId) -> Result<Vec<TenantId>> {
        let page = self
            .inner
            .backend
            .list_user_tenants(user, &PageRequest::first(PageSize::MAX))
            .await?;
        Ok(page.items.into_iter().map(|ut| ut.tenant.id).collect())
    }

    /// Lifts an account lock before it runs out.
    pub async fn unlock_account(&self, email: &Email, context: &AuditContext) -> Result<()> {
        self.inner
            .store
            .clear_throttle(&ThrottleKey::account(email))
            .await?;
        if let Some(user) = self.inner.backend.find_user_by_email(email).await? {
            for tenant in self.user_tenant_ids(user.id).await? {
                self.audit(
                    tenant,
                    context,
                    actions::ACCOUNT_UNLOCKED,
                    ("user", user.id.to_string()),
                    json!({ "reason": "operator" }),
                )
                .await;
            }
        }
        Ok(())
    }

    /// The active membership `user` acts through in `tenant`, or in their
    /// oldest active tenant when `tenant` is `None`.
    async fn membership_for(&self, user: &User, tenant: Option<TenantId>) -> Result<Membership> {
        let backend = &self.inner.backend;
        match tenant {
            Some(tenant_id) => {
                let tenant = match backend.get_tenant(tenant_id).await {
                    Err(StoreError::NotFound(Entity::Tenant)) => return Err(Error::NotAMember),
                    other => other?,
                };
                let membership = backend
                    .find_membership(tenant_id, user.id)
                    .await?
                    .filter(|m| m.status == MembershipStatus::Active)
                    .ok_or(Error::NotAMember)?;
                ensure_active(&tenant)?;
                Ok(membership)
            }
            None => {
                let mut request = PageRequest::first(PageSize::MAX);
                loop {
                    let page = backend.list_user_tenants(user.id, &request).await?;
                    if let Some(found) = page.items.into_iter().find(|ut| {
                        ut.membership.status == MembershipStatus::Active
                            && ut.tenant.status == TenantStatus::Active
                    }) {
                        return Ok(found.membership);
                    }
                    match page.next {
                        Some(cursor) => request = request.after(cursor),
                        None => return Err(Error::NotAMember),
                    }
                }
            }
        }
    }

    async fn open_session(
        &self,
        user: &User,
        membership: &Membership,
        client: &ClientInfo,
    ) -> Result<LoginSuccess> {
        let now = self.now();
        let sessions = self.inner.config.sessions;
        let refresh_token = SecretToken::generate(REFRESH_PREFIX);
        let absolute = now + sessions.absolute_timeout;
        let session = Session {
            id: SessionId::new(),
            user_id: user.id,
            tenant_id: membership.tenant_id,
            user_agent: client.user_agent.clone(),
            ip: client.ip,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: (now + sessions.idle_timeout).min(absolute),
            absolute_expires_at: absolute,
            revoked_at: None,
            revoke_reason: None,
        };
        let record = RefreshRecord {
            token_hash: refresh_token.hash(),
            session_id: session.id,
            issued_at: now,
        };
        let evicted = self
            .inner
            .store
            .create_session(&session, &record, sessions.max_per_user)
            .await?;
        for id in evicted {
            self.inner
                .revocations
                .insert(id, now + sessions.absolute_timeout);
        }
        let access_token = self.issue(user, membership, session.id, now)?;
        self.audit(
            membership.tenant_id,
            &Self::context(user.id, client),
            actions::LOGIN,
            ("session", session.id.to_string()),
            json!({}),
        )
        .await;
        Ok(LoginSuccess {
            user: user.clone(),
            membership: membership.clone(),
            session,
            access_token,
            refresh_token,
        })
    }

    fn issue(
        &self,
        user: &User,
        membership: &Membership,
        session: SessionId,
        now: OffsetDateTime,
    ) -> Result<AccessToken> {
        let grant = Grant {
            user,
            membership,
            session,
            now,
        };
        Ok(token::issue(
            &self.inner.keys,
            &self.inner.config.tokens,
            self.inner.hook.as_deref(),
            &grant,
        )?)
    }

    /// Trades a refresh token for a new access token and a new refresh
    /// token. The roles in the new access token are read afresh.
    ///
    /// Errors: [`Error::InvalidRefreshToken`]; [`Error::RefreshTokenReused`]
    /// when the token was already spent (the session is then revoked and a
    /// security event recorded); [`Error::SessionInactive`] when the session
    /// ended, the membership is no longer active or the tenant is suspended.
    #[tracing::instrument(skip_all, err)]
    pub async fn refresh(&self, refresh_token: &str, client: &ClientInfo) -> Result<LoginSuccess> {
        let presented =
            SecretToken::parse(REFRESH_PREFIX, refresh_token).ok_or(Error::InvalidRefreshToken)?;
        let next = SecretToken::generate(REFRESH_PREFIX);
        let now = self.now();
        let outcome = self
            .inner
            .store
            .rotate_refresh_token(
                &presented.hash(),
                &next.hash(),
                now,
                self.inner.config.sessions.idle_timeout,
            )
            .await?;
        let session = match outcome {
            RotateOutcome::Rotated(session) => session,
            RotateOutcome::Reused(session) => {
                self.inner
                    .revocations
                    .insert(session.id, session.absolute_expires_at);
                self.audit_reuse(&session, client).await;
                return Err(Error::RefreshTokenReused);
            }
            RotateOutcome::Inactive(_) => return Err(Error::SessionInactive),
            RotateOutcome::Unknown => return Err(Error::InvalidRefreshToken),
        };
        let backend = &self.inner.backend;
        let user = backend.get_user(session.user_id).await?;
        let tenant = backend.get_tenant(session.tenant_id).await?;
        let membership = backend
            .find_membership(session.tenant_id, session.user_id)
            .await?
            .filter(|m| m.status == MembershipStatus::Active);
        let ended = match (&membership, user.status, tenant.status) {
            (None, _, _) => Some(RevokeReason::MembershipEnded),
            (_, UserStatus::Disabled, _) => Some(RevokeReason::Revoked),
            (_, _, TenantStatus::Suspended | TenantStatus::Deleted) => {
                Some(RevokeReason::TenantInactive)
            }
            _ => None,
        };
        let membership = match (ended, membership) {
            (None, Some(membership)) => membership,
            (reason, _) => {
                self.revoke(
                    session.id,
                    reason.unwrap_or(RevokeReason::Revoked),
                    session.absolute_expires_at,
                )
                .await?;
                return Err(Error::SessionInactive);
            }
        };
        let access_token = self.issue(&user, &membership, session.id, now)?;
        Ok(LoginSuccess {
            user,
            membership,
            session,
            access_token,
            refresh_token: next,
        })
    }

    async fn revoke(
        &self,
        id: SessionId,
        reason: RevokeReason,
        expires_at: OffsetDateTime,
    ) -> Result<bool> {
        let revoked = self
            .inner
            .store
            .revoke_session(id, reason, self.now())
            .await?;
        self.inner.revocations.insert(id, expires_at);
        Ok(revoked)
    }

    fn session_of(principal: &Principal) -> Result<(UserId, SessionId)> {
        match (principal.user_id(), principal.session_id) {
            (Some(user), Some(session)) => Ok((user, session)),
            _ => Err(Error::UserRequired),
        }
    }

    /// Ends the caller's session: its refresh token stops working and every
    /// access token carrying its `sid` is refused from now on.
    pub async fn logout(&self, principal: &Principal, client: &ClientInfo) -> Result<()> {
        let (_, session) = Self::session_of(principal)?;
        let session = self.inner.store.get_session(session).await?;
        self.end_session(&session, client).await
    }

    /// Ends the session a refresh token belongs to, for a client that
    /// holds no valid access token (a browser whose access cookie expired).
    /// A session that already ended is left as it is.
    ///
    /// Errors: [`Error::InvalidRefreshToken`] when the token is malformed or
    /// unknown; [`Error::RefreshTokenReused`] when it was already spent: the
    /// session still ends, as a detected reuse, and the security event is
    /// recorded as [`Auth::refresh`] would.
    pub async fn logout_with_refresh_token(
        &self,
        refresh_token: &str,
        client: &ClientInfo,
    ) -> Result<()> {
        let presented =
            SecretToken::parse(REFRESH_PREFIX, refresh_token).ok_or(Error::InvalidRefreshToken)?;
        let owner = self
            .inner
            .store
            .find_session_by_refresh_token(&presented.hash())
            .await?
            .ok_or(Error::InvalidRefreshToken)?;
        let session = owner.session;
        if !session.is_live_at(self.now()) {
            return Ok(());
        }
        if owner.spent {
            self.revoke(
                session.id,
                RevokeReason::RefreshTokenReuse,
                session.absolute_expires_at,
            )
            .await?;
            self.audit_reuse(&session, client).await;
            return Err(Error::RefreshTokenReused);
        }
        self.end_session(&session, client).await
    }

    async fn audit_reuse(&self, session: &Session, client: &ClientInfo) {
        self.audit(
            session.tenant_id,
            &Self::context(session.user_id, client),
            actions::REFRESH_TOKEN_REUSED,
            ("session", session.id.to_string()),
            json!({ "user_id": session.user_id }),
        )
        .await;
    }

    /// Revokes `session` as a logout and audits it.
    async fn end_session(&self, session: &Session, client: &ClientInfo) -> Result<()> {
        self.revoke(
            session.id,
            RevokeReason::Logout,
            session.absolute_expires_at,
        )
        .await?;
        self.audit(
            session.tenant_id,
            &Self::context(session.user_id, client),
            actions::LOGOUT,
            ("session", session.id.to_string()),
            json!({}),
        )
        .await;
        Ok(())
    }

    /// The user's live sessions, newest first.
    pub async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>> {
        Ok(self
            .inner
            .store
            .list_user_sessions(user, self.now())
            .await?)
    }

    /// Ends one of `user`'s sessions. [`Error::SessionNotFound`] if it is
    /// not theirs.
    pub async fn revoke_session(&self, user: UserId, session: SessionId) -> Result<()> {
        let found = match self.inner.store.get_session(session).await {
            Ok(found) if found.user_id == user => found,
            Ok(_) | Err(StoreError::NotFound(_)) => return Err(Error::SessionNotFound),
            Err(other) => return Err(other.into()),
        };
        self.revoke(session, RevokeReason::Revoked, found.absolute_expires_at)
            .await?;
        Ok(())
    }

    /// Ends every session of `user`; returns how many.
    pub async fn revoke_all_sessions(&self, user: UserId) -> Result<usize> {
        self.revoke_many(
            self.inner
                .store
                .revoke_user_sessions(user, None, RevokeReason::Revoked, self.now())
                .await?,
        )
    }

    fn revoke_many(&self, ids: Vec<SessionId>) -> Result<usize> {
        let until = self.now() + self.inner.config.sessions.absolute_timeout;
        for id in &ids {
            self.inner.revocations.insert(*id, until);
        }
        Ok(ids.len())
    }

    /// Opens a session in another tenant for the calling user, who must
    /// hold an active membership there in a tenant that is active.
    ///
    /// Errors: [`Error::UserRequired`], [`Error::NotAMember`], [`Error::TenantNotActive`].
    pub async fn switch_tenant(
        &self,
        principal: &Principal,
        tenant: TenantId,
        client: &ClientInfo,
    ) -> Result<LoginSuccess> {
        let (user_id, _) = Self::session_of(principal)?;
        let user = self.inner.backend.get_user(user_id).await?;
        if user.status == UserStatus::Disabled {
            return Err(Error::AccountDisabled);
        }
        let membership = self.membership_for(&user, Some(tenant)).await?;
        self.open_session(&user, &membership, client).await
    }

    /// Removes a member and ends their sessions in that tenant.
    pub async fn remove_member(
        &self,
        scope: &TenantScope,
        user: UserId,
        context: &AuditContext,
    ) -> Result<Membership> {
        let removed = self
            .inner
            .directory
            .remove_member(scope, user, context)
            .await?;
        self.revoke_many(
            self.inner
                .store
                .revoke_user_sessions(
                    user,
                    Some(scope.tenant_id()),
                    RevokeReason::MembershipEnded,
                    self.now(),
                )
                .await?,
        )?;
        Ok(removed)
    }

    /// Suspends a member and ends their sessions in that tenant.
    pub async fn suspend_member(
        &self,
        scope: &TenantScope,
        user: UserId,
        context: &AuditContext,
    ) -> Result<Membership> {
        let suspended = self
            .inner
            .directory
            .suspend_member(scope, user, context)
            .await?;
        self.revoke_many(
            self.inner
                .store
                .revoke_user_sessions(
                    user,
                    Some(scope.tenant_id()),
                    RevokeReason::MembershipEnded,
                    self.now(),
                )
                .await?,
        )?;
        Ok(suspended)
    }

    /// Suspends a tenant and ends every session in it.
    pub async fn suspend_tenant(&self, tenant: TenantId, context: &AuditContext) -> Result<Tenant> {
        let suspended = self.inner.directory.suspend_tenant(tenant, context).await?;
        self.revoke_many(
            self.inner
                .store
                .revoke_tenant_sessions(tenant, RevokeReason::TenantInactive, self.now())
                .await?,
        )?;
        Ok(suspended)
    }

    /// Soft-deletes a tenant and ends every session in it.
    pub async fn delete_tenant(&self, tenant: TenantId, context: &AuditContext) -> Result<Tenant> {
        let deleted = self.inner.directory.delete_tenant(tenant, context).await?;
        self.revoke_many(
            self.inner
                .store
                .revoke_tenant_sessions(tenant, RevokeReason::TenantInactive, self.now())
                .await?,
        )?;
        Ok(deleted)
    }

    /// Creates an API key in the scope's tenant. The secret is returned here
    /// only; the store keeps its hash.
    ///
    /// Errors: [`Error::InvalidInput`] for an empty or over-long name or an
    /// expiry in the past; [`Error::Directory`] if the tenant is not active.
    pub async fn create_api_key(
        &self,
        scope: &TenantScope,
        new: NewApiKey,
        context: &AuditContext,
    ) -> Result<(ApiKey, ApiKeySecret)> {
        let now = self.now();
        let name = validate_key_name(&new.name)?;
        if new.expires_at.is_some_and(|at| at <= now) {
            return Err(ValidationError::TimeRange.into());
        }
        self.inner.directory.scope(scope.tenant_id()).await?;
        let id = ApiKeyId::new();
        let (secret, secret_hash) = self.inner.prefix.generate(id);
        let mut scopes = new.scopes;
        scopes.sort();
        scopes.dedup();
        let key = ApiKey {
            id,
            tenant_id: scope.tenant_id(),
            name,
            scopes,
            secret_hash,
            created_by: context.actor,
            created_at: now,
            expires_at: new.expires_at.map(truncate_to_micros),
            last_used_at: None,
            revoked_at: None,
        };
        self.inner.store.insert_api_key(&key).await?;
        let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
        self.audit(
            key.tenant_id,
            context,
            actions::API_KEY_CREATED,
            ("api_key", id.to_string()),
            json!({ "name": key.name, "scopes": scopes }),
        )
        .await;
        Ok((key, secret))
    }

    /// Lists the scope's API keys, oldest first.
    pub async fn list_api_keys(
        &self,
        scope: &TenantScope,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>> {
        Ok(self
            .inner
            .store
            .list_api_keys(scope.tenant_id(), page)
            .await?)
    }

    /// Revokes one of the scope's API keys; it is refused from now on.
    pub async fn revoke_api_key(
        &self,
        scope: &TenantScope,
        id: ApiKeyId,
        context: &AuditContext,
    ) -> Result<ApiKey> {
        let key = self
            .inner
            .store
            .revoke_api_key(scope.tenant_id(), id, self.now())
            .await?;
        self.audit(
            key.tenant_id,
            context,
            actions::API_KEY_REVOKED,
            ("api_key", id.to_string()),
            json!({ "name": key.name }),
        )
        .await;
        Ok(key)
    }

    async fn send_token(&self, user: &User, purpose: TokenPurpose) -> Result<()> {
        let now = self.now();
        let token = SecretToken::generate(purpose.prefix());
        let record = OneTimeToken {
            token_hash: token.hash(),
            purpose,
            user_id: user.id,
            email: user.email.clone(),
            created_at: now,
            expires_at: now + purpose.lifetime(),
            used_at: None,
        };
        self.inner.store.insert_one_time_token(&record).await?;
        self.inner
            .mailer
            .send(Mail {
                to: user.email.clone(),
                purpose,
                token,
            })
            .await
            .map_err(Error::Mail)
    }

    /// Mails `user` a link to prove their address (valid 24 hours).
    pub async fn start_email_verification(&self, user: UserId) -> Result<()> {
        let user = self.inner.backend.get_user(user).await?;
        self.send_token(&user, TokenPurpose::EmailVerification)
            .await
    }

    /// Redeems an email-verification token and marks the address verified.
    /// [`Error::InvalidOneTimeToken`] if it is unknown, used or expired, or
    /// the user's address changed since it was sent.
    pub async fn finish_email_verification(&self, token: &str) -> Result<User> {
        let record = self.consume(token, TokenPurpose::EmailVerification).await?;
        let mut user = self.inner.backend.get_user(record.user_id).await?;
        if !user.email.same_address(&record.email) {
            return Err(Error::InvalidOneTimeToken);
        }
        user.email_verified = true;
        user.updated_at = self.now();
        self.inner.backend.update_user(&user).await?;
        Ok(user)
    }

    /// Mails a password-reset link (valid 1 hour) if `email` has an
    /// account. Answers the same either way, so it reveals nothing.
    pub async fn start_password_reset(&self, email: &str) -> Result<()> {
        let Ok(email) = Email::new(email) else {
            return Ok(());
        };
        match self.inner.backend.find_user_by_email(&email).await? {
            Some(user) if user.status == UserStatus::Active => {
                self.send_token(&user, TokenPurpose::PasswordReset).await
            }
            _ => Ok(()),
        }
    }

    /// Sets a new password with a reset token, ends every session of the
    /// user and clears their lockout. The password is checked before the
    /// token is spent, so a refused password leaves the link usable.
    ///
    /// Errors: [`Error::InvalidOneTimeToken`], [`Error::WeakPassword`].
    pub async fn finish_password_reset(&self, token: &str, password: &Password) -> Result<()> {
        let parsed = SecretToken::parse(TokenPurpose::PasswordReset.prefix(), token)
            .ok_or(Error::InvalidOneTimeToken)?;
        let pending = self
            .inner
            .store
            .find_one_time_token(&parsed.hash())
            .await?
            .filter(|t| t.purpose == TokenPurpose::PasswordReset && t.used_at.is_none())
            .ok_or(Error::InvalidOneTimeToken)?;
        self.inner
            .config
            .password
            .check(password, Some(&pending.email))?;
        let hash = self.inner.hasher.hash(password).await?;
        let record = self.consume(token, TokenPurpose::PasswordReset).await?;
        self.inner
            .store
            .set_password_hash(record.user_id, &hash, self.now())
            .await?;
        self.inner
            .store
            .clear_throttle(&ThrottleKey::account(&record.email))
            .await?;
        self.revoke_many(
            self.inner
                .store
                .revoke_user_sessions(
                    record.user_id,
                    None,
                    RevokeReason::PasswordChanged,
                    self.now(),
                )
                .await?,
        )?;
        Ok(())
    }

    async fn consume(&self, token: &str, purpose: TokenPurpose) -> Result<OneTimeToken> {
        let parsed =
            SecretToken::parse(purpose.prefix(), token).ok_or(Error::InvalidOneTimeToken)?;
        self.inner
            .store
            .consume_one_time_token(&parsed.hash(), purpose, self.now())
            .await?
            .ok_or(Error::InvalidOneTimeToken)
    }
}

fn ensure_active(tenant: &Tenant) -> Result<()> {
    match tenant.status {
        TenantStatus::Active => Ok(()),
        status => Err(Error::TenantNotActive { status }),
    }
}

fn validate_key_name(raw: &str) -> Result<String, ValidationError> {
    const FIELD: &str = "api key name";
    let trimmed = raw.trim();
    let len = trimmed.chars().count();
    if len == 0 || len > 200 {
        return Err(ValidationError::TextLength {
            field: FIELD,
            max: 200,
            len,
        });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ValidationError::ControlCharacter { field: FIELD });
    }
    Ok(trimmed.to_owned())
}
