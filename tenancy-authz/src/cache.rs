//! Per-tenant compiled authorizers: cached, bounded, invalidated by epoch,
//! compiled off the async workers.
//!
//! How the pieces fit:
//!
//! - **Entries** live in a bounded concurrent map ([`CacheConfig::max_tenants`]);
//!   when it is full the least used tenants go, and tenants unused for
//!   [`CacheConfig::idle_timeout`] are dropped. A cached hit takes no lock
//!   beyond the map's shard and reads no store (with
//!   [`Freshness::Notified`]).
//! - **Loads are single-flight**: the first request for a tenant that is
//!   not cached starts one load (a task of its own, so a caller that goes
//!   away does not waste it); concurrent requests for the same tenant wait
//!   for that load and share its result, error included.
//! - **Compiles run off the async workers**, on the blocking pool, at most
//!   [`CacheConfig::compile_concurrency`] at once and one per tenant at a
//!   time, so a tenant with a huge policy set delays only its own requests.
//! - **Tickets** make invalidation safe against racing reads: a load (or a
//!   write through [`crate::AuthzAdmin`]) takes a ticket before it reads
//!   the store, and what it compiled is cached only if the tenant was not
//!   invalidated meanwhile and is no older than any epoch announced since.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tenancy_core::TenantId;
use tokio::sync::{OwnedMutexGuard, Semaphore, watch};

use crate::engine::{Authorizer, Engine};
use crate::limits::LimitError;
use crate::policy::{Policy, PolicyError};
use crate::role::{RoleDefinition, RoleError};
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
    /// [`PolicyCache::invalidate`] / [`PolicyCache::observe_epoch`] /
    /// [`PolicyCache::apply_notification`], fed by [`crate::AuthzAdmin`]
    /// for local writes and by Postgres LISTEN/NOTIFY for other replicas.
    Notified,
}

/// How a [`PolicyCache`] keeps its authorizers.
///
/// ```
/// use std::time::Duration;
/// use tenancy_authz::{CacheConfig, Freshness};
/// let config = CacheConfig::new()
///     .with_freshness(Freshness::MaxAge(Duration::from_secs(1)))
///     .with_max_tenants(10_000)
///     .with_idle_timeout(Some(Duration::from_secs(600)));
/// assert_eq!(config.max_tenants, 10_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// How a cached authorizer is known to be current. Default
    /// [`Freshness::Verify`].
    pub freshness: Freshness,
    /// Most tenants kept compiled; past it the least used are dropped (and
    /// compiled again on their next request). Default 4,096.
    pub max_tenants: usize,
    /// Tenants unused this long are dropped, to give their memory back.
    /// Default 30 minutes; `None` keeps them until the map is full.
    pub idle_timeout: Option<Duration>,
    /// Most compiles running at once, over all tenants (a tenant never has
    /// more than one). Default: the number of CPUs, at least 2.
    pub compile_concurrency: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            freshness: Freshness::Verify,
            max_tenants: 4_096,
            idle_timeout: Some(Duration::from_secs(30 * 60)),
            compile_concurrency: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
        }
    }
}

impl CacheConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`CacheConfig::freshness`].
    pub fn with_freshness(mut self, freshness: Freshness) -> Self {
        self.freshness = freshness;
        self
    }

    /// Sets [`CacheConfig::max_tenants`] (at least 1).
    pub fn with_max_tenants(mut self, max: usize) -> Self {
        self.max_tenants = max.max(1);
        self
    }

    /// Sets [`CacheConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`CacheConfig::compile_concurrency`] (at least 1).
    pub fn with_compile_concurrency(mut self, max: usize) -> Self {
        self.compile_concurrency = max.max(1);
        self
    }
}

