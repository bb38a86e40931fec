//! Conformance suites every [`JobStore`] must pass, with the [`Worker`]
//! on top (feature `testkit`).
//!
//! Each suite takes a fresh [`Fixture`] and checks, through the public API
//! only: enqueue and dedupe, scheduling, claim order and limits,
//! concurrent claims that never overlap, expired leases reclaimed and
//! stale holders refused, retries then the dead state, release, manual
//! retry and cancel, listing, retention, periodic ticks enqueued once, and
//! the worker's retries, dead letters, panics, timeouts, graceful
//! shutdown, crash recovery, lost leases, leases it cannot renew,
//! retention and several workers
//! sharing one store. The
//! memory and Postgres stores run the identical suites:
//!
//! ```ignore
//! async fn my_fixture() -> Option<tenancy_jobs::testkit::Fixture> { /* … */ }
//! tenancy_jobs::conformance_tests!(my_fixture());
//! ```
//!
//! Suites panic on the first failed check, like any test assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "postgres")]
pub mod postgres;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenancy_core::{ManualClock, PageRequest, PageSize, TenantId};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::sync::{Notify, mpsc};

use crate::{
    Backoff, ClaimRequest, Enqueued, HandlerError, Job, JobError, JobFilter, JobId, JobKind,
    JobState, JobStore, NewJob, Periodic, Queue, Retention, Worker, WorkerConfig, handler_fn,
    typed_handler,
};

/// The instant the suites' clock starts at.
pub const NOW: OffsetDateTime = datetime!(2030-01-10 12:30 UTC);

/// What a suite runs against.
#[derive(Clone)]
pub struct Fixture {
    /// The store under test, reading time from `clock`.
    pub store: Arc<dyn JobStore>,
    /// Four more handles on the same jobs (on Postgres: four more pools),
    /// for concurrency and crash suites.
    pub others: Vec<Arc<dyn JobStore>>,
    /// The clock of every handle, showing [`NOW`] at first.
    pub clock: Arc<ManualClock>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").finish_non_exhaustive()
    }
}

/// A fixture over a fresh [`MemoryJobStore`](crate::MemoryJobStore).
#[cfg(feature = "memory")]
pub async fn memory() -> Option<Fixture> {
    let clock = Arc::new(ManualClock::new(NOW));
    let store = crate::MemoryJobStore::with_clock(clock.clone());
    let others = (0..4)
        .map(|_| Arc::new(store.clone()) as Arc<dyn JobStore>)
        .collect();
    Some(Fixture {
        store: Arc::new(store),
        others,
        clock,
    })
}

/// Generates one `#[tokio::test]` per conformance suite. `$fixture` is an
/// expression evaluating to a future of `Option<Fixture>`, run afresh for
/// every test; `None` skips the test.
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@suites $fixture;
            enqueue_and_get, dedupe_key_returns_the_active_job,
            concurrent_enqueues_of_one_key_make_one_job, scheduled_jobs_wait,
            claims_follow_run_at_queues_and_limit, concurrent_claims_never_overlap,
            expired_lease_is_reclaimed_and_the_stale_holder_refused,
            failures_retry_then_go_dead_with_the_last_error,
            expired_lease_on_the_last_attempt_goes_dead, release_gives_the_attempt_back,
            heartbeat_extends_the_lease, manual_retry_and_cancel, list_filters_and_pages,
            purge_removes_old_finished_jobs, periodic_ticks_enqueue_once,
            worker_retries_with_backoff_then_succeeds,
            worker_sends_unknown_kinds_and_permanent_failures_dead,
            worker_counts_panics_and_timeouts_as_failures,
            worker_shutdown_finishes_or_releases, crashed_worker_job_completes_once,
            several_workers_run_each_job_once, workers_enqueue_periodic_jobs_once,
            worker_purges_old_finished_jobs, worker_abandons_a_job_whose_lease_was_lost,
            worker_abandons_a_job_it_cannot_renew
        );
    };
    (@suites $fixture:expr; $($suite:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $suite() {
                if let Some(fixture) = $fixture.await {
                    $crate::testkit::$suite(fixture).await;
                }
            }
        )+
    };
}

fn kind(name: &str) -> JobKind {
    JobKind::new(name).unwrap()
}

fn queue(name: &str) -> Queue {
    Queue::new(name).unwrap()
}

fn job(kind_name: &str) -> NewJob {
    NewJob::new(kind(kind_name), serde_json::json!({"n": 1})).unwrap()
}

fn claim_req(queues: &[&str], limit: usize) -> ClaimRequest {
    ClaimRequest::new(
        queues.iter().map(|q| queue(q)).collect(),
        "tester",
        limit,
        Duration::from_secs(30),
    )
}

const LEASE: time::Duration = time::Duration::seconds(30);

/// Polls `store` until job `id` satisfies `done` (10 s at most).
pub async fn wait_for(
    store: &dyn JobStore,
    id: JobId,
    what: &str,
    done: impl Fn(&Job) -> bool,
) -> Job {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let job = store.get(id).await.unwrap();
        if done(&job) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn test_config(id: &str) -> WorkerConfig {
    WorkerConfig::default()
        .with_id(id)
        .with_poll_interval(Duration::from_millis(10))
        .with_lease(Duration::from_secs(30), Duration::from_millis(50))
        .with_backoff(Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: false,
        })
        .with_retention(None)
}

/// A job reads back as enqueued: queued, no attempts, due now.
pub async fn enqueue_and_get(f: Fixture) {
    let tenant = TenantId::new();
    let new = job("mail.send")
        .with_queue(queue("mail"))
        .with_tenant(tenant)
        .with_max_attempts(3)
        .unwrap();
    let id = match f.store.enqueue(new).await.unwrap() {
        Enqueued::Created(id) => id,
        other => panic!("expected a new job, got {other:?}"),
    };
    let got = f.store.get(id).await.unwrap();
    assert_eq!(got.id, id);
    assert_eq!(got.kind, kind("mail.send"));
    assert_eq!(got.queue, queue("mail"));
    assert_eq!(got.payload, serde_json::json!({"n": 1}));
    assert_eq!(got.tenant_id, Some(tenant));
    assert_eq!(got.state, JobState::Queued);
    assert_eq!((got.attempts, got.max_attempts), (0, 3));
    assert_eq!(got.run_at, NOW);
    assert_eq!(got.created_at, NOW);
    assert_eq!(got.finished_at, None);
    assert_eq!(got.last_error, None);
    assert!(matches!(
        f.store.get(JobId::new()).await,
        Err(JobError::NotFound(_))
    ));
}

