//! Where usage lives: the [`MeteringStore`] trait and its adapters.

#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;

#[cfg(feature = "memory")]
pub use memory::MemoryMeteringStore;

use async_trait::async_trait;
use tenancy_core::{StoreError, TenantId};

use crate::event::{Event, IdempotencyKey};
use crate::rollup::Rollup;
use crate::usage::{UsagePoint, UsageQuery};

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeteringStoreError {
    /// The tenant does not exist.
    #[error("tenant not found")]
    TenantNotFound,
    /// The idempotency key was already used by this tenant for different
    /// usage (another meter, value, timestamp or dimensions): the caller
    /// reuses keys, which would lose events. Nothing was recorded.
    #[error("idempotency key {key:?} was already used for different usage")]
    KeyReused {
        /// The key.
        key: IdempotencyKey,
    },
    /// The backend failed; retrying may help (a durable write that failed
    /// was not recorded, so its retry counts once).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether a durable write counted the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Recorded {
    /// The event was new and is counted.
    Counted,
    /// The tenant had already recorded this key for the same usage: a
    /// retry, counted once already.
    Duplicate,
}

/// A step of a durable write, after which a test may make the writer stop
/// as a crash would (feature `testkit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IngestStep {
    /// The event row and its key are written, the rollups not yet.
    EventWritten,
    /// The rollups are written, the transaction not yet committed.
    RollupsWritten,
}

/// Stores usage events and rollups. Every adapter passes the conformance
/// suites in `testkit`.
///
/// Guarantees every adapter keeps:
/// - [`record`](Self::record) writes the event, its tenant-scoped key and
///   its rollups atomically: a retry after a failure or crash at any point
///   counts the event exactly once.
/// - [`apply`](Self::apply) adds a batch of one tenant's rollups
///   atomically: all or none.
/// - [`usage`](Self::usage) answers points in window, then group order,
///   and sees only the query's tenant.
#[async_trait]
pub trait MeteringStore: Send + Sync + 'static {
    /// Records one event durably (event, key and rollups in one
    /// transaction). A key the tenant already used answers
    /// [`Recorded::Duplicate`] for the same usage, and
    /// [`MeteringStoreError::KeyReused`] otherwise.
    async fn record(&self, event: &Event) -> Result<Recorded, MeteringStoreError>;

    /// Adds `rollups` to `tenant_id`'s rollups, in one transaction. Rows
    /// may repeat a key; they add up.
    async fn apply(
        &self,
        tenant_id: TenantId,
        rollups: &[Rollup],
    ) -> Result<(), MeteringStoreError>;

    /// The usage `query` asks for.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsagePoint>, MeteringStoreError>;
}
