//! The event sink feeding deliveries, and the job handler making them.

use std::sync::Arc;

use async_trait::async_trait;
use tenancy_core::{ConsumerName, Event};
use tenancy_events::{DeliveryError, EventSink, SinkError};
use tenancy_jobs::{HandlerError, JobContext, JobHandler, JobKind};

use crate::error::WebhookError;
use crate::service::{DeliverJob, Webhooks};

/// The consumer name of [`WebhookSink`] in the relay.
pub const CONSUMER: &str = "webhooks";

/// A `tenancy-events` sink: for each event, for each active endpoint of
/// its tenant whose event types match, enqueues a delivery job. The
/// enqueue is the durable acceptance: once it returns, the relay may move
/// on. The event is kept in the webhook store so every attempt (and a
/// later redelivery) sends the same body.
#[derive(Debug)]
pub struct WebhookSink {
    webhooks: Webhooks,
    consumer: ConsumerName,
}

impl Webhooks {
    /// The sink to give the relay.
    pub fn sink(&self) -> Result<Arc<WebhookSink>, WebhookError> {
        let consumer =
            ConsumerName::new(CONSUMER).map_err(|e| WebhookError::InvalidInput(e.to_string()))?;
        Ok(Arc::new(WebhookSink {
            webhooks: self.clone(),
            consumer,
        }))
    }

    /// The job handler to give a `tenancy-jobs` worker (kind
    /// [`crate::DELIVER_KIND`]).
    pub fn handler(&self) -> Arc<dyn JobHandler> {
        Arc::new(DeliverHandler {
            webhooks: self.clone(),
        })
    }
}

#[async_trait]
impl EventSink for WebhookSink {
    fn consumer(&self) -> &ConsumerName {
        &self.consumer
    }

    async fn deliver(&self, events: &[Event]) -> Result<(), DeliveryError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let unavailable = |done: usize, error: WebhookError| {
            DeliveryError::new(done, SinkError::Unavailable(Box::new(error)))
        };
        let store = &self.webhooks.inner.store;
        let endpoints = store
            .active_endpoints(first.tenant_id)
            .await
            .map_err(|e| unavailable(0, e))?;
        for (done, event) in events.iter().enumerate() {
            let matching: Vec<_> = endpoints
                .iter()
                .filter(|e| e.tenant_id == event.tenant_id)
                .filter(|e| e.event_types.matches(event.event_type.as_str()))
                .collect();
            if matching.is_empty() {
                continue;
            }
            store
                .put_message(event)
                .await
                .map_err(|e| unavailable(done, e))?;
            for endpoint in matching {
                self.webhooks
                    .enqueue_first(endpoint, event)
                    .await
                    .map_err(|e| unavailable(done, e))?;
            }
        }
        Ok(())
    }
}

struct DeliverHandler {
    webhooks: Webhooks,
}

#[async_trait]
impl JobHandler for DeliverHandler {
    fn kind(&self) -> &JobKind {
        &self.webhooks.inner.kind
    }

    async fn run(&self, ctx: JobContext) -> Result<(), HandlerError> {
        let job: DeliverJob = ctx.payload()?;
        match self.webhooks.attempt(job).await {
            Ok(()) => Ok(()),
            Err(error @ (WebhookError::NotFound(_) | WebhookError::Corrupt(_))) => {
                Err(HandlerError::permanent(error))
            }
            Err(error) => {
                let mut text = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(inner) = source {
                    text.push_str(": ");
                    text.push_str(&inner.to_string());
                    source = inner.source();
                }
                Err(HandlerError::retry(text))
            }
        }
    }
}
