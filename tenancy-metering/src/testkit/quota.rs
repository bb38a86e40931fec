//! Conformance suites for [`QuotaStore`]s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tenancy_core::{Backend, TenantScope};
use time::Duration;
use time::macros::datetime;

use crate::{
    Limit, LimitKind, MeterName, QuotaDecision, QuotaHook, QuotaKey, QuotaLeases, QuotaStore,
    Quotas, StaticLimits, ThresholdCrossed,
};

/// What a quota suite runs against.
#[derive(Clone)]
pub struct QuotaFixture {
    /// Holds tenants (stores with foreign keys need them to exist).
    pub backend: Arc<dyn Backend>,
    /// The store under test.
    pub store: Arc<dyn QuotaStore>,
}

impl std::fmt::Debug for QuotaFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaFixture").finish_non_exhaustive()
    }
}

/// A quota fixture over a fresh `MemoryBackend` and
/// [`MemoryQuotaStore`](crate::MemoryQuotaStore).
#[cfg(feature = "memory")]
pub async fn memory() -> Option<QuotaFixture> {
    Some(QuotaFixture {
        backend: Arc::new(tenancy_core::MemoryBackend::new()),
        store: Arc::new(crate::MemoryQuotaStore::new()),
    })
}

/// Generates one `#[tokio::test]` per quota suite. `$fixture` evaluates to
/// a future of `Option<QuotaFixture>`; `None` skips the test.
#[macro_export]
macro_rules! quota_conformance_tests {
    ($fixture:expr) => {
        $crate::quota_conformance_tests!(@suites $fixture;
            hard_limit_admits_exactly_n, soft_limits_call_hooks_once, periods_reset_and_upgrades_apply,
            leases_never_exceed_the_limit, releases_stop_at_zero
        );
    };
    (@suites $fixture:expr; $($suite:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $suite() {
                if let Some(fixture) = $fixture.await {
                    $crate::testkit::quota::$suite(fixture).await;
                }
            }
        )+
    };
}

const PERIOD: time::OffsetDateTime = datetime!(2030-01-01 0:00 UTC);

fn limit(amount: u64, kind: LimitKind) -> Limit {
    Limit {
        amount,
        kind,
        period_start: PERIOD,
        period_end: PERIOD + Duration::days(31),
    }
}

fn meter() -> MeterName {
    MeterName::new("api_calls").unwrap()
}

async fn tenant(f: &QuotaFixture) -> TenantScope {
    super::create_tenant_in(&f.backend).await
}

