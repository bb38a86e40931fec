//! Metering over HTTP (feature `http`): [`MeteringModule`], a
//! [`tenancy_http::Module`] serving usage to tenants and flushing buffered
//! ingest in the background, and [`MeteringGuard`], the metering step of a
//! route (rate limits, quotas, usage).
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tenancy_core::MemoryBackend;
//! use tenancy_metering::http::{KeyPart, MeteringModule, RateRule};
//! use tenancy_metering::*;
//!
//! let meters = Meters::new([Meter::new(MeterName::new("api_calls")?, Aggregation::Count, "calls")?
//!     .keep([DimensionName::new("route")?])?])?;
//! let store = Arc::new(MemoryMeteringStore::new(Arc::new(MemoryBackend::new())));
//! let module = MeteringModule::builder(Metering::new(meters, store))
//!     .plans(Arc::new(StaticPlans::new()))
//!     .build();
//! // 10 requests a second per API key, then the plan's api_calls quota,
//! // then one api_call recorded.
//! let guard = module
//!     .guard("GET /projects")
//!     .limit(RateRule::new("per-key", RateLimit::new(10, Duration::from_secs(1))?)?.by(KeyPart::ApiKey))
//!     .quota("api_calls", 1, OnStoreError::Closed)?
//!     .record("api_calls", 1)?;
//! // Tenancy::builder(..).module(module) and
//! // .route("/projects", get(list).layer(tenancy_axum::guard(guard)))
//! # let _ = guard;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "memory"))]
//! # fn main() {}
//! ```

mod guard;
mod headers;
#[cfg(feature = "redis")]
mod ready;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use tenancy_core::Clock;
use tenancy_http::{Module, Route, Tenancy, async_trait};

use crate::buffer::{BufferConfig, BufferedIngest, FlushReport};
use crate::metering::Metering;
use crate::period::{PlanLimits, PlanSource};
use crate::quota::{MemoryQuotaStore, QuotaHook, QuotaStore, Quotas};
use crate::ratelimit::{MemoryRateLimitStore, RateLimitStore, RateLimiter};

pub use guard::{GuardError, KeyPart, MeteringGuard, RateRule};
#[cfg(feature = "redis")]
pub use ready::RedisCheck;

/// The permission `GET /usage` and `GET /usage/export` require: one of the
/// SDK's own (every catalog has it), held by the built-in `owner`, `admin`
/// and `billing` roles, not by `member` or `readonly`.
pub const USAGE_READ: &str = tenancy_http::authz::sdk::USAGE_READ;

pub(crate) struct Shared {
    pub(crate) metering: Metering,
    pub(crate) ingest: BufferedIngest,
    pub(crate) flush_every: Duration,
    pub(crate) limiter: RateLimiter,
    pub(crate) quotas: Option<Quotas>,
    pub(crate) plans: Option<Arc<dyn PlanSource>>,
    pub(crate) clock: Arc<dyn Clock>,
}

/// Metering as a [`tenancy_http::Module`]: add it with
/// `TenancyBuilder::module`, wrap routes in its [`guard`](Self::guard)s.
///
/// - Routes: `GET /usage` and `GET /usage/export?format=csv|jsonl`
///   (permission [`USAGE_READ`]); see [`routes`](Module::routes).
/// - Migrations: tenancy-metering's, on Postgres (feature `postgres`).
/// - Background: the buffered ingest flushed every
///   [`BufferConfig::flush_every`]; `Tenancy::shutdown` flushes what is
///   left.
///
/// Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct MeteringModule {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MeteringModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteringModule")
            .field("metering", &self.shared.metering)
            .field("flush_every", &self.shared.flush_every)
            .finish_non_exhaustive()
    }
}

/// Builds a [`MeteringModule`]; see [`MeteringModule::builder`].
#[must_use]
pub struct MeteringModuleBuilder {
    metering: Metering,
    buffer: BufferConfig,
    rate_limits: Option<Arc<dyn RateLimitStore>>,
    quota_store: Option<Arc<dyn QuotaStore>>,
    plans: Option<Arc<dyn PlanSource>>,
    hooks: Vec<Arc<dyn QuotaHook>>,
}

impl std::fmt::Debug for MeteringModuleBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteringModuleBuilder")
            .field("buffer", &self.buffer)
            .finish_non_exhaustive()
    }
}

