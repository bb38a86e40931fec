//! Export to billing: usage of metered features reaches the billing
//! provider exactly once, through an outbox.
//!
//! - **Enqueue** ([`UsageExporter::enqueue`]): for each exported meter
//!   and billing period, the rollups' total is compared with what the
//!   outbox already holds for that (tenant, meter, period); a positive
//!   difference becomes one outbox row with the next sequence number and
//!   a deterministic identifier. The row is inserted only if its sequence
//!   is still free and the held total is the one read, in one
//!   transaction: two exporters racing insert one row, and the loser's
//!   usage is enqueued by the next round. Late usage (flushed after a
//!   period's first export) becomes a further row; nothing is counted
//!   twice, as each row carries only what the rows before it lack.
//! - **Send** ([`UsageExporter::send_due`]): due rows go to the
//!   [`UsageSink`] oldest first, one call at a time per tenant (so at
//!   most one concurrent call per customer and meter), under a global
//!   rate (default 100 calls/s, below Stripe's meter-event limit). A
//!   retryable failure is retried with exponential backoff; a row is sent
//!   with the same identifier every time, so the provider counts it once
//!   even when an answer was lost after it applied. A rejected row is
//!   parked (kept, logged, shown by [`UsageExporter::reconcile`]).
//! - **Reconcile** ([`UsageExporter::reconcile`]): per meter and period,
//!   the rollups' total beside what is enqueued, sent and parked.
//!
//! Only `sum` and `count` meters export: their usage adds up across rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::{BoxError, Clock, StoreError, TenantId};
use time::OffsetDateTime;

use crate::meter::{Aggregation, MeterName};
use crate::metering::{Metering, UsageError};
use crate::period::{Cycle, PlanSource};
use crate::ratelimit::{MemoryRateLimitStore, RateLimit};
use crate::rollup::Granularity;
use crate::store::MeteringStoreError;

/// One outbox row: usage of a meter in a period, sent once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The meter (the provider's meter event name).
    pub meter: MeterName,
    /// The billing period's start.
    pub period_start: OffsetDateTime,
    /// 1, 2, … within (tenant, meter, period).
    pub sequence: i64,
    /// The usage this row adds.
    pub value: u64,
    /// The provider's deduplication key, derived from the four above.
    pub identifier: String,
    /// The event time sent: inside the period.
    pub timestamp: OffsetDateTime,
    /// Sends tried so far.
    pub attempts: u32,
}

/// The provider's deduplication identifier of a row: tenant, period,
/// sequence and a stable 64-bit FNV-1a hash of the meter name (72
/// characters at most, within providers' identifier limits).
pub fn identifier(
    tenant_id: TenantId,
    meter: &MeterName,
    period_start: OffsetDateTime,
    sequence: i64,
) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in meter.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!(
        "{}-{}-{}-{hash:016x}",
        tenant_id.as_uuid().simple(),
        period_start.unix_timestamp(),
        sequence
    )
}

/// What an outbox holds for one (tenant, meter, period).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxTotals {
    /// The sum of every row.
    pub enqueued: u64,
    /// The sum of rows sent.
    pub sent: u64,
    /// The sum of rows parked after a rejection.
    pub parked: u64,
    /// The highest sequence (0 without rows).
    pub last_sequence: i64,
}

