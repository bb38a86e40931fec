//! [`Relay`]: moves outbox events to sinks.

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use tenancy_core::outbox::{EventFeed, ReplayFrom};
use tenancy_core::{ConsumerName, StoreError, TenantId};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::sink::EventSink;

/// Delivers the outbox to sinks: for each sink, claims a batch of one
/// tenant's pending events, hands it to the sink, and acknowledges what
/// the sink accepted. Tenants take turns; within a tenant, events arrive
/// in order. A sink that fails is retried after an exponential backoff with
/// jitter, without holding up the other sinks.
///
/// Several replicas may run the same relay on one database: a claim
/// excludes the others from that tenant for that sink until it ends, so an
/// event reaches a sink twice only when a relay stops between delivering
/// and acknowledging (delivery is at least once; deduplicate on
/// [`tenancy_core::Event::id`]).
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tenancy_core::{ConsumerName, Event, MemoryBackend};
/// use tenancy_events::{Relay, Subscription};
///
/// let backend = MemoryBackend::new();
/// let log = Subscription::new(ConsumerName::new("log")?, |event: Event| async move {
///     println!("{} in {}: {}", event.event_type, event.tenant_id, event.data);
///     Ok(())
/// });
/// let relay = Relay::new(Arc::new(backend.clone())).sink(Arc::new(log));
/// let delivered = relay.run_once().await?; // or relay.start() for a background task
/// # let _ = delivered; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Relay {
    feed: Arc<dyn EventFeed>,
    sinks: Vec<Arc<dyn EventSink>>,
    config: RelayConfig,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field(
                "sinks",
                &self
                    .sinks
                    .iter()
                    .map(|s| s.consumer().clone())
                    .collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How a [`Relay`] paces itself.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Most events handed to a sink at once (1 to 1000; default 100).
    pub batch_size: usize,
    /// How long an idle sink loop waits before looking again (default 200 ms).
    pub poll_interval: Duration,
    /// The first retry delay after a failure, doubled per further failure
    /// up to `max_backoff`, each with full jitter (default 500 ms).
    pub base_backoff: Duration,
    /// The longest retry delay (default 60 s).
    pub max_backoff: Duration,
    /// How long a sink may take over one batch before it counts as failed
    /// and the batch is given back (default 30 s). On Postgres the claim
    /// holds a transaction this long at most.
    pub delivery_timeout: Duration,
    /// Events older than this that every consumer has are deleted; `None`
    /// keeps them forever (default 7 days).
    pub retention: Option<Duration>,
    /// How often the purge runs (default 1 hour).
    pub purge_every: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            poll_interval: Duration::from_millis(200),
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            delivery_timeout: Duration::from_secs(30),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            purge_every: Duration::from_secs(3600),
        }
    }
}

/// What went wrong in a relay's step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The outbox could not be read or written.
    #[error("the outbox is unavailable")]
    Store(#[from] StoreError),
    /// A sink failed; its events stay pending.
    #[error("sink {consumer} failed after {delivered} events")]
    Sink {
        /// The sink's consumer name.
        consumer: ConsumerName,
        /// How many events of the batch it accepted.
        delivered: usize,
        /// Why.
        #[source]
        source: crate::SinkError,
    },
    /// A sink took longer than [`RelayConfig::delivery_timeout`].
    #[error("sink {consumer} timed out")]
    Timeout {
        /// The sink's consumer name.
        consumer: ConsumerName,
    },
    /// Two sinks share one consumer name, so they would share a position.
    #[error("two sinks are named {0}")]
    DuplicateConsumer(ConsumerName),
}

/// The outcome of one batch.
enum Step {
    Idle,
    Delivered(usize),
}

impl Relay {
    /// A relay over `feed` (any [`tenancy_core::Backend`]) with no sinks yet.
    pub fn new(feed: Arc<dyn EventFeed>) -> Self {
        Self {
            feed,
            sinks: Vec::new(),
            config: RelayConfig::default(),
        }
    }