/// What loading a tenant's authorizer can fail with. Decisions are never
/// made on a failed load: surface the error (a 503), do not deny silently.
/// Requests waiting for the same load share its error, so it is `Clone`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The store failed.
    #[error("loading roles and policies failed")]
    Store(#[source] Arc<AuthzStoreError>),
    /// Stored roles no longer compile (for example, the catalog dropped a
    /// permission they grant).
    #[error("stored roles do not compile")]
    Roles(#[from] RoleError),
    /// A stored policy is no longer valid against the catalog.
    #[error("a stored policy is invalid")]
    Policy(#[from] PolicyError),
    /// The tenant's stored policies exceed the engine's
    /// [`crate::Limits`] (they were written around the limits, or the
    /// limits were lowered).
    #[error("the tenant's stored policies exceed a limit")]
    Limit(#[from] LimitError),
    /// The load or compile did not finish (the runtime is shutting down).
    #[error("loading the tenant's policies was interrupted")]
    Interrupted,
}

impl From<AuthzStoreError> for CacheError {
    fn from(error: AuthzStoreError) -> Self {
        CacheError::Store(Arc::new(error))
    }
}

/// A payload on the epoch channel that is not `<tenant id>:<epoch>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed authz epoch notification {payload:?}: expected `<tenant id>:<epoch>`")]
pub struct MalformedNotification {
    payload: String,
}

impl MalformedNotification {
    /// The payload received.
    pub fn payload(&self) -> &str {
        &self.payload
    }
}

/// One cached authorizer.
struct Entry {
    authorizer: Arc<Authorizer>,
    epoch: Epoch,
    /// When the epoch was last confirmed, in milliseconds since the cache
    /// started (for [`Freshness::MaxAge`]).
    checked: AtomicU64,
    /// When it was last used, likewise (for [`CacheConfig::idle_timeout`]).
    used: AtomicU64,
}

impl Entry {
    #[inline]
    fn touch(&self, now: u64) {
        // A write only when the clock moved on by a second, so hot tenants
        // do not bounce the cache line between cores.
        if now.saturating_sub(self.used.load(Ordering::Relaxed)) >= 1_000 {
            self.used.store(now, Ordering::Relaxed);
        }
    }
}

/// The result of a load, as every waiter receives it.
type Loaded = Option<Result<Arc<Authorizer>, CacheError>>;

/// A load others may join.
struct Flight {
    result: watch::Receiver<Loaded>,
    /// The tenant's epoch floor when it started: it will read at least
    /// that, so announcing an epoch up to it does not make it stale.
    floor: Epoch,
}

/// What is pending for one tenant. Present only while a ticket, a load or
/// a compile of the tenant is.
#[derive(Default)]
struct TenantState {
    /// Bumped by each invalidation of the tenant.
    generation: u64,
    /// The highest epoch announced while something was pending: nothing
    /// older may be cached.
    floor: Epoch,
    /// Outstanding tickets.
    tickets: usize,
    flight: Option<Flight>,
    /// Held by the compile of this tenant that is running.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl TenantState {
    fn idle(&self) -> bool {
        self.tickets == 0 && self.flight.is_none() && Arc::strong_count(&self.turn) == 1
    }
}

#[derive(Default)]
struct State {
    tenants: HashMap<TenantId, TenantState>,
    /// Bumped by [`PolicyCache::forget_all`].
    generation: u64,
    /// When idle entries were last swept, in milliseconds since the start.
    swept: u64,
}

struct Shared {
    engine: Engine,
    roles: Arc<dyn RoleStore>,
    policies: Arc<dyn PolicyStore>,
    config: CacheConfig,
    entries: quick_cache::sync::Cache<TenantId, Arc<Entry>>,
    state: Mutex<State>,
    compiles: Arc<Semaphore>,
    start: Instant,
}

/// Proof that a read of a tenant's roles and policies started at a point
/// in time: what was compiled from it is cached only if nothing
/// invalidated the tenant since.
pub(crate) struct Ticket {
    shared: Arc<Shared>,
    tenant: TenantId,
    generation: u64,
    all: u64,
    settled: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            let mut state = self.shared.state();
            self.shared.release(&mut state, self.tenant);
        }
    }
}

/// The turn of one tenant's compile and one of the global compile slots,
/// held by the compile until it ends, wherever it ends.
struct Turn {
    shared: Arc<Shared>,
    tenant: TenantId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.guard = None;
        let mut state = self.shared.state();
        if state
            .tenants
            .get(&self.tenant)
            .is_some_and(TenantState::idle)
        {
            state.tenants.remove(&self.tenant);
        }
    }
}

