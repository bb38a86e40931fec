//! Connections, domains, policy and pending sign-ins: the records of SSO.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tenancy_core::{RoleName, TenantId, TokenHash, UserId};
use time::OffsetDateTime;
use url::Url;
use uuid::Uuid;

use super::error::SsoError;

/// Identifies an enterprise connection (UUIDv7).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(Uuid);

impl ConnectionId {
    /// A fresh, time-ordered id.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps a UUID read from storage.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID, for storage.
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId({})", self.0.hyphenated())
    }
}

impl FromStr for ConnectionId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s).map(Self)
    }
}

impl Serialize for ConnectionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.hyphenated())
    }
}

impl<'de> Deserialize<'de> for ConnectionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A client secret in the clear, as the host or a tenant admin gives it.
/// `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret. Security: only to send it to its provider.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// A client secret as stored: a compact JWE under the host's key-encryption
/// key (or, under `KeyEncryption::InsecurePlaintext`, marked plaintext).
/// `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret(String);

impl SealedSecret {
    /// Wraps the stored text.
    pub fn from_stored(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The stored text.
    pub fn as_stored(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedSecret(..)")
    }
}

/// The endpoints of a GitHub-style OAuth2 provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Endpoints {
    /// Where the browser is sent to authorize.
    pub authorize: Url,
    /// Where the code is exchanged for an access token.
    pub token: Url,
    /// The user's profile (`id`, `login`, `name`, `email`), read with the access token.
    pub user: Url,
    /// The user's addresses (`[{"email","primary","verified"}]`); without
    /// it, the profile's `email` counts only if it says `email_verified: true`.
    pub emails: Option<Url>,
}

/// How a social connection talks to its provider.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocialProtocol {
    /// Plain OAuth2 plus profile endpoints (GitHub-style).
    OAuth2(Box<OAuth2Endpoints>),
    /// OpenID Connect, endpoints found by discovery from the issuer.
    Oidc {
        /// The issuer (`iss`), also the discovery base, exactly as the
        /// provider writes it (`iss` is compared as a string: a trailing
        /// slash matters).
        issuer: String,
    },
}

/// A sign-in provider configured by the host for every tenant ("Sign in
/// with GitHub"). Its `key` names it in [`super::SignInTarget::Connection`].
#[derive(Debug, Clone)]
pub struct SocialConnection {
    pub(crate) key: String,
    pub(crate) protocol: SocialProtocol,
    pub(crate) client_id: String,
    pub(crate) client_secret: ClientSecret,
    pub(crate) scopes: Vec<String>,
    pub(crate) create_users: bool,
}

fn parse_url(field: &'static str, text: &str) -> Result<Url, SsoError> {
    Url::parse(text).map_err(|e| SsoError::InvalidInput {
        field,
        reason: e.to_string(),
    })
}

impl SocialConnection {
    /// GitHub: `github.com` authorization, `api.github.com` profile and
    /// emails, scopes `read:user user:email`.
    pub fn github(client_id: impl Into<String>, client_secret: ClientSecret) -> Self {
        Self::oauth2(
            "github",
            client_id,
            client_secret,
            OAuth2Endpoints {
                authorize: constant_url("https://github.com/login/oauth/authorize"),
                token: constant_url("https://github.com/login/oauth/access_token"),
                user: constant_url("https://api.github.com/user"),
                emails: Some(constant_url("https://api.github.com/user/emails")),
            },
        )
    }

    /// Google: OpenID Connect discovery at `https://accounts.google.com`.
    pub fn google(client_id: impl Into<String>, client_secret: ClientSecret) -> Self {
        Self {
            key: "google".to_owned(),
            protocol: SocialProtocol::Oidc {
                issuer: "https://accounts.google.com".to_owned(),
            },
            client_id: client_id.into(),
            client_secret,
            scopes: vec![
                "openid".to_owned(),
                "email".to_owned(),
                "profile".to_owned(),
            ],
            create_users: true,
        }
    }

