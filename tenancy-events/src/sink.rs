//! [`EventSink`]: where the relay delivers events.

use async_trait::async_trait;
use tenancy_core::{BoxError, ConsumerName, Event};

/// A destination for outbox events: in-process subscribers, a broker, the
/// webhook dispatcher. The relay hands each sink batches of one tenant's
/// events, in stream order, and records how far the sink got under its
/// [`EventSink::consumer`] name; every sink has its own position.
///
/// Delivery is at least once: after a crash between a delivery and its
/// acknowledgement the same events come again. Sinks pass [`Event::id`]
/// on (as the broker's message id) so consumers can deduplicate.
///
/// Order: the relay hands a sink each tenant's events in order, and
/// retries from the first event a sink did not accept. A sink that sends a
/// batch pipelined (the broker sinks do) can have events after that one
/// accepted already, so a consumer may see them before the retried one:
/// consumers that need strict order per tenant sort by [`Event::seq`]
/// (carried in the broker sinks' headers).
#[async_trait]
pub trait EventSink: Send + Sync {
    /// The name the outbox tracks this sink's position under. Renaming a
    /// sink makes it start again from the oldest retained event.
    fn consumer(&self) -> &ConsumerName;

    /// Delivers `events` (one tenant's, in order). Returns only when the
    /// destination has accepted every one of them durably (a broker's
    /// acknowledgement, a subscriber's success). On failure, says how many
    /// leading events were accepted: the relay records those and retries
    /// the rest later.
    async fn deliver(&self, events: &[Event]) -> Result<(), DeliveryError>;
}

/// A batch that was not fully delivered.
#[derive(Debug, thiserror::Error)]
#[error("{delivered} of the batch delivered, then: {source}")]
pub struct DeliveryError {
    /// How many leading events of the batch the destination accepted.
    pub delivered: usize,
    /// Why the next one was not.
    #[source]
    pub source: SinkError,
}

impl DeliveryError {
    /// A failure after the first `delivered` events.
    pub fn new(delivered: usize, source: SinkError) -> Self {
        Self { delivered, source }
    }
}

/// Why a sink could not deliver an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The destination could not be reached or did not answer in time;
    /// the relay retries after a backoff.
    #[error("the destination is unavailable")]
    Unavailable(#[source] BoxError),
    /// The destination answered and refused the event (a broker's negative
    /// acknowledgement, a subscriber's error); the relay retries after a
    /// backoff, since refusals are usually temporary (a full stream, a
    /// subscriber's database down).
    #[error("the destination refused the event")]
    Refused(#[source] BoxError),
    /// The event could not be encoded for the destination.
    #[error("the event could not be encoded")]
    Encode(#[source] serde_json::Error),
}
