//! Billing periods and plans: the quotas of a tenant's plan and the cycle
//! they reset on, read through [`PlanSource`] (billing's entitlements and
//! subscription, wired by the facade; this crate does not depend on
//! billing). [`PlanLimits`] turns a plan source into the [`LimitSource`]
//! that [`crate::Quotas`] enforces.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tenancy_core::TenantId;
use time::{Date, Duration, Month, OffsetDateTime, Time};

use crate::meter::MeterName;
use crate::quota::{Limit, LimitError, LimitKind, LimitSource};

/// When a per-period count starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cycle {
    /// Every UTC day.
    Day,
    /// Every calendar month (UTC).
    CalendarMonth,
    /// Every `months` months from `anchor` (a subscription's billing
    /// anchor). A period starting on a day the month lacks starts on its
    /// last day instead (an anchor on the 31st gives February 28th or
    /// 29th, then March 31st), as card billing does.
    Anchored {
        /// A period start: any start of the cycle, past or future.
        anchor: OffsetDateTime,
        /// Months per period (1 monthly, 12 yearly); 0 counts as 1.
        months: u32,
    },
}

/// A period `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// The first instant.
    pub start: OffsetDateTime,
    /// The first instant after it.
    pub end: OffsetDateTime,
}

impl Cycle {
    /// The period holding `now`.
    pub fn period_at(self, now: OffsetDateTime) -> Period {
        let now = now.to_offset(time::UtcOffset::UTC);
        match self {
            Cycle::Day => {
                let start = now.replace_time(Time::MIDNIGHT);
                Period {
                    start,
                    end: start + Duration::DAY,
                }
            }
            Cycle::CalendarMonth => {
                let first = first_of_month(now.year(), now.month());
                Period {
                    start: first,
                    end: add_months(first, 1),
                }
            }
            Cycle::Anchored { anchor, months } => {
                let anchor = anchor.to_offset(time::UtcOffset::UTC);
                let months = i64::from(months.max(1));
                let apart = (i64::from(now.year()) - i64::from(anchor.year())) * 12
                    + (i64::from(u8::from(now.month())) - i64::from(u8::from(anchor.month())));
                let mut k = apart.div_euclid(months);
                // The month count is off by one period at most (the anchor's
                // day and time may fall after now's in the month).
                while add_months(anchor, k * months) > now {
                    k -= 1;
                }
                while add_months(anchor, (k + 1) * months) <= now {
                    k += 1;
                }
                Period {
                    start: add_months(anchor, k * months),
                    end: add_months(anchor, (k + 1) * months),
                }
            }
        }
    }
}

fn first_of_month(year: i32, month: Month) -> OffsetDateTime {
    Date::from_calendar_date(year, month, 1)
        .unwrap_or(Date::MIN)
        .midnight()
        .assume_utc()
}

/// `at` moved by `n` months, keeping the time of day and clamping the day
/// to the target month's length.
fn add_months(at: OffsetDateTime, n: i64) -> OffsetDateTime {
    let index = i64::from(at.year()) * 12 + i64::from(u8::from(at.month())) - 1 + n;
    let year = i32::try_from(index.div_euclid(12)).unwrap_or(i32::MAX);
    let month = Month::try_from(u8::try_from(index.rem_euclid(12) + 1).unwrap_or(1))
        .unwrap_or(Month::January);
    let day = at.day().min(time::util::days_in_month(month, year));
    match Date::from_calendar_date(year, month, day) {
        Ok(date) => date.with_time(at.time()).assume_utc(),
        Err(_) => at,
    }
}

/// One quota of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanQuota {
    /// The meter it limits.
    pub meter: MeterName,
    /// The most usage a period allows.
    pub amount: u64,
    /// Refuse past it, or only record.
    pub kind: LimitKind,
    /// When the count starts again.
    pub cycle: Cycle,
}

/// What a tenant's plan says about metering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPlan {
    /// The plan's name (rate-limit rules may differ per plan).
    pub plan: Arc<str>,
    /// The tenant's billing cycle: `GET /usage?period=current` and the
    /// export to billing follow it.
    pub billing_cycle: Cycle,
    /// The plan's quotas; a meter without one is unlimited.
    pub quotas: Vec<PlanQuota>,
}

/// Where tenants' plans come from: billing's entitlements and
/// subscription (the facade crate adapts them), or a host's own table.
/// Called on the request path: answer from a cache.
#[async_trait]
pub trait PlanSource: Send + Sync + 'static {
    /// `tenant_id`'s plan at `now`; `None` when the tenant has none (no
    /// quota, default rate limits, calendar-month usage periods).
    async fn plan(
        &self,
        tenant_id: TenantId,
        now: OffsetDateTime,
    ) -> Result<Option<TenantPlan>, LimitError>;
}

/// Plans held in memory, for tests, examples and hosts with static plans.
#[derive(Debug, Default)]
pub struct StaticPlans {
    plans: Mutex<HashMap<TenantId, TenantPlan>>,
}

