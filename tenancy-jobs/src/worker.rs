//! Workers: claim jobs, run their handlers, record the outcome.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::TenantId;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::error::JobError;
use crate::job::{ClaimedJob, Job, JobId, JobKind, JobState, Lease, NewJob, Queue};
use crate::store::{ClaimRequest, JobStore, span};

/// What a handler gets: the job as claimed.
#[derive(Debug, Clone)]
pub struct JobContext {
    job: Job,
    lease: Lease,
}

impl JobContext {
    /// The job (state running; `attempts` counts this attempt).
    pub fn job(&self) -> &Job {
        &self.job
    }
    /// The job's id: the key to make outside effects idempotent with,
    /// since a job may run more than once (a worker died mid-job).
    pub fn id(&self) -> JobId {
        self.job.id
    }
    /// The tenant the job works for, if any.
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.job.tenant_id
    }
    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.job.attempts
    }
    /// The lease this attempt holds, for completing the job inside the
    /// handler's own transaction (`PgJobStore::complete_in`).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }
    /// The payload as `T`; a mismatch is a permanent failure.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandlerError> {
        self.job.payload_as().map_err(HandlerError::permanent)
    }
}

/// A failed attempt: retried with backoff while attempts are left, unless
/// permanent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
    permanent: bool,
}

impl HandlerError {
    /// A failure worth retrying (a timeout, an unavailable service).
    pub fn retry(error: impl fmt::Display) -> Self {
        Self {
            message: error.to_string(),
            permanent: false,
        }
    }
    /// A failure no retry will fix (bad payload): the job goes dead now.
    pub fn permanent(error: impl fmt::Display) -> Self {
        Self {
            message: error.to_string(),
            permanent: true,
        }
    }
    /// The message recorded as the job's last error.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs the jobs of one kind.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// The kind handled.
    fn kind(&self) -> &JobKind;
    /// Runs one attempt. It may be cancelled at an `.await` (timeout,
    /// shutdown, lost lease) and the job may run again after a crash, so
    /// outside effects should be idempotent, keyed by [`JobContext::id`].
    async fn run(&self, ctx: JobContext) -> Result<(), HandlerError>;
}

struct FnHandler<F> {
    kind: JobKind,
    f: F,
}

#[async_trait]
impl<F, Fut> JobHandler for FnHandler<F>
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn kind(&self) -> &JobKind {
        &self.kind
    }
    async fn run(&self, ctx: JobContext) -> Result<(), HandlerError> {
        (self.f)(ctx).await
    }
}

/// A handler from an async closure.
///
/// ```
/// use tenancy_jobs::{JobKind, handler_fn};
/// let handler = handler_fn(JobKind::new("noop")?, |_ctx| async { Ok(()) });
/// assert_eq!(handler.kind().as_str(), "noop");
/// # Ok::<(), tenancy_jobs::JobError>(())
/// ```
pub fn handler_fn<F, Fut>(kind: JobKind, f: F) -> Arc<dyn JobHandler>
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    Arc::new(FnHandler { kind, f })
}

/// A handler from an async closure taking the payload deserialized into
/// `T`; a payload that does not match is a permanent failure (the job goes
/// dead without calling `f`).
///
/// ```
/// use tenancy_jobs::{JobKind, typed_handler};
/// #[derive(serde::Deserialize)]
/// struct Welcome { user: u64 }
/// let handler = typed_handler(JobKind::new("email.welcome")?, |_ctx, welcome: Welcome| async move {
///     let _ = welcome.user;
///     Ok(())
/// });
/// assert_eq!(handler.kind().as_str(), "email.welcome");
/// # Ok::<(), tenancy_jobs::JobError>(())
/// ```
pub fn typed_handler<T, F, Fut>(kind: JobKind, f: F) -> Arc<dyn JobHandler>
where
    T: serde::de::DeserializeOwned + Send + 'static,
    F: Fn(JobContext, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    handler_fn(kind, move |ctx| {
        let run = ctx.payload::<T>().map(|payload| f(ctx, payload));
        async move { run?.await }
    })
}

