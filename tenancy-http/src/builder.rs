//! [`TenancyBuilder`]: the one way to assemble a [`Tenancy`].

use std::sync::Arc;
use std::time::Duration;

use tenancy_auth::{Auth, AuthConfig, AuthStore, ClaimsHook, Mailer};
use tenancy_authz::{
    AuthzAdmin, Catalog, DirectoryRoleHolders, Engine, Freshness, PolicyCache, PolicyStore,
    RoleStore, WriteRate,
};
use tenancy_core::{Backend, CacheConfig, CachingStore, Clock, EventFeed, SystemClock};

use crate::config::HttpConfig;
use crate::grants::SenderPowers;
use crate::module::{Module, Registered};
use crate::tenancy::{Background, Tenancy};

/// Where the stores live.
enum Storage {
    #[cfg(feature = "memory")]
    Memory,
    /// Without the `memory` feature there is no default: `build` asks for
    /// `postgres` or `stores`.
    #[cfg(not(feature = "memory"))]
    Unset,
    #[cfg(feature = "postgres")]
    Postgres(tenancy_core::postgres::sqlx::PgPool),
    Custom(Stores),
}

/// Stores of your own, for [`TenancyBuilder::stores`]: each must pass the
/// conformance suites of its crate's `testkit`.
#[derive(Clone)]
#[non_exhaustive]
pub struct Stores {
    /// Tenants, users, memberships, invitations, audit.
    pub backend: Arc<dyn Backend>,
    /// Credentials, sessions, signing keys, API keys, one-time tokens.
    pub auth: Arc<dyn AuthStore>,
    /// Per-tenant roles.
    pub roles: Arc<dyn RoleStore>,
    /// Per-tenant policies.
    pub policies: Arc<dyn PolicyStore>,
}

