//! The billing module for `tenancy-http` (feature `http`): routes, the
//! [`Entitlement`] guard, seat limits and seat sync.
//!
//! [`BillingModule`] plugs into `TenancyBuilder::module` and brings:
//!
//! | route | access | does |
//! | --- | --- | --- |
//! | `POST /billing/checkout` | `billing:manage` | `{"plan": "pro"}` → `{"url": …}`, the provider's checkout page |
//! | `POST /billing/portal` | `billing:manage` | `{"url": …}`, the provider's customer portal |
//! | `GET /billing/subscription` | `billing:read` | the subscription as last heard, and how the plan is held |
//! | `GET /billing/entitlements` | `billing:read` | the plan and every feature's value |
//! | `POST /billing/webhook` | signature only | the provider's events, verified over the raw body |
//!
//! `billing:manage` and `billing:read` are among the SDK's own permissions
//! (`tenancy_authz::sdk`), so every permission catalog declares them and
//! the builder accepts these routes. The built-in `owner` role holds them
//! (it holds `*`), as does the built-in `billing` role (`billing:*`, `usage:read`
//! and `members:read`); `admin` holds `billing:read` but not `billing:manage`.
//! A custom role gets them like any permission (`PUT /roles/{name}`).
//!
//! On Postgres the module adds the billing migrations (4000-4999) and
//! listens on [`crate::store::postgres::CHANGE_CHANNEL`], so a change made
//! by one replica invalidates every replica's [`EntitlementCache`]. Its
//! background tasks reconcile every tenant from the provider now and then
//! (for events that never arrived) and, with [`SeatSync`], keep each
//! subscription's quantity at the tenant's member count.
//!
//! The webhook answers:
//! - `200` once the event is applied, or was before (a duplicate), or
//!   changes nothing here (an unknown type), or names a customer linked to
//!   another tenant ([`crate::WebhookOutcome::Misrouted`]: no retry can fix
//!   that, and Stripe retries every non-2xx answer for days, so it is
//!   acknowledged and logged for an operator);
//! - `400` for every signature failure alike (the reason goes to the log
//!   only), and for a verified payload this client cannot read;
//! - `503` when the event's tenant is not known yet, the provider or the
//!   store failed, or applying took longer than the deadline (default
//!   10 s): Stripe retries, and the event was not recorded.

mod guard;
mod routes;
mod seats;

use std::sync::Arc;
use std::time::Duration;

use tenancy_core::{Clock, SystemClock, TenantId};
use tenancy_http::{Module, Route, Tenancy, async_trait};

use crate::access::AccessPolicy;
use crate::cache::EntitlementCache;
use crate::catalog::Catalog;
use crate::provider::BillingProvider;
use crate::service::BillingService;
use crate::store::BillingStore;
use crate::webhook::WebhookVerifier;

pub use guard::{BillingContext, ENTITLEMENT_REQUIRED, Entitlement, entitlement_required};
pub use seats::{SEATS_FEATURE, SeatSync};

/// The permission of the checkout and portal routes.
pub const MANAGE: &str = "billing:manage";
/// The permission of the subscription and entitlements routes.
pub const READ: &str = "billing:read";

/// Where the provider sends the customer back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnUrls {
    /// After a paid checkout.
    pub success: String,
    /// After an abandoned checkout.
    pub cancel: String,
    /// From the customer portal.
    pub portal: String,
}

impl ReturnUrls {
    /// All three set to `url` (the app's billing page).
    pub fn all(url: impl Into<String>) -> Self {
        let url = url.into();
        Self {
            success: url.clone(),
            cancel: url.clone(),
            portal: url,
        }
    }
}

/// Billing as a `tenancy-http` module: see the [module docs](self).
///
/// ```
/// use std::sync::Arc;
/// use tenancy_billing::http::{BillingModule, ReturnUrls};
/// use tenancy_billing::{Catalog, CatalogDocument, MemoryBillingStore, PlanDocument};
///
/// # async fn demo(backend: Arc<dyn tenancy_core::Backend>) -> Result<(), Box<dyn std::error::Error>> {
/// let catalog = Catalog::from_document(
///     &CatalogDocument::new("free")
///         .gate("sso")
///         .plan("free", PlanDocument::default())
///         .plan("pro", PlanDocument::default().lookup_key("pro_monthly").grant("sso", true)),
/// )?;
/// let billing = BillingModule::builder(Arc::new(MemoryBillingStore::new(backend)), catalog)
///     .return_urls(ReturnUrls::all("https://app.example/billing"))
///     .build();
/// // Tenancy::builder(permissions, auth).module(billing).build().await?
/// # let _ = billing; Ok(()) }
/// ```
#[derive(Clone)]
pub struct BillingModule {
    inner: Arc<Inner>,
}

