//! tenancy-metering's hot paths against simple baselines and peers, in one
//! run:
//!
//! - `ingest/*`: buffered ingest (sharded counters) against a
//!   `Mutex<HashMap>` shared by every thread, on 1 and 2 threads, 64
//!   tenants × 2 meters, events within one minute. Throughput is events/s.
//! - `ratelimit/*`: a keyed GCRA check in process (`MemoryRateLimitStore`)
//!   against governor's keyed limiter (`DefaultKeyedRateLimiter<String>`),
//!   1,024 keys, never refused; and, when Redis answers at `REDIS_URL`
//!   (default `redis://127.0.0.1:6379`), the Redis GCRA script's round trip.
//! - `quota/lease_hit`: a hard-quota check answered from the local lease.
//! - With `DATABASE_URL` (a fresh schema is made): `postgres/flush` times
//!   one flush of 100,000 buffered events (64 tenants, 60 minutes, 5
//!   routes) into the rollups; `postgres/durable` times durable ingest
//!   from 8 concurrent tasks, one event per transaction.
//!
//! ```text
//! cargo bench -p tenancy-benches --bench metering -- --warm-up-time 1 --measurement-time 3
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a benchmark reports failure by panicking

use std::collections::HashMap;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tenancy::{TenantId, TenantScope};
use tenancy_metering::{
    Aggregation, BufferConfig, MemoryQuotaStore, MemoryRateLimitStore, Meter, MeterName, Metering,
    Meters, QuotaKey, QuotaLeases, RateLimit, RateLimitStore,
};

const TENANTS: usize = 64;
const KEYS: usize = 1_024;

fn meters() -> Meters {
    Meters::new([
        Meter::new(
            MeterName::new("api_calls").unwrap(),
            Aggregation::Count,
            "calls",
        )
        .unwrap(),
        Meter::new(
            MeterName::new("tokens").unwrap(),
            Aggregation::Sum,
            "tokens",
        )
        .unwrap(),
    ])
    .unwrap()
}

/// Runs `per_thread(thread, n)` on `threads` threads, `iters` events in
/// all, and times the whole.
fn on_threads(threads: usize, iters: u64, per_thread: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let each = iters / threads as u64 + 1;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || per_thread(t, each));
        }
    });
    start.elapsed()
}

fn ingest(c: &mut Criterion) {
    let backend = Arc::new(tenancy::MemoryBackend::new());
    let store = Arc::new(tenancy_metering::MemoryMeteringStore::new(backend));
    let metering = Metering::new(meters(), store);
    let tenants: Vec<TenantScope> = (0..TENANTS)
        .map(|_| TenantScope::assume_resolved(TenantId::new()))
        .collect();
    let at = time::OffsetDateTime::now_utc();
    let meter_names = ["api_calls", "tokens"];

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(1));
    for threads in [1, 2] {
        let buffered = metering.buffered(BufferConfig::default());
        group.bench_with_input(
            BenchmarkId::new("buffered_sharded", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    on_threads(threads, iters, &|t, n| {
                        for i in 0..n as usize {
                            let scope = &tenants[(i + t * 7) % TENANTS];
                            buffered.add(scope, meter_names[i & 1], 3, at, &[]).unwrap();
                        }
                    })
                });
            },
        );
        // Keep the counters from growing across samples: they hold one
        // entry per tenant and meter, so this only empties them.
        drop(buffered);

        let baseline: Mutex<HashMap<(TenantId, String, i64), i64>> = Mutex::new(HashMap::new());
        group.bench_with_input(
            BenchmarkId::new("mutex_hashmap", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    on_threads(threads, iters, &|t, n| {
                        for i in 0..n as usize {
                            let scope = &tenants[(i + t * 7) % TENANTS];
                            let key = (
                                scope.tenant_id(),
                                meter_names[i & 1].to_owned(),
                                at.unix_timestamp() / 60,
                            );
                            *baseline.lock().unwrap().entry(key).or_default() += 3;
                        }
                    })
                });
            },
        );
    }
    group.finish();
}

fn ratelimit(c: &mut Criterion) {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("tenant-{i}:route")).collect();
    let mut group = c.benchmark_group("ratelimit");

    let limit = RateLimit::new(1_000_000, Duration::from_secs(1))
        .unwrap()
        .with_burst(1_000_000)
        .unwrap();
    let store = MemoryRateLimitStore::new();
    let mut i = 0usize;
    group.bench_function("tenancy_memory_gcra", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            assert!(store.check_now(black_box(&keys[i]), &limit, 1).allowed);
        });
    });

    let governor = governor::RateLimiter::keyed(
        governor::Quota::per_second(NonZeroU32::new(1_000_000).unwrap())
            .allow_burst(NonZeroU32::new(1_000_000).unwrap()),
    );
    let mut i = 0usize;
    group.bench_function("governor_keyed", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            assert!(governor.check_key(black_box(&keys[i])).is_ok());
        });
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let redis = runtime.block_on(async {
        tenancy_metering::redis::connect(&url, Duration::from_secs(1))
            .await
            .ok()
    });
    match redis {
        Some(conn) => {
            let store = tenancy_metering::redis::RedisRateLimitStore::new(conn)
                .with_prefix("tenancy-bench:");
            let mut i = 0usize;
            group.bench_function("redis_gcra_round_trip", |b| {
                b.to_async(&runtime).iter(|| {
                    i = (i + 1) % KEYS;
                    let key = &keys[i];
                    let store = &store;
                    let limit = &limit;
                    async move { assert!(store.check(key, limit, 1).await.unwrap().allowed) }
                });
            });
        }
        None => eprintln!("Redis at {url} is not reachable: redis_gcra_round_trip skipped"),
    }
    group.finish();
}

