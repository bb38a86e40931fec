//! Rate limits: GCRA (the generic cell rate algorithm) per key, in process
//! ([`MemoryRateLimitStore`]) or shared by every replica (the Redis store,
//! feature `redis`), behind one [`RateLimitStore`] trait.
//!
//! GCRA keeps one number per key, the theoretical arrival time (TAT): a
//! request of cost `c` is admitted when `TAT + c·T − burst·T ≤ now`, where
//! `T` is the emission interval (period ÷ requests), and moves the TAT to
//! `max(TAT, now) + c·T`. A key may send `burst` requests at once, then one
//! per `T`.
//!
//! When the store fails (Redis down), each limit says what happens
//! ([`OnStoreError`]): fail open (admit, and say so) or fail closed
//! (refuse). [`RateLimiter`] applies that choice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::{Clock, StoreError, SystemClock};

/// What a rate-limited call does when the store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Admit the request (availability over protection: a login form
    /// should stay usable while Redis restarts).
    Open,
    /// Refuse the request (protection over availability: an expensive or
    /// abusable endpoint).
    Closed,
}

/// Why a rate limit could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// A limit of zero requests, a burst of zero, or a period too short to
    /// space the requests by at least a microsecond.
    #[error(
        "a rate limit needs at least one request per period, a burst of at least one, and a period of at least one microsecond per request"
    )]
    InvalidLimit,
}

/// A GCRA limit: `requests` per `period`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    requests: u32,
    period: Duration,
    burst: u32,
    on_store_error: OnStoreError,
}

impl RateLimit {
    /// `requests` per `period`, with a burst of `requests`, failing closed.
    pub fn new(requests: u32, period: Duration) -> Result<Self, RateLimitError> {
        Self {
            requests,
            period,
            burst: requests,
            on_store_error: OnStoreError::Closed,
        }
        .checked()
    }

    /// Allows up to `burst` requests at once.
    pub fn with_burst(mut self, burst: u32) -> Result<Self, RateLimitError> {
        self.burst = burst;
        self.checked()
    }

    /// What to do when the store fails.
    pub fn on_store_error(mut self, choice: OnStoreError) -> Self {
        self.on_store_error = choice;
        self
    }

    fn checked(self) -> Result<Self, RateLimitError> {
        if self.requests == 0 || self.burst == 0 || self.interval_micros() < 1 {
            return Err(RateLimitError::InvalidLimit);
        }
        Ok(self)
    }

    /// Requests per period.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The burst.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The store-failure choice.
    pub fn store_error_choice(&self) -> OnStoreError {
        self.on_store_error
    }

    /// The emission interval `T`, in microseconds.
    pub fn interval_micros(&self) -> i64 {
        let period = i64::try_from(self.period.as_micros()).unwrap_or(i64::MAX);
        period / i64::from(self.requests.max(1))
    }
}

/// The answer of a rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Requests of cost 1 the key may still send at once.
    pub remaining: u32,
    /// How long until a request of the same cost would be admitted (zero
    /// when admitted): the `Retry-After`.
    pub retry_after: Duration,
    /// How long until the key is back to its full burst.
    pub reset_after: Duration,
    /// The store could not answer and the limit's [`OnStoreError`] choice
    /// decided.
    pub degraded: bool,
}

/// The state of a check in GCRA: pure arithmetic shared by every store
/// (the Redis script does the same in Lua).
pub(crate) fn gcra(
    limit: &RateLimit,
    cost: u32,
    now: i64,
    tat: i64,
) -> (RateDecision, Option<i64>) {
    let interval = limit.interval_micros();
    let burst = i64::from(limit.burst).saturating_mul(interval);
    let tat = tat.max(now);
    let new_tat = tat.saturating_add(interval.saturating_mul(i64::from(cost)));
    let allow_at = new_tat - burst;
    let micros = |us: i64| Duration::from_micros(u64::try_from(us.max(0)).unwrap_or(0));
    let remaining = |tat_after: i64| {
        u32::try_from(((burst - (tat_after - now)) / interval).max(0)).unwrap_or(u32::MAX)
    };
    if now < allow_at {
        return (
            RateDecision {
                allowed: false,
                remaining: remaining(tat),
                retry_after: micros(allow_at - now),
                reset_after: micros(tat - now),
                degraded: false,
            },
            None,
        );
    }
    (
        RateDecision {
            allowed: true,
            remaining: remaining(new_tat),
            retry_after: Duration::ZERO,
            reset_after: micros(new_tat - now),
            degraded: false,
        },
        Some(new_tat),
    )
}