    /// Adds a sink.
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Replaces the pacing.
    pub fn config(mut self, config: RelayConfig) -> Self {
        self.config = config;
        self
    }

    /// The pacing in force.
    pub fn current_config(&self) -> &RelayConfig {
        &self.config
    }

    /// The consumer names of the sinks.
    pub fn consumers(&self) -> Vec<ConsumerName> {
        self.sinks.iter().map(|s| s.consumer().clone()).collect()
    }

    pub(crate) fn consumers_are_distinct(&self) -> Result<(), RelayError> {
        let mut names = std::collections::HashSet::new();
        for sink in &self.sinks {
            if !names.insert(sink.consumer().clone()) {
                return Err(RelayError::DuplicateConsumer(sink.consumer().clone()));
            }
        }
        Ok(())
    }

    /// One batch for `sink`: claim, deliver, acknowledge what was accepted.
    async fn step(&self, sink: &dyn EventSink) -> Result<Step, RelayError> {
        let consumer = sink.consumer();
        let Some(claim) = self.feed.claim(consumer, self.config.batch_size).await? else {
            return Ok(Step::Idle);
        };
        let events = claim.events();
        let outcome =
            tokio::time::timeout(self.config.delivery_timeout, sink.deliver(events)).await;
        match outcome {
            Ok(Ok(())) => {
                let count = events.len();
                let through = events.last().map_or(0, |e| e.seq);
                claim.ack(through).await?;
                Ok(Step::Delivered(count))
            }
            Ok(Err(failure)) => {
                let delivered = failure.delivered.min(events.len());
                let accepted = delivered
                    .checked_sub(1)
                    .and_then(|i| events.get(i))
                    .map(|last| last.seq);
                match accepted {
                    Some(through) => claim.ack(through).await?,
                    None => claim.release().await?,
                }
                Err(RelayError::Sink {
                    consumer: consumer.clone(),
                    delivered,
                    source: failure.source,
                })
            }
            Err(_) => {
                claim.release().await?;
                Err(RelayError::Timeout {
                    consumer: consumer.clone(),
                })
            }
        }
    }

    /// Delivers everything pending to every sink, in the calling task, and
    /// returns how many events were delivered; stops at the first failure.
    /// For tests, scripts and hosts that schedule the relay themselves.
    pub async fn run_once(&self) -> Result<usize, RelayError> {
        self.consumers_are_distinct()?;
        let mut total = 0;
        for sink in &self.sinks {
            while let Step::Delivered(count) = self.step(sink.as_ref()).await? {
                total += count;
            }
        }
        Ok(total)
    }

    /// Makes `consumer` receive `tenant_id`'s retained events again from
    /// `from`, in order, through the running relay.
    pub async fn replay(
        &self,
        consumer: &ConsumerName,
        tenant_id: TenantId,
        from: ReplayFrom,
    ) -> Result<(), StoreError> {
        self.feed.rewind(consumer, tenant_id, from).await
    }

