//! The provider objects billing reads: events and the subscription,
//! checkout session and invoice inside them, typed after Stripe's API
//! (fields billing does not use are ignored).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tenancy_core::TenantId;
use time::OffsetDateTime;

use crate::catalog::Catalog;
use crate::subscription::{CustomerId, EventId, Subscription, SubscriptionId, SubscriptionStatus};

/// The metadata key carrying the tenant id on customers, checkout sessions
/// and subscriptions this crate creates.
pub const TENANT_METADATA_KEY: &str = "tenant_id";

/// An event as the provider sends it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ProviderEvent {
    /// Its id (`evt_…`).
    pub id: EventId,
    /// Its type (`customer.subscription.updated`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the provider created it (unix seconds).
    pub created: i64,
    /// The object it is about.
    pub data: EventData,
}

/// The `data` of an event.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct EventData {
    /// The object, as of the event.
    pub object: serde_json::Value,
}

/// A reference the provider may send as an id or as the expanded object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Expandable<T> {
    /// Just the id.
    Id(T),
    /// The expanded object (only its id is read).
    Object {
        /// Its id.
        id: T,
    },
}

impl<T> Expandable<T> {
    /// The id.
    pub fn id(&self) -> &T {
        match self {
            Expandable::Id(id) | Expandable::Object { id } => id,
        }
    }
}

/// A subscription object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SubscriptionObject {
    /// `sub_…`.
    pub id: SubscriptionId,
    /// The customer.
    pub customer: Expandable<CustomerId>,
    /// The status, as the provider names it.
    pub status: String,
    /// Ends at period end rather than renewing.
    #[serde(default)]
    pub cancel_at_period_end: bool,
    /// Start of the period (top level before API version 2025-03-31).
    #[serde(default)]
    pub current_period_start: Option<i64>,
    /// End of the period (top level before API version 2025-03-31).
    #[serde(default)]
    pub current_period_end: Option<i64>,
    /// End of the trial.
    #[serde(default)]
    pub trial_end: Option<i64>,
    /// Its items: the first one's price names the plan.
    pub items: List<SubscriptionItem>,
    /// Metadata, where [`TENANT_METADATA_KEY`] names the tenant.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A list object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct List<T> {
    /// The items.
    pub data: Vec<T>,
}

/// A subscription item.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SubscriptionItem {
    /// `si_…` (needed to change the quantity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The price.
    pub price: Price,
    /// The quantity (seats).
    #[serde(default)]
    pub quantity: Option<u32>,
    /// Start of the period (on items since API version 2025-03-31).
    #[serde(default)]
    pub current_period_start: Option<i64>,
    /// End of the period (on items since API version 2025-03-31).
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

/// A price.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Price {
    /// `price_…`.
    pub id: String,
    /// The lookup key the catalog's plans name.
    #[serde(default)]
    pub lookup_key: Option<String>,
}

/// A checkout session object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct CheckoutSessionObject {
    /// `cs_…`.
    pub id: String,
    /// The customer (set once completed).
    #[serde(default)]
    pub customer: Option<Expandable<CustomerId>>,
    /// The tenant, as given when the session was created.
    #[serde(default)]
    pub client_reference_id: Option<String>,
    /// The subscription created (subscription mode).
    #[serde(default)]
    pub subscription: Option<Expandable<SubscriptionId>>,
    /// Metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// An invoice object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct InvoiceObject {
    /// `in_…`.
    pub id: String,
    /// The customer.
    #[serde(default)]
    pub customer: Option<Expandable<CustomerId>>,
    /// The subscription it bills (API versions before 2025-03-31; since
    /// then in `parent.subscription_details`).
    #[serde(default)]
    pub subscription: Option<Expandable<SubscriptionId>>,
    /// What generated it (API versions from 2025-03-31).
    #[serde(default)]
    pub parent: Option<InvoiceParent>,
}

/// What generated an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct InvoiceParent {
    /// Set when a subscription did.
    #[serde(default)]
    pub subscription_details: Option<InvoiceSubscriptionDetails>,
}

/// The subscription behind an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct InvoiceSubscriptionDetails {
    /// The subscription.
    pub subscription: Expandable<SubscriptionId>,
    /// The subscription's metadata when the invoice was made.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl InvoiceObject {
    /// The subscription it bills, wherever the API version puts it.
    pub fn subscription_id(&self) -> Option<&SubscriptionId> {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .map(|d| d.subscription.id())
            .or(self.subscription.as_ref().map(Expandable::id))
    }

    /// The tenant named in the subscription's metadata, if any.
    pub fn tenant(&self) -> Option<TenantId> {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .and_then(|d| d.metadata.get(TENANT_METADATA_KEY))
            .and_then(|t| t.parse().ok())
    }
}