/// Many concurrent callers against a hard limit of N: exactly N admitted.
pub async fn hard_limit_admits_exactly_n(f: QuotaFixture) {
    let scope = tenant(&f).await;
    let limits = Arc::new(StaticLimits::new());
    limits.set(scope.tenant_id(), meter(), limit(50, LimitKind::Hard));
    let quotas = Quotas::new(limits, Arc::clone(&f.store));
    let admitted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let quotas = quotas.clone();
            let admitted = Arc::clone(&admitted);
            tokio::spawn(async move {
                for _ in 0..25 {
                    match quotas.consume(&scope, &meter(), 1).await.unwrap() {
                        QuotaDecision::Allowed { .. } => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        QuotaDecision::Refused { used, limit } => {
                            assert_eq!((used, limit.amount), (50, 50));
                        }
                        QuotaDecision::Unlimited => panic!("limit not applied"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), 50);
    let key = QuotaKey::new(scope.tenant_id(), meter(), PERIOD);
    assert_eq!(f.store.used(&key).await.unwrap(), 50);
    // An amount larger than what is left is refused whole.
    let other = tenant(&f).await;
    let key = QuotaKey::new(other.tenant_id(), meter(), PERIOD);
    assert!(f.store.consume(&key, 8, 10).await.unwrap().admitted);
    let refused = f.store.consume(&key, 3, 10).await.unwrap();
    assert!(!refused.admitted);
    assert_eq!(refused.used, 8);
    assert!(!f.store.consume(&key, 11, 10).await.unwrap().admitted);
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(u8, u64)>>);

impl QuotaHook for Recorder {
    fn crossed(&self, event: &ThresholdCrossed) {
        self.0.lock().unwrap().push((event.percent, event.used));
    }
}

/// A soft limit counts past the limit and reports 80% and 100% once each,
/// even with concurrent callers.
pub async fn soft_limits_call_hooks_once(f: QuotaFixture) {
    let scope = tenant(&f).await;
    let limits = Arc::new(StaticLimits::new());
    limits.set(scope.tenant_id(), meter(), limit(20, LimitKind::Soft));
    let recorder = Arc::new(Recorder::default());
    let quotas = Quotas::new(limits, Arc::clone(&f.store)).with_hook(recorder.clone());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let quotas = quotas.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    let decision = quotas.consume(&scope, &meter(), 1).await.unwrap();
                    assert!(decision.allowed());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut seen = recorder.0.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, vec![(80, 16), (100, 20)]);
    let key = QuotaKey::new(scope.tenant_id(), meter(), PERIOD);
    assert_eq!(f.store.used(&key).await.unwrap(), 40);
}

/// A new period starts from zero; a raised limit (plan upgrade) admits
/// more at once; an unlimited meter is not counted.
pub async fn periods_reset_and_upgrades_apply(f: QuotaFixture) {
    let scope = tenant(&f).await;
    let limits = Arc::new(StaticLimits::new());
    limits.set(scope.tenant_id(), meter(), limit(2, LimitKind::Hard));
    let quotas = Quotas::new(limits.clone(), Arc::clone(&f.store));
    let calls = meter();
    let consume = || quotas.consume(&scope, &calls, 1);
    assert!(consume().await.unwrap().allowed());
    assert!(consume().await.unwrap().allowed());
    assert!(!consume().await.unwrap().allowed());
    limits.set(scope.tenant_id(), meter(), limit(3, LimitKind::Hard));
    assert!(consume().await.unwrap().allowed());
    assert!(!consume().await.unwrap().allowed());
    let mut next = limit(3, LimitKind::Hard);
    next.period_start = PERIOD + Duration::days(31);
    next.period_end = PERIOD + Duration::days(59);
    limits.set(scope.tenant_id(), meter(), next);
    match consume().await.unwrap() {
        QuotaDecision::Allowed { used, .. } => assert_eq!(used, 1),
        other => panic!("{other:?}"),
    }
    let other_meter = MeterName::new("storage").unwrap();
    assert_eq!(
        quotas.consume(&scope, &other_meter, 1).await.unwrap(),
        QuotaDecision::Unlimited
    );
}

/// Three replicas leasing chunks of 7 against a limit of 100 under
/// concurrent demand: never more than 100 admitted in total, the store's
/// counter equals what was admitted plus what is still leased, and once
/// leases are returned the rest of the limit can be had, exactly.
pub async fn leases_never_exceed_the_limit(f: QuotaFixture) {
    let scope = tenant(&f).await;
    let key = QuotaKey::new(scope.tenant_id(), meter(), PERIOD);
    let replicas: Vec<QuotaLeases> = (0..3)
        .map(|_| QuotaLeases::new(Arc::clone(&f.store), 7))
        .collect();
    let admitted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for replica in &replicas {
        for _ in 0..2 {
            let replica = replica.clone();
            let admitted = Arc::clone(&admitted);
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..40 {
                    if replica.consume(&key, 1, 100).await.unwrap() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total = admitted.load(Ordering::Relaxed);
    let held: u64 = replicas.iter().map(|r| r.held(&key)).sum();
    assert!(total <= 100, "admitted {total}");
    assert_eq!(f.store.used(&key).await.unwrap(), total + held);
    for replica in &replicas {
        replica.release_all().await.unwrap();
    }
    assert_eq!(f.store.used(&key).await.unwrap(), total);
    let mut more = 0;
    while replicas[0].consume(&key, 1, 100).await.unwrap() {
        more += 1;
    }
    assert_eq!(total + more, 100);
}

/// Releasing more than was taken stops at zero.
pub async fn releases_stop_at_zero(f: QuotaFixture) {
    let scope = tenant(&f).await;
    let key = QuotaKey::new(scope.tenant_id(), meter(), PERIOD);
    f.store.release(&key, 5).await.unwrap();
    assert_eq!(f.store.used(&key).await.unwrap(), 0);
    assert!(f.store.consume(&key, 4, 10).await.unwrap().admitted);
    f.store.release(&key, 9).await.unwrap();
    assert_eq!(f.store.used(&key).await.unwrap(), 0);
    assert!(f.store.consume(&key, 10, 10).await.unwrap().admitted);
}
