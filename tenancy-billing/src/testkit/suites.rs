//! The suites.

use std::sync::Arc;

use tenancy_core::{ActionFilter, AuditContext, AuditLog, AuditQuery, PageRequest, TenantId};
use time::macros::datetime;

use super::{Fixture, create_tenant, event, subscription, unique_id};
use crate::access::AccessPolicy;
use crate::cache::EntitlementCache;
use crate::catalog::{Catalog, CatalogDocument, Enforcement, Limit, PlanDocument};
use crate::entitlements::Revision;
use crate::overrides::{MAX_OVERRIDES, Override, OverrideChange, OverrideId};
use crate::store::{Applied, BillingStoreError};
use crate::subscription::{CustomerId, SubscriptionId, SubscriptionStatus};

fn customer() -> CustomerId {
    CustomerId::new(unique_id("cus")).unwrap()
}

fn sub_id() -> SubscriptionId {
    SubscriptionId::new(unique_id("sub")).unwrap()
}

fn sys() -> AuditContext {
    AuditContext::system()
}

fn an_override(tenant_id: TenantId, feature: &str, change: OverrideChange) -> Override {
    Override {
        id: OverrideId::new(),
        tenant_id,
        feature: feature.into(),
        change,
        expires_at: None,
        reason: "support ticket 42".into(),
        created_at: tenancy_core::truncate_to_micros(time::OffsetDateTime::now_utc()),
    }
}