/// A dedupe key held by an active job returns that job; once it finished,
/// the key enqueues a new one.
pub async fn dedupe_key_returns_the_active_job(f: Fixture) {
    let first = f
        .store
        .enqueue(job("k").with_dedupe_key("invoice:1").unwrap())
        .await
        .unwrap();
    let Enqueued::Created(id) = first else {
        panic!("first enqueue must create")
    };
    let second = f
        .store
        .enqueue(job("k").with_dedupe_key("invoice:1").unwrap())
        .await
        .unwrap();
    assert_eq!(second, Enqueued::Existing(id));
    let other = f
        .store
        .enqueue(job("k").with_dedupe_key("invoice:2").unwrap())
        .await
        .unwrap();
    assert!(matches!(other, Enqueued::Created(o) if o != id));
    // Still held while running.
    let claimed = f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
    assert_eq!(claimed[0].job.id, id);
    assert_eq!(
        f.store
            .enqueue(job("k").with_dedupe_key("invoice:1").unwrap())
            .await
            .unwrap(),
        Enqueued::Existing(id)
    );
    f.store.complete(&claimed[0].lease).await.unwrap();
    let third = f
        .store
        .enqueue(job("k").with_dedupe_key("invoice:1").unwrap())
        .await
        .unwrap();
    assert!(matches!(third, Enqueued::Created(t) if t != id));
}

/// Enqueues racing with one dedupe key from several handles make one
/// job; every caller gets its id.
pub async fn concurrent_enqueues_of_one_key_make_one_job(f: Fixture) {
    let mut tasks = Vec::new();
    for n in 0..12 {
        let store = f.others[n % f.others.len()].clone();
        tasks.push(tokio::spawn(async move {
            store
                .enqueue(job("k").with_dedupe_key("race").unwrap())
                .await
                .unwrap()
        }));
    }
    let mut created = Vec::new();
    let mut ids = HashSet::new();
    for task in tasks {
        let enqueued = task.await.unwrap();
        if let Enqueued::Created(id) = enqueued {
            created.push(id);
        }
        ids.insert(enqueued.id());
    }
    assert_eq!(created.len(), 1, "one job created: {created:?}");
    assert_eq!(ids.len(), 1, "every caller got the same job: {ids:?}");
    let all = PageRequest::first(PageSize::new(100).unwrap());
    assert_eq!(
        f.store
            .list(&JobFilter::all(), &all)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

/// A job due later is not claimed before its time.
pub async fn scheduled_jobs_wait(f: Fixture) {
    let later = NOW + time::Duration::minutes(10);
    let id = f
        .store
        .enqueue(job("k").with_run_at(later))
        .await
        .unwrap()
        .id();
    assert_eq!(f.store.get(id).await.unwrap().run_at, later);
    assert!(
        f.store
            .claim(&claim_req(&["default"], 10))
            .await
            .unwrap()
            .is_empty()
    );
    f.clock.advance(time::Duration::minutes(10));
    let claimed = f.store.claim(&claim_req(&["default"], 10)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].job.id, id);
    assert_eq!(claimed[0].job.state, JobState::Running);
    assert_eq!(claimed[0].job.attempts, 1);
    assert_eq!(claimed[0].job.locked_by.as_deref(), Some("tester"));
    assert_eq!(
        claimed[0].job.lease_expires_at,
        Some(NOW + time::Duration::minutes(10) + LEASE)
    );
}

/// Claims take the oldest due jobs of the given queues, at most the limit.
pub async fn claims_follow_run_at_queues_and_limit(f: Fixture) {
    let mut ids = Vec::new();
    for minutes in [3, 1, 2] {
        let at = NOW - time::Duration::minutes(minutes);
        ids.push(
            f.store
                .enqueue(job("k").with_run_at(at))
                .await
                .unwrap()
                .id(),
        );
    }
    let elsewhere = f
        .store
        .enqueue(job("k").with_queue(queue("bulk")))
        .await
        .unwrap()
        .id();
    let first = f.store.claim(&claim_req(&["default"], 2)).await.unwrap();
    let got: Vec<JobId> = first.iter().map(|c| c.job.id).collect();
    assert_eq!(got, vec![ids[0], ids[2]]);
    let rest = f
        .store
        .claim(&claim_req(&["default", "bulk"], 10))
        .await
        .unwrap();
    let got: Vec<JobId> = rest.iter().map(|c| c.job.id).collect();
    assert_eq!(got, vec![ids[1], elsewhere]);
    assert!(
        f.store
            .claim(&claim_req(&["default", "bulk"], 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        f.store.claim(&claim_req(&[], 1)).await,
        Err(JobError::InvalidInput(_))
    ));
}

/// Four claimers racing over one set of jobs each get distinct jobs, and
/// together all of them.
pub async fn concurrent_claims_never_overlap(f: Fixture) {
    let total = 60;
    for _ in 0..total {
        f.store.enqueue(job("k")).await.unwrap();
    }
    let mut tasks = Vec::new();
    for (n, store) in f.others.iter().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let request = ClaimRequest::new(
                    vec![Queue::default_queue()],
                    format!("claimer-{n}"),
                    3,
                    Duration::from_secs(30),
                );
                let claimed = store.claim(&request).await.unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                for c in claimed {
                    store.complete(&c.lease).await.unwrap();
                    mine.push(c.job.id);
                }
            }
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(seen.len(), total);
}

/// A lease that expired is claimable again with the attempt counted; the
/// first holder can then neither complete, fail, release nor extend it.
pub async fn expired_lease_is_reclaimed_and_the_stale_holder_refused(f: Fixture) {
    let id = f.store.enqueue(job("k")).await.unwrap().id();
    let stale = f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
    assert_eq!(stale.len(), 1);
    // Not before the lease ends.
    f.clock.advance(LEASE - time::Duration::seconds(1));
    assert!(
        f.store
            .claim(&claim_req(&["default"], 1))
            .await
            .unwrap()
            .is_empty()
    );
    f.clock.advance(time::Duration::seconds(1));
    let fresh = f.others[0]
        .claim(&claim_req(&["default"], 1))
        .await
        .unwrap();
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].job.id, id);
    assert_eq!(fresh[0].job.attempts, 2);
    assert!(
        fresh[0]
            .job
            .last_error
            .as_ref()
            .unwrap()
            .contains("lease expired")
    );
    let stale = &stale[0].lease;
    assert!(matches!(f.store.complete(stale).await, Err(JobError::LeaseLost(i)) if i == id));
    assert!(matches!(
        f.store.fail(stale, "late", None).await,
        Err(JobError::LeaseLost(_))
    ));
    assert!(matches!(
        f.store.release(stale).await,
        Err(JobError::LeaseLost(_))
    ));
    assert!(matches!(
        f.store.heartbeat(stale, Duration::from_secs(30)).await,
        Err(JobError::LeaseLost(_))
    ));
    f.others[0].complete(&fresh[0].lease).await.unwrap();
    let done = f.store.get(id).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.finished_at, Some(f.clock_now()));
    assert_eq!(done.locked_by, None);
    assert!(matches!(
        f.store.complete(stale).await,
        Err(JobError::LeaseLost(_))
    ));
    // Completing again with the current lease is a no-op.
    f.others[0].complete(&fresh[0].lease).await.unwrap();
    assert_eq!(f.store.get(id).await.unwrap(), done);
    assert!(matches!(
        f.others[0].fail(&fresh[0].lease, "late", None).await,
        Err(JobError::LeaseLost(_))
    ));
}

