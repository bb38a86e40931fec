//! Conformance suites every [`MeteringStore`] must pass (feature
//! `testkit`).
//!
//! Each suite takes a fresh [`Fixture`] and checks, through the public
//! API only: a retried event counts once, a key reused for other usage is
//! refused, a writer stopped between the steps of a durable write leaves
//! nothing and its retry counts once, concurrent duplicates count once,
//! every aggregation at every granularity with grouping, batches of
//! rollups adding up, buffered ingest from many threads arriving whole,
//! tenants isolated, and unknown tenants refused. The memory and Postgres
//! adapters run the identical suites; a third-party store proves itself
//! the same way:
//!
//! ```ignore
//! async fn my_fixture() -> Option<tenancy_metering::testkit::Fixture> { /* … */ }
//! tenancy_metering::conformance_tests!(my_fixture());
//! ```
//!
//! Suites panic on the first failed check, like any test assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(all(feature = "http", feature = "memory"))]
pub mod http;
pub mod outbox;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod quota;
pub mod ratelimit;
#[cfg(all(feature = "redis", feature = "memory"))]
pub mod redis;

use std::sync::Arc;

use tenancy_core::{
    AuditContext, Backend, Directory, Email, ManualClock, NewTenant, NewUser, Owner, Slug,
    TenantId, TenantName, TenantScope,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::{
    Aggregation, BufferConfig, DimensionName, Granularity, IdempotencyKey, IngestError, IngestStep,
    Meter, MeterName, Metering, MeteringStore, MeteringStoreError, Meters, NewEvent, Recorded,
    UsagePoint,
};

/// What a suite runs against.
#[derive(Clone)]
pub struct Fixture {
    /// Holds tenants.
    pub backend: Arc<dyn Backend>,
    /// The store under test.
    pub store: Arc<dyn MeteringStore>,
    /// A handle on the same data whose durable writes stop after the
    /// given step, as a crashed process would.
    pub crash_after: Arc<dyn Fn(IngestStep) -> Arc<dyn MeteringStore> + Send + Sync>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").finish_non_exhaustive()
    }
}

/// A fixture over a fresh `MemoryBackend` and
/// [`MemoryMeteringStore`](crate::MemoryMeteringStore).
#[cfg(feature = "memory")]
pub async fn memory() -> Option<Fixture> {
    let backend: Arc<dyn Backend> = Arc::new(tenancy_core::MemoryBackend::new());
    let store = crate::MemoryMeteringStore::new(Arc::clone(&backend));
    let crashing = store.clone();
    Some(Fixture {
        backend,
        store: Arc::new(store),
        crash_after: Arc::new(move |step| Arc::new(crashing.crash_after(step))),
    })
}

/// Generates one `#[tokio::test]` per conformance suite. `$fixture` is an
/// expression evaluating to a future of `Option<Fixture>`, run afresh for
/// every test; `None` skips the test.
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@suites $fixture;
            retries_count_once, crashed_writers_count_once, concurrent_duplicates_count_once,
            aggregations, batches_add_up, buffered_ingest_arrives_whole, tenant_isolation,
            unknown_tenants_are_refused
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

/// The instant the suites' clock shows.
pub const NOW: OffsetDateTime = datetime!(2030-01-10 12:30 UTC);

/// The meters the suites declare: `calls` (count, keeps `route`),
/// `tokens` (sum, keeps `model` and `route`, negative allowed), `peak`
/// (max), `users` (unique count) and `storage` (latest).
pub fn meters() -> Meters {
    let name = |n: &str| MeterName::new(n).unwrap();
    let dim = |n: &str| DimensionName::new(n).unwrap();
    Meters::new([
        Meter::new(name("calls"), Aggregation::Count, "calls")
            .unwrap()
            .keep([dim("route")])
            .unwrap(),
        Meter::new(name("tokens"), Aggregation::Sum, "tokens")
            .unwrap()
            .keep([dim("model"), dim("route")])
            .unwrap()
            .allow_negative(true),
        Meter::new(name("peak"), Aggregation::Max, "seats").unwrap(),
        Meter::new(name("users"), Aggregation::UniqueCount, "users").unwrap(),
        Meter::new(name("storage"), Aggregation::Latest, "bytes").unwrap(),
    ])
    .unwrap()
}

