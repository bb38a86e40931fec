//! [`CachingStore`]: the tenant and membership reads every request makes,
//! served from memory, over any [`Backend`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use quick_cache::sync::Cache;

use crate::error::StoreError;
use crate::id::{MembershipId, TenantId, UserId};
use crate::membership::{Member, Membership, RoleName, UserTenant};
use crate::page::{Page, PageRequest};
use crate::store::{Backend, MembershipStore, TenantStore};
use crate::tenant::{Slug, Tenant};

/// What a cache should forget after a change committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectoryChange {
    /// A tenant's status or slug changed.
    Tenant(TenantId),
    /// A user's membership of a tenant was created, changed or removed.
    Member(TenantId, UserId),
    /// Notices may have been missed (a listener reconnected): forget
    /// everything.
    Unknown,
}

/// Sizes and lifetime of a [`CachingStore`]'s entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// How long an entry may be served without asking the backend again
    /// (default 5 s). Zero turns caching off.
    pub ttl: Duration,
    /// Most tenants (and as many slugs) kept (default 100,000); the least
    /// useful entries go first once full.
    pub tenants: usize,
    /// Most memberships kept (default 1,000,000).
    pub memberships: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(5),
            tenants: 100_000,
            memberships: 1_000_000,
        }
    }
}

impl CacheConfig {
    /// The defaults with another TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The defaults with other capacities.
    pub fn with_capacity(mut self, tenants: usize, memberships: usize) -> Self {
        self.tenants = tenants;
        self.memberships = memberships;
        self
    }
}

/// A value and when it was read.
#[derive(Clone)]
struct Timed<V> {
    value: V,
    read_at: Instant,
}

/// One bounded cache whose entries expire.
struct Expiring<K, V> {
    ttl: Duration,
    entries: Cache<K, Timed<V>>,
}

impl<K, V> Expiring<K, V>
where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
{
    fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            entries: Cache::new(capacity.max(1)),
        }
    }

    /// The fresh value of `key`, or the value `load` reads, cached unless
    /// `key` was forgotten while it loaded.
    async fn get_or_load<E, F>(&self, key: &K, load: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        if self.ttl.is_zero() {
            return load.await;
        }
        self.get_or_load_at(key, Instant::now(), load).await
    }

    /// [`Expiring::get_or_load`], judging freshness at `now`: callers that
    /// read several entries for one request read the clock once. An entry
    /// read after `now` counts as fresh.
    async fn get_or_load_at<E, F>(&self, key: &K, now: Instant, load: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        if self.ttl.is_zero() {
            return load.await;
        }
        let fresh = |read_at: Instant| now.saturating_duration_since(read_at) < self.ttl;
        if let Some(hit) = self.entries.get(key) {
            if fresh(hit.read_at) {
                return Ok(hit.value);
            }
            self.entries
                .remove_if(key, |held| held.read_at.elapsed() >= self.ttl);
        }
        match self.entries.get_value_or_guard_async(key).await {
            Ok(hit) if hit.read_at.elapsed() < self.ttl => Ok(hit.value),
            // Expired again while waiting: read without caching.
            Ok(_) => load.await,
            Err(guard) => {
                let read_at = Instant::now();
                let value = load.await?;
                // Refused if the key was forgotten meanwhile: a read that
                // raced a change must not outlive it.
                let _ = guard.insert(Timed {
                    value: value.clone(),
                    read_at,
                });
                Ok(value)
            }
        }
    }

    fn forget(&self, key: &K) {
        self.entries.remove(key);
    }

    fn forget_where(&self, pred: impl Fn(&K, &V) -> bool) {
        self.entries.retain(|key, held| !pred(key, &held.value));
    }

    fn clear(&self) {
        self.entries.clear();
    }
}

/// Serves tenant and membership reads from memory over a [`Backend`].
///
/// The request pipeline asks on every request whether the tenant is active
/// and what the caller's membership grants. `CachingStore` wraps a backend
/// and is itself a [`TenantStore`] and a [`MembershipStore`]: reads by key
/// (`get_tenant`, `find_tenant_by_slug`, `find_membership`) are served from
/// bounded concurrent caches for up to [`CacheConfig::ttl`]; every other call
/// goes to the backend, and writes made through it forget what they change.
///
/// Changes made elsewhere (by `Directory` workflows, which run in backend
/// transactions, or by other processes) reach it through
/// [`CachingStore::apply`] (the Postgres backend announces them as they
/// commit on the channels `postgres::DIRECTORY_CHANNELS`) or the `forget_*` methods; at
/// the latest, cached entries expire after the TTL.
///
/// A read that raced a change cannot put the old value back: a miss loads
/// under a per-key placeholder, concurrent misses of one key wait for that
/// one load, and forgetting the key while it loads refuses the loaded value.
///
/// Cheap to share behind an `Arc`.
///
/// ```
/// # async fn demo() -> Result<(), tenancy_core::StoreError> {
/// use std::sync::Arc;
/// use tenancy_core::{CacheConfig, CachingStore, MemoryBackend, TenantStore, TenantId};
///
/// let store = CachingStore::new(Arc::new(MemoryBackend::new()), CacheConfig::default());
/// assert!(store.get_tenant(TenantId::new()).await.is_err()); // not found, not cached
/// # Ok(()) }
/// ```
pub struct CachingStore {
    backend: Arc<dyn Backend>,
    config: CacheConfig,
    tenants: Expiring<TenantId, Arc<Tenant>>,
    slugs: Expiring<Slug, TenantId>,
    members: Expiring<(TenantId, UserId), Option<Arc<Membership>>>,
}

