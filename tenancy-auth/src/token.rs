//! Access tokens: issuing and verifying JWTs.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use jsonwebtoken::errors::ErrorKind;
use quick_cache::Equivalent as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tenancy_core::{Membership, RoleName, SessionId, TenantId, User, UserId};
use time::{Duration, OffsetDateTime};

use crate::api_key::Scope;
use crate::error::TokenRejection;
use crate::keys::{KeyError, KeyRing};
use crate::principal::{AuthMethod, OAuthAccess, Principal, Subject};

/// Access-token settings. Start from [`TokenConfig::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenConfig {
    /// The `iss` claim issued and required.
    pub issuer: String,
    /// The `aud` claim issued and required.
    pub audience: String,
    /// How long an access token lives (default 15 minutes).
    pub ttl: Duration,
    /// Clock skew tolerated on `exp` and `nbf` (default 30 seconds).
    pub leeway: Duration,
    /// Longest token accepted, in bytes (default 8 KiB); longer ones are
    /// refused before parsing.
    pub max_len: usize,
}

impl TokenConfig {
    /// Settings for `issuer` and `audience`, with the defaults above.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            ttl: Duration::minutes(15),
            leeway: Duration::seconds(30),
            max_len: 8 * 1024,
        }
    }

    /// Sets how long an access token lives.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the clock skew tolerated on `exp` and `nbf`.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Sets the longest token accepted, in bytes.
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }
}

/// Adds host-defined claims to access tokens, such as a plan or a locale.
/// Read them back with [`Principal::claim`]. Names of registered claims
/// (`iss`, `sub`, `tid`, …) are ignored.
pub trait ClaimsHook: Send + Sync + 'static {
    /// Extra claims for `user` acting through `membership`.
    fn extra_claims(&self, user: &User, membership: &Membership) -> Map<String, Value>;
}

const REGISTERED: [&str; 13] = [
    "iss",
    "aud",
    "sub",
    "tid",
    "sid",
    "jti",
    "iat",
    "nbf",
    "exp",
    "roles",
    "client_id",
    "scope",
    "minted_by",
];

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(aud) => aud == wanted,
            Audience::Many(auds) => auds.iter().any(|aud| aud == wanted),
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    aud: Audience,
    sub: String,
    tid: String,
    /// The session; absent only in a `client_credentials` token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    /// The OAuth client holding the token, if an OAuth client does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    /// The granted OAuth scopes, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// For a `client_credentials` token: who registered the client
    /// (`user:<id>` or `system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    minted_by: Option<String>,
    jti: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// A freshly issued access token.
#[derive(Clone)]
pub struct AccessToken {
    /// The compact JWT. This is a bearer secret.
    pub token: String,
    /// When it expires.
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What the issuer needs to mint a user's access token.
pub(crate) struct Grant<'a> {
    pub(crate) user: &'a User,
    pub(crate) membership: &'a Membership,
    pub(crate) session: SessionId,
    pub(crate) now: OffsetDateTime,
    /// The OAuth client and its granted scopes, for a token issued through
    /// the authorization server.
    pub(crate) oauth: Option<(&'a str, &'a str)>,
}

pub(crate) fn issue(
    keys: &KeyRing,
    config: &TokenConfig,
    hook: Option<&dyn ClaimsHook>,
    grant: &Grant<'_>,
) -> Result<AccessToken, KeyError> {
    let signer = keys.signer()?;
    let expires_at = grant.now + config.ttl;
    let mut extra = hook
        .map(|hook| hook.extra_claims(grant.user, grant.membership))
        .unwrap_or_default();
    extra.retain(|name, _| !REGISTERED.contains(&name.as_str()));
    let iat = grant.now.unix_timestamp();
    let claims = AccessClaims {
        iss: config.issuer.clone(),
        aud: Audience::One(config.audience.clone()),
        sub: grant.user.id.to_string(),
        tid: grant.membership.tenant_id.to_string(),
        sid: Some(grant.session.to_string()),
        client_id: grant.oauth.map(|(client, _)| client.to_owned()),
        scope: grant.oauth.map(|(_, scope)| scope.to_owned()),
        minted_by: None,
        jti: uuid::Uuid::now_v7().to_string(),
        iat,
        nbf: iat,
        exp: expires_at.unix_timestamp(),
        roles: grant
            .membership
            .roles
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        extra,
    };
    let mut header = Header::new(signer.algorithm.jwt());
    header.kid = Some(signer.kid);
    let token = jsonwebtoken::encode(&header, &claims, &signer.key).map_err(|_| KeyError::Sign)?;
    Ok(AccessToken { token, expires_at })
}

