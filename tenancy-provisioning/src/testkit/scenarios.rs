//! Runner scenarios: the provisioner driving real steps on a store.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tenancy_core::{
    Directory, ManualClock, PageRequest, Slug, TenantId, TenantStatus, TenantStore,
};
use time::Duration;

use super::{Fixture, NOW, Recorder, SimulatedDns, clock, eventually};
use crate::model::{RunId, RunStatus, StepStatus};
use crate::runner::{OnFailure, Pipeline, ProvisionError, Provisioner, StepPolicy, WorkerConfig};
use crate::step::{StepContext, StepError, StepOutput};
use crate::steps::{CreateTenant, ForTenant, TENANT_ID, TenantHook};
use crate::store::ProvisioningStoreError;

/// A seeding hook that remembers which tenants it seeded.
#[derive(Debug, Default, Clone)]
pub struct SeedRoles {
    /// The tenants seeded and not undone.
    pub seeded: Arc<Mutex<HashSet<TenantId>>>,
}

#[async_trait]
impl TenantHook for SeedRoles {
    async fn apply(
        &self,
        tenant_id: TenantId,
        _ctx: &StepContext,
    ) -> Result<StepOutput, StepError> {
        self.seeded.lock().unwrap().insert(tenant_id);
        Ok(StepOutput::empty().with("roles_seeded", true))
    }

    async fn undo(&self, tenant_id: TenantId, _ctx: &StepContext) -> Result<(), StepError> {
        self.seeded.lock().unwrap().remove(&tenant_id);
        Ok(())
    }
}

/// Workers on the test clock: 30 s leases, 10 ms heartbeats.
pub fn test_config() -> WorkerConfig {
    WorkerConfig {
        lease: Duration::seconds(30),
        heartbeat: StdDuration::from_millis(10),
        idle_poll: StdDuration::from_millis(10),
    }
}

/// 3 attempts of at most 5 s, backoff 1 s doubling to 10 s.
pub fn test_policy() -> StepPolicy {
    StepPolicy::default()
        .with_timeout(StdDuration::from_secs(5))
        .with_max_attempts(3)
        .with_backoff(Duration::seconds(1), Duration::seconds(10))
}

/// The input of a run provisioning `slug`.
pub fn input(slug: &str) -> Value {
    json!({ "slug": slug, "name": format!("Tenant {slug}"), "owner_email": format!("owner@{slug}.test") })
}

/// The `signup` pipeline: create the tenant, seed its roles, create its
/// DNS record.
pub fn signup(
    f: &Fixture,
    clock: &Arc<ManualClock>,
    seed: &SeedRoles,
    dns: &Arc<SimulatedDns>,
    on_failure: OnFailure,
) -> Pipeline {
    let directory = Directory::new(f.backend.clone()).with_clock(clock.clone());
    Pipeline::new("signup")
        .with_policy(test_policy())
        .with_deadline(Duration::minutes(10))
        .on_failure(on_failure)
        .step(CreateTenant::new(directory))
        .step(ForTenant::new("seed_roles", seed.clone()))
        .step(dns.clone())
}

/// A provisioner over the fixture's store with `pipeline`.
pub fn provisioner(f: &Fixture, clock: &Arc<ManualClock>, pipeline: Pipeline) -> Provisioner {
    Provisioner::new(f.store.clone())
        .with_pipeline(pipeline)
        .unwrap()
        .with_clock(clock.clone())
        .with_config(test_config())
}

async fn tenant(f: &Fixture, slug: &str) -> Option<tenancy_core::Tenant> {
    f.backend
        .find_tenant_by_slug(&Slug::new(slug).unwrap())
        .await
        .unwrap()
}

async fn count_tenants(f: &Fixture) -> usize {
    f.backend
        .admin_list_tenants(&PageRequest::default())
        .await
        .unwrap()
        .items
        .len()
}