/// A job enqueued on a fixed interval, once per tick across all workers
/// and replicas (see [`JobStore::enqueue_due`]).
#[derive(Debug, Clone)]
pub struct Periodic {
    name: String,
    every: Duration,
    job: NewJob,
}

impl Periodic {
    /// Enqueues `job` every `every` (at least one second) under the
    /// schedule `name`; the first tick is due when a worker first sees it.
    pub fn every(name: impl Into<String>, every: Duration, job: NewJob) -> Result<Self, JobError> {
        let name = name.into();
        crate::store::check_schedule(&name, every)?;
        Ok(Self { name, every, job })
    }
}

/// How long finished jobs are kept; the worker purges older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Succeeded and cancelled jobs are deleted this long after finishing.
    pub finished: Duration,
    /// Dead jobs are deleted this long after dying; `None` keeps them.
    pub dead: Option<Duration>,
    /// How often the worker purges.
    pub every: Duration,
}

impl Default for Retention {
    /// Finished jobs a week, dead ones 30 days, purged hourly.
    fn default() -> Self {
        Self {
            finished: Duration::from_secs(7 * 86_400),
            dead: Some(Duration::from_secs(30 * 86_400)),
            every: Duration::from_secs(3600),
        }
    }
}

/// A worker's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Recorded as `locked_by` on the jobs it holds.
    pub id: String,
    /// The queues it claims from.
    pub queues: Vec<Queue>,
    /// Jobs run at once.
    pub concurrency: usize,
    /// How long it sleeps when no job is due (a [`WorkerHandle::wake`]
    /// cuts it short).
    pub poll_interval: Duration,
    /// How long a claim lasts without a heartbeat: after a crash, its jobs
    /// run again this long later. A worker that cannot renew a lease (the
    /// store unreachable) cancels the handler a tenth of the lease before
    /// it ends and records nothing, so that no two workers run the job at
    /// once. Lease ends are read from each replica's own clock (the
    /// store's [`Clock`](tenancy_core::Clock)): keep them in sync.
    pub lease: Duration,
    /// How often a running job's lease is extended; well below `lease`.
    pub heartbeat: Duration,
    /// An attempt running longer fails (and is retried).
    pub job_timeout: Duration,
    /// The wait before each retry.
    pub backoff: Backoff,
    /// Purging of finished jobs; `None` keeps them.
    pub retention: Option<Retention>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: format!("worker-{}", uuid::Uuid::now_v7().simple()),
            queues: vec![Queue::default_queue()],
            concurrency: 8,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            heartbeat: Duration::from_secs(20),
            job_timeout: Duration::from_secs(600),
            backoff: Backoff::default(),
            retention: Some(Retention::default()),
        }
    }
}

impl WorkerConfig {
    /// Sets the worker id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }
    /// Sets the queues.
    pub fn with_queues(mut self, queues: Vec<Queue>) -> Self {
        self.queues = queues;
        self
    }
    /// Sets the concurrency (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }
    /// Sets the poll interval.
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }
    /// Sets the lease and the heartbeat.
    pub fn with_lease(mut self, lease: Duration, heartbeat: Duration) -> Self {
        self.lease = lease;
        self.heartbeat = heartbeat;
        self
    }
    /// Sets the per-attempt timeout.
    pub fn with_job_timeout(mut self, job_timeout: Duration) -> Self {
        self.job_timeout = job_timeout;
        self
    }
    /// Sets the backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
    /// Sets the retention.
    pub fn with_retention(mut self, retention: Option<Retention>) -> Self {
        self.retention = retention;
        self
    }
}

/// Claims and runs jobs; built with [`Worker::new`], started with
/// [`Worker::start`].
pub struct Worker {
    store: Arc<dyn JobStore>,
    config: WorkerConfig,
    handlers: HashMap<JobKind, Arc<dyn JobHandler>>,
    periodic: Vec<Periodic>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .field("periodic", &self.periodic)
            .finish_non_exhaustive()
    }
}