fn quota(c: &mut Criterion) {
    let leases = QuotaLeases::new(Arc::new(MemoryQuotaStore::new()), u64::MAX / 4);
    let key = QuotaKey::new(
        TenantId::new(),
        MeterName::new("api_calls").unwrap(),
        time::OffsetDateTime::UNIX_EPOCH,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(
        runtime
            .block_on(leases.consume(&key, 1, u64::MAX / 2))
            .unwrap()
    );
    c.bench_function("quota/lease_hit", |b| {
        b.iter(|| assert!(leases.try_local(black_box(&key), 1)));
    });
}

const FLUSH_EVENTS: u64 = 100_000;

fn postgres(c: &mut Criterion) {
    use tenancy::{AuditContext, Directory, Email, NewTenant, NewUser, Owner, Slug, TenantName};
    use tenancy_metering::store::postgres::PgMeteringStore;
    use tenancy_metering::{DimensionName, IdempotencyKey, NewEvent};

    if std::env::var("DATABASE_URL").is_err() {
        eprintln!("DATABASE_URL is not set: postgres/* skipped");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (store, tenants) = runtime.block_on(async {
        let schema = tenancy_core::testkit::postgres::TestSchema::create()
            .await
            .unwrap();
        let store = PgMeteringStore::new(schema.pool.clone());
        store.migrate().await.unwrap();
        let directory = Directory::new(Arc::new(tenancy_core::postgres::PgBackend::new(
            schema.pool.clone(),
        )));
        let mut tenants = Vec::new();
        for i in 0..TENANTS {
            let slug = format!(
                "bench-{i}-{}",
                &uuid::Uuid::now_v7().simple().to_string()[20..]
            );
            let created = directory
                .create_tenant(
                    NewTenant::new(
                        Slug::new(slug.clone()).unwrap(),
                        TenantName::new(&slug).unwrap(),
                    ),
                    Owner::New(NewUser::new(Email::new(&format!("o@{slug}.test")).unwrap())),
                    &AuditContext::system(),
                )
                .await
                .unwrap();
            tenants.push(TenantScope::assume_resolved(created.tenant.id));
        }
        (store, tenants)
    });
    let meters = Meters::new([Meter::new(
        MeterName::new("api_calls").unwrap(),
        Aggregation::Count,
        "calls",
    )
    .unwrap()
    .keep([DimensionName::new("route").unwrap()])
    .unwrap()])
    .unwrap();
    let metering = Metering::new(meters, Arc::new(store));
    let routes = ["/a", "/b", "/c", "/d", "/e"];
    let now = time::OffsetDateTime::now_utc();

    let mut group = c.benchmark_group("postgres");
    group.sample_size(10);
    group.throughput(Throughput::Elements(FLUSH_EVENTS));
    group.bench_function("flush", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let buffered = metering.buffered(BufferConfig::default());
                for i in 0..FLUSH_EVENTS as usize {
                    let at = now - time::Duration::minutes((i % 60) as i64);
                    buffered
                        .add(
                            &tenants[i % TENANTS],
                            "api_calls",
                            1,
                            at,
                            &[("route", routes[i % 5])],
                        )
                        .unwrap();
                }
                let start = Instant::now();
                let report = runtime.block_on(buffered.flush());
                total += start.elapsed();
                assert_eq!(report.events, FLUSH_EVENTS);
            }
            total
        });
    });

    group.throughput(Throughput::Elements(1));
    group.bench_function("durable_8_tasks", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            runtime.block_on(async {
                let mut tasks = Vec::new();
                for t in 0..8u64 {
                    let metering = metering.clone();
                    let tenants = tenants.clone();
                    tasks.push(tokio::spawn(async move {
                        for i in 0..iters.div_ceil(8) {
                            let key =
                                IdempotencyKey::new(&uuid::Uuid::now_v7().to_string()).unwrap();
                            let event =
                                NewEvent::new("api_calls", 1, now, key).dimension("route", "/a");
                            let scope = &tenants[((t * 13 + i) as usize) % TENANTS];
                            let recorded = metering.record(scope, event).await.unwrap();
                            assert_eq!(recorded, tenancy_metering::Recorded::Counted);
                        }
                    }));
                }
                for task in tasks {
                    task.await.unwrap();
                }
            });
            start.elapsed()
        });
    });
    group.finish();
}

criterion_group!(benches, ingest, ratelimit, quota, postgres);
criterion_main!(benches);
