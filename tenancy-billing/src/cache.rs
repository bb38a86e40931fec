//! The per-tenant cache of [`Entitlements`] snapshots.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tenancy_core::{Clock, SystemClock, TenantId};

use crate::access::AccessPolicy;
use crate::catalog::Catalog;
use crate::entitlements::{Entitlements, Revision};
use crate::store::{BillingStore, BillingStoreError};

/// Most tenants cached by default.
pub const DEFAULT_MAX_TENANTS: usize = 100_000;

/// A notification payload that is not `<tenant id>:<revision>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed billing change notification")]
pub struct MalformedNotification;

/// Holds each tenant's resolved [`Entitlements`] and resolves again when
/// the snapshot is invalidated (a change in this process, or a
/// notification from another replica: see the Postgres store's
/// `CHANGE_CHANNEL`) or stops holding (a grace period or an override
/// ends). A hit is a read lock, a hash lookup and an `Arc` clone.
///
/// A load that raced an invalidation is returned but not cached, so a
/// change announced while the store was being read is never hidden.
pub struct EntitlementCache {
    store: Arc<dyn BillingStore>,
    catalog: Catalog,
    policy: AccessPolicy,
    clock: Arc<dyn Clock>,
    max_tenants: usize,
    entries: RwLock<HashMap<TenantId, Arc<Entitlements>>>,
    generation: AtomicU64,
}

impl std::fmt::Debug for EntitlementCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntitlementCache")
            .field("policy", &self.policy)
            .field("max_tenants", &self.max_tenants)
            .finish_non_exhaustive()
    }
}

impl EntitlementCache {
    /// A cache resolving `store`'s states against `catalog` under `policy`.
    pub fn new(store: Arc<dyn BillingStore>, catalog: Catalog, policy: AccessPolicy) -> Self {
        Self {
            store,
            catalog,
            policy,
            clock: Arc::new(SystemClock),
            max_tenants: DEFAULT_MAX_TENANTS,
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// Uses `clock` to judge grace periods and expiries.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Caches at most `max` tenants (at least 1); past it, the cache starts
    /// afresh.
    pub fn with_max_tenants(mut self, max: usize) -> Self {
        self.max_tenants = max.max(1);
        self
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The access policy.
    pub fn policy(&self) -> &AccessPolicy {
        &self.policy
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn BillingStore> {
        &self.store
    }

    /// The tenant's entitlements: cached, or resolved from the store.
    ///
    /// Errors: the store failed (never silently "no entitlements").
    pub async fn get(&self, tenant_id: TenantId) -> Result<Arc<Entitlements>, BillingStoreError> {
        let now = self.clock.now();
        if let Some(hit) = self.cached(tenant_id)
            && hit.is_current_at(now)
        {
            return Ok(hit);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let state = self.store.state(tenant_id).await?;
        let resolved = Arc::new(Entitlements::resolve(
            &self.catalog,
            &self.policy,
            tenant_id,
            &state,
            self.clock.now(),
        ));
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) == generation {
            if entries.len() >= self.max_tenants && !entries.contains_key(&tenant_id) {
                entries.clear();
            }
            let newer = entries
                .get(&tenant_id)
                .is_some_and(|e| e.revision() > resolved.revision());
            if !newer {
                entries.insert(tenant_id, Arc::clone(&resolved));
            }
        }
        Ok(resolved)
    }

    /// The cached snapshot, current or not.
    pub fn cached(&self, tenant_id: TenantId) -> Option<Arc<Entitlements>> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&tenant_id)
            .cloned()
    }

    /// Forgets the tenant's snapshot.
    pub fn invalidate(&self, tenant_id: TenantId) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&tenant_id);
    }

    /// Forgets every snapshot.
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Forgets the tenant's snapshot if it is older than `revision`.
    pub fn observe_revision(&self, tenant_id: TenantId, revision: Revision) {
        let stale = self
            .cached(tenant_id)
            .is_none_or(|e| e.revision() < revision);
        if stale {
            self.invalidate(tenant_id);
        }
    }

    /// Applies a change notification, `<tenant id>:<revision>`.
    pub fn apply_notification(&self, payload: &str) -> Result<(), MalformedNotification> {
        let (tenant, revision) = payload.split_once(':').ok_or(MalformedNotification)?;
        let tenant: TenantId = tenant.parse().map_err(|_| MalformedNotification)?;
        let revision: u64 = revision.parse().map_err(|_| MalformedNotification)?;
        self.observe_revision(tenant, Revision(revision));
        Ok(())
    }

    /// How many tenants are cached.
    pub fn cached_tenants(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}