/// Keeps one compiled [`Authorizer`] per tenant and recompiles it when the
/// tenant's roles or policies change (their epoch moves). See the module
/// source for how loads, compiles and invalidations interleave; in short:
/// bounded, single-flight per tenant, compiled on the blocking pool, and
/// never caching what was read before an invalidation.
///
/// The role and policy stores must share each tenant's epoch (the
/// adapters of this crate do, and the conformance suites check it).
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
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PolicyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCache")
            .field("config", &self.shared.config)
            .field("cached", &self.shared.entries.len())
            .finish_non_exhaustive()
    }
}

impl PolicyCache {
    /// A cache over the given stores (often one object implementing both),
    /// with the default [`CacheConfig`].
    pub fn new(engine: Engine, roles: Arc<dyn RoleStore>, policies: Arc<dyn PolicyStore>) -> Self {
        Self::with_config(engine, roles, policies, CacheConfig::default())
    }

    /// A cache over the given stores with `config`.
    pub fn with_config(
        engine: Engine,
        roles: Arc<dyn RoleStore>,
        policies: Arc<dyn PolicyStore>,
        config: CacheConfig,
    ) -> Self {
        let config = CacheConfig {
            max_tenants: config.max_tenants.max(1),
            compile_concurrency: config.compile_concurrency.max(1),
            ..config
        };
        Self {
            shared: Arc::new(Shared {
                entries: quick_cache::sync::Cache::new(config.max_tenants),
                compiles: Arc::new(Semaphore::new(config.compile_concurrency)),
                engine,
                roles,
                policies,
                config,
                state: Mutex::new(State::default()),
                start: Instant::now(),
            }),
        }
    }

    /// Sets how freshness is checked.
    pub fn with_freshness(self, freshness: Freshness) -> Self {
        let shared = &self.shared;
        Self::with_config(
            shared.engine.clone(),
            Arc::clone(&shared.roles),
            Arc::clone(&shared.policies),
            shared.config.clone().with_freshness(freshness),
        )
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.shared.config
    }

    /// The role store.
    pub fn role_store(&self) -> &Arc<dyn RoleStore> {
        &self.shared.roles
    }

    /// The policy store.
    pub fn policy_store(&self) -> &Arc<dyn PolicyStore> {
        &self.shared.policies
    }

    /// The current authorizer of `tenant_id`, compiled on first use and
    /// again whenever its epoch moved (as [`Freshness`] tells).
    pub async fn authorizer(&self, tenant_id: TenantId) -> Result<Arc<Authorizer>, CacheError> {
        self.shared
            .authorizer(tenant_id, self.shared.config.freshness)
            .await
    }

    /// Reads and compiles `tenant_id`'s roles and policies afresh,
    /// replacing the cached authorizer.
    pub async fn load(&self, tenant_id: TenantId) -> Result<Arc<Authorizer>, CacheError> {
        self.invalidate(tenant_id);
        self.shared.load(tenant_id, Epoch::ZERO).await
    }

    /// Forgets `tenant_id`'s authorizer: the next call compiles it again,
    /// and a load that read the store before this call is not cached.
    pub fn invalidate(&self, tenant_id: TenantId) {
        let mut state = self.shared.state();
        if let Some(tenant) = state.tenants.get_mut(&tenant_id) {
            tenant.generation += 1;
            tenant.flight = None;
        }
        self.shared.entries.remove(&tenant_id);
    }

    /// Forgets every authorizer, and caches nothing read before this call:
    /// for when notifications may have been missed (a listener lost its
    /// connection).
    pub fn forget_all(&self) {
        let mut state = self.shared.state();
        state.generation += 1;
        for tenant in state.tenants.values_mut() {
            tenant.flight = None;
        }
        self.shared.entries.clear();
    }

