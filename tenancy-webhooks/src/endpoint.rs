//! Endpoints: where a tenant's events are sent.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tenancy_core::{EventId, TenantId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::WebhookError;
use crate::ssrf::TargetPolicy;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The id with this UUID (as stored).
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID.
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
            type Err = WebhookError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(s)
                    .map(Self)
                    .map_err(|_| WebhookError::InvalidInput(concat!("a ", $what, " id is a UUID").into()))
            }
        }
    };
}

uuid_id!(
    /// Identifies a webhook endpoint.
    EndpointId,
    "webhook endpoint"
);
uuid_id!(
    /// Identifies one delivery attempt in the delivery log.
    DeliveryId,
    "delivery"
);

/// Most characters in an endpoint URL.
pub const MAX_URL_LEN: usize = 2048;
/// Most characters in a description.
pub const MAX_DESCRIPTION_LEN: usize = 512;
/// Most patterns in an endpoint's event type filter.
pub const MAX_EVENT_TYPES: usize = 64;
/// Default most endpoints per tenant.
pub const DEFAULT_MAX_ENDPOINTS: usize = 20;

/// Which event types an endpoint receives: exact types
/// (`member.joined`), every type under a prefix (`member.*`) or all (`*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct EventTypes {
    patterns: Vec<String>,
    filter: tenancy_events::TypeFilter,
}

impl EventTypes {
    /// Every event type.
    pub fn all() -> Self {
        Self {
            patterns: vec!["*".to_owned()],
            filter: tenancy_events::TypeFilter::all(),
        }
    }

    /// The listed patterns (1 to [`MAX_EVENT_TYPES`]).
    pub fn new<I, S>(patterns: I) -> Result<Self, WebhookError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let patterns: Vec<String> = patterns.into_iter().map(Into::into).collect();
        if patterns.is_empty() || patterns.len() > MAX_EVENT_TYPES {
            return Err(WebhookError::InvalidInput(format!(
                "an endpoint lists 1 to {MAX_EVENT_TYPES} event types"
            )));
        }
        let filter = tenancy_events::TypeFilter::new(patterns.iter().cloned())
            .map_err(|e| WebhookError::InvalidInput(format!("event types: {e}")))?;
        Ok(Self { patterns, filter })
    }

    /// Whether an event of type `event_type` is sent.
    pub fn matches(&self, event_type: &str) -> bool {
        self.filter.matches(event_type)
    }

    /// The patterns as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl TryFrom<Vec<String>> for EventTypes {
    type Error = WebhookError;
    fn try_from(patterns: Vec<String>) -> Result<Self, Self::Error> {
        Self::new(patterns)
    }
}

impl From<EventTypes> for Vec<String> {
    fn from(types: EventTypes) -> Self {
        types.patterns
    }
}

/// Whether deliveries are made to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndpointStatus {
    /// Deliveries are made.
    Active,
    /// Deliveries are skipped until it is resumed; set by the circuit
    /// breaker (or by the tenant).
    Paused {
        /// Why.
        reason: String,
        /// Since when.
        #[serde(with = "time::serde::rfc3339")]
        since: OffsetDateTime,
    },
    /// Switched off by the tenant.
    Disabled,
}

impl EndpointStatus {
    /// Whether deliveries are made.
    pub fn is_active(&self) -> bool {
        matches!(self, EndpointStatus::Active)
    }

    /// The stored name of the state.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndpointStatus::Active => "active",
            EndpointStatus::Paused { .. } => "paused",
            EndpointStatus::Disabled => "disabled",
        }
    }
}

/// A tenant's webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Endpoint {
    /// Its id.
    pub id: EndpointId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// Where events are POSTed.
    pub url: String,
    /// The tenant's note.
    pub description: String,
    /// Which events it receives.
    pub event_types: EventTypes,
    /// Whether deliveries are made.
    pub status: EndpointStatus,
    /// Failed attempts since the last success (or creation, or resume).
    pub consecutive_failures: u32,
    /// The last successful attempt, or when it was created or last
    /// resumed if later: the circuit breaker counts the time without
    /// success from here.
    #[serde(with = "time::serde::rfc3339")]
    pub healthy_at: OffsetDateTime,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Endpoint {
    /// Since when the endpoint has had no success: its last success, or
    /// when it was created or last resumed.
    pub fn failing_since(&self) -> OffsetDateTime {
        self.healthy_at
    }
}

/// What a tenant gives to create an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct NewEndpoint {
    /// Where events are POSTed.
    pub url: String,
    /// A note.
    #[serde(default)]
    pub description: String,
    /// Which events (default: all).
    #[serde(default = "EventTypes::all")]
    pub event_types: EventTypes,
}

