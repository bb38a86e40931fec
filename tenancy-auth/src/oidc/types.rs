//! The provider's records: clients, redirect URIs, client secrets, pending
//! authorization requests, authorization codes, consents and grants.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tenancy_core::{
    Actor, IdParseError, OAuthClientId, SessionId, TenantId, TokenHash, UserId, ValidationError,
};
use time::OffsetDateTime;

use crate::keys::KeyAlgorithm;
use crate::secret::SecretToken;

/// A client's public identifier (`client_id`): a UUID, compared as text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId {
    id: OAuthClientId,
    text: String,
}

impl ClientId {
    /// A fresh identifier.
    pub fn new() -> Self {
        Self::from_id(OAuthClientId::new())
    }

    /// The identifier of `id`.
    pub fn from_id(id: OAuthClientId) -> Self {
        Self {
            text: id.to_string(),
            id,
        }
    }

    /// The text sent as `client_id`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The typed id, as audit events name the client.
    pub fn id(&self) -> OAuthClientId {
        self.id
    }
}

impl Default for ClientId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({})", self.text)
    }
}

impl FromStr for ClientId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let id: OAuthClientId = s.parse()?;
        // Only the canonical (lowercase, hyphenated) spelling names a client.
        let parsed = Self::from_id(id);
        if parsed.text == s {
            Ok(parsed)
        } else {
            "not-a-client-id"
                .parse::<OAuthClientId>()
                .map(Self::from_id)
        }
    }
}

impl Serialize for ClientId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ClientId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether a client can keep a secret (RFC 6749 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientKind {
    /// A server-side app: it authenticates with a secret.
    #[default]
    Confidential,
    /// A browser or native app: no secret, PKCE required.
    Public,
}

impl ClientKind {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientKind::Confidential => "confidential",
            ClientKind::Public => "public",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "confidential" => Some(ClientKind::Confidential),
            "public" => Some(ClientKind::Public),
            _ => None,
        }
    }
}

/// An OAuth grant type a client may use at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GrantType {
    /// RFC 6749 §4.1, with PKCE.
    AuthorizationCode,
    /// RFC 6749 §6: rotating refresh tokens.
    RefreshToken,
    /// RFC 6749 §4.4: a machine client acting in its own tenant.
    ClientCredentials,
}

impl GrantType {
    /// The `grant_type` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
        }
    }

    /// Parses a `grant_type` value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "authorization_code" => Some(GrantType::AuthorizationCode),
            "refresh_token" => Some(GrantType::RefreshToken),
            "client_credentials" => Some(GrantType::ClientCredentials),
            _ => None,
        }
    }
}

/// A registered redirect URI (or post-logout redirect URI): absolute, no
/// fragment, `https`, or `http` on a loopback host (`127.0.0.1`, `[::1]`,
/// `localhost`) for native apps (RFC 8252 §7.3, §8.3).
///
/// A presented URI matches a registered one when the two strings are equal
/// (no prefix, no wildcard), except that for a loopback IP literal
/// (`127.0.0.1`, `[::1]`) over `http` the port may differ, as RFC 8252 §7.3
/// requires: native apps listen on an ephemeral port.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RedirectUri(String);

impl RedirectUri {
    /// Validates a redirect URI.
    pub fn parse(raw: &str) -> Result<Self, InvalidRedirectUri> {
        let invalid = |reason: &'static str| InvalidRedirectUri { reason };
        if raw.len() > 2000 {
            return Err(invalid("longer than 2000 characters"));
        }
        let url = url::Url::parse(raw).map_err(|_| invalid("not an absolute URI"))?;
        if url.fragment().is_some() || raw.contains('#') {
            return Err(invalid("must not contain a fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("must not contain user information"));
        }
        match url.scheme() {
            "https" if url.host().is_some() => Ok(Self(raw.to_owned())),
            "http" if is_loopback(&url) => Ok(Self(raw.to_owned())),
            "http" => Err(invalid("http is allowed only for loopback hosts")),
            _ => Err(invalid("the scheme must be https (or http on loopback)")),
        }
    }

    /// The URI text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this registered URI (see the type's docs).
    pub fn matches(&self, presented: &str) -> bool {
        if self.0 == presented {
            return true;
        }
        let (Ok(registered), Ok(parsed)) = (url::Url::parse(&self.0), url::Url::parse(presented))
        else {
            return false;
        };
        let ip_loopback = match registered.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            _ => false,
        };
        // Only the port may differ, and only for an http loopback IP
        // registered in canonical form: the registered URI with the
        // presented port must be the presented text, character for character.
        if registered.scheme() != "http" || !ip_loopback || registered.as_str() != self.0 {
            return false;
        }
        let mut candidate = registered;
        if candidate.set_port(parsed.port()).is_err() {
            return false;
        }
        candidate.as_str() == presented
    }
}

/// Why a redirect URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid redirect uri: {reason}")]
pub struct InvalidRedirectUri {
    reason: &'static str,
}

impl InvalidRedirectUri {
    /// Why, in words.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

impl fmt::Debug for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RedirectUri {
    type Error = InvalidRedirectUri;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<RedirectUri> for String {
    fn from(uri: RedirectUri) -> Self {
        uri.0
    }
}

pub(crate) const CLIENT_SECRET_PREFIX: &str = "cs_";

/// A confidential client's secret: 256 random bits, shown once at
/// registration or rotation; only its SHA-256 is stored. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(SecretToken);

impl ClientSecret {
    pub(crate) fn generate() -> Self {
        Self(SecretToken::generate(CLIENT_SECRET_PREFIX))
    }