    /// Tells the cache that `tenant_id` reached `epoch` (from a
    /// notification): an authorizer older than that is dropped, and a load
    /// that might read older data is not cached.
    pub fn observe_epoch(&self, tenant_id: TenantId, epoch: Epoch) {
        let mut state = self.shared.state();
        self.shared.observe(&mut state, tenant_id, epoch);
    }

    /// Applies one payload of the epoch channel (`<tenant id>:<epoch>`, as
    /// the Postgres store sends on `store::postgres::EPOCH_CHANNEL`), for a
    /// listener shared with other channels. A malformed payload changes
    /// nothing and is returned as an error for the caller to log.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use tenancy_authz::*;
    /// # let store = Arc::new(MemoryAuthzStore::new(Arc::new(tenancy_core::MemoryBackend::new())));
    /// # let cache = PolicyCache::new(Engine::new(Catalog::new(["a:b"]).unwrap()), store.clone(), store);
    /// let tenant = tenancy_core::TenantId::new();
    /// cache.apply_notification(&format!("{tenant}:7"))?;
    /// assert!(cache.apply_notification("not a notification").is_err());
    /// # Ok::<(), MalformedNotification>(())
    /// ```
    pub fn apply_notification(&self, payload: &str) -> Result<(), MalformedNotification> {
        let parsed = payload
            .split_once(':')
            .and_then(|(t, e)| Some((t.parse::<TenantId>().ok()?, e.parse::<u64>().ok()?)));
        match parsed {
            Some((tenant, epoch)) => {
                self.observe_epoch(tenant, Epoch(epoch));
                Ok(())
            }
            None => Err(MalformedNotification {
                payload: payload.to_owned(),
            }),
        }
    }

    /// The epoch of the cached authorizer of `tenant_id`, if any.
    pub fn cached_epoch(&self, tenant_id: TenantId) -> Option<Epoch> {
        self.shared.entries.peek(&tenant_id).map(|e| e.epoch)
    }

    /// How many tenants are cached.
    pub fn cached_tenants(&self) -> usize {
        self.shared.entries.len()
    }

    /// The authorizer of `tenant_id` at the epoch the store holds now
    /// (whatever the configured freshness), for writes that must be based
    /// on the current state.
    pub(crate) async fn current(&self, tenant_id: TenantId) -> Result<Arc<Authorizer>, CacheError> {
        self.shared.authorizer(tenant_id, Freshness::Verify).await
    }

    /// A ticket for a write about to read `tenant_id`'s state.
    pub(crate) fn ticket(&self, tenant_id: TenantId) -> Ticket {
        self.shared.ticket(tenant_id)
    }

    /// Compiles `tenant_id`'s roles and policies on the blocking pool, in
    /// the tenant's turn.
    pub(crate) async fn compile(
        &self,
        tenant_id: TenantId,
        roles: Vec<RoleDefinition>,
        policies: Vec<Policy>,
    ) -> Result<Result<Authorizer, RoleError>, CacheError> {
        self.shared
            .run_compile(tenant_id, move |engine| {
                engine.compile(tenant_id, &roles, &policies)
            })
            .await
    }

