//! [`Authenticator`]: one entry point that turns request credentials into a
//! [`Principal`], for every framework integration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tenancy_core::{ApiKeyId, Clock, Entity, SessionId, StoreError, TenantId, UserId};
use time::{Duration, OffsetDateTime};

use crate::api_key::ApiKeyPrefix;
use crate::error::{ApiKeyRejection, AuthError, TokenRejection};
use crate::keys::KeyRing;
use crate::principal::{AuthMethod, Principal, Subject};
use crate::revocation::RevocationSet;
use crate::secret::hashes_equal;
use crate::session::Session;
use crate::store::{ApiKeyStore, SessionStore};
use crate::token::{self, TokenConfig, VerifiedCache};

/// The credentials of one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header value, such as `Bearer eyJ…` or
    /// `Bearer tnc_live_…`.
    pub authorization: Option<&'a str>,
    /// An access token from the session cookie, used when there is no
    /// `Authorization` header.
    pub cookie: Option<&'a str>,
    /// The tenant the request addresses, if already known (header,
    /// subdomain, path): an API key of another tenant is refused.
    pub tenant: Option<TenantId>,
}

impl<'a> Credentials<'a> {
    /// Credentials from an `Authorization` header value.
    pub fn bearer(authorization: &'a str) -> Self {
        Self {
            authorization: Some(authorization),
            ..Self::default()
        }
    }
}

/// How long an API key's `last_used_at` may lag behind its real last use.
const TOUCH_INTERVAL: Duration = Duration::minutes(1);

/// Verifies bearer access tokens (JWT), API keys and session cookies.
///
/// Access tokens are checked in memory: signature against the key pinned by
/// `kid`, issuer, audience, expiry, not-before, and the revocation set. A
/// bounded cache of verified tokens makes repeat requests cheap; a cached
/// token is still refused once expired or revoked. API keys are looked up by
/// their id and their secret compared in constant time.
///
/// A token must also name a session of its own user in its own tenant, so
/// one signed outside the service is refused. That is checked when a token
/// is first verified, against a bounded cache of known sessions (those this
/// process opened or refreshed, and those it has read): one store read per
/// session and process, not per request or per token.
pub struct Authenticator {
    keys: Arc<KeyRing>,
    config: TokenConfig,
    api_keys: Arc<dyn ApiKeyStore>,
    sessions: Arc<dyn SessionStore>,
    prefix: ApiKeyPrefix,
    revocations: Arc<RevocationSet>,
    cache: VerifiedCache,
    known_sessions: Option<quick_cache::sync::Cache<SessionId, KnownSession>>,
    clock: Arc<dyn Clock>,
    touched: Mutex<HashMap<ApiKeyId, OffsetDateTime>>,
}

