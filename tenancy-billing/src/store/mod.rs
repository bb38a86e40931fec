//! The billing store: accounts, subscriptions, overrides and processed
//! webhook events, tenant-scoped, versioned and audited.
//!
//! Every tenant has a [`Revision`] that moves on each change of its billing
//! state; [`crate::EntitlementCache`] compares revisions to know when a
//! snapshot is out of date.
//!
//! Provider events are applied **once** and **never backwards**:
//! [`BillingStore::sync_subscription`] records the event id in the same
//! transaction (or, in memory, under the same lock) as the change it
//! causes, answers [`Applied::Duplicate`] for an id already recorded, and
//! keeps the stored subscription when the incoming snapshot does not
//! [supersede](crate::Subscription::supersedes) it.
//!
//! Each change appends an audit event (`billing.subscription.changed`, …) to
//! tenancy-core's [`tenancy_core::AuditLog`]: on Postgres in the same
//! transaction; in memory see [`MemoryBillingStore`].

#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenancy_core::{
    AuditAction, AuditContext, Metadata, NewAuditEvent, StoreError, Target, TenantId,
};
use time::OffsetDateTime;

use crate::entitlements::{BillingState, Revision};
use crate::overrides::{Override, OverrideId};
use crate::subscription::{BillingAccount, CustomerId, EventId, Subscription};

#[cfg(feature = "memory")]
pub use memory::MemoryBillingStore;

/// Most accounts one call to [`BillingStore::list_accounts`] returns.
pub const MAX_ACCOUNTS_PAGE: usize = 500;

/// The audit actions billing changes record.
pub mod actions {
    /// A tenant was linked to a provider customer.
    pub const ACCOUNT_LINKED: &str = "billing.account.linked";
    /// The tenant's subscription changed (plan, status, period, quantity).
    pub const SUBSCRIPTION_CHANGED: &str = "billing.subscription.changed";
    /// An override was added.
    pub const OVERRIDE_CREATED: &str = "billing.override.created";
    /// An override was removed.
    pub const OVERRIDE_REMOVED: &str = "billing.override.removed";
}

/// A provider event being applied, recorded so it is applied once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The provider's event id.
    pub id: EventId,
    /// Its type (`customer.subscription.updated`).
    pub event_type: String,
    /// When it was received.
    pub received_at: OffsetDateTime,
}

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The state changed; the tenant is at this revision now.
    Changed(Revision),
    /// Nothing to change (already so, or an older snapshot than the stored
    /// one); the event, if any, is recorded. The tenant's revision.
    Unchanged(Revision),
    /// The event was applied before; nothing was done.
    Duplicate,
}

/// What a billing store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BillingStoreError {
    /// The tenant does not exist.
    #[error("tenant not found")]
    TenantNotFound,
    /// The customer is linked to another tenant.
    #[error("customer is linked to another tenant")]
    CustomerTaken,
    /// The tenant is linked to another customer.
    #[error("tenant is linked to another customer")]
    AccountMismatch,
    /// No such override in this tenant.
    #[error("override not found")]
    OverrideNotFound,
    /// The tenant holds the most overrides allowed.
    #[error("a tenant may hold at most {max} overrides")]
    TooManyOverrides {
        /// The limit.
        max: usize,
    },
    /// The backend or the audit log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BillingStoreError {
    #[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
    pub(crate) fn from_audit(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(tenancy_core::Entity::Tenant) => Self::TenantNotFound,
            other => Self::Store(other),
        }
    }
}

/// Billing state of every tenant. Object-safe: hold it as
/// `Arc<dyn BillingStore>`.
#[async_trait]
pub trait BillingStore: Send + Sync {
    /// Everything known of the tenant, read at one revision (an empty state
    /// at revision 0 for a tenant never billed).
    async fn state(&self, tenant_id: TenantId) -> Result<BillingState, BillingStoreError>;

    /// The tenant linked to `customer`, if any (webhook routing: read
    /// before the tenant is known).
    async fn tenant_of_customer(
        &self,
        customer: &CustomerId,
    ) -> Result<Option<TenantId>, BillingStoreError>;

    /// Links the tenant to `customer`, recording `event` if given and
    /// `billing.account.linked`. Linking again to the same customer changes
    /// nothing.
    ///
    /// Errors: [`BillingStoreError::CustomerTaken`],
    /// [`BillingStoreError::AccountMismatch`],
    /// [`BillingStoreError::TenantNotFound`].
    async fn link_customer(
        &self,
        tenant_id: TenantId,
        customer: &CustomerId,
        event: Option<&EventRecord>,
        audit: &AuditContext,
    ) -> Result<Applied, BillingStoreError>;

    /// Stores `subscription` as the tenant's if it supersedes the stored
    /// one (linking the tenant to its customer if not yet linked), with
    /// `event` recorded in the same transaction, and records
    /// `billing.subscription.changed`. `past_due_since` is carried over
    /// from the stored snapshot.
    ///
    /// Errors: as [`BillingStore::link_customer`].
    async fn sync_subscription(
        &self,
        tenant_id: TenantId,
        subscription: &Subscription,
        event: Option<&EventRecord>,
        audit: &AuditContext,
    ) -> Result<Applied, BillingStoreError>;

