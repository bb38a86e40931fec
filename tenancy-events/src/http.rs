//! [`EventsModule`]: the relay as a tenancy-http module (feature `http`).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::BoxError;
use tenancy_core::outbox::EventFeed;
use tenancy_http::{Module, ReadinessCheck, Tenancy};
use tokio::sync::{mpsc, watch};

use crate::relay::{Relay, RelayConfig};
use crate::sink::EventSink;

/// Relays the app's outbox while the app runs: add it with
/// `TenancyBuilder::module`. Its relay reads the builder's backend (memory
/// or Postgres), starts with the app, finishes the batches in delivery on
/// [`Tenancy::shutdown`]; with [`EventsModule::max_lag`], `GET /ready`
/// fails while a sink is further behind than that.
///
/// ```no_run
/// # async fn demo(builder: tenancy_http::TenancyBuilder) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tenancy_core::{ConsumerName, Event};
/// use tenancy_events::{EventsModule, Subscription};
///
/// let audit_copy = Subscription::new(ConsumerName::new("search-index")?, |event: Event| async move {
///     // index event.data …
///     Ok(())
/// });
/// let tenancy = builder.module(EventsModule::new().sink(Arc::new(audit_copy))).build().await?;
/// let relay = tenancy.module::<EventsModule>().and_then(EventsModule::relay);
/// # let _ = relay; Ok(()) }
/// ```
pub struct EventsModule {
    sinks: Vec<Arc<dyn EventSink>>,
    config: RelayConfig,
    max_lag: Option<Duration>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    relay: OnceLock<Relay>,
    running: Mutex<Option<(watch::Sender<bool>, mpsc::Receiver<()>)>>,
}

impl std::fmt::Debug for EventsModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsModule")
            .field(
                "sinks",
                &self
                    .sinks
                    .iter()
                    .map(|s| s.consumer().clone())
                    .collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .field("max_lag", &self.max_lag)
            .finish_non_exhaustive()
    }
}

impl Default for EventsModule {
    fn default() -> Self {
        Self::new()
    }
}

impl EventsModule {
    /// A module with no sinks, the default pacing, and no readiness check.
    pub fn new() -> Self {
        Self {
            sinks: Vec::new(),
            config: RelayConfig::default(),
            max_lag: None,
            shared: Arc::default(),
        }
    }

    /// Adds a sink.
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Replaces the relay's pacing.
    pub fn config(mut self, config: RelayConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds `event-relay` to `GET /ready`, down while a sink lags behind
    /// the outbox by more than `max_lag`. Off by default: the lag is
    /// shared by every replica (they read one database), so one failing
    /// sink marks them all not ready at once, and a load balancer would
    /// drain the whole app for a problem that draining does not fix.
    /// Turn it on where the relay matters more than serving requests, or
    /// watch [`Relay::lag`] as a metric instead.
    pub fn max_lag(mut self, max_lag: Duration) -> Self {
        self.max_lag = Some(max_lag);
        self
    }

    /// The running relay, for [`Relay::replay`] and [`Relay::lag`]; `None`
    /// before the app is built.
    pub fn relay(&self) -> Option<&Relay> {
        self.shared.relay.get()
    }
}

#[async_trait]
impl Module for EventsModule {
    fn name(&self) -> &'static str {
        "events"
    }

    fn readiness_checks(&self) -> Vec<Arc<dyn ReadinessCheck>> {
        self.max_lag
            .map(|max_lag| -> Arc<dyn ReadinessCheck> {
                Arc::new(LagCheck {
                    shared: Arc::clone(&self.shared),
                    max_lag,
                })
            })
            .into_iter()
            .collect()
    }

    fn start(&self, tenancy: &Tenancy) -> Vec<tokio::task::JoinHandle<()>> {
        let feed: Arc<dyn EventFeed> = tenancy.directory().backend().clone();
        let mut relay = Relay::new(feed).config(self.config.clone());
        for sink in &self.sinks {
            relay = relay.sink(Arc::clone(sink));
        }
        if let Err(error) = relay.consumers_are_distinct() {
            tracing::error!(%error, "the event relay is not started");
            return Vec::new();
        }
        let relay = self.shared.relay.get_or_init(|| relay);
        let (stop, stopped) = watch::channel(false);
        let (alive, finished) = mpsc::channel(1);
        let tasks = relay.spawn(&stopped, &alive);
        *self
            .shared
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((stop, finished));
        tasks
    }

    async fn shutdown(&self) {
        let running = self
            .shared
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((stop, mut finished)) = running {
            let _ = stop.send(true);
            let deadline = self.config.delivery_timeout;
            let _ =
                tokio::time::timeout(deadline, async { while finished.recv().await.is_some() {} })
                    .await;
        }
    }
}

/// `GET /ready`'s check of the relay's lag.
struct LagCheck {
    shared: Arc<Shared>,
    max_lag: Duration,
}

#[async_trait]
impl ReadinessCheck for LagCheck {
    fn name(&self) -> &str {
        "event-relay"
    }

    async fn check(&self) -> Result<(), BoxError> {
        let Some(relay) = self.shared.relay.get() else {
            return Err("the event relay has not started".into());
        };
        let lag = relay.lag().await?;
        if lag > self.max_lag {
            return Err(format!(
                "the event relay is {} s behind (at most {} s allowed)",
                lag.as_secs(),
                self.max_lag.as_secs()
            )
            .into());
        }
        Ok(())
    }
}
