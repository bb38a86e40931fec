//! [`Tenancy`]: everything the HTTP surface needs, in one cheap-to-clone value.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tenancy_auth::{Auth, AuthConfig, AuthStore};
use tenancy_authz::{
    AuthzAdmin, AuthzStoreError, Catalog, DirectoryRoleHolders, Engine, Freshness, PolicyCache,
    PolicyDocument, PolicyStore, RoleStore,
};
use tenancy_core::{AuditContext, Backend, Directory, TenantId};

use crate::config::HttpConfig;

/// The services behind the routes and the middleware: identity
/// ([`Auth`], which also holds the [`Directory`]), authorization
/// ([`PolicyCache`], [`AuthzAdmin`]) and the HTTP settings.
#[derive(Clone)]
pub struct Tenancy {
    inner: Arc<Inner>,
}

struct Inner {
    auth: Auth,
    authz: Arc<PolicyCache>,
    admin: AuthzAdmin,
    config: HttpConfig,
    pub(crate) lookups: Arc<Lookups>,
    _background: Background,
}

/// Tasks that keep caches current (LISTEN/NOTIFY listeners); stopped when
/// the last clone of the [`Tenancy`] goes.
struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenancy")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What the pipeline reads on every request, cached for
/// [`HttpConfig::tenant_status_ttl`] so the hot path rarely touches a store.
pub(crate) struct Lookups {
    pub(crate) tenant_status: TtlCache<tenancy_core::TenantId, tenancy_core::TenantStatus>,
    pub(crate) slugs: TtlCache<String, tenancy_core::TenantId>,
    pub(crate) member_roles:
        TtlCache<(tenancy_core::TenantId, tenancy_core::UserId), Option<tenancy_core::RoleSet>>,
}

impl Lookups {
    fn new(ttl: Duration) -> Self {
        Self {
            tenant_status: TtlCache::new(ttl),
            slugs: TtlCache::new(ttl),
            member_roles: TtlCache::new(ttl),
        }
    }

    pub(crate) fn forget_tenant(&self, tenant: TenantId) {
        self.tenant_status.remove(&tenant);
        self.slugs.remove_values(&tenant);
    }

    pub(crate) fn forget_member(&self, tenant: TenantId, user: tenancy_core::UserId) {
        self.member_roles.remove(&(tenant, user));
    }

    pub(crate) fn forget_all(&self) {
        self.tenant_status.clear();
        self.slugs.clear();
        self.member_roles.clear();
    }

    #[cfg(feature = "postgres")]
    fn forget(&self, change: tenancy_core::postgres::DirectoryChange) {
        use tenancy_core::postgres::DirectoryChange;
        match change {
            DirectoryChange::Tenant(tenant) => self.forget_tenant(tenant),
            DirectoryChange::Member(tenant, user) => self.forget_member(tenant, user),
            DirectoryChange::Unknown => self.forget_all(),
        }
    }
}

/// A small map whose entries expire.
///
/// A miss hands out a [`Ticket`]; the value read from the store afterwards
/// is cached only if nothing was forgotten in between, so a read that raced
/// an invalidation cannot put the old value back for a whole TTL.
pub(crate) struct TtlCache<K, V> {
    ttl: Duration,
    state: Mutex<CacheState<K, V>>,
}

struct CacheState<K, V> {
    entries: HashMap<K, (V, Instant)>,
    /// Bumped by every removal.
    generation: u64,
}

/// Proof of a cache miss, taken before reading the store.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub(crate) struct Ticket(u64);

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    const MAX_ENTRIES: usize = 100_000;

    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            state: Mutex::new(CacheState {
                entries: HashMap::new(),
                generation: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState<K, V>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fresh value for `key`, or a ticket to cache one read now.
    pub(crate) fn get(&self, key: &K) -> Result<V, Ticket> {
        let state = self.state();
        state
            .entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(value, _)| value.clone())
            .ok_or(Ticket(state.generation))
    }

    /// Caches `value`, unless something was removed since `ticket`.
    pub(crate) fn insert(&self, key: K, value: V, ticket: Ticket) {
        let mut state = self.state();
        if state.generation != ticket.0 {
            return;
        }
        if state.entries.len() >= Self::MAX_ENTRIES {
            let ttl = self.ttl;
            state.entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if state.entries.len() >= Self::MAX_ENTRIES {
                state.entries.clear();
            }
        }
        state.entries.insert(key, (value, Instant::now()));
    }

    /// Drops every entry whose value is `value`.
    pub(crate) fn remove_values(&self, value: &V)
    where
        V: PartialEq,
    {
        let mut state = self.state();
        state.generation += 1;
        state.entries.retain(|_, (held, _)| held != value);
    }

    /// Drops every entry.
    fn clear(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.entries.clear();
    }

    pub(crate) fn remove(&self, key: &K) {
        let mut state = self.state();
        state.generation += 1;
        state.entries.remove(key);
    }
}

