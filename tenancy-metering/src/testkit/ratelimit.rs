//! Conformance suites for [`RateLimitStore`]s. They run on real time
//! (Redis uses its own clock), with intervals of tens of milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{RateLimit, RateLimitStore};

/// What a rate-limit suite runs against.
#[derive(Clone)]
pub struct RateFixture {
    /// The store under test.
    pub store: Arc<dyn RateLimitStore>,
}

impl std::fmt::Debug for RateFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateFixture").finish_non_exhaustive()
    }
}

/// A fixture over a [`MemoryRateLimitStore`](crate::MemoryRateLimitStore).
pub async fn memory() -> Option<RateFixture> {
    Some(RateFixture {
        store: Arc::new(crate::MemoryRateLimitStore::new()),
    })
}

/// Generates one `#[tokio::test]` per rate-limit suite. `$fixture`
/// evaluates to a future of `Option<RateFixture>`; `None` skips the test.
#[macro_export]
macro_rules! rate_limit_conformance_tests {
    ($fixture:expr) => {
        $crate::rate_limit_conformance_tests!(@suites $fixture;
            burst_then_refusal_then_recovery, keys_are_independent, concurrent_checks_admit_the_burst,
            costs_count
        );
    };
    (@suites $fixture:expr; $($suite:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $suite() {
                if let Some(fixture) = $fixture.await {
                    $crate::testkit::ratelimit::$suite(fixture).await;
                }
            }
        )+
    };
}

fn key(name: &str) -> String {
    format!("{name}:{}", uuid::Uuid::now_v7().simple())
}

/// A burst is admitted with the remaining count going down, the next
/// request is refused with a `retry_after` of about one interval, and it
/// is admitted once that has passed.
pub async fn burst_then_refusal_then_recovery(f: RateFixture) {
    // One request per 500 ms: slow enough that a loaded machine does not
    // refill the bucket between the checks of the burst.
    let limit = RateLimit::new(5, Duration::from_millis(2_500)).unwrap();
    let k = key("burst");
    for left in (0..5).rev() {
        let d = f.store.check(&k, &limit, 1).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, left);
    }
    let refused = f.store.check(&k, &limit, 1).await.unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after > Duration::ZERO);
    assert!(
        refused.retry_after <= Duration::from_millis(500),
        "{refused:?}"
    );
    assert!(refused.reset_after <= Duration::from_millis(2_500));
    assert!(
        refused.reset_after >= Duration::from_millis(2_000),
        "{refused:?}"
    );
    tokio::time::sleep(refused.retry_after + Duration::from_millis(5)).await;
    let again = f.store.check(&k, &limit, 1).await.unwrap();
    assert!(again.allowed, "{again:?}");
}

/// One key's use does not touch another's.
pub async fn keys_are_independent(f: RateFixture) {
    let limit = RateLimit::new(1, Duration::from_secs(60)).unwrap();
    let (a, b) = (key("a"), key("b"));
    assert!(f.store.check(&a, &limit, 1).await.unwrap().allowed);
    assert!(!f.store.check(&a, &limit, 1).await.unwrap().allowed);
    assert!(f.store.check(&b, &limit, 1).await.unwrap().allowed);
}

/// Concurrent checks admit exactly the burst.
pub async fn concurrent_checks_admit_the_burst(f: RateFixture) {
    let limit = RateLimit::new(10, Duration::from_secs(100)).unwrap();
    let k = Arc::new(key("concurrent"));
    let admitted = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (store, k, admitted) =
                (Arc::clone(&f.store), Arc::clone(&k), Arc::clone(&admitted));
            tokio::spawn(async move {
                for _ in 0..10 {
                    if store.check(&k, &limit, 1).await.unwrap().allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), 10);
}

/// A request of cost `c` takes `c` places; a cost above the burst never
/// fits.
pub async fn costs_count(f: RateFixture) {
    let limit = RateLimit::new(5, Duration::from_secs(100)).unwrap();
    let k = key("cost");
    let d = f.store.check(&k, &limit, 3).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 2);
    assert!(!f.store.check(&k, &limit, 3).await.unwrap().allowed);
    assert!(f.store.check(&k, &limit, 2).await.unwrap().allowed);
    assert!(!f.store.check(&key("big"), &limit, 6).await.unwrap().allowed);
}