    /// A GitHub-style OAuth2 provider named `key` at `endpoints` (any URLs:
    /// tests point it at a local simulated provider).
    pub fn oauth2(
        key: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: ClientSecret,
        endpoints: OAuth2Endpoints,
    ) -> Self {
        Self {
            key: key.into(),
            protocol: SocialProtocol::OAuth2(Box::new(endpoints)),
            client_id: client_id.into(),
            client_secret,
            scopes: vec!["read:user".to_owned(), "user:email".to_owned()],
            create_users: true,
        }
    }

    /// An OpenID provider named `key`, found by discovery from `issuer`.
    pub fn oidc(
        key: impl Into<String>,
        issuer: &str,
        client_id: impl Into<String>,
        client_secret: ClientSecret,
    ) -> Result<Self, SsoError> {
        Ok(Self {
            key: key.into(),
            protocol: SocialProtocol::Oidc {
                issuer: {
                    parse_url("issuer", issuer)?;
                    issuer.to_owned()
                },
            },
            client_id: client_id.into(),
            client_secret,
            scopes: vec![
                "openid".to_owned(),
                "email".to_owned(),
                "profile".to_owned(),
            ],
            create_users: true,
        })
    }

    /// Replaces the scopes asked for (`openid` is added for OIDC providers).
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Whether a first sign-in creates the user (default true; their own
    /// tenant is created with them, as registration does). Also bound by
    /// `AuthConfig::registration`.
    pub fn with_user_creation(mut self, create: bool) -> Self {
        self.create_users = create;
        self
    }

    /// The name it is started by.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its protocol and endpoints.
    pub fn protocol(&self) -> &SocialProtocol {
        &self.protocol
    }

    /// The client id registered at the provider.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

/// Parses a URL written in this file (the unit tests parse every one).
#[allow(clippy::expect_used)]
fn constant_url(text: &'static str) -> Url {
    Url::parse(text).expect("a constant url parses")
}

/// A tenant's OpenID Connect identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnterpriseConnection {
    /// Its id.
    pub id: ConnectionId,
    /// The tenant whose members sign in through it.
    pub tenant_id: TenantId,
    /// A name shown to admins.
    pub name: String,
    /// The provider's issuer URL (discovery base, `iss`).
    pub issuer: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// The client secret, encrypted.
    pub client_secret: SealedSecret,
    /// The role of members created just in time.
    pub default_role: RoleName,
    /// Whether a first sign-in may create the user (and always the membership).
    pub create_users: bool,
    /// Whether sign-in through it is on.
    pub enabled: bool,
    /// When it was registered.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

/// What a tenant admin registers.
#[derive(Debug, Clone)]
pub struct NewEnterpriseConnection {
    /// A name shown to admins.
    pub name: String,
    /// The provider's issuer URL.
    pub issuer: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// The client secret.
    pub client_secret: ClientSecret,
    /// The role of members created just in time.
    pub default_role: RoleName,
    /// Whether a first sign-in may create the user.
    pub create_users: bool,
    /// Whether sign-in through it is on.
    pub enabled: bool,
}

/// A change to an enterprise connection: each `Some` replaces the field.
#[derive(Debug, Clone, Default)]
pub struct ConnectionUpdate {
    /// New name.
    pub name: Option<String>,
    /// New issuer.
    pub issuer: Option<String>,
    /// New client id.
    pub client_id: Option<String>,
    /// New client secret.
    pub client_secret: Option<ClientSecret>,
    /// New default role.
    pub default_role: Option<RoleName>,
    /// Whether a first sign-in may create the user.
    pub create_users: Option<bool>,
    /// Enables or disables it.
    pub enabled: Option<bool>,
}

/// A lowercase DNS name (`acme.example`), at least two labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DomainName(String);

impl DomainName {
    /// Validates and lowercases `text`: ASCII letters, digits, `-` and
    /// dots, labels of 1–63 characters not starting or ending with `-`,
    /// at least two labels, at most 253 characters.
    pub fn new(text: &str) -> Result<Self, SsoError> {
        let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let invalid = |reason: &str| SsoError::InvalidInput {
            field: "domain",
            reason: reason.to_owned(),
        };
        if lower.is_empty() || lower.len() > 253 {
            return Err(invalid("a domain has 1 to 253 characters"));
        }
        let labels: Vec<&str> = lower.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid("a domain has at least two labels"));
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(invalid("not a valid domain name"));
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(invalid("an address is not a domain"));
        }
        Ok(Self(lower))
    }

