//! Where runs are kept: the [`ProvisioningStore`] trait every backend
//! implements, and the rules they share.
//!
//! A worker *claims* a runnable run, which gives it a [`Lease`]; while it
//! holds the lease no other worker claims the run, and every write it makes
//! names the lease, so a worker whose lease lapsed (it crashed, or stalled
//! past the lease) can no longer write. Cancel and retry requests come from
//! elsewhere (an operator) and never need a lease: a cancel only moves the
//! status to `cancelling`, and a leaseholder's later save keeps it there.

use async_trait::async_trait;
use tenancy_core::{Page, PageRequest, StoreError};
use time::OffsetDateTime;

use crate::model::{Lease, Run, RunId, RunStatus, StepStatus};

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisioningStoreError {
    /// No run has this id.
    #[error("provisioning run not found")]
    NotFound,
    /// The run was already created.
    #[error("a provisioning run with this id already exists")]
    Duplicate,
    /// The lease lapsed and another worker claimed the run (or the run
    /// changed hands otherwise): this worker must stop writing it.
    #[error("the lease on this provisioning run was lost")]
    LeaseLost,
    /// The request does not apply to a run in this status (for example
    /// cancelling a run that succeeded, or retrying one that did not fail).
    #[error("a {status} provisioning run cannot be {action}")]
    InvalidTransition {
        /// The run's status.
        status: RunStatus,
        /// What was asked (`cancelled`, `retried`).
        action: &'static str,
    },
    /// The backend failed or holds data it cannot read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Durable runs and step records, shared by every worker of the app.
///
/// Times are passed in by the caller (the runner's clock), so backends
/// agree and tests can move time.
#[async_trait]
pub trait ProvisioningStore: Send + Sync + 'static {
    /// Stores a new run with its step records.
    async fn insert_run(&self, run: &Run) -> Result<(), ProvisioningStoreError>;

    /// Reads a run with its steps.
    async fn get_run(&self, id: RunId) -> Result<Run, ProvisioningStoreError>;

    /// Runs (with their steps) oldest first, only those in `status` when
    /// given: how an operator finds the dead letters (`failed`). Keyset
    /// paginated by id ([`RUNS_LIST`] cursors).
    async fn list_runs(
        &self,
        status: Option<RunStatus>,
        page: &PageRequest,
    ) -> Result<Page<Run>, ProvisioningStoreError>;

    /// Claims one run a worker should act on now, and leases it until
    /// `until`: a run whose lease is free or lapsed (`locked_until <= now`)
    /// and that is `cancelling`, or `pending`/`running` and either due
    /// (`not_before <= now`) or past its deadline. The earliest due first.
    /// Two concurrent claims never return the same run.
    async fn claim(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Option<(Run, Lease)>, ProvisioningStoreError>;

    /// Extends `lease` to `until` and returns the run's current status
    /// (so the holder learns of a cancel).
    /// [`ProvisioningStoreError::LeaseLost`] if the lease is no longer held.
    async fn renew(
        &self,
        lease: &Lease,
        until: OffsetDateTime,
    ) -> Result<RunStatus, ProvisioningStoreError>;

    /// Writes `run` (status, state, not-before, last error, updated-at and
    /// every step record) under `lease`, atomically, and releases the lease
    /// when `release`. A stored `cancelling` status (with its last error) is
    /// kept when `run` says `pending` or `running`: the cancel came in
    /// meanwhile.
    /// [`ProvisioningStoreError::LeaseLost`] if the lease is no longer held;
    /// then nothing is written.
    async fn save(
        &self,
        lease: &Lease,
        run: &Run,
        release: bool,
    ) -> Result<(), ProvisioningStoreError>;

    /// Asks for a run to be cancelled: `pending`, `running` and `failed`
    /// runs become `cancelling` (a worker compensates them); `cancelling`
    /// and `cancelled` ones are returned as they are; a `succeeded` run
    /// answers [`ProvisioningStoreError::InvalidTransition`].
    async fn request_cancel(
        &self,
        id: RunId,
        now: OffsetDateTime,
        reason: &str,
    ) -> Result<Run, ProvisioningStoreError>;

    /// Retries a `failed` run: it becomes `pending` and due now with the
    /// new `deadline`, its failed and cancelled steps become `pending` with
    /// their attempt counts reset (their last error kept), and
    /// `manual_retries` grows by one. Other statuses answer
    /// [`ProvisioningStoreError::InvalidTransition`].
    async fn retry(
        &self,
        id: RunId,
        now: OffsetDateTime,
        deadline: OffsetDateTime,
    ) -> Result<Run, ProvisioningStoreError>;
}

/// The list name in [`ProvisioningStore::list_runs`] cursors.
pub const RUNS_LIST: &str = "provisioning-runs";

/// The rule both backends apply in [`ProvisioningStore::save`] (Postgres
/// in its `UPDATE`): a cancel that came in while the worker held the lease
/// wins over its status.
#[cfg(feature = "memory")]
pub(crate) fn merged_status(stored: RunStatus, written: RunStatus) -> RunStatus {
    if stored == RunStatus::Cancelling && matches!(written, RunStatus::Pending | RunStatus::Running)
    {
        RunStatus::Cancelling
    } else {
        written
    }
}

/// What [`ProvisioningStore::request_cancel`] does to `run`, in memory;
/// `Ok(false)` when nothing changes.
pub(crate) fn apply_cancel(
    run: &mut Run,
    now: OffsetDateTime,
    reason: &str,
) -> Result<bool, ProvisioningStoreError> {
    match run.status {
        RunStatus::Pending | RunStatus::Running | RunStatus::Failed => {
            run.status = RunStatus::Cancelling;
            run.last_error = Some(reason.to_owned());
            run.updated_at = tenancy_core::truncate_to_micros(now);
            Ok(true)
        }
        RunStatus::Cancelling | RunStatus::Cancelled => Ok(false),
        status => Err(ProvisioningStoreError::InvalidTransition {
            status,
            action: "cancelled",
        }),
    }
}

/// What [`ProvisioningStore::retry`] does to `run`, in memory.
pub(crate) fn apply_retry(
    run: &mut Run,
    now: OffsetDateTime,
    deadline: OffsetDateTime,
) -> Result<(), ProvisioningStoreError> {
    if run.status != RunStatus::Failed {
        return Err(ProvisioningStoreError::InvalidTransition {
            status: run.status,
            action: "retried",
        });
    }
    let now = tenancy_core::truncate_to_micros(now);
    run.status = RunStatus::Pending;
    run.not_before = now;
    run.deadline = tenancy_core::truncate_to_micros(deadline);
    run.updated_at = now;
    run.manual_retries = run.manual_retries.saturating_add(1);
    for step in &mut run.steps {
        if matches!(step.status, StepStatus::Failed | StepStatus::Cancelled) {
            step.status = StepStatus::Pending;
            step.attempts = 0;
        }
    }
    Ok(())
}
