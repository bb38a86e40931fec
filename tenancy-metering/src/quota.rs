//! Quotas: per-period limits on a meter, soft (recorded, with hooks as
//! thresholds are crossed) or hard (refused before the work is done).
//!
//! A hard limit is an atomic check-and-consume in the [`QuotaStore`]: the
//! counter moves only if it stays within the limit, in one step, so
//! concurrent callers never overshoot ("check, then count" does).
//! [`QuotaLeases`] takes quota from the store in chunks so a hot tenant
//! pays no round trip per call; the store's counter then holds what was
//! leased, which never exceeds the limit, and each replica admits only
//! from its lease, so the total admitted never exceeds the limit either.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tenancy_core::{BoxError, Clock, StoreError, SystemClock, TenantId, TenantScope};
use time::OffsetDateTime;

use crate::meter::MeterName;

/// Whether crossing a limit refuses or only records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Usage past the limit is recorded and reported through hooks.
    Soft,
    /// Usage past the limit is refused.
    Hard,
}

/// A tenant's limit on one meter for the current period, as the plan (or
/// an override) sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The most usage the period allows.
    pub amount: u64,
    /// Soft or hard.
    pub kind: LimitKind,
    /// When the period started (its usage counter is keyed by this, so a
    /// new period starts from zero).
    pub period_start: OffsetDateTime,
    /// When the period ends and the counter resets.
    pub period_end: OffsetDateTime,
}

/// Why a limit could not be read.
#[derive(Debug, thiserror::Error)]
#[error("limit source failed")]
pub struct LimitError(#[source] pub BoxError);

/// Where limits come from: tenancy-billing's entitlements (wired by the
/// builder), or a host's own table. Periods follow the subscription's
/// anchor, not the calendar month.
#[async_trait]
pub trait LimitSource: Send + Sync + 'static {
    /// `tenant_id`'s limit on `meter` for the period holding `now`; `None`
    /// when the meter is unlimited for the tenant.
    async fn limit(
        &self,
        tenant_id: TenantId,
        meter: &MeterName,
        now: OffsetDateTime,
    ) -> Result<Option<Limit>, LimitError>;
}

/// Limits held in memory, for tests and hosts with static plans.
#[derive(Debug, Default)]
pub struct StaticLimits {
    limits: Mutex<HashMap<(TenantId, MeterName), Limit>>,
}

impl StaticLimits {
    /// No limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces: a plan change) a tenant's limit on a meter.
    pub fn set(&self, tenant_id: TenantId, meter: MeterName, limit: Limit) {
        self.limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((tenant_id, meter), limit);
    }
}

#[async_trait]
impl LimitSource for StaticLimits {
    async fn limit(
        &self,
        tenant_id: TenantId,
        meter: &MeterName,
        _now: OffsetDateTime,
    ) -> Result<Option<Limit>, LimitError> {
        Ok(self
            .limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(tenant_id, meter.clone()))
            .copied())
    }
}

/// The counter of one tenant, meter and period.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuotaKey {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The meter.
    pub meter: MeterName,
    /// The period's start (microseconds, UTC).
    pub period_start: OffsetDateTime,
}

impl QuotaKey {
    /// The key of `limit`'s period.
    pub fn new(tenant_id: TenantId, meter: MeterName, period_start: OffsetDateTime) -> Self {
        Self {
            tenant_id,
            meter,
            period_start: tenancy_core::truncate_to_micros(period_start),
        }
    }
}

/// The answer of an atomic check-and-consume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumption {
    /// Whether the amount was added (it fitted under the cap).
    pub admitted: bool,
    /// The counter after the call (unchanged when not admitted).
    pub used: u64,
}

/// What a quota store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaStoreError {
    /// The tenant does not exist.
    #[error("tenant not found")]
    TenantNotFound,
    /// An amount or cap beyond what counters hold (`i64::MAX`).
    #[error("amount {0} is out of range")]
    OutOfRange(u64),
    /// The backend failed or could not be reached; retrying may help.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Usage counters per tenant, meter and period with an atomic
/// check-and-consume. Every adapter passes the quota conformance suite.
#[async_trait]
pub trait QuotaStore: Send + Sync + 'static {
    /// Adds `amount` to the counter if the result is at most `cap`, in one
    /// atomic step; otherwise changes nothing.
    async fn consume(
        &self,
        key: &QuotaKey,
        amount: u64,
        cap: u64,
    ) -> Result<Consumption, QuotaStoreError>;

    /// Takes `amount` back (unused leased quota), never below zero.
    async fn release(&self, key: &QuotaKey, amount: u64) -> Result<(), QuotaStoreError>;

    /// The counter.
    async fn used(&self, key: &QuotaKey) -> Result<u64, QuotaStoreError>;
}

/// The most a counter holds: Postgres `bigint` and Redis integers are
/// signed 64-bit.
pub const MAX_COUNTER: u64 = i64::MAX as u64;