/// Issues a `client_credentials` access token: `sub` and `client_id` are
/// the client, `tid` its tenant, `scope` the granted scopes, `minted_by`
/// the member who registered it (whose roles cap its powers). No session.
#[cfg(feature = "oidc")]
pub(crate) fn issue_for_client(
    keys: &KeyRing,
    config: &TokenConfig,
    client_id: &str,
    tenant: TenantId,
    scope: &str,
    minted_by: tenancy_core::Actor,
    now: OffsetDateTime,
) -> Result<AccessToken, KeyError> {
    let signer = keys.signer()?;
    let expires_at = now + config.ttl;
    let iat = now.unix_timestamp();
    let claims = AccessClaims {
        iss: config.issuer.clone(),
        aud: Audience::One(config.audience.clone()),
        sub: client_id.to_owned(),
        tid: tenant.to_string(),
        sid: None,
        client_id: Some(client_id.to_owned()),
        scope: Some(scope.to_owned()),
        minted_by: Some(minted_by.to_string()),
        jti: uuid::Uuid::now_v7().to_string(),
        iat,
        nbf: iat,
        exp: expires_at.unix_timestamp(),
        roles: Vec::new(),
        extra: Map::new(),
    };
    let mut header = Header::new(signer.algorithm.jwt());
    header.kid = Some(signer.kid);
    let token = jsonwebtoken::encode(&header, &claims, &signer.key).map_err(|_| KeyError::Sign)?;
    Ok(AccessToken { token, expires_at })
}

/// An actor as written in a `minted_by` claim.
fn parse_actor(text: &str) -> Option<tenancy_core::Actor> {
    use tenancy_core::Actor;
    if text == "system" {
        return Some(Actor::System);
    }
    let (kind, id) = text.split_once(':')?;
    Actor::from_parts(kind, Some(uuid::Uuid::try_parse(id).ok()?))
}

/// Verifies `token` completely except for revocation; returns the principal
/// and the session id. Each rejection has its own [`TokenRejection`].
pub(crate) async fn verify(
    keys: &KeyRing,
    config: &TokenConfig,
    token: &str,
    method: AuthMethod,
    now: OffsetDateTime,
) -> Result<Result<Principal, TokenRejection>, KeyError> {
    if token.len() > config.max_len {
        return Ok(Err(TokenRejection::TooLarge));
    }
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return Ok(Err(TokenRejection::Malformed));
    };
    let Some(kid) = header.kid.as_deref() else {
        return Ok(Err(TokenRejection::MissingKid));
    };
    let verifier = match keys.loaded_verifier(kid) {
        Some(verifier) => verifier,
        None => match keys.verifier(kid).await? {
            Some(verifier) => verifier,
            None => return Ok(Err(TokenRejection::UnknownKid)),
        },
    };
    // The key decides the algorithm; the header only has to agree.
    if header.alg != verifier.algorithm.jwt() {
        return Ok(Err(TokenRejection::AlgorithmMismatch));
    }
    Ok(check_claims(token, &verifier, config, method, now))
}

