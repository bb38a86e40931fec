//! Who is calling: the outcome of authentication.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tenancy_core::{Actor, ApiKeyId, OAuthClientId, RoleName, SessionId, TenantId, UserId};
use time::OffsetDateTime;

use crate::api_key::Scope;

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthMethod {
    /// A bearer access token (JWT) in the `Authorization` header.
    AccessToken,
    /// An access token carried in a cookie.
    Cookie,
    /// An API key.
    ApiKey,
}

/// The caller itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Subject {
    /// A signed-in user.
    User(UserId),
    /// A machine caller.
    ApiKey(ApiKeyId),
    /// A machine client of the SDK's authorization server, through the
    /// OAuth `client_credentials` grant: it acts in the tenant it was
    /// registered in, with the registering member's roles capped by its
    /// scopes (as an API key).
    OAuthClient(OAuthClientId),
}

/// An authenticated caller, acting in one tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Principal {
    /// Who.
    pub subject: Subject,
    /// The tenant it acts in.
    pub tenant_id: TenantId,
    /// The session, for users.
    pub session_id: Option<SessionId>,
    /// The user's roles in the tenant (empty for API keys).
    pub roles: Vec<RoleName>,
    /// The API key's scopes (empty for users).
    pub scopes: Vec<Scope>,
    /// How it authenticated.
    pub method: AuthMethod,
    /// When the credential stops working, if it does.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Host-defined claims of the access token (see `ClaimsHook`).
    pub extra: Map<String, Value>,
    /// For API keys and OAuth machine clients, who created the key or
    /// registered the client: its permissions never exceed that member's
    /// roles.
    pub minted_by: Option<Actor>,
    /// For callers holding an OAuth access token of the SDK's
    /// authorization server: the client and every scope granted (OIDC
    /// scopes included). The API scopes among them are also in
    /// [`Principal::scopes`] and cap the caller's permissions.
    pub oauth: Option<OAuthAccess>,
}

/// The OAuth grant behind an access token: which client holds it and the
/// scopes it was granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OAuthAccess {
    /// The client's `client_id`.
    pub client_id: String,
    /// Every granted scope, in the token's order.
    pub scopes: Vec<String>,
    /// When the token was issued (its `iat`): a machine client's tokens
    /// issued before its registration last changed (secret rotation,
    /// scopes, grants) are refused.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
}

impl OAuthAccess {
    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

impl Principal {
    /// The user, if a user is calling.
    pub fn user_id(&self) -> Option<UserId> {
        match self.subject {
            Subject::User(id) => Some(id),
            Subject::ApiKey(_) | Subject::OAuthClient(_) => None,
        }
    }

    /// The audit actor for this caller.
    pub fn actor(&self) -> Actor {
        match self.subject {
            Subject::User(id) => Actor::User(id),
            Subject::ApiKey(id) => Actor::ApiKey(id),
            Subject::OAuthClient(id) => Actor::OAuthClient(id),
        }
    }

    /// Whether the caller holds `role`.
    pub fn has_role(&self, role: &RoleName) -> bool {
        self.roles.contains(role)
    }

    /// A host-defined claim, deserialized: `None` if absent.
    pub fn claim<T: DeserializeOwned>(&self, name: &str) -> Option<Result<T, serde_json::Error>> {
        self.extra.get(name).map(|value| T::deserialize(value))
    }
}
