//! [`Sso`]: starting and finishing sign-ins, resolving accounts, and the
//! admin operations on connections, domains and policy.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use sha2::{Digest, Sha256};
use tenancy_core::{
    Actor, AuditAction, AuditContext, AuditLog, DisplayName, Email, Membership, MembershipId,
    MembershipStatus, Metadata, NewAuditEvent, NewTenant, NewUser, Owner, RoleName, RoleSet, Slug,
    StoreError, Target, TenantId, TenantName, TenantStore, TokenHash, User, UserId, UserStatus,
    UserStore,
};
use time::OffsetDateTime;
use url::Url;

use super::actions;
use super::connection::{
    ClientSecret, ConnectionId, ConnectionRef, ConnectionUpdate, DomainName, EmailDomain,
    EnterpriseConnection, ExternalIdentity, NewEnterpriseConnection, SealedSecret, SignInState,
    SocialConnection, SocialProtocol, SsoPolicy,
};
use super::dns::{DnsTxtResolver, NoDnsResolver};
use super::error::{SsoError, SsoStoreError};
use super::net::{GuardedHttp, NetworkPolicy};
use super::provider::{self, FlowSecrets, ProviderIdentity, Registration};
use super::store::SsoStore;
use crate::secret::SecretToken;
use crate::service::{Auth, LoginSuccess, PasswordLoginCheck, RegistrationMode};
use crate::session::ClientInfo;

type Result<T, E = SsoError> = std::result::Result<T, E>;

/// Settings of [`Sso`].
#[derive(Clone)]
pub struct SsoConfig {
    social: Vec<SocialConnection>,
    network: NetworkPolicy,
    redirect_uri: Option<String>,
    state_ttl: Duration,
    http_timeout: Duration,
    dns: Arc<dyn DnsTxtResolver>,
}

impl Default for SsoConfig {
    fn default() -> Self {
        Self {
            social: Vec::new(),
            network: NetworkPolicy::default(),
            redirect_uri: None,
            state_ttl: Duration::from_secs(600),
            http_timeout: Duration::from_secs(10),
            dns: Arc::new(NoDnsResolver),
        }
    }
}

impl std::fmt::Debug for SsoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoConfig")
            .field("social", &self.social)
            .field("network", &self.network)
            .field("redirect_uri", &self.redirect_uri)
            .field("state_ttl", &self.state_ttl)
            .field("http_timeout", &self.http_timeout)
            .finish_non_exhaustive()
    }
}

impl SsoConfig {
    /// No social connections, public providers only, the callback at
    /// `<token issuer>/sso/callback`, sign-ins pending for 10 minutes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a social connection (a later one with the same key replaces it).
    pub fn with_social(mut self, connection: SocialConnection) -> Self {
        self.social.retain(|c| c.key != connection.key);
        self.social.push(connection);
        self
    }

    /// Which addresses providers may be fetched from (see [`NetworkPolicy`]).
    pub fn with_network_policy(mut self, policy: NetworkPolicy) -> Self {
        self.network = policy;
        self
    }

    /// Lets the server fetch providers on private, loopback and link-local
    /// addresses, over plain `http` too: tests and development only.
    pub fn allow_private_network(mut self, allow: bool) -> Self {
        self.network.allow_private_network = allow;
        self
    }

    /// The callback URL registered at the providers (default
    /// `<AuthConfig token issuer>/sso/callback`).
    pub fn with_redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uri = Some(uri.into());
        self
    }

    /// How long a started sign-in may be finished (default 10 minutes).
    pub fn with_state_ttl(mut self, ttl: Duration) -> Self {
        self.state_ttl = ttl;
        self
    }

    /// How long a request to a provider may take (default 10 seconds).
    pub fn with_http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = timeout;
        self
    }

    /// The TXT resolver domain verification asks (default none: domains
    /// are verified by an operator).
    pub fn with_dns_resolver(mut self, dns: Arc<dyn DnsTxtResolver>) -> Self {
        self.dns = dns;
        self
    }

    /// The social connections.
    pub fn social(&self) -> &[SocialConnection] {
        &self.social
    }

    /// The network policy.
    pub fn network_policy(&self) -> NetworkPolicy {
        self.network
    }
}

/// Where a sign-in goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignInTarget {
    /// A social connection by key (`github`).
    Connection(String),
    /// A tenant's enterprise connection (its only enabled one when `None`).
    Enterprise {
        /// The tenant.
        tenant_id: TenantId,
        /// The connection.
        connection: Option<ConnectionId>,
    },
    /// The connection of the tenant that verified this email's domain.
    Email(String),
}

/// What [`Sso::start`] needs.
#[derive(Debug, Clone)]
pub struct StartSignIn {
    /// Where to sign in.
    pub target: SignInTarget,
    /// A path of this app to return to afterwards (`/dashboard`);
    /// absolute URLs and `//host` are refused (no open redirect).
    pub return_to: Option<String>,
}

/// A started sign-in.
#[derive(Debug, Clone)]
pub struct SignInStart {
    /// Where to send the browser.
    pub authorize_url: Url,
    /// The `state` parameter in that URL.
    pub state: String,
    /// The browser-binding secret: set it as a short-lived cookie and give
    /// it back to [`Sso::finish`]. The PKCE verifier and the nonce derive
    /// from it, so whoever lacks it cannot finish the sign-in even with the
    /// callback URL in hand.
    pub binding: SecretToken,
    /// When the sign-in lapses.
    pub expires_at: OffsetDateTime,
}