/// Where outbox rows live. Rows are tenant-owned (row-level security on
/// Postgres). Every adapter passes the outbox conformance suite.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// The totals of (tenant, meter, period).
    async fn totals(
        &self,
        tenant_id: TenantId,
        meter: &MeterName,
        period_start: OffsetDateTime,
    ) -> Result<OutboxTotals, MeteringStoreError>;

    /// Inserts `report` if its sequence is free and the rows before it
    /// sum to `held`, atomically: `false` (nothing written) when another
    /// writer got there first.
    async fn insert(&self, report: &UsageReport, held: u64) -> Result<bool, MeteringStoreError>;

    /// The tenant's rows neither sent nor parked whose next try is due at
    /// `now`, oldest first, at most `limit`.
    async fn due(
        &self,
        tenant_id: TenantId,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<UsageReport>, MeteringStoreError>;

    /// Marks a row sent.
    async fn mark_sent(
        &self,
        report: &UsageReport,
        at: OffsetDateTime,
    ) -> Result<(), MeteringStoreError>;

    /// Records a failed try at `at` (the exporter's clock): retried at
    /// `retry_at`, or parked (at `at`) when `None`.
    async fn mark_failed(
        &self,
        report: &UsageReport,
        at: OffsetDateTime,
        retry_at: Option<OffsetDateTime>,
        error: &str,
    ) -> Result<(), MeteringStoreError>;
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// Worth retrying (the provider is down, rate limiting, timing out).
    #[error("usage report failed; will retry")]
    Retryable(#[source] BoxError),
    /// The provider refused the report; retrying will not help.
    #[error("usage report rejected")]
    Rejected(#[source] BoxError),
}

/// Where usage goes: the billing provider (the facade adapts
/// tenancy-billing's provider to it).
#[async_trait]
pub trait UsageSink: Send + Sync + 'static {
    /// The billed tenants and their customer at the provider.
    async fn customers(&self) -> Result<Vec<(TenantId, String)>, SinkError>;

    /// Reports `report` for `customer`; the provider deduplicates by
    /// `report.identifier`.
    async fn send(&self, customer: &str, report: &UsageReport) -> Result<(), SinkError>;
}

/// Rows held in memory (one process).
#[derive(Debug, Default, Clone)]
pub struct MemoryOutbox {
    rows: Arc<Mutex<HashMap<TenantId, Vec<Row>>>>,
}

#[derive(Debug, Clone)]
struct Row {
    report: UsageReport,
    next_at: OffsetDateTime,
    sent: bool,
    parked: bool,
}

impl MemoryOutbox {
    /// No rows.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<TenantId, Vec<Row>>) -> T) -> T {
        f(&mut self.rows.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn same_key(row: &UsageReport, report: &UsageReport) -> bool {
    row.meter == report.meter && row.period_start == report.period_start
}

#[async_trait]
impl OutboxStore for MemoryOutbox {
    async fn totals(
        &self,
        tenant_id: TenantId,
        meter: &MeterName,
        period_start: OffsetDateTime,
    ) -> Result<OutboxTotals, MeteringStoreError> {
        Ok(self.with(|rows| {
            let mut totals = OutboxTotals::default();
            for row in rows.get(&tenant_id).into_iter().flatten() {
                if &row.report.meter == meter && row.report.period_start == period_start {
                    totals.enqueued += row.report.value;
                    totals.sent += if row.sent { row.report.value } else { 0 };
                    totals.parked += if row.parked { row.report.value } else { 0 };
                    totals.last_sequence = totals.last_sequence.max(row.report.sequence);
                }
            }
            totals
        }))
    }

    async fn insert(&self, report: &UsageReport, held: u64) -> Result<bool, MeteringStoreError> {
        Ok(self.with(|rows| {
            let tenant = rows.entry(report.tenant_id).or_default();
            let (sum, last) = tenant
                .iter()
                .filter(|r| same_key(&r.report, report))
                .fold((0, 0), |(s, l), r| {
                    (s + r.report.value, l.max(r.report.sequence))
                });
            if sum != held || last + 1 != report.sequence {
                return false;
            }
            tenant.push(Row {
                report: report.clone(),
                next_at: OffsetDateTime::UNIX_EPOCH,
                sent: false,
                parked: false,
            });
            true
        }))
    }

    async fn due(
        &self,
        tenant_id: TenantId,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<UsageReport>, MeteringStoreError> {
        Ok(self.with(|rows| {
            rows.get(&tenant_id)
                .into_iter()
                .flatten()
                .filter(|r| !r.sent && !r.parked && r.next_at <= now)
                .take(limit)
                .map(|r| r.report.clone())
                .collect()
        }))
    }

    async fn mark_sent(
        &self,
        report: &UsageReport,
        _at: OffsetDateTime,
    ) -> Result<(), MeteringStoreError> {
        self.update(report, |row| row.sent = true);
        Ok(())
    }

    async fn mark_failed(
        &self,
        report: &UsageReport,
        _at: OffsetDateTime,
        retry_at: Option<OffsetDateTime>,
        _error: &str,
    ) -> Result<(), MeteringStoreError> {
        self.update(report, |row| {
            row.report.attempts += 1;
            match retry_at {
                Some(at) => row.next_at = at,
                None => row.parked = true,
            }
        });
        Ok(())
    }
}

impl MemoryOutbox {
    fn update(&self, report: &UsageReport, f: impl FnOnce(&mut Row)) {
        self.with(|rows| {
            if let Some(row) = rows.get_mut(&report.tenant_id).and_then(|tenant| {
                tenant
                    .iter_mut()
                    .find(|r| same_key(&r.report, report) && r.report.sequence == report.sequence)
            }) {
                f(row);
            }
        });
    }
}

/// Settings of a [`UsageExporter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportConfig {
    /// Calls per second to the provider, across tenants (default 100).
    pub calls_per_second: u32,
    /// The first retry's delay (default 1 s), doubled per failure.
    pub retry_base: Duration,
    /// The longest delay between tries (default 10 min).
    pub retry_max: Duration,
    /// Tries before a retryable failure parks the row (default 20).
    pub max_attempts: u32,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            calls_per_second: 100,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            max_attempts: 20,
        }
    }
}

impl ExportConfig {
    /// Sets the global call rate (at least 1 per second).
    pub fn with_calls_per_second(mut self, n: u32) -> Self {
        self.calls_per_second = n.max(1);
        self
    }

    /// Sets the backoff: `base` doubled per failure, at most `max`.
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base = base;
        self.retry_max = max;
        self
    }

    /// Sets the tries before parking.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    fn delay(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.retry_base.saturating_mul(factor).min(self.retry_max)
    }
}

