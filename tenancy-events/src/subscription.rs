//! [`Subscription`]: an in-process sink calling the host's handler.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use tenancy_core::{BoxError, ConsumerName, Event, ValidationError};

use crate::sink::{DeliveryError, EventSink, SinkError};

/// Handles events in process. Implemented for async closures
/// `Fn(Event) -> impl Future<Output = Result<(), BoxError>>`.
///
/// A handler may see an event twice (after a crash between handling and
/// acknowledgement): make it idempotent, for instance by recording
/// [`Event::id`] in the same transaction as its effect.
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// Handles one event; an error retries it (and those after it) later.
    async fn handle(&self, event: &Event) -> Result<(), BoxError>;
}

#[async_trait]
impl<F, Fut> EventHandler for F
where
    F: Fn(Event) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    async fn handle(&self, event: &Event) -> Result<(), BoxError> {
        self(event.clone()).await
    }
}

/// Which event types a subscription receives: an exact type
/// (`member.joined`), every type under a prefix (`member.*`,
/// `billing.*`), or everything (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeFilter(Vec<String>);

impl TypeFilter {
    /// Every event.
    pub fn all() -> Self {
        Self(vec!["*".to_owned()])
    }

    /// The listed patterns; [`ValidationError::EventType`] for a pattern
    /// that is neither a type, `prefix.*` nor `*`.
    pub fn new<I, S>(patterns: I) -> Result<Self, ValidationError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out = Vec::new();
        for pattern in patterns {
            let pattern = pattern.into();
            let valid = pattern == "*"
                || pattern.strip_suffix(".*").map_or_else(
                    || tenancy_core::EventType::new(pattern.as_str()).is_ok(),
                    |prefix| {
                        !prefix.is_empty()
                            && prefix.split('.').all(|s| {
                                !s.is_empty()
                                    && s.chars().all(|c| {
                                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
                                    })
                            })
                    },
                );
            if !valid {
                return Err(ValidationError::EventType {
                    event_type: pattern,
                });
            }
            out.push(pattern);
        }
        Ok(Self(out))
    }

    /// Whether `event_type` passes.
    pub fn matches(&self, event_type: &str) -> bool {
        self.0.iter().any(|pattern| {
            pattern == "*"
                || pattern == event_type
                || pattern.strip_suffix('*').is_some_and(|prefix| {
                    event_type.starts_with(prefix) && event_type.len() > prefix.len()
                })
        })
    }
}

/// A sink that calls a handler for each event, in order, in the relay's
/// task. Each subscription keeps its own position (its consumer name), so
/// a failing handler holds up only itself.
///
/// ```
/// use tenancy_core::{ConsumerName, Event};
/// use tenancy_events::{Subscription, TypeFilter};
/// let welcome = Subscription::new(ConsumerName::new("welcome-mail")?, |event: Event| async move {
///     // send the mail for event.data …
///     Ok(())
/// })
/// .only(TypeFilter::new(["member.joined"])?);
/// # Ok::<(), tenancy_core::ValidationError>(())
/// ```
pub struct Subscription {
    consumer: ConsumerName,
    filter: TypeFilter,
    handler: Arc<dyn EventHandler>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("consumer", &self.consumer)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// A subscription to every event, named `consumer`.
    pub fn new(consumer: ConsumerName, handler: impl EventHandler + 'static) -> Self {
        Self {
            consumer,
            filter: TypeFilter::all(),
            handler: Arc::new(handler),
        }
    }

    /// Receives only the types `filter` passes; the others are
    /// acknowledged without calling the handler.
    pub fn only(mut self, filter: TypeFilter) -> Self {
        self.filter = filter;
        self
    }
}

#[async_trait]
impl EventSink for Subscription {
    fn consumer(&self) -> &ConsumerName {
        &self.consumer
    }

    async fn deliver(&self, events: &[Event]) -> Result<(), DeliveryError> {
        for (delivered, event) in events.iter().enumerate() {
            if !self.filter.matches(event.event_type.as_str()) {
                continue;
            }
            if let Err(error) = self.handler.handle(event).await {
                return Err(DeliveryError::new(delivered, SinkError::Refused(error)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_types_prefixes_and_everything() {
        let filter = TypeFilter::new(["member.joined", "billing.*"]).unwrap();
        assert!(filter.matches("member.joined"));
        assert!(!filter.matches("member.removed"));
        assert!(filter.matches("billing.subscription.changed"));
        assert!(!filter.matches("billing"));
        assert!(!filter.matches("billingx.a"));
        assert!(TypeFilter::all().matches("anything.at_all"));
        for bad in ["", "member", "member.", ".*", "Member.*", "a.*.b", "**"] {
            assert!(TypeFilter::new([bad]).is_err(), "{bad:?}");
        }
    }
}