impl Stores {
    /// Groups the four stores.
    pub fn new(
        backend: Arc<dyn Backend>,
        auth: Arc<dyn AuthStore>,
        roles: Arc<dyn RoleStore>,
        policies: Arc<dyn PolicyStore>,
    ) -> Self {
        Self {
            backend,
            auth,
            roles,
            policies,
        }
    }
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// Assembles a [`Tenancy`]: storage, services, caches, listeners,
/// background tasks and optional [`Module`]s. Start from
/// [`Tenancy::builder`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use tenancy_http::{HttpConfig, Tenancy, auth::AuthConfig, authz::Catalog};
///
/// let tenancy = Tenancy::builder(
///     Catalog::new(["projects:read", "projects:create"])?,
///     AuthConfig::new("https://app.example", "app"),
/// )
/// .http(HttpConfig::default())
/// .policy_max_age(Duration::from_secs(5))
/// .build() // in memory; `.postgres(pool)` for Postgres
/// .await?;
/// # let _ = tenancy;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[must_use = "a builder does nothing until built"]
pub struct TenancyBuilder {
    permissions: Catalog,
    auth: AuthConfig,
    http: HttpConfig,
    storage: Storage,
    migrate: bool,
    listen: bool,
    mailer: Option<Arc<dyn Mailer>>,
    claims_hook: Option<Arc<dyn ClaimsHook>>,
    clock: Option<Arc<dyn Clock>>,
    directory_cache: Option<CacheConfig>,
    policy_freshness: Freshness,
    policy_write_rate: Option<WriteRate>,
    revocation_sync: Option<Duration>,
    purge_every: Option<Duration>,
    outbox_retention: Option<Duration>,
    modules: Vec<Registered>,
    idempotency: Option<crate::idempotency::IdempotencyConfig>,
    readiness: crate::health::Readiness,
    store_runtime: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for TenancyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let storage = match self.storage {
            #[cfg(feature = "memory")]
            Storage::Memory => "memory",
            #[cfg(not(feature = "memory"))]
            Storage::Unset => "unset",
            #[cfg(feature = "postgres")]
            Storage::Postgres(_) => "postgres",
            Storage::Custom(_) => "custom",
        };
        f.debug_struct("TenancyBuilder")
            .field("storage", &storage)
            .field("migrate", &self.migrate)
            .field("listen", &self.listen)
            .field("http", &self.http)
            .field("policy_freshness", &self.policy_freshness)
            .field("policy_write_rate", &self.policy_write_rate)
            .field("revocation_sync", &self.revocation_sync)
            .field("purge_every", &self.purge_every)
            .field("outbox_retention", &self.outbox_retention)
            .field("idempotency", &self.idempotency)
            .field(
                "modules",
                &self
                    .modules
                    .iter()
                    .map(|m| m.module.name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Tenancy {
    /// Starts assembling a `Tenancy` for the host's `permissions` and the
    /// identity settings `auth`: in memory unless given a Postgres pool.
    pub fn builder(permissions: Catalog, auth: AuthConfig) -> TenancyBuilder {
        TenancyBuilder {
            permissions,
            auth,
            http: HttpConfig::default(),
            #[cfg(feature = "memory")]
            storage: Storage::Memory,
            #[cfg(not(feature = "memory"))]
            storage: Storage::Unset,
            migrate: true,
            listen: true,
            mailer: None,
            claims_hook: None,
            clock: None,
            directory_cache: None,
            policy_freshness: Freshness::MaxAge(Duration::from_secs(1)),
            policy_write_rate: Some(WriteRate::default()),
            revocation_sync: Some(Duration::from_secs(30)),
            purge_every: Some(Duration::from_secs(3600)),
            outbox_retention: Some(Duration::from_secs(30 * 24 * 3600)),
            modules: Vec::new(),
            idempotency: None,
            readiness: crate::health::Readiness::default(),
            store_runtime: None,
        }
    }

    /// Everything in memory: for tests, prototypes and the examples.
    /// Shortcut for `Tenancy::builder(permissions, auth).http(config).build()`.
    pub async fn in_memory(
        permissions: Catalog,
        auth: AuthConfig,
        config: HttpConfig,
    ) -> Result<Self, SetupError> {
        Self::builder(permissions, auth).http(config).build().await
    }

    /// Everything in Postgres over `pool`, migrated, listening for other
    /// replicas' changes. Shortcut for
    /// `Tenancy::builder(permissions, auth).http(config).postgres(pool).build()`;
    /// see [`TenancyBuilder::postgres`].
    #[cfg(feature = "postgres")]
    pub async fn postgres(
        pool: tenancy_core::postgres::sqlx::PgPool,
        permissions: Catalog,
        auth: AuthConfig,
        config: HttpConfig,
    ) -> Result<Self, SetupError> {
        Self::builder(permissions, auth)
            .http(config)
            .postgres(pool)
            .build()
            .await
    }
}

impl TenancyBuilder {
    /// The HTTP settings (default [`HttpConfig::default`]).
    pub fn http(mut self, config: HttpConfig) -> Self {
        self.http = config;
        self
    }

    /// Stores everything in Postgres over `pool`.
    ///
    /// Unless turned off, [`build`](Self::build) applies every migration
    /// ([`Self::migrate`]) and starts one `LISTEN` connection
    /// ([`Self::listen`]) through which this replica hears, as they commit,
    /// other replicas' session revocations, role and policy changes, tenant
    /// suspensions and membership changes (and the modules' own channels).
    /// That connection, and one per request in flight, come from `pool`:
    /// size it for both.
    #[cfg(feature = "postgres")]
    pub fn postgres(mut self, pool: tenancy_core::postgres::sqlx::PgPool) -> Self {
        self.storage = Storage::Postgres(pool);
        self
    }

    /// The multi-thread Tokio runtime that drives the stores' connections,
    /// to which [`Tenancy::on_store_runtime`] hands store work coming from
    /// other runtimes (actix-web's workers). Open your stores' pools on it.
    ///
    /// Default: with [`Self::postgres`], the runtime [`Self::build`] runs
    /// on, if it is a multi-thread one; none otherwise (memory stores need
    /// none, and store work then runs where it is called). Set it for
    /// stores of your own that do I/O.
    pub fn store_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.store_runtime = Some(runtime);
        self
    }

    /// Uses stores of your own (each proven by its crate's conformance
    /// suite). Nothing is migrated and nothing listens: relay change
    /// notices yourself with [`Tenancy::forget_tenant`],
    /// [`Tenancy::forget_member`] and the policy cache's methods.
    pub fn stores(mut self, stores: Stores) -> Self {
        self.storage = Storage::Custom(stores);
        self
    }

    /// Whether [`build`](Self::build) applies the migrations of every crate
    /// and module on Postgres (default true). Turn it off when the tables'
    /// owner migrates (for example with
    /// [`tenancy_core::postgres::migrate_all`] in a release step) and the
    /// app connects as another role, so that row-level security applies to
    /// it and it cannot alter the tables.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Whether to start the shared `LISTEN` connection on Postgres (default
    /// true). Without it, other replicas' changes reach this one only as
    /// caches expire: revocations through the periodic sync
    /// ([`Self::revocation_sync`]), policies after
    /// [`Self::policy_max_age`], tenants and memberships after the
    /// directory cache's TTL.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// Delivers verification and password-reset mail (default: none is sent).
    pub fn mailer(mut self, mailer: Arc<dyn Mailer>) -> Self {
        self.mailer = Some(mailer);
        self
    }

    /// Adds host-defined claims to access tokens.
    pub fn claims_hook(mut self, hook: Arc<dyn ClaimsHook>) -> Self {
        self.claims_hook = Some(hook);
        self
    }

    /// The clock every timestamp and expiry comes from (default: the
    /// system's). Tests move a `ManualClock`.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Sizes and TTL of the tenant and membership caches the pipeline reads
    /// on every request (default: [`CacheConfig::default`] with
    /// [`HttpConfig::tenant_status_ttl`] as TTL).
    pub fn directory_cache(mut self, config: CacheConfig) -> Self {
        self.directory_cache = Some(config);
        self
    }

    /// How long a compiled policy set is trusted before its epoch is read
    /// again (default 1 s). Changes made through this process, and on
    /// Postgres with the listener those of every replica, apply at once
    /// regardless.
    pub fn policy_max_age(mut self, max_age: Duration) -> Self {
        self.policy_freshness = Freshness::MaxAge(max_age);
        self
    }

    /// How the policy cache decides a compiled policy set is current; see
    /// [`Freshness`]. Overrides [`Self::policy_max_age`].
    pub fn policy_freshness(mut self, freshness: Freshness) -> Self {
        self.policy_freshness = freshness;
        self
    }

    /// How fast each tenant may change its policies (`PUT` and `DELETE
    /// /policies/{id}`, and `AuthzAdmin` calls): default a burst of 30,
    /// then one a second, per tenant and process; past it the routes answer
    /// `429 rate-limited` with `Retry-After`. `None` lifts the limit.
    pub fn policy_write_rate(mut self, rate: Option<WriteRate>) -> Self {
        self.policy_write_rate = rate;
        self
    }

    /// How often to re-read revoked sessions from the store, behind the
    /// listener (default every 30 s on Postgres; `None` turns it off). In
    /// memory there is nothing to sync and no task is started.
    pub fn revocation_sync(mut self, interval: Option<Duration>) -> Self {
        self.revocation_sync = interval;
        self
    }

    /// How often a background task deletes what is past retention: ended
    /// sessions, spent refresh tokens, old throttle counters, used or
    /// expired one-time tokens (see `Auth::purge_expired`; default every
    /// hour, first at start; `None` turns it off, for hosts that schedule
    /// the purge themselves).
    pub fn purge_every(mut self, interval: Option<Duration>) -> Self {
        self.purge_every = interval;
        self
    }

    /// After how long the same purge task deletes outbox events that every
    /// consumer with a position has acknowledged, or, where no consumer
    /// has a position at all (no relay has ever run), every event that
    /// old (default 30 days; `None` keeps them). A relay
    /// (`tenancy-events`) purges sooner; this bound keeps the outbox from
    /// growing without end when none runs.
    pub fn outbox_retention(mut self, retention: Option<Duration>) -> Self {
        self.outbox_retention = retention;
        self
    }

    /// Turns on idempotent requests (`Idempotency-Key`; see
    /// [`crate::idempotency`]): on the SDK's state-changing routes unless
    /// [`IdempotencyConfig::with_sdk_routes`](crate::IdempotencyConfig::with_sdk_routes)
    /// says otherwise, and on the host's routes wrapped in the framework's
    /// idempotency layer. Off by default: it stores every keyed answer and
    /// purges them periodically, which a host should choose. Keys live in
    /// Postgres with [`Self::postgres`], else in memory (one replica),
    /// unless the config names a store.
    pub fn idempotency(mut self, config: crate::idempotency::IdempotencyConfig) -> Self {
        self.idempotency = Some(config);
        self
    }

    /// Adds a check `GET /ready` runs (another database, a broker); the
    /// builder's own Postgres pool is checked without it.
    pub fn readiness_check(mut self, check: Arc<dyn crate::ReadinessCheck>) -> Self {
        self.readiness.checks.push(check);
        self
    }

    /// How long each readiness check may take before `/ready` counts it
    /// as `timeout` (default 2 s).
    pub fn readiness_timeout(mut self, timeout: Duration) -> Self {
        self.readiness.timeout = timeout;
        self
    }

    /// Adds an optional module: its routes, pipeline step, migrations,
    /// listener channels and background tasks (see [`Module`]).
    pub fn module<M: Module>(mut self, module: M) -> Self {
        self.modules.push(Registered::new(module));
        self
    }

    /// Assembles the services: migrates (Postgres, unless turned off),
    /// loads or creates the signing key, starts the listener and the
    /// background tasks.
    ///
    /// Errors: an invalid configuration ([`SetupError::Auth`]), a failed
    /// migration ([`SetupError::Migrate`]), a listener that could not start
    /// ([`SetupError::Listen`]), a module route requiring a permission the
    /// catalog lacks ([`SetupError::UnknownPermission`]).
    pub async fn build(self) -> Result<Tenancy, SetupError> {
        for registered in &self.modules {
            for route in registered.module.routes() {
                if let crate::routes::Access::Permission(name) = route.access
                    && !self.permissions.contains(name)
                {
                    return Err(SetupError::UnknownPermission(
                        crate::permission::UnknownPermission::new(name),
                    ));
                }
            }
        }
        let stores = match &self.storage {
            #[cfg(feature = "memory")]
            Storage::Memory => Stores::memory(),
            #[cfg(not(feature = "memory"))]
            Storage::Unset => return Err(SetupError::NoStores),
            #[cfg(feature = "postgres")]
            Storage::Postgres(pool) => {
                if self.migrate {
                    self.run_migrations(pool).await?;
                }
                postgres_stores(pool)
            }
            Storage::Custom(stores) => stores.clone(),
        };
        let policies = Arc::new(
            PolicyCache::new(
                Engine::new(self.permissions),
                stores.roles.clone(),
                stores.policies.clone(),
            )
            .with_freshness(self.policy_freshness),
        );
        let admin = AuthzAdmin::new(
            policies.clone(),
            Arc::new(DirectoryRoleHolders::new(stores.backend.clone())),
        )
        .with_write_rate(self.policy_write_rate);
        let clock: Arc<dyn Clock> = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let idempotency = self.idempotency.map(|mut config| {
            let store = config
                .take_store()
                .unwrap_or_else(|| self.storage.idempotency_store());
            crate::idempotency::Idempotency::new(store, clock.clone(), config)
        });
        let store_runtime = self.store_runtime.clone().or_else(|| match &self.storage {
            #[cfg(feature = "postgres")]
            Storage::Postgres(_) => tokio::runtime::Handle::try_current()
                .ok()
                .filter(|runtime| {
                    runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                }),
            _ => None,
        });
        let mut readiness = self.readiness;
        #[cfg(feature = "postgres")]
        if let Storage::Postgres(pool) = &self.storage {
            readiness.checks.insert(
                0,
                Arc::new(crate::PostgresCheck::new("postgres", pool.clone())),
            );
        }
        for registered in &self.modules {
            readiness
                .checks
                .extend(registered.module.readiness_checks());
        }
        let mut auth = Auth::builder(stores.backend.clone(), stores.auth.clone(), self.auth)
            .clock(clock.clone())
            .grant_check(Arc::new(SenderPowers {
                admin: admin.clone(),
                keys: stores.auth.clone(),
                clock,
            }));
        if let Some(mailer) = self.mailer {
            auth = auth.mailer(mailer);
        }
        if let Some(check) = self
            .modules
            .iter()
            .find_map(|m| m.module.password_login_check())
        {
            auth = auth.password_login_check(check);
        }
        if let Some(seats) = self.modules.iter().find_map(|m| m.module.seats()) {
            auth = auth.seats(seats);
        }
        if let Some(hook) = self.claims_hook {
            auth = auth.claims_hook(hook);
        }
        let auth = auth.build().await.map_err(SetupError::Auth)?;
        let cache_config = self
            .directory_cache
            .unwrap_or_else(|| CacheConfig::default().with_ttl(self.http.tenant_status_ttl));
        let directory_cache = Arc::new(CachingStore::new(stores.backend.clone(), cache_config));

        // Dropped on any error below, which stops what was started.
        let mut background = Background::default();
        #[cfg(feature = "postgres")]
        if let Storage::Postgres(pool) = &self.storage {
            if self.listen {
                let mut listener = tenancy_core::postgres::Listener::new(pool.clone());
                listener.subscribe(
                    tenancy_core::postgres::DIRECTORY_CHANNELS,
                    directory_cache.clone(),
                );
                listener.subscribe(
                    [tenancy_authz::store::postgres::EPOCH_CHANNEL],
                    policies.clone(),
                );
                listener.subscribe(
                    [listeners::REVOCATION_CHANNEL],
                    Arc::new(listeners::Revocations(auth.clone())),
                );
                for registered in &self.modules {
                    registered.module.subscribe(&mut listener);
                }
                background.listener = Some(
                    listener
                        .start()
                        .await
                        .map_err(|e| SetupError::Listen(Box::new(e)))?,
                );
            }
            if let Some(interval) = self.revocation_sync {
                background.tasks.push(auth.spawn_revocation_sync(interval));
            }
        }
        if let Some(interval) = self.purge_every {
            let outbox = self
                .outbox_retention
                .map(|retention| (stores.backend.clone() as Arc<dyn EventFeed>, retention));
            background
                .tasks
                .push(spawn_purge(auth.clone(), outbox, interval));
        }
        if let Some(idempotency) = &idempotency
            && let Some(interval) = idempotency.config().purge_every()
        {
            background
                .tasks
                .push(spawn_idempotency_purge(idempotency.clone(), interval));
        }
        let tenancy = Tenancy::assemble(
            auth,
            policies,
            admin,
            directory_cache,
            self.http,
            self.modules,
            background,
            idempotency,
            readiness,
            store_runtime,
        );
        let started: Vec<_> = tenancy
            .modules()
            .iter()
            .flat_map(|registered| registered.module.start(&tenancy))
            .collect();
        tenancy.adopt_tasks(started);
        Ok(tenancy)
    }

    /// Runs every crate's and this builder's modules' migrations on `pool`
    /// and returns, for apps that migrate as the tables' owner and then run
    /// as a role that does not own them (`.migrate(false)` on the builder
    /// they serve with): that role cannot switch off the audit trigger or
    /// rewrite history.
    #[cfg(feature = "postgres")]
    pub async fn migrate_with(
        &self,
        owner: &tenancy_core::postgres::sqlx::PgPool,
    ) -> Result<(), SetupError> {
        self.run_migrations(owner).await
    }

    /// Every crate's and module's migrations, as one run.
    #[cfg(feature = "postgres")]
    async fn run_migrations(
        &self,
        pool: &tenancy_core::postgres::sqlx::PgPool,
    ) -> Result<(), SetupError> {
        let mut migrators = vec![
            tenancy_core::postgres::migrator(),
            tenancy_auth::postgres::migrator(),
            tenancy_authz::store::postgres::migrator(),
        ];
        for registered in &self.modules {
            migrators.extend(registered.module.migrations());
        }
        tenancy_core::postgres::migrate_all(pool, migrators)
            .await
            .map_err(|e| SetupError::Migrate(Box::new(e)))
    }
}

/// Purges what is past retention every `interval`, logging what went.
fn spawn_purge(
    auth: Auth,
    outbox: Option<(Arc<dyn EventFeed>, Duration)>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match auth.purge_expired().await {
                Ok(report) => tracing::debug!(?report, "purged expired records"),
                Err(error) => tracing::warn!(%error, "purging expired records failed"),
            }
            if let Some((feed, retention)) = &outbox {
                let before = time::OffsetDateTime::now_utc() - *retention;
                match feed.purge_events(before, &[]).await {
                    Ok(purged) => tracing::debug!(purged, "purged old outbox events"),
                    Err(error) => tracing::warn!(%error, "purging outbox events failed"),
                }
            }
        }
    })
}

