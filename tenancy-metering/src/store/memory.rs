//! The in-memory usage store (feature `memory`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tenancy_core::{Backend, Entity, StoreError, TenantId, TenantStore};

use super::{IngestStep, MeteringStore, MeteringStoreError, Recorded};
use crate::event::{Event, IdempotencyKey};
use crate::rollup::{Aggregate, Rollup, RollupBatch, RollupKey};
use crate::usage::{UsagePoint, UsageQuery};

#[derive(Default)]
struct State {
    events: HashMap<(TenantId, IdempotencyKey), Event>,
    rollups: HashMap<TenantId, BTreeMap<RollupKey, Aggregate>>,
}

/// Usage in process memory, for tests and single-process prototypes: the
/// same rules as Postgres, gone when the process ends. Tenants are checked
/// in the tenancy-core backend it is given. Clones share the data.
#[derive(Clone)]
pub struct MemoryMeteringStore {
    backend: Arc<dyn Backend>,
    state: Arc<Mutex<State>>,
    crash_after: Option<IngestStep>,
}

impl std::fmt::Debug for MemoryMeteringStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryMeteringStore")
            .finish_non_exhaustive()
    }
}

impl MemoryMeteringStore {
    /// An empty store whose tenants live in `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            state: Arc::default(),
            crash_after: None,
        }
    }

    /// A handle on the same data whose durable writes stop after `step`,
    /// as if the process died there (nothing of the write survives, as a
    /// crash loses uncommitted work). For exactly-once tests.
    #[cfg(feature = "testkit")]
    pub fn crash_after(&self, step: IngestStep) -> Self {
        Self {
            crash_after: Some(step),
            ..self.clone()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn check_tenant(&self, tenant_id: TenantId) -> Result<(), MeteringStoreError> {
        match self.backend.get_tenant(tenant_id).await {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound(Entity::Tenant)) => Err(MeteringStoreError::TenantNotFound),
            Err(e) => Err(e.into()),
        }
    }

    fn crashed(&self, step: IngestStep) -> Result<(), MeteringStoreError> {
        if self.crash_after == Some(step) {
            return Err(StoreError::unavailable(format!("writer stopped after {step:?}")).into());
        }
        Ok(())
    }
}

fn add(rows: &mut BTreeMap<RollupKey, Aggregate>, rollups: impl IntoIterator<Item = Rollup>) {
    for rollup in rollups {
        rows.entry(rollup.key).or_default().merge(&rollup.aggregate);
    }
}

#[async_trait]
impl MeteringStore for MemoryMeteringStore {
    async fn record(&self, event: &Event) -> Result<Recorded, MeteringStoreError> {
        self.check_tenant(event.tenant_id()).await?;
        let mut state = self.lock();
        let id = (event.tenant_id(), event.key().clone());
        if let Some(held) = state.events.get(&id) {
            return if held.same_usage(event) {
                Ok(Recorded::Duplicate)
            } else {
                Err(MeteringStoreError::KeyReused {
                    key: event.key().clone(),
                })
            };
        }
        // Changes are staged and applied together under the lock: a writer
        // stopped between steps leaves nothing behind.
        self.crashed(IngestStep::EventWritten)?;
        let mut batch = RollupBatch::new();
        batch.add_event(event);
        self.crashed(IngestStep::RollupsWritten)?;
        state.events.insert(id, event.clone());
        add(
            state.rollups.entry(event.tenant_id()).or_default(),
            batch.into_rollups(),
        );
        Ok(Recorded::Counted)
    }

    async fn apply(
        &self,
        tenant_id: TenantId,
        rollups: &[Rollup],
    ) -> Result<(), MeteringStoreError> {
        if rollups.is_empty() {
            return Ok(());
        }
        self.check_tenant(tenant_id).await?;
        let mut state = self.lock();
        add(
            state.rollups.entry(tenant_id).or_default(),
            rollups.iter().cloned(),
        );
        Ok(())
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsagePoint>, MeteringStoreError> {
        let state = self.lock();
        Ok(state
            .rollups
            .get(&query.tenant_id())
            .map(|rows| query.fold(rows.iter()))
            .unwrap_or_default())
    }
}
