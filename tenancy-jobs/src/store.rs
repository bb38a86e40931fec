//! The job store trait, implemented in memory and on Postgres.

use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::{Page, PageRequest, TenantId};
use time::OffsetDateTime;

use crate::error::JobError;
use crate::job::{ClaimedJob, Enqueued, Job, JobId, JobKind, JobState, Lease, NewJob, Queue};

/// Where jobs live. Object-safe: workers and apps hold an
/// `Arc<dyn JobStore>`.
///
/// Every implementation reads the time from one injected
/// [`tenancy_core::Clock`], so backoff, schedules, leases and retention can
/// be driven by a manual clock in tests; replicas in production should keep
/// their clocks in sync (NTP), since lease expiry compares one replica's
/// "now" with another's.
///
/// Delivery is at least once: a worker that dies mid-job leaves its lease
/// to expire and the job runs again. Handlers make their outside effects
/// idempotent (keyed by the job id); the lease token makes sure only the
/// current attempt's outcome is recorded.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores a new job, or returns the id of the active job holding its
    /// dedupe key.
    async fn enqueue(&self, job: NewJob) -> Result<Enqueued, JobError>;

    /// Claims up to `request.limit` due jobs of the given queues, oldest
    /// `run_at` first, skipping jobs other workers are claiming at the same
    /// moment. First, running jobs of those queues whose lease expired go
    /// back to retrying, due at once, with their attempt counted and an
    /// error saying so (from then on their old lease is refused); after
    /// their last attempt they go dead instead.
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedJob>, JobError>;

    /// Extends a running job's lease to `now + lease`; returns the new end.
    /// [`JobError::LeaseLost`] when the job was claimed again or left the
    /// running state.
    async fn heartbeat(
        &self,
        lease: &Lease,
        lease_for: Duration,
    ) -> Result<OffsetDateTime, JobError>;

    /// Marks a running job succeeded. Completing again with the same lease
    /// is a no-op (a handler may have completed the job in its own
    /// transaction); [`JobError::LeaseLost`] when the lease is no longer
    /// valid.
    async fn complete(&self, lease: &Lease) -> Result<(), JobError>;

    /// Records a failed attempt with its error: with `retry_at` and
    /// attempts left the job is retried then, otherwise it goes dead.
    /// Returns the state it went to.
    async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        retry_at: Option<OffsetDateTime>,
    ) -> Result<JobState, JobError>;

    /// Gives a running job back without counting the attempt (a worker
    /// shutting down): it is queued and due at once.
    async fn release(&self, lease: &Lease) -> Result<(), JobError>;

    /// One job.
    async fn get(&self, id: JobId) -> Result<Job, JobError>;

    /// Jobs matching `filter`, in id (enqueue) order, keyset-paginated.
    async fn list(&self, filter: &JobFilter, page: &PageRequest) -> Result<Page<Job>, JobError>;

    /// Puts a dead job back in the queue with its attempts reset (manual
    /// retry); its last error is kept until the next failure.
    /// [`JobError::InvalidState`] unless it is dead.
    async fn retry_dead(&self, id: JobId) -> Result<(), JobError>;

    /// Cancels a queued or retrying job. A running job cannot be
    /// cancelled ([`JobError::InvalidState`]); a finished one neither.
    async fn cancel(&self, id: JobId) -> Result<(), JobError>;

    /// Deletes succeeded and cancelled jobs (and dead ones when
    /// `include_dead`) that finished before `before`; returns how many.
    async fn purge_finished(
        &self,
        before: OffsetDateTime,
        include_dead: bool,
    ) -> Result<u64, JobError>;

    /// Enqueues the due tick of the periodic schedule `name`, at most once
    /// per tick whatever the number of replicas calling: the schedule's
    /// next run moves forward in the same step (ticks missed while no
    /// worker ran collapse into one). The first call for a name creates the
    /// schedule, due at once. Returns the job enqueued, if a tick was due.
    async fn enqueue_due(
        &self,
        name: &str,
        every: Duration,
        job: NewJob,
    ) -> Result<Option<JobId>, JobError>;

    /// The store's current time (its clock), which workers use to compute
    /// retry times.
    fn now(&self) -> OffsetDateTime;
}

/// What to claim.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimRequest {
    /// The queues to claim from (at least one).
    pub queues: Vec<Queue>,
    /// Who claims, recorded as `locked_by`.
    pub worker_id: String,
    /// At most this many jobs.
    pub limit: usize,
    /// How long the lease lasts unless extended.
    pub lease: Duration,
}

impl ClaimRequest {
    /// Up to `limit` jobs of `queues`, for `worker_id`, leased for `lease`.
    pub fn new(
        queues: Vec<Queue>,
        worker_id: impl Into<String>,
        limit: usize,
        lease: Duration,
    ) -> Self {
        Self {
            queues,
            worker_id: worker_id.into(),
            limit,
            lease,
        }
    }
}

