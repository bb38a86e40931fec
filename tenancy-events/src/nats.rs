//! [`NatsSink`]: publishes outbox events to NATS JetStream.
//!
//! Each event becomes one message on the subject
//! `{prefix}.{tenant_id}.{event_type}` (for example
//! `tenancy.events.0190….member.joined`), with the event's JSON as payload
//! and these headers:
//!
//! | header | value |
//! | --- | --- |
//! | `Nats-Msg-Id` | [`Event::id`] |
//! | `Tenancy-Tenant-Id` | [`Event::tenant_id`] |
//! | `Tenancy-Event-Type` | [`Event::event_type`] |
//! | `Tenancy-Event-Seq` | [`Event::seq`] |
//! | `Tenancy-Event-Version` | [`Event::version`] |
//!
//! A batch is published pipelined: every message is sent, then the
//! stream's acknowledgements are awaited in order. An event counts as
//! delivered once JetStream acknowledged it, that is stored it.
//!
//! # At least once, deduplicated by message id
//!
//! The relay redelivers events whose delivery it could not record (a crash
//! between the acknowledgement and the relay's bookkeeping, a batch that
//! failed half way). Because `Nats-Msg-Id` carries the event id, JetStream
//! drops a redelivered event that arrives within the stream's duplicate
//! window (and acknowledges it as a duplicate, which the sink counts as
//! delivered). Past the window, consumers see it again and deduplicate on
//! the id themselves, as every outbox consumer should.
//!
//! The async-nats client reconnects by itself after a connection loss;
//! publishes that get no acknowledgement meanwhile fail after the ack
//! timeout, and the relay retries them.
//!
//! # Streams
//!
//! The sink publishes; it does not create streams on its own, because a
//! stream's retention, storage and replicas are the operator's decisions.
//! Publishing to a subject no stream captures fails (JetStream has no
//! responder), and the relay retries later. [`NatsSink::ensure_stream`]
//! creates a plain file-backed stream capturing `{prefix}.>` for setups
//! that do not manage streams elsewhere.
//!
//! ```no_run
//! use std::time::Duration;
//! use tenancy_core::ConsumerName;
//! use tenancy_events::nats::{NatsSink, SubjectPrefix};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let client = async_nats::connect("127.0.0.1:4222").await?;
//! let sink = NatsSink::from_client(client, ConsumerName::new("nats")?)
//!     .with_prefix(SubjectPrefix::new("acme.events")?)
//!     .with_ack_timeout(Duration::from_secs(10));
//! // Once, at startup: a stream for `acme.events.>` that drops an event
//! // published twice within two minutes.
//! sink.ensure_stream("ACME_EVENTS", Duration::from_secs(120)).await?;
//! // Then hand `sink` to the relay.
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, context::PublishErrorKind};
use async_trait::async_trait;
use tenancy_core::{ConsumerName, Event};

use crate::sink::{DeliveryError, EventSink, SinkError};

/// The subject prefix used unless [`NatsSink::with_prefix`] sets another.
pub const DEFAULT_PREFIX: &str = "tenancy.events";

/// Most messages awaiting their acknowledgement at once, unless
/// [`NatsSink::with_max_in_flight`] says otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1000;

/// The leading tokens of every subject the sink publishes to: one or more
/// dot-separated, non-empty tokens without whitespace, control characters
/// or the wildcards `*` and `>`; at most 128 bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SubjectPrefix(String);

impl SubjectPrefix {
    /// Validates a prefix such as `tenancy.events`.
    pub fn new(raw: impl Into<String>) -> Result<Self, InvalidSubjectPrefix> {
        let raw = raw.into();
        let token_ok = |token: &str| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && c != '*' && c != '>')
        };
        if raw.len() <= 128 && raw.split('.').all(token_ok) {
            Ok(Self(raw))
        } else {
            Err(InvalidSubjectPrefix { prefix: raw })
        }
    }

    /// The prefix's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subject an event is published to: `{prefix}.{tenant_id}.{event_type}`.
    pub fn subject_for(&self, event: &Event) -> String {
        format!("{}.{}.{}", self.0, event.tenant_id, event.event_type)
    }

    /// The wildcard subject capturing every event under this prefix: `{prefix}.>`.
    pub fn wildcard(&self) -> String {
        format!("{}.>", self.0)
    }
}