/// Links, relinks, conflicts, routing by customer and the admin listing.
pub async fn accounts(f: Fixture) {
    let a = create_tenant(&f.backend).await;
    let b = create_tenant(&f.backend).await;
    let ca = customer();
    let cb = customer();
    let linked = f.store.link_customer(a, &ca, None, &sys()).await.unwrap();
    assert_eq!(linked, Applied::Changed(Revision(1)));
    assert_eq!(
        f.store.link_customer(a, &ca, None, &sys()).await.unwrap(),
        Applied::Unchanged(Revision(1))
    );
    assert!(matches!(
        f.store.link_customer(a, &cb, None, &sys()).await,
        Err(BillingStoreError::AccountMismatch)
    ));
    assert!(matches!(
        f.store.link_customer(b, &ca, None, &sys()).await,
        Err(BillingStoreError::CustomerTaken)
    ));
    assert!(matches!(
        f.store
            .link_customer(TenantId::new(), &customer(), None, &sys())
            .await,
        Err(BillingStoreError::TenantNotFound)
    ));
    f.store.link_customer(b, &cb, None, &sys()).await.unwrap();
    assert_eq!(f.store.tenant_of_customer(&ca).await.unwrap(), Some(a));
    assert_eq!(f.store.tenant_of_customer(&cb).await.unwrap(), Some(b));
    assert_eq!(f.store.tenant_of_customer(&customer()).await.unwrap(), None);
    let state = f.store.state(a).await.unwrap();
    assert_eq!(state.account.as_ref().map(|x| &x.customer_id), Some(&ca));
    assert_eq!(state.revision, Revision(1));

    let first = f.store.list_accounts(None, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let rest = f
        .store
        .list_accounts(Some(first[0].tenant_id), 10)
        .await
        .unwrap();
    let mut all: Vec<TenantId> = first.iter().chain(&rest).map(|x| x.tenant_id).collect();
    all.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(all, expected);
}

/// Duplicates change nothing, older snapshots never replace newer ones,
/// final states stay final, grace counts from the first `past_due`.
pub async fn subscriptions_apply_once_and_never_backwards(f: Fixture) {
    let t = create_tenant(&f.backend).await;
    let c = customer();
    let s = sub_id();
    let created = event("customer.subscription.created");
    let active = subscription(&s, &c, "pro", SubscriptionStatus::Active, 10);
    assert_eq!(
        f.store
            .sync_subscription(t, &active, Some(&created), &sys())
            .await
            .unwrap(),
        Applied::Changed(Revision(2)),
        "linking the customer and storing the subscription"
    );
    assert!(f.store.event_recorded(&created.id).await.unwrap());
    assert_eq!(
        f.store
            .sync_subscription(t, &active, Some(&created), &sys())
            .await
            .unwrap(),
        Applied::Duplicate
    );
    assert_eq!(f.store.tenant_of_customer(&c).await.unwrap(), Some(t));

    // An older snapshot arriving late is recorded but does not apply.
    let late = event("customer.subscription.updated");
    let older = subscription(&s, &c, "pro", SubscriptionStatus::Incomplete, 5);
    assert_eq!(
        f.store
            .sync_subscription(t, &older, Some(&late), &sys())
            .await
            .unwrap(),
        Applied::Unchanged(Revision(2))
    );
    assert!(f.store.event_recorded(&late.id).await.unwrap());
    let state = f.store.state(t).await.unwrap();
    assert_eq!(
        state.subscription.as_ref().unwrap().status,
        SubscriptionStatus::Active
    );

    // A newer snapshot with the same content moves the guard, not the revision.
    let same = subscription(&s, &c, "pro", SubscriptionStatus::Active, 30);
    assert_eq!(
        f.store
            .sync_subscription(t, &same, None, &sys())
            .await
            .unwrap(),
        Applied::Unchanged(Revision(2))
    );
    let between = subscription(&s, &c, "pro", SubscriptionStatus::PastDue, 20);
    assert_eq!(
        f.store
            .sync_subscription(t, &between, None, &sys())
            .await
            .unwrap(),
        Applied::Unchanged(Revision(2)),
        "a snapshot older than the last one seen must not apply"
    );

    // past_due twice: grace counts from the first.
    let due1 = subscription(&s, &c, "pro", SubscriptionStatus::PastDue, 40);
    let due2 = subscription(&s, &c, "pro", SubscriptionStatus::PastDue, 50);
    f.store
        .sync_subscription(t, &due1, None, &sys())
        .await
        .unwrap();
    let mut due2_changed = due2.clone();
    due2_changed.quantity = 2;
    f.store
        .sync_subscription(t, &due2_changed, None, &sys())
        .await
        .unwrap();
    let state = f.store.state(t).await.unwrap();
    let stored = state.subscription.unwrap();
    assert_eq!(stored.past_due_since, Some(due1.observed_at));
    assert_eq!(stored.quantity, 2);
    assert_eq!(state.revision, Revision(4));

    // Canceled is final for this subscription…
    let canceled = subscription(&s, &c, "pro", SubscriptionStatus::Canceled, 60);
    assert_eq!(
        f.store
            .sync_subscription(t, &canceled, None, &sys())
            .await
            .unwrap(),
        Applied::Changed(Revision(5))
    );
    let revived = subscription(&s, &c, "pro", SubscriptionStatus::Active, 70);
    assert_eq!(
        f.store
            .sync_subscription(t, &revived, None, &sys())
            .await
            .unwrap(),
        Applied::Unchanged(Revision(5))
    );
    // …but a new subscription replaces it.
    let renewed = subscription(&sub_id(), &c, "team", SubscriptionStatus::Trialing, 80);
    assert_eq!(
        f.store
            .sync_subscription(t, &renewed, None, &sys())
            .await
            .unwrap(),
        Applied::Changed(Revision(6))
    );
    assert_eq!(
        f.store.state(t).await.unwrap().subscription.unwrap().plan,
        "team"
    );

    // Another tenant's customer is refused, and nothing is recorded.
    let other = create_tenant(&f.backend).await;
    let refused = event("customer.subscription.created");
    assert!(matches!(
        f.store
            .sync_subscription(other, &renewed, Some(&refused), &sys())
            .await,
        Err(BillingStoreError::CustomerTaken)
    ));
    assert!(!f.store.event_recorded(&refused.id).await.unwrap());

    // Events that change no state are recorded once.
    let unknown = event("radar.early_fraud_warning.created");
    assert!(f.store.record_event(&unknown).await.unwrap());
    assert!(!f.store.record_event(&unknown).await.unwrap());
}

/// One event delivered many times at once is applied exactly once.
pub async fn concurrent_deliveries(f: Fixture) {
    let t = create_tenant(&f.backend).await;
    let c = customer();
    let s = sub_id();
    let e = event("customer.subscription.created");
    let snapshot = subscription(&s, &c, "pro", SubscriptionStatus::Active, 1);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&f.store);
        let e = e.clone();
        let snapshot = snapshot.clone();
        tasks.push(tokio::spawn(async move {
            store
                .sync_subscription(t, &snapshot, Some(&e), &AuditContext::system())
                .await
                .unwrap()
        }));
    }
    let mut changed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Applied::Changed(_) => changed += 1,
            Applied::Duplicate => {}
            Applied::Unchanged(r) => panic!("unexpected unchanged at {r}"),
        }
    }
    assert_eq!(changed, 1);
    assert_eq!(f.store.state(t).await.unwrap().revision, Revision(2));
}

