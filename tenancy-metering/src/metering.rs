//! [`Metering`]: declared meters over a store, the entry point of the
//! durable ingest path and of usage queries.

use std::sync::Arc;

use tenancy_core::{Clock, SystemClock, TenantScope};
use time::OffsetDateTime;

use crate::buffer::{BufferConfig, BufferedIngest};
use crate::event::{Event, EventError, IngestWindow, NewEvent};
use crate::meter::{DimensionName, Meters};
use crate::rollup::Granularity;
use crate::store::{MeteringStore, MeteringStoreError, Recorded};
use crate::usage::{QueryError, UsagePoint, UsageQuery};

/// Why an event was not recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The event is invalid; sending it again will not help.
    #[error(transparent)]
    Invalid(#[from] EventError),
    /// The store refused or failed (see [`MeteringStoreError`]).
    #[error(transparent)]
    Store(#[from] MeteringStoreError),
}

/// Why a usage query was not answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// No meter of this name is declared.
    #[error("unknown meter {0:?}")]
    UnknownMeter(String),
    /// The query is invalid.
    #[error(transparent)]
    Invalid(#[from] QueryError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] MeteringStoreError),
}

/// The host's meters over a [`MeteringStore`]: checks events and records
/// them durably, and answers usage queries. Cheap to clone.
#[derive(Clone)]
pub struct Metering {
    meters: Arc<Meters>,
    store: Arc<dyn MeteringStore>,
    clock: Arc<dyn Clock>,
    window: IngestWindow,
}

impl std::fmt::Debug for Metering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metering")
            .field("meters", &self.meters)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Metering {
    /// `meters` over `store`, with the system clock and the default
    /// [`IngestWindow`].
    pub fn new(meters: Meters, store: Arc<dyn MeteringStore>) -> Self {
        Self {
            meters: Arc::new(meters),
            store,
            clock: Arc::new(SystemClock),
            window: IngestWindow::default(),
        }
    }

    /// Uses `clock` to judge event timestamps.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Accepts timestamps inside `window`.
    pub fn with_window(mut self, window: IngestWindow) -> Self {
        self.window = window;
        self
    }

    /// The declared meters.
    pub fn meters(&self) -> &Meters {
        &self.meters
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn MeteringStore> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Buffered ingest in front of the same store, with the same meters,
    /// clock and window (see [`BufferedIngest`] for its guarantee).
    pub fn buffered(&self, config: BufferConfig) -> BufferedIngest {
        BufferedIngest::new(Arc::clone(&self.meters), Arc::clone(&self.store), config)
            .with_clock(Arc::clone(&self.clock))
            .with_window(self.window)
    }

    /// Checks `event` for the scope's tenant at the current time.
    pub fn validate(&self, scope: &TenantScope, event: NewEvent) -> Result<Event, EventError> {
        Event::validate(
            &self.meters,
            scope.tenant_id(),
            event,
            self.clock.now(),
            self.window,
        )
    }

    /// Durable ingest: returns once the event, its key and its rollups are
    /// committed together. Retrying with the same key after any failure
    /// counts the event exactly once ([`Recorded::Duplicate`] tells a retry
    /// that the first attempt had landed).
    pub async fn record(
        &self,
        scope: &TenantScope,
        event: NewEvent,
    ) -> Result<Recorded, IngestError> {
        let event = self.validate(scope, event)?;
        Ok(self.store.record(&event).await?)
    }

    /// The scope's usage of `meter` in windows of `granularity` starting in
    /// `[from, to)`, grouped by `group_by`.
    pub async fn usage(
        &self,
        scope: &TenantScope,
        meter: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        granularity: Granularity,
        group_by: Vec<DimensionName>,
    ) -> Result<(UsageQuery, Vec<UsagePoint>), UsageError> {
        let meter = self
            .meters
            .get(meter)
            .ok_or_else(|| UsageError::UnknownMeter(meter.chars().take(128).collect()))?;
        let query = UsageQuery::new(
            scope.tenant_id(),
            Arc::clone(meter),
            from,
            to,
            granularity,
            group_by,
        )?;
        let points = self.store.usage(&query).await?;
        Ok((query, points))
    }
}