impl Default for SubjectPrefix {
    fn default() -> Self {
        Self(DEFAULT_PREFIX.to_owned())
    }
}

impl fmt::Display for SubjectPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SubjectPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A subject prefix that is not a sequence of valid NATS subject tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid subject prefix {prefix:?}: expected dot-separated tokens without spaces or wildcards"
)]
pub struct InvalidSubjectPrefix {
    /// The refused prefix.
    pub prefix: String,
}

/// Why [`NatsSink::ensure_stream`] could not make sure the stream exists.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnsureStreamError {
    /// JetStream refused or did not answer the request.
    #[error("the stream could not be created or read")]
    Create(#[source] jetstream::context::CreateStreamError),
}

/// An [`EventSink`] publishing to NATS JetStream; see the [module docs](self).
#[derive(Clone)]
pub struct NatsSink {
    jetstream: jetstream::Context,
    consumer: ConsumerName,
    prefix: SubjectPrefix,
    max_in_flight: usize,
}

impl NatsSink {
    /// A sink publishing through `jetstream` under the default prefix
    /// [`DEFAULT_PREFIX`], its position tracked as `consumer`.
    pub fn new(jetstream: jetstream::Context, consumer: ConsumerName) -> Self {
        Self {
            jetstream,
            consumer,
            prefix: SubjectPrefix::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// A sink on a JetStream context made from `client` with default settings.
    pub fn from_client(client: async_nats::Client, consumer: ConsumerName) -> Self {
        Self::new(jetstream::new(client), consumer)
    }

    /// Publishes under `prefix` instead of [`DEFAULT_PREFIX`].
    pub fn with_prefix(mut self, prefix: SubjectPrefix) -> Self {
        self.prefix = prefix;
        self
    }

    /// How long one publish may wait to be sent and then acknowledged
    /// before it counts as failed (default: the JetStream context's
    /// timeout, five seconds unless set on the context). Applies to this
    /// sink's copy of the context only.
    pub fn with_ack_timeout(mut self, timeout: Duration) -> Self {
        self.jetstream.set_timeout(timeout);
        self
    }

    /// At most `max` messages awaiting their acknowledgement at once
    /// (default [`DEFAULT_MAX_IN_FLIGHT`], at least 1); larger batches are
    /// published in windows of this size. Keep it at or below the
    /// context's `max_ack_inflight`, which would otherwise hold a publish
    /// back until an acknowledgement the sink has not yet awaited.
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// The prefix of the subjects the sink publishes to.
    pub fn prefix(&self) -> &SubjectPrefix {
        &self.prefix
    }

    /// Creates, unless it exists, a file-backed stream `name` capturing
    /// `{prefix}.>`, dropping a message whose `Nats-Msg-Id` it saw within
    /// `duplicate_window`. An existing stream of that name is returned as
    /// it is, its settings unchanged. Call it once at startup when no
    /// other tool manages the stream; the sink never calls it itself.
    pub async fn ensure_stream(
        &self,
        name: &str,
        duplicate_window: Duration,
    ) -> Result<jetstream::stream::Stream, EnsureStreamError> {
        let config = jetstream::stream::Config {
            name: name.to_owned(),
            subjects: vec![self.prefix.wildcard()],
            duplicate_window,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        self.jetstream
            .get_or_create_stream(config)
            .await
            .map_err(EnsureStreamError::Create)
    }

    /// The headers of `event`'s message.
    fn headers(event: &Event) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            event.id.to_string().as_str(),
        );
        headers.insert("Tenancy-Tenant-Id", event.tenant_id.to_string().as_str());
        headers.insert("Tenancy-Event-Type", event.event_type.as_str());
        headers.insert("Tenancy-Event-Seq", event.seq.to_string().as_str());
        headers.insert("Tenancy-Event-Version", event.version.to_string().as_str());
        headers
    }

    /// Sends `events` without waiting for acknowledgements. Returns the
    /// pending acknowledgements of the events sent and, if one could not
    /// be sent, why (the events after it are not sent).
    async fn send_window(&self, events: &[Event]) -> (Vec<PublishAckFuture>, Option<SinkError>) {
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let payload = match serde_json::to_vec(event) {
                Ok(payload) => payload,
                Err(error) => return (pending, Some(SinkError::Encode(error))),
            };
            let sent = self
                .jetstream
                .publish_with_headers(
                    self.prefix.subject_for(event),
                    Self::headers(event),
                    payload.into(),
                )
                .await;
            match sent {
                Ok(ack) => pending.push(ack),
                Err(error) => return (pending, Some(publish_error(error))),
            }
        }
        (pending, None)
    }
}