pub(crate) fn check_range(amount: u64) -> Result<i64, QuotaStoreError> {
    i64::try_from(amount).map_err(|_| QuotaStoreError::OutOfRange(amount))
}

/// Quota counters in process memory (feature-independent: one process
/// only).
#[derive(Debug, Default, Clone)]
pub struct MemoryQuotaStore {
    counters: Arc<Mutex<HashMap<QuotaKey, u64>>>,
}

impl MemoryQuotaStore {
    /// No counters.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl QuotaStore for MemoryQuotaStore {
    async fn consume(
        &self,
        key: &QuotaKey,
        amount: u64,
        cap: u64,
    ) -> Result<Consumption, QuotaStoreError> {
        check_range(amount)?;
        let cap = cap.min(MAX_COUNTER);
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let used = counters.entry(key.clone()).or_default();
        match used.checked_add(amount).filter(|after| *after <= cap) {
            Some(after) => {
                *used = after;
                Ok(Consumption {
                    admitted: true,
                    used: after,
                })
            }
            None => Ok(Consumption {
                admitted: false,
                used: *used,
            }),
        }
    }

    async fn release(&self, key: &QuotaKey, amount: u64) -> Result<(), QuotaStoreError> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(used) = counters.get_mut(key) {
            *used = used.saturating_sub(amount);
        }
        Ok(())
    }

    async fn used(&self, key: &QuotaKey) -> Result<u64, QuotaStoreError> {
        Ok(self
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied()
            .unwrap_or(0))
    }
}

/// A threshold crossed by one consumption: reported once per period and
/// threshold (the call whose consumption crossed it reports it, on
/// whichever replica).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdCrossed {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The meter.
    pub meter: MeterName,
    /// The threshold, in percent of the limit (80, 100, …).
    pub percent: u8,
    /// The counter after the consumption.
    pub used: u64,
    /// The limit.
    pub limit: Limit,
}

/// Told when usage crosses a threshold of a limit (for a warning email, an
/// audit event, a webhook). Called on the consuming task: keep it quick
/// and hand slow work to a queue.
pub trait QuotaHook: Send + Sync + 'static {
    /// A threshold was crossed.
    fn crossed(&self, event: &ThresholdCrossed);
}

/// The answer of [`Quotas::consume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaDecision {
    /// No limit applies to the meter for the tenant.
    Unlimited,
    /// The usage was counted (past a soft limit, too).
    Allowed {
        /// The counter after this call.
        used: u64,
        /// The limit.
        limit: Limit,
    },
    /// A hard limit refused the usage; nothing was counted.
    Refused {
        /// The counter (unchanged).
        used: u64,
        /// The limit; it resets at `limit.period_end`.
        limit: Limit,
    },
}

impl QuotaDecision {
    /// Whether the work may proceed.
    pub fn allowed(&self) -> bool {
        !matches!(self, QuotaDecision::Refused { .. })
    }
}

