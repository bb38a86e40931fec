//! [`Tenancy`]: everything the HTTP surface needs, in one cheap-to-clone value.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tenancy_auth::{Auth, AuthConfig, AuthStore};
use tenancy_authz::{AuthzAdmin, Catalog, Engine, PolicyCache, PolicyStore, RoleStore};
use tenancy_core::{Backend, Directory};

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
    pub(crate) lookups: Lookups,
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

/// A small map whose entries expire.
pub(crate) struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    const MAX_ENTRIES: usize = 100_000;

    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(value, _)| value.clone())
    }

    pub(crate) fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= Self::MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (value, Instant::now()));
    }

    pub(crate) fn remove(&self, key: &K) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

impl Tenancy {
    /// The HTTP surface over `auth` and `authz`.
    pub fn new(auth: Auth, authz: Arc<PolicyCache>, config: HttpConfig) -> Self {
        let ttl = config.tenant_status_ttl;
        Self {
            inner: Arc::new(Inner {
                admin: AuthzAdmin::new(authz.clone()),
                auth,
                authz,
                config,
                lookups: Lookups {
                    tenant_status: TtlCache::new(ttl),
                    slugs: TtlCache::new(ttl),
                    member_roles: TtlCache::new(ttl),
                },
            }),
        }
    }

    /// Everything in memory: for tests, prototypes and the examples.
    /// `permissions` is the host's permission catalog.
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
    /// migrations.
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
        Self::assemble(
            Arc::new(tenancy_core::postgres::PgBackend::new(pool)),
            Arc::new(store),
            authz.clone(),
            authz,
            permissions,
            auth,
            config,
        )
        .await
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
        let cache = Arc::new(PolicyCache::new(Engine::new(permissions), roles, policies));
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
}

/// Assembling a [`Tenancy`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The auth configuration is invalid or its keys could not be loaded.
    #[error(transparent)]
    Auth(tenancy_auth::ConfigError),
    /// A migration failed.
    #[error("migration failed")]
    Migrate(#[source] tenancy_core::BoxError),
}