/// Sorts a publish failure: no answer in time or a broken connection is
/// an unavailable destination; an answer refusing the message (no stream
/// for the subject, a full stream, an oversize message) is a refusal.
fn publish_error(error: jetstream::context::PublishError) -> SinkError {
    match error.kind() {
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
            SinkError::Unavailable(Box::new(error))
        }
        _ => SinkError::Refused(Box::new(error)),
    }
}

impl fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSink")
            .field("consumer", &self.consumer)
            .field("prefix", &self.prefix)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventSink for NatsSink {
    fn consumer(&self) -> &ConsumerName {
        &self.consumer
    }

    async fn deliver(&self, events: &[Event]) -> Result<(), DeliveryError> {
        let mut delivered = 0;
        for window in events.chunks(self.max_in_flight) {
            let (pending, send_failure) = self.send_window(window).await;
            for ack in pending {
                if let Err(error) = ack.await {
                    return Err(DeliveryError::new(delivered, publish_error(error)));
                }
                delivered += 1;
            }
            if let Some(source) = send_failure {
                return Err(DeliveryError::new(delivered, source));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenancy_core::outbox::EventType;
    use tenancy_core::{EventId, TenantId};

    #[test]
    fn prefixes_are_subject_tokens_without_wildcards() {
        for ok in ["tenancy.events", "a", "acme-prod.events_v2", "ä.b"] {
            assert!(SubjectPrefix::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a b",
            "a.*",
            "a.>",
            "a*.b",
            "a.b>",
            "tab\there",
            "new\nline",
        ] {
            assert!(SubjectPrefix::new(bad).is_err(), "{bad:?}");
        }
        assert!(SubjectPrefix::new("a".repeat(129)).is_err());
        assert_eq!(SubjectPrefix::default().as_str(), DEFAULT_PREFIX);
    }

    #[test]
    fn subjects_and_headers_name_tenant_type_and_seq() -> Result<(), Box<dyn std::error::Error>> {
        let event = Event {
            id: EventId::new(),
            tenant_id: TenantId::new(),
            seq: 42,
            event_type: EventType::new("member.role_changed")?,
            version: 3,
            occurred_at: time::OffsetDateTime::UNIX_EPOCH,
            data: serde_json::json!({}),
        };
        let prefix = SubjectPrefix::new("acme.events")?;
        assert_eq!(
            prefix.subject_for(&event),
            format!("acme.events.{}.member.role_changed", event.tenant_id)
        );
        assert_eq!(prefix.wildcard(), "acme.events.>");
        let headers = NatsSink::headers(&event);
        let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(header("Nats-Msg-Id"), Some(event.id.to_string()));
        assert_eq!(
            header("Tenancy-Tenant-Id"),
            Some(event.tenant_id.to_string())
        );
        assert_eq!(
            header("Tenancy-Event-Type"),
            Some("member.role_changed".into())
        );
        assert_eq!(header("Tenancy-Event-Seq"), Some("42".into()));
        assert_eq!(header("Tenancy-Event-Version"), Some("3".into()));
        Ok(())
    }
}