fn check_claims(
    token: &str,
    verifier: &crate::keys::Verifier,
    config: &TokenConfig,
    method: AuthMethod,
    now: OffsetDateTime,
) -> Result<Principal, TokenRejection> {
    // The header was parsed once already; verify the signature and read the
    // claims directly rather than parse it again through `decode`.
    let (message, signature) = token.rsplit_once('.').ok_or(TokenRejection::Malformed)?;
    let payload = message
        .split_once('.')
        .map(|(_, payload)| payload)
        .ok_or(TokenRejection::Malformed)?;
    match jsonwebtoken::crypto::verify(
        signature,
        message.as_bytes(),
        &verifier.key,
        verifier.algorithm.jwt(),
    ) {
        Ok(true) => {}
        Ok(false) => return Err(TokenRejection::BadSignature),
        Err(error) => {
            return Err(match error.kind() {
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenRejection::AlgorithmMismatch
                }
                ErrorKind::Base64(_) => TokenRejection::Malformed,
                _ => TokenRejection::BadSignature,
            });
        }
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenRejection::Malformed)?;
    let claims: AccessClaims =
        serde_json::from_slice(&payload).map_err(|_| TokenRejection::InvalidClaims)?;
    if claims.iss != config.issuer {
        return Err(TokenRejection::WrongIssuer);
    }
    if !claims.aud.contains(&config.audience) {
        return Err(TokenRejection::WrongAudience);
    }
    let leeway = config.leeway.whole_seconds();
    let now_secs = now.unix_timestamp();
    if now_secs > claims.exp.saturating_add(leeway) {
        return Err(TokenRejection::Expired);
    }
    if now_secs.saturating_add(leeway) < claims.nbf {
        return Err(TokenRejection::NotYetValid);
    }
    let invalid = |_| TokenRejection::InvalidClaims;
    let tenant_id: TenantId = claims.tid.parse().map_err(invalid)?;
    let expires_at = OffsetDateTime::from_unix_timestamp(claims.exp)
        .map_err(|_| TokenRejection::InvalidClaims)?;
    let granted: Vec<String> = claims
        .scope
        .as_deref()
        .map(|scope| {
            scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    // The API scopes among the granted ones cap the caller; OIDC scopes
    // (`openid`, `profile`, …) grant no API permission.
    let api_scopes: Vec<Scope> = granted
        .iter()
        .filter(|s| {
            !matches!(
                s.as_str(),
                "openid" | "profile" | "email" | "offline_access"
            )
        })
        .filter_map(|s| Scope::new(s.as_str()).ok())
        .collect();
    let issued_at = OffsetDateTime::from_unix_timestamp(claims.iat)
        .map_err(|_| TokenRejection::InvalidClaims)?;
    let oauth = claims.client_id.clone().map(|client_id| OAuthAccess {
        client_id,
        scopes: granted.clone(),
        issued_at,
    });
    let Some(sid) = claims.sid.as_deref() else {
        // Only a client-credentials token has no session: its subject is
        // the client itself, and it names who registered it.
        let (Some(client_id), Some(minted_by)) = (&claims.client_id, &claims.minted_by) else {
            return Err(TokenRejection::InvalidClaims);
        };
        if *client_id != claims.sub {
            return Err(TokenRejection::InvalidClaims);
        }
        let client: tenancy_core::OAuthClientId = client_id
            .parse()
            .map_err(|_| TokenRejection::InvalidClaims)?;
        let minted_by = parse_actor(minted_by).ok_or(TokenRejection::InvalidClaims)?;
        return Ok(Principal {
            subject: Subject::OAuthClient(client),
            tenant_id,
            session_id: None,
            roles: Vec::new(),
            scopes: api_scopes,
            method,
            expires_at: Some(expires_at),
            extra: claims.extra,
            minted_by: Some(minted_by),
            oauth,
        });
    };
    let user: UserId = claims.sub.parse().map_err(invalid)?;
    let session: SessionId = sid.parse().map_err(invalid)?;
    let roles = claims
        .roles
        .into_iter()
        .map(RoleName::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TokenRejection::InvalidClaims)?;
    Ok(Principal {
        subject: Subject::User(user),
        tenant_id,
        session_id: Some(session),
        roles,
        scopes: if oauth.is_some() {
            api_scopes
        } else {
            Vec::new()
        },
        method,
        expires_at: Some(expires_at),
        extra: claims.extra,
        minted_by: None,
        oauth,
    })
}

/// Verified tokens, so a repeat request skips the signature check. An
/// entry holds the token itself (hashed with the cache's keyed hasher,
/// compared in constant time) and is used only while its token is
/// unexpired and its session unrevoked. Memory is about `capacity` times
/// the token length.
pub(crate) struct VerifiedCache {
    entries: Option<quick_cache::sync::Cache<CachedToken, Arc<Principal>>>,
}

/// A verified token held as a cache key.
struct CachedToken(Box<str>);

/// A presented token looked up without copying it.
struct PresentedToken<'a>(&'a str);

impl std::hash::Hash for CachedToken {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_bytes().hash(state);
    }
}

impl std::hash::Hash for PresentedToken<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_bytes().hash(state);
    }
}

impl PartialEq for CachedToken {
    fn eq(&self, other: &Self) -> bool {
        PresentedToken(&self.0).equivalent(other)
    }
}

impl Eq for CachedToken {}

impl quick_cache::Equivalent<CachedToken> for PresentedToken<'_> {
    fn equivalent(&self, key: &CachedToken) -> bool {
        crate::secret::bytes_equal(self.0.as_bytes(), key.0.as_bytes())
    }
}

impl VerifiedCache {
    /// A cache of `capacity` tokens; 0 disables caching.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
        }
    }

    pub(crate) fn get(&self, token: &str) -> Option<Arc<Principal>> {
        self.entries.as_ref()?.get(&PresentedToken(token))
    }

    pub(crate) fn insert(&self, token: &str, principal: Arc<Principal>) {
        if let Some(entries) = &self.entries {
            entries.insert(CachedToken(token.into()), principal);
        }
    }

    pub(crate) fn remove(&self, token: &str) {
        if let Some(entries) = &self.entries {
            entries.remove(&PresentedToken(token));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Arc<Principal> {
        Arc::new(Principal {
            subject: Subject::User(UserId::new()),
            tenant_id: TenantId::new(),
            session_id: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            method: AuthMethod::AccessToken,
            expires_at: None,
            extra: Map::new(),
            minted_by: None,
            oauth: None,
        })
    }

    #[test]
    fn cache_hits_only_the_exact_token() {
        let cache = VerifiedCache::new(16);
        let cached = principal();
        cache.insert("aaa.bbb.ccc", cached.clone());
        let hit = cache.get("aaa.bbb.ccc").expect("cached");
        assert!(Arc::ptr_eq(&hit, &cached));
        for other in [
            "aaa.bbb.ccd",
            "aaa.bbb.cc",
            "aaa.bbb.cccc",
            "",
            "AAA.bbb.ccc",
        ] {
            assert!(cache.get(other).is_none(), "{other:?} must miss");
        }
        cache.remove("aaa.bbb.ccc");
        assert!(cache.get("aaa.bbb.ccc").is_none());
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = VerifiedCache::new(0);
        cache.insert("aaa.bbb.ccc", principal());
        assert!(cache.get("aaa.bbb.ccc").is_none());
    }
}