/// A subscription object could not be read as a [`Subscription`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The status is not one billing knows.
    #[error("unknown subscription status")]
    UnknownStatus,
    /// No item, so no price and no plan.
    #[error("subscription has no items")]
    NoItems,
    /// No current period.
    #[error("subscription has no current period")]
    NoPeriod,
    /// A timestamp out of range.
    #[error("timestamp out of range")]
    Timestamp,
}

fn at(seconds: i64) -> Result<OffsetDateTime, ObjectError> {
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| ObjectError::Timestamp)
}

impl SubscriptionObject {
    /// The tenant named in its metadata, if any.
    pub fn tenant(&self) -> Option<TenantId> {
        self.metadata
            .get(TENANT_METADATA_KEY)
            .and_then(|t| t.parse().ok())
    }

    /// The snapshot to store, as observed at `observed_at`: the plan is the
    /// catalog plan whose lookup key the first item's price carries (or,
    /// failing that, the lookup key or price id itself, which resolves to
    /// the default plan).
    pub fn to_subscription(
        &self,
        catalog: &Catalog,
        observed_at: OffsetDateTime,
    ) -> Result<Subscription, ObjectError> {
        let status: SubscriptionStatus = self
            .status
            .parse()
            .map_err(|_| ObjectError::UnknownStatus)?;
        let item = self.items.data.first().ok_or(ObjectError::NoItems)?;
        let plan = match item.price.lookup_key.as_deref() {
            Some(key) => catalog
                .plan_by_lookup_key(key)
                .map_or_else(|| key.to_owned(), |p| p.key().to_owned()),
            None => item.price.id.clone(),
        };
        let start = self
            .current_period_start
            .or(item.current_period_start)
            .ok_or(ObjectError::NoPeriod)?;
        let end = self
            .current_period_end
            .or(item.current_period_end)
            .ok_or(ObjectError::NoPeriod)?;
        Ok(Subscription {
            id: self.id.clone(),
            customer_id: self.customer.id().clone(),
            plan,
            status,
            current_period_start: at(start)?,
            current_period_end: at(end)?,
            cancel_at_period_end: self.cancel_at_period_end,
            quantity: item.quantity.unwrap_or(1),
            trial_end: self.trial_end.map(at).transpose()?,
            past_due_since: None,
            observed_at: tenancy_core::truncate_to_micros(observed_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogDocument, PlanDocument};
    use serde_json::json;

    #[test]
    fn invoices_name_their_subscription_in_either_shape() {
        let basil: InvoiceObject = serde_json::from_value(json!({
            "id": "in_1", "customer": "cus_1",
            "parent": { "type": "subscription_details", "subscription_details": {
                "subscription": "sub_1", "metadata": { "tenant_id": "0190a0b0-0000-7000-8000-000000000001" },
            }},
        }))
        .unwrap();
        assert_eq!(basil.subscription_id().unwrap().as_str(), "sub_1");
        assert!(basil.tenant().is_some());
        let legacy: InvoiceObject = serde_json::from_value(
            json!({ "id": "in_2", "customer": "cus_1", "subscription": "sub_2" }),
        )
        .unwrap();
        assert_eq!(legacy.subscription_id().unwrap().as_str(), "sub_2");
        assert_eq!(legacy.tenant(), None);
    }

    #[test]
    fn subscriptions_read_periods_from_items_or_top_level() {
        let catalog = Catalog::from_document(
            &CatalogDocument::new("free")
                .plan("free", PlanDocument::default())
                .plan("pro", PlanDocument::default().lookup_key("pro_monthly")),
        )
        .unwrap();
        let basil: SubscriptionObject = serde_json::from_value(json!({
            "id": "sub_1", "customer": { "id": "cus_1", "object": "customer" }, "status": "past_due",
            "items": { "data": [{ "id": "si_1", "quantity": 4,
                "price": { "id": "price_1", "lookup_key": "pro_monthly" },
                "current_period_start": 1_900_000_000, "current_period_end": 1_902_592_000 }] },
        }))
        .unwrap();
        let at = time::OffsetDateTime::from_unix_timestamp(1_900_000_100).unwrap();
        let s = basil.to_subscription(&catalog, at).unwrap();
        assert_eq!(
            (s.plan.as_str(), s.quantity, s.status),
            ("pro", 4, SubscriptionStatus::PastDue)
        );
        assert_eq!(s.customer_id.as_str(), "cus_1");
        assert_eq!(s.current_period_start.unix_timestamp(), 1_900_000_000);
        let mut legacy = basil.clone();
        legacy.items.data[0].current_period_start = None;
        legacy.items.data[0].current_period_end = None;
        assert_eq!(
            legacy.to_subscription(&catalog, at),
            Err(ObjectError::NoPeriod)
        );
        legacy.current_period_start = Some(1);
        legacy.current_period_end = Some(2);
        assert!(legacy.to_subscription(&catalog, at).is_ok());
        let mut odd = basil;
        odd.status = "exploded".into();
        assert_eq!(
            odd.to_subscription(&catalog, at),
            Err(ObjectError::UnknownStatus)
        );
    }
}