impl Tenancy {
    /// The HTTP surface over `auth` and `authz`.
    ///
    /// The policy cache should not read the store on every request: give it
    /// `Freshness::MaxAge` or `Freshness::Notified` (the `in_memory` and
    /// `postgres` constructors do).
    pub fn new(auth: Auth, authz: Arc<PolicyCache>, config: HttpConfig) -> Self {
        let lookups = Arc::new(Lookups::new(config.tenant_status_ttl));
        Self::with_background(auth, authz, config, lookups, Vec::new())
    }

    fn with_background(
        auth: Auth,
        authz: Arc<PolicyCache>,
        config: HttpConfig,
        lookups: Arc<Lookups>,
        background: Vec<tokio::task::JoinHandle<()>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                admin: AuthzAdmin::new(
                    authz.clone(),
                    Arc::new(DirectoryRoleHolders::new(Arc::clone(
                        auth.directory().backend(),
                    ))),
                ),
                auth,
                authz,
                config,
                lookups,
                _background: Background(background),
            }),
        }
    }

    /// Everything in memory: for tests, prototypes and the examples.
    /// `permissions` is the host's permission catalog. Compiled policies
    /// are re-checked against the store at most once a second; changes made
    /// through this process apply at once.
    pub async fn in_memory(
        permissions: Catalog,
        auth: AuthConfig,
        config: HttpConfig,
    ) -> Result<Self, SetupError> {
        let backend: Arc<dyn Backend> = Arc::new(tenancy_core::MemoryBackend::new());
        let store: Arc<dyn AuthStore> = Arc::new(tenancy_auth::MemoryAuthStore::new());
        let authz = Arc::new(tenancy_authz::MemoryAuthzStore::new(backend.clone()));
        Self::assemble(
            backend,
            store,
            authz.clone(),
            authz,
            permissions,
            auth,
            config,
        )
        .await
    }

    /// Everything in Postgres over `pool`, after applying every crate's
    /// migrations. Other replicas' session revocations, role or policy
    /// changes, tenant suspensions and membership changes reach this one
    /// through LISTEN/NOTIFY as they commit (with a once-a-second epoch
    /// check, a periodic revocation sync and
    /// [`HttpConfig::tenant_status_ttl`] behind them).
    ///
    /// Three connections of `pool` stay with the listeners (policy epochs,
    /// tenant and membership changes, session revocations) for as long as
    /// the `Tenancy` lives: size the pool for them on top of the requests'.
    #[cfg(feature = "postgres")]
    pub async fn postgres(
        pool: tenancy_core::postgres::sqlx::PgPool,
        permissions: Catalog,
        auth: AuthConfig,
        config: HttpConfig,
    ) -> Result<Self, SetupError> {
        let store = tenancy_auth::postgres::PgAuthStore::new(pool.clone());
        store
            .migrate()
            .await
            .map_err(|e| SetupError::Migrate(Box::new(e)))?;
        let authz = tenancy_authz::store::postgres::PgAuthzStore::new(pool.clone());
        authz
            .migrate()
            .await
            .map_err(|e| SetupError::Migrate(Box::new(e)))?;
        let authz = Arc::new(authz);
        let store = Arc::new(store);
        let assembled = Self::assemble(
            Arc::new(tenancy_core::postgres::PgBackend::new(pool.clone())),
            store.clone(),
            authz.clone(),
            authz,
            permissions,
            auth,
            config,
        )
        .await?;
        // Dropped on any error below, which stops what was started.
        let mut background = Background(Vec::new());
        background.0.push(
            tenancy_authz::store::postgres::listen_for_epochs(&pool, assembled.authz().clone())
                .await
                .map_err(|e| SetupError::Migrate(Box::new(e)))?,
        );
        let lookups = assembled.inner.lookups.clone();
        let forget = lookups.clone();
        background.0.push(
            tenancy_core::postgres::listen_directory_changes(&pool, move |change| {
                forget.forget(change);
            })
            .await
            .map_err(|e| SetupError::Migrate(Box::new(e)))?,
        );
        background
            .0
            .push(tenancy_auth::postgres::listen_revocations(
                pool,
                store,
                assembled.auth().authenticator().revocations().clone(),
                assembled.auth().config().sessions.absolute_timeout,
            ));
        background.0.push(
            assembled
                .auth()
                .spawn_revocation_sync(std::time::Duration::from_secs(30)),
        );
        let Self { inner } = assembled;
        let inner = Arc::try_unwrap(inner)
            .map_err(|_| SetupError::Migrate("tenancy still shared".into()))?;
        Ok(Self::with_background(
            inner.auth,
            inner.authz,
            inner.config,
            lookups,
            std::mem::take(&mut background.0),
        ))
    }

    async fn assemble(
        backend: Arc<dyn Backend>,
        store: Arc<dyn AuthStore>,
        roles: Arc<dyn RoleStore>,
        policies: Arc<dyn PolicyStore>,
        permissions: Catalog,
        auth: AuthConfig,
        config: HttpConfig,
    ) -> Result<Self, SetupError> {
        let auth = Auth::builder(backend, store, auth)
            .build()
            .await
            .map_err(SetupError::Auth)?;
        let cache = Arc::new(
            PolicyCache::new(Engine::new(permissions), roles, policies)
                .with_freshness(Freshness::MaxAge(std::time::Duration::from_secs(1))),
        );
        Ok(Self::new(auth, cache, config))
    }

    /// Identity.
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// Tenants, members and invitations.
    pub fn directory(&self) -> &Directory {
        self.inner.auth.directory()
    }

    /// Compiled per-tenant authorizers.
    pub fn authz(&self) -> &Arc<PolicyCache> {
        &self.inner.authz
    }

    /// Role and policy changes with escalation checks.
    pub fn authz_admin(&self) -> &AuthzAdmin {
        &self.inner.admin
    }

    /// The HTTP settings.
    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    pub(crate) fn lookups(&self) -> &Lookups {
        &self.inner.lookups
    }

    /// Adds `policy` to `tenant`'s policies unless one with its id exists,
    /// and says whether it did: for the defaults a host gives every tenant
    /// (at sign-up, or on first use). Concurrent callers add it once; a
    /// policy of that id the tenant has since edited is left as it is.
    /// Written straight to the store, without escalation checks: this is
    /// the host acting, not a member.
    pub async fn seed_policy(
        &self,
        tenant: TenantId,
        policy: &PolicyDocument,
        audit: &AuditContext,
    ) -> Result<bool, AuthzStoreError> {
        const ATTEMPTS: usize = 5;
        let store = self.authz().policy_store();
        let mut attempt = 1;
        loop {
            let current = store.list_policies(tenant).await?;
            if current.value.iter().any(|p| p.id == policy.id) {
                return Ok(false);
            }
            match store.put_policy(tenant, policy, current.epoch, audit).await {
                Ok(_) => {
                    self.authz().invalidate(tenant);
                    return Ok(true);
                }
                // Another change came first: look again.
                Err(AuthzStoreError::StaleEpoch { .. }) if attempt < ATTEMPTS => attempt += 1,
                Err(other) => return Err(other),
            }
        }
    }
}

