//! Typed identifiers.
//!
//! Every entity has its own id type so the compiler keeps a [`TenantId`] from
//! being passed where a [`UserId`] is expected. Ids are UUIDv7: they sort by
//! creation time, which keyset pagination relies on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A string that is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id: expected a UUID such as 0190f5c4-6b5e-7c3a-9d1e-2f4a6b8c0d1e")]
pub struct IdParseError {
    kind: &'static str,
}

impl IdParseError {
    /// Which id type failed to parse, such as `"tenant"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id (UUIDv7).
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps a UUID read from storage or another system.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID, for storage.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(s)
                    .map(Self)
                    .map_err(|_| IdParseError { kind: $kind })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&self.0.hyphenated())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// Identifies a tenant (an organization, workspace or account of the host app).
    TenantId, "tenant"
);
define_id!(
    /// Identifies a user. Users are global: one user may belong to many tenants.
    UserId, "user"
);
define_id!(
    /// Identifies a user's membership in one tenant.
    MembershipId, "membership"
);
define_id!(
    /// Identifies an invitation to join a tenant.
    InvitationId, "invitation"
);
define_id!(
    /// Identifies one event in a tenant's audit log.
    AuditEventId, "audit event"
);
define_id!(
    /// Identifies one outbox event; consumers deduplicate on it.
    EventId, "event"
);
define_id!(
    /// Identifies a login session.
    SessionId, "session"
);
define_id!(
    /// Identifies an API key (the public part of the key, never the secret).
    ApiKeyId, "api key"
);
define_id!(
    /// Identifies a SCIM provisioning token (never the secret): the actor
    /// of the changes a tenant's identity provider makes.
    ScimTokenId, "scim token"
);
define_id!(
    /// Identifies an OAuth 2.0 / OpenID Connect client registered with the
    /// SDK's authorization server (its public `client_id`, never a secret).
    OAuthClientId, "oauth client"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let id = TenantId::new();
        let parsed: TenantId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        assert_eq!(id.as_uuid().get_version_num(), 7);
    }

    #[test]
    fn parse_error_names_the_kind() {
        let err = "not-a-uuid".parse::<UserId>().unwrap_err();
        assert_eq!(err.kind(), "user");
        assert!(
            err.to_string()
                .starts_with("invalid user id: expected a UUID")
        );
    }

    #[test]
    fn serde_as_string() {
        let id = MembershipId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        let back: MembershipId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        let err = serde_json::from_str::<MembershipId>("\"nope\"").unwrap_err();
        assert!(err.to_string().contains("invalid membership id"));
    }

    #[test]
    fn ids_created_in_sequence_sort_in_sequence() {
        let ids: Vec<InvitationId> = (0..1000).map(|_| InvitationId::new()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