/// Where GCRA state lives. Every adapter passes the rate-limit conformance
/// suite.
#[async_trait]
pub trait RateLimitStore: Send + Sync + 'static {
    /// Checks (and, if admitted, counts) a request of `cost` for `key`
    /// under `limit`, atomically.
    async fn check(
        &self,
        key: &str,
        limit: &RateLimit,
        cost: u32,
    ) -> Result<RateDecision, StoreError>;
}

/// GCRA state in process memory: one replica's view. Keys whose bucket is
/// full again are dropped by [`retain_recent`](Self::retain_recent), so
/// the map does not grow without bound.
#[derive(Clone)]
pub struct MemoryRateLimitStore {
    tats: Arc<Mutex<HashMap<String, i64>>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryRateLimitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRateLimitStore")
            .finish_non_exhaustive()
    }
}

impl Default for MemoryRateLimitStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRateLimitStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self {
            tats: Arc::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now_micros(&self) -> i64 {
        i64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
    }

    /// The check, without an await: for callers on a hot path.
    pub fn check_now(&self, key: &str, limit: &RateLimit, cost: u32) -> RateDecision {
        let now = self.now_micros();
        let mut tats = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = tats.get(key).copied().unwrap_or(now);
        let (decision, new_tat) = gcra(limit, cost, now, tat);
        if let Some(new_tat) = new_tat {
            match tats.get_mut(key) {
                Some(t) => *t = new_tat,
                None => {
                    tats.insert(key.to_owned(), new_tat);
                }
            }
        }
        decision
    }

    /// Forgets keys whose bucket is full again (their state equals a new
    /// key's).
    pub fn retain_recent(&self) {
        let now = self.now_micros();
        self.tats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, tat| *tat > now);
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.tats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl RateLimitStore for MemoryRateLimitStore {
    async fn check(
        &self,
        key: &str,
        limit: &RateLimit,
        cost: u32,
    ) -> Result<RateDecision, StoreError> {
        Ok(self.check_now(key, limit, cost))
    }
}

/// A [`RateLimitStore`] with each limit's store-failure choice applied.
#[derive(Clone)]
pub struct RateLimiter {
    store: Arc<dyn RateLimitStore>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Limits kept in `store`.
    pub fn new(store: Arc<dyn RateLimitStore>) -> Self {
        Self { store }
    }

    /// Checks a request of `cost` for `key`. A store failure never
    /// surfaces: it becomes the limit's [`OnStoreError`] choice, marked
    /// `degraded` and logged (a fail-closed refusal asks to retry in a
    /// second).
    pub async fn check(&self, key: &str, limit: &RateLimit, cost: u32) -> RateDecision {
        match self.store.check(key, limit, cost).await {
            Ok(decision) => decision,
            Err(error) => {
                let allowed = limit.on_store_error == OnStoreError::Open;
                tracing::warn!(error = %error, allowed, "rate-limit store failed; limit's store-error choice applied");
                RateDecision {
                    allowed,
                    remaining: 0,
                    retry_after: if allowed {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(1)
                    },
                    reset_after: Duration::ZERO,
                    degraded: true,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn gcra_admits_a_burst_then_one_per_interval() {
        let limit = RateLimit::new(10, Duration::from_secs(1))
            .unwrap()
            .with_burst(3)
            .unwrap();
        assert_eq!(limit.interval_micros(), 100_000);
        let mut tat = 0;
        let now = 1_000_000;
        for left in [2, 1, 0] {
            let (d, t) = gcra(&limit, 1, now, tat);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
            tat = t.unwrap();
        }
        let (d, t) = gcra(&limit, 1, now, tat);
        assert!(!d.allowed && t.is_none());
        assert_eq!(d.retry_after, Duration::from_millis(100));
        assert_eq!(d.reset_after, Duration::from_millis(300));
        let (d, _) = gcra(&limit, 1, now + 100_000, tat);
        assert!(d.allowed);
        let (d, _) = gcra(&limit, 4, now + 10_000_000, tat);
        assert!(!d.allowed, "a cost above the burst never fits");
    }

    #[test]
    fn limits_are_checked() {
        assert!(RateLimit::new(0, Duration::from_secs(1)).is_err());
        assert!(
            RateLimit::new(5, Duration::from_secs(1))
                .unwrap()
                .with_burst(0)
                .is_err()
        );
        assert!(RateLimit::new(2_000_000, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn memory_forgets_full_buckets() {
        let store = MemoryRateLimitStore::new();
        let limit = RateLimit::new(10, Duration::from_millis(1)).unwrap();
        assert!(store.check_now("k", &limit, 1).allowed);
        std::thread::sleep(Duration::from_millis(5));
        store.retain_recent();
        assert!(store.is_empty());
    }
}
