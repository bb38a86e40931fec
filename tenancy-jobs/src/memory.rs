//! The in-memory job store (feature `memory`): one process, same
//! semantics as Postgres, for tests and single-process apps.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::{Clock, Cursor, Page, PageRequest, SystemClock, truncate_to_micros};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::JobError;
use crate::job::{ClaimedJob, Enqueued, Job, JobId, JobState, Lease, NewJob};
use crate::store::{
    ClaimRequest, JobFilter, JobStore, LEASE_EXPIRED, LEASE_EXPIRED_ON_LAST_ATTEMPT, LIST_NAME,
    check_claim, check_schedule, next_tick, span, truncate_error,
};

#[derive(Default)]
struct State {
    jobs: BTreeMap<JobId, (Job, Option<Uuid>)>,
    schedules: HashMap<String, OffsetDateTime>,
}

/// Jobs in memory. Cheap to clone: clones share the jobs.
#[derive(Clone)]
pub struct MemoryJobStore {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryJobStore").finish_non_exhaustive()
    }
}

impl Default for MemoryJobStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryJobStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store reading time from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn clock_now(&self) -> OffsetDateTime {
        truncate_to_micros(self.clock.now())
    }
}

fn insert(state: &mut State, job: NewJob, now: OffsetDateTime) -> Enqueued {
    if let Some(key) = job.dedupe_key() {
        let held = state
            .jobs
            .values()
            .find(|(j, _)| j.state.is_active() && j.dedupe_key.as_deref() == Some(key));
        if let Some((existing, _)) = held {
            return Enqueued::Existing(existing.id);
        }
    }
    let id = JobId::new();
    let stored = Job {
        id,
        kind: job.kind().clone(),
        queue: job.queue().clone(),
        payload: job.payload().clone(),
        tenant_id: job.tenant_id(),
        state: JobState::Queued,
        attempts: 0,
        max_attempts: job.max_attempts(),
        run_at: job.run_at().map_or(now, truncate_to_micros),
        dedupe_key: job.dedupe_key().map(str::to_owned),
        last_error: None,
        locked_by: None,
        lease_expires_at: None,
        created_at: now,
        finished_at: None,
    };
    state.jobs.insert(id, (stored, None));
    Enqueued::Created(id)
}

/// The held job, if `lease` is still its current lease.
fn leased<'a>(state: &'a mut State, lease: &Lease) -> Result<&'a mut Job, JobError> {
    let (job, token) = state
        .jobs
        .get_mut(&lease.job_id)
        .ok_or(JobError::NotFound(lease.job_id))?;
    if job.state != JobState::Running || *token != Some(lease.token()) {
        return Err(JobError::LeaseLost(lease.job_id));
    }
    Ok(job)
}