    /// Records an event that changes no tenant state (an unknown type, an
    /// invoice): `false` if it was recorded before.
    async fn record_event(&self, event: &EventRecord) -> Result<bool, BillingStoreError>;

    /// Whether the event was recorded.
    async fn event_recorded(&self, id: &EventId) -> Result<bool, BillingStoreError>;

    /// Adds an override (validated by the caller against the catalog) and
    /// records `billing.override.created`. Returns the new revision.
    ///
    /// Errors: [`BillingStoreError::TooManyOverrides`],
    /// [`BillingStoreError::TenantNotFound`].
    async fn add_override(
        &self,
        fields: &Override,
        audit: &AuditContext,
    ) -> Result<Revision, BillingStoreError>;

    /// Removes an override and records `billing.override.removed`.
    /// Returns the new revision.
    ///
    /// Errors: [`BillingStoreError::OverrideNotFound`].
    async fn remove_override(
        &self,
        tenant_id: TenantId,
        id: OverrideId,
        audit: &AuditContext,
    ) -> Result<Revision, BillingStoreError>;

    /// Every billing account, by tenant id, after `after`, at most `limit`
    /// (capped at [`MAX_ACCOUNTS_PAGE`]): an admin read across tenants, for
    /// reconciliation.
    async fn list_accounts(
        &self,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<BillingAccount>, BillingStoreError>;
}

/// A change, described for its audit event.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) enum Change<'a> {
    Linked {
        customer: &'a CustomerId,
    },
    Subscription {
        subscription: &'a Subscription,
        previous: Option<&'a Subscription>,
    },
    OverrideAdded {
        fields: &'a Override,
    },
    OverrideRemoved {
        id: OverrideId,
    },
}

#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
impl Change<'_> {
    pub(crate) fn audit_event(
        &self,
        context: &AuditContext,
        revision: Revision,
        event: Option<&EventRecord>,
        at: OffsetDateTime,
    ) -> Result<NewAuditEvent, BillingStoreError> {
        let invalid = |e| BillingStoreError::Store(StoreError::InvalidInput(e));
        let event_id = event.map(|e| e.id.as_str());
        let (action, target, details) = match self {
            Change::Linked { customer } => (
                actions::ACCOUNT_LINKED,
                Target::new("billing_customer", customer.as_str()).map_err(invalid)?,
                json!({ "revision": revision.0, "event": event_id }),
            ),
            Change::Subscription {
                subscription,
                previous,
            } => (
                actions::SUBSCRIPTION_CHANGED,
                Target::new("subscription", subscription.id.as_str()).map_err(invalid)?,
                json!({
                    "revision": revision.0,
                    "event": event_id,
                    "plan": subscription.plan,
                    "status": subscription.status,
                    "quantity": subscription.quantity,
                    "cancel_at_period_end": subscription.cancel_at_period_end,
                    "previous_plan": previous.map(|p| p.plan.as_str()),
                    "previous_status": previous.map(|p| p.status),
                }),
            ),
            Change::OverrideAdded { fields } => (
                actions::OVERRIDE_CREATED,
                Target::new("billing_override", fields.id).map_err(invalid)?,
                json!({
                    "revision": revision.0,
                    "feature": fields.feature,
                    "change": fields.change,
                    "expires_at": fields.expires_at.map(|t| t.unix_timestamp()),
                    "reason": fields.reason,
                }),
            ),
            Change::OverrideRemoved { id } => (
                actions::OVERRIDE_REMOVED,
                Target::new("billing_override", id).map_err(invalid)?,
                json!({ "revision": revision.0 }),
            ),
        };
        let metadata = Metadata::new(details)
            .or_else(|_| Metadata::new(json!({ "revision": revision.0 })))
            .map_err(invalid)?;
        let action = AuditAction::new(action).map_err(invalid)?;
        Ok(NewAuditEvent::new(context, action, target, metadata, at))
    }
}

/// What a subscription sync does with an incoming snapshot.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) enum Decision {
    /// Older than (or a final state's successor of) the stored one: keep it.
    Keep,
    /// Newer but equal in content: store it (so its observation time
    /// guards against older snapshots) without a new revision or audit.
    Touch(Subscription),
    /// A change: store it, bump the revision, audit.
    Change(Subscription),
}

/// The decision a subscription sync takes, shared by the adapters so they
/// agree.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) fn decide(stored: Option<&Subscription>, incoming: &Subscription) -> Decision {
    match stored {
        Some(stored) if !incoming.supersedes(stored) => Decision::Keep,
        Some(stored) => {
            let next = incoming.clone().carry_past_due(Some(stored));
            if same_content(stored, &next) {
                Decision::Touch(next)
            } else {
                Decision::Change(next)
            }
        }
        None => Decision::Change(incoming.clone().carry_past_due(None)),
    }
}

fn same_content(a: &Subscription, b: &Subscription) -> bool {
    Subscription {
        observed_at: b.observed_at,
        ..a.clone()
    } == *b
}
