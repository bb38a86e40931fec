//! [`OAuthProvider`]: the authorization server's workflows.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Digest as _;
use tenancy_core::{
    Actor, AuditContext, MembershipStore, Page, PageRequest, SessionId, TenantId, TenantStore,
    TokenHash, UserId, UserStore,
};
use time::{Duration, OffsetDateTime};

use super::error::{ClientError, OAuthError, OAuthErrorCode};
use super::store::OAuthStore;
use super::types::{
    AuthorizationCode, AuthorizationRequest, ClientId, ClientKind, ClientSecret, CodeRedemption,
    Consent, GrantType, Interaction, InteractionId, NewOAuthClient, OAuthClient, Prompt,
    RedirectUri, SessionGrant, is_oidc_scope, validate_scope,
};
use crate::keys::{KeyAlgorithm, KeyRing};
use crate::principal::{Principal, Subject};
use crate::secret::{SecretToken, bytes_equal, hashes_equal};
use crate::service::Auth;
use crate::session::{ClientInfo, OAUTH_REFRESH_PREFIX, RevokeReason};
use crate::token::AccessToken;

/// The audit actions of the authorization server.
pub mod actions {
    /// A client was registered.
    pub const CLIENT_REGISTERED: &str = "oauth_client.registered";
    /// A client's registration changed.
    pub const CLIENT_UPDATED: &str = "oauth_client.updated";
    /// A client was deleted (its grants ended).
    pub const CLIENT_DELETED: &str = "oauth_client.deleted";
    /// A client's secret was replaced.
    pub const CLIENT_SECRET_ROTATED: &str = "oauth_client.secret_rotated";
    /// A user consented to a client.
    pub const CONSENT_GRANTED: &str = "oauth.consent_granted";
    /// An authorization code was presented twice; what it issued was revoked.
    pub const CODE_REPLAYED: &str = "oauth.code_replayed";
}

const CODE_PREFIX: &str = "ac_";

/// Settings of the authorization server. Start from
/// [`ProviderConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderConfig {
    /// How long an authorization code lives (default 60 seconds).
    pub code_ttl: Duration,
    /// How long a pending authorization request waits for login and
    /// consent (default 10 minutes).
    pub interaction_ttl: Duration,
    /// How long an ID token is valid (default 1 hour).
    pub id_token_ttl: Duration,
    /// The algorithm of the ID-token key ring (default RS256, which OIDC
    /// Discovery requires every provider to support).
    pub id_token_algorithm: KeyAlgorithm,
    /// The base URL the endpoints are served under, when not the issuer
    /// (a `private_key_jwt` assertion's `aud` may name the issuer or the
    /// token, introspection or revocation endpoint as served).
    pub endpoint_base: Option<String>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            code_ttl: Duration::seconds(60),
            interaction_ttl: Duration::minutes(10),
            id_token_ttl: Duration::hours(1),
            id_token_algorithm: KeyAlgorithm::Rs256,
            endpoint_base: None,
        }
    }
}

impl ProviderConfig {
    /// Sets how long an authorization code lives.
    pub fn with_code_ttl(mut self, ttl: Duration) -> Self {
        self.code_ttl = ttl;
        self
    }

    /// Sets how long a pending authorization request waits.
    pub fn with_interaction_ttl(mut self, ttl: Duration) -> Self {
        self.interaction_ttl = ttl;
        self
    }

    /// Sets how long an ID token is valid.
    pub fn with_id_token_ttl(mut self, ttl: Duration) -> Self {
        self.id_token_ttl = ttl;
        self
    }
}

/// A user signed in at the provider (the SDK's browser session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignedIn {
    /// The user.
    pub user_id: UserId,
    /// The tenant of the browser session.
    pub tenant_id: TenantId,
    /// The browser session.
    pub session_id: SessionId,
    /// When the user authenticated (the session's start).
    pub auth_time: OffsetDateTime,
}

impl SignedIn {
    /// A signed-in user.
    pub fn new(
        user_id: UserId,
        tenant_id: TenantId,
        session_id: SessionId,
        auth_time: OffsetDateTime,
    ) -> Self {
        Self {
            user_id,
            tenant_id,
            session_id,
            auth_time,
        }
    }
}

/// What an authorization request needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthorizeStep {
    /// Show the login page for this interaction.
    Login(InteractionId),
    /// Show the consent page for this interaction.
    Consent(InteractionId),
    /// Send the browser to this URL (the client's redirect URI with a
    /// `code`, or an `error`, plus `state` and `iss`).
    Redirect(String),
}

/// An authorization request that cannot be answered at the client's
/// redirect URI (unknown client, redirect URI not registered): shown to
/// the user, never redirected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthorizeError {
    /// Show this error; do not redirect.
    Fatal(OAuthError),
    /// Redirect this URL (the error at the client's redirect URI).
    Redirect(String),
}

/// What a client presented to authenticate at the token, introspection or
/// revocation endpoint.
#[derive(Clone, Copy, Default)]
#[non_exhaustive]
pub struct ClientCredentials<'a> {
    /// The `Authorization` header, for `client_secret_basic`.
    pub authorization: Option<&'a str>,
    /// The body's `client_id`.
    pub client_id: Option<&'a str>,
    /// The body's `client_secret`, for `client_secret_post`.
    pub client_secret: Option<&'a str>,
    /// The body's `client_assertion_type`, for `private_key_jwt`.
    pub client_assertion_type: Option<&'a str>,
    /// The body's `client_assertion`, for `private_key_jwt`.
    pub client_assertion: Option<&'a str>,
}

/// Shows which credentials were presented, never their values.
impl std::fmt::Debug for ClientCredentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |v: Option<&str>| v.map(|_| "[redacted]");
        f.debug_struct("ClientCredentials")
            .field("authorization", &shown(self.authorization))
            .field("client_id", &self.client_id)
            .field("client_secret", &shown(self.client_secret))
            .field("client_assertion_type", &self.client_assertion_type)
            .field("client_assertion", &shown(self.client_assertion))
            .finish()
    }
}

/// A token endpoint answer (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Clone, Serialize)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The refresh token, when the client may refresh and `offline_access`
    /// was granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The ID token, when `openid` was granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The granted scopes, space-separated.
    pub scope: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// What `id_token_hint` told about the user logging out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdTokenHint {
    /// The user.
    pub user_id: UserId,
    /// The client it was issued to.
    pub client_id: ClientId,
    /// The session it was issued with.
    pub session_id: Option<SessionId>,
}

/// The authorization server: clients, the authorization-code flow with
/// PKCE, the `refresh_token` and `client_credentials` grants, ID tokens,
/// userinfo, introspection, revocation and logout, over the sessions and
/// refresh-token families of [`Auth`]. Cheap to clone.
#[derive(Clone)]
pub struct OAuthProvider {
    inner: Arc<Inner>,
}

struct Inner {
    auth: Auth,
    store: Arc<dyn OAuthStore>,
    id_keys: tokio::sync::OnceCell<KeyRing>,
    config: ProviderConfig,
    /// Machine clients recently read for their tokens' check, with when:
    /// forgotten on every change made through this provider, believed
    /// for [`CLIENT_CHECK_TTL`] otherwise (changes by another process).
    live_clients: quick_cache::sync::Cache<ClientId, (std::time::Instant, Arc<OAuthClient>)>,
}

/// How long a machine client read for its tokens' check is believed.
const CLIENT_CHECK_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl std::fmt::Debug for OAuthProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthProvider")
            .field("issuer", &self.issuer())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn scope_text(scopes: &[String]) -> String {
    scopes.join(" ")
}

/// Splits a `scope` parameter; duplicate values collapse.
fn parse_scopes(raw: &str) -> Result<Vec<String>, OAuthError> {
    let mut scopes: Vec<String> = Vec::new();
    for scope in raw.split(' ').filter(|s| !s.is_empty()) {
        validate_scope(scope).map_err(|_| OAuthError::invalid_scope("a scope is malformed"))?;
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    Ok(scopes)
}

/// `base` with `params` appended to its query.
fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(base) {
        Ok(mut url) => {
            {
                let mut pairs = url.query_pairs_mut();
                for (name, value) in params {
                    pairs.append_pair(name, value);
                }
            }
            url.to_string()
        }
        // Registered URIs always parse; a stored one that does not gets
        // no answer at all rather than a malformed one.
        Err(_) => String::new(),
    }
}

