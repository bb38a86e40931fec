//! The [`Provisioner`]: starts runs of the host's [`Pipeline`]s, drives
//! them step by step under a lease, retries, compensates, cancels and
//! answers their status.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use rand::RngExt;
use serde_json::Value;
use tenancy_core::{Clock, SystemClock};
use time::{Duration, OffsetDateTime};

use crate::model::{Lease, Run, RunId, RunStatus, StepStatus};
use crate::step::{Compensation, Step, StepContext, StepError};
use crate::store::{ProvisioningStore, ProvisioningStoreError};

/// How often a step is attempted and how long each attempt may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepPolicy {
    /// An attempt running longer than this fails (transiently).
    pub timeout: StdDuration,
    /// Attempts before the step fails for good (at least 1).
    pub max_attempts: u32,
    /// The wait before the second attempt; doubled for each later one.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for StepPolicy {
    /// 30 s per attempt, 5 attempts, 1 s doubling up to 5 min.
    fn default() -> Self {
        Self {
            timeout: StdDuration::from_secs(30),
            max_attempts: 5,
            initial_backoff: Duration::seconds(1),
            max_backoff: Duration::minutes(5),
        }
    }
}

impl StepPolicy {
    /// This policy with `timeout` per attempt.
    pub fn with_timeout(mut self, timeout: StdDuration) -> Self {
        self.timeout = timeout;
        self
    }

    /// This policy with `max_attempts` (at least 1).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// This policy with backoff from `initial` doubling up to `max`.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// The wait after attempt `attempt` (from 1) failed: exponential,
    /// capped, with "equal jitter" (half fixed, half random) so many runs
    /// failing together do not come back together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self
            .initial_backoff
            .saturating_mul(1_i32 << exp.min(30))
            .min(self.max_backoff)
            .max(Duration::ZERO);
        let half: Duration = base / 2;
        let millis = u64::try_from(half.whole_milliseconds()).unwrap_or(0);
        let jitter = if millis == 0 {
            0
        } else {
            rand::rng().random_range(0..=millis)
        };
        half + Duration::milliseconds(i64::try_from(jitter).unwrap_or(0))
    }
}

/// What happens when a step fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnFailure {
    /// Compensate the started steps in reverse order (with
    /// [`Compensation::StepFailed`], so a step may undo in a way a retry
    /// can restore), then mark the run failed. A retry runs it again from
    /// its first step (the steps being idempotent, nothing is made twice).
    #[default]
    Compensate,
    /// Mark the run failed and keep what the earlier steps made: a person
    /// fixes the cause and retries (resuming at the failed step) or cancels
    /// (compensating them).
    Hold,
}

/// A named sequence of steps the host declares, with its policies.
#[derive(Clone)]
pub struct Pipeline {
    name: String,
    steps: Vec<(Arc<dyn Step>, Option<StepPolicy>)>,
    policy: StepPolicy,
    deadline: Duration,
    on_failure: OnFailure,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field(
                "steps",
                &self.steps.iter().map(|(s, _)| s.name()).collect::<Vec<_>>(),
            )
            .field("policy", &self.policy)
            .field("deadline", &self.deadline)
            .field("on_failure", &self.on_failure)
            .finish()
    }
}

impl Pipeline {
    /// An empty pipeline named `name`, with the default step policy, a
    /// one-hour deadline and [`OnFailure::Compensate`].
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            steps: Vec::new(),
            policy: StepPolicy::default(),
            deadline: Duration::hours(1),
            on_failure: OnFailure::default(),
        }
    }

    /// Appends `step` under the pipeline's policy.
    pub fn step(mut self, step: impl Step) -> Self {
        self.steps.push((Arc::new(step), None));
        self
    }

    /// Appends `step` under its own `policy`.
    pub fn step_with(mut self, step: impl Step, policy: StepPolicy) -> Self {
        self.steps.push((Arc::new(step), Some(policy)));
        self
    }

    /// Appends a shared step.
    pub fn step_arc(mut self, step: Arc<dyn Step>, policy: Option<StepPolicy>) -> Self {
        self.steps.push((step, policy));
        self
    }

    /// The policy of steps appended without their own.
    pub fn with_policy(mut self, policy: StepPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long after its start (or manual retry) a run may take before it
    /// is cancelled.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// What a step failing for good does.
    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.on_failure = on_failure;
        self
    }

    /// Its name, stored with each run.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn policy_of(&self, index: usize) -> StepPolicy {
        self.steps
            .get(index)
            .and_then(|(_, p)| *p)
            .unwrap_or(self.policy)
    }
}