struct Inner {
    service: BillingService,
    cache: Arc<EntitlementCache>,
    provider: Option<Arc<dyn BillingProvider>>,
    verifier: Option<WebhookVerifier>,
    urls: ReturnUrls,
    trial_days: Option<u32>,
    webhook_deadline: Duration,
    reconcile_every: Option<Duration>,
    seat_sync: Option<SeatSync>,
    seat_limit: Option<Arc<seats::BillingSeats>>,
}

impl std::fmt::Debug for BillingModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingModule")
            .field("provider", &self.inner.provider.is_some())
            .field("webhooks", &self.inner.verifier.is_some())
            .field("seat_sync", &self.inner.seat_sync)
            .finish_non_exhaustive()
    }
}

/// Builds a [`BillingModule`].
pub struct BillingModuleBuilder {
    store: Arc<dyn BillingStore>,
    catalog: Catalog,
    policy: AccessPolicy,
    clock: Arc<dyn Clock>,
    provider: Option<Arc<dyn BillingProvider>>,
    verifier: Option<WebhookVerifier>,
    urls: ReturnUrls,
    trial_days: Option<u32>,
    webhook_deadline: Duration,
    reconcile_every: Option<Duration>,
    seat_sync: Option<SeatSync>,
    seat_feature: Option<String>,
}

impl std::fmt::Debug for BillingModuleBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingModuleBuilder")
            .field("provider", &self.provider.is_some())
            .finish_non_exhaustive()
    }
}

impl BillingModule {
    /// A builder over `store`, with plans and features from `catalog`.
    pub fn builder(store: Arc<dyn BillingStore>, catalog: Catalog) -> BillingModuleBuilder {
        BillingModuleBuilder {
            store,
            catalog,
            policy: AccessPolicy::default(),
            clock: Arc::new(SystemClock),
            provider: None,
            verifier: None,
            urls: ReturnUrls::all("/"),
            trial_days: None,
            webhook_deadline: Duration::from_secs(10),
            reconcile_every: Some(Duration::from_secs(6 * 3600)),
            seat_sync: None,
            seat_feature: Some(SEATS_FEATURE.to_owned()),
        }
    }

    /// The billing service: webhooks, reconciliation, overrides.
    pub fn service(&self) -> &BillingService {
        &self.inner.service
    }

    /// The entitlement cache.
    pub fn cache(&self) -> &Arc<EntitlementCache> {
        &self.inner.cache
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        self.inner.cache.catalog()
    }

    /// The provider, if configured.
    pub fn provider(&self) -> Option<&Arc<dyn BillingProvider>> {
        self.inner.provider.as_ref()
    }

    /// The tenant's entitlements, through the cache.
    pub async fn entitlements(
        &self,
        tenant_id: TenantId,
    ) -> Result<Arc<crate::Entitlements>, crate::BillingStoreError> {
        self.inner.cache.get(tenant_id).await
    }
}