impl std::fmt::Debug for CachingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingStore")
            .field("ttl", &self.tenants.ttl)
            .field("tenants", &self.tenants.entries.len())
            .field("memberships", &self.members.entries.len())
            .finish_non_exhaustive()
    }
}

/// A slug that names no tenant: not cached, so a tenant registered a
/// moment later is found at once.
struct NoSuchSlug;

impl CachingStore {
    /// Caches reads of `backend`.
    pub fn new(backend: Arc<dyn Backend>, config: CacheConfig) -> Self {
        Self {
            tenants: Expiring::new(config.ttl, config.tenants),
            slugs: Expiring::new(config.ttl, config.tenants),
            members: Expiring::new(config.ttl, config.memberships),
            backend,
            config,
        }
    }

    /// The sizes and lifetime it was made with.
    pub fn config(&self) -> CacheConfig {
        self.config
    }

    /// The backend underneath.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The tenant `id`, shared: what [`TenantStore::get_tenant`] answers,
    /// without copying the record (the request pipeline's read).
    pub async fn tenant(&self, id: TenantId) -> Result<Arc<Tenant>, StoreError> {
        self.tenant_at(id, Instant::now()).await
    }

    /// [`CachingStore::tenant`], with entries judged fresh as of `now`
    /// (for a caller that reads the clock once per request and passes it
    /// to each read). `now` should be a moment ago, not a stored one: an
    /// old `now` keeps serving entries past their TTL.
    pub async fn tenant_at(&self, id: TenantId, now: Instant) -> Result<Arc<Tenant>, StoreError> {
        self.tenants
            .get_or_load_at(&id, now, async {
                self.backend.get_tenant(id).await.map(Arc::new)
            })
            .await
    }

    /// `user`'s membership of `tenant`, shared: what
    /// [`MembershipStore::find_membership`] answers, without copying it.
    pub async fn membership(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<Arc<Membership>>, StoreError> {
        self.membership_at(tenant, user, Instant::now()).await
    }

    /// [`CachingStore::membership`], with entries judged fresh as of `now`
    /// (see [`CachingStore::tenant_at`]). An entry stays the same `Arc`
    /// until it is forgotten or expires, so a caller may key what it
    /// derives from a membership on the `Arc` itself ([`Arc::ptr_eq`]).
    pub async fn membership_at(
        &self,
        tenant: TenantId,
        user: UserId,
        now: Instant,
    ) -> Result<Option<Arc<Membership>>, StoreError> {
        self.members
            .get_or_load_at(&(tenant, user), now, async {
                Ok(self
                    .backend
                    .find_membership(tenant, user)
                    .await?
                    .map(Arc::new))
            })
            .await
    }

    /// Forgets what a committed change made stale.
    pub fn apply(&self, change: DirectoryChange) {
        match change {
            DirectoryChange::Tenant(tenant) => self.forget_tenant(tenant),
            DirectoryChange::Member(tenant, user) => self.forget_member(tenant, user),
            DirectoryChange::Unknown => self.forget_all(),
        }
    }

    /// Forgets `tenant` and the slugs that led to it.
    pub fn forget_tenant(&self, tenant: TenantId) {
        self.tenants.forget(&tenant);
        self.slugs.forget_where(|_, held| *held == tenant);
    }

    /// Forgets `user`'s membership of `tenant`.
    pub fn forget_member(&self, tenant: TenantId, user: UserId) {
        self.members.forget(&(tenant, user));
    }

    /// Forgets everything.
    pub fn forget_all(&self) {
        self.tenants.clear();
        self.slugs.clear();
        self.members.clear();
    }
}

#[async_trait]
impl TenantStore for CachingStore {
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.backend.insert_tenant(tenant).await?;
        self.forget_tenant(tenant.id);
        Ok(())
    }