impl Fixture {
    fn clock_now(&self) -> OffsetDateTime {
        tenancy_core::Clock::now(self.clock.as_ref())
    }
}

/// A failed attempt with attempts left waits for its retry time; the last
/// one goes dead with its error; a failure without retry time goes dead
/// at once.
pub async fn failures_retry_then_go_dead_with_the_last_error(f: Fixture) {
    let id = f
        .store
        .enqueue(job("k").with_max_attempts(2).unwrap())
        .await
        .unwrap()
        .id();
    let first = f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
    let retry_at = NOW + time::Duration::seconds(10);
    let state = f
        .store
        .fail(&first[0].lease, "smtp timeout", Some(retry_at))
        .await
        .unwrap();
    assert_eq!(state, JobState::Retrying);
    let waiting = f.store.get(id).await.unwrap();
    assert_eq!(waiting.state, JobState::Retrying);
    assert_eq!(waiting.run_at, retry_at);
    assert_eq!(waiting.last_error.as_deref(), Some("smtp timeout"));
    assert_eq!(waiting.finished_at, None);
    assert!(
        f.store
            .claim(&claim_req(&["default"], 1))
            .await
            .unwrap()
            .is_empty()
    );
    f.clock.advance(time::Duration::seconds(10));
    let second = f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
    assert_eq!(second[0].job.attempts, 2);
    let state = f
        .store
        .fail(&second[0].lease, "smtp refused", Some(retry_at))
        .await
        .unwrap();
    assert_eq!(state, JobState::Dead);
    let dead = f.store.get(id).await.unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("smtp refused"));
    assert_eq!(dead.finished_at, Some(f.clock_now()));
    assert!(
        f.store
            .claim(&claim_req(&["default"], 1))
            .await
            .unwrap()
            .is_empty()
    );

    let other = f.store.enqueue(job("k")).await.unwrap().id();
    let claimed = f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
    let state = f
        .store
        .fail(&claimed[0].lease, "bad payload", None)
        .await
        .unwrap();
    assert_eq!(state, JobState::Dead);
    assert_eq!(f.store.get(other).await.unwrap().attempts, 1);
    // Long errors are cut, not refused.
    let third = f.store.enqueue(job("k")).await.unwrap().id();
    let claimed = f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
    f.store
        .fail(&claimed[0].lease, &"é".repeat(5000), None)
        .await
        .unwrap();
    let kept = f.store.get(third).await.unwrap().last_error.unwrap();
    assert!(kept.len() <= 4096 && kept.starts_with("éé"));
}

/// A job whose worker died on its last attempt goes dead when the lease
/// expires, instead of running beyond its maximum.
pub async fn expired_lease_on_the_last_attempt_goes_dead(f: Fixture) {
    let id = f
        .store
        .enqueue(job("k").with_max_attempts(1).unwrap())
        .await
        .unwrap()
        .id();
    f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
    f.clock.advance(LEASE);
    assert!(
        f.store
            .claim(&claim_req(&["default"], 1))
            .await
            .unwrap()
            .is_empty()
    );
    let dead = f.store.get(id).await.unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempts, 1);
    assert!(dead.last_error.unwrap().contains("lease expired"));
}

/// A released job is queued again, due now, its attempt not counted.
pub async fn release_gives_the_attempt_back(f: Fixture) {
    let id = f.store.enqueue(job("k")).await.unwrap().id();
    let claimed = f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
    f.clock.advance(time::Duration::seconds(5));
    f.store.release(&claimed[0].lease).await.unwrap();
    let back = f.store.get(id).await.unwrap();
    assert_eq!(back.state, JobState::Queued);
    assert_eq!(back.attempts, 0);
    assert_eq!(back.run_at, f.clock_now());
    assert_eq!(back.locked_by, None);
    assert!(matches!(
        f.store.release(&claimed[0].lease).await,
        Err(JobError::LeaseLost(_))
    ));
    let again = f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
    assert_eq!(again[0].job.attempts, 1);
}