/// [`Metering`] over the fixture's store with [`meters`] and a clock at
/// [`NOW`].
pub fn metering(fixture: &Fixture) -> Metering {
    Metering::new(meters(), Arc::clone(&fixture.store)).with_clock(Arc::new(ManualClock::new(NOW)))
}

/// Creates a tenant with a fresh owner in the fixture's backend.
pub async fn create_tenant(fixture: &Fixture) -> TenantScope {
    create_tenant_in(&fixture.backend).await
}

/// Creates a tenant with a fresh owner in `backend`.
pub async fn create_tenant_in(backend: &Arc<dyn Backend>) -> TenantScope {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let slug = format!("t-{}", &suffix[suffix.len() - 12..]);
    let created = Directory::new(Arc::clone(backend))
        .create_tenant(
            NewTenant::new(
                Slug::new(slug.clone()).unwrap(),
                TenantName::new(&slug).unwrap(),
            ),
            Owner::New(NewUser::new(
                Email::new(&format!("owner@{slug}.test")).unwrap(),
            )),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    TenantScope::assume_resolved(created.tenant.id)
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

/// The total of `meter` for the scope on the day of [`NOW`].
async fn day_total(metering: &Metering, scope: &TenantScope, meter: &str) -> i64 {
    let day = Granularity::Day.floor(NOW);
    let (_, points) = metering
        .usage(
            scope,
            meter,
            day,
            day + Duration::DAY,
            Granularity::Day,
            vec![],
        )
        .await
        .unwrap();
    points.iter().map(|p| p.value).sum()
}

/// A retried event counts once; a key reused for other usage is refused;
/// keys are scoped to the tenant.
pub async fn retries_count_once(f: Fixture) {
    let m = metering(&f);
    let a = create_tenant(&f).await;
    let b = create_tenant(&f).await;
    let event = NewEvent::new("tokens", 40, NOW, key("req-1")).dimension("model", "m1");
    assert_eq!(
        m.record(&a, event.clone()).await.unwrap(),
        Recorded::Counted
    );
    assert_eq!(
        m.record(&a, event.clone()).await.unwrap(),
        Recorded::Duplicate
    );
    // Dimensions the meter does not keep do not make it other usage.
    let noisy = event.clone().dimension("ip", "10.0.0.1");
    assert_eq!(m.record(&a, noisy).await.unwrap(), Recorded::Duplicate);
    for other in [
        NewEvent::new("tokens", 41, NOW, key("req-1")).dimension("model", "m1"),
        NewEvent::new("tokens", 40, NOW, key("req-1")).dimension("model", "m2"),
        NewEvent::new("tokens", 40, NOW - Duration::SECOND, key("req-1")).dimension("model", "m1"),
        NewEvent::new("calls", 40, NOW, key("req-1")),
    ] {
        let err = m.record(&a, other).await.unwrap_err();
        assert!(
            matches!(err, IngestError::Store(MeteringStoreError::KeyReused { ref key }) if key.as_str() == "req-1"),
            "{err:?}"
        );
    }
    assert_eq!(m.record(&b, event).await.unwrap(), Recorded::Counted);
    assert_eq!(day_total(&m, &a, "tokens").await, 40);
    assert_eq!(day_total(&m, &b, "tokens").await, 40);
}

/// A writer stopped after any step of a durable write leaves nothing
/// behind, and the retry counts the event once (openmeter #5118: a key
/// claimed before the write made the retry count zero times).
pub async fn crashed_writers_count_once(f: Fixture) {
    let m = metering(&f);
    let scope = create_tenant(&f).await;
    for (i, step) in [IngestStep::EventWritten, IngestStep::RollupsWritten]
        .into_iter()
        .enumerate()
    {
        let crashing = Metering::new(meters(), (f.crash_after)(step))
            .with_clock(Arc::new(ManualClock::new(NOW)));
        let event = NewEvent::new("calls", 1, NOW, key(&format!("crash-{i}")));
        let err = crashing.record(&scope, event.clone()).await.unwrap_err();
        assert!(
            matches!(err, IngestError::Store(MeteringStoreError::Store(_))),
            "{err:?}"
        );
        assert_eq!(
            day_total(&m, &scope, "calls").await,
            i as i64,
            "after {step:?}"
        );
        assert_eq!(
            m.record(&scope, event.clone()).await.unwrap(),
            Recorded::Counted
        );
        assert_eq!(m.record(&scope, event).await.unwrap(), Recorded::Duplicate);
        assert_eq!(day_total(&m, &scope, "calls").await, i as i64 + 1);
    }
}

/// Many writers sending one event at once count it once.
pub async fn concurrent_duplicates_count_once(f: Fixture) {
    let m = metering(&f);
    let scope = create_tenant(&f).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            m.record(&scope, NewEvent::new("calls", 1, NOW, key("same")))
                .await
                .unwrap()
        }));
    }
    let mut counted = 0;
    for task in tasks {
        if task.await.unwrap() == Recorded::Counted {
            counted += 1;
        }
    }
    assert_eq!(counted, 1);
    assert_eq!(day_total(&m, &scope, "calls").await, 1);
}