/// Whether `text` is a PKCE code verifier or challenge: 43 to 128
/// characters of `A-Z a-z 0-9 - . _ ~` (RFC 7636 §4.1, §4.2).
fn pkce_shaped(text: &str) -> bool {
    (43..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The S256 challenge of `verifier`.
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// `at_hash` (OIDC Core §3.1.3.6): the left half of the hash of the access
/// token, with the hash of the ID token's algorithm.
fn at_hash(algorithm: KeyAlgorithm, access_token: &str) -> String {
    let digest: Vec<u8> = match algorithm {
        KeyAlgorithm::EdDsa => sha2::Sha512::digest(access_token.as_bytes()).to_vec(),
        _ => sha2::Sha256::digest(access_token.as_bytes()).to_vec(),
    };
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

#[derive(Serialize, Deserialize)]
struct IdClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    azp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl OAuthProvider {
    /// The provider over `auth` (whose token issuer is the OAuth issuer)
    /// and `store`. Its ID-token key ring is loaded (or its first key
    /// created) on first use.
    pub fn new(auth: Auth, store: Arc<dyn OAuthStore>, config: ProviderConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                auth,
                store,
                id_keys: tokio::sync::OnceCell::new(),
                config,
                live_clients: quick_cache::sync::Cache::new(10_000),
            }),
        }
    }

    /// The ID-token key ring (its public keys are in [`OAuthProvider::jwks`]),
    /// loaded on first use.
    pub async fn id_token_keys(&self) -> Result<&KeyRing, crate::KeyError> {
        let inner = &self.inner;
        inner
            .id_keys
            .get_or_try_init(|| {
                KeyRing::load(
                    inner.store.id_token_keys(),
                    inner.config.id_token_algorithm,
                    &inner.auth.config().key_encryption,
                    inner.auth.current_time(),
                )
            })
            .await
    }

    /// The issuer (`iss`): the access tokens' issuer.
    pub fn issuer(&self) -> &str {
        &self.inner.auth.config().tokens.issuer
    }

    /// The identity service the provider signs users in with.
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn OAuthStore> {
        &self.inner.store
    }

    /// The settings.
    pub fn config(&self) -> &ProviderConfig {
        &self.inner.config
    }

    /// The public keys of both rings (access tokens and ID tokens), as one
    /// JWKS document.
    pub async fn jwks(&self) -> Result<Value, crate::KeyError> {
        let id_keys = self.id_token_keys().await?;
        let mut keys = Vec::new();
        for ring in [self.inner.auth.keys().jwks(), id_keys.jwks()] {
            if let Some(Value::Array(found)) = ring.get("keys") {
                for key in found {
                    if !keys.contains(key) {
                        keys.push(key.clone());
                    }
                }
            }
        }
        Ok(json!({ "keys": keys }))
    }

    /// The algorithms ID tokens can be signed with: the ID-token ring's
    /// and the access-token ring's (HS256 never).
    pub fn id_token_algorithms(&self) -> Vec<KeyAlgorithm> {
        let mut algorithms = vec![self.inner.config.id_token_algorithm];
        let access = self.inner.auth.config().algorithm;
        if access != KeyAlgorithm::Hs256 && !algorithms.contains(&access) {
            algorithms.push(access);
        }
        algorithms
    }

    fn now(&self) -> OffsetDateTime {
        self.inner.auth.current_time()
    }

    // ------------------------------------------------------------ clients

    fn validate(&self, new: &NewOAuthClient) -> Result<NewOAuthClient, ClientError> {
        let mut new = new.clone();
        new.name = new.name.trim().to_owned();
        let len = new.name.chars().count();
        if len == 0 || len > 200 {
            return Err(ClientError::invalid("name", "must be 1 to 200 characters"));
        }
        if new.name.chars().any(char::is_control) {
            return Err(ClientError::invalid(
                "name",
                "must not contain control characters",
            ));
        }
        if new.grant_types.is_empty() {
            new.grant_types = vec![GrantType::AuthorizationCode];
        }
        new.grant_types.sort();
        new.grant_types.dedup();
        if new.kind == ClientKind::Public && new.grant_types.contains(&GrantType::ClientCredentials)
        {
            return Err(ClientError::invalid(
                "grant_types",
                "a public client cannot use client_credentials",
            ));
        }
        if new.grant_types.contains(&GrantType::AuthorizationCode) && new.redirect_uris.is_empty() {
            return Err(ClientError::invalid(
                "redirect_uris",
                "the authorization_code grant needs at least one redirect uri",
            ));
        }
        if new.redirect_uris.len() > 20 || new.post_logout_redirect_uris.len() > 20 {
            return Err(ClientError::invalid(
                "redirect_uris",
                "at most 20 redirect uris",
            ));
        }
        new.redirect_uris.dedup();
        new.post_logout_redirect_uris.dedup();
        let mut scopes: Vec<String> = Vec::new();
        for (i, scope) in new.scopes.iter().enumerate() {
            validate_scope(scope)
                .map_err(|e| ClientError::invalid(format!("scopes[{i}]"), e.to_string()))?;
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
        if scopes.len() > 100 {
            return Err(ClientError::invalid("scopes", "at most 100 scopes"));
        }
        new.scopes = scopes;
        if let Some(jwks) = &new.jwks {
            if new.kind != ClientKind::Confidential {
                return Err(ClientError::invalid(
                    "jwks",
                    "only a confidential client authenticates with keys",
                ));
            }
            let keys = jwks.get("keys").and_then(Value::as_array);
            let usable = keys.is_some_and(|keys| {
                !keys.is_empty()
                    && keys.len() <= 10
                    && keys.iter().all(|key| {
                        serde_json::from_value::<jsonwebtoken::jwk::Jwk>(key.clone())
                            .ok()
                            .and_then(|jwk| jsonwebtoken::DecodingKey::from_jwk(&jwk).ok())
                            .is_some()
                            && key.get("d").is_none()
                            && key.get("k").is_none()
                    })
            });
            if !usable {
                return Err(ClientError::invalid(
                    "jwks",
                    "must be a JWKS of 1 to 10 public RSA, EC or Ed25519 keys",
                ));
            }
        }
        if let Some(alg) = new.id_token_signed_response_alg
            && !self.id_token_algorithms().contains(&alg)
        {
            return Err(ClientError::invalid(
                "id_token_signed_response_alg",
                "not a supported algorithm",
            ));
        }
        Ok(new)
    }

    async fn ensure_tenant_active(&self, tenant: Option<TenantId>) -> Result<(), ClientError> {
        if let Some(tenant) = tenant {
            let found = self
                .inner
                .auth
                .backend()
                .get_tenant(tenant)
                .await
                .map_err(ClientError::Store)?;
            if found.status != tenancy_core::TenantStatus::Active {
                return Err(ClientError::Auth(crate::Error::TenantNotActive {
                    status: found.status,
                }));
            }
        }
        Ok(())
    }

    /// Writes a client change with its audit event: in the tenant's log
    /// and the same transaction for a tenant's client; a global client's
    /// changes go to the application log.
    async fn audited<T>(
        &self,
        tenant: Option<TenantId>,
        actor: Actor,
        action: &str,
        client: &ClientId,
        metadata: Value,
        write: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let Some(tenant) = tenant else {
            let done = write.await?;
            tracing::info!(action, client_id = %client, actor = %actor, "global oauth client changed");
            return Ok(done);
        };
        let auth = &self.inner.auth;
        let tx = auth.begin_audited().await?;
        auth.audit_within(
            tx.core(),
            tenant,
            &AuditContext::new(actor),
            action,
            ("oauth_client", client.to_string()),
            metadata,
        )
        .await?;
        let done = write.await?;
        tx.commit().await.map_err(crate::Error::from)?;
        Ok(done)
    }

    /// Registers a client in `tenant` (or a global one for `None`). A
    /// confidential client's secret is returned here only.
    ///
    /// Errors: [`ClientError::InvalidInput`] naming the field;
    /// [`ClientError::Auth`] if the tenant is not active.
    pub async fn register_client(
        &self,
        tenant: Option<TenantId>,
        new: NewOAuthClient,
        actor: Actor,
    ) -> Result<(OAuthClient, Option<ClientSecret>), ClientError> {
        let new = self.validate(&new)?;
        self.ensure_tenant_active(tenant).await?;
        let now = self.now();
        let secret = (new.kind == ClientKind::Confidential).then(ClientSecret::generate);
        let client = OAuthClient {
            id: ClientId::new(),
            tenant_id: tenant,
            name: new.name,
            kind: new.kind,
            redirect_uris: new.redirect_uris,
            post_logout_redirect_uris: new.post_logout_redirect_uris,
            grant_types: new.grant_types,
            scopes: new.scopes,
            first_party: new.first_party,
            id_token_signed_response_alg: new
                .id_token_signed_response_alg
                .unwrap_or(self.inner.config.id_token_algorithm),
            secret_hash: secret.as_ref().map(ClientSecret::hash),
            jwks: new.jwks,
            created_by: actor,
            created_at: now,
            updated_at: now,
        };
        let metadata =
            json!({ "name": client.name, "kind": client.kind.as_str(), "scopes": client.scopes });
        let store = self.inner.store.clone();
        self.audited(
            tenant,
            actor,
            actions::CLIENT_REGISTERED,
            &client.id,
            metadata,
            async {
                store
                    .insert_client(&client)
                    .await
                    .map_err(ClientError::Store)
            },
        )
        .await?;
        Ok((client, secret))
    }

    /// A client of `tenant` (or a global one for `None`).
    pub async fn get_client(
        &self,
        tenant: Option<TenantId>,
        id: &ClientId,
    ) -> Result<OAuthClient, ClientError> {
        let client = self.inner.store.get_client(id).await?;
        if client.tenant_id != tenant {
            return Err(ClientError::NotFound);
        }
        Ok(client)
    }

    /// The clients of `tenant` (or the global ones for `None`), oldest first.
    pub async fn list_clients(
        &self,
        tenant: Option<TenantId>,
        page: &PageRequest,
    ) -> Result<Page<OAuthClient>, ClientError> {
        Ok(self.inner.store.list_clients(tenant, page).await?)
    }

    /// Replaces a client's registration (its kind and secret stay).
    pub async fn update_client(
        &self,
        tenant: Option<TenantId>,
        id: &ClientId,
        update: NewOAuthClient,
        actor: Actor,
    ) -> Result<OAuthClient, ClientError> {
        let current = self.get_client(tenant, id).await?;
        let mut update = update;
        update.kind = current.kind;
        let update = self.validate(&update)?;
        let mut client = current.clone();
        client.name = update.name;
        client.redirect_uris = update.redirect_uris;
        client.post_logout_redirect_uris = update.post_logout_redirect_uris;
        client.grant_types = update.grant_types;
        client.scopes = update.scopes;
        client.first_party = update.first_party;
        client.jwks = update.jwks;
        client.id_token_signed_response_alg = update
            .id_token_signed_response_alg
            .unwrap_or(current.id_token_signed_response_alg);
        client.updated_at = self.now();
        // Whoever changes a client answers for it from now on: a machine
        // client's powers are its registrant's roles capped by its scopes,
        // so keeping the original registrant would let a lesser member
        // borrow a greater one's roles by widening the client.
        client.created_by = actor;
        let metadata = json!({ "name": client.name, "scopes": client.scopes });
        let store = self.inner.store.clone();
        self.audited(
            tenant,
            actor,
            actions::CLIENT_UPDATED,
            id,
            metadata,
            async {
                store
                    .update_client(&client)
                    .await
                    .map_err(ClientError::from)
            },
        )
        .await?;
        self.inner.live_clients.remove(id);
        Ok(client)
    }

    /// Deletes a client: its consents and codes go, and every session its
    /// grants rode on ends.
    pub async fn delete_client(
        &self,
        tenant: Option<TenantId>,
        id: &ClientId,
        actor: Actor,
    ) -> Result<(), ClientError> {
        let current = self.get_client(tenant, id).await?;
        let store = self.inner.store.clone();
        let sessions = self
            .audited(
                tenant,
                actor,
                actions::CLIENT_DELETED,
                id,
                json!({ "name": current.name }),
                async {
                    store
                        .delete_client(tenant, id)
                        .await
                        .map_err(ClientError::from)
                },
            )
            .await?;
        self.inner.live_clients.remove(id);
        for session in sessions {
            if let Err(error) = self
                .inner
                .auth
                .end_session_by_id(session, RevokeReason::Revoked)
                .await
            {
                tracing::warn!(%error, %session, "ending a deleted client's session failed");
            }
        }
        Ok(())
    }

    /// Replaces a confidential client's secret; the old one stops working
    /// at once. The new secret is returned here only.
    pub async fn rotate_client_secret(
        &self,
        tenant: Option<TenantId>,
        id: &ClientId,
        actor: Actor,
    ) -> Result<ClientSecret, ClientError> {
        let mut client = self.get_client(tenant, id).await?;
        if client.kind != ClientKind::Confidential {
            return Err(ClientError::PublicClient);
        }
        let secret = ClientSecret::generate();
        client.secret_hash = Some(secret.hash());
        client.updated_at = self.now();
        // The rotating member answers for the client from now on (see
        // `update_client`); tokens issued before now stop working.
        client.created_by = actor;
        let store = self.inner.store.clone();
        self.audited(
            tenant,
            actor,
            actions::CLIENT_SECRET_ROTATED,
            id,
            json!({}),
            async {
                store
                    .set_client_secret(&client)
                    .await
                    .map_err(ClientError::from)
            },
        )
        .await?;
        self.inner.live_clients.remove(id);
        Ok(secret)
    }

    // ------------------------------------------------------------ client authentication

    /// Authenticates the client calling the token, introspection or
    /// revocation endpoint: `client_secret_basic` (RFC 6749 §2.3.1, id and
    /// secret form-urlencoded inside the Basic credentials),
    /// `client_secret_post`, or `none` for a public client (its
    /// `client_id` alone). One method per request; secrets compared in
    /// constant time.
    pub async fn authenticate_client(
        &self,
        presented: ClientCredentials<'_>,
    ) -> Result<OAuthClient, OAuthError> {
        if let Some(assertion) = presented.client_assertion {
            if presented.authorization.is_some() || presented.client_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method",
                ));
            }
            return self
                .authenticate_assertion(
                    presented.client_id,
                    presented.client_assertion_type,
                    assertion,
                )
                .await;
        }
        let basic = match presented.authorization {
            Some(header) => Some(parse_basic(header).ok_or_else(OAuthError::invalid_client)?),
            None => None,
        };
        let (id, secret) = match (basic, presented.client_secret) {
            (Some(_), Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method",
                ));
            }
            (Some((id, secret)), None) => {
                if presented.client_id.is_some_and(|body| body != id) {
                    return Err(OAuthError::invalid_request(
                        "client_id differs from the authenticated client",
                    ));
                }
                (id, Some(secret))
            }
            (None, secret) => {
                let id = presented
                    .client_id
                    .ok_or_else(OAuthError::invalid_client)?
                    .to_owned();
                (id, secret.map(str::to_owned))
            }
        };
        let presented_hash = secret.as_deref().map(|s| TokenHash::of(s.as_bytes()));
        let client = match id.parse::<ClientId>() {
            Ok(id) => match self.inner.store.get_client(&id).await {
                Ok(client) => Some(client),
                Err(tenancy_core::StoreError::NotFound(_)) => None,
                Err(other) => return Err(OAuthError::server(&other)),
            },
            Err(_) => None,
        };
        let Some(client) = client else {
            return Err(OAuthError::invalid_client());
        };
        match (client.kind, &client.secret_hash, presented_hash) {
            (ClientKind::Confidential, Some(stored), Some(presented))
                if hashes_equal(stored, &presented) =>
            {
                Ok(client)
            }
            (ClientKind::Public, _, None) => Ok(client),
            _ => Err(OAuthError::invalid_client()),
        }
    }

    /// `private_key_jwt` (RFC 7523 §2.2, §3; OIDC Core §9): a JWT signed
    /// with one of the client's registered keys, `iss` and `sub` its
    /// `client_id`, `aud` the issuer or one of its `/oauth/` endpoints,
    /// expiring within 10 minutes, its `jti` used once.
    async fn authenticate_assertion(
        &self,
        client_id: Option<&str>,
        assertion_type: Option<&str>,
        assertion: &str,
    ) -> Result<OAuthClient, OAuthError> {
        const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
        if assertion_type != Some(JWT_BEARER) {
            return Err(OAuthError::invalid_request(
                "client_assertion_type must be the JWT bearer type",
            ));
        }
        let invalid = OAuthError::invalid_client;
        if assertion.len() > 8 * 1024 {
            return Err(invalid());
        }
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| invalid())?;
        let unverified = payload(assertion).ok_or_else(invalid)?;
        let claimed = unverified
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(invalid)?;
        if client_id.is_some_and(|id| id != claimed) {
            return Err(invalid());
        }
        let client = self.find_client(claimed).await?.ok_or_else(invalid)?;
        let (ClientKind::Confidential, Some(jwks)) = (client.kind, &client.jwks) else {
            return Err(invalid());
        };
        let keys: Vec<jsonwebtoken::jwk::Jwk> = jwks
            .get("keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| serde_json::from_value(k.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        let key = match &header.kid {
            Some(kid) => keys
                .iter()
                .find(|k| k.common.key_id.as_deref() == Some(kid.as_str())),
            None if keys.len() == 1 => keys.first(),
            None => None,
        }
        .ok_or_else(invalid)?;
        use jsonwebtoken::Algorithm as A;
        if !matches!(header.alg, A::RS256 | A::ES256 | A::EdDSA | A::PS256) {
            return Err(invalid());
        }
        // RSA keys under 2048 bits are refused (NIST SP 800-131A).
        if let jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) = &key.algorithm {
            let modulus = URL_SAFE_NO_PAD.decode(&rsa.n).map_err(|_| invalid())?;
            let bits = modulus
                .iter()
                .position(|b| *b != 0)
                .map_or(0, |first| (modulus.len() - first) * 8);
            if bits < 2048 {
                return Err(invalid());
            }
        }
        let decoding = jsonwebtoken::DecodingKey::from_jwk(key).map_err(|_| invalid())?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.validate_aud = false;
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.set_issuer(&[client.id.as_str()]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(assertion, &decoding, &validation)
            .map_err(|_| invalid())?
            .claims;
        // The audience is this server: its issuer, or exactly one of the
        // endpoints that authenticate clients, as served.
        let issuer = self.issuer().trim_end_matches('/');
        let base = self
            .inner
            .config
            .endpoint_base
            .as_deref()
            .unwrap_or(issuer)
            .trim_end_matches('/');
        let audience_ok = |aud: &str| {
            aud == issuer
                || aud == self.issuer()
                || ["/oauth/token", "/oauth/introspect", "/oauth/revoke"]
                    .iter()
                    .any(|path| aud.strip_prefix(base) == Some(*path))
        };
        let aud_ok = match claims.get("aud") {
            Some(Value::String(aud)) => audience_ok(aud),
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(audience_ok),
            _ => false,
        };
        let now = self.now();
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(invalid)?;
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .ok_or_else(invalid)?;
        if !aud_ok
            || exp > (now + Duration::minutes(10)).unix_timestamp()
            || jti.is_empty()
            || jti.len() > 256
        {
            return Err(invalid());
        }
        let expires_at = OffsetDateTime::from_unix_timestamp(exp).map_err(|_| invalid())?;
        let fresh = self
            .inner
            .store
            .use_assertion(&client.id, jti, expires_at + Duration::seconds(30))
            .await
            .map_err(|e| OAuthError::server(&e))?;
        if !fresh {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidClient,
                "the client assertion was already used",
            ));
        }
        Ok(client)
    }

    // ------------------------------------------------------------ authorization

    /// The user of a first-party browser session (the SDK's access-token
    /// cookie), with when they authenticated; `None` for any other caller
    /// (an API key, an OAuth client's token, a session that is gone).
    pub async fn signed_in(&self, principal: &Principal) -> Result<Option<SignedIn>, OAuthError> {
        let (Subject::User(user), Some(session), None) =
            (principal.subject, principal.session_id, &principal.oauth)
        else {
            return Ok(None);
        };
        match self.inner.auth.auth_store().get_session(session).await {
            Ok(found) if found.is_live_at(self.now()) => Ok(Some(SignedIn::new(
                user,
                principal.tenant_id,
                found.id,
                found.created_at,
            ))),
            Ok(_) | Err(tenancy_core::StoreError::NotFound(_)) => Ok(None),
            Err(other) => Err(OAuthError::server(&other)),
        }
    }

    /// Validates an authorization request's parameters (RFC 6749 §4.1.1,
    /// RFC 7636, OIDC Core §3.1.2.1). `params` holds every value of each
    /// parameter, so repeated parameters are refused.
    pub async fn validate_authorization_request(
        &self,
        params: &HashMap<String, Vec<String>>,
    ) -> Result<(OAuthClient, AuthorizationRequest), AuthorizeError> {
        let fatal = |d: &'static str| AuthorizeError::Fatal(OAuthError::invalid_request(d));
        let single = |name: &str| -> Result<Option<&str>, ()> {
            match params.get(name).map(Vec::as_slice) {
                None | Some([]) => Ok(None),
                Some([one]) if one.is_empty() => Ok(None),
                Some([one]) => Ok(Some(one.as_str())),
                Some(_) => Err(()),
            }
        };
        let client_id = single("client_id")
            .map_err(|()| fatal("client_id is repeated"))?
            .ok_or_else(|| fatal("client_id is required"))?;
        let client = match client_id.parse::<ClientId>() {
            Ok(id) => match self.inner.store.get_client(&id).await {
                Ok(client) => client,
                Err(tenancy_core::StoreError::NotFound(_)) => {
                    return Err(fatal("unknown client_id"));
                }
                Err(other) => return Err(AuthorizeError::Fatal(OAuthError::server(&other))),
            },
            Err(_) => return Err(fatal("unknown client_id")),
        };
        let presented = single("redirect_uri").map_err(|()| fatal("redirect_uri is repeated"))?;
        let redirect_uri = match presented {
            Some(uri) => match client.redirect_uri(uri) {
                Some(_) => uri.to_owned(),
                None => return Err(fatal("redirect_uri is not registered for this client")),
            },
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].to_string(),
            None => return Err(fatal("redirect_uri is required")),
        };
        let state = single("state").ok().flatten().map(str::to_owned);
        let issuer = self.issuer().to_owned();
        let redirect_error = |error: OAuthError| {
            let mut query = vec![
                ("error", error.code.as_str()),
                ("error_description", error.description.as_ref()),
            ];
            if let Some(state) = &state {
                query.push(("state", state));
            }
            query.push(("iss", &issuer));
            AuthorizeError::Redirect(with_query(&redirect_uri, &query))
        };
        for name in [
            "response_type",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "prompt",
            "max_age",
            "login_hint",
            "response_mode",
        ] {
            if single(name).is_err() {
                return Err(redirect_error(OAuthError::invalid_request(format!(
                    "{name} is repeated"
                ))));
            }
        }
        let get = |name: &str| single(name).ok().flatten();
        if params.contains_key("request") {
            return Err(redirect_error(OAuthError::new(
                OAuthErrorCode::RequestNotSupported,
                "request objects are not supported",
            )));
        }
        if params.contains_key("request_uri") {
            return Err(redirect_error(OAuthError::new(
                OAuthErrorCode::RequestUriNotSupported,
                "request_uri is not supported",
            )));
        }
        match get("response_type") {
            Some("code") => {}
            None => {
                return Err(redirect_error(OAuthError::invalid_request(
                    "response_type is required",
                )));
            }
            Some(_) => {
                return Err(redirect_error(OAuthError::new(
                    OAuthErrorCode::UnsupportedResponseType,
                    "only the code response type is supported",
                )));
            }
        }
        if get("response_mode").is_some_and(|mode| mode != "query") {
            return Err(redirect_error(OAuthError::invalid_request(
                "only the query response mode is supported",
            )));
        }
        if !client.allows_grant(GrantType::AuthorizationCode) {
            return Err(redirect_error(OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                "the client may not use the authorization code grant",
            )));
        }
        let scopes = parse_scopes(get("scope").unwrap_or("")).map_err(redirect_error)?;
        if scopes.is_empty() {
            return Err(redirect_error(OAuthError::invalid_scope(
                "scope is required",
            )));
        }
        if let Some(scope) = scopes.iter().find(|scope| !client.allows_scope(scope)) {
            return Err(redirect_error(OAuthError::invalid_scope(format!(
                "the client may not ask for {scope}"
            ))));
        }
        if scopes.iter().any(|s| s == "openid") && presented.is_none() {
            return Err(fatal("redirect_uri is required"));
        }
        let code_challenge = get("code_challenge").map(str::to_owned);
        match (&code_challenge, get("code_challenge_method")) {
            (None, None) if client.kind == ClientKind::Public => {
                return Err(redirect_error(OAuthError::invalid_request(
                    "PKCE (code_challenge with S256) is required for public clients",
                )));
            }
            (None, None) => {}
            (None, Some(_)) => {
                return Err(redirect_error(OAuthError::invalid_request(
                    "code_challenge_method without code_challenge",
                )));
            }
            (Some(challenge), Some("S256")) if pkce_shaped(challenge) => {}
            (Some(_), Some("S256")) => {
                return Err(redirect_error(OAuthError::invalid_request(
                    "code_challenge is malformed",
                )));
            }
            (Some(_), _) => {
                return Err(redirect_error(OAuthError::invalid_request(
                    "code_challenge_method must be S256",
                )));
            }
        }
        let mut prompt = Prompt::default();
        for value in get("prompt")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
        {
            match value {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                "consent" => prompt.consent = true,
                "select_account" => {}
                _ => {
                    return Err(redirect_error(OAuthError::invalid_request(
                        "unsupported prompt value",
                    )));
                }
            }
        }
        if prompt.none && (prompt.login || prompt.consent) {
            return Err(redirect_error(OAuthError::invalid_request(
                "prompt=none cannot be combined with other values",
            )));
        }
        let max_age = match get("max_age") {
            None => None,
            Some(text) => match text.parse::<i64>() {
                Ok(age) if age >= 0 => Some(age),
                _ => {
                    return Err(redirect_error(OAuthError::invalid_request(
                        "max_age must be a non-negative integer",
                    )));
                }
            },
        };
        let bounded = |name: &'static str| -> Result<Option<String>, AuthorizeError> {
            match get(name) {
                Some(value) if value.len() > 1024 => Err(redirect_error(
                    OAuthError::invalid_request(format!("{name} is too long")),
                )),
                other => Ok(other.map(str::to_owned)),
            }
        };
        let nonce = bounded("nonce")?;
        let login_hint = bounded("login_hint")?;
        if state.as_ref().is_some_and(|s| s.len() > 2048) {
            return Err(fatal("state is too long"));
        }
        let request = AuthorizationRequest {
            client_id: client.id.clone(),
            redirect_uri,
            redirect_uri_presented: presented.is_some(),
            scopes,
            state,
            nonce,
            code_challenge,
            prompt,
            max_age,
            login_hint,
        };
        Ok((client, request))
    }

    /// A redirect of `error` to the request's client.
    pub fn error_redirect(&self, request: &AuthorizationRequest, error: &OAuthError) -> String {
        let mut query = vec![
            ("error", error.code.as_str()),
            ("error_description", error.description.as_ref()),
        ];
        if let Some(state) = &request.state {
            query.push(("state", state));
        }
        query.push(("iss", self.issuer()));
        with_query(&request.redirect_uri, &query)
    }

    /// Stores a pending request for the login or consent page.
    pub async fn begin_interaction(
        &self,
        request: AuthorizationRequest,
    ) -> Result<Interaction, OAuthError> {
        let now = self.now();
        let interaction = Interaction {
            id: InteractionId::generate(),
            request,
            logged_in: None,
            consent_user: None,
            created_at: now,
            expires_at: now + self.inner.config.interaction_ttl,
        };
        self.inner
            .store
            .insert_interaction(&interaction)
            .await
            .map_err(|e| OAuthError::server(&e))?;
        Ok(interaction)
    }

    /// A pending request, if it exists and has not expired.
    pub async fn interaction(&self, id: &InteractionId) -> Result<Option<Interaction>, OAuthError> {
        self.inner
            .store
            .get_interaction(id, self.now())
            .await
            .map_err(|e| OAuthError::server(&e))
    }

    /// Records that the user logged in through `interaction`'s login page
    /// (with session `session`): `prompt=login` and `max_age` are met.
    pub async fn logged_in(
        &self,
        interaction: &InteractionId,
        session: SessionId,
    ) -> Result<(), OAuthError> {
        if let Some(mut found) = self.interaction(interaction).await? {
            found.logged_in = Some((session, self.now()));
            self.inner
                .store
                .update_interaction(&found)
                .await
                .map_err(|e| OAuthError::server(&e))?;
        }
        Ok(())
    }

    /// Decides the next step of a validated request (`interaction` when it
    /// is resumed after a page): the login page (no user, `prompt=login`,
    /// `max_age` exceeded), the consent page (not remembered, or
    /// `prompt=consent`, for a client that is not first-party), or the
    /// redirect with a code; with `prompt=none`, an error instead of a page.
    pub async fn authorize(
        &self,
        client: &OAuthClient,
        request: AuthorizationRequest,
        interaction: Option<Interaction>,
        signed_in: Option<SignedIn>,
    ) -> Result<AuthorizeStep, OAuthError> {
        let now = self.now();
        let logged_in_here = interaction
            .as_ref()
            .and_then(|i| i.logged_in)
            .zip(signed_in)
            .is_some_and(|((session, _), user)| session == user.session_id);
        let needs_login = match signed_in {
            None => true,
            Some(user) => {
                !logged_in_here
                    && (request.prompt.login
                        || request
                            .max_age
                            .is_some_and(|age| (now - user.auth_time).whole_seconds() > age))
            }
        };
        if needs_login {
            if request.prompt.none {
                return self
                    .finish_with_error(
                        &request,
                        interaction,
                        OAuthError::new(OAuthErrorCode::LoginRequired, "the user must sign in"),
                    )
                    .await;
            }
            let interaction = match interaction {
                Some(interaction) => interaction,
                None => self.begin_interaction(request).await?,
            };
            return Ok(AuthorizeStep::Login(interaction.id));
        }
        let Some(user) = signed_in else {
            return Err(OAuthError::new(OAuthErrorCode::ServerError, "no user"));
        };
        let tenant = client.tenant_id.unwrap_or(user.tenant_id);
        if let Err(error) = self.inner.auth.member_of(user.user_id, tenant).await {
            let refused = match error {
                crate::Error::NotAMember
                | crate::Error::AccountDisabled
                | crate::Error::TenantNotActive { .. } => OAuthError::new(
                    OAuthErrorCode::AccessDenied,
                    "the user may not use this client",
                ),
                other => OAuthError::from_auth(other),
            };
            return self.finish_with_error(&request, interaction, refused).await;
        }
        let remembered = self
            .inner
            .store
            .find_consent(user.user_id, &client.id, tenant)
            .await
            .map_err(|e| OAuthError::server(&e))?;
        let needs_consent = !client.first_party
            && (request.prompt.consent
                || !remembered.is_some_and(|consent| consent.covers(&request.scopes)));
        if needs_consent {
            if request.prompt.none {
                return self
                    .finish_with_error(
                        &request,
                        interaction,
                        OAuthError::new(OAuthErrorCode::ConsentRequired, "the user must consent"),
                    )
                    .await;
            }
            let mut interaction = match interaction {
                Some(interaction) => interaction,
                None => self.begin_interaction(request).await?,
            };
            interaction.consent_user = Some(user.user_id);
            self.inner
                .store
                .update_interaction(&interaction)
                .await
                .map_err(|e| OAuthError::server(&e))?;
            return Ok(AuthorizeStep::Consent(interaction.id));
        }
        if let Some(interaction) = &interaction
            && self
                .inner
                .store
                .take_interaction(&interaction.id, now)
                .await
                .map_err(|e| OAuthError::server(&e))?
                .is_none()
        {
            return Err(OAuthError::invalid_request(
                "this authorization request was already answered",
            ));
        }
        self.issue_code(client, &request, user, tenant).await
    }

    async fn finish_with_error(
        &self,
        request: &AuthorizationRequest,
        interaction: Option<Interaction>,
        error: OAuthError,
    ) -> Result<AuthorizeStep, OAuthError> {
        if let Some(interaction) = interaction {
            self.inner
                .store
                .take_interaction(&interaction.id, self.now())
                .await
                .map_err(|e| OAuthError::server(&e))?;
        }
        Ok(AuthorizeStep::Redirect(
            self.error_redirect(request, &error),
        ))
    }

    /// The consent page's answer: `allow` remembers the consent and
    /// redirects with a code; otherwise `access_denied`. The interaction is
    /// used up either way; it must have been shown to `signed_in`'s user.
    pub async fn consent(
        &self,
        interaction: &InteractionId,
        signed_in: SignedIn,
        allow: bool,
    ) -> Result<AuthorizeStep, OAuthError> {
        let now = self.now();
        let found = self
            .inner
            .store
            .get_interaction(interaction, now)
            .await
            .map_err(|e| OAuthError::server(&e))?
            .ok_or_else(|| OAuthError::invalid_request("the authorization request expired"))?;
        if found.consent_user != Some(signed_in.user_id) {
            return Err(OAuthError::invalid_request(
                "this consent was not asked of the signed-in user",
            ));
        }
        let taken = self
            .inner
            .store
            .take_interaction(interaction, now)
            .await
            .map_err(|e| OAuthError::server(&e))?
            .ok_or_else(|| OAuthError::invalid_request("the authorization request expired"))?;
        let request = taken.request;
        if !allow {
            return Ok(AuthorizeStep::Redirect(self.error_redirect(
                &request,
                &OAuthError::new(OAuthErrorCode::AccessDenied, "the user denied the request"),
            )));
        }
        let client = match self.inner.store.get_client(&request.client_id).await {
            Ok(client) => client,
            Err(_) => return Err(OAuthError::invalid_request("the client no longer exists")),
        };
        let tenant = client.tenant_id.unwrap_or(signed_in.tenant_id);
        // The user may have left the tenant (or been disabled) since the
        // consent page was shown.
        if let Err(error) = self.inner.auth.member_of(signed_in.user_id, tenant).await {
            return match error {
                crate::Error::NotAMember
                | crate::Error::AccountDisabled
                | crate::Error::TenantNotActive { .. } => {
                    Ok(AuthorizeStep::Redirect(self.error_redirect(
                        &request,
                        &OAuthError::new(
                            OAuthErrorCode::AccessDenied,
                            "the user may not use this client",
                        ),
                    )))
                }
                other => Err(OAuthError::from_auth(other)),
            };
        }
        let mut scopes = request.scopes.clone();
        if let Some(previous) = self
            .inner
            .store
            .find_consent(signed_in.user_id, &client.id, tenant)
            .await
            .map_err(|e| OAuthError::server(&e))?
        {
            scopes.extend(previous.scopes);
        }
        scopes.sort();
        scopes.dedup();
        let consent = Consent::new(signed_in.user_id, client.id.clone(), tenant, scopes, now);
        self.inner
            .store
            .put_consent(&consent)
            .await
            .map_err(|e| OAuthError::server(&e))?;
        self.inner
            .auth
            .audit_alone(
                tenant,
                &AuditContext::new(Actor::User(signed_in.user_id)),
                actions::CONSENT_GRANTED,
                ("oauth_client", client.id.to_string()),
                json!({ "scopes": request.scopes }),
            )
            .await;
        self.issue_code(&client, &request, signed_in, tenant).await
    }

    async fn issue_code(
        &self,
        client: &OAuthClient,
        request: &AuthorizationRequest,
        user: SignedIn,
        tenant: TenantId,
    ) -> Result<AuthorizeStep, OAuthError> {
        // A request resumed after login or consent is held to the client as
        // it is now: a redirect URI, scope or grant removed meanwhile no
        // longer applies. Without its redirect URI the error is shown.
        if client.redirect_uri(&request.redirect_uri).is_none() {
            return Err(OAuthError::invalid_request(
                "the redirect_uri is no longer registered for this client",
            ));
        }
        if !client.allows_grant(GrantType::AuthorizationCode) {
            return Ok(AuthorizeStep::Redirect(self.error_redirect(
                request,
                &OAuthError::new(
                    OAuthErrorCode::UnauthorizedClient,
                    "the client may no longer use this grant",
                ),
            )));
        }
        if request.scopes.iter().any(|s| !client.allows_scope(s)) {
            return Ok(AuthorizeStep::Redirect(self.error_redirect(
                request,
                &OAuthError::invalid_scope("the client may no longer ask for this scope"),
            )));
        }
        let now = self.now();
        let code = SecretToken::generate(CODE_PREFIX);
        let record = AuthorizationCode {
            code_hash: code.hash(),
            client_id: client.id.clone(),
            redirect_uri: if request.redirect_uri_presented {
                request.redirect_uri.clone()
            } else {
                String::new()
            },
            code_challenge: request.code_challenge.clone(),
            nonce: request.nonce.clone(),
            user_id: user.user_id,
            tenant_id: tenant,
            browser_session: user.session_id,
            auth_time: user.auth_time,
            scopes: request.scopes.clone(),
            created_at: now,
            expires_at: now + self.inner.config.code_ttl,
            redeemed_at: None,
            issued_session: None,
        };
        self.inner
            .store
            .insert_code(&record)
            .await
            .map_err(|e| OAuthError::server(&e))?;
        let mut query = vec![("code", code.expose_secret())];
        if let Some(state) = &request.state {
            query.push(("state", state));
        }
        query.push(("iss", self.issuer()));
        Ok(AuthorizeStep::Redirect(with_query(
            &request.redirect_uri,
            &query,
        )))
    }

    // ------------------------------------------------------------ token endpoint

    /// The `authorization_code` grant (RFC 6749 §4.1.3, RFC 7636 §4.6): the
    /// code must be live, issued to `client` for `redirect_uri`, and match
    /// the PKCE verifier. A replayed code revokes what it issued.
    pub async fn exchange_code(
        &self,
        client: &OAuthClient,
        code: Option<&str>,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
        info: &ClientInfo,
    ) -> Result<TokenResponse, OAuthError> {
        if !client.allows_grant(GrantType::AuthorizationCode) {
            return Err(OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                "the client may not use this grant",
            ));
        }
        let code = code.ok_or_else(|| OAuthError::invalid_request("code is required"))?;
        let Some(presented) = SecretToken::parse(CODE_PREFIX, code) else {
            return Err(OAuthError::invalid_grant("the code is invalid or expired"));
        };
        let now = self.now();
        let redeemed = self
            .inner
            .store
            .redeem_code(&presented.hash(), &client.id, now)
            .await
            .map_err(|e| OAuthError::server(&e))?;
        let record = match redeemed {
            CodeRedemption::Redeemed(record) => record,
            CodeRedemption::Replayed(record) => {
                if let Some(session) = record.issued_session
                    && let Err(error) = self
                        .inner
                        .auth
                        .end_session_by_id(session, RevokeReason::Revoked)
                        .await
                {
                    tracing::warn!(%error, "revoking a replayed code's session failed");
                }
                self.inner
                    .auth
                    .audit_alone(
                        record.tenant_id,
                        &AuditContext::new(Actor::OAuthClient(record.client_id.id())),
                        actions::CODE_REPLAYED,
                        ("oauth_client", record.client_id.to_string()),
                        json!({ "user_id": record.user_id }),
                    )
                    .await;
                return Err(OAuthError::invalid_grant("the code was already used"));
            }
            CodeRedemption::Unknown => {
                return Err(OAuthError::invalid_grant("the code is invalid or expired"));
            }
        };
        if record.client_id != client.id {
            return Err(OAuthError::invalid_grant(
                "the code was issued to another client",
            ));
        }
        // The redirect URI must be repeated if the authorization request
        // named it (RFC 6749 §4.1.3); if not, one sent anyway must still be
        // registered.
        let redirect_ok = if record.redirect_uri.is_empty() {
            redirect_uri.is_none_or(|uri| client.redirect_uri(uri).is_some())
        } else {
            redirect_uri == Some(record.redirect_uri.as_str())
        };
        if !redirect_ok {
            return Err(OAuthError::invalid_grant(
                "redirect_uri differs from the authorization request's",
            ));
        }
        match (&record.code_challenge, code_verifier) {
            (Some(challenge), Some(verifier)) => {
                if !pkce_shaped(verifier)
                    || !bytes_equal(s256(verifier).as_bytes(), challenge.as_bytes())
                {
                    return Err(OAuthError::invalid_grant(
                        "the code_verifier does not match",
                    ));
                }
            }
            (Some(_), None) => {
                return Err(OAuthError::invalid_grant("code_verifier is required"));
            }
            (None, Some(_)) => {
                return Err(OAuthError::invalid_grant(
                    "no code_challenge was sent for this code",
                ));
            }
            (None, None) => {}
        }
        let scope = scope_text(&record.scopes);
        let success = self
            .inner
            .auth
            .open_oauth_session(
                record.user_id,
                record.tenant_id,
                client.id.as_str(),
                &scope,
                info,
            )
            .await
            .map_err(OAuthError::from_auth)?;
        let grant = SessionGrant::new(
            success.session.id,
            client.id.clone(),
            record.user_id,
            record.tenant_id,
            record.scopes.clone(),
            record.auth_time,
            now,
        );
        let stored = async {
            self.inner.store.insert_grant(&grant).await?;
            self.inner
                .store
                .set_code_session(&record.code_hash, success.session.id)
                .await
        }
        .await;
        match stored {
            Ok(false) => {}
            // Replayed while this redemption opened its session: the replay
            // could not end a session it did not know, so end it here.
            Ok(true) => {
                let _ = self
                    .inner
                    .auth
                    .end_session_by_id(success.session.id, RevokeReason::Revoked)
                    .await;
                return Err(OAuthError::invalid_grant("the code was already used"));
            }
            Err(error) => {
                let _ = self
                    .inner
                    .auth
                    .end_session_by_id(success.session.id, RevokeReason::Revoked)
                    .await;
                return Err(OAuthError::server(&error));
            }
        }
        self.token_response(
            client,
            &success,
            &record.scopes,
            record.auth_time,
            record.nonce.as_deref(),
        )
        .await
    }

    async fn token_response(
        &self,
        client: &OAuthClient,
        success: &crate::LoginSuccess,
        scopes: &[String],
        auth_time: OffsetDateTime,
        nonce: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let refresh = client.allows_grant(GrantType::RefreshToken)
            && scopes.iter().any(|s| s == "offline_access");
        let id_token = if scopes.iter().any(|s| s == "openid") {
            Some(
                self.id_token(
                    client,
                    success,
                    scopes,
                    auth_time,
                    nonce,
                    &success.access_token,
                )
                .await?,
            )
        } else {
            None
        };
        Ok(TokenResponse {
            expires_in: expires_in(&success.access_token, self.now()),
            access_token: success.access_token.token.clone(),
            token_type: "Bearer",
            refresh_token: refresh.then(|| success.refresh_token.expose_secret().to_owned()),
            id_token,
            scope: scope_text(scopes),
        })
    }

    async fn id_token(
        &self,
        client: &OAuthClient,
        success: &crate::LoginSuccess,
        scopes: &[String],
        auth_time: OffsetDateTime,
        nonce: Option<&str>,
        access_token: &AccessToken,
    ) -> Result<String, OAuthError> {
        let ring = if client.id_token_signed_response_alg == self.inner.config.id_token_algorithm {
            self.id_token_keys()
                .await
                .map_err(|e| OAuthError::server(&e))?
        } else {
            self.inner.auth.access_keys()
        };
        let signer = ring.signer().map_err(|e| OAuthError::server(&e))?;
        let now = self.now();
        let mut extra = Map::new();
        let tenant = success.membership.tenant_id.to_string();
        extra.insert("tid".into(), json!(tenant));
        extra.insert("org_id".into(), json!(tenant));
        let roles: Vec<&str> = success
            .membership
            .roles
            .iter()
            .map(|r| r.as_str())
            .collect();
        extra.insert("roles".into(), json!(roles));
        if scopes.iter().any(|s| s == "email") {
            extra.insert("email".into(), json!(success.user.email.as_str()));
            extra.insert("email_verified".into(), json!(success.user.email_verified));
        }
        if scopes.iter().any(|s| s == "profile")
            && let Some(name) = &success.user.display_name
        {
            extra.insert("name".into(), json!(name.as_str()));
        }
        let claims = IdClaims {
            iss: self.issuer().to_owned(),
            sub: success.user.id.to_string(),
            aud: client.id.to_string(),
            exp: (now + self.inner.config.id_token_ttl).unix_timestamp(),
            iat: now.unix_timestamp(),
            auth_time: auth_time.unix_timestamp(),
            nonce: nonce.map(str::to_owned),
            azp: client.id.to_string(),
            at_hash: Some(at_hash(signer.algorithm, &access_token.token)),
            sid: Some(success.session.id.to_string()),
            extra,
        };
        let mut header = jsonwebtoken::Header::new(signer.algorithm.jwt());
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, &claims, &signer.key).map_err(|e| OAuthError::server(&e))
    }

    /// The `refresh_token` grant (RFC 6749 §6): the token must belong to a
    /// grant of `client`; it rotates (a reused one revokes its family). A
    /// narrower `scope` may be asked for.
    pub async fn refresh(
        &self,
        client: &OAuthClient,
        refresh_token: Option<&str>,
        scope: Option<&str>,
        info: &ClientInfo,
    ) -> Result<TokenResponse, OAuthError> {
        if !client.allows_grant(GrantType::RefreshToken) {
            return Err(OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                "the client may not use this grant",
            ));
        }
        let token = refresh_token
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
        let invalid =
            || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
        let presented = SecretToken::parse(OAUTH_REFRESH_PREFIX, token).ok_or_else(invalid)?;
        let owner = self
            .inner
            .auth
            .auth_store()
            .find_session_by_refresh_token(&presented.hash())
            .await
            .map_err(|e| OAuthError::server(&e))?
            .ok_or_else(invalid)?;
        let grant = self
            .inner
            .store
            .get_grant(owner.session.id)
            .await
            .map_err(|e| OAuthError::server(&e))?
            .filter(|grant| grant.client_id == client.id)
            .ok_or_else(invalid)?;
        let scopes = match scope {
            None => grant.scopes.clone(),
            Some(raw) => {
                let asked = parse_scopes(raw)?;
                if asked.is_empty() || asked.iter().any(|s| !grant.scopes.contains(s)) {
                    return Err(OAuthError::invalid_scope(
                        "the scope exceeds what was granted",
                    ));
                }
                asked
            }
        };
        let success = self
            .inner
            .auth
            .rotate_oauth(&presented, client.id.as_str(), &scope_text(&scopes), info)
            .await
            .map_err(OAuthError::from_auth)?;
        let mut response = self
            .token_response(client, &success, &scopes, grant.auth_time, None)
            .await?;
        // The family rotated: the client must keep the new token whatever
        // the scope of this answer.
        response.refresh_token = Some(success.refresh_token.expose_secret().to_owned());
        Ok(response)
    }

    /// The `client_credentials` grant (RFC 6749 §4.4): a confidential
    /// client registered in a tenant gets a token acting there, with its
    /// API scopes (or the narrower `scope` asked for). No refresh token.
    pub async fn client_credentials(
        &self,
        client: &OAuthClient,
        scope: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let unauthorized = |d: &'static str| OAuthError::new(OAuthErrorCode::UnauthorizedClient, d);
        if client.kind != ClientKind::Confidential
            || !client.allows_grant(GrantType::ClientCredentials)
        {
            return Err(unauthorized("the client may not use this grant"));
        }
        let Some(tenant) = client.tenant_id else {
            return Err(unauthorized(
                "client_credentials needs a client registered in a tenant",
            ));
        };
        let scopes = match scope {
            None => client
                .scopes
                .iter()
                .filter(|s| !is_oidc_scope(s))
                .cloned()
                .collect::<Vec<_>>(),
            Some(raw) => {
                let asked = parse_scopes(raw)?;
                if asked
                    .iter()
                    .any(|s| is_oidc_scope(s) || !client.allows_scope(s))
                {
                    return Err(OAuthError::invalid_scope(
                        "the client may not ask for this scope",
                    ));
                }
                asked
            }
        };
        let scope = scope_text(&scopes);
        let token = self
            .inner
            .auth
            .client_access_token(client.id.as_str(), tenant, &scope, client.created_by)
            .map_err(OAuthError::from_auth)?;
        Ok(TokenResponse {
            expires_in: expires_in(&token, self.now()),
            access_token: token.token,
            token_type: "Bearer",
            refresh_token: None,
            id_token: None,
            scope,
        })
    }

    // ------------------------------------------------------------ userinfo, introspection, revocation

    /// The userinfo claims (OIDC Core §5.3) of an access token holding the
    /// `openid` scope: `sub`, with `email` and `email_verified` for scope
    /// `email`, `name` for scope `profile`.
    pub async fn userinfo(&self, principal: &Principal) -> Result<Value, OAuthError> {
        let Some(oauth) = &principal.oauth else {
            return Err(OAuthError::new(
                OAuthErrorCode::InsufficientScope,
                "the token was not issued through the authorization server",
            ));
        };
        if !oauth.has_scope("openid") {
            return Err(OAuthError::new(
                OAuthErrorCode::InsufficientScope,
                "the token lacks the openid scope",
            ));
        }
        let Subject::User(user_id) = principal.subject else {
            return Err(OAuthError::new(
                OAuthErrorCode::InsufficientScope,
                "the token names no user",
            ));
        };
        let user = self
            .inner
            .auth
            .backend()
            .get_user(user_id)
            .await
            .map_err(|_| OAuthError::new(OAuthErrorCode::InvalidToken, "the user is gone"))?;
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(user.id.to_string()));
        if oauth.has_scope("email") {
            claims.insert("email".into(), json!(user.email.as_str()));
            claims.insert("email_verified".into(), json!(user.email_verified));
        }
        if oauth.has_scope("profile")
            && let Some(name) = &user.display_name
        {
            claims.insert("name".into(), json!(name.as_str()));
        }
        Ok(Value::Object(claims))
    }

    /// RFC 7662 introspection for `caller` (a confidential client): an
    /// access token of the caller's tenant (any tenant for a global
    /// caller), or a refresh token of the caller's own grants, answers
    /// `active: true` with its claims; anything else `{"active": false}`.
    pub async fn introspect(&self, caller: &OAuthClient, token: &str) -> Result<Value, OAuthError> {
        let inactive = json!({ "active": false });
        if caller.kind != ClientKind::Confidential {
            return Err(OAuthError::invalid_client());
        }
        if let Some(presented) = SecretToken::parse(OAUTH_REFRESH_PREFIX, token) {
            let Some(owner) = self
                .inner
                .auth
                .auth_store()
                .find_session_by_refresh_token(&presented.hash())
                .await
                .map_err(|e| OAuthError::server(&e))?
            else {
                return Ok(inactive);
            };
            if owner.spent || !owner.session.is_live_at(self.now()) {
                return Ok(inactive);
            }
            let grant = self
                .inner
                .store
                .get_grant(owner.session.id)
                .await
                .map_err(|e| OAuthError::server(&e))?;
            return Ok(match grant {
                Some(grant) if grant.client_id == caller.id => json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "scope": scope_text(&grant.scopes),
                    "client_id": grant.client_id.as_str(),
                    "sub": grant.user_id.to_string(),
                    "tid": grant.tenant_id.to_string(),
                    "iss": self.issuer(),
                    "exp": owner.session.absolute_expires_at.unix_timestamp(),
                    "iat": owner.session.created_at.unix_timestamp(),
                }),
                _ => inactive,
            });
        }
        let Ok(principal) = self
            .inner
            .auth
            .authenticator()
            .verify_access_token(token)
            .await
        else {
            return Ok(inactive);
        };
        if caller
            .tenant_id
            .is_some_and(|tenant| tenant != principal.tenant_id)
        {
            return Ok(inactive);
        }
        // A client learns about its own tokens; only a resource server (a
        // confidential machine client: no redirect URI, no authorization
        // code grant, so it never holds users' tokens itself) learns about
        // the other clients' tokens of its tenant (RFC 7662 §4). No one
        // learns about the first-party browser tokens.
        let Some(oauth) = principal.oauth.as_ref() else {
            return Ok(inactive);
        };
        let resource_server = caller.redirect_uris.is_empty()
            && !caller.allows_grant(GrantType::AuthorizationCode)
            && caller.allows_grant(GrantType::ClientCredentials);
        if oauth.client_id != caller.id.as_str() && !resource_server {
            return Ok(inactive);
        }
        match principal.subject {
            Subject::OAuthClient(_) => {
                // A machine client's token is active only while the client
                // is as it was when the token was issued.
                if !self.client_token_valid(&principal).await? {
                    return Ok(inactive);
                }
            }
            Subject::User(user) => {
                let member = self
                    .inner
                    .auth
                    .backend()
                    .find_membership(principal.tenant_id, user)
                    .await
                    .map_err(|e| OAuthError::server(&e))?;
                if member.is_none_or(|m| m.status != tenancy_core::MembershipStatus::Active) {
                    return Ok(inactive);
                }
            }
            _ => return Ok(inactive),
        }
        let claims = payload(token).unwrap_or_default();
        let mut answer = Map::new();
        answer.insert("active".into(), json!(true));
        answer.insert("token_type".into(), json!("Bearer"));
        for name in [
            "scope",
            "client_id",
            "sub",
            "exp",
            "iat",
            "nbf",
            "iss",
            "aud",
            "jti",
            "tid",
            "sid",
        ] {
            if let Some(value) = claims.get(name) {
                answer.insert(name.into(), value.clone());
            }
        }
        Ok(Value::Object(answer))
    }

    /// RFC 7009 revocation by `caller`: a refresh token of the caller's own
    /// grant, or a user access token the caller holds, ends the grant's
    /// session (refresh family and access tokens). Unknown tokens and
    /// tokens of other clients change nothing (and the answer is the same).
    /// A `client_credentials` access token of the caller revokes all of the
    /// caller's such tokens issued so far (they share one grant).
    pub async fn revoke(&self, caller: &OAuthClient, token: &str) -> Result<(), OAuthError> {
        if let Some(presented) = SecretToken::parse(OAUTH_REFRESH_PREFIX, token) {
            let Some(owner) = self
                .inner
                .auth
                .auth_store()
                .find_session_by_refresh_token(&presented.hash())
                .await
                .map_err(|e| OAuthError::server(&e))?
            else {
                return Ok(());
            };
            let grant = self
                .inner
                .store
                .get_grant(owner.session.id)
                .await
                .map_err(|e| OAuthError::server(&e))?;
            if grant.is_some_and(|grant| grant.client_id == caller.id) {
                self.inner
                    .auth
                    .end_session_by_id(owner.session.id, RevokeReason::Revoked)
                    .await
                    .map_err(OAuthError::from_auth)?;
            }
            return Ok(());
        }
        let Ok(principal) = self
            .inner
            .auth
            .authenticator()
            .verify_access_token(token)
            .await
        else {
            return Ok(());
        };
        let held = principal
            .oauth
            .as_ref()
            .is_some_and(|oauth| oauth.client_id == caller.id.as_str());
        if !held {
            return Ok(());
        }
        match (principal.subject, principal.session_id) {
            (Subject::User(_), Some(session)) => self
                .inner
                .auth
                .end_session_by_id(session, RevokeReason::Revoked)
                .await
                .map_err(OAuthError::from_auth),
            (Subject::OAuthClient(_), None) => self.revoke_client_tokens(caller).await,
            _ => Err(OAuthError::new(
                OAuthErrorCode::UnsupportedTokenType,
                "this token cannot be revoked",
            )),
        }
    }

    /// Revokes every `client_credentials` token of `caller` issued so far
    /// (they share one grant, RFC 7009 §2.1): the client's change time moves
    /// to the next whole second, and tokens are refused unless issued at or
    /// after it (`iat` has whole seconds, so a token asked for within the
    /// same second is refused too).
    async fn revoke_client_tokens(&self, caller: &OAuthClient) -> Result<(), OAuthError> {
        let mut client = match self.inner.store.get_client(&caller.id).await {
            Ok(client) => client,
            Err(tenancy_core::StoreError::NotFound(_)) => return Ok(()),
            Err(error) => return Err(OAuthError::server(&error)),
        };
        let now = self.now();
        let next_second = now.unix_timestamp() + 1;
        client.updated_at = OffsetDateTime::from_unix_timestamp(next_second)
            .map_err(|_| OAuthError::new(OAuthErrorCode::ServerError, "clock out of range"))?;
        self.inner
            .store
            .update_client(&client)
            .await
            .map_err(|e| OAuthError::server(&e))?;
        self.inner.live_clients.remove(&client.id);
        tracing::info!(client_id = %client.id, "client_credentials tokens revoked");
        Ok(())
    }

    // ------------------------------------------------------------ logout

    /// Reads an `id_token_hint` (OIDC RP-Initiated Logout §2): an ID token
    /// this provider signed for one of its clients, expired or not.
    pub async fn id_token_hint(&self, token: &str) -> Option<IdTokenHint> {
        if token.len() > 16 * 1024 {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        let kid = header.kid?;
        let id_keys = self.id_token_keys().await.ok()?;
        let verifier = match id_keys.verifier(&kid).await.ok()? {
            Some(verifier) => verifier,
            None => self.inner.auth.access_keys().verifier(&kid).await.ok()??,
        };
        if header.alg != verifier.algorithm.jwt() {
            return None;
        }
        let mut validation = jsonwebtoken::Validation::new(verifier.algorithm.jwt());
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[self.issuer()]);
        let data = jsonwebtoken::decode::<IdClaims>(token, &verifier.key, &validation).ok()?;
        Some(IdTokenHint {
            user_id: data.claims.sub.parse().ok()?,
            client_id: data.claims.aud.parse().ok()?,
            session_id: data.claims.sid.and_then(|sid| sid.parse().ok()),
        })
    }

    /// Where RP-initiated logout sends the browser: `uri` with `state`,
    /// if `uri` is one of `client`'s registered post-logout redirect URIs
    /// (exact match); `invalid_request` otherwise.
    pub fn post_logout_redirect(
        &self,
        client: &OAuthClient,
        uri: &str,
        state: Option<&str>,
    ) -> Result<String, OAuthError> {
        if !client
            .post_logout_redirect_uris
            .iter()
            .any(|registered| registered.as_str() == uri)
        {
            return Err(OAuthError::invalid_request(
                "post_logout_redirect_uri is not registered for this client",
            ));
        }
        Ok(match state {
            Some(state) => with_query(uri, &[("state", state)]),
            None => uri.to_owned(),
        })
    }

    /// Ends the session an ID token hint names, if it is `user`'s (logout).
    pub async fn end_session(&self, session: SessionId) -> Result<(), OAuthError> {
        match self
            .inner
            .auth
            .end_session_by_id(session, RevokeReason::Logout)
            .await
        {
            Ok(()) => Ok(()),
            Err(crate::Error::Store(tenancy_core::StoreError::NotFound(_))) => Ok(()),
            Err(other) => Err(OAuthError::from_auth(other)),
        }
    }

    /// Whether a `client_credentials` access token (its verified
    /// principal) still stands for `client` as it is now: the same client,
    /// tenant and registrant, the grant still allowed, and issued no earlier
    /// than the client's last change (a secret rotation or an update ends
    /// the tokens issued before it).
    pub fn client_token_current(client: &OAuthClient, principal: &Principal) -> bool {
        let Subject::OAuthClient(id) = principal.subject else {
            return false;
        };
        let Some(oauth) = &principal.oauth else {
            return false;
        };
        // `iat` has whole seconds: a token of the very second of a change
        // is let through rather than refusing every token for a second.
        let changed = client.updated_at.unix_timestamp();
        client.id.id() == id
            && client.tenant_id == Some(principal.tenant_id)
            && client.kind == ClientKind::Confidential
            && client.allows_grant(GrantType::ClientCredentials)
            && principal.minted_by == Some(client.created_by)
            && oauth.issued_at.unix_timestamp() >= changed
    }

    /// Whether a `client_credentials` access token still stands for its
    /// client as it is now (see [`OAuthProvider::client_token_current`]);
    /// `false` for any other principal.
    pub async fn client_token_valid(&self, principal: &Principal) -> Result<bool, OAuthError> {
        let Subject::OAuthClient(id) = principal.subject else {
            return Ok(false);
        };
        let id = ClientId::from_id(id);
        if let Some((seen, client)) = self.inner.live_clients.get(&id)
            && seen.elapsed() < CLIENT_CHECK_TTL
        {
            return Ok(Self::client_token_current(&client, principal));
        }
        let client = match self.inner.store.get_client(&id).await {
            Ok(client) => client,
            Err(tenancy_core::StoreError::NotFound(_)) => return Ok(false),
            Err(error) => return Err(OAuthError::server(&error)),
        };
        let current = Self::client_token_current(&client, principal);
        self.inner
            .live_clients
            .insert(id, (std::time::Instant::now(), Arc::new(client)));
        Ok(current)
    }

    /// The client named by `client_id`, if it exists.
    pub async fn find_client(&self, client_id: &str) -> Result<Option<OAuthClient>, OAuthError> {
        let Ok(id) = client_id.parse::<ClientId>() else {
            return Ok(None);
        };
        match self.inner.store.get_client(&id).await {
            Ok(client) => Ok(Some(client)),
            Err(tenancy_core::StoreError::NotFound(_)) => Ok(None),
            Err(other) => Err(OAuthError::server(&other)),
        }
    }

    /// Deletes expired interactions, unspent codes and assertion ids; spent
    /// codes and the grants of OAuth sessions once no session they opened
    /// can still live (the sessions' absolute lifetime), so a late replay
    /// of a code still revokes what it issued. Returns how many went.
    pub async fn purge_expired(&self) -> Result<u64, tenancy_core::StoreError> {
        let now = self.now();
        let lifetime = self.inner.auth.config().sessions.absolute_timeout;
        self.inner
            .store
            .purge_expired(now, now - lifetime - Duration::minutes(1))
            .await
    }

    /// Makes a fresh ID-token key active (the old one keeps verifying).
    pub async fn rotate_id_token_key(&self) -> Result<String, crate::KeyError> {
        self.id_token_keys().await?.rotate(self.now()).await
    }
}

