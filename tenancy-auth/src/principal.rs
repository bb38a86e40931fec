//! Who is calling: the outcome of authentication.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tenancy_core::{Actor, ApiKeyId, RoleName, SessionId, TenantId, UserId};
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
    /// For API keys, who created the key: its permissions never exceed
    /// that member's roles.
    pub minted_by: Option<Actor>,
}

impl Principal {
    /// The user, if a user is calling.
    pub fn user_id(&self) -> Option<UserId> {
        match self.subject {
            Subject::User(id) => Some(id),
            Subject::ApiKey(_) => None,
        }
    }

    /// The audit actor for this caller.
    pub fn actor(&self) -> Actor {
        match self.subject {
            Subject::User(id) => Actor::User(id),
            Subject::ApiKey(id) => Actor::ApiKey(id),
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