fn point(bucket: OffsetDateTime, group: &[(&str, Option<&str>)], value: i64) -> UsagePoint {
    UsagePoint {
        bucket,
        group: group
            .iter()
            .map(|(d, v)| (DimensionName::new(d).unwrap(), v.map(str::to_owned)))
            .collect(),
        value,
    }
}

/// Every aggregation at every granularity, with and without grouping.
pub async fn aggregations(f: Fixture) {
    let m = metering(&f);
    let scope = create_tenant(&f).await;
    let t0 = datetime!(2030-01-10 10:15:20 UTC);
    let t1 = datetime!(2030-01-10 10:15:50 UTC);
    let t2 = datetime!(2030-01-10 11:05 UTC);
    let t3 = datetime!(2030-01-09 23:59:59.5 UTC);
    let events = [
        NewEvent::new("tokens", 10, t0, key("a"))
            .dimension("model", "m1")
            .dimension("route", "/x"),
        NewEvent::new("tokens", 5, t1, key("b"))
            .dimension("model", "m2")
            .dimension("route", "/x"),
        NewEvent::new("tokens", -3, t2, key("c")).dimension("model", "m1"),
        NewEvent::new("tokens", 7, t3, key("d")).dimension("model", "m1"),
        NewEvent::new("calls", 99, t0, key("e")).dimension("route", "/x"),
        NewEvent::new("calls", 0, t1, key("f")).dimension("route", "/y"),
        NewEvent::new("calls", 1, t2, key("g")),
        NewEvent::new("peak", 3, t0, key("h")),
        NewEvent::new("peak", 8, t1, key("i")),
        NewEvent::new("peak", 2, t2, key("j")),
        NewEvent::new("users", 100, t0, key("k")),
        NewEvent::new("users", 101, t1, key("l")),
        NewEvent::new("users", 100, t2, key("m")),
        NewEvent::new("users", 102, t2, key("n")),
        NewEvent::new("storage", 500, t1, key("o")),
        NewEvent::new("storage", 400, t0, key("p")),
        NewEvent::new("storage", 700, t2, key("q")),
        NewEvent::new("storage", 100, t3, key("r")),
    ];
    for event in events {
        assert_eq!(m.record(&scope, event).await.unwrap(), Recorded::Counted);
    }
    let day9 = datetime!(2030-01-09 0:00 UTC);
    let day10 = datetime!(2030-01-10 0:00 UTC);
    let h10 = datetime!(2030-01-10 10:00 UTC);
    let h11 = datetime!(2030-01-10 11:00 UTC);
    let usage = |meter: &'static str, g: Granularity, by: Vec<&'static str>| {
        let m = m.clone();
        async move {
            let by = by
                .into_iter()
                .map(|d| DimensionName::new(d).unwrap())
                .collect();
            m.usage(&scope, meter, day9, day10 + Duration::DAY, g, by)
                .await
                .unwrap()
                .1
        }
    };
    assert_eq!(
        usage("tokens", Granularity::Day, vec![]).await,
        vec![point(day9, &[], 7), point(day10, &[], 12)]
    );
    assert_eq!(
        usage("tokens", Granularity::Hour, vec!["model"]).await,
        vec![
            point(datetime!(2030-01-09 23:00 UTC), &[("model", Some("m1"))], 7),
            point(h10, &[("model", Some("m1"))], 10),
            point(h10, &[("model", Some("m2"))], 5),
            point(h11, &[("model", Some("m1"))], -3),
        ]
    );
    assert_eq!(
        usage("tokens", Granularity::Day, vec!["route", "model"]).await,
        vec![
            point(day9, &[("route", None), ("model", Some("m1"))], 7),
            point(day10, &[("route", None), ("model", Some("m1"))], -3),
            point(day10, &[("route", Some("/x")), ("model", Some("m1"))], 10),
            point(day10, &[("route", Some("/x")), ("model", Some("m2"))], 5),
        ]
    );
    assert_eq!(
        usage("calls", Granularity::Minute, vec![]).await,
        vec![
            point(datetime!(2030-01-10 10:15 UTC), &[], 2),
            point(datetime!(2030-01-10 11:05 UTC), &[], 1),
        ]
    );
    assert_eq!(
        usage("calls", Granularity::Day, vec!["route"]).await,
        vec![
            point(day10, &[("route", None)], 1),
            point(day10, &[("route", Some("/x"))], 1),
            point(day10, &[("route", Some("/y"))], 1),
        ]
    );
    assert_eq!(
        usage("peak", Granularity::Hour, vec![]).await,
        vec![point(h10, &[], 8), point(h11, &[], 2)]
    );
    assert_eq!(
        usage("peak", Granularity::Day, vec![]).await,
        vec![point(day10, &[], 8)]
    );
    assert_eq!(
        usage("users", Granularity::Hour, vec![]).await,
        vec![point(h10, &[], 2), point(h11, &[], 2)]
    );
    assert_eq!(
        usage("users", Granularity::Day, vec![]).await,
        vec![point(day10, &[], 3)]
    );
    assert_eq!(
        usage("storage", Granularity::Day, vec![]).await,
        vec![point(day9, &[], 100), point(day10, &[], 700)]
    );
    assert_eq!(
        usage("storage", Granularity::Minute, vec![]).await,
        vec![
            point(datetime!(2030-01-09 23:59 UTC), &[], 100),
            point(datetime!(2030-01-10 10:15 UTC), &[], 500),
            point(datetime!(2030-01-10 11:05 UTC), &[], 700),
        ]
    );
    // The range selects windows starting in [from, to).
    let (_, points) = m
        .usage(&scope, "tokens", h10, h11, Granularity::Hour, vec![])
        .await
        .unwrap();
    assert_eq!(points, vec![point(h10, &[], 15)]);
}