/// Assembling a [`Tenancy`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The auth configuration is invalid or its keys could not be loaded.
    #[error(transparent)]
    Auth(tenancy_auth::ConfigError),
    /// A migration failed, or the database could not be listened to.
    #[error("database setup failed")]
    Migrate(#[source] tenancy_core::BoxError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_a_removal_is_not_cached() {
        let cache = TtlCache::new(Duration::from_secs(60));
        let Err(stale) = cache.get(&"ada") else {
            panic!("an empty cache misses");
        };
        // Another request changes the roles and forgets them…
        cache.remove(&"ada");
        // …before the first one caches what it read before the change.
        cache.insert("ada", "admin", stale);
        assert!(cache.get(&"ada").is_err());

        let Err(fresh) = cache.get(&"ada") else {
            panic!("still a miss");
        };
        cache.insert("ada", "member", fresh);
        assert_eq!(cache.get(&"ada").ok(), Some("member"));

        let Err(before) = cache.get(&"bob") else {
            panic!("bob was never cached");
        };
        cache.remove_values(&"member");
        assert!(cache.get(&"ada").is_err());
        cache.insert("bob", "member", before);
        assert!(cache.get(&"bob").is_err());
    }

    #[test]
    fn entries_expire() {
        let cache = TtlCache::new(Duration::ZERO);
        let Err(ticket) = cache.get(&1) else {
            panic!("an empty cache misses");
        };
        cache.insert(1, 'a', ticket);
        assert!(cache.get(&1).is_err());
    }
}