/// What a shutdown did with the jobs that were running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Jobs that ended (succeeded or failed) before the deadline.
    pub finished: usize,
    /// Jobs given up because their lease had been lost to another holder,
    /// or could not be renewed (the store unreachable) before it ended.
    pub abandoned: usize,
    /// Jobs given back to the queue, their attempt not counted.
    pub released: usize,
}

/// A started worker. Dropping the handle stops the worker as
/// [`WorkerHandle::shutdown`] without grace would: running jobs are
/// cancelled and released.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: watch::Sender<Option<Instant>>,
    waker: WorkerWaker,
    task: JoinHandle<ShutdownReport>,
}

/// Wakes one worker from elsewhere (a `NOTIFY` subscriber, the code that
/// enqueued); cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerWaker {
    wake: Arc<Notify>,
    queues: Arc<[Queue]>,
}

impl WorkerWaker {
    /// Makes the worker look for jobs now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether the worker claims from the queue named `queue`.
    pub fn claims_from(&self, queue: &str) -> bool {
        self.queues.iter().any(|q| q.as_str() == queue)
    }
}

impl WorkerHandle {
    /// A waker for this worker, to hand to whatever learns of new jobs.
    pub fn waker(&self) -> WorkerWaker {
        self.waker.clone()
    }

    /// Makes the worker look for jobs now rather than after its poll
    /// interval (call it after enqueueing).
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Stops claiming, lets running jobs finish for up to `grace`, then
    /// cancels the rest and releases them to the queue (their attempt not
    /// counted).
    ///
    /// The worker stops claiming when this is called, not when the
    /// returned future is first polled.
    pub fn shutdown(self, grace: Duration) -> impl Future<Output = ShutdownReport> + Send {
        let _ = self.stop.send(Some(Instant::now() + grace));
        let task = self.task;
        async move { task.await.unwrap_or_default() }
    }

    /// Stops the worker at once, as a crash would: its jobs stay claimed
    /// until their leases expire.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Aborts the task when dropped, so an aborted worker leaves no handler
/// running behind it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Outcome {
    Ended,
    Released,
    /// The lease was lost: another holder owns the job's outcome.
    Abandoned,
}

struct Shared {
    store: Arc<dyn JobStore>,
    config: WorkerConfig,
}

impl Worker {
    /// A worker on `store` with `config` and no handlers yet.
    ///
    /// Settings out of range are brought into it: at least one job at a
    /// time, a lease of at least a second, a heartbeat between 1 ms and
    /// half the lease.
    pub fn new(store: Arc<dyn JobStore>, mut config: WorkerConfig) -> Self {
        config.concurrency = config.concurrency.max(1);
        config.lease = config.lease.max(Duration::from_secs(1));
        config.heartbeat = config
            .heartbeat
            .clamp(Duration::from_millis(1), config.lease / 2);
        Self {
            store,
            config,
            handlers: HashMap::new(),
            periodic: Vec::new(),
        }
    }

    /// Registers a handler for its kind (replacing an earlier one). Jobs
    /// of kinds without a handler go dead with an error naming the kind.
    pub fn handler(mut self, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.insert(handler.kind().clone(), handler);
        self
    }

    /// Adds a periodic job.
    pub fn periodic(mut self, periodic: Periodic) -> Self {
        self.periodic.push(periodic);
        self
    }

    /// Spawns the worker on the current tokio runtime.
    pub fn start(self) -> WorkerHandle {
        let (stop, stop_rx) = watch::channel(None);
        let wake = Arc::new(Notify::new());
        let waker = WorkerWaker {
            wake: wake.clone(),
            queues: self.config.queues.clone().into(),
        };
        let task = tokio::spawn(self.run(stop_rx, wake));
        WorkerHandle { stop, waker, task }
    }