/// Deletes expired idempotency keys every `interval`.
fn spawn_idempotency_purge(
    idempotency: crate::idempotency::Idempotency,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match idempotency.purge_expired().await {
                Ok(purged) => tracing::debug!(purged, "purged expired idempotency keys"),
                Err(error) => tracing::warn!(%error, "purging idempotency keys failed"),
            }
        }
    })
}

impl Storage {
    /// Where idempotency keys live when the config names no store.
    fn idempotency_store(&self) -> Arc<dyn tenancy_core::IdempotencyStore> {
        match self {
            #[cfg(feature = "postgres")]
            Storage::Postgres(pool) => Arc::new(tenancy_core::postgres::PgIdempotencyStore::new(
                pool.clone(),
            )),
            _ => Arc::new(tenancy_core::MemoryIdempotencyStore::new()),
        }
    }
}

#[cfg(feature = "memory")]
impl Stores {
    /// Fresh in-memory stores, for [`TenancyBuilder::stores`] when a
    /// module's own store needs the backend (billing's memory store keeps
    /// its audit events there).
    pub fn memory() -> Stores {
        memory_stores()
    }
}

#[cfg(feature = "memory")]
fn memory_stores() -> Stores {
    let backend: Arc<dyn Backend> = Arc::new(tenancy_core::MemoryBackend::new());
    let authz = Arc::new(tenancy_authz::MemoryAuthzStore::new(backend.clone()));
    Stores::new(
        backend,
        Arc::new(tenancy_auth::MemoryAuthStore::new()),
        authz.clone(),
        authz,
    )
}