impl BillingModuleBuilder {
    /// What each subscription status grants (default: 7 days of grace for
    /// `past_due`).
    pub fn policy(mut self, policy: AccessPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock judging grace periods and override expiries (give it the
    /// `Tenancy`'s clock). Webhook signatures are judged by the verifier's
    /// own clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The provider: checkout, portal, re-fetches, reconciliation, seat
    /// sync. Without one, checkout and portal answer `503`.
    pub fn provider(mut self, provider: Arc<dyn BillingProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Serves `POST /billing/webhook`, verifying signatures with
    /// `verifier` (its secrets, tolerance and clock). Without it the route
    /// is not mounted.
    pub fn webhooks(mut self, verifier: WebhookVerifier) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Where the provider sends customers back to (default `/`).
    pub fn return_urls(mut self, urls: ReturnUrls) -> Self {
        self.urls = urls;
        self
    }

    /// A free trial of this many days on every checkout (set here, never
    /// by the client).
    pub fn trial_days(mut self, days: Option<u32>) -> Self {
        self.trial_days = days;
        self
    }

    /// How long applying one webhook may take before it answers `503`
    /// (the provider retries; nothing was recorded). Default 10 s.
    pub fn webhook_deadline(mut self, deadline: Duration) -> Self {
        self.webhook_deadline = deadline;
        self
    }

    /// How often every tenant is reconciled from the provider (default
    /// every 6 hours, first after one interval; `None` turns it off). Only
    /// with a provider.
    pub fn reconcile_every(mut self, interval: Option<Duration>) -> Self {
        self.reconcile_every = interval;
        self
    }

    /// Keeps each live subscription's quantity at the tenant's active
    /// member count (needs a provider).
    pub fn seat_sync(mut self, sync: SeatSync) -> Self {
        self.seat_sync = Some(sync);
        self
    }

    /// The numeric feature whose hard limit caps seats (default
    /// [`SEATS_FEATURE`]; `None` lets invitations through unchecked). A
    /// feature the catalog lacks, or one with a soft limit, caps nothing.
    pub fn seat_feature(mut self, feature: Option<&str>) -> Self {
        self.seat_feature = feature.map(str::to_owned);
        self
    }

    /// The module.
    pub fn build(self) -> BillingModule {
        let cache = Arc::new(
            EntitlementCache::new(self.store.clone(), self.catalog.clone(), self.policy)
                .with_clock(self.clock.clone()),
        );
        let mut service = BillingService::new(self.store, self.catalog.clone())
            .with_cache(cache.clone())
            .with_policy(self.policy)
            .with_clock(self.clock);
        if let Some(provider) = &self.provider {
            service = service.with_provider(provider.clone());
        }
        let seat_sync = self.seat_sync.filter(|_| self.provider.is_some());
        let seat_limit = seats::BillingSeats::new(
            cache.clone(),
            self.seat_feature.as_deref(),
            seat_sync.as_ref(),
        )
        .map(Arc::new);
        BillingModule {
            inner: Arc::new(Inner {
                service,
                cache,
                provider: self.provider,
                verifier: self.verifier,
                urls: self.urls,
                trial_days: self.trial_days,
                webhook_deadline: self.webhook_deadline,
                reconcile_every: self.reconcile_every,
                seat_sync,
                seat_limit,
            }),
        }
    }
}

#[async_trait]
impl Module for BillingModule {
    fn name(&self) -> &'static str {
        "billing"
    }

    fn routes(&self) -> Vec<Route> {
        routes::routes(self.inner.verifier.is_some())
    }

    fn seats(&self) -> Option<Arc<dyn tenancy_core::Seats>> {
        self.inner
            .seat_limit
            .clone()
            .map(|s| s as Arc<dyn tenancy_core::Seats>)
    }

    #[cfg(feature = "postgres")]
    fn migrations(&self) -> Vec<tenancy_core::postgres::sqlx::migrate::Migrator> {
        vec![crate::store::postgres::migrator()]
    }

    #[cfg(feature = "postgres")]
    fn subscribe(&self, listener: &mut tenancy_core::postgres::Listener) {
        let on_notice = self.inner.cache.clone();
        let on_resync = self.inner.cache.clone();
        listener.subscribe(
            [crate::store::postgres::CHANGE_CHANNEL],
            tenancy_core::postgres::FnSubscriber::new(
                move |_, payload| {
                    if on_notice.apply_notification(payload).is_err() {
                        tracing::warn!("malformed billing change notification; forgetting every cached snapshot");
                        on_notice.forget_all();
                    }
                },
                move || on_resync.forget_all(),
            ),
        );
    }

    fn start(&self, tenancy: &Tenancy) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let (Some(interval), Some(_)) = (self.inner.reconcile_every, &self.inner.provider) {
            let module = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    match module.inner.service.reconcile_all().await {
                        Ok(report) => tracing::info!(
                            accounts = report.accounts,
                            changed = report.changed,
                            failed = report.failed,
                            "billing reconciled"
                        ),
                        Err(error) => tracing::warn!(%error, "billing reconciliation failed"),
                    }
                }
            }));
        }
        if let (Some(sync), Some(seats)) = (&self.inner.seat_sync, &self.inner.seat_limit) {
            tasks.push(seats::spawn_sync(
                self.clone(),
                *sync,
                seats.clone(),
                tenancy.directory().backend().clone(),
            ));
        }
        tasks
    }
}

/// The billing module of `tenancy`, or a `500` (logged) when it was not
/// added to the builder.
pub(crate) fn module(tenancy: &Tenancy) -> Result<&BillingModule, tenancy_http::Problem> {
    tenancy.module::<BillingModule>().ok_or_else(|| {
        tracing::error!("billing is used but BillingModule was not added to the TenancyBuilder");
        tenancy_http::Problem::internal(&NotConfigured)
    })
}

/// The billing module is missing from the `Tenancy`.
#[derive(Debug, thiserror::Error)]
#[error("the billing module is not configured")]
struct NotConfigured;