impl MeteringModuleBuilder {
    /// Buffered ingest settings (shards, flush interval).
    pub fn buffer(mut self, config: BufferConfig) -> Self {
        self.buffer = config;
        self
    }

    /// Keeps rate-limit state in `store` (the Redis store, to share limits
    /// across replicas); in process by default.
    pub fn rate_limits(mut self, store: Arc<dyn RateLimitStore>) -> Self {
        self.rate_limits = Some(store);
        self
    }

    /// Keeps quota counters in `store` (Postgres or Redis, to share them
    /// across replicas); in process by default.
    pub fn quota_store(mut self, store: Arc<dyn QuotaStore>) -> Self {
        self.quota_store = Some(store);
        self
    }

    /// Reads tenants' plans (quotas, billing cycle, plan name for per-plan
    /// rate limits) from `plans`. Without it no quota applies.
    pub fn plans(mut self, plans: Arc<dyn PlanSource>) -> Self {
        self.plans = Some(plans);
        self
    }

    /// Calls `hook` when usage crosses a quota threshold (80%, 100%).
    pub fn quota_hook(mut self, hook: Arc<dyn QuotaHook>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// The module.
    pub fn build(self) -> MeteringModule {
        let clock = Arc::clone(self.metering.clock());
        let rate_limits = self.rate_limits.unwrap_or_else(|| {
            Arc::new(MemoryRateLimitStore::new().with_clock(Arc::clone(&clock)))
        });
        let quotas = self.plans.as_ref().map(|plans| {
            let store = self
                .quota_store
                .unwrap_or_else(|| Arc::new(MemoryQuotaStore::new()));
            let mut quotas = Quotas::new(Arc::new(PlanLimits::new(Arc::clone(plans))), store)
                .with_clock(Arc::clone(&clock));
            for hook in self.hooks {
                quotas = quotas.with_hook(hook);
            }
            quotas
        });
        MeteringModule {
            shared: Arc::new(Shared {
                ingest: self.metering.buffered(self.buffer),
                flush_every: self.buffer.flush_every,
                metering: self.metering,
                limiter: RateLimiter::new(rate_limits),
                quotas,
                plans: self.plans,
                clock,
            }),
        }
    }
}

impl MeteringModule {
    /// A module over `metering` (its meters, store and clock).
    pub fn builder(metering: Metering) -> MeteringModuleBuilder {
        MeteringModuleBuilder {
            metering,
            buffer: BufferConfig::default(),
            rate_limits: None,
            quota_store: None,
            plans: None,
            hooks: Vec::new(),
        }
    }

    /// A guard for the route named `route` (`"GET /projects"`: the name
    /// [`KeyPart::Route`] keys on and the `route` dimension recorded).
    pub fn guard(&self, route: &str) -> MeteringGuard {
        MeteringGuard::new(Arc::clone(&self.shared), route)
    }

    /// The meters and the durable path.
    pub fn metering(&self) -> &Metering {
        &self.shared.metering
    }

    /// The buffered ingest the guards record into.
    pub fn ingest(&self) -> &BufferedIngest {
        &self.shared.ingest
    }

    /// The quotas, when plans were given.
    pub fn quotas(&self) -> Option<&Quotas> {
        self.shared.quotas.as_ref()
    }

    /// Moves buffered usage to the store now.
    pub async fn flush(&self) -> FlushReport {
        self.shared.ingest.flush().await
    }
}

#[async_trait]
impl Module for MeteringModule {
    fn name(&self) -> &'static str {
        "metering"
    }

    /// `GET /usage` and `GET /usage/export` (see the module docs).
    fn routes(&self) -> Vec<Route> {
        routes::routes()
    }

    #[cfg(feature = "postgres")]
    fn migrations(&self) -> Vec<tenancy_core::postgres::sqlx::migrate::Migrator> {
        vec![crate::store::postgres::migrator()]
    }

    fn start(&self, _tenancy: &Tenancy) -> Vec<tokio::task::JoinHandle<()>> {
        let ingest = self.shared.ingest.clone();
        let every = self.shared.flush_every;
        vec![tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                ingest.flush().await;
            }
        })]
    }

    async fn shutdown(&self) {
        let report = self.shared.ingest.flush().await;
        if report.retained > 0 {
            tracing::error!(
                tenants = report.retained,
                "usage flush at shutdown failed; buffered usage of these tenants is lost"
            );
        }
    }
}