    async fn get_tenant(&self, id: TenantId) -> Result<Tenant, StoreError> {
        self.tenant(id).await.map(Arc::unwrap_or_clone)
    }

    async fn lock_tenant(&self, id: TenantId) -> Result<Tenant, StoreError> {
        self.backend.lock_tenant(id).await
    }

    async fn find_tenant_by_slug(&self, slug: &Slug) -> Result<Option<Tenant>, StoreError> {
        let found = self
            .slugs
            .get_or_load(slug, async {
                match self.backend.find_tenant_by_slug(slug).await {
                    Ok(Some(tenant)) => Ok(tenant.id),
                    Ok(None) => Err(Ok(NoSuchSlug)),
                    Err(error) => Err(Err(error)),
                }
            })
            .await;
        let id = match found {
            Ok(id) => id,
            Err(Ok(NoSuchSlug)) => return Ok(None),
            Err(Err(error)) => return Err(error),
        };
        let tenant = match self.tenant(id).await {
            Ok(tenant) => tenant,
            Err(StoreError::NotFound(_)) => {
                self.slugs.forget(slug);
                return Ok(None);
            }
            Err(other) => return Err(other),
        };
        if &tenant.slug == slug {
            Ok(Some(Arc::unwrap_or_clone(tenant)))
        } else {
            // Renamed since the slug was cached: ask again.
            self.slugs.forget(slug);
            self.backend.find_tenant_by_slug(slug).await
        }
    }

    async fn update_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let updated = self.backend.update_tenant(tenant).await;
        self.forget_tenant(tenant.id);
        updated
    }

    async fn admin_list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>, StoreError> {
        self.backend.admin_list_tenants(page).await
    }
}

#[async_trait]
impl MembershipStore for CachingStore {
    async fn insert_membership(&self, membership: &Membership) -> Result<(), StoreError> {
        let inserted = self.backend.insert_membership(membership).await;
        self.forget_member(membership.tenant_id, membership.user_id);
        inserted
    }

    async fn get_membership(
        &self,
        tenant_id: TenantId,
        id: MembershipId,
    ) -> Result<Membership, StoreError> {
        self.backend.get_membership(tenant_id, id).await
    }

    async fn find_membership(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
    ) -> Result<Option<Membership>, StoreError> {
        Ok(self
            .membership(tenant_id, user_id)
            .await?
            .map(Arc::unwrap_or_clone))
    }

    async fn update_membership(&self, membership: &Membership) -> Result<(), StoreError> {
        let updated = self.backend.update_membership(membership).await;
        self.forget_member(membership.tenant_id, membership.user_id);
        updated
    }

    async fn delete_membership(
        &self,
        tenant_id: TenantId,
        id: MembershipId,
    ) -> Result<(), StoreError> {
        let membership = self.backend.get_membership(tenant_id, id).await;
        let deleted = self.backend.delete_membership(tenant_id, id).await;
        match membership {
            Ok(membership) => self.forget_member(tenant_id, membership.user_id),
            // Whose it was is unknown: forget every member of the tenant.
            Err(_) => self
                .members
                .forget_where(|(tenant, _), _| *tenant == tenant_id),
        }
        deleted
    }