/// A heartbeat moves the lease end so the job is not reclaimed.
pub async fn heartbeat_extends_the_lease(f: Fixture) {
    f.store.enqueue(job("k")).await.unwrap();
    let claimed = f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
    f.clock.advance(time::Duration::seconds(20));
    let end = f
        .store
        .heartbeat(&claimed[0].lease, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(end, f.clock_now() + LEASE);
    f.clock.advance(time::Duration::seconds(20));
    assert!(
        f.store
            .claim(&claim_req(&["default"], 1))
            .await
            .unwrap()
            .is_empty()
    );
    f.store.complete(&claimed[0].lease).await.unwrap();
}

/// Dead jobs can be retried by hand (attempts reset); queued and retrying
/// jobs can be cancelled; other states refuse both.
pub async fn manual_retry_and_cancel(f: Fixture) {
    let id = f
        .store
        .enqueue(job("k").with_dedupe_key("d").unwrap())
        .await
        .unwrap()
        .id();
    assert!(matches!(
        f.store.retry_dead(id).await,
        Err(JobError::InvalidState {
            state: JobState::Queued,
            ..
        })
    ));
    let claimed = f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
    assert!(matches!(
        f.store.cancel(id).await,
        Err(JobError::InvalidState {
            state: JobState::Running,
            ..
        })
    ));
    f.store.fail(&claimed[0].lease, "boom", None).await.unwrap();
    // The key is free while the job is dead; a new job takes it.
    let taker = f
        .store
        .enqueue(job("k").with_dedupe_key("d").unwrap())
        .await
        .unwrap();
    assert!(matches!(taker, Enqueued::Created(_)));
    assert!(matches!(f.store.retry_dead(id).await, Err(JobError::DuplicateKey(k)) if k == "d"));
    f.store.cancel(taker.id()).await.unwrap();
    assert_eq!(
        f.store.get(taker.id()).await.unwrap().state,
        JobState::Cancelled
    );
    f.clock.advance(time::Duration::minutes(1));
    f.store.retry_dead(id).await.unwrap();
    let back = f.store.get(id).await.unwrap();
    assert_eq!(back.state, JobState::Queued);
    assert_eq!(back.attempts, 0);
    assert_eq!(back.run_at, f.clock_now());
    assert_eq!(back.finished_at, None);
    assert_eq!(back.last_error.as_deref(), Some("boom"));
    assert!(matches!(
        f.store.cancel(taker.id()).await,
        Err(JobError::InvalidState {
            state: JobState::Cancelled,
            ..
        })
    ));
    assert!(matches!(
        f.store.cancel(JobId::new()).await,
        Err(JobError::NotFound(_))
    ));
    assert!(matches!(
        f.store.retry_dead(JobId::new()).await,
        Err(JobError::NotFound(_))
    ));
    let claimed = f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
    assert_eq!(claimed[0].job.id, id);
}

/// Listing is in enqueue order, filtered, keyset-paginated.
pub async fn list_filters_and_pages(f: Fixture) {
    let tenant = TenantId::new();
    let mut mine = Vec::new();
    for n in 0..7 {
        let mut new = job(if n % 2 == 0 { "even" } else { "odd" });
        if n < 5 {
            new = new.with_tenant(tenant);
        }
        if n == 6 {
            new = new.with_queue(queue("other"));
        }
        mine.push(f.store.enqueue(new).await.unwrap().id());
    }
    let size = PageSize::new(2).unwrap();
    let mut request = PageRequest::first(size);
    let mut listed = Vec::new();
    loop {
        let page = f.store.list(&JobFilter::all(), &request).await.unwrap();
        assert!(page.items.len() <= 2);
        listed.extend(page.items.iter().map(|j| j.id));
        match page.next {
            Some(next) => request = request.after(next),
            None => break,
        }
    }
    assert_eq!(listed, mine);
    let ids = |page: tenancy_core::Page<Job>| page.items.iter().map(|j| j.id).collect::<Vec<_>>();
    let all = PageRequest::first(PageSize::new(100).unwrap());
    let tenant_jobs = f
        .store
        .list(&JobFilter::all().tenant(tenant), &all)
        .await
        .unwrap();
    assert_eq!(ids(tenant_jobs), mine[..5].to_vec());
    let odd = f
        .store
        .list(&JobFilter::all().kind(kind("odd")), &all)
        .await
        .unwrap();
    assert_eq!(ids(odd), vec![mine[1], mine[3], mine[5]]);
    let other = f
        .store
        .list(&JobFilter::all().queue(queue("other")), &all)
        .await
        .unwrap();
    assert_eq!(ids(other), vec![mine[6]]);
    f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
    let running = f
        .store
        .list(&JobFilter::all().state(JobState::Running), &all)
        .await
        .unwrap();
    assert_eq!(ids(running), vec![mine[0]]);
    let bad = PageRequest::first(size).after(tenancy_core::Cursor::new("garbage"));
    assert!(matches!(
        f.store.list(&JobFilter::all(), &bad).await,
        Err(JobError::InvalidInput(_))
    ));
}

/// Retention deletes finished jobs older than the cut-off, dead ones only
/// when asked, and never active ones.
pub async fn purge_removes_old_finished_jobs(f: Fixture) {
    let finish = |state: JobState| {
        let store = f.store.clone();
        async move {
            let id = store.enqueue(job("k")).await.unwrap().id();
            if state == JobState::Cancelled {
                store.cancel(id).await.unwrap();
                return id;
            }
            let c = store.claim(&claim_req(&["default"], 1)).await.unwrap();
            assert_eq!(c[0].job.id, id);
            match state {
                JobState::Succeeded => store.complete(&c[0].lease).await.unwrap(),
                _ => {
                    store.fail(&c[0].lease, "x", None).await.unwrap();
                }
            }
            id
        }
    };
    let old_ok = finish(JobState::Succeeded).await;
    let old_cancelled = finish(JobState::Cancelled).await;
    let old_dead = finish(JobState::Dead).await;
    let queued = f
        .store
        .enqueue(job("k").with_run_at(NOW + time::Duration::days(9)))
        .await
        .unwrap()
        .id();
    f.clock.advance(time::Duration::days(2));
    let new_ok = finish(JobState::Succeeded).await;
    let cut = NOW + time::Duration::days(1);
    assert_eq!(f.store.purge_finished(cut, false).await.unwrap(), 2);
    for gone in [old_ok, old_cancelled] {
        assert!(matches!(
            f.store.get(gone).await,
            Err(JobError::NotFound(_))
        ));
    }
    for kept in [old_dead, queued, new_ok] {
        f.store.get(kept).await.unwrap();
    }
    assert_eq!(f.store.purge_finished(cut, true).await.unwrap(), 1);
    assert!(matches!(
        f.store.get(old_dead).await,
        Err(JobError::NotFound(_))
    ));
    f.store.get(queued).await.unwrap();
    f.store.get(new_ok).await.unwrap();
}

/// However many replicas ask, a schedule's tick enqueues one job; missed
/// ticks collapse into one; the next tick comes one interval later.
pub async fn periodic_ticks_enqueue_once(f: Fixture) {
    let every = Duration::from_secs(60);
    let template = job("report.daily");
    let mut tasks = Vec::new();
    for store in &f.others {
        let store = store.clone();
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            store.enqueue_due("report", every, template).await.unwrap()
        }));
    }
    let mut enqueued = Vec::new();
    for task in tasks {
        enqueued.extend(task.await.unwrap());
    }
    assert_eq!(enqueued.len(), 1, "one tick, one job: {enqueued:?}");
    let first = f.store.get(enqueued[0]).await.unwrap();
    assert_eq!(first.run_at, NOW);
    assert_eq!(first.kind, kind("report.daily"));
    assert_eq!(
        f.store
            .enqueue_due("report", every, template.clone())
            .await
            .unwrap(),
        None
    );
    f.clock.advance(time::Duration::seconds(59));
    assert_eq!(
        f.store
            .enqueue_due("report", every, template.clone())
            .await
            .unwrap(),
        None
    );
    f.clock.advance(time::Duration::seconds(1));
    let second = f
        .store
        .enqueue_due("report", every, template.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        f.store.get(second).await.unwrap().run_at,
        NOW + time::Duration::seconds(60)
    );
    // Ten minutes without a worker: one job, then the next tick is on the grid.
    f.clock.advance(time::Duration::minutes(10));
    let late = f
        .store
        .enqueue_due("report", every, template.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        f.store.get(late).await.unwrap().run_at,
        NOW + time::Duration::seconds(120)
    );
    assert_eq!(
        f.store
            .enqueue_due("report", every, template.clone())
            .await
            .unwrap(),
        None
    );
    f.clock.advance(time::Duration::seconds(60));
    assert!(
        f.store
            .enqueue_due("report", every, template.clone())
            .await
            .unwrap()
            .is_some()
    );
    // Schedules are independent.
    assert!(
        f.store
            .enqueue_due("other", every, template.clone())
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        f.store
            .enqueue_due("bad", Duration::from_millis(10), template)
            .await,
        Err(JobError::InvalidInput(_))
    ));
}