/// Overrides round trip, are removed by id, and are limited per tenant.
pub async fn overrides(f: Fixture) {
    let t = create_tenant(&f.backend).await;
    let mut first = an_override(t, "sso", OverrideChange::Enable);
    first.expires_at = Some(datetime!(2099-01-01 0:00 UTC));
    let second = an_override(t, "seats", OverrideChange::AddToLimit(5));
    assert_eq!(
        f.store.add_override(&first, &sys()).await.unwrap(),
        Revision(1)
    );
    assert_eq!(
        f.store.add_override(&second, &sys()).await.unwrap(),
        Revision(2)
    );
    let state = f.store.state(t).await.unwrap();
    assert_eq!(state.overrides, vec![first.clone(), second.clone()]);
    assert_eq!(
        f.store.remove_override(t, first.id, &sys()).await.unwrap(),
        Revision(3)
    );
    assert!(matches!(
        f.store.remove_override(t, first.id, &sys()).await,
        Err(BillingStoreError::OverrideNotFound)
    ));
    assert_eq!(f.store.state(t).await.unwrap().overrides, vec![second]);
    assert!(matches!(
        f.store
            .add_override(
                &an_override(TenantId::new(), "sso", OverrideChange::Enable),
                &sys()
            )
            .await,
        Err(BillingStoreError::TenantNotFound)
    ));
    for _ in 1..MAX_OVERRIDES {
        f.store
            .add_override(
                &an_override(t, "seats", OverrideChange::AddToLimit(1)),
                &sys(),
            )
            .await
            .unwrap();
    }
    assert!(matches!(
        f.store
            .add_override(
                &an_override(t, "seats", OverrideChange::AddToLimit(1)),
                &sys()
            )
            .await,
        Err(BillingStoreError::TooManyOverrides { max: MAX_OVERRIDES })
    ));
}

/// One tenant's billing state is invisible to another.
pub async fn tenant_isolation(f: Fixture) {
    let a = create_tenant(&f.backend).await;
    let b = create_tenant(&f.backend).await;
    let c = customer();
    let snapshot = subscription(&sub_id(), &c, "pro", SubscriptionStatus::Active, 1);
    f.store
        .sync_subscription(a, &snapshot, None, &sys())
        .await
        .unwrap();
    let o = an_override(a, "sso", OverrideChange::Enable);
    f.store.add_override(&o, &sys()).await.unwrap();
    let seen = f.store.state(b).await.unwrap();
    assert_eq!(seen, crate::BillingState::default());
    assert!(matches!(
        f.store.remove_override(b, o.id, &sys()).await,
        Err(BillingStoreError::OverrideNotFound)
    ));
    assert_eq!(f.store.state(a).await.unwrap().overrides.len(), 1);
}