    /// The domain of an email address.
    pub fn of_email(email: &str) -> Result<Self, SsoError> {
        let (_, domain) = email.rsplit_once('@').ok_or(SsoError::InvalidInput {
            field: "email",
            reason: "not an email address".to_owned(),
        })?;
        Self::new(domain)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email domain claimed by a tenant. One tenant per domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmailDomain {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The domain.
    pub domain: DomainName,
    /// The value to publish in a TXT record at
    /// `_tenancy-challenge.<domain>`: `tenancy-domain-verification=<token>`.
    /// Public by nature, not a secret.
    pub verification_token: String,
    /// When it was verified; unverified domains route no sign-in.
    #[serde(with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
    /// When it was claimed.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl EmailDomain {
    /// Whether it is verified.
    pub fn is_verified(&self) -> bool {
        self.verified_at.is_some()
    }

    /// The DNS name the TXT record is looked up at.
    pub fn challenge_name(&self) -> String {
        format!("_tenancy-challenge.{}", self.domain)
    }

    /// The TXT record value that proves control.
    pub fn challenge_value(&self) -> String {
        format!(
            "{}{}",
            super::dns::TXT_RECORD_PREFIX,
            self.verification_token
        )
    }
}

/// A tenant's SSO policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SsoPolicy {
    /// Members must sign in through the tenant's identity provider:
    /// password logins into the tenant are refused.
    pub require_sso: bool,
}

/// Which connection a sign-in goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionRef {
    /// A social connection, by key.
    Social(String),
    /// A tenant's enterprise connection.
    Enterprise {
        /// The tenant.
        tenant_id: TenantId,
        /// The connection.
        id: ConnectionId,
    },
}

impl ConnectionRef {
    /// The provider key identities are recorded under: `social:<key>` or
    /// `enterprise:<id>`.
    pub fn provider_key(&self) -> String {
        match self {
            ConnectionRef::Social(key) => format!("social:{key}"),
            ConnectionRef::Enterprise { id, .. } => format!("enterprise:{id}"),
        }
    }
}

/// A pending sign-in between [`super::Sso::start`] and
/// [`super::Sso::finish`]: found by the hash of its `state`, used once.
/// The PKCE verifier and the nonce are not stored: they are derived from
/// the browser-binding secret, which only the browser holds (its cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInState {
    /// SHA-256 of the `state` parameter.
    pub state_hash: TokenHash,
    /// SHA-256 of the browser-binding secret.
    pub binding_hash: TokenHash,
    /// The connection.
    pub connection: ConnectionRef,
    /// Where to send the browser afterwards (a path of this app).
    pub return_to: Option<String>,
    /// When it was started.
    pub created_at: OffsetDateTime,
    /// When it lapses.
    pub expires_at: OffsetDateTime,
}

/// A provider's account linked to a user: `(provider, subject)` is unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// [`ConnectionRef::provider_key`].
    pub provider: String,
    /// The provider's stable id of the account (`sub`, or the user id).
    pub subject: String,
    /// The user.
    pub user_id: UserId,
    /// When it was linked.
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_validated_and_lowercased() {
        assert_eq!(
            DomainName::new("Acme.Example.").unwrap().as_str(),
            "acme.example"
        );
        for bad in [
            "",
            "acme",
            "-acme.example",
            "acme-.example",
            "a..b",
            "1.2.3.4",
            "ac me.example",
            "acme.example/x",
        ] {
            assert!(DomainName::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            DomainName::of_email("ada@Acme.Example").unwrap().as_str(),
            "acme.example"
        );
        assert!(DomainName::of_email("no-at-sign").is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let secret = ClientSecret::new("s3cr3t");
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        let sealed = SealedSecret::from_stored("eyJhbGciOi.s3cr3t");
        assert!(!format!("{sealed:?}").contains("s3cr3t"));
        let github = SocialConnection::github("id", ClientSecret::new("s3cr3t"));
        assert!(!format!("{github:?}").contains("s3cr3t"));
        assert!(matches!(github.protocol(), SocialProtocol::OAuth2(_)));
    }
}