/// A failing handler is retried after the backoff (measured on the
/// store's clock) and then succeeds.
pub async fn worker_retries_with_backoff_then_succeeds(f: Fixture) {
    let calls = Arc::new(Mutex::new(0u32));
    let seen = calls.clone();
    let worker = Worker::new(f.store.clone(), test_config("w1"))
        .handler(handler_fn(kind("flaky"), move |ctx| {
            let seen = seen.clone();
            async move {
                *seen.lock().unwrap() += 1;
                if ctx.attempt() == 1 {
                    Err(HandlerError::retry("first try fails"))
                } else {
                    Ok(())
                }
            }
        }))
        .start();
    let id = f.store.enqueue(job("flaky")).await.unwrap().id();
    worker.wake();
    let waiting = wait_for(f.store.as_ref(), id, "a retry", |j| {
        j.state == JobState::Retrying
    })
    .await;
    assert_eq!(waiting.run_at, NOW + time::Duration::seconds(1));
    assert_eq!(waiting.last_error.as_deref(), Some("first try fails"));
    f.clock.advance(time::Duration::seconds(1));
    worker.wake();
    let done = wait_for(f.store.as_ref(), id, "success", |j| {
        j.state == JobState::Succeeded
    })
    .await;
    assert_eq!(done.attempts, 2);
    assert_eq!(*calls.lock().unwrap(), 2);
    let report = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.released, 0);
}

/// A job of a kind without handler, and a permanent failure, go dead at
/// once with a clear error.
pub async fn worker_sends_unknown_kinds_and_permanent_failures_dead(f: Fixture) {
    let worker = Worker::new(f.store.clone(), test_config("w1"))
        .handler(handler_fn(kind("strict"), |ctx| async move {
            let _: Vec<String> = ctx.payload()?;
            Ok(())
        }))
        .start();
    let unknown = f.store.enqueue(job("nobody.handles")).await.unwrap().id();
    let strict = f.store.enqueue(job("strict")).await.unwrap().id();
    worker.wake();
    let dead = wait_for(f.store.as_ref(), unknown, "dead", |j| {
        j.state == JobState::Dead
    })
    .await;
    assert_eq!(
        dead.last_error.as_deref(),
        Some("no handler for job kind nobody.handles")
    );
    let dead = wait_for(f.store.as_ref(), strict, "dead", |j| {
        j.state == JobState::Dead
    })
    .await;
    assert_eq!(dead.attempts, 1);
    assert!(dead.last_error.unwrap().contains("payload does not match"));
    worker.shutdown(Duration::from_secs(5)).await;
}

