//! The conformance suite every [`BillingStore`] must pass (feature
//! `testkit`).
//!
//! Each suite takes a fresh [`Fixture`] (the store under test and the
//! tenancy-core backend holding tenants and the audit log) and checks,
//! through the public trait only: account links and their conflicts,
//! webhooks delivered in every order with duplicates ending in the
//! in-order state, reconciliation from a provider,
//! subscription syncs applied once and never backwards (also under
//! concurrent deliveries of one event), overrides and their limit,
//! isolation between tenants, audit events, and the entitlement cache
//! following revisions. The memory and Postgres adapters run the identical
//! suites; a third-party store proves itself the same way:
//!
//! ```ignore
//! async fn my_fixture() -> Option<tenancy_billing::testkit::Fixture> { /* … */ }
//! tenancy_billing::conformance_tests!(my_fixture());
//! ```
//!
//! Suites panic on the first failed check, like any test assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "stripe")]
pub mod fake_stripe;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod provider;
#[cfg(all(feature = "http", feature = "stripe"))]
pub mod scenarios;
mod suites;
pub mod webhooks;

use std::sync::Arc;

use tenancy_core::{
    AuditContext, Backend, Directory, Email, NewTenant, NewUser, Owner, Slug, TenantId, TenantName,
};
use time::OffsetDateTime;

#[cfg(feature = "memory")]
use crate::store::MemoryBillingStore;
use crate::store::{BillingStore, EventRecord};
use crate::subscription::{CustomerId, EventId, Subscription, SubscriptionId, SubscriptionStatus};

pub use suites::{
    accounts, audit_trail, cache_follows_revisions, concurrent_deliveries, overrides,
    subscriptions_apply_once_and_never_backwards, tenant_isolation,
};
pub use webhooks::{reconciliation_catches_up, webhooks_in_any_order};

/// What a suite runs against.
#[derive(Clone)]
pub struct Fixture {
    /// Holds tenants and the audit log.
    pub backend: Arc<dyn Backend>,
    /// The store under test.
    pub store: Arc<dyn BillingStore>,
    /// [`webhooks_in_any_order`] tries every `sample_every`-th of the 5040
    /// orders (1: all of them).
    pub sample_every: usize,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").finish_non_exhaustive()
    }
}

/// A fixture over a fresh `MemoryBackend` and [`MemoryBillingStore`].
#[cfg(feature = "memory")]
pub async fn memory() -> Option<Fixture> {
    let backend: Arc<dyn Backend> = Arc::new(tenancy_core::MemoryBackend::new());
    let store = Arc::new(MemoryBillingStore::new(Arc::clone(&backend)));
    Some(Fixture {
        backend,
        store,
        sample_every: 1,
    })
}

/// Generates one `#[tokio::test]` per conformance suite. `$fixture` is an
/// expression evaluating to a future of `Option<Fixture>`, run afresh for
/// every test; `None` skips the test.
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@suites $fixture;
            accounts, subscriptions_apply_once_and_never_backwards, concurrent_deliveries,
            overrides, tenant_isolation, audit_trail, cache_follows_revisions,
            webhooks_in_any_order, reconciliation_catches_up
        );
    };
    (@suites $fixture:expr; $($suite:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $suite() {
                if let Some(fixture) = $fixture.await {
                    $crate::testkit::$suite(fixture).await;
                }
            }
        )+
    };
}

/// Creates a tenant with a fresh owner in the fixture's backend.
pub async fn create_tenant(backend: &Arc<dyn Backend>) -> TenantId {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let slug = format!("t-{}", &suffix[suffix.len() - 12..]);
    let created = Directory::new(Arc::clone(backend))
        .create_tenant(
            NewTenant::new(
                Slug::new(slug.clone()).unwrap(),
                TenantName::new(&slug).unwrap(),
            ),
            Owner::New(NewUser::new(
                Email::new(&format!("owner@{slug}.test")).unwrap(),
            )),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    created.tenant.id
}

/// A unique provider id with `prefix` (`cus`, `sub`, `evt`).
pub fn unique_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// An event record with a fresh id.
pub fn event(event_type: &str) -> EventRecord {
    EventRecord {
        id: EventId::new(unique_id("evt")).unwrap(),
        event_type: event_type.into(),
        received_at: tenancy_core::truncate_to_micros(OffsetDateTime::now_utc()),
    }
}

/// A subscription snapshot of `customer` on `plan`, observed at
/// `2030-01-01 + minute` minutes.
pub fn subscription(
    id: &SubscriptionId,
    customer: &CustomerId,
    plan: &str,
    status: SubscriptionStatus,
    minute: i64,
) -> Subscription {
    let start = time::macros::datetime!(2030-01-01 0:00 UTC);
    Subscription {
        id: id.clone(),
        customer_id: customer.clone(),
        plan: plan.into(),
        status,
        current_period_start: start,
        current_period_end: start + time::Duration::days(30),
        cancel_at_period_end: false,
        quantity: 1,
        trial_end: None,
        past_due_since: None,
        observed_at: start + time::Duration::minutes(minute),
    }
}
