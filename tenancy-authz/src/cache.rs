//! Per-tenant compiled authorizers, cached and invalidated by epoch.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tenancy_core::TenantId;

use crate::engine::{Authorizer, Engine};
use crate::policy::{Policy, PolicyError};
use crate::role::RoleError;
use crate::store::{AuthzStoreError, Epoch, PolicyStore, RoleStore};

/// How a [`PolicyCache`] decides that a cached authorizer is still current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Freshness {
    /// Read the tenant's epoch from the store on every
    /// [`PolicyCache::authorizer`] call (one small query) and recompile
    /// only when it moved. Always current; the default.
    Verify,
    /// Trust a cached authorizer for this long after its epoch was last
    /// read, then read it again. Changes made through another replica show
    /// up within this delay (sooner with [`PolicyCache::observe_epoch`]).
    MaxAge(Duration),
    /// Never read epochs on the hot path: rely on
    /// [`PolicyCache::invalidate`] / [`PolicyCache::observe_epoch`], fed by
    /// [`crate::AuthzAdmin`] for local writes and by Postgres LISTEN/NOTIFY
    /// (`store::postgres::listen_for_epochs`) for other replicas.
    Notified,
}

/// What loading a tenant's authorizer can fail with. Decisions are never
/// made on a failed load: surface the error (a 503), do not deny silently.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The store failed.
    #[error("loading roles and policies failed")]
    Store(#[from] AuthzStoreError),
    /// Stored roles no longer compile (for example, the catalog dropped a
    /// permission they grant).
    #[error("stored roles do not compile")]
    Roles(#[from] RoleError),
    /// A stored policy is no longer valid against the catalog.
    #[error("a stored policy is invalid")]
    Policy(#[from] PolicyError),
}

struct Entry {
    authorizer: Arc<Authorizer>,
    roles_epoch: Epoch,
    policies_epoch: Epoch,
    checked: Instant,
    stale: bool,
}

/// Keeps one compiled [`Authorizer`] per tenant and recompiles it when the
/// tenant's roles or policies change (their epoch moves).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use tenancy_authz::*;
/// use tenancy_core::{MemoryBackend, RoleSet, TenantId};
///
/// let store = Arc::new(MemoryAuthzStore::new(Arc::new(MemoryBackend::new())));
/// let engine = Engine::new(Catalog::new(["projects:read"])?);
/// let cache = PolicyCache::new(engine, store.clone(), store);
/// let tenant = TenantId::new();
/// let authorizer = cache.authorizer(tenant).await?;
/// let alice = Principal::user(tenancy_core::UserId::new(), tenant, RoleSet::parse(["member"])?);
/// let project = Resource::new("project").in_tenant(tenant);
/// assert!(authorizer.check(&AuthzRequest::new(&alice, "projects:read", &project)).allowed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct PolicyCache {
    engine: Engine,
    roles: Arc<dyn RoleStore>,
    policies: Arc<dyn PolicyStore>,
    freshness: Freshness,
    entries: RwLock<HashMap<TenantId, Entry>>,
}

impl std::fmt::Debug for PolicyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCache")
            .field("freshness", &self.freshness)
            .finish_non_exhaustive()
    }
}

impl PolicyCache {
    /// A cache over the given stores (often one object implementing both),
    /// with [`Freshness::Verify`].
    pub fn new(engine: Engine, roles: Arc<dyn RoleStore>, policies: Arc<dyn PolicyStore>) -> Self {
        Self {
            engine,
            roles,
            policies,
            freshness: Freshness::Verify,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// Sets how freshness is checked.
    pub fn with_freshness(mut self, freshness: Freshness) -> Self {
        self.freshness = freshness;
        self
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The role store.
    pub fn role_store(&self) -> &Arc<dyn RoleStore> {
        &self.roles
    }

    /// The policy store.
    pub fn policy_store(&self) -> &Arc<dyn PolicyStore> {
        &self.policies
    }

    /// The current authorizer of `tenant_id`, compiled on first use and
    /// again whenever its epoch moved.
    pub async fn authorizer(&self, tenant_id: TenantId) -> Result<Arc<Authorizer>, CacheError> {
        let cached = {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            entries.get(&tenant_id).map(|e| {
                (
                    Arc::clone(&e.authorizer),
                    e.roles_epoch,
                    e.policies_epoch,
                    e.checked,
                    e.stale,
                )
            })
        };
        if let Some((authorizer, roles_epoch, policies_epoch, checked, stale)) = cached {
            let trusted = !stale
                && match self.freshness {
                    Freshness::Notified => true,
                    Freshness::MaxAge(age) => checked.elapsed() < age,
                    Freshness::Verify => false,
                };
            if trusted {
                return Ok(authorizer);
            }
            if !stale {
                let now_roles = self.roles.roles_epoch(tenant_id).await?;
                let now_policies = self.policies.policies_epoch(tenant_id).await?;
                if now_roles == roles_epoch && now_policies == policies_epoch {
                    let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
                    if let Some(entry) = entries.get_mut(&tenant_id) {
                        entry.checked = Instant::now();
                    }
                    return Ok(authorizer);
                }
            }
        }
        self.load(tenant_id).await
    }

    /// Reads and compiles `tenant_id`'s roles and policies, replacing the cached authorizer.
    pub async fn load(&self, tenant_id: TenantId) -> Result<Arc<Authorizer>, CacheError> {
        let roles = self.roles.list_roles(tenant_id).await?;
        let documents = self.policies.list_policies(tenant_id).await?;
        let policies = documents
            .value
            .into_iter()
            .map(|doc| Policy::new(doc, self.engine.catalog()))
            .collect::<Result<Vec<_>, _>>()?;
        let epoch = roles.epoch.max(documents.epoch);
        let authorizer = Arc::new(
            self.engine
                .compile(tenant_id, &roles.value, &policies)?
                .with_epoch(epoch),
        );
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let keep_newer = entries.get(&tenant_id).is_some_and(|e| {
            !e.stale && (e.roles_epoch, e.policies_epoch) > (roles.epoch, documents.epoch)
        });
        if !keep_newer {
            entries.insert(
                tenant_id,
                Entry {
                    authorizer: Arc::clone(&authorizer),
                    roles_epoch: roles.epoch,
                    policies_epoch: documents.epoch,
                    checked: Instant::now(),
                    stale: false,
                },
            );
        }
        Ok(authorizer)
    }

    /// Marks `tenant_id`'s authorizer stale: the next call recompiles it.
    pub fn invalidate(&self, tenant_id: TenantId) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get_mut(&tenant_id) {
            entry.stale = true;
        }
    }

    /// Marks every authorizer stale (for example, after missing
    /// notifications while a listener reconnected).
    pub fn invalidate_all(&self) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        for entry in entries.values_mut() {
            entry.stale = true;
        }
    }

    /// Tells the cache that `tenant_id` reached `epoch` (from a
    /// notification): a cached authorizer older than that becomes stale.
    pub fn observe_epoch(&self, tenant_id: TenantId, epoch: Epoch) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get_mut(&tenant_id)
            && entry.roles_epoch.max(entry.policies_epoch) < epoch
        {
            entry.stale = true;
        }
    }

    /// The epoch of the cached authorizer of `tenant_id`, if any.
    pub fn cached_epoch(&self, tenant_id: TenantId) -> Option<Epoch> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&tenant_id)
            .map(|e| e.roles_epoch.max(e.policies_epoch))
    }
}