/// A panicking handler and one running past the timeout count as failed
/// attempts (the worker survives both).
pub async fn worker_counts_panics_and_timeouts_as_failures(f: Fixture) {
    // Printing a panic's backtrace can take longer than a short timeout,
    // so the hanging job has a worker (and queue) of its own.
    let worker = Worker::new(f.store.clone(), test_config("w1"))
        .handler(handler_fn(kind("panics"), |_ctx| async move {
            if true {
                panic!("boom");
            }
            Ok(())
        }))
        .handler(handler_fn(kind("fine"), |_ctx| async move { Ok(()) }))
        .start();
    let impatient = Worker::new(
        f.others[0].clone(),
        test_config("w2")
            .with_queues(vec![queue("slow")])
            .with_job_timeout(Duration::from_millis(200)),
    )
    .handler(handler_fn(kind("hangs"), |_ctx| async move {
        std::future::pending::<()>().await;
        Ok(())
    }))
    .start();
    let panics = f.store.enqueue(job("panics")).await.unwrap().id();
    let hangs = f
        .store
        .enqueue(job("hangs").with_queue(queue("slow")))
        .await
        .unwrap()
        .id();
    worker.wake();
    impatient.wake();
    let failed = wait_for(f.store.as_ref(), panics, "retry", |j| {
        j.state == JobState::Retrying
    })
    .await;
    assert_eq!(failed.last_error.as_deref(), Some("handler panicked: boom"));
    let failed = wait_for(f.store.as_ref(), hangs, "retry", |j| {
        j.state == JobState::Retrying
    })
    .await;
    assert_eq!(
        failed.last_error.as_deref(),
        Some("attempt timed out after 200 ms")
    );
    assert_eq!(failed.attempts, 1);
    let fine = f.store.enqueue(job("fine")).await.unwrap().id();
    worker.wake();
    wait_for(f.store.as_ref(), fine, "success", |j| {
        j.state == JobState::Succeeded
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    impatient.shutdown(Duration::from_secs(5)).await;
}

/// Shutdown stops claiming, lets a job that ends within the grace period
/// finish, and releases one that does not, without counting its attempt.
pub async fn worker_shutdown_finishes_or_releases(f: Fixture) {
    let (started_tx, mut started) = mpsc::unbounded_channel::<&'static str>();
    let finish = Arc::new(Notify::new());
    let gate = finish.clone();
    let tx = started_tx.clone();
    let worker = Worker::new(f.store.clone(), test_config("w1"))
        .handler(handler_fn(kind("stuck"), move |_ctx| {
            let tx = tx.clone();
            async move {
                let _ = tx.send("stuck");
                std::future::pending::<()>().await;
                Ok(())
            }
        }))
        .handler(handler_fn(kind("finishes"), move |_ctx| {
            let tx = started_tx.clone();
            let gate = gate.clone();
            async move {
                let _ = tx.send("finishes");
                gate.notified().await;
                Ok(())
            }
        }))
        .start();
    let stuck = f.store.enqueue(job("stuck")).await.unwrap().id();
    let finishes = f.store.enqueue(job("finishes")).await.unwrap().id();
    worker.wake();
    let mut names = vec![started.recv().await.unwrap(), started.recv().await.unwrap()];
    names.sort();
    assert_eq!(names, ["finishes", "stuck"]);
    // The worker stops claiming as soon as shutdown is called.
    let shutdown = tokio::spawn(worker.shutdown(Duration::from_secs(1)));
    // Enqueued after shutdown began: never claimed.
    let late = f.store.enqueue(job("finishes")).await.unwrap().id();
    finish.notify_one();
    let report = shutdown.await.unwrap();
    assert_eq!((report.finished, report.released), (1, 1));
    assert_eq!(
        f.store.get(finishes).await.unwrap().state,
        JobState::Succeeded
    );
    let released = f.store.get(stuck).await.unwrap();
    assert_eq!(released.state, JobState::Queued);
    assert_eq!(released.attempts, 0);
    assert_eq!(released.locked_by, None);
    assert_eq!(f.store.get(late).await.unwrap().state, JobState::Queued);
}

/// A worker killed mid-job: its handler is cancelled with it; once the
/// lease expires a new worker runs the job to completion; the outside
/// effect (keyed by job id) happens once.
pub async fn crashed_worker_job_completes_once(f: Fixture) {
    let effects: Arc<Mutex<HashMap<JobId, u32>>> = Arc::default();
    let starts: Arc<Mutex<HashMap<JobId, u32>>> = Arc::default();
    let (alive_tx, alive_rx) = tokio::sync::oneshot::channel::<()>();
    let alive_slot = Arc::new(Mutex::new(Some(alive_tx)));
    let gate = Arc::new(Notify::new());
    let (started_tx, mut started) = mpsc::unbounded_channel::<JobId>();
    let make = |id: &str, store: Arc<dyn JobStore>| {
        let effects = effects.clone();
        let starts = starts.clone();
        let started_tx = started_tx.clone();
        let alive_slot = alive_slot.clone();
        let gate = gate.clone();
        Worker::new(store, test_config(id)).handler(handler_fn(kind("charge"), move |ctx| {
            let effects = effects.clone();
            let starts = starts.clone();
            let started_tx = started_tx.clone();
            let alive_slot = alive_slot.clone();
            let gate = gate.clone();
            async move {
                *starts.lock().unwrap().entry(ctx.id()).or_default() += 1;
                let _ = started_tx.send(ctx.id());
                if ctx.attempt() == 1 {
                    // Held while this attempt lives; the worker dies here.
                    let _alive = alive_slot.lock().unwrap().take();
                    gate.notified().await;
                }
                *effects.lock().unwrap().entry(ctx.id()).or_default() += 1;
                Ok(())
            }
        }))
    };
    let first = make("doomed", f.others[0].clone()).start();
    let id = f.store.enqueue(job("charge")).await.unwrap().id();
    first.wake();
    assert_eq!(started.recv().await, Some(id));
    first.abort();
    // The first attempt's handler was dropped, not left running.
    let dropped = tokio::time::timeout(Duration::from_secs(10), alive_rx).await;
    assert!(
        matches!(dropped, Ok(Err(_))),
        "the handler outlived its worker"
    );
    let held = f.store.get(id).await.unwrap();
    assert_eq!(held.state, JobState::Running);
    assert_eq!(held.locked_by.as_deref(), Some("doomed"));
    // Nobody can claim it before the lease ends.
    assert!(
        f.store
            .claim(&claim_req(&["default"], 1))
            .await
            .unwrap()
            .is_empty()
    );
    let second = make("rescuer", f.others[1].clone()).start();
    f.clock.advance(time::Duration::seconds(31));
    second.wake();
    let done = wait_for(f.store.as_ref(), id, "completion", |j| {
        j.state == JobState::Succeeded
    })
    .await;
    assert_eq!(done.attempts, 2);
    second.shutdown(Duration::from_secs(5)).await;
    gate.notify_waiters();
    assert_eq!(effects.lock().unwrap().get(&id), Some(&1));
    assert_eq!(starts.lock().unwrap().get(&id), Some(&2));
}

/// Four workers on one store run 80 jobs, each exactly once.
pub async fn several_workers_run_each_job_once(f: Fixture) {
    let runs: Arc<Mutex<HashMap<JobId, u32>>> = Arc::default();
    let mut ids = Vec::new();
    for n in 0..80 {
        ids.push(
            f.store
                .enqueue(
                    job("count")
                        .with_tenant(TenantId::new())
                        .with_dedupe_key(format!("c{n}"))
                        .unwrap(),
                )
                .await
                .unwrap()
                .id(),
        );
    }
    let workers: Vec<_> = f
        .others
        .iter()
        .enumerate()
        .map(|(n, store)| {
            let runs = runs.clone();
            Worker::new(
                store.clone(),
                test_config(&format!("w{n}")).with_concurrency(3),
            )
            .handler(handler_fn(kind("count"), move |ctx| {
                let runs = runs.clone();
                async move {
                    *runs.lock().unwrap().entry(ctx.id()).or_default() += 1;
                    tokio::task::yield_now().await;
                    Ok(())
                }
            }))
            .start()
        })
        .collect();
    for id in &ids {
        wait_for(f.store.as_ref(), *id, "success", |j| {
            j.state == JobState::Succeeded
        })
        .await;
    }
    for worker in workers {
        let report = worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!(report.released, 0);
    }
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), ids.len());
    assert!(runs.values().all(|n| *n == 1), "a job ran twice: {runs:?}");
}

