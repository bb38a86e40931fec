//! Billing's plans and subscription periods as metering's plan source:
//! quotas come from the entitlements and reset with the billing period.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use tenancy::billing::{
    BillingService, BillingStore, Catalog, CatalogDocument, CustomerId, Enforcement,
    MemoryBillingStore, Period, PlanDocument, Subscription, SubscriptionId, SubscriptionStatus,
};
use tenancy::metering::{
    Cycle, LimitKind, MemoryQuotaStore, MeterName, PlanLimits, PlanSource, QuotaDecision, Quotas,
};
use tenancy::metering_billing::BillingPlans;
use tenancy::{
    AuditContext, Clock, Directory, Email, ManualClock, MemoryBackend, NewTenant, NewUser, Owner,
    Slug, TenantName, TenantScope,
};
use time::OffsetDateTime;
use time::macros::datetime;

fn catalog() -> Catalog {
    Catalog::from_document(
        &CatalogDocument::new("free")
            .metered("api_calls", Period::BillingPeriod, Enforcement::Hard, false)
            .metered("exports", Period::Day, Enforcement::Soft, false)
            .plan(
                "free",
                PlanDocument::default()
                    .grant("api_calls", 2)
                    .grant("exports", 1),
            )
            .plan(
                "pro",
                PlanDocument::default()
                    .lookup_key("pro")
                    .grant("api_calls", 3)
                    .grant("exports", 10),
            ),
    )
    .unwrap()
}

fn subscription(plan: &str, start: OffsetDateTime, end: OffsetDateTime) -> Subscription {
    Subscription {
        id: SubscriptionId::new("sub_1").unwrap(),
        customer_id: CustomerId::new("cus_1").unwrap(),
        plan: plan.into(),
        status: SubscriptionStatus::Active,
        current_period_start: start,
        current_period_end: end,
        cancel_at_period_end: false,
        quantity: 1,
        trial_end: None,
        past_due_since: None,
        observed_at: start,
    }
}

fn set(clock: &ManualClock, at: OffsetDateTime) {
    clock.advance(at - clock.now());
}

#[tokio::test]
async fn quotas_follow_the_plan_and_reset_with_the_billing_period() {
    let backend = Arc::new(MemoryBackend::new());
    let tenant = Directory::new(backend.clone())
        .create_tenant(
            NewTenant::new(Slug::new("acme").unwrap(), TenantName::new("Acme").unwrap()),
            Owner::New(NewUser::new(Email::new("ada@acme.example").unwrap())),
            &AuditContext::system(),
        )
        .await
        .unwrap()
        .tenant;
    let store = Arc::new(MemoryBillingStore::new(backend));
    let billing = Arc::new(BillingService::new(store.clone(), catalog()));
    let plans = Arc::new(BillingPlans::new(billing));

    // No subscription: the default plan, on calendar months.
    let now = datetime!(2030-01-20 12:00 UTC);
    let free = plans.plan(tenant.id, now).await.unwrap().unwrap();
    assert_eq!(&*free.plan, "free");
    assert_eq!(free.billing_cycle, Cycle::CalendarMonth);
    let calls = free
        .quotas
        .iter()
        .find(|q| q.meter.as_str() == "api_calls")
        .unwrap();
    assert_eq!((calls.amount, calls.kind), (2, LimitKind::Hard));
    let exports = free
        .quotas
        .iter()
        .find(|q| q.meter.as_str() == "exports")
        .unwrap();
    assert_eq!((exports.kind, exports.cycle), (LimitKind::Soft, Cycle::Day));

    // Subscribed to pro, billed from the 15th: the cycle follows the anchor.
    store
        .sync_subscription(
            tenant.id,
            &subscription(
                "pro",
                datetime!(2030-01-15 9:30 UTC),
                datetime!(2030-02-15 9:30 UTC),
            ),
            None,
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let pro = plans.plan(tenant.id, now).await.unwrap().unwrap();
    assert_eq!(&*pro.plan, "pro", "a plan change applies at the next call");
    assert_eq!(
        pro.billing_cycle,
        Cycle::Anchored {
            anchor: datetime!(2030-01-15 9:30 UTC),
            months: 1
        }
    );

    let clock = Arc::new(ManualClock::new(now));
    let quotas = Quotas::new(
        Arc::new(PlanLimits::new(plans)),
        Arc::new(MemoryQuotaStore::new()),
    )
    .with_clock(clock.clone());
    let scope = TenantScope::assume_resolved(tenant.id);
    let meter = MeterName::new("api_calls").unwrap();
    for _ in 0..3 {
        assert!(quotas.consume(&scope, &meter, 1).await.unwrap().allowed());
    }
    let refused = quotas.consume(&scope, &meter, 1).await.unwrap();
    let QuotaDecision::Refused { limit, .. } = refused else {
        panic!("the fourth call is over pro's 3: {refused:?}");
    };
    assert_eq!(limit.period_end, datetime!(2030-02-15 9:30 UTC));
    // Still refused a second before the period ends…
    set(&clock, datetime!(2030-02-15 9:29:59 UTC));
    assert!(!quotas.consume(&scope, &meter, 1).await.unwrap().allowed());
    // …and counted from zero in the next period, before any renewal
    // webhook arrives.
    set(&clock, datetime!(2030-02-15 9:30 UTC));
    let renewed = quotas.consume(&scope, &meter, 1).await.unwrap();
    assert_eq!(
        renewed,
        QuotaDecision::Allowed {
            used: 1,
            limit: tenancy::metering::Limit {
                amount: 3,
                kind: LimitKind::Hard,
                period_start: datetime!(2030-02-15 9:30 UTC),
                period_end: datetime!(2030-03-15 9:30 UTC),
            }
        }
    );
}