impl StaticPlans {
    /// No plans.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces: an upgrade) a tenant's plan.
    pub fn set(&self, tenant_id: TenantId, plan: TenantPlan) {
        self.plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant_id, plan);
    }
}

#[async_trait]
impl PlanSource for StaticPlans {
    async fn plan(
        &self,
        tenant_id: TenantId,
        _now: OffsetDateTime,
    ) -> Result<Option<TenantPlan>, LimitError> {
        Ok(self
            .plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&tenant_id)
            .cloned())
    }
}

/// The [`LimitSource`] of a [`PlanSource`]: each quota of the tenant's
/// plan, for the period of its cycle holding `now`. As the period's start
/// keys the usage counter, a new period counts from zero, and a plan
/// change (upgrade) applies at once to the current period's counter.
#[derive(Clone)]
pub struct PlanLimits {
    plans: Arc<dyn PlanSource>,
}

impl std::fmt::Debug for PlanLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanLimits").finish_non_exhaustive()
    }
}

impl PlanLimits {
    /// Limits of the plans of `plans`.
    pub fn new(plans: Arc<dyn PlanSource>) -> Self {
        Self { plans }
    }
}

#[async_trait]
impl LimitSource for PlanLimits {
    async fn limit(
        &self,
        tenant_id: TenantId,
        meter: &MeterName,
        now: OffsetDateTime,
    ) -> Result<Option<Limit>, LimitError> {
        let Some(plan) = self.plans.plan(tenant_id, now).await? else {
            return Ok(None);
        };
        Ok(plan.quotas.iter().find(|q| &q.meter == meter).map(|q| {
            let period = q.cycle.period_at(now);
            Limit {
                amount: q.amount,
                kind: q.kind,
                period_start: period.start,
                period_end: period.end,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::datetime;

    #[test]
    fn anchored_periods_follow_the_anchor_and_clamp_short_months() {
        let cycle = Cycle::Anchored {
            anchor: datetime!(2030-01-31 10:00 UTC),
            months: 1,
        };
        let p = cycle.period_at(datetime!(2030-02-15 0:00 UTC));
        assert_eq!(p.start, datetime!(2030-01-31 10:00 UTC));
        assert_eq!(p.end, datetime!(2030-02-28 10:00 UTC));
        let p = cycle.period_at(datetime!(2030-02-28 10:00 UTC));
        assert_eq!(p.start, datetime!(2030-02-28 10:00 UTC));
        assert_eq!(p.end, datetime!(2030-03-31 10:00 UTC));
        // Before the anchor, periods run backwards from it.
        let p = cycle.period_at(datetime!(2029-12-31 09:59 UTC));
        assert_eq!(p.start, datetime!(2029-11-30 10:00 UTC));
        assert_eq!(p.end, datetime!(2029-12-31 10:00 UTC));
        let yearly = Cycle::Anchored {
            anchor: datetime!(2028-02-29 0:00 UTC),
            months: 12,
        };
        let p = yearly.period_at(datetime!(2030-06-01 0:00 UTC));
        assert_eq!(p.start, datetime!(2030-02-28 0:00 UTC));
        assert_eq!(p.end, datetime!(2031-02-28 0:00 UTC));
    }

    #[test]
    fn calendar_cycles() {
        let now = datetime!(2030-12-31 23:59:59 UTC);
        let p = Cycle::CalendarMonth.period_at(now);
        assert_eq!(p.start, datetime!(2030-12-01 0:00 UTC));
        assert_eq!(p.end, datetime!(2031-01-01 0:00 UTC));
        let p = Cycle::Day.period_at(now);
        assert_eq!(p.start, datetime!(2030-12-31 0:00 UTC));
        assert_eq!(p.end, datetime!(2031-01-01 0:00 UTC));
    }

    #[tokio::test]
    async fn plan_limits_reset_with_the_period() {
        let plans = Arc::new(StaticPlans::new());
        let tenant = TenantId::new();
        let meter = MeterName::new("api_calls").unwrap();
        plans.set(
            tenant,
            TenantPlan {
                plan: "free".into(),
                billing_cycle: Cycle::CalendarMonth,
                quotas: vec![PlanQuota {
                    meter: meter.clone(),
                    amount: 10,
                    kind: LimitKind::Hard,
                    cycle: Cycle::Anchored {
                        anchor: datetime!(2030-01-15 0:00 UTC),
                        months: 1,
                    },
                }],
            },
        );
        let limits = PlanLimits::new(plans);
        let jan = limits
            .limit(tenant, &meter, datetime!(2030-02-14 23:59 UTC))
            .await
            .unwrap()
            .unwrap();
        let feb = limits
            .limit(tenant, &meter, datetime!(2030-02-15 0:00 UTC))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(jan.period_end, feb.period_start);
        assert_eq!(feb.period_start, datetime!(2030-02-15 0:00 UTC));
        let other = MeterName::new("storage").unwrap();
        assert!(
            limits
                .limit(tenant, &other, datetime!(2030-02-15 0:00 UTC))
                .await
                .unwrap()
                .is_none()
        );
    }
}
