//! A fake [`BillingProvider`] in process memory, for unit tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use tenancy_core::TenantId;
use time::OffsetDateTime;

use crate::event::{Expandable, List, Price, SubscriptionItem, SubscriptionObject};
use crate::provider::{BillingProvider, CheckoutRequest, Proration, ProviderError};
use crate::subscription::{CustomerId, SubscriptionId};

#[derive(Default)]
struct State {
    customers: HashMap<TenantId, CustomerId>,
    subscriptions: BTreeMap<SubscriptionId, SubscriptionObject>,
    checkouts: Vec<CheckoutRequest>,
    usage: Vec<(CustomerId, String, u64, String)>,
    next: u64,
}

/// A provider whose objects live in memory: customers are created once per
/// tenant, checkouts are remembered, subscriptions are whatever the test
/// [puts](FakeProvider::put_subscription).
#[derive(Default)]
pub struct FakeProvider {
    state: Mutex<State>,
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider").finish_non_exhaustive()
    }
}

impl FakeProvider {
    /// An empty provider.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets (or replaces) a subscription.
    pub fn put_subscription(&self, object: SubscriptionObject) {
        self.state().subscriptions.insert(object.id.clone(), object);
    }

    /// The checkout requests made so far.
    pub fn checkouts(&self) -> Vec<CheckoutRequest> {
        self.state().checkouts.clone()
    }

    /// Usage reported so far: customer, meter, value, identifier.
    pub fn usage(&self) -> Vec<(CustomerId, String, u64, String)> {
        self.state().usage.clone()
    }

    fn update(
        &self,
        id: &SubscriptionId,
        change: impl FnOnce(&mut SubscriptionObject),
    ) -> Result<SubscriptionObject, ProviderError> {
        let mut state = self.state();
        let object = state
            .subscriptions
            .get_mut(id)
            .ok_or(ProviderError::NotFound)?;
        change(object);
        Ok(object.clone())
    }
}

/// A subscription object as a provider would send it.
pub fn subscription_object(
    id: &SubscriptionId,
    customer: &CustomerId,
    tenant: Option<TenantId>,
    lookup_key: &str,
    status: &str,
    quantity: u32,
) -> SubscriptionObject {
    let start = 1_893_456_000; // 2030-01-01
    SubscriptionObject {
        id: id.clone(),
        customer: Expandable::Id(customer.clone()),
        status: status.into(),
        cancel_at_period_end: false,
        current_period_start: None,
        current_period_end: None,
        trial_end: None,
        items: List {
            data: vec![SubscriptionItem {
                id: Some(format!("si_{}", id.as_str().trim_start_matches("sub_"))),
                price: Price {
                    id: format!("price_{lookup_key}"),
                    lookup_key: Some(lookup_key.into()),
                },
                quantity: Some(quantity),
                current_period_start: Some(start),
                current_period_end: Some(start + 30 * 86_400),
            }],
        },
        metadata: tenant
            .map(|t| BTreeMap::from([("tenant_id".to_owned(), t.to_string())]))
            .unwrap_or_default(),
    }
}

#[async_trait]
impl BillingProvider for FakeProvider {
    async fn create_customer(
        &self,
        tenant_id: TenantId,
        _name: &str,
        _email: Option<&str>,
    ) -> Result<CustomerId, ProviderError> {
        let mut state = self.state();
        if let Some(existing) = state.customers.get(&tenant_id) {
            return Ok(existing.clone());
        }
        state.next += 1;
        let id = CustomerId::new(format!("cus_fake{}", state.next))
            .map_err(|e| ProviderError::Protocol(Box::new(e)))?;
        state.customers.insert(tenant_id, id.clone());
        Ok(id)
    }

    async fn create_checkout_session(
        &self,
        request: &CheckoutRequest,
    ) -> Result<String, ProviderError> {
        let mut state = self.state();
        state.checkouts.push(request.clone());
        Ok(format!(
            "https://checkout.invalid/c/{}",
            state.checkouts.len()
        ))
    }

    async fn create_portal_session(
        &self,
        customer: &CustomerId,
        _return_url: &str,
    ) -> Result<String, ProviderError> {
        Ok(format!("https://portal.invalid/{customer}"))
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<SubscriptionObject, ProviderError> {
        self.state()
            .subscriptions
            .get(id)
            .cloned()
            .ok_or(ProviderError::NotFound)
    }

    async fn list_subscriptions(
        &self,
        customer: &CustomerId,
    ) -> Result<Vec<SubscriptionObject>, ProviderError> {
        // Ids sort by creation here; newest first.
        Ok(self
            .state()
            .subscriptions
            .values()
            .rev()
            .filter(|s| s.customer.id() == customer)
            .cloned()
            .collect())
    }

    async fn update_quantity(
        &self,
        id: &SubscriptionId,
        quantity: u32,
        _proration: Proration,
    ) -> Result<SubscriptionObject, ProviderError> {
        self.update(id, |s| {
            if let Some(item) = s.items.data.first_mut() {
                item.quantity = Some(quantity);
            }
        })
    }

    async fn cancel(
        &self,
        id: &SubscriptionId,
        at_period_end: bool,
    ) -> Result<SubscriptionObject, ProviderError> {
        self.update(id, |s| {
            if at_period_end {
                s.cancel_at_period_end = true;
            } else {
                s.status = "canceled".into();
            }
        })
    }

    async fn resume(&self, id: &SubscriptionId) -> Result<SubscriptionObject, ProviderError> {
        self.update(id, |s| s.cancel_at_period_end = false)
    }

    async fn report_usage(
        &self,
        customer: &CustomerId,
        meter: &str,
        value: u64,
        identifier: &str,
        _timestamp: OffsetDateTime,
    ) -> Result<(), ProviderError> {
        let mut state = self.state();
        if !state.usage.iter().any(|u| u.3 == identifier) {
            state
                .usage
                .push((customer.clone(), meter.into(), value, identifier.into()));
        }
        Ok(())
    }
}