fn expires_in(token: &AccessToken, now: OffsetDateTime) -> i64 {
    (token.expires_at - now).whole_seconds().max(0)
}

/// The claims of a JWT already verified.
fn payload(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The client id and secret of `Basic <base64(id:secret)>`, each
/// form-urldecoded (RFC 6749 §2.3.1).
fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let decode = |part: &str| -> String {
        url::form_urlencoded::parse(format!("x={part}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    };
    let (id, secret) = (decode(id), decode(secret));
    (!id.is_empty()).then_some((id, secret))
}

/// A registered URI as text (for the forms and JSON of the HTTP layer).
pub fn uri_texts(uris: &[RedirectUri]) -> Vec<&str> {
    uris.iter().map(RedirectUri::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_credentials_debug_hides_secrets() {
        let presented = ClientCredentials {
            authorization: Some("Basic c2VjcmV0LWJhc2lj"),
            client_id: Some("the-client"),
            client_secret: Some("secret-post-value"),
            client_assertion_type: Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            client_assertion: Some("eyJ.assertion-value.sig"),
        };
        let shown = format!("{presented:?}");
        assert!(shown.contains("the-client"));
        for secret in ["c2VjcmV0LWJhc2lj", "secret-post-value", "assertion-value"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn basic_credentials_are_form_urldecoded() {
        let encoded = STANDARD.encode("my%3Aid:p%40ss+word%25");
        assert_eq!(
            parse_basic(&format!("Basic {encoded}")),
            Some(("my:id".to_owned(), "p@ss word%".to_owned()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        let no_colon = STANDARD.encode("justid");
        assert_eq!(parse_basic(&format!("Basic {no_colon}")), None);
    }

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            s256(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(pkce_shaped(verifier));
        assert!(!pkce_shaped("short"));
        assert!(!pkce_shaped(&"a".repeat(129)));
        assert!(!pkce_shaped(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn at_hash_is_the_left_half() {
        // OIDC Core §A.3's example access token and at_hash (RS256).
        assert_eq!(
            at_hash(
                KeyAlgorithm::Rs256,
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn queries_are_appended() {
        assert_eq!(
            with_query(
                "https://rp.example/cb?x=1",
                &[("code", "a b"), ("state", "s&t")]
            ),
            "https://rp.example/cb?x=1&code=a+b&state=s%26t"
        );
    }
}