/// Works and advances the clock 15 s at a time until `id` is no longer
/// active (at most 20 rounds).
pub async fn settle(p: &Provisioner, clock: &ManualClock, id: RunId) {
    for _ in 0..20 {
        p.drain().await.unwrap();
        if !p.status(id).await.unwrap().status.is_active() {
            return;
        }
        clock.advance(Duration::seconds(15));
    }
    panic!("run {id} did not settle");
}

/// Every step runs once, in order, and passes its output on.
pub async fn happy_path(f: Fixture) {
    let (clock, seed, dns) = (clock(), SeedRoles::default(), SimulatedDns::new());
    let p = provisioner(
        &f,
        &clock,
        signup(&f, &clock, &seed, &dns, OnFailure::Compensate),
    );
    let run = p.start("signup", input("acme")).await.unwrap();
    assert_eq!(run.status, RunStatus::Pending);
    assert_eq!(run.deadline, NOW + Duration::minutes(10));
    assert_eq!(
        run.steps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["create_tenant", "seed_roles", "dns"]
    );
    assert_eq!(p.drain().await.unwrap(), 1);
    let run = p.status(run.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    for step in &run.steps {
        assert_eq!(step.status, StepStatus::Succeeded);
        assert_eq!(step.attempts, 1);
        assert_eq!(step.started_at, Some(NOW));
        assert_eq!(step.finished_at, Some(NOW));
        assert_eq!(step.last_error, None);
    }
    let acme = tenant(&f, "acme").await.unwrap();
    assert_eq!(acme.status, TenantStatus::Active);
    assert_eq!(run.state[TENANT_ID], json!(acme.id.to_string()));
    assert_eq!(run.state["dns_record"], json!("acme.app.test"));
    assert!(seed.seeded.lock().unwrap().contains(&acme.id));
    assert_eq!(dns.creations(), 1);
    // Nothing is left to do, and the tenant step is idempotent.
    assert_eq!(p.drain().await.unwrap(), 0);
    let step = CreateTenant::new(Directory::new(f.backend.clone()));
    let again = crate::Step::run(&step, &StepContext::new(run.id, "signup", input("acme")))
        .await
        .unwrap();
    assert_eq!(again.state[TENANT_ID], json!(acme.id.to_string()));
    assert_eq!(count_tenants(&f).await, 1);
    // Another run cannot take the slug.
    let other = p.start("signup", input("acme")).await.unwrap();
    settle(&p, &clock, other.id).await;
    let other = p.status(other.id).await.unwrap();
    assert_eq!(other.status, RunStatus::Failed);
    assert!(other.last_error.unwrap().contains("already taken"));
    assert_eq!(
        tenant(&f, "acme").await.unwrap().status,
        TenantStatus::Active
    );
}

/// A step failing transiently is attempted again after a backoff, with
/// its attempts and last error recorded.
pub async fn transient_failure_is_retried(f: Fixture) {
    let (clock, seed, dns) = (clock(), SeedRoles::default(), SimulatedDns::new());
    let p = provisioner(
        &f,
        &clock,
        signup(&f, &clock, &seed, &dns, OnFailure::Compensate),
    );
    dns.fail_times(2);
    let run = p.start("signup", input("acme")).await.unwrap();
    assert_eq!(p.drain().await.unwrap(), 1);
    let waiting = p.status(run.id).await.unwrap();
    assert_eq!(waiting.status, RunStatus::Pending);
    let step = waiting.step("dns").unwrap();
    assert_eq!(step.status, StepStatus::Pending);
    assert_eq!(step.attempts, 1);
    assert_eq!(step.last_error.as_deref(), Some("dns provider unavailable"));
    // Equal jitter: between half and all of the 1 s first backoff.
    assert!(waiting.not_before >= NOW + Duration::milliseconds(500));
    assert!(waiting.not_before <= NOW + Duration::seconds(1));
    // Not due yet.
    assert_eq!(p.drain().await.unwrap(), 0);
    settle(&p, &clock, run.id).await;
    let done = p.status(run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.step("dns").unwrap().attempts, 3);
    assert_eq!(done.step("create_tenant").unwrap().attempts, 1);
    assert_eq!(dns.creations(), 1);
}

/// A step failing for good: the steps before it are compensated in
/// reverse order and the run fails; after the cause is fixed, a retry
/// completes it.
pub async fn permanent_failure_compensates_then_retry_completes(f: Fixture) {
    let (clock, dns) = (clock(), SimulatedDns::new());
    let log = Arc::new(Mutex::new(Vec::new()));
    let pipeline = Pipeline::new("recorded")
        .with_policy(test_policy())
        .step(Recorder::new("a", &log))
        .step(Recorder::new("b", &log))
        .step(dns.clone());
    let p = provisioner(&f, &clock, pipeline);
    dns.set_broken(true);
    let run = p.start("recorded", input("acme")).await.unwrap();
    settle(&p, &clock, run.id).await;
    let failed = p.status(run.id).await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(
        failed.last_error.as_deref(),
        Some("step \"dns\" failed: dns zone rejected the record")
    );
    assert_eq!(*log.lock().unwrap(), ["run:a", "run:b", "undo:b", "undo:a"]);
    let statuses: Vec<_> = failed.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Cancelled,
            StepStatus::Cancelled,
            StepStatus::Failed
        ]
    );
    // A permanent error is not attempted again.
    assert_eq!(failed.step("dns").unwrap().attempts, 1);
    assert!(matches!(
        p.cancel(RunId::new()).await,
        Err(ProvisionError::Store(ProvisioningStoreError::NotFound))
    ));

    dns.set_broken(false);
    let retried = p.retry(run.id).await.unwrap();
    assert_eq!(retried.status, RunStatus::Pending);
    assert_eq!(retried.manual_retries, 1);
    settle(&p, &clock, run.id).await;
    let done = p.status(run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(
        *log.lock().unwrap(),
        ["run:a", "run:b", "undo:b", "undo:a", "run:a", "run:b"]
    );
    assert_eq!(done.step("dns").unwrap().attempts, 1);
    assert!(dns.record("acme").is_some());
    assert!(matches!(
        p.retry(run.id).await,
        Err(ProvisionError::Store(
            ProvisioningStoreError::InvalidTransition {
                status: RunStatus::Succeeded,
                ..
            }
        ))
    ));
}

