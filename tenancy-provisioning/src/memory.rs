//! The in-memory run store (feature `memory`): one process, no server.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tenancy_core::{Cursor, Page, PageRequest, StoreError};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{Lease, Run, RunId, RunStatus};
use crate::store::{
    ProvisioningStore, ProvisioningStoreError, RUNS_LIST, apply_cancel, apply_retry, merged_status,
};

#[derive(Debug)]
struct Entry {
    run: Run,
    lease: Option<(Uuid, OffsetDateTime)>,
}

/// Runs in process memory, behind one lock. Workers of one process share
/// it through an `Arc`; it does not survive a restart.
#[derive(Debug, Default)]
pub struct MemoryProvisioningStore {
    runs: Mutex<HashMap<RunId, Entry>>,
}

impl MemoryProvisioningStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<RunId, Entry>>, ProvisioningStoreError> {
        self.runs
            .lock()
            .map_err(|_| StoreError::unavailable("provisioning store lock poisoned").into())
    }
}

fn held(entry: &Entry, lease: &Lease) -> bool {
    entry.lease.is_some_and(|(token, _)| token == lease.token)
}

#[async_trait]
impl ProvisioningStore for MemoryProvisioningStore {
    async fn insert_run(&self, run: &Run) -> Result<(), ProvisioningStoreError> {
        let mut runs = self.lock()?;
        if runs.contains_key(&run.id) {
            return Err(ProvisioningStoreError::Duplicate);
        }
        runs.insert(
            run.id,
            Entry {
                run: run.clone(),
                lease: None,
            },
        );
        Ok(())
    }

    async fn get_run(&self, id: RunId) -> Result<Run, ProvisioningStoreError> {
        self.lock()?
            .get(&id)
            .map(|e| e.run.clone())
            .ok_or(ProvisioningStoreError::NotFound)
    }

    async fn list_runs(
        &self,
        status: Option<RunStatus>,
        page: &PageRequest,
    ) -> Result<Page<Run>, ProvisioningStoreError> {
        let after: Option<RunId> = page.after_key(RUNS_LIST).map_err(StoreError::from)?;
        let mut items: Vec<Run> = self
            .lock()?
            .values()
            .map(|e| &e.run)
            .filter(|r| status.is_none_or(|s| r.status == s) && after.is_none_or(|a| r.id > a))
            .cloned()
            .collect();
        items.sort_by_key(|r| r.id);
        items.truncate(page.size.get() + 1);
        Ok(Page::from_overfetch(items, page.size, |r| {
            Cursor::encode(RUNS_LIST, r.id)
        }))
    }

    async fn claim(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Option<(Run, Lease)>, ProvisioningStoreError> {
        let mut runs = self.lock()?;
        let candidate = runs
            .values_mut()
            .filter(|e| e.lease.is_none_or(|(_, until)| until <= now))
            .filter(|e| match e.run.status {
                RunStatus::Cancelling => true,
                RunStatus::Pending | RunStatus::Running => {
                    e.run.not_before <= now || e.run.deadline <= now
                }
                _ => false,
            })
            .min_by_key(|e| (e.run.not_before, e.run.id));
        let Some(entry) = candidate else {
            return Ok(None);
        };
        let until = tenancy_core::truncate_to_micros(until);
        let lease = Lease {
            run_id: entry.run.id,
            token: Uuid::now_v7(),
            until,
        };
        entry.lease = Some((lease.token, until));
        Ok(Some((entry.run.clone(), lease)))
    }

    async fn renew(
        &self,
        lease: &Lease,
        until: OffsetDateTime,
    ) -> Result<RunStatus, ProvisioningStoreError> {
        let mut runs = self.lock()?;
        let entry = runs
            .get_mut(&lease.run_id)
            .filter(|e| held(e, lease))
            .ok_or(ProvisioningStoreError::LeaseLost)?;
        entry.lease = Some((lease.token, tenancy_core::truncate_to_micros(until)));
        Ok(entry.run.status)
    }

    async fn save(
        &self,
        lease: &Lease,
        run: &Run,
        release: bool,
    ) -> Result<(), ProvisioningStoreError> {
        let mut runs = self.lock()?;
        let entry = runs
            .get_mut(&lease.run_id)
            .filter(|e| held(e, lease))
            .ok_or(ProvisioningStoreError::LeaseLost)?;
        let status = merged_status(entry.run.status, run.status);
        let mut stored = run.clone();
        if status != run.status {
            // The cancel came in meanwhile: its reason stays too.
            stored.last_error = entry.run.last_error.clone();
        }
        stored.status = status;
        stored.updated_at = tenancy_core::truncate_to_micros(run.updated_at);
        stored.not_before = tenancy_core::truncate_to_micros(run.not_before);
        // Only the leaseholder's fields: input, deadline and the manual
        // retry count are the store's.
        stored.input = entry.run.input.clone();
        stored.deadline = entry.run.deadline;
        stored.manual_retries = entry.run.manual_retries;
        for step in &mut stored.steps {
            step.started_at = step.started_at.map(tenancy_core::truncate_to_micros);
            step.finished_at = step.finished_at.map(tenancy_core::truncate_to_micros);
        }
        entry.run = stored;
        if release {
            entry.lease = None;
        }
        Ok(())
    }

    async fn request_cancel(
        &self,
        id: RunId,
        now: OffsetDateTime,
        reason: &str,
    ) -> Result<Run, ProvisioningStoreError> {
        let mut runs = self.lock()?;
        let entry = runs.get_mut(&id).ok_or(ProvisioningStoreError::NotFound)?;
        apply_cancel(&mut entry.run, now, reason)?;
        Ok(entry.run.clone())
    }

    async fn retry(
        &self,
        id: RunId,
        now: OffsetDateTime,
        deadline: OffsetDateTime,
    ) -> Result<Run, ProvisioningStoreError> {
        let mut runs = self.lock()?;
        let entry = runs.get_mut(&id).ok_or(ProvisioningStoreError::NotFound)?;
        apply_retry(&mut entry.run, now, deadline)?;
        Ok(entry.run.clone())
    }
}