impl NewEndpoint {
    /// An endpoint receiving every event at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            description: String::new(),
            event_types: EventTypes::all(),
        }
    }

    /// With a description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Receiving only `event_types`.
    pub fn with_event_types(mut self, event_types: EventTypes) -> Self {
        self.event_types = event_types;
        self
    }
}

/// A change to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct EndpointUpdate {
    /// A new URL.
    pub url: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// New event types.
    pub event_types: Option<EventTypes>,
    /// `true` disables, `false` re-enables a disabled endpoint (paused
    /// endpoints are resumed through resume).
    pub disabled: Option<bool>,
}

/// Checks an endpoint URL: absolute, `https` (or `http` where the policy
/// allows private targets), at most [`MAX_URL_LEN`] characters, no
/// userinfo, no fragment. The address is checked at each delivery.
pub fn validate_url(policy: TargetPolicy, raw: &str) -> Result<url::Url, WebhookError> {
    let invalid = |why: &str| WebhookError::InvalidInput(format!("endpoint url: {why}"));
    if raw.len() > MAX_URL_LEN {
        return Err(invalid(&format!("at most {MAX_URL_LEN} characters")));
    }
    let url = url::Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allows_http() => {}
        _ => return Err(invalid("must be an https url")),
    }
    if url.host().is_none() {
        return Err(invalid("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not carry a user name or password"));
    }
    if url.fragment().is_some() {
        return Err(invalid("must not have a fragment"));
    }
    Ok(url)
}

pub(crate) fn validate_description(text: &str) -> Result<(), WebhookError> {
    if text.chars().count() > MAX_DESCRIPTION_LEN || text.chars().any(char::is_control) {
        return Err(WebhookError::InvalidInput(format!(
            "a description is at most {MAX_DESCRIPTION_LEN} characters without control characters"
        )));
    }
    Ok(())
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The endpoint answered 2xx.
    Succeeded,
    /// It failed; another attempt is scheduled.
    Failed,
    /// It failed and was the last attempt: the delivery is dead.
    Dead,
    /// No request was made: the endpoint is paused or disabled.
    Skipped,
}

impl AttemptOutcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Dead => "dead",
            AttemptOutcome::Skipped => "skipped",
        }
    }
}

impl FromStr for AttemptOutcome {
    type Err = WebhookError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            AttemptOutcome::Succeeded,
            AttemptOutcome::Failed,
            AttemptOutcome::Dead,
            AttemptOutcome::Skipped,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| WebhookError::corrupt(format!("unknown attempt outcome {s:?}")))
    }
}

/// One row of the delivery log: one attempt to deliver one event to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeliveryAttempt {
    /// Its id (redeliver with it).
    pub id: DeliveryId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// The event (the `webhook-id` header).
    pub event_id: EventId,
    /// The event's type.
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// What became of it.
    pub outcome: AttemptOutcome,
    /// The HTTP status, if an answer came.
    pub status_code: Option<u16>,
    /// How long the request took.
    pub latency_ms: Option<u64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The start of the answer's body.
    pub response_excerpt: Option<String>,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// An endpoint's stored secrets: the current one, and the previous one
/// while its grace period after a rotation lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredSecrets {
    /// The current secret, encrypted.
    pub current: crate::secret::SealedSecret,
    /// The previous secret, encrypted, and until when it still signs.
    pub previous: Option<(crate::secret::SealedSecret, OffsetDateTime)>,
}

impl StoredSecrets {
    /// Only a current secret.
    pub fn new(current: crate::secret::SealedSecret) -> Self {
        Self {
            current,
            previous: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_validated() {
        let p = TargetPolicy::PublicOnly;
        assert!(validate_url(p, "https://example.com/hooks?x=1").is_ok());
        assert!(validate_url(p, "http://example.com/hooks").is_err());
        assert!(validate_url(TargetPolicy::AllowPrivate, "http://127.0.0.1:8080/").is_ok());
        assert!(validate_url(p, "https://user:pw@example.com/").is_err());
        assert!(validate_url(p, "https://example.com/#frag").is_err());
        assert!(validate_url(p, "/relative").is_err());
        assert!(validate_url(p, "ftp://example.com/").is_err());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(validate_url(p, &long).is_err());
    }

    #[test]
    fn event_types_filter() {
        let types = EventTypes::new(["member.*", "tenant.created"]).unwrap();
        assert!(types.matches("member.joined"));
        assert!(types.matches("tenant.created"));
        assert!(!types.matches("tenant.deleted"));
        assert!(EventTypes::all().matches("anything.at_all"));
        assert!(EventTypes::new(Vec::<String>::new()).is_err());
        assert!(EventTypes::new(["Bad Type"]).is_err());
        let json = serde_json::to_string(&types).unwrap();
        assert_eq!(json, r#"["member.*","tenant.created"]"#);
        assert_eq!(serde_json::from_str::<EventTypes>(&json).unwrap(), types);
    }
}