/// Why an export round failed (a row's own failures are recorded on the
/// row, not answered).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsageExportError {
    /// A meter is not declared.
    #[error("unknown meter {0}")]
    UnknownMeter(String),
    /// Only `sum` and `count` meters add up across rows.
    #[error("meter {0} aggregates with {1}; only sum and count meters export")]
    NotAdditive(String, &'static str),
    /// The plan source failed.
    #[error(transparent)]
    Plans(#[from] crate::quota::LimitError),
    /// The sink could not list customers.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The call rate is zero or above a million per second.
    #[error(transparent)]
    Rate(#[from] crate::ratelimit::RateLimitError),
    /// The usage or outbox store failed.
    #[error(transparent)]
    Store(#[from] MeteringStoreError),
}

impl From<UsageError> for UsageExportError {
    fn from(error: UsageError) -> Self {
        match error {
            UsageError::UnknownMeter(name) => UsageExportError::UnknownMeter(name),
            UsageError::Store(e) => UsageExportError::Store(e),
            UsageError::Invalid(e) => {
                UsageExportError::Store(MeteringStoreError::Store(StoreError::Corrupt(Box::new(e))))
            }
        }
    }
}

/// One line of [`UsageExporter::reconcile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// The meter.
    pub meter: MeterName,
    /// The period's start.
    pub period_start: OffsetDateTime,
    /// The rollups' total for the period.
    pub usage: u64,
    /// The outbox's totals.
    pub outbox: OutboxTotals,
}

/// What one [`UsageExporter::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Rows enqueued.
    pub enqueued: u64,
    /// Rows sent.
    pub sent: u64,
    /// Tries that failed (retried later or parked).
    pub failed: u64,
}

/// Exports usage of chosen meters to a [`UsageSink`] through an
/// [`OutboxStore`]; see the module docs for the guarantee.
#[derive(Clone)]
pub struct UsageExporter {
    metering: Metering,
    meters: Vec<MeterName>,
    plans: Option<Arc<dyn PlanSource>>,
    outbox: Arc<dyn OutboxStore>,
    sink: Arc<dyn UsageSink>,
    config: ExportConfig,
    rate: MemoryRateLimitStore,
    pace: RateLimit,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for UsageExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageExporter")
            .field("meters", &self.meters)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl UsageExporter {
    /// Exports `meters` of `metering` (each a declared `sum` or `count`
    /// meter) to `sink` through `outbox`. Periods follow each tenant's
    /// billing cycle from `plans` (calendar months without one).
    pub fn new(
        metering: Metering,
        meters: &[&str],
        plans: Option<Arc<dyn PlanSource>>,
        outbox: Arc<dyn OutboxStore>,
        sink: Arc<dyn UsageSink>,
        config: ExportConfig,
    ) -> Result<Self, UsageExportError> {
        let mut names = Vec::with_capacity(meters.len());
        for name in meters {
            let meter = metering
                .meters()
                .get(name)
                .ok_or_else(|| UsageExportError::UnknownMeter((*name).to_owned()))?;
            if !matches!(meter.aggregation(), Aggregation::Sum | Aggregation::Count) {
                return Err(UsageExportError::NotAdditive(
                    (*name).to_owned(),
                    meter.aggregation().as_str(),
                ));
            }
            names.push(meter.name().clone());
        }
        let clock = Arc::clone(metering.clock());
        let pace = RateLimit::new(config.calls_per_second, Duration::from_secs(1))?;
        Ok(Self {
            pace,
            metering,
            meters: names,
            plans,
            outbox,
            sink,
            config,
            rate: MemoryRateLimitStore::new().with_clock(Arc::clone(&clock)),
            clock,
        })
    }

    async fn cycle(
        &self,
        tenant_id: TenantId,
        now: OffsetDateTime,
    ) -> Result<Cycle, UsageExportError> {
        Ok(match &self.plans {
            Some(plans) => plans
                .plan(tenant_id, now)
                .await?
                .map_or(Cycle::CalendarMonth, |p| p.billing_cycle),
            None => Cycle::CalendarMonth,
        })
    }

    /// The rollups' total of `meter` in `[start, end)`, exact to the
    /// minute: minutes up to the first day boundary, whole days, minutes
    /// after the last.
    async fn total(
        &self,
        tenant_id: TenantId,
        meter: &MeterName,
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> Result<u64, UsageExportError> {
        let scope = tenancy_core::TenantScope::assume_resolved(tenant_id);
        let first_day = Granularity::Day.floor(start);
        let first_day = if first_day < start {
            first_day + time::Duration::DAY
        } else {
            first_day
        };
        let last_day = Granularity::Day.floor(end).max(first_day);
        let mut total: i64 = 0;
        let spans = [
            (start, first_day.min(end), Granularity::Minute),
            (first_day, last_day, Granularity::Day),
            (last_day.max(start), end, Granularity::Minute),
        ];
        for (from, to, granularity) in spans {
            if from >= to {
                continue;
            }
            let (_, points) = self
                .metering
                .usage(&scope, meter.as_str(), from, to, granularity, Vec::new())
                .await?;
            total += points.iter().map(|p| p.value).sum::<i64>();
        }
        Ok(u64::try_from(total).unwrap_or(0))
    }

    /// Enqueues the tenant's usage not yet in the outbox, for the current
    /// and the previous period (usage flushed after a period ended still
    /// reaches it). Returns the rows enqueued.
    pub async fn enqueue(&self, tenant_id: TenantId) -> Result<u64, UsageExportError> {
        let now = self.clock.now();
        let cycle = self.cycle(tenant_id, now).await?;
        let current = cycle.period_at(now);
        let previous = cycle.period_at(current.start - time::Duration::MICROSECOND);
        let mut enqueued = 0;
        for meter in &self.meters {
            for period in [previous, current] {
                let usage = self
                    .total(tenant_id, meter, period.start, period.end)
                    .await?;
                let held = self.outbox.totals(tenant_id, meter, period.start).await?;
                if usage <= held.enqueued {
                    continue;
                }
                let sequence = held.last_sequence + 1;
                let report = UsageReport {
                    tenant_id,
                    meter: meter.clone(),
                    period_start: period.start,
                    sequence,
                    value: usage - held.enqueued,
                    identifier: identifier(tenant_id, meter, period.start, sequence),
                    // Inside the period, where the provider bills it.
                    timestamp: now.min(period.end - time::Duration::SECOND),
                    attempts: 0,
                };
                if self.outbox.insert(&report, held.enqueued).await? {
                    enqueued += 1;
                }
            }
        }
        Ok(enqueued)
    }

    async fn paced(&self) {
        loop {
            let decision = self.rate.check_now("export", &self.pace, 1);
            if decision.allowed {
                return;
            }
            tokio::time::sleep(decision.retry_after).await;
        }
    }

    /// Sends the tenant's due rows, one at a time, oldest first.
    pub async fn send_due(
        &self,
        tenant_id: TenantId,
        customer: &str,
    ) -> Result<ExportReport, UsageExportError> {
        let mut report = ExportReport::default();
        let now = self.clock.now();
        for row in self.outbox.due(tenant_id, now, 100).await? {
            self.paced().await;
            match self.sink.send(customer, &row).await {
                Ok(()) => {
                    self.outbox.mark_sent(&row, self.clock.now()).await?;
                    report.sent += 1;
                }
                Err(error) => {
                    report.failed += 1;
                    let attempts = row.attempts + 1;
                    let retry_at = match &error {
                        SinkError::Retryable(_) if attempts < self.config.max_attempts => {
                            Some(self.clock.now() + self.config.delay(attempts))
                        }
                        _ => None,
                    };
                    tracing::warn!(%tenant_id, meter = %row.meter.as_str(), identifier = %row.identifier, error = %error, parked = retry_at.is_none(), "usage report failed");
                    self.outbox
                        .mark_failed(&row, self.clock.now(), retry_at, &error.to_string())
                        .await?;
                    // Later rows of this tenant wait: their order is kept.
                    break;
                }
            }
        }
        Ok(report)
    }

    /// One round over every billed tenant: enqueue, then send what is
    /// due. A tenant whose round fails is logged and skipped.
    pub async fn run_once(&self) -> Result<ExportReport, UsageExportError> {
        let mut total = ExportReport::default();
        for (tenant_id, customer) in self.sink.customers().await? {
            let round = async {
                let enqueued = self.enqueue(tenant_id).await?;
                let mut sent = self.send_due(tenant_id, &customer).await?;
                sent.enqueued = enqueued;
                Ok::<_, UsageExportError>(sent)
            };
            match round.await {
                Ok(r) => {
                    total.enqueued += r.enqueued;
                    total.sent += r.sent;
                    total.failed += r.failed;
                }
                Err(error) => {
                    tracing::error!(%tenant_id, error = %error, "usage export round failed");
                }
            }
        }
        Ok(total)
    }

    /// Runs [`run_once`](Self::run_once) every `every` on the current
    /// tokio runtime (abort the handle to stop).
    pub fn spawn(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let exporter = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(error) = exporter.run_once().await {
                    tracing::error!(error = %error, "usage export failed");
                }
            }
        })
    }

    /// Per exported meter, the current and previous period's usage beside
    /// the outbox's totals: `usage == outbox.sent` once everything is
    /// sent; a gap shows usage waiting, failing or parked.
    pub async fn reconcile(
        &self,
        tenant_id: TenantId,
    ) -> Result<Vec<Reconciled>, UsageExportError> {
        let now = self.clock.now();
        let cycle = self.cycle(tenant_id, now).await?;
        let current = cycle.period_at(now);
        let previous = cycle.period_at(current.start - time::Duration::MICROSECOND);
        let mut lines = Vec::new();
        for meter in &self.meters {
            for period in [previous, current] {
                lines.push(Reconciled {
                    meter: meter.clone(),
                    period_start: period.start,
                    usage: self
                        .total(tenant_id, meter, period.start, period.end)
                        .await?,
                    outbox: self.outbox.totals(tenant_id, meter, period.start).await?,
                });
            }
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::datetime;

    #[test]
    fn identifiers_are_deterministic_and_short() {
        let tenant = TenantId::new();
        let meter = MeterName::new(&"m".repeat(64)).unwrap();
        let at = datetime!(2030-01-15 9:30 UTC);
        let id = identifier(tenant, &meter, at, 12);
        assert_eq!(id, identifier(tenant, &meter, at, 12));
        assert_ne!(id, identifier(tenant, &meter, at, 13));
        assert_ne!(
            id,
            identifier(tenant, &MeterName::new("other").unwrap(), at, 12)
        );
        assert!(id.len() <= 72, "{id}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config =
            ExportConfig::default().with_backoff(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<_> = (1..6).map(|n| config.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
    }
}
