//! Durable work: the outbox relay, the job queue and webhook signing, in
//! one run.
//!
//! - `relay/*`: `Relay::run_once` delivering 2,000 events (100 each for
//!   20 tenants, appended beforehand through `Outbox::append_event`, not
//!   timed) to an in-process `Subscription` that counts them, default
//!   relay settings (batches of 100). Throughput is events/s.
//! - `jobs/*`: 1 and 4 `Worker`s (each at its default concurrency of 8)
//!   with a no-op handler, from start until all of 1,000 enqueued jobs
//!   have succeeded (the workers shut down once every handler ran, which
//!   waits for the last completions to be recorded). Enqueueing is not
//!   timed. Throughput is jobs/s.
//! - `webhook_sign/*`: the Standard Webhooks signature of a 1 KiB JSON
//!   body, `tenancy_webhooks::signing::sign` against the `standardwebhooks`
//!   crate's `Webhook::sign`, same secret, id, timestamp and body (checked
//!   to give the same signature before timing).
//!
//! The `postgres` rows need `DATABASE_URL` (a fresh schema is made) and are
//! skipped with a notice without it.
//!
//! ```text
//! cargo bench -p tenancy-benches --bench durable
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a benchmark reports failure by panicking

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use tenancy_core::{
    AuditContext, Backend, BoxError, ConsumerName, Directory, Email, Event, EventType, NewEvent,
    NewTenant, NewUser, Outbox, Owner, PageRequest, PageSize, Slug, TenantId, TenantName,
};
use tenancy_events::{Relay, Subscription};
use tenancy_jobs::{
    JobFilter, JobKind, JobState, JobStore, MemoryJobStore, NewJob, Worker, WorkerConfig,
    handler_fn,
};
use tokio::runtime::Runtime;

const TENANTS: usize = 20;
const EVENTS_PER_TENANT: usize = 100;
const EVENTS: usize = TENANTS * EVENTS_PER_TENANT;
const JOBS: usize = 1_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

struct Postgres {
    backend: Arc<dyn Backend>,
    jobs: Arc<dyn JobStore>,
    // Keeps the schema's pool alive beside the stores.
    _schema: tenancy_core::testkit::postgres::TestSchema,
}

/// A fresh, migrated schema holding tenancy-core's and tenancy-jobs'
/// tables, or `None` (with a notice) without `DATABASE_URL`.
fn postgres(runtime: &Runtime) -> Option<Postgres> {
    if std::env::var("DATABASE_URL").is_err() {
        eprintln!("DATABASE_URL is not set: the postgres rows are skipped");
        return None;
    }
    runtime.block_on(async {
        let schema = tenancy_core::testkit::postgres::TestSchema::create().await?;
        let pool = schema.pool_as(&schema.url, 16).await;
        tenancy_core::postgres::migrate_all(
            &pool,
            [
                tenancy_core::postgres::migrator(),
                tenancy_jobs::postgres::migrator(),
            ],
        )
        .await
        .expect("migrations");
        Some(Postgres {
            backend: Arc::new(tenancy_core::postgres::PgBackend::new(pool.clone())),
            jobs: Arc::new(tenancy_jobs::postgres::PgJobStore::new(pool)),
            _schema: schema,
        })
    })
}

async fn tenants(backend: &Arc<dyn Backend>) -> Vec<TenantId> {
    let directory = Directory::new(Arc::clone(backend));
    let mut out = Vec::with_capacity(TENANTS);
    for _ in 0..TENANTS {
        let slug = format!("bench-{}", &TenantId::new().to_string()[24..]);
        let created = directory
            .create_tenant(
                NewTenant::new(Slug::new(&slug).unwrap(), TenantName::new(&slug).unwrap()),
                Owner::New(NewUser::new(
                    Email::new(&format!("owner@{slug}.test")).unwrap(),
                )),
                &AuditContext::system(),
            )
            .await
            .unwrap();
        out.push(created.tenant.id);
    }
    out
}

/// Appends `EVENTS_PER_TENANT` events to each tenant, the tenants in
/// parallel (appends to one tenant wait for each other).
async fn append(backend: &Arc<dyn Backend>, tenants: &[TenantId]) {
    let mut tasks = tokio::task::JoinSet::new();
    for &tenant in tenants {
        let backend = Arc::clone(backend);
        tasks.spawn(async move {
            for i in 0..EVENTS_PER_TENANT {
                let event = NewEvent::new(
                    EventType::new("project.updated").unwrap(),
                    serde_json::json!({ "project_id": format!("p_{i}"), "name": "renamed" }),
                );
                backend.append_event(tenant, event).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

fn relay_on(c: &mut Criterion, runtime: &Runtime, name: &str, backend: Arc<dyn Backend>) {
    let tenants = runtime.block_on(tenants(&backend));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let subscription = Subscription::new(
        ConsumerName::new("bench-counter").unwrap(),
        move |_event: Event| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok::<(), BoxError>(())
            }
        },
    );
    let relay = Relay::new(backend.clone()).sink(Arc::new(subscription));
    // Creating the tenants appended events of its own: deliver them first.
    runtime.block_on(relay.run_once()).unwrap();

    let mut group = c.benchmark_group("relay");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function(BenchmarkId::new("run_once_to_subscription", name), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                runtime.block_on(append(&backend, &tenants));
                let before = seen.load(Ordering::Relaxed);
                let start = Instant::now();
                let delivered = runtime.block_on(relay.run_once()).unwrap();
                timed += start.elapsed();
                assert_eq!(delivered, EVENTS);
                assert_eq!(seen.load(Ordering::Relaxed) - before, EVENTS);
            }
            timed
        })
    });
    group.finish();
}