/// Each change appends its audit event; duplicates and stale snapshots
/// append none.
pub async fn audit_trail(f: Fixture) {
    let t = create_tenant(&f.backend).await;
    let c = customer();
    let s = sub_id();
    let e = event("customer.subscription.created");
    let active = subscription(&s, &c, "pro", SubscriptionStatus::Active, 10);
    f.store
        .sync_subscription(t, &active, Some(&e), &AuditContext::system())
        .await
        .unwrap();
    f.store
        .sync_subscription(t, &active, Some(&e), &sys())
        .await
        .unwrap();
    let stale = subscription(&s, &c, "pro", SubscriptionStatus::Canceled, 1);
    f.store
        .sync_subscription(t, &stale, None, &sys())
        .await
        .unwrap();
    let o = an_override(t, "sso", OverrideChange::Enable);
    f.store.add_override(&o, &sys()).await.unwrap();
    f.store.remove_override(t, o.id, &sys()).await.unwrap();
    let events = f
        .backend
        .query_audit(
            t,
            &AuditQuery::all().action(ActionFilter::parse("billing.*").unwrap()),
            &PageRequest::default(),
        )
        .await
        .unwrap()
        .items;
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.action.as_str(), e.target.target_type.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("billing.account.linked", "billing_customer"),
            ("billing.subscription.changed", "subscription"),
            ("billing.override.created", "billing_override"),
            ("billing.override.removed", "billing_override"),
        ]
    );
    let changed = &events[1];
    let details = changed.metadata.as_map();
    assert_eq!(details["status"], "active");
    assert_eq!(details["event"], e.id.as_str());
    assert!(f.backend.verify_chain(t).await.unwrap().is_intact());
}

fn catalog() -> Catalog {
    Catalog::from_document(
        &CatalogDocument::new("free")
            .gate("sso")
            .limit("seats", None, Enforcement::Hard)
            .plan("free", PlanDocument::default().grant("seats", 3))
            .plan(
                "pro",
                PlanDocument::default()
                    .lookup_key("pro")
                    .grant("sso", true)
                    .grant("seats", 50),
            ),
    )
    .unwrap()
}

/// The cache resolves, holds, and follows revisions once told.
pub async fn cache_follows_revisions(f: Fixture) {
    let catalog = catalog();
    let sso = catalog.feature("sso").unwrap();
    let seats = catalog.feature("seats").unwrap();
    let cache = EntitlementCache::new(Arc::clone(&f.store), catalog, AccessPolicy::new());
    let t = create_tenant(&f.backend).await;
    let free = cache.get(t).await.unwrap();
    assert!(!free.check(sso));
    assert_eq!(free.limit(seats), Some(Limit::Max(3)));
    assert!(Arc::ptr_eq(&free, &cache.get(t).await.unwrap()), "cached");

    let c = customer();
    let r = f
        .store
        .sync_subscription(
            t,
            &subscription(&sub_id(), &c, "pro", SubscriptionStatus::Active, 1),
            None,
            &sys(),
        )
        .await
        .unwrap();
    let Applied::Changed(revision) = r else {
        panic!("expected a change, got {r:?}")
    };
    assert!(!cache.get(t).await.unwrap().check(sso), "not yet told");
    cache
        .apply_notification(&format!("{t}:{revision}"))
        .unwrap();
    let pro = cache.get(t).await.unwrap();
    assert!(pro.check(sso));
    assert_eq!(pro.revision(), revision);
    assert_eq!(pro.plan(), "pro");
    cache
        .apply_notification(&format!("{t}:{}", revision.0 - 1))
        .unwrap();
    assert!(
        Arc::ptr_eq(&pro, &cache.get(t).await.unwrap()),
        "older notice ignored"
    );

    let o = an_override(t, "seats", OverrideChange::AddToLimit(5));
    let r = f.store.add_override(&o, &sys()).await.unwrap();
    cache.observe_revision(t, r);
    assert_eq!(
        cache.get(t).await.unwrap().limit(seats),
        Some(Limit::Max(55))
    );
    assert!(cache.apply_notification("nonsense").is_err());
    cache.forget_all();
    assert_eq!(cache.cached_tenants(), 0);
}
