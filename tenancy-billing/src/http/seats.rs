//! Seats: the hard `seats` limit on invitations, and [`SeatSync`], which
//! keeps a subscription's quantity at the tenant's member count.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenancy_core::{Backend, StoreError, TenantId, active_members};
use tenancy_http::async_trait;
use tokio::sync::Notify;

use super::BillingModule;
use crate::cache::EntitlementCache;
use crate::catalog::{Enforcement, FeatureId, FeatureKind, Limit};
use crate::provider::Proration;
use crate::store::BillingStoreError;

/// The feature capping seats unless configured otherwise.
pub const SEATS_FEATURE: &str = "seats";

/// Seat sync: when a tenant's active members change, its live
/// subscription's quantity follows, once the changes have settled for
/// `debounce` (several invitations accepted in a row make one provider
/// call), charged as `proration` says.
///
/// Stripe allows about 200 quantity updates per subscription per hour; the
/// debounce keeps a busy tenant far below that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatSync {
    debounce: Duration,
    proration: Proration,
}

impl Default for SeatSync {
    fn default() -> Self {
        Self {
            debounce: Duration::from_secs(30),
            proration: Proration::CreateProrations,
        }
    }
}

impl SeatSync {
    /// After 30 s of quiet, prorated at the next invoice.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits `debounce` after a change before syncing.
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// How a quantity change is charged.
    pub fn with_proration(mut self, proration: Proration) -> Self {
        self.proration = proration;
        self
    }

    /// The debounce.
    pub fn debounce(&self) -> Duration {
        self.debounce
    }

    /// The proration.
    pub fn proration(&self) -> Proration {
        self.proration
    }
}

/// The module's [`tenancy_core::Seats`]: the limit from the entitlements,
/// and the tenants whose members changed, for the sync task.
pub(crate) struct BillingSeats {
    cache: Arc<EntitlementCache>,
    feature: Option<FeatureId>,
    sync: bool,
    dirty: Mutex<HashSet<TenantId>>,
    wake: Notify,
}

impl BillingSeats {
    /// `None` when there is nothing to do: no hard seat feature and no sync.
    pub(crate) fn new(
        cache: Arc<EntitlementCache>,
        feature: Option<&str>,
        sync: Option<&SeatSync>,
    ) -> Option<Self> {
        let feature = feature
            .and_then(|key| cache.catalog().feature(key))
            .filter(|&id| {
                matches!(
                    cache.catalog().feature_def(id).map(|f| f.kind()),
                    Some(FeatureKind::Limit {
                        enforcement: Enforcement::Hard,
                        ..
                    })
                )
            });
        if feature.is_none() && sync.is_none() {
            return None;
        }
        Some(Self {
            cache,
            feature,
            sync: sync.is_some(),
            dirty: Mutex::new(HashSet::new()),
            wake: Notify::new(),
        })
    }

    fn take_dirty(&self) -> Vec<TenantId> {
        self.dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .collect()
    }
}

#[async_trait]
impl tenancy_core::Seats for BillingSeats {
    async fn seat_limit(&self, tenant_id: TenantId) -> Result<Option<u64>, StoreError> {
        let Some(feature) = self.feature else {
            return Ok(None);
        };
        let entitlements = self.cache.get(tenant_id).await.map_err(|e| match e {
            BillingStoreError::Store(e) => e,
            other => StoreError::unavailable(other),
        })?;
        Ok(match entitlements.limit(feature) {
            Some(Limit::Max(n)) => Some(n),
            Some(Limit::Unlimited) | None => None,
        })
    }

    fn members_changed(&self, tenant_id: TenantId) {
        if !self.sync {
            return;
        }
        self.dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant_id);
        self.wake.notify_one();
    }
}

/// Waits for member changes, lets them settle for the debounce, then sets
/// each changed tenant's subscription quantity to its member count.
pub(crate) fn spawn_sync(
    module: BillingModule,
    sync: SeatSync,
    seats: Arc<BillingSeats>,
    backend: Arc<dyn Backend>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            seats.wake.notified().await;
            tokio::time::sleep(sync.debounce).await;
            for tenant_id in seats.take_dirty() {
                let members = match active_members(&*backend, tenant_id, u64::MAX).await {
                    Ok(n) => n,
                    Err(error) => {
                        tracing::warn!(tenant = %tenant_id, %error, "seat sync could not count members");
                        continue;
                    }
                };
                let quantity = u32::try_from(members.max(1)).unwrap_or(u32::MAX);
                if let Err(error) = module
                    .service()
                    .update_quantity(tenant_id, quantity, sync.proration)
                    .await
                {
                    tracing::warn!(tenant = %tenant_id, %error, "seat sync failed; the next member change tries again");
                }
            }
        }
    })
}
