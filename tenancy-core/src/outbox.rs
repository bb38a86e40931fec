//! The transactional outbox: events other systems must hear of, written in
//! the transaction of the change they describe.
//!
//! An [`Event`] exists if and only if its change committed: [`Outbox::append_event`]
//! runs on a [`crate::Transaction`], and every audited action listed in
//! [`PUBLISHED_ACTIONS`] (tenant, member, API key, role, policy and
//! subscription changes, whichever crate makes them) appends its event in
//! the same call that appends the audit record. A host publishes its own
//! events the same way, in its own transaction.
//!
//! Each tenant has its own stream: events are numbered `1, 2, 3, …` per
//! tenant (`seq`) in commit order, because appends to one tenant's stream
//! wait for each other until their transactions end. A relay reads the
//! streams through [`EventFeed`]: it claims one tenant's pending events for
//! a named consumer, delivers them in order, and acknowledges them. A claim
//! excludes other relays of the same consumer from that tenant until it is
//! acknowledged or dropped, so several replicas relay without delivering an
//! event twice, except after a crash between delivery and acknowledgement:
//! delivery is at least once, and consumers deduplicate on [`Event::id`].
//! [`EventFeed::rewind`] replays a tenant's retained events from a point.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::{AuditEvent, Target};
use crate::error::{StoreError, ValidationError};
use crate::id::{EventId, TenantId};

/// Largest accepted [`NewEvent`] data, in bytes of JSON.
pub const MAX_EVENT_DATA_BYTES: usize = 64 * 1024;

/// Most events one [`EventFeed::claim`] or [`EventFeed::read_events`] returns.
pub const MAX_BATCH: usize = 1000;

/// The audit actions that also append an outbox event, of the same type.
///
/// Sign-ins, sign-outs and lockouts stay in the audit log only: they are
/// frequent, and what they say is for security review rather than for
/// other systems to act on.
pub const PUBLISHED_ACTIONS: &[&str] = &[
    "tenant.created",
    "tenant.updated",
    "tenant.suspended",
    "tenant.reactivated",
    "tenant.deleted",
    "member.invited",
    "invitation.revoked",
    "member.joined",
    "member.provisioned",
    "member.role_changed",
    "member.suspended",
    "member.reactivated",
    "member.removed",
    "api_key.created",
    "api_key.revoked",
    "role.created",
    "role.updated",
    "role.deleted",
    "policy.created",
    "policy.updated",
    "policy.deleted",
    "billing.subscription.changed",
    "billing.override.created",
    "billing.override.removed",
    "billing.account.linked",
    "scim.user_updated",
    "scim.user_deleted",
];

/// What kind of thing happened: two or more dot-separated segments of
/// `a-z`, `0-9` and `_`, such as `member.role_changed`; at most 128 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventType(String);

impl EventType {
    /// Validates an event type.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValidationError> {
        let raw = raw.into();
        if is_dotted_name(&raw, 2, 128) {
            Ok(Self(raw))
        } else {
            Err(ValidationError::EventType { event_type: raw })
        }
    }

    /// The type's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `min_segments` or more dot-separated, non-empty segments of `[a-z0-9_]`.
fn is_dotted_name(raw: &str, min_segments: usize, max_len: usize) -> bool {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    raw.len() <= max_len && raw.split('.').count() >= min_segments && raw.split('.').all(segment_ok)
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl TryFrom<String> for EventType {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<EventType> for String {
    fn from(value: EventType) -> Self {
        value.0
    }
}

/// Names one reader of the outbox, such as `nats` or `webhooks`: each
/// consumer has its own position in every tenant's stream. One to 64
/// characters of `a-z`, `0-9`, `_`, `-` and `.`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerName(String);

impl ConsumerName {
    /// Validates a consumer name.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValidationError> {
        let raw = raw.into();
        let ok = (1..=64).contains(&raw.len())
            && raw.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.')
            });
        if ok {
            Ok(Self(raw))
        } else {
            Err(ValidationError::ConsumerName { name: raw })
        }
    }

    /// The name's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConsumerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConsumerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// An event to append: its type, schema version and data.
///
/// ```
/// use tenancy_core::outbox::{EventType, NewEvent};
/// let event = NewEvent::new(
///     EventType::new("project.archived")?,
///     serde_json::json!({ "project_id": "p_1" }),
/// )
/// .with_version(2);
/// assert_eq!(event.version(), 2);
/// # Ok::<(), tenancy_core::ValidationError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    id: EventId,
    event_type: EventType,
    version: u32,
    data: serde_json::Value,
    occurred_at: Option<OffsetDateTime>,
}

impl NewEvent {
    /// Version 1 of `event_type` carrying `data`, with a fresh id, stamped
    /// when appended.
    pub fn new(event_type: EventType, data: serde_json::Value) -> Self {
        Self {
            id: EventId::new(),
            event_type,
            version: 1,
            data,
            occurred_at: None,
        }
    }

