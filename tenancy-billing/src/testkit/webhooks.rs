//! Webhook suites: every delivery order of a realistic event sequence,
//! with duplicates, ends in the in-order state; reconciliation catches up
//! on events that never arrived.

use std::sync::Arc;

use serde_json::json;
use tenancy_core::TenantId;

use super::provider::{FakeProvider, subscription_object};
use super::{Fixture, create_tenant, unique_id};
use crate::catalog::{Catalog, CatalogDocument, PlanDocument};
use crate::event::ProviderEvent;
use crate::service::{BillingService, WebhookOutcome};
use crate::store::Applied;
use crate::subscription::{CustomerId, Subscription, SubscriptionId, SubscriptionStatus};

/// The catalog the webhook suites sell: `free`, and `pro` by the price
/// with lookup key `pro_monthly`.
pub fn catalog() -> Catalog {
    Catalog::from_document(
        &CatalogDocument::new("free")
            .gate("sso")
            .plan("free", PlanDocument::default())
            .plan(
                "pro",
                PlanDocument::default()
                    .lookup_key("pro_monthly")
                    .grant("sso", true),
            ),
    )
    .unwrap()
}

fn subscription_json(
    sub: &SubscriptionId,
    customer: &CustomerId,
    tenant: TenantId,
    status: &str,
) -> serde_json::Value {
    serde_json::to_value(subscription_object(
        sub,
        customer,
        Some(tenant),
        "pro_monthly",
        status,
        3,
    ))
    .unwrap()
}

/// A checkout, then the subscription's life until its deletion, as the
/// provider would send it: `checkout.session.completed`,
/// `customer.subscription.created` (incomplete), `…updated` (active),
/// `invoice.paid`, `invoice.payment_failed`, `…updated` (past_due),
/// `customer.subscription.deleted` (canceled).
/// The events are dated `base` + 100 to 300 seconds (unix time); with
/// [`an_hour_ago`] a re-fetch (observed now) is newer than any of them.
pub fn realistic_sequence(tenant: TenantId, base: i64) -> Vec<ProviderEvent> {
    let customer = CustomerId::new(unique_id("cus")).unwrap();
    let sub = SubscriptionId::new(unique_id("sub")).unwrap();
    let invoice = |id: &str| {
        json!({
            "id": id, "object": "invoice", "customer": customer,
            "parent": { "type": "subscription_details", "subscription_details": {
                "subscription": sub, "metadata": { "tenant_id": tenant.to_string() },
            }},
        })
    };
    let events = [
        (
            "checkout.session.completed",
            100,
            json!({
                "id": unique_id("cs"), "object": "checkout.session", "mode": "subscription",
                "customer": customer, "client_reference_id": tenant.to_string(),
                "subscription": sub,
            }),
        ),
        (
            "customer.subscription.created",
            101,
            subscription_json(&sub, &customer, tenant, "incomplete"),
        ),
        (
            "customer.subscription.updated",
            102,
            subscription_json(&sub, &customer, tenant, "active"),
        ),
        ("invoice.paid", 103, invoice("in_1")),
        ("invoice.payment_failed", 200, invoice("in_2")),
        (
            "customer.subscription.updated",
            201,
            subscription_json(&sub, &customer, tenant, "past_due"),
        ),
        (
            "customer.subscription.deleted",
            300,
            subscription_json(&sub, &customer, tenant, "canceled"),
        ),
    ];
    events
        .into_iter()
        .map(|(event_type, at, object)| {
            serde_json::from_value(json!({
                "id": unique_id("evt"),
                "object": "event",
                "type": event_type,
                "created": base + at,
                "api_version": "2025-03-31.basil",
                "data": { "object": object },
            }))
            .unwrap()
        })
        .collect()
}

/// An hour ago, in unix seconds.
pub fn an_hour_ago() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp() - 3600
}

/// The lexicographically next permutation of `items`; `false` after the last.
fn next_permutation(items: &mut [usize]) -> bool {
    let Some(i) = (1..items.len()).rev().find(|&i| items[i - 1] < items[i]) else {
        return false;
    };
    let j = (i..items.len())
        .rev()
        .find(|&j| items[j] > items[i - 1])
        .unwrap();
    items.swap(i - 1, j);
    items[i..].reverse();
    true
}

/// What must agree across orders: the subscription with its ids replaced
/// by the reference's, the linked customer's presence, the plan granted.
fn outcome(
    subscription: Option<Subscription>,
    reference: Option<&Subscription>,
) -> Option<Subscription> {
    subscription.map(|mut s| {
        if let Some(r) = reference {
            s.id = r.id.clone();
            s.customer_id = r.customer_id.clone();
        }
        s
    })
}

/// Delivers `events` in `order`, then a duplicate of the first, the third
/// and the last delivered; every delivery is acknowledged.
async fn deliver(service: &BillingService, events: &[ProviderEvent], order: &[usize]) {
    let mut deliveries: Vec<usize> = Vec::with_capacity(order.len() + 3);
    for (n, i) in order.iter().enumerate() {
        deliveries.push(*i);
        if n == 2 {
            deliveries.push(*i);
        }
    }
    deliveries.push(order[0]);
    deliveries.push(order[order.len() - 1]);
    for i in deliveries {
        let outcome = service.apply_event(&events[i]).await;
        assert!(
            outcome.is_ok(),
            "delivery of {} failed: {outcome:?}",
            events[i].event_type
        );
    }
}