/// Batches of rollups add up, in one call or many, keys repeated or not.
pub async fn batches_add_up(f: Fixture) {
    let m = metering(&f);
    let scope = create_tenant(&f).await;
    let ingest = m.buffered(BufferConfig::default().with_shards(1));
    for i in 0..50 {
        let at = NOW - Duration::minutes(i % 3);
        ingest
            .add(
                &scope,
                "tokens",
                i,
                at,
                &[("model", if i % 2 == 0 { "even" } else { "odd" })],
            )
            .unwrap();
        ingest.add(&scope, "users", i % 7, at, &[]).unwrap();
        ingest.add(&scope, "storage", i, at, &[]).unwrap();
        if i % 10 == 9 {
            let report = ingest.flush().await;
            assert_eq!(report.retained, 0);
        }
    }
    assert_eq!(day_total(&m, &scope, "tokens").await, (0..50).sum::<i64>());
    assert_eq!(day_total(&m, &scope, "users").await, 7);
    assert_eq!(day_total(&m, &scope, "storage").await, 48);
    let day = Granularity::Day.floor(NOW);
    let (_, points) = m
        .usage(
            &scope,
            "tokens",
            day,
            day + Duration::DAY,
            Granularity::Minute,
            vec![DimensionName::new("model").unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(points.len(), 6);
    assert_eq!(
        points.iter().map(|p| p.value).sum::<i64>(),
        (0..50).sum::<i64>()
    );
    // The same rows applied directly add up too, repeated keys included.
    let other = create_tenant(&f).await;
    let mut batch = crate::RollupBatch::new();
    for i in 0..3 {
        let event = m
            .validate(
                &other,
                NewEvent::new("calls", 1, NOW, key(&format!("x{i}"))),
            )
            .unwrap();
        batch.add_event(&event);
    }
    let rows = batch.into_rollups();
    let doubled: Vec<_> = rows.iter().chain(rows.iter()).cloned().collect();
    f.store.apply(other.tenant_id(), &doubled).await.unwrap();
    assert_eq!(day_total(&m, &other, "calls").await, 6);
}

/// Events added from many threads at once all arrive, through the
/// interval flusher and its final flush on shutdown.
pub async fn buffered_ingest_arrives_whole(f: Fixture) {
    let m = metering(&f);
    let tenants = [create_tenant(&f).await, create_tenant(&f).await];
    let ingest = m.buffered(
        BufferConfig::default()
            .with_shards(4)
            .with_flush_every(std::time::Duration::from_millis(20)),
    );
    let flusher = ingest.spawn_flusher();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let ingest = ingest.clone();
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    let scope = tenants[i % 2];
                    let at = NOW - Duration::seconds((i % 90) as i64);
                    ingest.add(&scope, "calls", 1, at, &[]).unwrap();
                    ingest.add(&scope, "tokens", t + 1, at, &[]).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let report = flusher.shutdown().await;
    assert_eq!(report.retained, 0);
    for scope in &tenants {
        assert_eq!(day_total(&m, scope, "calls").await, 4_000);
        assert_eq!(
            day_total(&m, scope, "tokens").await,
            1_000 * (1 + 2 + 3 + 4)
        );
    }
    // Invalid events are refused at once, with the durable path's errors.
    assert!(ingest.add(&tenants[0], "nope", 1, NOW, &[]).is_err());
    assert!(ingest.add(&tenants[0], "calls", -1, NOW, &[]).is_err());
    assert!(
        ingest
            .add(&tenants[0], "calls", 1, NOW + Duration::hours(1), &[])
            .is_err()
    );
}

/// One tenant's usage is invisible to another.
pub async fn tenant_isolation(f: Fixture) {
    let m = metering(&f);
    let a = create_tenant(&f).await;
    let b = create_tenant(&f).await;
    for i in 0..3 {
        let recorded = m
            .record(&a, NewEvent::new("users", i, NOW, key(&format!("k{i}"))))
            .await
            .unwrap();
        assert_eq!(recorded, Recorded::Counted);
    }
    assert_eq!(day_total(&m, &a, "users").await, 3);
    assert_eq!(day_total(&m, &b, "users").await, 0);
    assert_eq!(day_total(&m, &b, "calls").await, 0);
}

/// Events and batches for a tenant that does not exist are refused.
pub async fn unknown_tenants_are_refused(f: Fixture) {
    let m = metering(&f);
    let ghost = TenantScope::assume_resolved(TenantId::new());
    let err = m
        .record(&ghost, NewEvent::new("calls", 1, NOW, key("k")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IngestError::Store(MeteringStoreError::TenantNotFound)),
        "{err:?}"
    );
    let ingest = m.buffered(BufferConfig::default());
    ingest.add(&ghost, "calls", 1, NOW, &[]).unwrap();
    let report = ingest.flush().await;
    assert_eq!((report.dropped, report.retained), (1, 0));
}