    /// Sets the schema version of the data (from 1), for consumers that
    /// read several versions of one type.
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Sets the id, such as one derived from the change, so that appending
    /// the same event twice is refused rather than published twice.
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// Sets when it happened (default: when appended).
    pub fn with_occurred_at(mut self, at: OffsetDateTime) -> Self {
        self.occurred_at = Some(at);
        self
    }

    /// The id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The type.
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }

    /// The schema version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data.
    pub fn data(&self) -> &serde_json::Value {
        &self.data
    }

    /// Checks the version and the size of the data.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.version == 0 {
            return Err(ValidationError::EventVersion);
        }
        let len = serde_json::to_vec(&self.data).map_or(usize::MAX, |bytes| bytes.len());
        if len > MAX_EVENT_DATA_BYTES {
            return Err(ValidationError::MetadataTooLarge {
                field: "event data",
                max: MAX_EVENT_DATA_BYTES,
                len,
            });
        }
        Ok(())
    }

    /// Seals the event as number `seq` of `tenant_id`'s stream.
    pub(crate) fn seal(self, tenant_id: TenantId, seq: u64, now: OffsetDateTime) -> Event {
        Event {
            id: self.id,
            tenant_id,
            seq,
            event_type: self.event_type,
            version: self.version,
            occurred_at: crate::clock::truncate_to_micros(self.occurred_at.unwrap_or(now)),
            data: self.data,
        }
    }
}

/// An appended event, as consumers receive it. Serialized as JSON with the
/// fields `id`, `tenant_id`, `seq`, `type`, `version`, `occurred_at`
/// (RFC 3339) and `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique across tenants: consumers deduplicate on it.
    pub id: EventId,
    /// The tenant whose stream it is in.
    pub tenant_id: TenantId,
    /// Its position in the tenant's stream, from 1 with no gaps.
    pub seq: u64,
    /// What kind of thing happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The schema version of `data`.
    pub version: u32,
    /// When it happened, to the microsecond.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// What consumers need to act on it.
    pub data: serde_json::Value,
}

/// The event an audited action publishes, if its action is in
/// [`PUBLISHED_ACTIONS`]: same type, version 1, and as data the actor, the
/// target, the audit metadata and the audit event's id.
pub fn event_for_audit(audit: &AuditEvent) -> Option<NewEvent> {
    if !PUBLISHED_ACTIONS.contains(&audit.action.as_str()) {
        return None;
    }
    let event_type = EventType::new(audit.action.as_str()).ok()?;
    let Target { target_type, id } = &audit.target;
    let data = serde_json::json!({
        "actor": audit.actor,
        "target": { "type": target_type.as_str(), "id": id },
        "metadata": audit.metadata.as_map(),
        "audit_event_id": audit.id,
    });
    Some(
        NewEvent::new(event_type, data)
            .with_id(EventId::from_uuid(audit.id.as_uuid()))
            .with_occurred_at(audit.occurred_at),
    )
}

/// Where a replay starts in a tenant's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayFrom {
    /// The oldest retained event.
    Start,
    /// The first event after number `seq`.
    AfterSeq(u64),
    /// The first event after this one ([`StoreError::NotFound`] if it is not retained).
    AfterEvent(EventId),
    /// The first event that occurred at or after this instant.
    Since(OffsetDateTime),
}

/// Appends events to tenants' streams. Implemented by every backend's
/// [`crate::Transaction`], so the event commits with the change it reports.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Appends `event` as the next of `tenant_id`'s stream. The tenant must
    /// exist ([`StoreError::NotFound`]); an id already used is a
    /// [`crate::Conflict::Id`]. Appends to one tenant wait for each other
    /// until their transactions end, so numbers follow commit order.
    async fn append_event(&self, tenant_id: TenantId, event: NewEvent)
    -> Result<Event, StoreError>;
}

/// A batch of one tenant's pending events, claimed for one consumer, until
/// [`ClaimedEvents::ack`] or [`ClaimedEvents::release`] (a refused
/// acknowledgement releases it too).
#[async_trait]
pub trait ClaimedEvents: Send {
    /// The tenant whose events these are.
    fn tenant_id(&self) -> TenantId;

    /// The events, in stream order, without gaps.
    fn events(&self) -> &[Event];

    /// Records that the consumer has the events up to number `through`
    /// (the last one's, or fewer when only a prefix was delivered) and
    /// releases the claim. A number outside the batch is refused with
    /// [`ValidationError::EventSeq`].
    async fn ack(self: Box<Self>, through: u64) -> Result<(), StoreError>;

    /// Gives the events back now, for the next claim. Dropping the batch
    /// gives them back too, but on Postgres only once the connection has
    /// rolled the claim back, which may be a moment later.
    async fn release(self: Box<Self>) -> Result<(), StoreError>;
}

/// Reads tenants' streams for relays, across tenants. Each consumer keeps
/// its own position per tenant.
#[async_trait]
pub trait EventFeed: Send + Sync {
    /// Claims up to `limit` (at most [`MAX_BATCH`]) pending events of one
    /// tenant for `consumer`: the next after the consumer's position, in
    /// order. Tenants with pending events take turns. `None` when no
    /// unclaimed tenant has events pending for this consumer.
    async fn claim(
        &self,
        consumer: &ConsumerName,
        limit: usize,
    ) -> Result<Option<Box<dyn ClaimedEvents>>, StoreError>;