    /// Caches `authorizer`, compiled from what was written at `epoch`,
    /// unless the tenant was invalidated since `ticket` was taken (then the
    /// tenant is invalidated, so nothing older stays cached).
    pub(crate) fn install(&self, ticket: Ticket, authorizer: Authorizer, epoch: Epoch) {
        let tenant = ticket.tenant;
        if !self
            .shared
            .settle(ticket, Arc::new(authorizer.with_epoch(epoch)), epoch)
        {
            self.invalidate(tenant);
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn authorizer(
        self: &Arc<Self>,
        tenant_id: TenantId,
        freshness: Freshness,
    ) -> Result<Arc<Authorizer>, CacheError> {
        let mut floor = Epoch::ZERO;
        if let Some(entry) = self.entries.get(&tenant_id) {
            let now = self.now();
            entry.touch(now);
            let trusted = match freshness {
                Freshness::Notified => true,
                Freshness::MaxAge(age) => {
                    Duration::from_millis(now.saturating_sub(entry.checked.load(Ordering::Relaxed)))
                        < age
                }
                Freshness::Verify => false,
            };
            if trusted {
                return Ok(Arc::clone(&entry.authorizer));
            }
            let epoch = self.roles.roles_epoch(tenant_id).await?;
            if epoch == entry.epoch {
                entry.checked.store(self.now(), Ordering::Relaxed);
                return Ok(Arc::clone(&entry.authorizer));
            }
            {
                let mut state = self.state();
                self.observe(&mut state, tenant_id, epoch);
            }
            floor = epoch;
        }
        self.load(tenant_id, floor).await
    }

    /// Loads `tenant_id`, joining the load under way unless it may read
    /// data older than `floor`.
    async fn load(
        self: &Arc<Self>,
        tenant_id: TenantId,
        floor: Epoch,
    ) -> Result<Arc<Authorizer>, CacheError> {
        // A load ends without a result only if its task was dropped (the
        // runtime is going away) or failed: start another, a few times.
        for _ in 0..3 {
            let (mut result, start) = {
                let mut state = self.state();
                self.sweep(&mut state);
                let all = state.generation;
                let tenant = state.tenants.entry(tenant_id).or_default();
                tenant.floor = tenant.floor.max(floor);
                match &tenant.flight {
                    Some(flight) if flight.floor >= floor => (flight.result.clone(), None),
                    _ => {
                        let (sender, receiver) = watch::channel(None);
                        tenant.flight = Some(Flight {
                            result: receiver.clone(),
                            floor: tenant.floor,
                        });
                        tenant.tickets += 1;
                        let ticket = Ticket {
                            shared: Arc::clone(self),
                            tenant: tenant_id,
                            generation: tenant.generation,
                            all,
                            settled: false,
                        };
                        (receiver.clone(), Some((ticket, sender, receiver)))
                    }
                }
            };
            if let Some((ticket, sender, mine)) = start {
                tokio::spawn(Arc::clone(self).fly(ticket, sender, mine));
            }
            let loaded = match result.wait_for(Option::is_some).await {
                Ok(loaded) => loaded.clone(),
                Err(_) => None,
            };
            if let Some(loaded) = loaded {
                return loaded;
            }
        }
        Err(CacheError::Interrupted)
    }

    /// The load task: reads, compiles, caches (ticket permitting) and
    /// hands the result to everyone waiting.
    async fn fly(
        self: Arc<Self>,
        ticket: Ticket,
        sender: watch::Sender<Loaded>,
        mine: watch::Receiver<Loaded>,
    ) {
        let tenant = ticket.tenant;
        let result = match self.read_and_compile(tenant).await {
            Ok((authorizer, epoch)) => {
                let authorizer = Arc::new(authorizer);
                self.settle(ticket, Arc::clone(&authorizer), epoch);
                Ok(authorizer)
            }
            Err(error) => {
                drop(ticket);
                Err(error)
            }
        };
        {
            let mut state = self.state();
            if let Some(state) = state.tenants.get_mut(&tenant)
                && state
                    .flight
                    .as_ref()
                    .is_some_and(|f| f.result.same_channel(&mine))
            {
                state.flight = None;
            }
            self.release_if_idle(&mut state, tenant);
        }
        sender.send_replace(Some(result));
    }

    async fn read_and_compile(
        self: &Arc<Self>,
        tenant: TenantId,
    ) -> Result<(Authorizer, Epoch), CacheError> {
        // The two reads are two snapshots; a write between them shows as
        // two epochs. Read again (a few times) until they agree.
        let mut attempt = 0;
        let (roles, documents) = loop {
            let roles = self.roles.list_roles(tenant).await?;
            let documents = self.policies.list_policies(tenant).await?;
            attempt += 1;
            if roles.epoch == documents.epoch || attempt == 3 {
                break (roles, documents);
            }
        };
        let epoch = roles.epoch.min(documents.epoch);
        self.engine
            .limits()
            .check_documents(documents.value.iter())?;
        let compiled = self
            .run_compile(tenant, move |engine| {
                let policies = documents
                    .value
                    .into_iter()
                    .map(|document| Policy::new(document, engine.catalog()))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, CacheError>(engine.compile(tenant, &roles.value, &policies)?)
            })
            .await??;
        Ok((compiled.with_epoch(epoch), epoch))
    }

    /// Runs `job` on the blocking pool once the tenant's previous compile
    /// ended and a compile slot is free.
    async fn run_compile<T: Send + 'static>(
        self: &Arc<Self>,
        tenant: TenantId,
        job: impl FnOnce(&Engine) -> T + Send + 'static,
    ) -> Result<T, CacheError> {
        let turn = {
            let mut state = self.state();
            Arc::clone(&state.tenants.entry(tenant).or_default().turn)
        };
        let turn = Turn {
            shared: Arc::clone(self),
            tenant,
            guard: Some(turn.lock_owned().await),
        };
        let slot = Arc::clone(&self.compiles)
            .acquire_owned()
            .await
            .map_err(|_| CacheError::Interrupted)?;
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let _held = (turn, slot);
            job(&engine)
        })
        .await
        .map_err(|_| CacheError::Interrupted)
    }

    fn ticket(self: &Arc<Self>, tenant_id: TenantId) -> Ticket {
        let mut state = self.state();
        let all = state.generation;
        let tenant = state.tenants.entry(tenant_id).or_default();
        tenant.tickets += 1;
        Ticket {
            shared: Arc::clone(self),
            tenant: tenant_id,
            generation: tenant.generation,
            all,
            settled: false,
        }
    }

    /// Caches `authorizer` (read at `epoch`) if `ticket` is still good: no
    /// invalidation since, nothing newer announced. Keeps a newer cached
    /// authorizer. Says whether the ticket was good.
    fn settle(&self, mut ticket: Ticket, authorizer: Arc<Authorizer>, epoch: Epoch) -> bool {
        ticket.settled = true;
        let mut state = self.state();
        let good = state.generation == ticket.all
            && state
                .tenants
                .get(&ticket.tenant)
                .is_some_and(|t| t.generation == ticket.generation && epoch >= t.floor);
        if good
            && self
                .entries
                .peek(&ticket.tenant)
                .is_none_or(|cached| cached.epoch <= epoch)
        {
            let now = self.now();
            self.entries.insert(
                ticket.tenant,
                Arc::new(Entry {
                    authorizer,
                    epoch,
                    checked: AtomicU64::new(now),
                    used: AtomicU64::new(now),
                }),
            );
        }
        self.release(&mut state, ticket.tenant);
        good
    }

    fn release(&self, state: &mut State, tenant: TenantId) {
        if let Some(t) = state.tenants.get_mut(&tenant) {
            t.tickets = t.tickets.saturating_sub(1);
        }
        self.release_if_idle(state, tenant);
    }

    fn release_if_idle(&self, state: &mut State, tenant: TenantId) {
        if state.tenants.get(&tenant).is_some_and(TenantState::idle) {
            state.tenants.remove(&tenant);
        }
    }

    fn observe(&self, state: &mut State, tenant_id: TenantId, epoch: Epoch) {
        if let Some(tenant) = state.tenants.get_mut(&tenant_id) {
            tenant.floor = tenant.floor.max(epoch);
            if tenant.flight.as_ref().is_some_and(|f| f.floor < epoch) {
                tenant.flight = None;
            }
        }
        self.entries.remove_if(&tenant_id, |e| e.epoch < epoch);
    }

    /// Drops tenants idle for longer than the idle timeout, at most once
    /// every quarter of it.
    fn sweep(&self, state: &mut State) {
        let Some(idle) = self.config.idle_timeout else {
            return;
        };
        let idle = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let now = self.now();
        if now.saturating_sub(state.swept) < (idle / 4).max(1_000) {
            return;
        }
        state.swept = now;
        self.entries
            .retain(|_, e| now.saturating_sub(e.used.load(Ordering::Relaxed)) < idle);
        state.tenants.retain(|_, t| !t.idle());
    }
}
