//! Buffered ingest: events add up in sharded in-process counters and reach
//! the store in batches, on an interval and on shutdown.
//!
//! Guarantee: an accepted event is counted once when the flush that carries
//! it commits. Events accepted since the last committed flush live only in
//! this process: a crash loses at most one flush interval of them (plus
//! batches whose flush failed and wait for the next try); a graceful
//! [`Flusher::shutdown`] loses nothing. Buffered events carry no
//! idempotency key: use [`Metering::record`](crate::Metering::record)
//! where a retried call must count once.
//!
//! No lock is shared by all threads: each thread adds to one of
//! [`BufferConfig::shards`] counters, chosen once per thread, so threads
//! contend only when they share a shard.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tenancy_core::{Clock, SystemClock, TenantId, TenantScope};
use time::OffsetDateTime;

use crate::event::{Dimensions, EventError, IngestWindow};
use crate::meter::{Meter, Meters};
use crate::rollup::{Aggregate, Granularity, TenantRollups};
use crate::store::{MeteringStore, MeteringStoreError};

/// Settings of a [`BufferedIngest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferConfig {
    /// How many counters threads spread over (default: 4 per available
    /// core, at least 4).
    pub shards: usize,
    /// How often [`BufferedIngest::spawn_flusher`] flushes (default 1 s):
    /// the bound of the loss window on a crash.
    pub flush_every: Duration,
}

impl Default for BufferConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            shards: (cores * 4).max(4),
            flush_every: Duration::from_secs(1),
        }
    }
}

impl BufferConfig {
    /// Sets the number of shards (at least 1).
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// Sets the flush interval.
    pub fn with_flush_every(mut self, every: Duration) -> Self {
        self.flush_every = every;
        self
    }
}

#[derive(PartialEq, Eq, Hash)]
struct CounterKey {
    tenant_id: TenantId,
    /// The meter's address in the catalog this ingest holds: cheaper to
    /// hash than its name, and no shared reference count is touched per
    /// event.
    meter: usize,
    /// Unix time in minutes.
    minute: i64,
    dimensions: Dimensions,
}

type Counters = HashMap<CounterKey, (Arc<Meter>, Aggregate), foldhash::fast::RandomState>;

/// One shard on its own cache lines, so neighbouring shards do not share
/// them.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Counters>);

/// What one flush carried to the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Events in committed batches.
    pub events: u64,
    /// Rollup rows written (each minute counter gives a minute, an hour
    /// and a day row, merged where they meet).
    pub rows: u64,
    /// Tenants whose batch committed.
    pub tenants: u64,
    /// Tenants whose batch failed and waits for the next flush.
    pub retained: u64,
    /// Events dropped because their tenant no longer exists.
    pub dropped: u64,
}

struct Inner {
    meters: Arc<Meters>,
    store: Arc<dyn MeteringStore>,
    clock: Arc<dyn Clock>,
    window: IngestWindow,
    config: BufferConfig,
    shards: Box<[Shard]>,
    /// Batches whose flush failed, tried again first; also serializes
    /// flushes, so a batch is never applied twice.
    pending: tokio::sync::Mutex<TenantRollups>,
}

/// Sharded in-process usage counters in front of a [`MeteringStore`].
/// Cheap to clone: clones share the counters.
#[derive(Clone)]
pub struct BufferedIngest {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BufferedIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedIngest")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
}

impl BufferedIngest {
    /// Counters for `meters` in front of `store`.
    pub fn new(meters: Arc<Meters>, store: Arc<dyn MeteringStore>, config: BufferConfig) -> Self {
        let shards = (0..config.shards.max(1))
            .map(|_| Shard::default())
            .collect();
        Self {
            inner: Arc::new(Inner {
                meters,
                store,
                clock: Arc::new(SystemClock),
                window: IngestWindow::default(),
                config,
                shards,
                pending: tokio::sync::Mutex::default(),
            }),
        }
    }