    /// The secret text, to hand to the client's developer once.
    ///
    /// This is a secret: never log or store it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The same as [`ClientSecret::expose`].
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// The hash stored in its place.
    pub fn hash(&self) -> TokenHash {
        self.0.hash()
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// The OIDC scopes: they grant claims, never API permissions.
pub const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Whether `scope` is one of [`OIDC_SCOPES`].
pub fn is_oidc_scope(scope: &str) -> bool {
    OIDC_SCOPES.contains(&scope)
}

/// Validates one scope value: an OIDC scope, or an API permission pattern
/// (`projects:read`, `projects:*`; the rules of [`crate::Scope`]).
pub(crate) fn validate_scope(scope: &str) -> Result<(), ValidationError> {
    if is_oidc_scope(scope) {
        return Ok(());
    }
    crate::Scope::new(scope).map(|_| ())
}

/// What it takes to register a client. Start from
/// `NewOAuthClient { name, .., ..NewOAuthClient::default() }`.
///
/// Not `#[non_exhaustive]`, so it can be written as a struct expression:
/// new fields always come with a default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewOAuthClient {
    /// A name shown on the consent page: 1 to 200 characters.
    pub name: String,
    /// Confidential (a secret is issued) or public (PKCE only).
    pub kind: ClientKind,
    /// Where authorization answers may be sent (at least one for the
    /// `authorization_code` grant).
    pub redirect_uris: Vec<RedirectUri>,
    /// Where RP-initiated logout may send the browser afterwards.
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    /// The grants it may use (default: `authorization_code` alone when empty).
    pub grant_types: Vec<GrantType>,
    /// The scopes it may ask for: OIDC scopes and API permission patterns.
    pub scopes: Vec<String>,
    /// A first-party app of the host: never asks for consent.
    pub first_party: bool,
    /// How its ID tokens are signed (default RS256).
    pub id_token_signed_response_alg: Option<KeyAlgorithm>,
    /// Its public keys (a JWKS document), for `private_key_jwt` client
    /// authentication (RFC 7523 §2.2): a confidential client may then sign
    /// an assertion instead of sending its secret.
    pub jwks: Option<serde_json::Value>,
}

/// A registered client. The secret is not kept: only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OAuthClient {
    /// Its `client_id`.
    pub id: ClientId,
    /// The tenant it belongs to; `None` for a global (first-party) client.
    pub tenant_id: Option<TenantId>,
    /// Its name, shown on the consent page.
    pub name: String,
    /// Confidential or public.
    pub kind: ClientKind,
    /// Registered redirect URIs.
    pub redirect_uris: Vec<RedirectUri>,
    /// Registered post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    /// Grants it may use.
    pub grant_types: Vec<GrantType>,
    /// Scopes it may ask for.
    pub scopes: Vec<String>,
    /// Never asks for consent.
    pub first_party: bool,
    /// How its ID tokens are signed.
    #[serde(serialize_with = "algorithm_name")]
    pub id_token_signed_response_alg: KeyAlgorithm,
    /// Its public keys, for `private_key_jwt`.
    pub jwks: Option<serde_json::Value>,
    /// SHA-256 of its secret (confidential clients).
    #[serde(skip)]
    pub secret_hash: Option<TokenHash>,
    /// Who registered it: for `client_credentials`, its powers never exceed
    /// that member's roles.
    pub created_by: Actor,
    /// When it was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

fn algorithm_name<S: serde::Serializer>(
    algorithm: &KeyAlgorithm,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(algorithm.as_str())
}

impl OAuthClient {
    /// Whether it may use `grant`.
    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// Whether it may ask for `scope`.
    pub fn allows_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The registered redirect URI `presented` matches, if any.
    pub fn redirect_uri(&self, presented: &str) -> Option<&RedirectUri> {
        self.redirect_uris.iter().find(|uri| uri.matches(presented))
    }
}

/// Identifies a pending authorization request (the `interaction` of the
/// login and consent pages): 256 random bits, URL-safe.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InteractionId(String);

impl InteractionId {
    pub(crate) fn generate() -> Self {
        use base64::Engine as _;
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::secret::random_256()))
    }