/// What the provisioner's operations fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// No pipeline of this name was registered.
    #[error("unknown provisioning pipeline {0:?}")]
    UnknownPipeline(String),
    /// Two steps of a pipeline share a name.
    #[error("pipeline {pipeline:?} has two steps named {step:?}")]
    DuplicateStep {
        /// The pipeline.
        pipeline: String,
        /// The name.
        step: String,
    },
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] ProvisioningStoreError),
}

/// Settings of the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// How long a claim holds a run without renewal. A crashed worker's
    /// run is taken up by another once this much (clock) time has passed.
    pub lease: Duration,
    /// How often a working worker renews its lease and looks for a cancel
    /// or a passed deadline (real time; well below `lease`).
    pub heartbeat: StdDuration,
    /// How long an idle worker waits before looking for work again.
    pub idle_poll: StdDuration,
}

impl Default for WorkerConfig {
    /// A 60 s lease renewed every 10 s, polling every second when idle.
    fn default() -> Self {
        Self {
            lease: Duration::seconds(60),
            heartbeat: StdDuration::from_secs(10),
            idle_poll: StdDuration::from_secs(1),
        }
    }
}

/// Starts and drives provisioning runs. Cheap to share behind an `Arc`;
/// every replica of the app can run workers on one store.
///
/// See the crate docs for an example.
#[derive(Clone)]
pub struct Provisioner {
    store: Arc<dyn ProvisioningStore>,
    pipelines: Arc<HashMap<String, Pipeline>>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("pipelines", &self.pipelines.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

enum Attempt<T> {
    Done(Result<T, StepError>),
    TimedOut,
    Stop(&'static str),
    LeaseLost,
}

impl Provisioner {
    /// A provisioner over `store` with no pipelines yet.
    pub fn new(store: Arc<dyn ProvisioningStore>) -> Self {
        Self {
            store,
            pipelines: Arc::new(HashMap::new()),
            clock: Arc::new(SystemClock),
            config: WorkerConfig::default(),
        }
    }

    /// Registers `pipeline`. Errors when two of its steps share a name.
    pub fn with_pipeline(mut self, pipeline: Pipeline) -> Result<Self, ProvisionError> {
        let mut seen = std::collections::HashSet::new();
        for (step, _) in &pipeline.steps {
            if !seen.insert(step.name().to_owned()) {
                return Err(ProvisionError::DuplicateStep {
                    pipeline: pipeline.name.clone(),
                    step: step.name().to_owned(),
                });
            }
        }
        Arc::make_mut(&mut self.pipelines).insert(pipeline.name.clone(), pipeline);
        Ok(self)
    }

    /// Reads time from `clock` (leases, backoff, deadlines).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `config` for its workers.
    pub fn with_config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ProvisioningStore> {
        &self.store
    }

    /// Creates a pending run of `pipeline` with `input`; a worker takes it
    /// up. Returns the stored run.
    pub async fn start(&self, pipeline: &str, input: Value) -> Result<Run, ProvisionError> {
        let definition = self
            .pipelines
            .get(pipeline)
            .ok_or_else(|| ProvisionError::UnknownPipeline(pipeline.to_owned()))?;
        let now = self.clock.now();
        let run = Run::new(
            pipeline,
            input,
            definition.steps.iter().map(|(s, _)| s.name().to_owned()),
            now,
            now + definition.deadline,
        );
        self.store.insert_run(&run).await?;
        tracing::info!(run_id = %run.id, pipeline, "provisioning run started");
        Ok(run)
    }

    /// The run with its steps: status, attempts, timestamps, last errors.
    pub async fn status(&self, id: RunId) -> Result<Run, ProvisionError> {
        Ok(self.store.get_run(id).await?)
    }

    /// Runs oldest first, only those in `status` when given (`failed`: the
    /// dead letters).
    pub async fn list(
        &self,
        status: Option<RunStatus>,
        page: &tenancy_core::PageRequest,
    ) -> Result<tenancy_core::Page<Run>, ProvisionError> {
        Ok(self.store.list_runs(status, page).await?)
    }

    /// Asks for `id` to be cancelled: a worker compensates its started
    /// steps in reverse order and marks it cancelled.
    pub async fn cancel(&self, id: RunId) -> Result<Run, ProvisionError> {
        Ok(self
            .store
            .request_cancel(id, self.clock.now(), "cancelled on request")
            .await?)
    }

    /// Retries a failed run (see [`OnFailure`] for where it resumes), with
    /// a fresh deadline.
    pub async fn retry(&self, id: RunId) -> Result<Run, ProvisionError> {
        let run = self.store.get_run(id).await?;
        let pipeline = self
            .pipelines
            .get(&run.definition)
            .ok_or_else(|| ProvisionError::UnknownPipeline(run.definition.clone()))?;
        let now = self.clock.now();
        Ok(self.store.retry(id, now, now + pipeline.deadline).await?)
    }

    /// Claims one runnable run and drives it until it finishes, waits for a
    /// retry, or must stop. Returns whether there was a run to work on.
    pub async fn work_once(&self) -> Result<bool, ProvisionError> {
        let now = self.clock.now();
        let Some((run, lease)) = self.store.claim(now, now + self.config.lease).await? else {
            return Ok(false);
        };
        tracing::debug!(run_id = %run.id, status = %run.status, "provisioning run claimed");
        match self.drive(run, lease).await {
            Ok(()) | Err(ProvisioningStoreError::LeaseLost) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Works until no run is runnable now; returns how many claims it made.
    pub async fn drain(&self) -> Result<usize, ProvisionError> {
        let mut n = 0;
        while self.work_once().await? {
            n += 1;
        }
        Ok(n)
    }

    /// A worker loop on the current runtime: works while there is work and
    /// polls every [`WorkerConfig::idle_poll`] otherwise, until the handle
    /// is aborted. Aborting mid-step is safe: the run's lease lapses and
    /// another worker resumes it.
    pub fn spawn_worker(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match this.work_once().await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "provisioning worker failed"),
                }
                tokio::time::sleep(this.config.idle_poll).await;
            }
        })
    }