/// Under [`OnFailure::Hold`] a failed run keeps what it made: a retry
/// resumes at the failed step, and a cancel compensates the rest.
pub async fn hold_keeps_earlier_steps_and_retry_resumes(f: Fixture) {
    let (clock, seed, dns) = (clock(), SeedRoles::default(), SimulatedDns::new());
    let p = provisioner(&f, &clock, signup(&f, &clock, &seed, &dns, OnFailure::Hold));
    dns.set_broken(true);
    let run = p.start("signup", input("acme")).await.unwrap();
    settle(&p, &clock, run.id).await;
    let failed = p.status(run.id).await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(
        failed.step("create_tenant").unwrap().status,
        StepStatus::Succeeded
    );
    assert_eq!(failed.step("dns").unwrap().status, StepStatus::Failed);
    assert_eq!(
        tenant(&f, "acme").await.unwrap().status,
        TenantStatus::Active
    );

    dns.set_broken(false);
    p.retry(run.id).await.unwrap();
    settle(&p, &clock, run.id).await;
    let done = p.status(run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.step("create_tenant").unwrap().attempts, 1);
    assert_eq!(done.step("dns").unwrap().attempts, 1);
    assert_eq!(count_tenants(&f).await, 1);

    // A held run cancelled by a person is compensated.
    dns.set_broken(true);
    let beta = p.start("signup", input("beta")).await.unwrap();
    settle(&p, &clock, beta.id).await;
    let id = tenant(&f, "beta").await.unwrap().id;
    assert!(seed.seeded.lock().unwrap().contains(&id));
    assert_eq!(
        p.cancel(beta.id).await.unwrap().status,
        RunStatus::Cancelling
    );
    settle(&p, &clock, beta.id).await;
    let cancelled = p.status(beta.id).await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(
        tenant(&f, "beta").await.unwrap().status,
        TenantStatus::Deleted
    );
    assert!(!seed.seeded.lock().unwrap().contains(&id));
}