    async fn list_members(
        &self,
        tenant_id: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Member>, StoreError> {
        self.backend.list_members(tenant_id, page).await
    }

    async fn count_active_with_role(
        &self,
        tenant_id: TenantId,
        role: &RoleName,
    ) -> Result<u64, StoreError> {
        self.backend.count_active_with_role(tenant_id, role).await
    }

    async fn list_user_tenants(
        &self,
        user_id: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserTenant>, StoreError> {
        self.backend.list_user_tenants(user_id, page).await
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::audit::AuditContext;
    use crate::directory::{Directory, Owner};
    use crate::memory::MemoryBackend;
    use crate::tenant::{NewTenant, TenantName, TenantStatus};
    use crate::user::{Email, NewUser};

    async fn tenant(backend: &Arc<dyn Backend>, slug: &str) -> (Tenant, Membership) {
        let created = Directory::new(backend.clone())
            .create_tenant(
                NewTenant::new(Slug::new(slug).unwrap(), TenantName::new(slug).unwrap()),
                Owner::New(NewUser::new(
                    Email::new(&format!("owner@{slug}.test")).unwrap(),
                )),
                &AuditContext::system(),
            )
            .await
            .unwrap();
        (created.tenant, created.membership)
    }

    fn store(backend: &Arc<dyn Backend>, ttl: Duration) -> CachingStore {
        CachingStore::new(backend.clone(), CacheConfig::default().with_ttl(ttl))
    }

    #[tokio::test]
    async fn reads_are_served_from_memory_until_forgotten() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let (acme, owner) = tenant(&backend, "acme").await;
        let cache = store(&backend, Duration::from_secs(60));
        assert_eq!(
            cache.get_tenant(acme.id).await.unwrap().status,
            TenantStatus::Active
        );
        let mut suspended = acme.clone();
        suspended.status = TenantStatus::Suspended;
        // Changed behind the cache's back: the cached value stands…
        backend.update_tenant(&suspended).await.unwrap();
        assert_eq!(
            cache.get_tenant(acme.id).await.unwrap().status,
            TenantStatus::Active
        );
        // …until the change is announced.
        cache.apply(DirectoryChange::Tenant(acme.id));
        assert_eq!(
            cache.get_tenant(acme.id).await.unwrap().status,
            TenantStatus::Suspended
        );

        let key = (acme.id, owner.user_id);
        assert!(cache.find_membership(key.0, key.1).await.unwrap().is_some());
        backend.delete_membership(acme.id, owner.id).await.unwrap();
        assert!(cache.find_membership(key.0, key.1).await.unwrap().is_some());
        cache.apply(DirectoryChange::Member(key.0, key.1));
        assert!(cache.find_membership(key.0, key.1).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn writes_through_the_cache_forget_what_they_change() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let (acme, owner) = tenant(&backend, "acme").await;
        let cache = store(&backend, Duration::from_secs(60));
        let slug = Slug::new("acme").unwrap();
        assert_eq!(
            cache.find_tenant_by_slug(&slug).await.unwrap().unwrap().id,
            acme.id
        );
        let mut renamed = acme.clone();
        renamed.slug = Slug::new("acme-two").unwrap();
        cache.update_tenant(&renamed).await.unwrap();
        assert!(cache.find_tenant_by_slug(&slug).await.unwrap().is_none());
        let moved = Slug::new("acme-two").unwrap();
        assert_eq!(
            cache.find_tenant_by_slug(&moved).await.unwrap().unwrap().id,
            acme.id
        );

        assert!(
            cache
                .find_membership(acme.id, owner.user_id)
                .await
                .unwrap()
                .is_some()
        );
        cache.delete_membership(acme.id, owner.id).await.unwrap();
        assert!(
            cache
                .find_membership(acme.id, owner.user_id)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn unknown_slugs_are_not_remembered() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let cache = store(&backend, Duration::from_secs(60));
        let slug = Slug::new("later").unwrap();
        assert!(cache.find_tenant_by_slug(&slug).await.unwrap().is_none());
        let (later, _) = tenant(&backend, "later").await;
        assert_eq!(
            cache.find_tenant_by_slug(&slug).await.unwrap().unwrap().id,
            later.id
        );
    }

    #[tokio::test]
    async fn entries_expire() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let (acme, _) = tenant(&backend, "acme").await;
        let cache = store(&backend, Duration::from_millis(20));
        cache.get_tenant(acme.id).await.unwrap();
        let mut suspended = acme.clone();
        suspended.status = TenantStatus::Suspended;
        backend.update_tenant(&suspended).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            cache.get_tenant(acme.id).await.unwrap().status,
            TenantStatus::Suspended
        );
        let uncached = store(&backend, Duration::ZERO);
        assert_eq!(
            uncached.get_tenant(acme.id).await.unwrap().status,
            TenantStatus::Suspended
        );
    }

    #[tokio::test]
    async fn a_load_that_raced_a_change_is_not_kept() {
        let cache: Expiring<u32, &str> = Expiring::new(Duration::from_secs(60), 16);
        let loaded = cache
            .get_or_load(&1, async {
                // The value changes, and is forgotten, while it loads.
                cache.forget(&1);
                Ok::<_, ()>("old")
            })
            .await;
        assert_eq!(loaded, Ok("old"));
        let fresh = cache.get_or_load(&1, async { Ok::<_, ()>("new") }).await;
        assert_eq!(fresh, Ok("new"));
        // Forgetting everything refuses loads in flight too.
        let raced = cache
            .get_or_load(&2, async {
                cache.clear();
                Ok::<_, ()>("stale")
            })
            .await;
        assert_eq!(raced, Ok("stale"));
        assert_eq!(
            cache.get_or_load(&2, async { Ok::<_, ()>("fresh") }).await,
            Ok("fresh")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_of_one_key_load_once() {
        let cache = Arc::new(Expiring::<u32, u32>::new(Duration::from_secs(60), 16));
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, loads) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load(&7, async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>(42)
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(42));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let cache: Expiring<u32, u32> = Expiring::new(Duration::from_secs(60), 16);
        assert_eq!(
            cache.get_or_load(&1, async { Err::<u32, _>("down") }).await,
            Err("down")
        );
        assert_eq!(
            cache.get_or_load(&1, async { Ok::<_, &str>(5) }).await,
            Ok(5)
        );
    }
}