/// Why a quota check failed (neither allowed nor refused).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// The limit source failed.
    #[error(transparent)]
    Limits(#[from] LimitError),
    /// The quota store failed.
    #[error(transparent)]
    Store(#[from] QuotaStoreError),
}

/// Limits from a [`LimitSource`] enforced on a [`QuotaStore`], with hooks
/// at thresholds (default 80% and 100%). Cheap to clone.
#[derive(Clone)]
pub struct Quotas {
    limits: Arc<dyn LimitSource>,
    store: Arc<dyn QuotaStore>,
    hooks: Vec<Arc<dyn QuotaHook>>,
    thresholds: Vec<u8>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl Quotas {
    /// Limits of `limits` on the counters of `store`.
    pub fn new(limits: Arc<dyn LimitSource>, store: Arc<dyn QuotaStore>) -> Self {
        Self {
            limits,
            store,
            hooks: Vec::new(),
            thresholds: vec![80, 100],
            clock: Arc::new(SystemClock),
        }
    }

    /// Calls `hook` when a threshold is crossed.
    pub fn with_hook(mut self, hook: Arc<dyn QuotaHook>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Reports these thresholds, in percent of the limit.
    pub fn with_thresholds(mut self, mut percents: Vec<u8>) -> Self {
        percents.sort_unstable();
        percents.dedup();
        self.thresholds = percents;
        self
    }

    /// Uses `clock` to find the current period.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Counts `amount` of `meter` for the scope's tenant: a hard limit
    /// admits it only if it fits (atomically), a soft limit always.
    pub async fn consume(
        &self,
        scope: &TenantScope,
        meter: &MeterName,
        amount: u64,
    ) -> Result<QuotaDecision, QuotaError> {
        let tenant_id = scope.tenant_id();
        let Some(limit) = self
            .limits
            .limit(tenant_id, meter, self.clock.now())
            .await?
        else {
            return Ok(QuotaDecision::Unlimited);
        };
        let key = QuotaKey::new(tenant_id, meter.clone(), limit.period_start);
        let cap = match limit.kind {
            LimitKind::Hard => limit.amount,
            LimitKind::Soft => MAX_COUNTER,
        };
        let consumption = self.store.consume(&key, amount, cap).await?;
        if !consumption.admitted {
            return Ok(QuotaDecision::Refused {
                used: consumption.used,
                limit,
            });
        }
        let before = consumption.used.saturating_sub(amount);
        for &percent in &self.thresholds {
            let mark = u128::from(limit.amount) * u128::from(percent);
            if u128::from(before) * 100 < mark && mark <= u128::from(consumption.used) * 100 {
                let event = ThresholdCrossed {
                    tenant_id,
                    meter: meter.clone(),
                    percent,
                    used: consumption.used,
                    limit,
                };
                for hook in &self.hooks {
                    hook.crossed(&event);
                }
            }
        }
        Ok(QuotaDecision::Allowed {
            used: consumption.used,
            limit,
        })
    }
}

/// Hard-limit quota leased from a [`QuotaStore`] in chunks, one lease per
/// replica: most checks are answered from the local lease without a round
/// trip.
///
/// Why the total never exceeds the limit: the store's counter is the sum
/// of what every replica leased minus what they released, and a lease is
/// an atomic check-and-consume capped at the limit, so the counter never
/// exceeds the limit. A replica admits only from what it leased and has
/// not yet admitted or released, so the total admitted is at most the
/// counter. The price: quota leased by one replica and unused is not
/// available to the others until [`release_all`](Self::release_all)
/// (call it on shutdown and at period ends), so with `r` replicas a
/// tenant may be refused up to `(r - 1) × chunk` before the limit.
#[derive(Clone)]
pub struct QuotaLeases {
    store: Arc<dyn QuotaStore>,
    chunk: u64,
    /// foldhash: the local check is a hash lookup under a short lock, and
    /// keys are the host's tenants and meters.
    held: Arc<Mutex<HashMap<QuotaKey, u64, foldhash::fast::RandomState>>>,
}

impl std::fmt::Debug for QuotaLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaLeases")
            .field("chunk", &self.chunk)
            .finish_non_exhaustive()
    }
}

impl QuotaLeases {
    /// Leases of `chunk` (at least 1) from `store`.
    pub fn new(store: Arc<dyn QuotaStore>, chunk: u64) -> Self {
        Self {
            store,
            chunk: chunk.max(1),
            held: Arc::default(),
        }
    }

    /// Admits `amount` from the local lease if it holds enough, with no
    /// round trip; `false` means ask [`consume`](Self::consume).
    pub fn try_local(&self, key: &QuotaKey, amount: u64) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.get_mut(key) {
            Some(left) if *left >= amount => {
                *left -= amount;
                true
            }
            _ => false,
        }
    }

    /// Admits `amount` against the hard limit `limit`: from the local
    /// lease, else by leasing a chunk (or, near the limit, what is left).
    /// `false`: refused, nothing counted.
    pub async fn consume(
        &self,
        key: &QuotaKey,
        amount: u64,
        limit: u64,
    ) -> Result<bool, QuotaStoreError> {
        if self.try_local(key, amount) {
            return Ok(true);
        }
        let mut want = self.chunk.max(amount);
        // Near the limit, lease what is left; a few tries, as other
        // replicas move the counter between them.
        for _ in 0..4 {
            let got = self.store.consume(key, want, limit).await?;
            if got.admitted {
                let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
                *held.entry(key.clone()).or_default() += want - amount;
                return Ok(true);
            }
            let left = limit.saturating_sub(got.used);
            if left < amount {
                return Ok(false);
            }
            want = left.min(want);
        }
        Ok(false)
    }

    /// What the local lease holds for `key`.
    pub fn held(&self, key: &QuotaKey) -> u64 {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Returns every unused lease to the store. A lease whose return fails
    /// is kept (and the error answered); nothing is lost.
    pub async fn release_all(&self) -> Result<(), QuotaStoreError> {
        let leases: Vec<(QuotaKey, u64)> = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut failure = None;
        for (key, n) in leases {
            if let Err(e) = self.store.release(&key, n).await {
                *self
                    .held
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(key)
                    .or_default() += n;
                failure = Some(e);
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::datetime;

    #[tokio::test]
    async fn memory_consume_is_capped() {
        let store = MemoryQuotaStore::new();
        let key = QuotaKey::new(
            TenantId::new(),
            MeterName::new("m").unwrap(),
            datetime!(2030-01-01 0:00 UTC),
        );
        assert!(store.consume(&key, 3, 5).await.unwrap().admitted);
        let refused = store.consume(&key, 3, 5).await.unwrap();
        assert_eq!(
            refused,
            Consumption {
                admitted: false,
                used: 3
            }
        );
        assert!(matches!(
            store.consume(&key, u64::MAX, u64::MAX).await,
            Err(QuotaStoreError::OutOfRange(_))
        ));
        store.release(&key, 10).await.unwrap();
        assert_eq!(store.used(&key).await.unwrap(), 0);
    }
}
