//! Billing wired into metering (features `billing` and `metering`): the
//! crates do not depend on each other; these adapters join them.
//!
//! - [`BillingPlans`]: a tenant's plan quotas (billing's `metered`
//!   features) and billing cycle (its subscription's period) as metering's
//!   [`PlanSource`], so per-period limits reset with the billing period.
//! - [`BillingUsageSink`]: billing's accounts and provider as metering's
//!   [`UsageSink`], so [`tenancy_metering::UsageExporter`] reports usage
//!   of metered features to the provider exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tenancy_billing::store::MAX_ACCOUNTS_PAGE;
use tenancy_billing::{
    BillingProvider, BillingService, CustomerId, Enforcement, Entitlements, FeatureKind,
    Limit as BillingLimit, Period, ProviderError, Revision, Subscription,
};
use tenancy_core::TenantId;
use tenancy_metering::tenancy_core::BoxError;
use tenancy_metering::{
    Cycle, LimitError, LimitKind, MeterName, PlanQuota, PlanSource, SinkError, TenantPlan,
    UsageReport, UsageSink,
};
use time::OffsetDateTime;

/// Metering's [`PlanSource`] over billing: the plan granted by the
/// tenant's entitlements; a quota for each `metered` feature whose key
/// names a meter, limited to the entitlement's value (overrides
/// included; an unlimited value is no quota), hard or soft as the
/// catalog's enforcement says; and the billing cycle anchored on the
/// subscription's current period (calendar months without a
/// subscription). A feature counted per `billing_period` follows that
/// cycle, one counted per `day` or `month` the calendar.
///
/// Plans are cached per tenant and billing revision: the entitlements
/// (cached by billing when it has an entitlement cache) are read per
/// call, the subscription only when the revision changed, so a plan
/// change applies at the next request.
pub struct BillingPlans {
    billing: Arc<BillingService>,
    plans: Mutex<HashMap<TenantId, (Revision, TenantPlan)>>,
}

impl std::fmt::Debug for BillingPlans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingPlans").finish_non_exhaustive()
    }
}

impl BillingPlans {
    /// Plans of `billing`'s tenants.
    pub fn new(billing: Arc<BillingService>) -> Self {
        Self {
            billing,
            plans: Mutex::default(),
        }
    }

    fn cached(&self, tenant_id: TenantId, revision: Revision) -> Option<TenantPlan> {
        let plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        plans
            .get(&tenant_id)
            .filter(|(seen, _)| *seen == revision)
            .map(|(_, plan)| plan.clone())
    }
}

/// The cycle of `subscription`'s periods: anchored on the current
/// period's start, as many months as the period spans (1 or 12 for
/// Stripe's monthly and yearly prices).
pub fn billing_cycle(subscription: Option<&Subscription>) -> Cycle {
    let Some(s) = subscription else {
        return Cycle::CalendarMonth;
    };
    let days = (s.current_period_end - s.current_period_start).whole_days();
    // 28–31 days a month; round to the nearest whole month count.
    let months = u32::try_from(((days as f64) / 30.44).round() as i64)
        .unwrap_or(1)
        .max(1);
    Cycle::Anchored {
        anchor: s.current_period_start,
        months,
    }
}

/// The quotas `entitlements` grant for metered features.
pub fn plan_quotas(entitlements: &Entitlements, billing_cycle: Cycle) -> Vec<PlanQuota> {
    let catalog = entitlements.catalog();
    catalog
        .features()
        .iter()
        .filter_map(|feature| {
            let FeatureKind::Metered {
                period,
                enforcement,
                ..
            } = feature.kind()
            else {
                return None;
            };
            let meter = MeterName::new(feature.key()).ok()?;
            let BillingLimit::Max(amount) = entitlements.limit_key(feature.key())? else {
                return None;
            };
            Some(PlanQuota {
                meter,
                amount,
                kind: match enforcement {
                    Enforcement::Hard => LimitKind::Hard,
                    Enforcement::Soft => LimitKind::Soft,
                },
                cycle: match period {
                    Period::Day => Cycle::Day,
                    Period::Month => Cycle::CalendarMonth,
                    Period::BillingPeriod => billing_cycle,
                },
            })
        })
        .collect()
}

fn limit_error(error: impl std::error::Error + Send + Sync + 'static) -> LimitError {
    LimitError(Box::new(error) as BoxError)
}

#[async_trait::async_trait]
impl PlanSource for BillingPlans {
    async fn plan(
        &self,
        tenant_id: TenantId,
        _now: OffsetDateTime,
    ) -> Result<Option<TenantPlan>, LimitError> {
        let entitlements = self
            .billing
            .entitlements(tenant_id)
            .await
            .map_err(limit_error)?;
        if let Some(plan) = self.cached(tenant_id, entitlements.revision()) {
            return Ok(Some(plan));
        }
        let state = self
            .billing
            .store()
            .state(tenant_id)
            .await
            .map_err(limit_error)?;
        let cycle = billing_cycle(state.subscription.as_ref());
        let plan = TenantPlan {
            plan: entitlements.plan().into(),
            billing_cycle: cycle,
            quotas: plan_quotas(&entitlements, cycle),
        };
        self.plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant_id, (entitlements.revision(), plan.clone()));
        Ok(Some(plan))
    }
}

/// Metering's [`UsageSink`] over billing: the tenants with a billing
/// account, and each usage report sent as a meter event through the
/// provider (`BillingProvider::report_usage`, Stripe's
/// `POST /v1/billing/meter_events` with the report's identifier). The
/// meter's name is the provider's event name. Provider failures after
/// its own retries (unavailable, rate limited, circuit open) are retried
/// by the exporter; refusals park the report.
pub struct BillingUsageSink {
    billing: Arc<BillingService>,
    provider: Arc<dyn BillingProvider>,
}

impl std::fmt::Debug for BillingUsageSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingUsageSink").finish_non_exhaustive()
    }
}

impl BillingUsageSink {
    /// Reports through `provider` for the accounts of `billing`.
    pub fn new(billing: Arc<BillingService>, provider: Arc<dyn BillingProvider>) -> Self {
        Self { billing, provider }
    }
}

#[async_trait::async_trait]
impl UsageSink for BillingUsageSink {
    async fn customers(&self) -> Result<Vec<(TenantId, String)>, SinkError> {
        let mut customers = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .billing
                .store()
                .list_accounts(after, MAX_ACCOUNTS_PAGE)
                .await
                .map_err(|e| SinkError::Retryable(Box::new(e)))?;
            let full = page.len() == MAX_ACCOUNTS_PAGE;
            after = page.last().map(|a| a.tenant_id);
            customers.extend(
                page.into_iter()
                    .map(|a| (a.tenant_id, a.customer_id.as_str().to_owned())),
            );
            if !full {
                return Ok(customers);
            }
        }
    }

    async fn send(&self, customer: &str, report: &UsageReport) -> Result<(), SinkError> {
        let customer = CustomerId::new(customer).map_err(|e| SinkError::Rejected(Box::new(e)))?;
        self.provider
            .report_usage(
                &customer,
                report.meter.as_str(),
                report.value,
                &report.identifier,
                report.timestamp,
            )
            .await
            .map_err(|error| match error {
                ProviderError::RateLimited
                | ProviderError::Unavailable(_)
                | ProviderError::CircuitOpen => SinkError::Retryable(Box::new(error)),
                other => SinkError::Rejected(Box::new(other)),
            })
    }
}