fn unlock(job: &mut Job, token: &mut Option<Uuid>) {
    job.locked_by = None;
    job.lease_expires_at = None;
    *token = None;
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn enqueue(&self, job: NewJob) -> Result<Enqueued, JobError> {
        let now = self.clock_now();
        Ok(insert(&mut self.lock(), job, now))
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedJob>, JobError> {
        check_claim(request)?;
        let now = self.clock_now();
        let lease_end = now + span(request.lease);
        let mut state = self.lock();
        let mut due: Vec<(OffsetDateTime, JobId)> = Vec::new();
        for (job, token) in state.jobs.values_mut() {
            if !request.queues.contains(&job.queue) {
                continue;
            }
            let expired = job.state == JobState::Running
                && job.lease_expires_at.is_some_and(|end| end <= now);
            if expired {
                unlock(job, token);
                if job.attempts >= job.max_attempts {
                    job.state = JobState::Dead;
                    job.last_error = Some(LEASE_EXPIRED_ON_LAST_ATTEMPT.to_owned());
                    job.finished_at = Some(now);
                    continue;
                }
                job.state = JobState::Retrying;
                job.last_error = Some(LEASE_EXPIRED.to_owned());
            }
            if matches!(job.state, JobState::Queued | JobState::Retrying) && job.run_at <= now {
                due.push((job.run_at, job.id));
            }
        }
        due.sort();
        let mut claimed = Vec::new();
        for (_, id) in due.into_iter().take(request.limit) {
            if let Some((job, token)) = state.jobs.get_mut(&id) {
                let fresh = Uuid::now_v7();
                job.state = JobState::Running;
                job.attempts += 1;
                job.locked_by = Some(request.worker_id.clone());
                job.lease_expires_at = Some(lease_end);
                *token = Some(fresh);
                claimed.push(ClaimedJob::new(job.clone(), Lease::new(id, fresh)));
            }
        }
        Ok(claimed)
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        lease_for: Duration,
    ) -> Result<OffsetDateTime, JobError> {
        let end = self.clock_now() + span(lease_for);
        let mut state = self.lock();
        let job = leased(&mut state, lease)?;
        job.lease_expires_at = Some(end);
        Ok(end)
    }

    async fn complete(&self, lease: &Lease) -> Result<(), JobError> {
        let now = self.clock_now();
        let mut state = self.lock();
        if let Some((job, token)) = state.jobs.get(&lease.job_id)
            && job.state == JobState::Succeeded
            && *token == Some(lease.token())
        {
            // Completed with this lease already.
            return Ok(());
        }
        leased(&mut state, lease)?;
        if let Some((job, _)) = state.jobs.get_mut(&lease.job_id) {
            // The token stays, so completing again with it is a no-op.
            job.state = JobState::Succeeded;
            job.finished_at = Some(now);
            job.locked_by = None;
            job.lease_expires_at = None;
        }
        Ok(())
    }

    async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        retry_at: Option<OffsetDateTime>,
    ) -> Result<JobState, JobError> {
        let now = self.clock_now();
        let mut state = self.lock();
        leased(&mut state, lease)?;
        let Some((job, token)) = state.jobs.get_mut(&lease.job_id) else {
            return Err(JobError::NotFound(lease.job_id));
        };
        job.last_error = Some(truncate_error(error));
        match retry_at {
            Some(at) if job.attempts < job.max_attempts => {
                job.state = JobState::Retrying;
                job.run_at = truncate_to_micros(at);
            }
            _ => {
                job.state = JobState::Dead;
                job.finished_at = Some(now);
            }
        }
        unlock(job, token);
        Ok(job.state)
    }

    async fn release(&self, lease: &Lease) -> Result<(), JobError> {
        let now = self.clock_now();
        let mut state = self.lock();
        leased(&mut state, lease)?;
        if let Some((job, token)) = state.jobs.get_mut(&lease.job_id) {
            job.state = JobState::Queued;
            job.attempts = job.attempts.saturating_sub(1);
            job.run_at = now;
            unlock(job, token);
        }
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Job, JobError> {
        self.lock()
            .jobs
            .get(&id)
            .map(|(job, _)| job.clone())
            .ok_or(JobError::NotFound(id))
    }

    async fn list(&self, filter: &JobFilter, page: &PageRequest) -> Result<Page<Job>, JobError> {
        let after: Option<JobId> = page
            .after_key(LIST_NAME)
            .map_err(|e| JobError::InvalidInput(e.to_string()))?;
        let state = self.lock();
        let start = match after {
            Some(id) => std::ops::Bound::Excluded(id),
            None => std::ops::Bound::Unbounded,
        };
        let items: Vec<Job> = state
            .jobs
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, (job, _))| job)
            .filter(|job| filter.matches(job))
            .take(page.size.get() + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(items, page.size, |job| {
            Cursor::encode(LIST_NAME, job.id)
        }))
    }

    async fn retry_dead(&self, id: JobId) -> Result<(), JobError> {
        let now = self.clock_now();
        let mut state = self.lock();
        let (job, _) = state.jobs.get(&id).ok_or(JobError::NotFound(id))?;
        if job.state != JobState::Dead {
            return Err(JobError::InvalidState {
                id,
                state: job.state,
            });
        }
        if let Some(key) = job.dedupe_key.clone() {
            let taken = state.jobs.values().any(|(other, _)| {
                other.id != id && other.state.is_active() && other.dedupe_key.as_ref() == Some(&key)
            });
            if taken {
                return Err(JobError::DuplicateKey(key));
            }
        }
        if let Some((job, _)) = state.jobs.get_mut(&id) {
            job.state = JobState::Queued;
            job.attempts = 0;
            job.run_at = now;
            job.finished_at = None;
        }
        Ok(())
    }

    async fn cancel(&self, id: JobId) -> Result<(), JobError> {
        let now = self.clock_now();
        let mut state = self.lock();
        let (job, _) = state.jobs.get_mut(&id).ok_or(JobError::NotFound(id))?;
        if !matches!(job.state, JobState::Queued | JobState::Retrying) {
            return Err(JobError::InvalidState {
                id,
                state: job.state,
            });
        }
        job.state = JobState::Cancelled;
        job.finished_at = Some(now);
        Ok(())
    }

    async fn purge_finished(
        &self,
        before: OffsetDateTime,
        include_dead: bool,
    ) -> Result<u64, JobError> {
        let mut state = self.lock();
        let size = state.jobs.len();
        state.jobs.retain(|_, (job, _)| {
            let purgeable = match job.state {
                JobState::Succeeded | JobState::Cancelled => true,
                JobState::Dead => include_dead,
                _ => false,
            };
            !(purgeable && job.finished_at.is_some_and(|at| at < before))
        });
        Ok((size - state.jobs.len()) as u64)
    }

    async fn enqueue_due(
        &self,
        name: &str,
        every: Duration,
        job: NewJob,
    ) -> Result<Option<JobId>, JobError> {
        check_schedule(name, every)?;
        let now = self.clock_now();
        let mut state = self.lock();
        let due = *state.schedules.entry(name.to_owned()).or_insert(now);
        if due > now {
            return Ok(None);
        }
        state
            .schedules
            .insert(name.to_owned(), next_tick(due, every, now));
        Ok(Some(insert(&mut state, job.with_run_at(due), now).id()))
    }

    fn now(&self) -> OffsetDateTime {
        self.clock_now()
    }
}