/// Which jobs to list; every field set narrows the list.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this queue.
    pub queue: Option<Queue>,
    /// Only jobs of this kind.
    pub kind: Option<JobKind>,
    /// Only jobs of this tenant.
    pub tenant_id: Option<TenantId>,
}

impl JobFilter {
    /// Every job.
    pub fn all() -> Self {
        Self::default()
    }
    /// Narrows to `state`.
    pub fn state(mut self, state: JobState) -> Self {
        self.state = Some(state);
        self
    }
    /// Narrows to `queue`.
    pub fn queue(mut self, queue: Queue) -> Self {
        self.queue = Some(queue);
        self
    }
    /// Narrows to `kind`.
    pub fn kind(mut self, kind: JobKind) -> Self {
        self.kind = Some(kind);
        self
    }
    /// Narrows to `tenant_id`.
    pub fn tenant(mut self, tenant_id: TenantId) -> Self {
        self.tenant_id = Some(tenant_id);
        self
    }

    /// Whether `job` passes.
    pub fn matches(&self, job: &Job) -> bool {
        self.state.is_none_or(|s| s == job.state)
            && self.queue.as_ref().is_none_or(|q| *q == job.queue)
            && self.kind.as_ref().is_none_or(|k| *k == job.kind)
            && self.tenant_id.is_none_or(|t| Some(t) == job.tenant_id)
    }
}

/// The list name cursors of [`JobStore::list`] are bound to.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) const LIST_NAME: &str = "jobs";

/// Converts a `std` duration to a `time` one, saturating.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) fn span(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// Checks a claim request.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) fn check_claim(request: &ClaimRequest) -> Result<(), JobError> {
    if request.queues.is_empty() {
        return Err(JobError::InvalidInput(
            "claim from at least one queue".into(),
        ));
    }
    if request.worker_id.is_empty() || request.worker_id.len() > 200 {
        return Err(JobError::InvalidInput(
            "a worker id is 1 to 200 bytes".into(),
        ));
    }
    if request.lease.is_zero() {
        return Err(JobError::InvalidInput(
            "a lease must be longer than zero".into(),
        ));
    }
    Ok(())
}

/// Checks a periodic schedule's name and interval.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) fn check_schedule(name: &str, every: Duration) -> Result<(), JobError> {
    if name.is_empty()
        || name.len() > crate::job::MAX_NAME_LEN
        || name.chars().any(char::is_control)
    {
        return Err(JobError::InvalidInput(
            "a schedule name is 1 to 128 bytes without control characters".into(),
        ));
    }
    if every < Duration::from_secs(1) {
        return Err(JobError::InvalidInput(
            "a schedule runs at most once a second".into(),
        ));
    }
    Ok(())
}

/// The first tick after `now` of a schedule whose tick `due` came.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) fn next_tick(
    due: OffsetDateTime,
    every: Duration,
    now: OffsetDateTime,
) -> OffsetDateTime {
    let step = span(every);
    if step <= time::Duration::ZERO {
        return now;
    }
    let behind = now - due;
    // Whole steps already passed, plus the one after now.
    let steps = (behind.whole_microseconds() / step.whole_microseconds().max(1)).max(0) + 1;
    let steps = i32::try_from(steps).unwrap_or(i32::MAX);
    due.checked_add(step.saturating_mul(steps))
        .unwrap_or(now + step)
}

/// The last error recorded when a job's lease ran out with attempts left.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) const LEASE_EXPIRED: &str =
    "the worker's lease expired during the attempt (worker crashed or stalled)";

/// The last error recorded when a job's lease ran out on its last attempt.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) const LEASE_EXPIRED_ON_LAST_ATTEMPT: &str =
    "the worker's lease expired during the last attempt (worker crashed or stalled)";

/// The longest error text kept, in bytes.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) const MAX_ERROR_LEN: usize = 4096;

/// Cuts an error text to [`MAX_ERROR_LEN`] on a character boundary.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) fn truncate_error(error: &str) -> String {
    if error.len() <= MAX_ERROR_LEN {
        return error.to_owned();
    }
    let mut end = MAX_ERROR_LEN;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn next_tick_skips_missed_ticks() {
        let due = datetime!(2030-01-01 0:00 UTC);
        let every = Duration::from_secs(60);
        assert_eq!(next_tick(due, every, due), datetime!(2030-01-01 0:01 UTC));
        assert_eq!(
            next_tick(due, every, datetime!(2030-01-01 0:05:30 UTC)),
            datetime!(2030-01-01 0:06 UTC)
        );
    }
}