    fn renewal(&self) -> OffsetDateTime {
        self.clock.now() + self.config.lease
    }

    async fn save(
        &self,
        lease: &mut Lease,
        run: &mut Run,
        release: bool,
    ) -> Result<(), ProvisioningStoreError> {
        run.updated_at = self.clock.now();
        self.store.save(lease, run, release).await?;
        if !release {
            // The stored status wins over ours if a cancel came in.
            let until = self.renewal();
            let status = self.store.renew(lease, until).await?;
            lease.until = until;
            if status != run.status {
                let stored = self.store.get_run(run.id).await?;
                run.status = stored.status;
                run.last_error = stored.last_error;
            }
        }
        Ok(())
    }

    fn context(&self, run: &Run, attempt: u32) -> StepContext {
        let mut ctx = StepContext::new(run.id, run.definition.clone(), run.input.clone())
            .with_state(run.state.clone());
        ctx.attempt = attempt;
        ctx
    }

    async fn drive(&self, mut run: Run, mut lease: Lease) -> Result<(), ProvisioningStoreError> {
        let Some(pipeline) = self.pipelines.get(&run.definition).cloned() else {
            run.status = RunStatus::Failed;
            run.last_error = Some(format!("unknown pipeline {:?}", run.definition));
            return self.save(&mut lease, &mut run, true).await;
        };
        loop {
            let now = self.clock.now();
            if matches!(run.status, RunStatus::Pending | RunStatus::Running) && now >= run.deadline
            {
                run.status = RunStatus::Cancelling;
                run.last_error = Some("deadline passed".to_owned());
                self.save(&mut lease, &mut run, false).await?;
            }
            match run.status {
                RunStatus::Cancelling => {
                    let ok = self
                        .compensate(&pipeline, &mut run, &mut lease, Compensation::Cancelled)
                        .await?;
                    if ok {
                        for step in &mut run.steps {
                            if step.status == StepStatus::Pending {
                                step.status = StepStatus::Cancelled;
                            }
                        }
                        run.status = RunStatus::Cancelled;
                    } else {
                        run.status = RunStatus::Failed;
                    }
                    return self.save(&mut lease, &mut run, true).await;
                }
                RunStatus::Pending | RunStatus::Running => {}
                _ => return self.save(&mut lease, &mut run, true).await,
            }
            let Some(index) = run
                .steps
                .iter()
                .position(|s| s.status != StepStatus::Succeeded)
            else {
                run.status = RunStatus::Succeeded;
                run.last_error = None;
                tracing::info!(run_id = %run.id, "provisioning run succeeded");
                return self.save(&mut lease, &mut run, true).await;
            };
            if run.not_before > now {
                return self.save(&mut lease, &mut run, true).await;
            }
            let Some((step, _)) = pipeline.steps.get(index).cloned() else {
                run.status = RunStatus::Failed;
                run.last_error = Some("the run has more steps than its pipeline".to_owned());
                return self.save(&mut lease, &mut run, true).await;
            };
            let policy = pipeline.policy_of(index);
            let attempt = {
                let record = &mut run.steps[index];
                record.status = StepStatus::Running;
                record.attempts = record.attempts.saturating_add(1);
                record.started_at = Some(now);
                record.finished_at = None;
                record.attempts
            };
            run.status = RunStatus::Running;
            self.save(&mut lease, &mut run, false).await?;
            if run.status != RunStatus::Running {
                continue;
            }
            let ctx = self.context(&run, attempt);
            let outcome = self
                .guarded(
                    step.run(&ctx),
                    policy.timeout,
                    &mut lease,
                    Some(run.deadline),
                )
                .await;
            let now = self.clock.now();
            let error = match outcome {
                Attempt::LeaseLost => return Err(ProvisioningStoreError::LeaseLost),
                Attempt::Stop(reason) => {
                    // The interrupted step stays `running` and is compensated.
                    if run.status != RunStatus::Cancelling {
                        run.last_error = Some(reason.to_owned());
                    }
                    run.status = RunStatus::Cancelling;
                    self.save(&mut lease, &mut run, false).await?;
                    continue;
                }
                Attempt::Done(Ok(output)) => {
                    run.state.extend(output.state);
                    let record = &mut run.steps[index];
                    record.status = StepStatus::Succeeded;
                    record.finished_at = Some(now);
                    self.save(&mut lease, &mut run, false).await?;
                    continue;
                }
                Attempt::Done(Err(e)) => e,
                Attempt::TimedOut => {
                    StepError::transient(format!("attempt timed out after {:?}", policy.timeout))
                }
            };
            let report = error.report();
            tracing::warn!(run_id = %run.id, step = step.name(), attempt, error = %report, "provisioning step failed");
            let record = &mut run.steps[index];
            record.finished_at = Some(now);
            record.last_error = Some(report.clone());
            if error.is_transient() && attempt < policy.max_attempts {
                record.status = StepStatus::Pending;
                run.status = RunStatus::Pending;
                run.not_before = now + policy.backoff(attempt);
                return self.save(&mut lease, &mut run, true).await;
            }
            record.status = StepStatus::Failed;
            run.last_error = Some(format!("step {:?} failed: {report}", step.name()));
            if pipeline.on_failure == OnFailure::Compensate {
                self.save(&mut lease, &mut run, false).await?;
                self.compensate(&pipeline, &mut run, &mut lease, Compensation::StepFailed)
                    .await?;
            }
            run.status = RunStatus::Failed;
            tracing::warn!(run_id = %run.id, "provisioning run failed");
            return self.save(&mut lease, &mut run, true).await;
        }
    }