/// Two workers with the same periodic job enqueue one job per tick.
pub async fn workers_enqueue_periodic_jobs_once(f: Fixture) {
    let every = Duration::from_secs(60);
    let ticks = Periodic::every("cleanup", every, job("cleanup")).unwrap();
    let workers: Vec<_> = f.others[..2]
        .iter()
        .enumerate()
        .map(|(n, store)| {
            Worker::new(store.clone(), test_config(&format!("w{n}")))
                .handler(handler_fn(kind("cleanup"), |_ctx| async { Ok(()) }))
                .periodic(ticks.clone())
                .start()
        })
        .collect();
    let filter = JobFilter::all().kind(kind("cleanup"));
    let all = PageRequest::first(PageSize::new(100).unwrap());
    let succeeded = |n: usize| {
        let store = f.store.clone();
        let filter = filter.clone();
        let all = all.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let page = store.list(&filter, &all).await.unwrap();
                if page.items.len() == n
                    && page.items.iter().all(|j| j.state == JobState::Succeeded)
                {
                    return page.items;
                }
                assert!(page.items.len() <= n, "too many ticks: {:?}", page.items);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out: {:?}",
                    page.items
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    succeeded(1).await;
    f.clock.advance(time::Duration::seconds(60));
    for w in &workers {
        w.wake();
    }
    let jobs = succeeded(2).await;
    assert_eq!(jobs[1].run_at, NOW + time::Duration::seconds(60));
    assert_eq!(
        f.store
            .enqueue_due("cleanup", every, job("cleanup"))
            .await
            .unwrap(),
        None
    );
    for worker in workers {
        worker.shutdown(Duration::from_secs(5)).await;
    }
    assert_eq!(f.store.list(&filter, &all).await.unwrap().items.len(), 2);
}

/// A worker with a retention policy deletes succeeded jobs once they are
/// older than it, keeps younger ones, and keeps dead ones when told to.
pub async fn worker_purges_old_finished_jobs(f: Fixture) {
    #[derive(serde::Deserialize)]
    struct Count {
        n: u32,
    }
    let worker = Worker::new(
        f.store.clone(),
        test_config("w1").with_retention(Some(Retention {
            finished: Duration::from_secs(86_400),
            dead: None,
            every: Duration::from_millis(10),
        })),
    )
    .handler(typed_handler(
        kind("typed"),
        |_ctx, count: Count| async move {
            if count.n == 1 {
                Ok(())
            } else {
                Err(HandlerError::permanent("wrong count"))
            }
        },
    ))
    .start();
    let old = f.store.enqueue(job("typed")).await.unwrap().id();
    let dead = f
        .store
        .enqueue(NewJob::new(kind("typed"), serde_json::json!({"n": 2})).unwrap())
        .await
        .unwrap()
        .id();
    worker.wake();
    wait_for(f.store.as_ref(), old, "success", |j| {
        j.state == JobState::Succeeded
    })
    .await;
    let died = wait_for(f.store.as_ref(), dead, "dead", |j| {
        j.state == JobState::Dead
    })
    .await;
    assert_eq!(died.last_error.as_deref(), Some("wrong count"));
    f.clock.advance(time::Duration::hours(25));
    let young = f.store.enqueue(job("typed")).await.unwrap().id();
    worker.wake();
    wait_for(f.store.as_ref(), young, "success", |j| {
        j.state == JobState::Succeeded
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f.store.get(old).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "old job not purged");
        worker.wake();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(f.store.get(young).await.unwrap().state, JobState::Succeeded);
    assert_eq!(f.store.get(dead).await.unwrap().state, JobState::Dead);
}

/// A worker whose lease ran out and whose job was claimed by another
/// holder learns it at its next heartbeat, drops the handler, and records
/// nothing: the new holder's outcome stands.
pub async fn worker_abandons_a_job_whose_lease_was_lost(f: Fixture) {
    let (alive_tx, alive_rx) = tokio::sync::oneshot::channel::<()>();
    let alive_slot = Arc::new(Mutex::new(Some(alive_tx)));
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let worker = Worker::new(
        f.others[0].clone(),
        // One job at a time: while its attempt runs, the worker cannot
        // claim the expired job back itself.
        test_config("stalled")
            .with_lease(Duration::from_secs(30), Duration::from_millis(20))
            .with_concurrency(1),
    )
    .handler(handler_fn(kind("slow"), move |_ctx| {
        let alive = alive_slot.lock().unwrap().take();
        let started_tx = started_tx.clone();
        async move {
            let _alive = alive;
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
            Ok(())
        }
    }))
    .start();
    let id = f.store.enqueue(job("slow")).await.unwrap().id();
    worker.wake();
    started.recv().await.unwrap();
    // The worker's heartbeats keep moving the lease; move the clock past
    // it until another holder gets the job.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let stolen = loop {
        f.clock.advance(time::Duration::seconds(31));
        let claimed = f.store.claim(&claim_req(&["default"], 1)).await.unwrap();
        if let Some(claimed) = claimed.into_iter().next() {
            break claimed;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reclaimed");
    };
    assert_eq!(stolen.job.id, id);
    assert_eq!(stolen.job.attempts, 2);
    let dropped = tokio::time::timeout(Duration::from_secs(10), alive_rx).await;
    assert!(
        matches!(dropped, Ok(Err(_))),
        "the stale handler kept running"
    );
    let held = f.store.get(id).await.unwrap();
    assert_eq!(held.state, JobState::Running);
    assert_eq!(held.locked_by.as_deref(), Some("tester"));
    f.store.complete(&stolen.lease).await.unwrap();
    let report = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.finished, report.released), (0, 0));
    let done = f.store.get(id).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert!(done.last_error.unwrap().contains("lease expired"));
}