/// Cancelling while a step runs stops it and compensates it and the
/// steps before it, in reverse order.
pub async fn cancel_mid_step_compensates_in_reverse(f: Fixture) {
    let (clock, seed, dns) = (clock(), SeedRoles::default(), SimulatedDns::new());
    let p = provisioner(
        &f,
        &clock,
        signup(&f, &clock, &seed, &dns, OnFailure::Compensate),
    );
    dns.set_hang(true);
    let run = p.start("signup", input("acme")).await.unwrap();
    let worker = p.spawn_worker();
    dns.hanging().await;
    assert!(dns.record("acme").is_some());
    let id = tenant(&f, "acme").await.unwrap().id;
    assert_eq!(
        p.cancel(run.id).await.unwrap().status,
        RunStatus::Cancelling
    );
    eventually("the run is cancelled", || async {
        p.status(run.id).await.unwrap().status == RunStatus::Cancelled
    })
    .await;
    worker.abort();
    let run = p.status(run.id).await.unwrap();
    assert!(
        run.steps.iter().all(|s| s.status == StepStatus::Cancelled),
        "{run:?}"
    );
    assert_eq!(run.last_error.as_deref(), Some("cancelled on request"));
    assert_eq!(dns.record("acme"), None);
    assert_eq!(dns.compensations(), 1);
    assert!(!seed.seeded.lock().unwrap().contains(&id));
    assert_eq!(
        tenant(&f, "acme").await.unwrap().status,
        TenantStatus::Deleted
    );
    // Cancelling again is a no-op; a cancelled run cannot be retried.
    assert_eq!(p.cancel(run.id).await.unwrap().status, RunStatus::Cancelled);
    assert!(p.retry(run.id).await.is_err());
}

/// A run past its deadline is cancelled by the next worker that looks,
/// whether it was waiting for a retry or never started.
pub async fn deadline_cancels_stale_runs(f: Fixture) {
    let (clock, seed, dns) = (clock(), SeedRoles::default(), SimulatedDns::new());
    let pipeline = signup(&f, &clock, &seed, &dns, OnFailure::Compensate);
    let p = provisioner(&f, &clock, pipeline);
    dns.fail_times(1);
    let started = p.start("signup", input("acme")).await.unwrap();
    assert_eq!(p.drain().await.unwrap(), 1);
    assert_eq!(
        p.status(started.id).await.unwrap().status,
        RunStatus::Pending
    );
    clock.advance(Duration::minutes(11));
    let never = p.start("signup", input("beta")).await.unwrap();
    clock.advance(Duration::minutes(11));
    p.drain().await.unwrap();
    for id in [started.id, never.id] {
        let run = p.status(id).await.unwrap();
        assert_eq!(run.status, RunStatus::Cancelled, "{run:?}");
        assert_eq!(run.last_error.as_deref(), Some("deadline passed"));
        assert!(run.steps.iter().all(|s| s.status == StepStatus::Cancelled));
    }
    assert_eq!(
        tenant(&f, "acme").await.unwrap().status,
        TenantStatus::Deleted
    );
    assert!(tenant(&f, "beta").await.is_none());
    assert_eq!(p.status(never.id).await.unwrap().steps[0].attempts, 0);
    assert!(seed.seeded.lock().unwrap().is_empty());
}