    async fn run(
        self,
        mut stop: watch::Receiver<Option<Instant>>,
        wake: Arc<Notify>,
    ) -> ShutdownReport {
        let shared = Arc::new(Shared {
            store: self.store.clone(),
            config: self.config.clone(),
        });
        let (release, release_rx) = watch::channel(false);
        let mut running: JoinSet<Outcome> = JoinSet::new();
        let mut next_purge = Instant::now();
        let mut next_periodic = Instant::now();
        let deadline = loop {
            if let Some(deadline) = *stop.borrow() {
                break deadline;
            }
            if Instant::now() >= next_periodic {
                next_periodic = Instant::now() + self.config.poll_interval;
                self.enqueue_periodic().await;
            }
            if let Some(retention) = self.config.retention
                && Instant::now() >= next_purge
            {
                next_purge = Instant::now() + retention.every;
                self.purge(retention).await;
            }
            let free = self.config.concurrency.saturating_sub(running.len());
            if free > 0 {
                let request = ClaimRequest::new(
                    self.config.queues.clone(),
                    self.config.id.clone(),
                    free,
                    self.config.lease,
                );
                // The lease ends `lease` after the store stamped the claim;
                // reading the clock before claiming errs on the early side.
                let lease_until = self.store.now() + span(self.config.lease);
                match self.store.claim(&request).await {
                    Ok(claimed) if stop.borrow().is_some() => {
                        // Stopped while claiming: give the jobs back unrun.
                        for job in claimed {
                            if let Err(error) = self.store.release(&job.lease).await {
                                tracing::warn!(job = %job.job.id, %error, "releasing a job failed");
                            }
                        }
                        continue;
                    }
                    Ok(claimed) => {
                        for job in claimed {
                            let handler = self.handlers.get(&job.job.kind).cloned();
                            running.spawn(run_one(
                                shared.clone(),
                                handler,
                                job,
                                lease_until,
                                release_rx.clone(),
                            ));
                        }
                    }
                    Err(error) => {
                        tracing::warn!(worker = %self.config.id, %error, "claiming jobs failed")
                    }
                }
            }
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() {
                        // The handle is gone: stop without grace.
                        break Instant::now();
                    }
                }
                Some(_) = running.join_next(), if !running.is_empty() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
                () = wake.notified() => {
                    // New jobs, or a moved clock: look at the schedules too.
                    next_periodic = Instant::now();
                }
            }
        };
        let mut report = ShutdownReport::default();
        let count = |report: &mut ShutdownReport, outcome| match outcome {
            Some(Ok(Outcome::Ended)) => report.finished += 1,
            Some(Ok(Outcome::Released)) => report.released += 1,
            Some(Ok(Outcome::Abandoned)) => report.abandoned += 1,
            _ => {}
        };
        loop {
            tokio::select! {
                joined = running.join_next() => match joined {
                    None => return report,
                    outcome => count(&mut report, outcome),
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let _ = release.send(true);
        while let Some(outcome) = running.join_next().await {
            count(&mut report, Some(outcome));
        }
        report
    }

    async fn enqueue_periodic(&self) {
        for periodic in &self.periodic {
            if let Err(error) = self
                .store
                .enqueue_due(&periodic.name, periodic.every, periodic.job.clone())
                .await
            {
                tracing::warn!(schedule = %periodic.name, %error, "enqueueing a periodic job failed");
            }
        }
    }

    async fn purge(&self, retention: Retention) {
        let now = self.store.now();
        let finished = self
            .store
            .purge_finished(now - span(retention.finished), false)
            .await;
        let dead = match retention.dead {
            Some(keep) => self.store.purge_finished(now - span(keep), true).await,
            None => Ok(0),
        };
        if let Err(error) = finished.and(dead) {
            tracing::warn!(%error, "purging finished jobs failed");
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-text panic")
}

async fn run_one(
    shared: Arc<Shared>,
    handler: Option<Arc<dyn JobHandler>>,
    claimed: ClaimedJob,
    mut lease_until: OffsetDateTime,
    mut release: watch::Receiver<bool>,
) -> Outcome {
    let store = &shared.store;
    let config = &shared.config;
    let ClaimedJob { job, lease, .. } = claimed;
    let Some(handler) = handler else {
        let error = format!("no handler for job kind {}", job.kind);
        record(store.fail(&lease, &error, None).await, job.id);
        return Outcome::Ended;
    };
    let attempt = job.attempts;
    let ctx = JobContext {
        job,
        lease: lease.clone(),
    };
    let mut task = AbortOnDrop(tokio::spawn(async move { handler.run(ctx).await }));
    let timeout = tokio::time::sleep(config.job_timeout);
    tokio::pin!(timeout);
    let mut beat = tokio::time::interval_at(Instant::now() + config.heartbeat, config.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result: Result<(), HandlerError> = loop {
        tokio::select! {
            // A finished handler wins over a timeout or release arriving
            // at the same moment: its outcome is not thrown away.
            biased;
            joined = &mut task.0 => break match joined {
                Ok(result) => result,
                Err(error) if error.is_panic() => {
                    let payload = error.into_panic();
                    Err(HandlerError::retry(format!("handler panicked: {}", panic_message(payload.as_ref()))))
                }
                Err(_) => Err(HandlerError::retry("handler task was cancelled")),
            },
            () = &mut timeout => {
                task.0.abort();
                break Err(HandlerError::retry(format!(
                    "attempt timed out after {} ms", config.job_timeout.as_millis()
                )));
            }
            _ = beat.tick() => {
                if !renew(store.as_ref(), &lease, config.lease, &mut lease_until).await {
                    return Outcome::Abandoned;
                }
            }
            // Wakes the worker when the lease is about to run out between
            // heartbeats (renewals failed), for a last try.
            () = tokio::time::sleep(renewal_left(store.as_ref(), lease_until, config.lease)) => {
                if !renew(store.as_ref(), &lease, config.lease, &mut lease_until).await {
                    return Outcome::Abandoned;
                }
            }
            changed = release.changed() => {
                if changed.is_err() || *release.borrow() {
                    task.0.abort();
                    if let Err(error) = persist(|| store.release(&lease)).await {
                        tracing::warn!(job = %lease.job_id, %error, "releasing a job failed");
                    }
                    return Outcome::Released;
                }
            }
        }
    };
    match result {
        Ok(()) => {
            if let Err(error) = persist(|| store.complete(&lease)).await {
                tracing::warn!(job = %lease.job_id, %error, "recording success failed");
            }
        }
        Err(error) => {
            let retry_at =
                (!error.is_permanent()).then(|| store.now() + span(config.backoff.delay(attempt)));
            tracing::info!(job = %lease.job_id, attempt, error = %error, "job attempt failed");
            record(
                persist(|| store.fail(&lease, error.message(), retry_at)).await,
                lease.job_id,
            );
        }
    }
    Outcome::Ended
}

/// How long before its lease ends a worker that could not renew it gives
/// the attempt up: a tenth of the lease, for the cancellation to take
/// effect and for clocks that differ a little between replicas.
fn give_up_margin(lease: Duration) -> Duration {
    lease / 10
}

/// The time left, by the store's clock, until a lease ending at `until`
/// must have been renewed; zero once that point has passed.
fn renewal_left(store: &dyn JobStore, until: OffsetDateTime, lease: Duration) -> Duration {
    let left = until - span(give_up_margin(lease)) - store.now();
    Duration::try_from(left).unwrap_or_default()
}

/// Extends the lease ending at `until` (moving `until` on); false when the
/// attempt must be given up: the lease was lost, or could not be renewed
/// and is about to end. The handler is then dropped (cancelled) and
/// nothing recorded, since once the lease ends another worker may claim
/// the job and own its outcome. A successful renewal always keeps the
/// attempt: it shows the lease is still held.
async fn renew(
    store: &dyn JobStore,
    lease: &Lease,
    lease_for: Duration,
    until: &mut OffsetDateTime,
) -> bool {
    // A renewal in flight may run at most half the margin past the point
    // of giving up.
    let bound = renewal_left(store, *until, lease_for).max(give_up_margin(lease_for) / 2);
    match tokio::time::timeout(bound, store.heartbeat(lease, lease_for)).await {
        Ok(Ok(end)) => {
            *until = end;
            return true;
        }
        Ok(Err(JobError::LeaseLost(_) | JobError::NotFound(_))) => {
            tracing::warn!(job = %lease.job_id, "lease lost: abandoning the attempt");
            return false;
        }
        Ok(Err(error)) => {
            tracing::warn!(job = %lease.job_id, %error, "extending the lease failed");
        }
        Err(_) => tracing::warn!(job = %lease.job_id, "extending the lease timed out"),
    }
    if renewal_left(store, *until, lease_for).is_zero() {
        tracing::warn!(
            job = %lease.job_id,
            "lease could not be renewed before it ends: abandoning the attempt"
        );
        return false;
    }
    true
}

/// Runs a store call recording an outcome, retrying a few times (0.1 s,
/// 0.2 s, 0.4 s apart) while the store is unavailable: a dropped
/// connection should not cost a finished attempt. Other errors (a lost
/// lease) are final.
async fn persist<T, F, Fut>(call: F) -> Result<T, JobError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, JobError>>,
{
    let mut pause = Duration::from_millis(100);
    for _ in 0..3 {
        match call().await {
            Err(JobError::Unavailable(error)) => {
                tracing::debug!(%error, "job store unavailable, retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
    call().await
}

fn record(result: Result<JobState, JobError>, id: JobId) {
    match result {
        Ok(JobState::Dead) => tracing::warn!(job = %id, "job is dead"),
        Ok(_) => {}
        Err(error) => tracing::warn!(job = %id, %error, "recording a failure failed"),
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use super::*;

    #[test]
    fn settings_are_brought_into_range() {
        let mut config = WorkerConfig::default().with_lease(Duration::ZERO, Duration::ZERO);
        config.concurrency = 0;
        let worker = Worker::new(Arc::new(crate::MemoryJobStore::new()), config);
        assert_eq!(worker.config.concurrency, 1);
        assert_eq!(worker.config.lease, Duration::from_secs(1));
        assert_eq!(worker.config.heartbeat, Duration::from_millis(1));
        let config =
            WorkerConfig::default().with_lease(Duration::from_secs(10), Duration::from_secs(60));
        let worker = Worker::new(Arc::new(crate::MemoryJobStore::new()), config);
        assert_eq!(worker.config.heartbeat, Duration::from_secs(5));
    }

    #[test]
    fn renewal_is_due_a_tenth_of_the_lease_before_its_end() {
        let start = time::macros::datetime!(2030-01-10 12:30 UTC);
        let clock = Arc::new(tenancy_core::ManualClock::new(start));
        let store = crate::MemoryJobStore::with_clock(clock.clone());
        let lease = Duration::from_secs(30);
        let until = start + span(lease);
        assert_eq!(renewal_left(&store, until, lease), Duration::from_secs(27));
        clock.advance(time::Duration::seconds(26));
        assert_eq!(renewal_left(&store, until, lease), Duration::from_secs(1));
        clock.advance(time::Duration::seconds(1));
        assert_eq!(renewal_left(&store, until, lease), Duration::ZERO);
        clock.advance(time::Duration::seconds(10));
        assert_eq!(renewal_left(&store, until, lease), Duration::ZERO);
    }

    #[test]
    fn panic_messages_are_read() {
        let text: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(panic_message(text.as_ref()), "boom");
        let owned: Box<dyn std::any::Any + Send> = Box::new(String::from("bang"));
        assert_eq!(panic_message(owned.as_ref()), "bang");
        let other: Box<dyn std::any::Any + Send> = Box::new(7u8);
        assert_eq!(panic_message(other.as_ref()), "a non-text panic");
    }

    #[tokio::test]
    async fn persist_retries_only_while_unavailable() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let result = persist(|| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(JobError::unavailable("down"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        let calls = std::sync::atomic::AtomicU32::new(0);
        let id = JobId::new();
        let result: Result<(), _> = persist(|| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Err(JobError::LeaseLost(id)) }
        })
        .await;
        assert!(matches!(result, Err(JobError::LeaseLost(_))));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