/// The callback's parameters. Its `Debug` hides the code and the
/// binding: either in a log would help finish someone's sign-in.
#[derive(Clone, Default)]
pub struct Callback {
    /// `state`.
    pub state: String,
    /// `code`, on success.
    pub code: Option<String>,
    /// `error`, when the provider refused.
    pub error: Option<String>,
    /// `iss` (RFC 9207), when the provider sends it.
    pub iss: Option<String>,
    /// The browser-binding secret from the cookie.
    pub binding: Option<String>,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback")
            .field("state", &self.state)
            .field("code", &self.code.as_ref().map(|_| "[redacted]"))
            .field("error", &self.error)
            .field("iss", &self.iss)
            .field("binding", &self.binding.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// A finished sign-in.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SignedIn {
    /// The session and tokens, as a password login gives them.
    pub login: LoginSuccess,
    /// The path to return to, from [`StartSignIn::return_to`].
    pub return_to: Option<String>,
    /// The connection (`social:github`, `enterprise:<id>`).
    pub provider: String,
    /// The user was created by this sign-in.
    pub user_created: bool,
    /// The identity was linked to an existing user by this sign-in.
    pub linked: bool,
    /// The membership was created just in time by this sign-in.
    pub joined: bool,
}

/// The password-login check of [`crate::AuthBuilder::password_login_check`]
/// over an SSO store: a tenant with `require_sso` refuses passwords.
#[derive(Clone)]
pub struct SsoPasswordCheck {
    store: Arc<dyn SsoStore>,
}

impl SsoPasswordCheck {
    /// The check over `store`.
    pub fn new(store: Arc<dyn SsoStore>) -> Self {
        Self { store }
    }
}

impl std::fmt::Debug for SsoPasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoPasswordCheck").finish_non_exhaustive()
    }
}

#[async_trait]
impl PasswordLoginCheck for SsoPasswordCheck {
    async fn password_allowed(
        &self,
        tenant: TenantId,
        _user: UserId,
    ) -> std::result::Result<bool, StoreError> {
        match self.store.policy(tenant).await {
            Ok(policy) => Ok(!policy.require_sso),
            Err(SsoStoreError::Store(error)) => Err(error),
            Err(other) => Err(StoreError::unavailable(other)),
        }
    }

    async fn session_allowed(
        &self,
        tenant: TenantId,
        user: UserId,
        session: tenancy_core::SessionId,
    ) -> std::result::Result<bool, StoreError> {
        if self.password_allowed(tenant, user).await? {
            return Ok(true);
        }
        Ok(!self.switch_allowed(session).await?)
    }

    async fn switch_allowed(
        &self,
        session: tenancy_core::SessionId,
    ) -> std::result::Result<bool, StoreError> {
        match self.store.is_sso_session(session).await {
            Ok(opened_by_sso) => Ok(!opened_by_sso),
            Err(SsoStoreError::Store(error)) => Err(error),
            Err(other) => Err(StoreError::unavailable(other)),
        }
    }
}

struct Inner {
    auth: Auth,
    store: Arc<dyn SsoStore>,
    config: SsoConfig,
    http: GuardedHttp,
    redirect_uri: Url,
}

/// The SSO service. Cheap to clone.
#[derive(Clone)]
pub struct Sso {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sso")
            .field("config", &self.inner.config)
            .field("redirect_uri", &self.inner.redirect_uri.as_str())
            .finish_non_exhaustive()
    }
}

/// The connection a sign-in goes through, loaded.
enum Loaded {
    Social(Box<SocialConnection>),
    Enterprise(EnterpriseConnection),
}

fn random_text() -> String {
    URL_SAFE_NO_PAD.encode(crate::secret::random_256())
}

fn derive(label: &str, binding: &str, state: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(label.as_bytes());
    hasher.update([0]);
    hasher.update(binding.as_bytes());
    hasher.update([0]);
    hasher.update(state.as_bytes());
    URL_SAFE_NO_PAD.encode(hasher.finalize())
}

fn flow_secrets(binding: &str, state: &str) -> FlowSecrets {
    FlowSecrets {
        state: state.to_owned(),
        nonce: derive("tenancy-sso-nonce", binding, state),
        pkce_verifier: derive("tenancy-sso-pkce", binding, state),
    }
}

/// A return path: one of this app's paths, never another origin.
fn check_return_to(path: &str) -> Result<()> {
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains('\\')
        && path.len() <= 2048
        && !path.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(SsoError::InvalidInput {
            field: "return_to",
            reason: "must be a path of this app, such as /dashboard".to_owned(),
        })
    }
}

/// RFC 9207 §2.4: issuers are compared as strings, without normalization.
fn same_issuer(a: &str, b: &str) -> bool {
    a == b
}