    /// Reads up to `limit` (at most [`MAX_BATCH`]) retained events of
    /// `tenant_id` from `from`, in order, without moving any position.
    async fn read_events(
        &self,
        tenant_id: TenantId,
        from: ReplayFrom,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// Moves `consumer`'s position in `tenant_id`'s stream back (or
    /// forward) so the relay delivers again from `from`. Waits for a batch
    /// of that tenant being delivered to that consumer to end.
    async fn rewind(
        &self,
        consumer: &ConsumerName,
        tenant_id: TenantId,
        from: ReplayFrom,
    ) -> Result<(), StoreError>;

    /// When the oldest event not yet acknowledged by `consumer` occurred,
    /// across tenants; `None` when it is up to date.
    async fn oldest_pending(
        &self,
        consumer: &ConsumerName,
    ) -> Result<Option<OffsetDateTime>, StoreError>;

    /// Deletes, from the start of each tenant's stream, the events that
    /// occurred before `before` and that every one of `consumers` has
    /// acknowledged (a consumer with no position in a stream has
    /// acknowledged nothing of it); returns how many. With no consumers
    /// listed, every consumer with a position anywhere counts; when there is
    /// none, age alone decides. An event is never deleted while an older one
    /// of its stream is kept, so streams have no holes.
    async fn purge_events(
        &self,
        before: OffsetDateTime,
        consumers: &[ConsumerName],
    ) -> Result<u64, StoreError>;

    /// Deletes every position of `consumer`, a sink that is gone for good,
    /// so it no longer holds back [`EventFeed::purge_events`]; returns how
    /// many positions. A consumer of that name later starts again from
    /// the oldest retained event.
    async fn forget_consumer(&self, consumer: &ConsumerName) -> Result<u64, StoreError>;
}

/// Checks a batch size against [`MAX_BATCH`].
pub(crate) fn check_limit(limit: usize) -> Result<usize, ValidationError> {
    if (1..=MAX_BATCH).contains(&limit) {
        Ok(limit)
    } else {
        Err(ValidationError::PageSize { size: limit })
    }
}

/// Checks an acknowledgement against the batch it acknowledges: from the
/// position before the first event to the last event's number.
pub(crate) fn check_ack(events: &[Event], through: u64) -> Result<(), ValidationError> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Err(ValidationError::EventSeq { seq: through });
    };
    if (first.seq.saturating_sub(1)..=last.seq).contains(&through) {
        Ok(())
    } else {
        Err(ValidationError::EventSeq { seq: through })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_dotted_lowercase_names() {
        for ok in [
            "a.b",
            "tenant.created",
            "billing.subscription.changed",
            "x_1.y_2",
        ] {
            EventType::new(ok).unwrap();
        }
        let long = format!("a.{}", "b".repeat(127));
        for bad in [
            "",
            "tenant",
            "Tenant.created",
            "a..b",
            ".a",
            "a.",
            "a.b-c",
            "a.b c",
            &long,
        ] {
            assert!(EventType::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn consumer_names_are_bounded() {
        ConsumerName::new("nats").unwrap();
        ConsumerName::new("webhooks.v2-eu").unwrap();
        for bad in ["", "Nats", "a b", "a/b", &"a".repeat(65)] {
            assert!(ConsumerName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_events_validate_version_and_size() {
        let event_type = EventType::new("a.b").unwrap();
        assert!(
            NewEvent::new(event_type.clone(), serde_json::json!({}))
                .validate()
                .is_ok()
        );
        assert_eq!(
            NewEvent::new(event_type.clone(), serde_json::json!({}))
                .with_version(0)
                .validate(),
            Err(ValidationError::EventVersion)
        );
        let big = serde_json::json!({ "x": "y".repeat(MAX_EVENT_DATA_BYTES) });
        assert!(matches!(
            NewEvent::new(event_type, big).validate(),
            Err(ValidationError::MetadataTooLarge { .. })
        ));
    }

    #[test]
    fn every_published_action_is_a_valid_event_type() {
        for action in PUBLISHED_ACTIONS {
            EventType::new(*action).unwrap();
        }
    }

    #[test]
    fn acks_stay_within_their_batch() {
        let event = |seq| Event {
            id: EventId::new(),
            tenant_id: TenantId::new(),
            seq,
            event_type: EventType::new("a.b").unwrap(),
            version: 1,
            occurred_at: OffsetDateTime::UNIX_EPOCH,
            data: serde_json::Value::Null,
        };
        let batch = [event(4), event(5), event(6)];
        for ok in [3, 4, 6] {
            assert!(check_ack(&batch, ok).is_ok());
        }
        for bad in [0, 2, 7] {
            assert!(check_ack(&batch, bad).is_err());
        }
        assert!(check_ack(&[], 0).is_err());
    }
}