/// What a token is checked against: whose session it is, and until when.
#[derive(Debug, Clone, Copy)]
struct KnownSession {
    user_id: UserId,
    tenant_id: TenantId,
    expires_at: OffsetDateTime,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.config)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Capacity of the verified-token cache unless configured.
    pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

    /// Capacity of the known-session cache unless configured.
    pub const DEFAULT_SESSION_CACHE_CAPACITY: usize = 100_000;

    #[allow(clippy::too_many_arguments)] // crate-internal; Auth's builder assembles it
    pub(crate) fn new(
        keys: Arc<KeyRing>,
        config: TokenConfig,
        api_keys: Arc<dyn ApiKeyStore>,
        sessions: Arc<dyn SessionStore>,
        prefix: ApiKeyPrefix,
        revocations: Arc<RevocationSet>,
        clock: Arc<dyn Clock>,
        cache_capacity: usize,
        session_cache_capacity: usize,
    ) -> Self {
        Self {
            keys,
            config,
            api_keys,
            sessions,
            prefix,
            revocations,
            cache: VerifiedCache::new(cache_capacity),
            known_sessions: (session_cache_capacity > 0)
                .then(|| quick_cache::sync::Cache::new(session_cache_capacity)),
            clock,
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Records a session this process opened or refreshed, so its tokens
    /// are checked without reading the store.
    pub(crate) fn remember_session(&self, session: &Session) {
        if let Some(known) = &self.known_sessions {
            known.insert(
                session.id,
                KnownSession {
                    user_id: session.user_id,
                    tenant_id: session.tenant_id,
                    expires_at: session.absolute_expires_at,
                },
            );
        }
    }

    /// Checks that the principal's session exists, is its own user's in
    /// its own tenant, and has not ended: from the cache of known sessions,
    /// or (once per session) from the store.
    async fn check_session(
        &self,
        principal: &Principal,
        now: OffsetDateTime,
    ) -> Result<(), AuthError> {
        let (Some(user_id), Some(session_id)) = (principal.user_id(), principal.session_id) else {
            return Ok(());
        };
        let cached = self
            .known_sessions
            .as_ref()
            .and_then(|known| known.get(&session_id));
        let known = match cached {
            Some(known) => known,
            None => {
                let session = match self.sessions.get_session(session_id).await {
                    Ok(session) => session,
                    Err(StoreError::NotFound(Entity::Session)) => {
                        return Err(AuthError::InvalidToken(TokenRejection::UnknownSession));
                    }
                    Err(other) => return Err(AuthError::Unavailable(Box::new(other))),
                };
                if session.revoked_at.is_some() {
                    self.revocations
                        .insert(session.id, session.absolute_expires_at);
                    return Err(AuthError::InvalidToken(TokenRejection::Revoked));
                }
                self.remember_session(&session);
                KnownSession {
                    user_id: session.user_id,
                    tenant_id: session.tenant_id,
                    expires_at: session.absolute_expires_at,
                }
            }
        };
        if known.user_id != user_id || known.tenant_id != principal.tenant_id {
            return Err(AuthError::InvalidToken(TokenRejection::SessionMismatch));
        }
        if known.expires_at <= now {
            return Err(AuthError::InvalidToken(TokenRejection::Revoked));
        }
        Ok(())
    }

    /// Authenticates a request: the `Authorization` header if present,
    /// otherwise the cookie.
    pub async fn authenticate(
        &self,
        credentials: Credentials<'_>,
    ) -> Result<Arc<Principal>, AuthError> {
        if let Some(header) = credentials.authorization {
            let token = bearer_token(header)?;
            if self.prefix.claims(token) {
                // Boxed, like the cold verification below, so the future of
                // a cached token's request stays small and cheap to move.
                return Box::pin(self.verify_api_key(token, credentials.tenant)).await;
            }
            return self.verify_token(token, AuthMethod::AccessToken).await;
        }
        match credentials.cookie {
            Some(token) => self.verify_token(token, AuthMethod::Cookie).await,
            None => Err(AuthError::MissingCredentials),
        }
    }

    /// Verifies an access token (JWT).
    pub async fn verify_access_token(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        self.verify_token(token, AuthMethod::AccessToken).await
    }

    async fn verify_token(
        &self,
        token: &str,
        method: AuthMethod,
    ) -> Result<Arc<Principal>, AuthError> {
        if token.len() > self.config.max_len {
            return Err(AuthError::InvalidToken(TokenRejection::TooLarge));
        }
        let now = self.clock.now();
        if let Some(hit) = self.cache.get(token)
            && hit.method == method
        {
            return self
                .still_valid(hit, now)
                .inspect_err(|_| self.cache.remove(token));
        }
        let principal = Box::pin(token::verify(&self.keys, &self.config, token, method, now))
            .await
            .map_err(|e| AuthError::Unavailable(Box::new(e)))?
            .map_err(AuthError::InvalidToken)?;
        let principal = self.still_valid(Arc::new(principal), now)?;
        Box::pin(self.check_session(&principal, now)).await?;
        self.cache.insert(token, principal.clone());
        Ok(principal)
    }

    /// The checks that can change after verification: expiry and revocation.
    fn still_valid(
        &self,
        principal: Arc<Principal>,
        now: OffsetDateTime,
    ) -> Result<Arc<Principal>, AuthError> {
        if principal
            .expires_at
            .is_some_and(|exp| now > exp + self.config.leeway)
        {
            return Err(AuthError::InvalidToken(TokenRejection::Expired));
        }
        if principal
            .session_id
            .is_some_and(|sid| self.revocations.contains(sid))
        {
            return Err(AuthError::InvalidToken(TokenRejection::Revoked));
        }
        Ok(principal)
    }

    /// Verifies an API key; `tenant`, if given, must be the key's tenant.
    pub async fn verify_api_key(
        &self,
        text: &str,
        tenant: Option<TenantId>,
    ) -> Result<Arc<Principal>, AuthError> {
        let reject = AuthError::InvalidApiKey;
        let (id, secret_hash) = self
            .prefix
            .parse(text)
            .ok_or(reject(ApiKeyRejection::Malformed))?;
        let key = match self.api_keys.get_api_key(id).await {
            Ok(key) => key,
            Err(StoreError::NotFound(Entity::ApiKey)) => {
                return Err(reject(ApiKeyRejection::Unknown));
            }
            Err(other) => return Err(AuthError::Unavailable(Box::new(other))),
        };
        if !hashes_equal(&key.secret_hash, &secret_hash) {
            return Err(reject(ApiKeyRejection::WrongSecret));
        }
        let now = self.clock.now();
        if key.revoked_at.is_some() {
            return Err(reject(ApiKeyRejection::Revoked));
        }
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(reject(ApiKeyRejection::Expired));
        }
        if tenant.is_some_and(|tenant| tenant != key.tenant_id) {
            return Err(reject(ApiKeyRejection::WrongTenant));
        }
        self.touch(id, now).await;
        Ok(Arc::new(Principal {
            subject: Subject::ApiKey(id),
            tenant_id: key.tenant_id,
            session_id: None,
            roles: Vec::new(),
            scopes: key.scopes,
            method: AuthMethod::ApiKey,
            expires_at: key.expires_at,
            extra: serde_json::Map::new(),
            minted_by: Some(key.created_by),
            oauth: None,
        }))
    }

    /// Records use of a key at most once a minute per key and process: a
    /// failure to record is logged, never fatal.
    async fn touch(&self, id: ApiKeyId, now: OffsetDateTime) {
        let due = {
            let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
            let due = touched
                .get(&id)
                .is_none_or(|last| now - *last >= TOUCH_INTERVAL);
            if due {
                touched.insert(id, now);
            }
            due
        };
        if due && let Err(error) = self.api_keys.touch_api_key(id, now).await {
            tracing::warn!(api_key_id = %id, %error, "recording api key use failed");
        }
    }

    /// The set of revoked sessions this authenticator consults.
    pub fn revocations(&self) -> &Arc<RevocationSet> {
        &self.revocations
    }

    /// The signing keys.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }
}

/// The token of `Bearer <token>`; the scheme is case-insensitive.
fn bearer_token(header: &str) -> Result<&str, AuthError> {
    let header = header.trim();
    let (scheme, token) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::UnsupportedScheme);
    }
    let token = token.trim_start();
    // Header values hold no CR or LF; a space or tab inside means more than
    // one token. `memchr2` scans a few hundred bytes of JWT with SIMD.
    let blank = memchr::memchr2(b' ', b'\t', token.as_bytes()).is_some();
    if token.is_empty() || blank {
        Err(AuthError::MalformedHeader)
    } else {
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::{AuthError, bearer_token};

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token("Bearer abc.def").ok(), Some("abc.def"));
        assert_eq!(bearer_token("bearer   abc").ok(), Some("abc"));
        for malformed in ["Bearer", "Bearer ", "Bearer a b", "BEARER a\tb"] {
            assert!(
                matches!(bearer_token(malformed), Err(AuthError::MalformedHeader)),
                "{malformed:?}"
            );
        }
        for other in ["", "Basic abc", "abc", "Digest a=b"] {
            assert!(
                matches!(bearer_token(other), Err(AuthError::UnsupportedScheme)),
                "{other:?}"
            );
        }
    }
}