impl Sso {
    /// The service over `auth` and `store`.
    pub fn new(auth: Auth, store: Arc<dyn SsoStore>, config: SsoConfig) -> Result<Self> {
        let redirect = match &config.redirect_uri {
            Some(uri) => uri.clone(),
            None => format!(
                "{}/sso/callback",
                auth.config().tokens.issuer.trim_end_matches('/')
            ),
        };
        let redirect_uri = Url::parse(&redirect).map_err(|e| SsoError::InvalidInput {
            field: "redirect_uri",
            reason: e.to_string(),
        })?;
        let http = GuardedHttp::new(config.network, config.http_timeout)
            .map_err(|e| SsoError::ProviderUnavailable(Box::new(e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                auth,
                store,
                config,
                http,
                redirect_uri,
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SsoStore> {
        &self.inner.store
    }

    /// The settings.
    pub fn config(&self) -> &SsoConfig {
        &self.inner.config
    }

    /// The callback URL registered at providers.
    pub fn redirect_uri(&self) -> &Url {
        &self.inner.redirect_uri
    }

    /// The password-login check over this service's store.
    pub fn password_check(&self) -> SsoPasswordCheck {
        SsoPasswordCheck::new(self.inner.store.clone())
    }

    fn now(&self) -> OffsetDateTime {
        self.inner.auth.now()
    }

    fn social(&self, key: &str) -> Option<&SocialConnection> {
        self.inner.config.social.iter().find(|c| c.key == key)
    }

    async fn enabled_connection(
        &self,
        tenant: TenantId,
        id: Option<ConnectionId>,
    ) -> Result<EnterpriseConnection> {
        let found = match id {
            Some(id) => self.inner.store.get_connection(tenant, id).await?,
            None => self
                .inner
                .store
                .list_connections(tenant)
                .await?
                .into_iter()
                .find(|c| c.enabled),
        };
        found
            .filter(|c| c.enabled)
            .ok_or(SsoError::UnknownConnection)
    }

    /// Starts a sign-in: picks the connection, records the pending sign-in
    /// and returns the provider's authorization URL (with `state`, PKCE
    /// S256 and, for OpenID providers, `nonce`).
    ///
    /// Errors: [`SsoError::UnknownConnection`], [`SsoError::NoConnectionForEmail`],
    /// [`SsoError::InvalidInput`], [`SsoError::AddressRefused`],
    /// [`SsoError::ProviderUnavailable`] (discovery failed).
    pub async fn start(&self, request: StartSignIn) -> Result<SignInStart> {
        self.start_unlimited(request).await
    }

    /// [`Sso::start`] for an anonymous `client`, counted against the
    /// per-client login rate and concurrency ([`crate::AbuseLimits`]):
    /// each start records a pending sign-in and may fetch the provider's
    /// discovery document, so a client cannot start them without bound.
    /// Past the limit: [`SsoError::Auth`] with
    /// [`Error::RateLimited`](crate::Error::RateLimited).
    pub async fn start_for(
        &self,
        request: StartSignIn,
        client: &ClientInfo,
    ) -> Result<SignInStart> {
        let _permit = self.inner.auth.admit_sign_in(client)?;
        self.start_unlimited(request).await
    }

    async fn start_unlimited(&self, request: StartSignIn) -> Result<SignInStart> {
        if let Some(path) = &request.return_to {
            check_return_to(path)?;
        }
        let (loaded, login_hint) = match request.target {
            SignInTarget::Connection(key) => (
                Loaded::Social(Box::new(
                    self.social(&key)
                        .cloned()
                        .ok_or(SsoError::UnknownConnection)?,
                )),
                None,
            ),
            SignInTarget::Enterprise {
                tenant_id,
                connection,
            } => (
                Loaded::Enterprise(self.enabled_connection(tenant_id, connection).await?),
                None,
            ),
            SignInTarget::Email(email) => {
                let domain = DomainName::of_email(&email)?;
                let record = self
                    .inner
                    .store
                    .find_domain(&domain)
                    .await?
                    .filter(EmailDomain::is_verified)
                    .ok_or(SsoError::NoConnectionForEmail)?;
                let connection = self
                    .enabled_connection(record.tenant_id, None)
                    .await
                    .map_err(|e| match e {
                        SsoError::UnknownConnection => SsoError::NoConnectionForEmail,
                        other => other,
                    })?;
                (Loaded::Enterprise(connection), Some(email))
            }
        };
        let state = random_text();
        let binding = SecretToken::generate("");
        let secrets = flow_secrets(binding.expose_secret(), &state);
        let redirect_uri = self.inner.redirect_uri.clone();
        let (mut url, connection) = match &loaded {
            Loaded::Social(social) => {
                let registration = Registration {
                    client_id: &social.client_id,
                    client_secret: social.client_secret.expose(),
                    redirect_uri: &redirect_uri,
                    scopes: &social.scopes,
                };
                let url = match &social.protocol {
                    SocialProtocol::OAuth2(endpoints) => {
                        provider::oauth2_authorize_url(endpoints, &registration, &secrets)
                    }
                    SocialProtocol::Oidc { issuer } => {
                        provider::oidc_authorize_url(
                            &self.inner.http,
                            issuer,
                            &registration,
                            &secrets,
                        )
                        .await?
                    }
                };
                (url, ConnectionRef::Social(social.key.clone()))
            }
            Loaded::Enterprise(connection) => {
                let secret = self.open_secret(connection)?;
                let scopes = enterprise_scopes();
                let registration = Registration {
                    client_id: &connection.client_id,
                    client_secret: secret.expose(),
                    redirect_uri: &redirect_uri,
                    scopes: &scopes,
                };
                let url = provider::oidc_authorize_url(
                    &self.inner.http,
                    &connection.issuer,
                    &registration,
                    &secrets,
                )
                .await?;
                (
                    url,
                    ConnectionRef::Enterprise {
                        tenant_id: connection.tenant_id,
                        id: connection.id,
                    },
                )
            }
        };
        if let Some(hint) = login_hint {
            url.query_pairs_mut().append_pair("login_hint", &hint);
        }
        let now = self.now();
        let expires_at = now + self.inner.config.state_ttl;
        self.inner
            .store
            .insert_state(&SignInState {
                state_hash: TokenHash::of(state.as_bytes()),
                binding_hash: binding.hash(),
                connection,
                return_to: request.return_to,
                created_at: now,
                expires_at,
            })
            .await?;
        Ok(SignInStart {
            authorize_url: url,
            state,
            binding,
            expires_at,
        })
    }

    /// Finishes a sign-in from the provider's callback: takes the pending
    /// sign-in (once), checks the browser binding, exchanges the code with
    /// the PKCE verifier, validates the ID token (or reads the GitHub-style
    /// profile), resolves the account and opens a session.
    ///
    /// Errors: [`SsoError::InvalidState`], [`SsoError::ProviderRefused`],
    /// [`SsoError::MissingCode`], [`SsoError::CodeExchange`],
    /// [`SsoError::MissingIdToken`], [`SsoError::InvalidIdToken`],
    /// [`SsoError::EmailNotVerified`], [`SsoError::DomainMismatch`],
    /// [`SsoError::SignupNotAllowed`], [`SsoError::UnknownConnection`]
    /// (removed or disabled meanwhile), [`SsoError::Auth`] (disabled
    /// account, no membership, inactive tenant, closed registration, too
    /// many sign-ins from this client). Counted against the per-client
    /// login rate and concurrency like a password login.
    pub async fn finish(&self, callback: Callback, client: &ClientInfo) -> Result<SignedIn> {
        let _permit = self.inner.auth.admit_sign_in(client)?;
        let now = self.now();
        let pending = self
            .inner
            .store
            .take_state(&TokenHash::of(callback.state.as_bytes()), now)
            .await?
            .ok_or(SsoError::InvalidState)?;
        let binding = callback.binding.as_deref().unwrap_or_default();
        if !crate::secret::hashes_equal(&TokenHash::of(binding.as_bytes()), &pending.binding_hash) {
            return Err(SsoError::InvalidState);
        }
        if let Some(error) = callback.error {
            return Err(SsoError::ProviderRefused {
                error: error.chars().take(64).collect(),
            });
        }
        let code = callback
            .code
            .filter(|c| !c.is_empty())
            .ok_or(SsoError::MissingCode)?;
        let secrets = flow_secrets(binding, &callback.state);
        let redirect_uri = self.inner.redirect_uri.clone();
        let (loaded, identity) = match &pending.connection {
            ConnectionRef::Social(key) => {
                let social = self
                    .social(key)
                    .cloned()
                    .ok_or(SsoError::UnknownConnection)?;
                let registration = Registration {
                    client_id: &social.client_id,
                    client_secret: social.client_secret.expose(),
                    redirect_uri: &redirect_uri,
                    scopes: &social.scopes,
                };
                let identity = match &social.protocol {
                    SocialProtocol::OAuth2(endpoints) => {
                        provider::oauth2_finish(
                            &self.inner.http,
                            endpoints,
                            &registration,
                            &code,
                            &secrets,
                        )
                        .await?
                    }
                    SocialProtocol::Oidc { issuer } => {
                        check_iss(callback.iss.as_deref(), issuer)?;
                        provider::oidc_finish(
                            &self.inner.http,
                            issuer,
                            &registration,
                            &code,
                            &secrets,
                            callback.iss.as_deref(),
                        )
                        .await?
                    }
                };
                (Loaded::Social(Box::new(social)), identity)
            }
            ConnectionRef::Enterprise { tenant_id, id } => {
                let connection = self.enabled_connection(*tenant_id, Some(*id)).await?;
                check_iss(callback.iss.as_deref(), &connection.issuer)?;
                let secret = self.open_secret(&connection)?;
                let scopes = enterprise_scopes();
                let registration = Registration {
                    client_id: &connection.client_id,
                    client_secret: secret.expose(),
                    redirect_uri: &redirect_uri,
                    scopes: &scopes,
                };
                let identity = provider::oidc_finish(
                    &self.inner.http,
                    &connection.issuer,
                    &registration,
                    &code,
                    &secrets,
                    callback.iss.as_deref(),
                )
                .await?;
                (Loaded::Enterprise(connection), identity)
            }
        };
        let mut signed_in = self
            .resolve(&pending.connection, &loaded, identity, client)
            .await?;
        signed_in.return_to = pending.return_to;
        Ok(signed_in)
    }

    /// Finds or creates the account for `identity` and opens its session.
    async fn resolve(
        &self,
        connection: &ConnectionRef,
        loaded: &Loaded,
        identity: ProviderIdentity,
        client: &ClientInfo,
    ) -> Result<SignedIn> {
        let auth = &self.inner.auth;
        let backend = auth.backend();
        let provider_key = connection.provider_key();
        let email = identity
            .email
            .as_deref()
            .and_then(|e| Email::new(e).ok())
            .ok_or(SsoError::EmailNotVerified)?;
        // Whether the provider vouches for the address.
        let trusted = match loaded {
            Loaded::Social(_) => identity.email_verified == Some(true),
            Loaded::Enterprise(connection) => {
                // A tenant's provider speaks for the tenant's verified
                // domains only, and never for an address it says is
                // unverified.
                let domain = DomainName::of_email(email.as_str())?;
                let owned = self
                    .inner
                    .store
                    .find_domain(&domain)
                    .await?
                    .is_some_and(|d| d.tenant_id == connection.tenant_id && d.is_verified());
                if !owned {
                    return Err(SsoError::DomainMismatch);
                }
                identity.email_verified != Some(false)
            }
        };
        let linked_identity = self
            .inner
            .store
            .find_identity(&provider_key, &identity.subject)
            .await?;
        if linked_identity.is_none()
            && matches!(loaded, Loaded::Social(_))
            && self
                .inner
                .store
                .find_domain(&DomainName::of_email(email.as_str())?)
                .await?
                .is_some_and(|d| d.is_verified())
        {
            return Err(SsoError::UseOrganizationSso);
        }
        let (existing, link) = match &linked_identity {
            Some(link) => (Some(backend.get_user(link.user_id).await?), false),
            None => match backend.find_user_by_email(&email).await? {
                Some(user) => {
                    // Linking on an address the provider does not vouch
                    // for, or to an account that never proved it owns
                    // the address (a squatter's pre-registered account),
                    // would hand over the account: refused.
                    if !trusted || !user.email_verified {
                        return Err(SsoError::EmailNotVerified);
                    }
                    (Some(user), true)
                }
                None => (None, false),
            },
        };
        if let Some(user) = &existing
            && user.status == UserStatus::Disabled
        {
            return Err(crate::Error::AccountDisabled.into());
        }
        // A tenant's provider speaks for the tenant, not for the rest of
        // an account: an account that reaches further than the connection
        // would grant (other tenants, higher roles) is not handed to
        // whoever controls that provider.
        if link
            && let (Loaded::Enterprise(connection), Some(user)) = (loaded, &existing)
            && self.reaches_beyond(user.id, connection).await?
        {
            return Err(SsoError::LinkConfirmationRequired);
        }
        let now = self.now();
        let display_name = identity
            .name
            .as_deref()
            .and_then(|n| DisplayName::new(n).ok());
        // Reads outside the transaction come first: a backend that
        // serializes transactions refuses them while one is open.
        let existing_membership = match (loaded, &existing) {
            (Loaded::Social(_), Some(user)) => {
                let membership = auth
                    .membership_for(user, None)
                    .await
                    .map_err(SsoError::Auth)?;
                // A social provider is not the tenant's own: a tenant that
                // requires single sign-on is entered through its connection.
                if self
                    .inner
                    .store
                    .policy(membership.tenant_id)
                    .await?
                    .require_sso
                {
                    return Err(crate::Error::SsoRequired {
                        tenant_id: membership.tenant_id,
                    }
                    .into());
                }
                Some(membership)
            }
            _ => None,
        };
        let enterprise_tenant = match loaded {
            Loaded::Enterprise(connection) => {
                let tenant = backend.get_tenant(connection.tenant_id).await?;
                crate::service::ensure_active(&tenant).map_err(SsoError::Auth)?;
                let seats = auth
                    .directory()
                    .seat_limit(tenant.id)
                    .await
                    .map_err(|e| SsoError::Auth(e.into()))?;
                Some((tenant, seats))
            }
            Loaded::Social(_) => None,
        };
        let tx = auth.begin().await.map_err(SsoError::Auth)?;
        let mut user_created = false;
        let mut joined = false;
        let (user, membership) = match (loaded, existing, existing_membership, enterprise_tenant) {
            (Loaded::Social(_), Some(user), Some(membership), _) => (user, membership),
            (Loaded::Social(_), Some(_), None, _) => return Err(crate::Error::NotAMember.into()),
            (Loaded::Social(social), None, _, _) => {
                if !trusted {
                    return Err(SsoError::EmailNotVerified);
                }
                if !social.create_users {
                    return Err(SsoError::SignupNotAllowed);
                }
                match auth.config().registration {
                    RegistrationMode::Open => {}
                    RegistrationMode::InviteOnly => {
                        return Err(crate::Error::InvitationRequired.into());
                    }
                    RegistrationMode::Closed => return Err(crate::Error::RegistrationClosed.into()),
                }
                let new_user = NewUser {
                    email: email.clone(),
                    display_name: display_name.clone(),
                    email_verified: true,
                };
                let tenant_name = display_name
                    .as_ref()
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_else(|| email.as_str().split('@').next().unwrap_or("").to_owned());
                let tenant_name =
                    TenantName::new(&tenant_name).or_else(|_| TenantName::new("Personal"))?;
                let slug = Slug::new(format!("u-{}", &hex_of(&crate::secret::random_256())[..12]))?;
                let context = AuditContext {
                    actor: Actor::System,
                    ip: client.ip,
                    user_agent: client.user_agent.clone(),
                };
                let created = auth
                    .directory()
                    .create_tenant_in(
                        tx.core(),
                        NewTenant::new(slug, tenant_name),
                        Owner::New(new_user),
                        &context,
                    )
                    .await
                    .map_err(|e| SsoError::Auth(e.into()))?;
                user_created = true;
                (created.owner, created.membership)
            }
            (Loaded::Enterprise(_), _, _, None) => return Err(SsoError::UnknownConnection),
            (Loaded::Enterprise(connection), existing, _, Some((tenant, seats))) => {
                let user = match existing {
                    Some(user) => user,
                    None => {
                        if !trusted {
                            return Err(SsoError::EmailNotVerified);
                        }
                        if !connection.create_users {
                            return Err(SsoError::SignupNotAllowed);
                        }
                        let user = User {
                            id: UserId::new(),
                            email: email.clone(),
                            display_name: display_name.clone(),
                            email_verified: true,
                            status: UserStatus::Active,
                            created_at: now,
                            updated_at: now,
                        };
                        tx.core().insert_user(&user).await?;
                        user_created = true;
                        user
                    }
                };
                let membership = match tx.core().find_membership(tenant.id, user.id).await? {
                    Some(m) if m.status == MembershipStatus::Active => m,
                    Some(_) => return Err(crate::Error::NotAMember.into()),
                    None => {
                        // Counted under the tenant's lock, as invitations are.
                        tx.core().lock_tenant(tenant.id).await?;
                        auth.directory()
                            .ensure_seat_in(tx.core(), tenant.id, seats)
                            .await
                            .map_err(|e| SsoError::Auth(e.into()))?;
                        let membership = Membership {
                            id: MembershipId::new(),
                            tenant_id: tenant.id,
                            user_id: user.id,
                            roles: RoleSet::single(connection.default_role.clone()),
                            status: MembershipStatus::Active,
                            created_at: now,
                            updated_at: now,
                        };
                        tx.core().insert_membership(&membership).await?;
                        joined = true;
                        membership
                    }
                };
                (user, membership)
            }
        };
        let tenant_id = membership.tenant_id;
        let context = Auth::context(user.id, client);
        let target = ("user", user.id.to_string());
        let meta = json!({ "provider": provider_key, "subject": identity.subject });
        if user_created {
            auth.audit_in(
                tx.core(),
                tenant_id,
                &context,
                actions::USER_CREATED,
                target.clone(),
                meta.clone(),
            )
            .await
            .map_err(SsoError::Auth)?;
        }
        if link {
            auth.audit_in(
                tx.core(),
                tenant_id,
                &context,
                actions::IDENTITY_LINKED,
                target.clone(),
                meta.clone(),
            )
            .await
            .map_err(SsoError::Auth)?;
        }
        if joined {
            auth.audit_in(
                tx.core(),
                tenant_id,
                &context,
                actions::MEMBER_PROVISIONED,
                ("membership", membership.id.to_string()),
                json!({
                    "source": "sso",
                    "connection": provider_key,
                    "user_id": user.id,
                    "roles": membership.roles,
                    "user_created": user_created,
                }),
            )
            .await
            .map_err(SsoError::Auth)?;
        }
        auth.audit_in(
            tx.core(),
            tenant_id,
            &context,
            actions::SIGNED_IN,
            target,
            meta,
        )
        .await
        .map_err(SsoError::Auth)?;
        let opened = auth
            .open_session_in(&*tx, &user, &membership, client)
            .await
            .map_err(SsoError::Auth)?;
        tx.commit().await?;
        let login = auth.opened(opened);
        if matches!(loaded, Loaded::Enterprise(_)) {
            // Recorded before the tokens leave: without the record the
            // session could switch out of the tenant, so a failure here
            // fails the sign-in.
            self.inner
                .store
                .insert_sso_session(login.session.id, login.session.absolute_expires_at)
                .await?;
        }
        if joined {
            auth.directory().members_changed(tenant_id);
        }
        if linked_identity.is_none() {
            let record = ExternalIdentity {
                provider: provider_key.clone(),
                subject: identity.subject.clone(),
                user_id: user.id,
                created_at: now,
            };
            match self.inner.store.insert_identity(&record).await {
                Ok(()) | Err(SsoStoreError::IdentityTaken) => {}
                Err(error) => {
                    tracing::warn!(%error, "recording the linked identity failed; it is linked again by email next time");
                }
            }
        }
        Ok(SignedIn {
            login,
            return_to: None,
            provider: provider_key,
            user_created,
            linked: link,
            joined,
        })
    }

    async fn forget_identities(&self, tenant: TenantId, id: ConnectionId) -> Result<()> {
        let key = ConnectionRef::Enterprise {
            tenant_id: tenant,
            id,
        }
        .provider_key();
        self.inner.store.delete_provider_identities(&key).await?;
        Ok(())
    }

    /// Whether `user` holds a membership outside `connection`'s tenant, or
    /// roles in it beyond the connection's default role.
    async fn reaches_beyond(
        &self,
        user: UserId,
        connection: &EnterpriseConnection,
    ) -> Result<bool> {
        let backend = self.inner.auth.backend();
        let mut request = tenancy_core::PageRequest::first(tenancy_core::PageSize::MAX);
        loop {
            let page = tenancy_core::MembershipStore::list_user_tenants(&**backend, user, &request)
                .await?;
            for found in &page.items {
                let membership = &found.membership;
                if membership.tenant_id != connection.tenant_id
                    || membership
                        .roles
                        .as_slice()
                        .iter()
                        .any(|role| *role != connection.default_role)
                {
                    return Ok(true);
                }
            }
            match page.next {
                Some(cursor) => request = request.after(cursor),
                None => return Ok(false),
            }
        }
    }

    fn open_secret(&self, connection: &EnterpriseConnection) -> Result<ClientSecret> {
        let text = self.inner.auth.keys().sealer().open_text(
            &secret_context(connection.tenant_id, connection.id),
            connection.client_secret.as_stored(),
        )?;
        Ok(ClientSecret::new(text))
    }

    fn seal_secret(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        secret: &ClientSecret,
    ) -> Result<SealedSecret> {
        let sealed = self
            .inner
            .auth
            .keys()
            .sealer()
            .seal_text(&secret_context(tenant, id), secret.expose())?;
        Ok(SealedSecret::from_stored(sealed))
    }

    fn check_issuer(&self, issuer: &str) -> Result<()> {
        let url = Url::parse(issuer).map_err(|e| SsoError::InvalidInput {
            field: "issuer",
            reason: e.to_string(),
        })?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(SsoError::InvalidInput {
                field: "issuer",
                reason: "an issuer has no query or fragment".to_owned(),
            });
        }
        self.inner
            .config
            .network
            .check_url(&url)
            .map_err(SsoError::AddressRefused)
    }

    async fn audit(
        &self,
        tenant: TenantId,
        context: &AuditContext,
        action: &str,
        target: (&str, String),
        metadata: serde_json::Value,
    ) -> Result<()> {
        let event = NewAuditEvent::new(
            context,
            AuditAction::new(action)?,
            Target::new(target.0, target.1)?,
            Metadata::new(metadata)?,
            self.now(),
        );
        self.inner
            .auth
            .backend()
            .append_audit(tenant, event)
            .await?;
        Ok(())
    }

    /// Registers an enterprise connection for `tenant`; the secret is
    /// stored encrypted. Audited as `sso.connection_created`.
    pub async fn create_connection(
        &self,
        tenant: TenantId,
        new: NewEnterpriseConnection,
        context: &AuditContext,
    ) -> Result<EnterpriseConnection> {
        check_text("name", &new.name, 200)?;
        check_text("client_id", &new.client_id, 512)?;
        check_role(&new.default_role)?;
        self.check_issuer(&new.issuer)?;
        let id = ConnectionId::new();
        let now = self.now();
        let connection = EnterpriseConnection {
            id,
            tenant_id: tenant,
            name: new.name,
            issuer: new.issuer,
            client_id: new.client_id,
            client_secret: self.seal_secret(tenant, id, &new.client_secret)?,
            default_role: new.default_role,
            create_users: new.create_users,
            enabled: new.enabled,
            created_at: now,
            updated_at: now,
        };
        self.inner.store.insert_connection(&connection).await?;
        self.audit(
            tenant,
            context,
            actions::CONNECTION_CREATED,
            ("sso_connection", id.to_string()),
            json!({ "issuer": connection.issuer, "enabled": connection.enabled }),
        )
        .await?;
        Ok(connection)
    }

    /// The enterprise connections of `tenant`.
    pub async fn connections(&self, tenant: TenantId) -> Result<Vec<EnterpriseConnection>> {
        Ok(self.inner.store.list_connections(tenant).await?)
    }

    /// One enterprise connection of `tenant`.
    pub async fn connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<EnterpriseConnection> {
        self.inner
            .store
            .get_connection(tenant, id)
            .await?
            .ok_or(SsoError::Store(SsoStoreError::ConnectionNotFound))
    }

    /// Changes an enterprise connection. Audited as `sso.connection_updated`
    /// (naming the fields changed, never the secret).
    pub async fn update_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        update: ConnectionUpdate,
        context: &AuditContext,
    ) -> Result<EnterpriseConnection> {
        let mut connection = self.connection(tenant, id).await?;
        let mut changed = Vec::new();
        if let Some(name) = update.name {
            check_text("name", &name, 200)?;
            connection.name = name;
            changed.push("name");
        }
        if let Some(issuer) = update.issuer {
            self.check_issuer(&issuer)?;
            connection.issuer = issuer;
            changed.push("issuer");
        }
        if let Some(client_id) = update.client_id {
            check_text("client_id", &client_id, 512)?;
            connection.client_id = client_id;
            changed.push("client_id");
        }
        if let Some(secret) = update.client_secret {
            connection.client_secret = self.seal_secret(tenant, id, &secret)?;
            changed.push("client_secret");
        }
        if let Some(role) = update.default_role {
            check_role(&role)?;
            connection.default_role = role;
            changed.push("default_role");
        }
        if let Some(create) = update.create_users {
            connection.create_users = create;
            changed.push("create_users");
        }
        if let Some(enabled) = update.enabled {
            connection.enabled = enabled;
            changed.push("enabled");
        }
        connection.updated_at = self.now();
        if changed.contains(&"issuer") || changed.contains(&"client_id") {
            // Subjects are unique per issuer (and, for pairwise ones, per
            // client): links made through the old provider would sign in
            // whoever the new one gives the same `sub`. Forgotten first,
            // so a failure leaves no stale link behind.
            self.forget_identities(tenant, id).await?;
        }
        self.inner.store.update_connection(&connection).await?;
        self.audit(
            tenant,
            context,
            actions::CONNECTION_UPDATED,
            ("sso_connection", id.to_string()),
            json!({ "changed": changed }),
        )
        .await?;
        Ok(connection)
    }

    /// Deletes an enterprise connection. Audited as `sso.connection_deleted`.
    pub async fn delete_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        context: &AuditContext,
    ) -> Result<()> {
        self.connection(tenant, id).await?;
        self.forget_identities(tenant, id).await?;
        self.inner.store.delete_connection(tenant, id).await?;
        self.audit(
            tenant,
            context,
            actions::CONNECTION_DELETED,
            ("sso_connection", id.to_string()),
            json!({}),
        )
        .await
    }

    /// Claims `domain` for `tenant`, unverified, with a fresh TXT challenge.
    /// [`SsoStoreError::DomainTaken`] if any tenant holds it. Audited as
    /// `sso.domain_added`.
    pub async fn add_domain(
        &self,
        tenant: TenantId,
        domain: &str,
        context: &AuditContext,
    ) -> Result<EmailDomain> {
        let domain = DomainName::new(domain)?;
        if is_shared_domain(domain.as_str()) {
            return Err(SsoError::InvalidInput {
                field: "domain",
                reason:
                    "a public mail provider's or a public suffix's domain belongs to no one tenant"
                        .to_owned(),
            });
        }
        let now = self.now();
        let record = EmailDomain {
            tenant_id: tenant,
            domain: domain.clone(),
            verification_token: random_text(),
            verified_at: None,
            created_at: now,
        };
        match self.inner.store.insert_domain(&record).await {
            Ok(()) => {}
            Err(SsoStoreError::DomainTaken) => {
                // An unverified claim lapses: a tenant that never proved
                // it holds the domain does not block its owner for ever.
                let stale = self
                    .inner
                    .store
                    .find_domain(&domain)
                    .await?
                    .filter(|d| !d.is_verified() && d.created_at + UNVERIFIED_CLAIM_TTL <= now)
                    .ok_or(SsoError::Store(SsoStoreError::DomainTaken))?;
                self.inner
                    .store
                    .delete_domain(stale.tenant_id, &domain)
                    .await?;
                self.inner.store.insert_domain(&record).await?;
            }
            Err(other) => return Err(other.into()),
        }
        self.audit(
            tenant,
            context,
            actions::DOMAIN_ADDED,
            ("sso_domain", domain.to_string()),
            json!({}),
        )
        .await?;
        Ok(record)
    }

    /// The domains of `tenant`.
    pub async fn domains(&self, tenant: TenantId) -> Result<Vec<EmailDomain>> {
        Ok(self.inner.store.list_domains(tenant).await?)
    }

    /// Verifies a domain of `tenant` by its TXT record
    /// ([`EmailDomain::challenge_name`] holding
    /// [`EmailDomain::challenge_value`]). Audited as `sso.domain_verified`.
    ///
    /// Errors: [`SsoError::DomainNotVerified`] (no such record),
    /// [`SsoError::Dns`], [`SsoStoreError::DomainNotFound`].
    pub async fn verify_domain(
        &self,
        tenant: TenantId,
        domain: &str,
        context: &AuditContext,
    ) -> Result<EmailDomain> {
        let domain = DomainName::new(domain)?;
        let record = self
            .inner
            .store
            .list_domains(tenant)
            .await?
            .into_iter()
            .find(|d| d.domain == domain)
            .ok_or(SsoError::Store(SsoStoreError::DomainNotFound))?;
        if record.is_verified() {
            return Ok(record);
        }
        let records = self
            .inner
            .config
            .dns
            .txt(&record.challenge_name())
            .await
            .map_err(SsoError::Dns)?;
        let expected = record.challenge_value();
        if !records
            .iter()
            .any(|r| crate::secret::bytes_equal(r.trim().as_bytes(), expected.as_bytes()))
        {
            return Err(SsoError::DomainNotVerified);
        }
        self.mark_verified(tenant, &domain, context, "dns").await
    }

    /// Marks a domain of `tenant` verified without DNS: for operators who
    /// checked ownership another way. Audited as `sso.domain_verified`.
    pub async fn verify_domain_as_operator(
        &self,
        tenant: TenantId,
        domain: &str,
        context: &AuditContext,
    ) -> Result<EmailDomain> {
        let domain = DomainName::new(domain)?;
        self.mark_verified(tenant, &domain, context, "operator")
            .await
    }

    async fn mark_verified(
        &self,
        tenant: TenantId,
        domain: &DomainName,
        context: &AuditContext,
        method: &str,
    ) -> Result<EmailDomain> {
        let record = self
            .inner
            .store
            .verify_domain(tenant, domain, self.now())
            .await?;
        self.audit(
            tenant,
            context,
            actions::DOMAIN_VERIFIED,
            ("sso_domain", domain.to_string()),
            json!({ "method": method }),
        )
        .await?;
        Ok(record)
    }

    /// Releases a domain of `tenant`. Audited as `sso.domain_removed`.
    pub async fn remove_domain(
        &self,
        tenant: TenantId,
        domain: &str,
        context: &AuditContext,
    ) -> Result<()> {
        let domain = DomainName::new(domain)?;
        self.inner.store.delete_domain(tenant, &domain).await?;
        self.audit(
            tenant,
            context,
            actions::DOMAIN_REMOVED,
            ("sso_domain", domain.to_string()),
            json!({}),
        )
        .await
    }

    /// The SSO policy of `tenant`.
    pub async fn policy(&self, tenant: TenantId) -> Result<SsoPolicy> {
        Ok(self.inner.store.policy(tenant).await?)
    }

    /// Sets the SSO policy of `tenant`. Requiring SSO needs an enabled
    /// connection (else nobody could sign in). Audited as `sso.policy_changed`.
    pub async fn set_policy(
        &self,
        tenant: TenantId,
        policy: SsoPolicy,
        context: &AuditContext,
    ) -> Result<SsoPolicy> {
        if policy.require_sso
            && !self
                .inner
                .store
                .list_connections(tenant)
                .await?
                .iter()
                .any(|c| c.enabled)
        {
            return Err(SsoError::InvalidInput {
                field: "require_sso",
                reason: "the tenant has no enabled connection to sign in with".to_owned(),
            });
        }
        self.inner.store.set_policy(tenant, policy).await?;
        self.audit(
            tenant,
            context,
            actions::POLICY_CHANGED,
            ("tenant", tenant.to_string()),
            json!({ "require_sso": policy.require_sso }),
        )
        .await?;
        Ok(policy)
    }

    /// Deletes pending sign-ins past their expiry; returns how many.
    pub async fn purge_expired(&self) -> Result<u64> {
        Ok(self.inner.store.purge_states(self.now()).await?)
    }
}

/// How long an unverified domain claim blocks other tenants' claims.
pub(crate) const UNVERIFIED_CLAIM_TTL: time::Duration = time::Duration::days(7);

/// Domains no single tenant can own: public mail providers (their users
/// are everyone) and public suffixes (their subdomains are everyone's).
/// A built-in list of the common ones, not the full public suffix list.
const SHARED_DOMAINS: &[&str] = &[
    // Public mail providers.
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "ymail.com",
    "rocketmail.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "pm.me",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "mail.com",
    "mail.ru",
    "yandex.ru",
    "yandex.com",
    "qq.com",
    "163.com",
    "126.com",
    "zoho.com",
    "fastmail.com",
    "hey.com",
    "tutanota.com",
    "tuta.io",
    "hushmail.com",
    "mailinator.com",
    "yahoo.co.uk",
    "hotmail.co.uk",
    "outlook.fr",
    "hotmail.fr",
    "orange.fr",
    "free.fr",
    "laposte.net",
    "libero.it",
    "t-online.de",
    "naver.com",
    "daum.net",
    // Public suffixes of more than one label.
    "co.uk",
    "org.uk",
    "ac.uk",
    "gov.uk",
    "me.uk",
    "ltd.uk",
    "plc.uk",
    "com.au",
    "net.au",
    "org.au",
    "edu.au",
    "gov.au",
    "co.nz",
    "org.nz",
    "co.jp",
    "ne.jp",
    "or.jp",
    "ac.jp",
    "com.br",
    "net.br",
    "org.br",
    "com.cn",
    "net.cn",
    "org.cn",
    "com.mx",
    "co.in",
    "net.in",
    "org.in",
    "co.za",
    "org.za",
    "com.tr",
    "com.ar",
    "co.kr",
    "or.kr",
    "com.sg",
    "com.hk",
    "com.tw",
    "co.il",
    "co.id",
    "com.my",
    "com.ph",
    "com.vn",
    "com.pl",
    "com.es",
    "co.it",
    "github.io",
    "gitlab.io",
    "herokuapp.com",
    "vercel.app",
    "netlify.app",
    "pages.dev",
    "workers.dev",
    "blogspot.com",
    "appspot.com",
    "web.app",
    "firebaseapp.com",
    "cloudfront.net",
    "azurewebsites.net",
    "onrender.com",
    "fly.dev",
    "ngrok.io",
    "ngrok-free.app",
    "s3.amazonaws.com",
    "duckdns.org",
    "no-ip.org",
];

fn is_shared_domain(domain: &str) -> bool {
    SHARED_DOMAINS.contains(&domain)
}

fn enterprise_scopes() -> Vec<String> {
    vec![
        "openid".to_owned(),
        "email".to_owned(),
        "profile".to_owned(),
    ]
}

fn secret_context(tenant: TenantId, id: ConnectionId) -> String {
    format!("sso-connection:{tenant}:{id}")
}

/// RFC 9207: when the provider names itself in the callback, it must be
/// the issuer the sign-in went to (mix-up defence).
fn check_iss(iss: Option<&str>, expected: &str) -> Result<()> {
    match iss {
        Some(iss) if !same_issuer(iss, expected) => Err(SsoError::InvalidState),
        _ => Ok(()),
    }
}

fn check_text(field: &'static str, text: &str, max: usize) -> Result<()> {
    if text.trim().is_empty() || text.len() > max || text.chars().any(char::is_control) {
        return Err(SsoError::InvalidInput {
            field,
            reason: format!("1 to {max} printable characters"),
        });
    }
    Ok(())
}

/// Members created just in time are never owners: whoever controls the
/// provider would otherwise mint owners.
fn check_role(role: &RoleName) -> Result<()> {
    if *role == RoleName::OWNER {
        return Err(SsoError::InvalidInput {
            field: "default_role",
            reason: "members created by single sign-on cannot be owners".to_owned(),
        });
    }
    Ok(())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_debug_hides_the_code_and_binding() {
        let callback = Callback {
            state: "st".to_owned(),
            code: Some("the-code-value".to_owned()),
            error: None,
            iss: None,
            binding: Some("the-binding-value".to_owned()),
        };
        let shown = format!("{callback:?}");
        assert!(!shown.contains("the-code-value"), "{shown}");
        assert!(!shown.contains("the-binding-value"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn return_paths_stay_on_this_origin() {
        for ok in ["/", "/dashboard", "/a/b?c=d"] {
            assert!(check_return_to(ok).is_ok(), "{ok}");
        }
        for bad in [
            "//evil.example",
            "https://evil.example/",
            "/\\evil.example",
            "dashboard",
            "/a\nb",
        ] {
            assert!(check_return_to(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flow_secrets_depend_on_the_binding() {
        let a = flow_secrets("binding-a", "state");
        let b = flow_secrets("binding-b", "state");
        assert_ne!(a.pkce_verifier, b.pkce_verifier);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.nonce, a.pkce_verifier);
        assert_eq!(a.pkce_verifier.len(), 43);
    }

    #[test]
    fn a_different_iss_is_refused() {
        assert!(check_iss(None, "https://idp.example").is_ok());
        assert!(check_iss(Some("https://idp.example"), "https://idp.example").is_ok());
        assert!(check_iss(Some("https://idp.example/"), "https://idp.example").is_err());
        assert!(check_iss(Some("https://evil.example"), "https://idp.example").is_err());
    }
}