/// A store whose heartbeats fail as an unreachable database's would; every
/// other call goes through.
struct HeartbeatsDown(Arc<dyn JobStore>);

#[async_trait::async_trait]
impl JobStore for HeartbeatsDown {
    async fn enqueue(&self, job: NewJob) -> Result<Enqueued, JobError> {
        self.0.enqueue(job).await
    }
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<crate::ClaimedJob>, JobError> {
        self.0.claim(request).await
    }
    async fn heartbeat(
        &self,
        _lease: &crate::Lease,
        _lease_for: Duration,
    ) -> Result<OffsetDateTime, JobError> {
        Err(JobError::unavailable("connection refused"))
    }
    async fn complete(&self, lease: &crate::Lease) -> Result<(), JobError> {
        self.0.complete(lease).await
    }
    async fn fail(
        &self,
        lease: &crate::Lease,
        error: &str,
        retry_at: Option<OffsetDateTime>,
    ) -> Result<JobState, JobError> {
        self.0.fail(lease, error, retry_at).await
    }
    async fn release(&self, lease: &crate::Lease) -> Result<(), JobError> {
        self.0.release(lease).await
    }
    async fn get(&self, id: JobId) -> Result<Job, JobError> {
        self.0.get(id).await
    }
    async fn list(
        &self,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> Result<tenancy_core::Page<Job>, JobError> {
        self.0.list(filter, page).await
    }
    async fn retry_dead(&self, id: JobId) -> Result<(), JobError> {
        self.0.retry_dead(id).await
    }
    async fn cancel(&self, id: JobId) -> Result<(), JobError> {
        self.0.cancel(id).await
    }
    async fn purge_finished(
        &self,
        before: OffsetDateTime,
        include_dead: bool,
    ) -> Result<u64, JobError> {
        self.0.purge_finished(before, include_dead).await
    }
    async fn enqueue_due(
        &self,
        name: &str,
        every: Duration,
        job: NewJob,
    ) -> Result<Option<JobId>, JobError> {
        self.0.enqueue_due(name, every, job).await
    }
    fn now(&self) -> OffsetDateTime {
        self.0.now()
    }
}

/// A worker that cannot renew its lease (every heartbeat finds the store
/// unavailable) keeps its handler running while the lease holds, cancels
/// it before the lease ends and records nothing; once the lease has ended
/// another worker claims the job and runs its effect exactly once.
pub async fn worker_abandons_a_job_it_cannot_renew(f: Fixture) {
    let effects: Arc<Mutex<HashMap<JobId, u32>>> = Arc::default();
    let starts: Arc<Mutex<HashMap<JobId, u32>>> = Arc::default();
    let (alive_tx, mut alive_rx) = tokio::sync::oneshot::channel::<()>();
    let alive_slot = Arc::new(Mutex::new(Some(alive_tx)));
    let (started_tx, mut started) = mpsc::unbounded_channel::<JobId>();
    let make = |id: &str, store: Arc<dyn JobStore>| {
        let effects = effects.clone();
        let starts = starts.clone();
        let started_tx = started_tx.clone();
        let alive_slot = alive_slot.clone();
        let config = test_config(id).with_lease(Duration::from_secs(30), Duration::from_millis(20));
        Worker::new(store, config).handler(handler_fn(kind("charge"), move |ctx| {
            let effects = effects.clone();
            let starts = starts.clone();
            let started_tx = started_tx.clone();
            let alive = alive_slot.lock().unwrap().take();
            async move {
                *starts.lock().unwrap().entry(ctx.id()).or_default() += 1;
                let _ = started_tx.send(ctx.id());
                if ctx.attempt() == 1 {
                    // Held while this attempt lives; it never ends by itself
                    // (as a handler stuck on a slow outside call).
                    let _alive = alive;
                    std::future::pending::<()>().await;
                }
                *effects.lock().unwrap().entry(ctx.id()).or_default() += 1;
                Ok(())
            }
        }))
    };
    let cut_off = make("cut-off", Arc::new(HeartbeatsDown(f.others[0].clone()))).start();
    let id = f.store.enqueue(job("charge")).await.unwrap().id();
    cut_off.wake();
    assert_eq!(started.recv().await, Some(id));
    // Several failed heartbeats while the lease holds: the handler goes on.
    let early = tokio::time::timeout(Duration::from_millis(200), &mut alive_rx).await;
    assert!(
        early.is_err(),
        "the handler was cancelled while the lease held"
    );
    // Past the point of giving up (a tenth of the lease before its end),
    // but before the end: the handler is cancelled now.
    f.clock.advance(time::Duration::seconds(28));
    let dropped = tokio::time::timeout(Duration::from_secs(10), alive_rx).await;
    assert!(
        matches!(dropped, Ok(Err(_))),
        "the handler kept running on a lease it could not renew"
    );
    // The lease has not ended yet: nobody else could have claimed the job.
    assert!(
        f.store
            .claim(&claim_req(&["default"], 1))
            .await
            .unwrap()
            .is_empty()
    );
    let report = cut_off.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.finished, report.released), (0, 0));
    // Nothing was recorded by the worker that gave up.
    let held = f.store.get(id).await.unwrap();
    assert_eq!(held.state, JobState::Running);
    assert_eq!(held.locked_by.as_deref(), Some("cut-off"));
    assert_eq!(held.attempts, 1);
    assert_eq!(held.last_error, None);
    let rescuer = make("rescuer", f.others[1].clone()).start();
    f.clock.advance(time::Duration::seconds(3));
    rescuer.wake();
    let done = wait_for(f.store.as_ref(), id, "completion", |j| {
        j.state == JobState::Succeeded
    })
    .await;
    assert_eq!(done.attempts, 2);
    assert!(done.last_error.unwrap().contains("lease expired"));
    rescuer.shutdown(Duration::from_secs(5)).await;
    assert_eq!(effects.lock().unwrap().get(&id), Some(&1));
    assert_eq!(starts.lock().unwrap().get(&id), Some(&2));
}