    /// Runs `work` (an attempt or a compensation) under `timeout`,
    /// renewing the lease every heartbeat; an attempt (`stop_at` set to the
    /// run's deadline) also stops early on a cancel or a passed deadline.
    async fn guarded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StepError>>,
        timeout: StdDuration,
        lease: &mut Lease,
        stop_at: Option<OffsetDateTime>,
    ) -> Attempt<T> {
        tokio::pin!(work);
        let timeout = tokio::time::sleep(timeout);
        tokio::pin!(timeout);
        let mut beat = tokio::time::interval(self.config.heartbeat);
        beat.tick().await;
        loop {
            tokio::select! {
                out = &mut work => return Attempt::Done(out),
                () = &mut timeout => return Attempt::TimedOut,
                _ = beat.tick() => {
                    let until = self.renewal();
                    match self.store.renew(lease, until).await {
                        Ok(RunStatus::Cancelling) if stop_at.is_some() => {
                            return Attempt::Stop("cancelled on request");
                        }
                        Ok(_) => lease.until = until,
                        Err(ProvisioningStoreError::LeaseLost) => return Attempt::LeaseLost,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot renew provisioning lease");
                            if self.clock.now() >= lease.until {
                                return Attempt::LeaseLost;
                            }
                        }
                    }
                    if stop_at.is_some_and(|deadline| self.clock.now() >= deadline) {
                        return Attempt::Stop("deadline passed");
                    }
                }
            }
        }
    }

    /// Compensates steps in reverse order, saving after each: after a
    /// failure the steps that ran (succeeded, interrupted or failed); on a
    /// cancel every step that ever started, including those a failure
    /// already compensated (compensations are idempotent, and a cancel's
    /// may undo more, such as deleting what a failure only suspended).
    /// `Ok(false)` when a compensation failed for good: it stays as it was
    /// (so a later cancel tries it again) and the run's last error says why.
    async fn compensate(
        &self,
        pipeline: &Pipeline,
        run: &mut Run,
        lease: &mut Lease,
        cause: Compensation,
    ) -> Result<bool, ProvisioningStoreError> {
        for index in (0..run.steps.len()).rev() {
            let record = &run.steps[index];
            let status = record.status;
            let due = match cause {
                Compensation::StepFailed => matches!(
                    status,
                    StepStatus::Succeeded | StepStatus::Running | StepStatus::Failed
                ),
                Compensation::Cancelled => record.started_at.is_some(),
            };
            if !due {
                continue;
            }
            let Some((step, _)) = pipeline.steps.get(index).cloned() else {
                continue;
            };
            let policy = pipeline.policy_of(index);
            let mut ctx = self.context(run, 0);
            ctx.compensation = Some(cause);
            let mut tries = 0;
            let result = loop {
                tries += 1;
                let result = match self
                    .guarded(
                        step.compensate_with_output(&ctx),
                        policy.timeout,
                        lease,
                        None,
                    )
                    .await
                {
                    Attempt::Done(result) => result,
                    Attempt::LeaseLost => return Err(ProvisioningStoreError::LeaseLost),
                    Attempt::TimedOut | Attempt::Stop(_) => Err(StepError::transient(format!(
                        "compensation timed out after {:?}",
                        policy.timeout
                    ))),
                };
                match result {
                    Err(e) if e.is_transient() && tries < policy.max_attempts => {
                        let wait = policy.backoff(tries);
                        let wait = StdDuration::try_from(wait).unwrap_or_default();
                        tokio::time::sleep(wait.min(self.config.heartbeat)).await;
                    }
                    other => break other,
                }
            };
            let now = self.clock.now();
            match result {
                Ok(output) => {
                    run.state.extend(output.state);
                    let record = &mut run.steps[index];
                    if status != StepStatus::Failed && status != StepStatus::Pending {
                        record.status = StepStatus::Cancelled;
                    }
                    record.finished_at = Some(now);
                    self.save(lease, run, false).await?;
                }
                Err(e) => {
                    let report = e.report();
                    run.steps[index].last_error = Some(format!("compensation: {report}"));
                    run.last_error = Some(format!(
                        "compensation of step {:?} failed: {report}",
                        step.name()
                    ));
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_equal_jitter() {
        let policy = StepPolicy::default()
            .with_backoff(Duration::seconds(1), Duration::seconds(10))
            .with_max_attempts(0);
        assert_eq!(policy.max_attempts, 1);
        for _ in 0..50 {
            for (attempt, full) in [
                (1, 1_000),
                (2, 2_000),
                (3, 4_000),
                (4, 8_000),
                (5, 10_000),
                (40, 10_000),
            ] {
                let wait = policy.backoff(attempt).whole_milliseconds();
                assert!(
                    wait >= full / 2 && wait <= full,
                    "attempt {attempt}: {wait} ms"
                );
            }
        }
    }

    #[cfg(feature = "memory")]
    #[test]
    fn pipelines_refuse_two_steps_of_one_name() {
        #[derive(Debug)]
        struct Noop;
        #[async_trait::async_trait]
        impl Step for Noop {
            fn name(&self) -> &str {
                "noop"
            }
            async fn run(&self, _: &StepContext) -> Result<crate::StepOutput, StepError> {
                Ok(crate::StepOutput::empty())
            }
            async fn compensate(&self, _: &StepContext) -> Result<(), StepError> {
                Ok(())
            }
        }
        let store: Arc<dyn ProvisioningStore> = Arc::new(crate::MemoryProvisioningStore::new());
        let refused =
            Provisioner::new(store).with_pipeline(Pipeline::new("p").step(Noop).step(Noop));
        assert!(matches!(refused, Err(ProvisionError::DuplicateStep { .. })));
    }
}