#[cfg(feature = "postgres")]
fn postgres_stores(pool: &tenancy_core::postgres::sqlx::PgPool) -> Stores {
    let authz = Arc::new(tenancy_authz::store::postgres::PgAuthzStore::new(
        pool.clone(),
    ));
    Stores::new(
        Arc::new(tenancy_core::postgres::PgBackend::new(pool.clone())),
        Arc::new(tenancy_auth::postgres::PgAuthStore::new(pool.clone())),
        authz.clone(),
        authz,
    )
}

/// What the shared listener tells the identity and authorization caches.
#[cfg(feature = "postgres")]
mod listeners {
    use tenancy_auth::Auth;
    use tenancy_core::SessionId;
    use tenancy_core::postgres::Subscriber;

    /// The channel the auth migration's trigger announces revoked sessions on.
    pub(super) const REVOCATION_CHANNEL: &str = "tenancy_session_revoked";

    /// Revoked sessions: the session id.
    pub(super) struct Revocations(pub(super) Auth);

    impl Subscriber for Revocations {
        fn notify(&self, _channel: &str, payload: &str) {
            match payload.parse::<SessionId>() {
                Ok(session) => {
                    let hold = self.0.config().sessions.absolute_timeout;
                    let now = time::OffsetDateTime::now_utc();
                    self.0
                        .authenticator()
                        .revocations()
                        .insert(session, now + hold);
                }
                Err(_) => tracing::warn!(payload, "ignoring a malformed revocation notice"),
            }
        }

        fn resync(&self) {
            // Re-read what was revoked while nobody listened.
            let auth = self.0.clone();
            tokio::spawn(async move {
                if let Err(error) = auth.sync_revocations().await {
                    tracing::warn!(%error, "revocation catch-up failed");
                }
            });
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
    /// A migration failed.
    #[error("database migration failed")]
    Migrate(#[source] tenancy_core::BoxError),
    /// The shared `LISTEN` connection could not be started.
    #[error("listening for changes failed")]
    Listen(#[source] tenancy_core::BoxError),
    /// A module's route requires a permission the catalog does not declare.
    #[error(transparent)]
    UnknownPermission(crate::permission::UnknownPermission),
    /// Built without the `memory` feature and without `postgres(pool)` or
    /// `stores(..)`: there is nothing to keep the data in.
    #[error("no stores: enable the `memory` feature, or call `postgres(pool)` or `stores(..)`")]
    NoStores,
}