/// Every order (every `sample_every`-th, see [`Fixture::sample_every`]) of
/// [`realistic_sequence`], with duplicates, ends in the state the
/// in-order delivery ends in; each event is applied once. Run twice: the
/// whole sequence (5040 orders; `canceled` is final, so it also checks
/// that nothing revives a deleted subscription), and the sequence without
/// its deletion (720 orders, ending `past_due`: any older snapshot
/// applied late would show).
pub async fn webhooks_in_any_order(f: Fixture) {
    let service = Arc::new(BillingService::new(Arc::clone(&f.store), catalog()));
    for (len, orders, last) in [
        (7, 5040, SubscriptionStatus::Canceled),
        (6, 720, SubscriptionStatus::PastDue),
    ] {
        check_orders(&f, &service, len, orders, last).await;
    }
}

async fn check_orders(
    f: &Fixture,
    service: &Arc<BillingService>,
    len: usize,
    total: usize,
    last: SubscriptionStatus,
) {
    let reference_tenant = create_tenant(&f.backend).await;
    let base = an_hour_ago();
    let mut events = realistic_sequence(reference_tenant, base);
    events.truncate(len);
    let in_order: Vec<usize> = (0..events.len()).collect();
    deliver(service, &events, &in_order).await;
    let reference = f.store.state(reference_tenant).await.unwrap();
    let expected = reference.subscription.clone().unwrap();
    assert_eq!(expected.status, last);
    assert_eq!(expected.plan, "pro");
    assert!(reference.account.is_some());

    let mut orders = Vec::new();
    let mut order = in_order.clone();
    let mut n = 0usize;
    loop {
        if n.is_multiple_of(f.sample_every.max(1)) {
            orders.push(order.clone());
        }
        n += 1;
        if !next_permutation(&mut order) {
            break;
        }
    }
    assert_eq!(n, total);
    let orders = Arc::new(orders);
    let workers = 8;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let orders = Arc::clone(&orders);
        let f = f.clone();
        let service = Arc::clone(service);
        let expected = expected.clone();
        tasks.push(tokio::spawn(async move {
            for order in orders.iter().skip(w).step_by(workers) {
                let tenant = create_tenant(&f.backend).await;
                let mut events = realistic_sequence(tenant, base);
                events.truncate(len);
                deliver(&service, &events, order).await;
                let state = f.store.state(tenant).await.unwrap();
                assert_eq!(
                    outcome(state.subscription, Some(&expected)),
                    Some(expected.clone()),
                    "order {order:?}"
                );
                assert!(state.account.is_some(), "order {order:?}");
                for event in &events {
                    assert!(f.store.event_recorded(&event.id).await.unwrap());
                    assert_eq!(
                        service.apply_event(event).await.unwrap(),
                        WebhookOutcome::Duplicate
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}
/// With a provider, invoices re-fetch the subscription, and
/// reconciliation catches up on a change whose events never arrived.
pub async fn reconciliation_catches_up(f: Fixture) {
    let provider = Arc::new(FakeProvider::new());
    let service =
        BillingService::new(Arc::clone(&f.store), catalog()).with_provider(provider.clone());
    let tenant = create_tenant(&f.backend).await;
    let events = realistic_sequence(tenant, an_hour_ago());
    let sub =
        SubscriptionId::new(events[1].data.object["id"].as_str().unwrap().to_owned()).unwrap();
    let customer = CustomerId::new(
        events[1].data.object["customer"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
    .unwrap();
    provider.put_subscription(subscription_object(
        &sub,
        &customer,
        Some(tenant),
        "pro_monthly",
        "active",
        3,
    ));
    // The checkout fetches the subscription: the tenant is on pro at once.
    let outcome = service.apply_event(&events[0]).await.unwrap();
    assert!(
        matches!(outcome, WebhookOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let state = f.store.state(tenant).await.unwrap();
    assert_eq!(
        state.subscription.as_ref().map(|s| s.status),
        Some(SubscriptionStatus::Active)
    );
    assert_eq!(state.account.unwrap().customer_id, customer);

    // The provider moves on; no event arrives. Reconciliation catches up.
    provider.put_subscription(subscription_object(
        &sub,
        &customer,
        Some(tenant),
        "pro_monthly",
        "past_due",
        5,
    ));
    assert!(matches!(
        service.reconcile_tenant(tenant).await.unwrap(),
        Applied::Changed(_)
    ));
    let s = f.store.state(tenant).await.unwrap().subscription.unwrap();
    assert_eq!((s.status, s.quantity), (SubscriptionStatus::PastDue, 5));
    assert!(matches!(
        service.reconcile_tenant(tenant).await.unwrap(),
        Applied::Unchanged(_)
    ));
    let report = service.reconcile_all().await.unwrap();
    assert!(report.accounts >= 1);
    assert_eq!(report.failed, 0);

    // A late invoice event re-fetches, so an old snapshot cannot win.
    provider.put_subscription(subscription_object(
        &sub,
        &customer,
        Some(tenant),
        "pro_monthly",
        "active",
        5,
    ));
    service.apply_event(&events[3]).await.unwrap();
    let s = f.store.state(tenant).await.unwrap().subscription.unwrap();
    assert_eq!(s.status, SubscriptionStatus::Active);
    service.apply_event(&events[1]).await.unwrap();
    let s = f.store.state(tenant).await.unwrap().subscription.unwrap();
    assert_eq!(
        s.status,
        SubscriptionStatus::Active,
        "stale created event ignored"
    );

    // Unknown types are acknowledged once.
    let unknown: crate::event::ProviderEvent = serde_json::from_value(json!({
        "id": unique_id("evt"), "type": "radar.early_fraud_warning.created",
        "created": 1_893_456_000, "data": { "object": {} },
    }))
    .unwrap();
    assert_eq!(
        service.apply_event(&unknown).await.unwrap(),
        WebhookOutcome::Acknowledged
    );
    assert_eq!(
        service.apply_event(&unknown).await.unwrap(),
        WebhookOutcome::Duplicate
    );
}