    /// Uses `clock` to judge event timestamps. Call before sharing.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.clock = clock;
        }
        self
    }

    /// Accepts timestamps inside `window`. Call before sharing.
    pub fn with_window(mut self, window: IngestWindow) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.window = window;
        }
        self
    }

    /// Adds an event to this thread's counter; it reaches the store with
    /// the next flush. Checked like a durable event (meter, value,
    /// timestamp, dimensions; dimensions the meter does not keep are
    /// dropped).
    pub fn add(
        &self,
        scope: &TenantScope,
        meter: &str,
        value: i64,
        timestamp: OffsetDateTime,
        dimensions: &[(&str, &str)],
    ) -> Result<(), EventError> {
        let inner = &*self.inner;
        let meter = crate::event::check(
            &inner.meters,
            meter,
            value,
            timestamp,
            inner.clock.now(),
            inner.window,
        )?;
        let dimensions =
            crate::event::keep_dimensions(meter, dimensions.iter().map(|(k, v)| (*k, *v)))?;
        let key = CounterKey {
            tenant_id: scope.tenant_id(),
            meter: Arc::as_ptr(meter) as usize,
            minute: timestamp.unix_timestamp().div_euclid(60),
            dimensions,
        };
        let at = tenancy_core::truncate_to_micros(timestamp);
        let index = THREAD_SHARD.with(|i| *i) % inner.shards.len();
        let mut counters = inner.shards[index]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counters
            .entry(key)
            .or_insert_with(|| (Arc::clone(meter), Aggregate::default()))
            .1
            .add(meter.aggregation(), value, at);
        Ok(())
    }

    /// Moves every counter to the store now: one transaction per tenant.
    /// A tenant's batch that fails is kept and tried again by the next
    /// flush; a tenant that no longer exists has its usage dropped (logged).
    pub async fn flush(&self) -> FlushReport {
        let inner = &*self.inner;
        let mut pending = inner.pending.lock().await;
        for shard in &inner.shards {
            let counters =
                std::mem::take(&mut *shard.0.lock().unwrap_or_else(PoisonError::into_inner));
            for (key, (meter, aggregate)) in counters {
                let minute = OffsetDateTime::from_unix_timestamp(key.minute.saturating_mul(60))
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                pending.entry(key.tenant_id).or_default().add_minute(
                    meter.name(),
                    meter.aggregation(),
                    minute,
                    &key.dimensions,
                    &aggregate,
                );
            }
        }
        let mut report = FlushReport::default();
        let batches = std::mem::take(&mut *pending);
        for (tenant_id, batch) in batches {
            let rollups = batch.clone().into_rollups();
            let events = rollups
                .iter()
                .filter(|r| r.key.granularity == Granularity::Minute)
                .map(|r| u64::try_from(r.aggregate.count).unwrap_or(0))
                .sum::<u64>();
            match inner.store.apply(tenant_id, &rollups).await {
                Ok(()) => {
                    report.events += events;
                    report.rows += rollups.len() as u64;
                    report.tenants += 1;
                }
                Err(MeteringStoreError::TenantNotFound) => {
                    tracing::warn!(%tenant_id, events, "usage of a tenant that no longer exists dropped");
                    report.dropped += events;
                }
                Err(error) => {
                    tracing::error!(%tenant_id, events, error = %error, "usage flush failed; kept for the next flush");
                    report.retained += 1;
                    pending.insert(tenant_id, batch);
                }
            }
        }
        report
    }

    /// Flushes every [`BufferConfig::flush_every`] on the current tokio
    /// runtime until [`Flusher::shutdown`], which flushes once more.
    pub fn spawn_flusher(&self) -> Flusher {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let ingest = self.clone();
        let every = self.inner.config.flush_every;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => { ingest.flush().await; }
                    _ = &mut stopped => break,
                }
            }
        });
        Flusher {
            ingest: self.clone(),
            stop,
            task,
        }
    }
}

/// The background flush task of a [`BufferedIngest`].
#[derive(Debug)]
pub struct Flusher {
    ingest: BufferedIngest,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Flusher {
    /// Stops the interval and flushes what is left (graceful shutdown:
    /// nothing accepted before this call is lost, unless the store keeps
    /// failing, which the report's `retained` shows).
    pub async fn shutdown(self) -> FlushReport {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.ingest.flush().await
    }
}