/// A worker killed in the middle of a step (after the step's outside
/// effect, before it was recorded) leaves the run to the next worker once
/// the lease lapses; it completes, and every outside effect exists once.
pub async fn crashed_worker_is_resumed_without_duplicates(f: Fixture) {
    let (clock, seed, dns) = (clock(), SeedRoles::default(), SimulatedDns::new());
    let crashing = provisioner(
        &f,
        &clock,
        signup(&f, &clock, &seed, &dns, OnFailure::Compensate),
    );
    dns.set_hang(true);
    let run = crashing.start("signup", input("acme")).await.unwrap();
    let worker = crashing.spawn_worker();
    dns.hanging().await;
    worker.abort();
    assert!(worker.await.unwrap_err().is_cancelled());
    dns.set_hang(false);
    let mid = crashing.status(run.id).await.unwrap();
    assert_eq!(mid.status, RunStatus::Running);
    assert_eq!(mid.step("dns").unwrap().status, StepStatus::Running);
    assert_eq!(
        mid.step("create_tenant").unwrap().status,
        StepStatus::Succeeded
    );

    // After a restart: a new provisioner on the same store.
    let restarted = provisioner(
        &f,
        &clock,
        signup(&f, &clock, &seed, &dns, OnFailure::Compensate),
    );
    assert_eq!(restarted.drain().await.unwrap(), 0, "the lease still holds");
    clock.advance(Duration::seconds(31));
    assert_eq!(restarted.drain().await.unwrap(), 1);
    let done = restarted.status(run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(done.step("dns").unwrap().attempts, 2);
    assert_eq!(done.step("create_tenant").unwrap().attempts, 1);
    assert_eq!(dns.creations(), 1);
    assert_eq!(count_tenants(&f).await, 1);
    assert_eq!(seed.seeded.lock().unwrap().len(), 1);
}

/// Several workers on one store: every run is driven by one worker at a
/// time and each outside effect happens once.
pub async fn two_workers_never_run_one_run_at_once(f: Fixture) {
    let (clock, seed, dns) = (clock(), SeedRoles::default(), SimulatedDns::new());
    dns.set_delay(StdDuration::from_millis(20));
    let a = provisioner(
        &f,
        &clock,
        signup(&f, &clock, &seed, &dns, OnFailure::Compensate),
    );
    let b = provisioner(
        &f,
        &clock,
        signup(&f, &clock, &seed, &dns, OnFailure::Compensate),
    );
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            a.start("signup", input(&format!("tenant-{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let workers = [a.spawn_worker(), a.spawn_worker(), b.spawn_worker()];
    for id in &ids {
        eventually("every run succeeded", || async {
            a.status(*id).await.unwrap().status == RunStatus::Succeeded
        })
        .await;
    }
    for w in workers {
        w.abort();
    }
    assert_eq!(dns.max_in_flight(), 1);
    assert_eq!(dns.creations(), 8);
    assert_eq!(count_tenants(&f).await, 8);
    for id in ids {
        let run = a.status(id).await.unwrap();
        assert!(run.steps.iter().all(|s| s.attempts == 1), "{run:?}");
    }
}

/// An attempt running past its step's timeout is stopped and counts as a
/// transient failure; the next attempt completes the step.
pub async fn timed_out_attempt_is_retried(f: Fixture) {
    let (clock, dns) = (clock(), SimulatedDns::new());
    let pipeline = Pipeline::new("dns-only").step_with(
        dns.clone(),
        test_policy().with_timeout(StdDuration::from_millis(50)),
    );
    let p = provisioner(&f, &clock, pipeline);
    dns.set_hang(true);
    let run = p.start("dns-only", input("acme")).await.unwrap();
    assert_eq!(p.drain().await.unwrap(), 1);
    let waiting = p.status(run.id).await.unwrap();
    assert_eq!(waiting.status, RunStatus::Pending);
    let step = waiting.step("dns").unwrap();
    assert_eq!(step.attempts, 1);
    assert_eq!(
        step.last_error.as_deref(),
        Some("attempt timed out after 50ms")
    );
    dns.set_hang(false);
    settle(&p, &clock, run.id).await;
    let done = p.status(run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.step("dns").unwrap().attempts, 2);
    assert_eq!(dns.creations(), 1);
}

/// A run failing after its tenant was made suspends the tenant (a
/// restorable undo): a retry brings the same tenant back into service,
/// while cancelling a failed run deletes it.
pub async fn failed_runs_are_restored_by_retry_or_deleted_by_cancel(f: Fixture) {
    let (clock, seed, dns) = (clock(), SeedRoles::default(), SimulatedDns::new());
    let p = provisioner(
        &f,
        &clock,
        signup(&f, &clock, &seed, &dns, OnFailure::Compensate),
    );
    dns.set_broken(true);
    let run = p.start("signup", input("acme")).await.unwrap();
    settle(&p, &clock, run.id).await;
    let failed = p.status(run.id).await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(
        failed.step("create_tenant").unwrap().status,
        StepStatus::Cancelled
    );
    let acme = tenant(&f, "acme").await.unwrap();
    assert_eq!(acme.status, TenantStatus::Suspended);
    assert!(seed.seeded.lock().unwrap().is_empty());

    dns.set_broken(false);
    p.retry(run.id).await.unwrap();
    settle(&p, &clock, run.id).await;
    let done = p.status(run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    let restored = tenant(&f, "acme").await.unwrap();
    assert_eq!(
        (restored.id, restored.status),
        (acme.id, TenantStatus::Active)
    );
    assert!(seed.seeded.lock().unwrap().contains(&acme.id));
    assert_eq!(count_tenants(&f).await, 1);

    dns.set_broken(true);
    let beta = p.start("signup", input("beta")).await.unwrap();
    settle(&p, &clock, beta.id).await;
    assert_eq!(
        tenant(&f, "beta").await.unwrap().status,
        TenantStatus::Suspended
    );
    p.cancel(beta.id).await.unwrap();
    settle(&p, &clock, beta.id).await;
    let cancelled = p.status(beta.id).await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    // The failed step keeps saying so; the others are compensated.
    let statuses: Vec<_> = cancelled.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Cancelled,
            StepStatus::Cancelled,
            StepStatus::Failed
        ]
    );
    assert_eq!(
        tenant(&f, "beta").await.unwrap().status,
        TenantStatus::Deleted
    );
}

/// A retry reactivates the run's tenant only while it is still in the
/// suspension the run's own compensation made: once staff reactivated it
/// and suspended it again for another reason, the retry leaves it
/// suspended and fails.
pub async fn a_retry_lifts_only_its_own_suspension(f: Fixture) {
    let (clock, seed, dns) = (clock(), SeedRoles::default(), SimulatedDns::new());
    let p = provisioner(
        &f,
        &clock,
        signup(&f, &clock, &seed, &dns, OnFailure::Compensate),
    );
    dns.set_broken(true);
    let run = p.start("signup", input("acme")).await.unwrap();
    settle(&p, &clock, run.id).await;
    assert_eq!(p.status(run.id).await.unwrap().status, RunStatus::Failed);
    let acme = tenant(&f, "acme").await.unwrap();
    assert_eq!(acme.status, TenantStatus::Suspended);

    // Staff bring the tenant back, then suspend it over billing.
    let staff = Directory::new(f.backend.clone()).with_clock(clock.clone());
    let context = tenancy_core::AuditContext::system();
    clock.advance(Duration::seconds(1));
    staff.reactivate_tenant(acme.id, &context).await.unwrap();
    clock.advance(Duration::seconds(1));
    staff.suspend_tenant(acme.id, &context).await.unwrap();

    dns.set_broken(false);
    p.retry(run.id).await.unwrap();
    settle(&p, &clock, run.id).await;
    let retried = p.status(run.id).await.unwrap();
    assert_eq!(retried.status, RunStatus::Failed, "{retried:?}");
    let step = retried.step("create_tenant").unwrap();
    assert!(
        step.last_error
            .as_deref()
            .is_some_and(|e| e.contains("suspended outside the run")),
        "{step:?}"
    );
    assert_eq!(
        tenant(&f, "acme").await.unwrap().status,
        TenantStatus::Suspended
    );
    assert_eq!(dns.record("acme"), None);
}