    /// Accepts text shaped like an interaction id.
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() == 43
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(text.to_owned()))
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for InteractionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InteractionId({}…)", self.0.get(..6).unwrap_or(""))
    }
}

/// `prompt` values of OIDC Core §3.1.2.1 that the provider honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Prompt {
    /// `none`: answer without any page, or fail.
    pub none: bool,
    /// `login`: authenticate again.
    pub login: bool,
    /// `consent`: ask for consent again.
    pub consent: bool,
}

/// A validated authorization request, waiting for login or consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuthorizationRequest {
    /// The client.
    pub client_id: ClientId,
    /// Where to answer (as presented; it matched a registered one).
    pub redirect_uri: String,
    /// Whether the request named `redirect_uri` (rather than relying on
    /// the client's only registered one): only then must the token request
    /// repeat it (RFC 6749 §4.1.3).
    #[serde(default = "presented_by_default")]
    pub redirect_uri_presented: bool,
    /// The scopes asked for, deduplicated, in request order.
    pub scopes: Vec<String>,
    /// Echoed in the answer.
    pub state: Option<String>,
    /// Carried into the ID token.
    pub nonce: Option<String>,
    /// The PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// The prompt values.
    pub prompt: Prompt,
    /// Longest time since the user's authentication, in seconds.
    pub max_age: Option<i64>,
    /// A hint of the user's email, for the login page.
    pub login_hint: Option<String>,
}

/// Requests stored before the flag existed required the redirect URI at
/// the token endpoint.
fn presented_by_default() -> bool {
    true
}

/// A pending authorization request stored between the pages (10 minutes,
/// single use).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Interaction {
    /// Its id.
    pub id: InteractionId,
    /// The request.
    pub request: AuthorizationRequest,
    /// The user who logged in through this interaction's login page, and
    /// when: `prompt=login` and `max_age` are then satisfied.
    pub logged_in: Option<(SessionId, OffsetDateTime)>,
    /// The user the consent page was shown to.
    pub consent_user: Option<UserId>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

/// An authorization code as stored: only its hash, with everything it is
/// bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthorizationCode {
    /// SHA-256 of the code.
    pub code_hash: TokenHash,
    /// The client it was issued to.
    pub client_id: ClientId,
    /// The redirect URI of the request, which the token request must
    /// repeat; empty when the request did not name one (the token request
    /// then need not, RFC 6749 §4.1.3).
    pub redirect_uri: String,
    /// The PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// The request's nonce.
    pub nonce: Option<String>,
    /// The user.
    pub user_id: UserId,
    /// The tenant the tokens act in.
    pub tenant_id: TenantId,
    /// The browser session the user authenticated with.
    pub browser_session: SessionId,
    /// When the user authenticated.
    pub auth_time: OffsetDateTime,
    /// The granted scopes.
    pub scopes: Vec<String>,
    /// When it was issued.
    pub created_at: OffsetDateTime,
    /// When it expires (60 seconds after issue).
    pub expires_at: OffsetDateTime,
    /// When it was redeemed, if it was.
    pub redeemed_at: Option<OffsetDateTime>,
    /// The session (refresh family) its redemption opened, to revoke if the
    /// code is replayed.
    pub issued_session: Option<SessionId>,
}

/// What presenting a code to the store did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodeRedemption {
    /// The code was live and is now spent.
    Redeemed(AuthorizationCode),
    /// The code was already spent: a replay. Holds the code as stored
    /// (with the session its first redemption opened).
    Replayed(AuthorizationCode),
    /// No such code, or expired.
    Unknown,
}

/// A remembered consent: a user let a client act in a tenant with scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Consent {
    /// The user.
    pub user_id: UserId,
    /// The client.
    pub client_id: ClientId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The scopes consented to (sorted).
    pub scopes: Vec<String>,
    /// When it was given (or last widened).
    #[serde(with = "time::serde::rfc3339")]
    pub granted_at: OffsetDateTime,
}