/// Starts `workers` workers, waits until every job has run, shuts them
/// down (which waits for the completions to be recorded) and returns the
/// time taken.
async fn drain(store: &Arc<dyn JobStore>, workers: usize) -> Duration {
    let ran = Arc::new(AtomicUsize::new(0));
    let all_ran = Arc::new(tokio::sync::Notify::new());
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let ran = Arc::clone(&ran);
            let all_ran = Arc::clone(&all_ran);
            let handler = handler_fn(JobKind::new("bench.noop").unwrap(), move |_ctx| {
                if ran.fetch_add(1, Ordering::AcqRel) + 1 == JOBS {
                    all_ran.notify_one();
                }
                async { Ok(()) }
            });
            Worker::new(
                Arc::clone(store),
                WorkerConfig::default().with_retention(None),
            )
            .handler(handler)
            .start()
        })
        .collect();
    all_ran.notified().await;
    for handle in handles {
        let report = handle.shutdown(Duration::from_secs(30)).await;
        assert_eq!((report.abandoned, report.released), (0, 0));
    }
    let elapsed = start.elapsed();
    assert_eq!(ran.load(Ordering::Acquire), JOBS);
    elapsed
}

async fn enqueue(store: &Arc<dyn JobStore>) {
    let mut tasks = tokio::task::JoinSet::new();
    for part in 0..4 {
        let store = Arc::clone(store);
        tasks.spawn(async move {
            for i in (part..JOBS).step_by(4) {
                let job = NewJob::new(
                    JobKind::new("bench.noop").unwrap(),
                    serde_json::json!({ "i": i }),
                )
                .unwrap();
                store.enqueue(job).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// Nothing is left queued, running, retrying or dead.
async fn all_succeeded(store: &Arc<dyn JobStore>) {
    let one = PageRequest::first(PageSize::new(1).unwrap());
    for state in [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Dead,
    ] {
        let left = store
            .list(&JobFilter::all().state(state), &one)
            .await
            .unwrap();
        assert!(left.items.is_empty(), "a job is left {state:?}");
    }
}

fn jobs_on(c: &mut Criterion, runtime: &Runtime, name: &str, store: Arc<dyn JobStore>) {
    let mut group = c.benchmark_group("jobs");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(JOBS as u64));
    for workers in [1, 4] {
        group.bench_function(
            BenchmarkId::new(format!("claim_run_complete_{name}"), workers),
            |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        runtime.block_on(enqueue(&store));
                        timed += runtime.block_on(drain(&store, workers));
                        runtime.block_on(all_succeeded(&store));
                    }
                    timed
                })
            },
        );
    }
    group.finish();
}

fn relay(c: &mut Criterion) {
    let runtime = runtime();
    relay_on(
        c,
        &runtime,
        "memory",
        Arc::new(tenancy_core::MemoryBackend::new()),
    );
    if let Some(pg) = postgres(&runtime) {
        relay_on(c, &runtime, "postgres", pg.backend);
    }
}

fn jobs(c: &mut Criterion) {
    let runtime = runtime();
    jobs_on(c, &runtime, "memory", Arc::new(MemoryJobStore::new()));
    if let Some(pg) = postgres(&runtime) {
        jobs_on(c, &runtime, "postgres", pg.jobs);
    }
}

fn webhook_signing(c: &mut Criterion) {
    let secret = tenancy_webhooks::WebhookSecret::generate();
    let peer = standardwebhooks::Webhook::new(&secret.expose_secret()).unwrap();
    let msg_id = "msg_2wVZGgPZr2VkWqHzq4mDx7oCvXf";
    let timestamp = 1_767_225_600;
    let mut body = serde_json::to_string(&serde_json::json!({
        "type": "member.joined",
        "timestamp": "2026-01-01T00:00:00Z",
        "data": { "tenant_id": TenantId::new().to_string(), "padding": "" },
    }))
    .unwrap();
    let pad = 1024 - body.len();
    body = body.replace(
        "\"padding\":\"\"",
        &format!("\"padding\":\"{}\"", "x".repeat(pad)),
    );
    assert_eq!(body.len(), 1024);
    let body = body.into_bytes();
    assert_eq!(
        tenancy_webhooks::signing::sign(&secret, msg_id, timestamp, &body),
        peer.sign(msg_id, timestamp, &body).unwrap(),
        "both sign alike"
    );

    let mut group = c.benchmark_group("webhook_sign");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("tenancy_webhooks_1KiB", |b| {
        b.iter(|| {
            tenancy_webhooks::signing::sign(
                black_box(&secret),
                black_box(msg_id),
                black_box(timestamp),
                black_box(&body),
            )
        })
    });
    group.bench_function("standardwebhooks_1KiB", |b| {
        b.iter(|| {
            peer.sign(black_box(msg_id), black_box(timestamp), black_box(&body))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, relay, jobs, webhook_signing);
criterion_main!(benches);