    /// How far behind the furthest-behind sink is: the age of the oldest
    /// event a sink has not acknowledged; zero when every sink is up to date.
    pub async fn lag(&self) -> Result<Duration, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut lag = Duration::ZERO;
        for sink in &self.sinks {
            if let Some(oldest) = self.feed.oldest_pending(sink.consumer()).await? {
                let behind = Duration::try_from(now - oldest).unwrap_or(Duration::ZERO);
                lag = lag.max(behind);
            }
        }
        Ok(lag)
    }

    /// Deletes the events older than [`RelayConfig::retention`] that every
    /// consumer with a position has acknowledged, this relay's sinks and
    /// any other relay's alike; returns how many events. A sink retired for
    /// good keeps holding events back until its positions are dropped with
    /// [`EventFeed::forget_consumer`].
    pub async fn purge(&self) -> Result<u64, StoreError> {
        let Some(retention) = self.config.retention else {
            return Ok(0);
        };
        let before = OffsetDateTime::now_utc() - retention;
        self.feed.purge_events(before, &[]).await
    }

    /// Starts one task per sink and the purge task on the current tokio
    /// runtime. Stop them with [`RunningRelay::shutdown`], which lets
    /// batches in delivery finish; dropping the handle aborts them.
    pub fn start(self) -> Result<RunningRelay, RelayError> {
        self.consumers_are_distinct()?;
        let (stop, stopped) = watch::channel(false);
        let (alive, finished) = mpsc::channel(1);
        let tasks = self.spawn(&stopped, &alive);
        Ok(RunningRelay {
            stop,
            finished,
            tasks,
        })
    }

    /// Spawns the loops; each holds a clone of `alive` until it ends.
    pub(crate) fn spawn(
        &self,
        stopped: &watch::Receiver<bool>,
        alive: &mpsc::Sender<()>,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks: Vec<JoinHandle<()>> = self
            .sinks
            .iter()
            .map(|sink| {
                let relay = self.clone();
                let sink = Arc::clone(sink);
                let stopped = stopped.clone();
                let alive = alive.clone();
                tokio::spawn(async move {
                    relay.sink_loop(sink.as_ref(), stopped).await;
                    drop(alive);
                })
            })
            .collect();
        if self.config.retention.is_some() {
            let relay = self.clone();
            let mut stopped = stopped.clone();
            let alive = alive.clone();
            tasks.push(tokio::spawn(async move {
                let mut ticker = tokio::time::interval(relay.config.purge_every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stopped.changed() => break,
                    }
                    match relay.purge().await {
                        Ok(purged) => tracing::debug!(purged, "purged relayed outbox events"),
                        Err(error) => tracing::warn!(%error, "purging the outbox failed"),
                    }
                }
                drop(alive);
            }));
        }
        tasks
    }

    async fn sink_loop(&self, sink: &dyn EventSink, mut stopped: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        while !*stopped.borrow() {
            let pause = match self.step(sink).await {
                Ok(Step::Delivered(_)) => {
                    failures = 0;
                    continue;
                }
                Ok(Step::Idle) => {
                    failures = 0;
                    self.config.poll_interval
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let pause =
                        backoff(self.config.base_backoff, self.config.max_backoff, failures);
                    tracing::warn!(
                        consumer = %sink.consumer(),
                        %error,
                        failures,
                        retry_in_ms = pause.as_millis() as u64,
                        "relaying outbox events failed"
                    );
                    pause
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped.changed() => {}
            }
        }
    }
}

/// Exponential backoff with full jitter: a random delay up to
/// `base × 2^(failures-1)`, capped at `max`.
pub(crate) fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exponent).min(max);
    let millis = u64::try_from(ceiling.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(rand::rng().random_range(1..=millis))
}

/// A started [`Relay`].
#[derive(Debug)]
pub struct RunningRelay {
    stop: watch::Sender<bool>,
    finished: mpsc::Receiver<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningRelay {
    /// Stops the relay: no new batch is claimed, and the call returns once
    /// batches in delivery are acknowledged or `deadline` has passed (then
    /// they are aborted and their events stay pending).
    pub async fn shutdown(mut self, deadline: Duration) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        let finished = &mut self.finished;
        let ended = tokio::time::timeout(deadline, async {
            // Every loop holds a sender; recv answers None when all ended.
            while finished.recv().await.is_some() {}
        })
        .await;
        if ended.is_err() {
            for task in &tasks {
                task.abort();
            }
        }
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for failures in 1..40 {
            let delay = backoff(base, max, failures);
            let ceiling = base.saturating_mul(1 << (failures - 1).min(30)).min(max);
            assert!(
                delay >= Duration::from_millis(1) && delay <= ceiling,
                "{failures}: {delay:?}"
            );
        }
    }
}