impl Consent {
    /// A consent of `user_id` to `client_id` in `tenant_id` for `scopes`.
    pub fn new(
        user_id: UserId,
        client_id: ClientId,
        tenant_id: TenantId,
        scopes: Vec<String>,
        granted_at: OffsetDateTime,
    ) -> Self {
        Self {
            user_id,
            client_id,
            tenant_id,
            scopes,
            granted_at,
        }
    }

    /// Whether it covers every scope of `asked`.
    pub fn covers(&self, asked: &[String]) -> bool {
        asked.iter().all(|scope| self.scopes.contains(scope))
    }
}

/// An OAuth grant riding on a session (its refresh-token family): which
/// client holds it, with which scopes. Refreshing keeps the scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionGrant {
    /// The session (and refresh family).
    pub session_id: SessionId,
    /// The client holding it.
    pub client_id: ClientId,
    /// The user.
    pub user_id: UserId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The granted scopes.
    pub scopes: Vec<String>,
    /// When the user authenticated.
    pub auth_time: OffsetDateTime,
    /// When it was granted.
    pub created_at: OffsetDateTime,
}

impl SessionGrant {
    /// A grant of `scopes` to `client_id` riding on `session_id`.
    pub fn new(
        session_id: SessionId,
        client_id: ClientId,
        user_id: UserId,
        tenant_id: TenantId,
        scopes: Vec<String>,
        auth_time: OffsetDateTime,
        created_at: OffsetDateTime,
    ) -> Self {
        Self {
            session_id,
            client_id,
            user_id,
            tenant_id,
            scopes,
            auth_time,
            created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        for ok in [
            "https://app.example/callback",
            "https://app.example/cb?x=1",
            "http://127.0.0.1:8080/callback",
            "http://[::1]:9000/cb",
            "http://localhost:3000/cb",
            "http://127.0.0.1/cb",
        ] {
            assert!(RedirectUri::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/relative",
            "app.example/cb",
            "http://app.example/cb",
            "https://app.example/cb#frag",
            "https://app.example/cb#",
            "javascript:alert(1)",
            "ftp://app.example/",
            "https://user:pw@app.example/cb",
            "http://127.0.0.1.evil.example/cb",
            "http://localhost.evil.example/cb",
        ] {
            assert!(RedirectUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirect_uris_match_exactly_except_loopback_ports() {
        let web = RedirectUri::parse("https://app.example/cb").unwrap();
        assert!(web.matches("https://app.example/cb"));
        for other in [
            "https://app.example/cb/",
            "https://app.example/cb?x=1",
            "https://app.example/cb2",
            "https://APP.example/cb",
            "https://app.example:443/cb",
            "https://app.example/c",
            "https://evil.example/cb",
        ] {
            assert!(!web.matches(other), "{other}");
        }
        let native = RedirectUri::parse("http://127.0.0.1:8080/callback").unwrap();
        assert!(native.matches("http://127.0.0.1:8080/callback"));
        assert!(native.matches("http://127.0.0.1:51234/callback"));
        assert!(native.matches("http://127.0.0.1/callback"));
        assert!(!native.matches("http://127.0.0.1:51234/other"));
        assert!(!native.matches("http://127.0.0.1:51234/callback/../callback"));
        assert!(!native.matches("http://127.0.0.1:51234/callback?x=1"));
        assert!(!native.matches("https://127.0.0.1:8080/callback"));
        assert!(!native.matches("http://127.0.0.1:8080/callback#x"));
        assert!(!native.matches("http://localhost:8080/callback"));
        let named = RedirectUri::parse("http://localhost:8080/cb").unwrap();
        assert!(!named.matches("http://localhost:8081/cb"));
    }

    #[test]
    fn secrets_redact_and_ids_round_trip() {
        let secret = ClientSecret::generate();
        assert_eq!(format!("{secret:?}"), "ClientSecret([redacted])");
        assert!(secret.expose().starts_with("cs_"));
        let id = ClientId::new();
        assert_eq!(id.as_str().parse::<ClientId>().unwrap(), id);
        assert!(id.as_str().to_uppercase().parse::<ClientId>().is_err());
        assert!(InteractionId::parse(InteractionId::generate().as_str()).is_some());
        assert!(InteractionId::parse("short").is_none());
    }

    #[test]
    fn scopes_are_oidc_or_permissions() {
        assert!(validate_scope("openid").is_ok());
        assert!(validate_scope("projects:read").is_ok());
        assert!(validate_scope("Projects read").is_err());
    }
}
