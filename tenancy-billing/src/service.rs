//! The billing service: applies provider webhooks, reconciles from the
//! provider, manages overrides, and serves entitlements.

use std::sync::Arc;

use tenancy_core::{AuditContext, Clock, SystemClock, TenantId};
use time::OffsetDateTime;

use crate::access::AccessPolicy;
use crate::cache::EntitlementCache;
use crate::catalog::Catalog;
use crate::entitlements::{Entitlements, Revision};
use crate::event::{
    CheckoutSessionObject, InvoiceObject, ObjectError, ProviderEvent, SubscriptionObject,
    TENANT_METADATA_KEY,
};
use crate::overrides::{Override, OverrideError, OverrideId};
use crate::provider::{BillingProvider, Proration, ProviderError};
use crate::store::{Applied, BillingStore, BillingStoreError, EventRecord, MAX_ACCOUNTS_PAGE};
use crate::subscription::{CustomerId, SubscriptionId};
use crate::webhook::{SignatureError, WebhookVerifier};

/// What applying a webhook did. Every outcome answers `200`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The tenant's billing state changed.
    Applied {
        /// The tenant.
        tenant_id: TenantId,
        /// Its new revision.
        revision: Revision,
    },
    /// Recorded; the tenant's state already said as much, or was newer.
    Unchanged {
        /// The tenant.
        tenant_id: TenantId,
    },
    /// The event was applied before.
    Duplicate,
    /// An event type that changes no state here: recorded, acknowledged.
    Acknowledged,
    /// Recorded but not applied: its customer is linked to another tenant
    /// than the one it names (or the tenant to another customer). No retry
    /// can fix that, so it is acknowledged (a non-2xx answer would make the
    /// provider retry for days) and logged at `error` level for an
    /// operator, who relinks and reconciles.
    Misrouted,
}

/// Why a webhook was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The signature did not verify; answer `400`.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Verified, but not an event this client can read; answer `400`.
    #[error("unreadable event payload")]
    Payload(#[source] serde_json::Error),
    /// Verified, but the object in it is unusable; answer `400`.
    #[error("unusable object in event: {0}")]
    Object(#[from] ObjectError),
    /// The event names no tenant and its customer is not linked yet;
    /// answer `503` so the provider retries (the linking event may still
    /// be on its way).
    #[error("the event's tenant is not known yet")]
    UnknownTenant,
    /// The store failed; answer `500` (the provider retries).
    #[error(transparent)]
    Store(#[from] BillingStoreError),
    /// Re-fetching from the provider failed; answer `503`.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl WebhookError {
    /// Whether the request itself is at fault (`400`), rather than a
    /// condition a retry may clear.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            WebhookError::Signature(_) | WebhookError::Payload(_) | WebhookError::Object(_)
        )
    }
}

/// Why a reconciliation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// No provider is configured.
    #[error("no billing provider configured")]
    NoProvider,
    /// The provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A subscription from the provider is unusable.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] BillingStoreError),
}

/// Why an override was not written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverrideWriteError {
    /// It does not fit the catalog, or its fields are invalid.
    #[error(transparent)]
    Invalid(#[from] OverrideError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] BillingStoreError),
}

/// What [`BillingService::reconcile_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Accounts looked at.
    pub accounts: usize,
    /// Tenants whose state changed.
    pub changed: usize,
    /// Accounts that failed (logged); the others went on.
    pub failed: usize,
}

/// Applies provider webhooks exactly once and never backwards,
/// reconciles tenants from the provider, writes overrides, and answers
/// entitlements through its cache.
///
/// - Subscription events (`customer.subscription.created|updated|deleted|
///   paused|resumed|trial_will_end|…`) carry the whole subscription: it is
///   stored as observed at the event's `created` time, and only if newer
///   than what is stored ([`crate::Subscription::supersedes`]).
/// - `checkout.session.completed` links the tenant (`client_reference_id`)
///   to its customer; with a provider, the new subscription is fetched.
/// - `invoice.paid` and `invoice.payment_failed` are recorded; with a
///   provider, the invoice's subscription is re-fetched and synced in the
///   same transaction as the event id, which also covers a subscription
///   event that never arrives.
/// - Anything else (`entitlements.active_entitlement_summary.updated`,
///   unknown types) is recorded and acknowledged.
///
/// The tenant comes from the object's `tenant_id` metadata (set on every
/// checkout this crate creates), else from the linked customer.
pub struct BillingService {
    store: Arc<dyn BillingStore>,
    catalog: Catalog,
    cache: Option<Arc<EntitlementCache>>,
    provider: Option<Arc<dyn BillingProvider>>,
    policy: AccessPolicy,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for BillingService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingService")
            .field("provider", &self.provider.is_some())
            .finish_non_exhaustive()
    }
}

impl BillingService {
    /// A service over `store`, mapping prices to plans through `catalog`.
    pub fn new(store: Arc<dyn BillingStore>, catalog: Catalog) -> Self {
        Self {
            store,
            catalog,
            cache: None,
            provider: None,
            policy: AccessPolicy::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Invalidates `cache` on every change made here.
    pub fn with_cache(mut self, cache: Arc<EntitlementCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Re-fetches from `provider` where events leave doubt, and enables
    /// reconciliation.
    pub fn with_provider(mut self, provider: Arc<dyn BillingProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Resolves entitlements (without a cache) under `policy`.
    pub fn with_policy(mut self, policy: AccessPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Uses `clock` for receipt and re-fetch times.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn BillingStore> {
        &self.store
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The tenant's entitlements, through the cache when one is set (under
    /// the cache's policy then).
    pub async fn entitlements(
        &self,
        tenant_id: TenantId,
    ) -> Result<Arc<Entitlements>, BillingStoreError> {
        if let Some(cache) = &self.cache {
            return cache.get(tenant_id).await;
        }
        let state = self.store.state(tenant_id).await?;
        Ok(Arc::new(Entitlements::resolve(
            &self.catalog,
            &self.policy,
            tenant_id,
            &state,
            self.clock.now(),
        )))
    }

    fn changed(&self, tenant_id: TenantId, applied: Applied) -> WebhookOutcome {
        match applied {
            Applied::Changed(revision) => {
                if let Some(cache) = &self.cache {
                    cache.observe_revision(tenant_id, revision);
                }
                WebhookOutcome::Applied {
                    tenant_id,
                    revision,
                }
            }
            Applied::Unchanged(_) => WebhookOutcome::Unchanged { tenant_id },
            Applied::Duplicate => WebhookOutcome::Duplicate,
        }
    }

    /// Verifies the raw `body` against the signature `header`, then parses
    /// and applies it.
    pub async fn handle_webhook(
        &self,
        verifier: &WebhookVerifier,
        header: Option<&str>,
        body: &[u8],
    ) -> Result<WebhookOutcome, WebhookError> {
        let payload = verifier.verify(header, body)?;
        let event: ProviderEvent =
            serde_json::from_slice(payload.body()).map_err(WebhookError::Payload)?;
        self.apply_event(&event).await
    }

    /// Applies a verified event.
    pub async fn apply_event(&self, event: &ProviderEvent) -> Result<WebhookOutcome, WebhookError> {
        if self.store.event_recorded(&event.id).await? {
            return Ok(WebhookOutcome::Duplicate);
        }
        let record = EventRecord {
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            received_at: tenancy_core::truncate_to_micros(self.clock.now()),
        };
        let observed_at = OffsetDateTime::from_unix_timestamp(event.created)
            .map_err(|_| ObjectError::Timestamp)?;
        let outcome = self.apply_new_event(event, &record, observed_at).await;
        match outcome {
            Err(WebhookError::Store(
                error @ (BillingStoreError::CustomerTaken | BillingStoreError::AccountMismatch),
            )) => {
                tracing::error!(
                    event = %event.id,
                    event_type = %event.event_type,
                    %error,
                    "provider event names a customer linked to another tenant; acknowledged without applying"
                );
                Ok(if self.store.record_event(&record).await? {
                    WebhookOutcome::Misrouted
                } else {
                    WebhookOutcome::Duplicate
                })
            }
            other => other,
        }
    }

    async fn apply_new_event(
        &self,
        event: &ProviderEvent,
        record: &EventRecord,
        observed_at: OffsetDateTime,
    ) -> Result<WebhookOutcome, WebhookError> {
        let record = record.clone();
        let object = &event.data.object;
        match event.event_type.as_str() {
            "checkout.session.completed" => {
                let session: CheckoutSessionObject =
                    serde_json::from_value(object.clone()).map_err(WebhookError::Payload)?;
                self.checkout_completed(&session, &record).await
            }
            t if t.starts_with("customer.subscription.") => {
                let object: SubscriptionObject =
                    serde_json::from_value(object.clone()).map_err(WebhookError::Payload)?;
                let tenant_id = self
                    .tenant_of(object.tenant(), object.customer.id())
                    .await?;
                let subscription = object.to_subscription(&self.catalog, observed_at)?;
                let applied = self
                    .store
                    .sync_subscription(
                        tenant_id,
                        &subscription,
                        Some(&record),
                        &AuditContext::system(),
                    )
                    .await?;
                Ok(self.changed(tenant_id, applied))
            }
            "invoice.paid" | "invoice.payment_failed" => {
                let invoice: InvoiceObject =
                    serde_json::from_value(object.clone()).map_err(WebhookError::Payload)?;
                match (&self.provider, invoice.subscription_id(), &invoice.customer) {
                    (Some(_), Some(subscription), Some(customer)) => {
                        let tenant_id = self.tenant_of(invoice.tenant(), customer.id()).await?;
                        self.refetch(tenant_id, subscription, Some(&record)).await
                    }
                    _ => self.acknowledge(&record).await,
                }
            }
            _ => self.acknowledge(&record).await,
        }
    }

    async fn acknowledge(&self, record: &EventRecord) -> Result<WebhookOutcome, WebhookError> {
        Ok(if self.store.record_event(record).await? {
            WebhookOutcome::Acknowledged
        } else {
            WebhookOutcome::Duplicate
        })
    }

    async fn tenant_of(
        &self,
        named: Option<TenantId>,
        customer: &CustomerId,
    ) -> Result<TenantId, WebhookError> {
        if let Some(tenant) = named {
            return Ok(tenant);
        }
        self.store
            .tenant_of_customer(customer)
            .await?
            .ok_or(WebhookError::UnknownTenant)
    }

    async fn checkout_completed(
        &self,
        session: &CheckoutSessionObject,
        record: &EventRecord,
    ) -> Result<WebhookOutcome, WebhookError> {
        let named = session
            .client_reference_id
            .as_deref()
            .or(session
                .metadata
                .get(TENANT_METADATA_KEY)
                .map(String::as_str))
            .and_then(|t| t.parse::<TenantId>().ok());
        let Some(customer) = &session.customer else {
            // Not a subscription checkout of ours: nothing to link.
            return self.acknowledge(record).await;
        };
        let tenant_id = self.tenant_of(named, customer.id()).await?;
        if let (Some(_), Some(subscription)) = (&self.provider, &session.subscription) {
            let outcome = self
                .refetch(tenant_id, subscription.id(), Some(record))
                .await?;
            return Ok(outcome);
        }
        let applied = self
            .store
            .link_customer(
                tenant_id,
                customer.id(),
                Some(record),
                &AuditContext::system(),
            )
            .await?;
        Ok(self.changed(tenant_id, applied))
    }

    /// Fetches the subscription and syncs it as observed now, recording
    /// `record` with it.
    async fn refetch(
        &self,
        tenant_id: TenantId,
        id: &SubscriptionId,
        record: Option<&EventRecord>,
    ) -> Result<WebhookOutcome, WebhookError> {
        let Some(provider) = &self.provider else {
            return Err(WebhookError::Provider(ProviderError::NotFound));
        };
        let object = provider.get_subscription(id).await?;
        let subscription = object.to_subscription(&self.catalog, self.clock.now())?;
        let applied = self
            .store
            .sync_subscription(tenant_id, &subscription, record, &AuditContext::system())
            .await?;
        Ok(self.changed(tenant_id, applied))
    }

    /// Re-syncs one tenant from the provider, for events that never
    /// arrived: its customer's current subscription (the newest that is
    /// not final, else the newest) as observed now. A tenant without an
    /// account or without subscriptions is left as it is.
    pub async fn reconcile_tenant(&self, tenant_id: TenantId) -> Result<Applied, ReconcileError> {
        let provider = self.provider.as_ref().ok_or(ReconcileError::NoProvider)?;
        let state = self.store.state(tenant_id).await?;
        let Some(account) = state.account else {
            return Ok(Applied::Unchanged(state.revision));
        };
        let objects = provider.list_subscriptions(&account.customer_id).await?;
        let now = self.clock.now();
        let mut subscriptions = Vec::with_capacity(objects.len());
        for object in &objects {
            subscriptions.push(object.to_subscription(&self.catalog, now)?);
        }
        let current = subscriptions
            .iter()
            .find(|s| !s.status.is_final())
            .or(subscriptions.first());
        let Some(current) = current else {
            return Ok(Applied::Unchanged(state.revision));
        };
        let applied = self
            .store
            .sync_subscription(tenant_id, current, None, &AuditContext::system())
            .await?;
        self.changed(tenant_id, applied);
        Ok(applied)
    }

    /// Re-syncs every tenant with an account, one page at a time; a tenant
    /// that fails is logged and counted, and the others go on.
    pub async fn reconcile_all(&self) -> Result<ReconcileReport, ReconcileError> {
        if self.provider.is_none() {
            return Err(ReconcileError::NoProvider);
        }
        let mut report = ReconcileReport::default();
        let mut after = None;
        loop {
            let page = self.store.list_accounts(after, MAX_ACCOUNTS_PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.tenant_id);
            for account in &page {
                report.accounts += 1;
                match self.reconcile_tenant(account.tenant_id).await {
                    Ok(Applied::Changed(_)) => report.changed += 1,
                    Ok(_) => {}
                    Err(error) => {
                        report.failed += 1;
                        tracing::warn!(tenant = %account.tenant_id, %error, "reconciliation failed");
                    }
                }
            }
            if page.len() < MAX_ACCOUNTS_PAGE {
                break;
            }
        }
        Ok(report)
    }

    /// Sets the quantity (seats) of the tenant's live subscription at the
    /// provider to `quantity`, charged as `proration` says, and stores the
    /// answer. A tenant without a live subscription, or already at that
    /// quantity, is left as it is.
    pub async fn update_quantity(
        &self,
        tenant_id: TenantId,
        quantity: u32,
        proration: Proration,
    ) -> Result<Applied, ReconcileError> {
        let provider = self.provider.as_ref().ok_or(ReconcileError::NoProvider)?;
        let state = self.store.state(tenant_id).await?;
        let Some(current) = state.subscription.filter(|s| !s.status.is_final()) else {
            return Ok(Applied::Unchanged(state.revision));
        };
        if current.quantity == quantity {
            return Ok(Applied::Unchanged(state.revision));
        }
        let object = provider
            .update_quantity(&current.id, quantity, proration)
            .await?;
        // The answer to our own change is newer than the snapshot it
        // changed, even if the clock has not moved since that one.
        let observed = self
            .clock
            .now()
            .max(current.observed_at + time::Duration::microseconds(1));
        let subscription = object.to_subscription(&self.catalog, observed)?;
        let applied = self
            .store
            .sync_subscription(tenant_id, &subscription, None, &AuditContext::system())
            .await?;
        self.changed(tenant_id, applied);
        Ok(applied)
    }

    /// Validates `fields` against the catalog and adds it.
    pub async fn add_override(
        &self,
        fields: &Override,
        audit: &AuditContext,
    ) -> Result<Revision, OverrideWriteError> {
        fields.validate(&self.catalog)?;
        let revision = self.store.add_override(fields, audit).await?;
        if let Some(cache) = &self.cache {
            cache.observe_revision(fields.tenant_id, revision);
        }
        Ok(revision)
    }

    /// Removes an override.
    pub async fn remove_override(
        &self,
        tenant_id: TenantId,
        id: OverrideId,
        audit: &AuditContext,
    ) -> Result<Revision, OverrideWriteError> {
        let revision = self.store.remove_override(tenant_id, id, audit).await?;
        if let Some(cache) = &self.cache {
            cache.observe_revision(tenant_id, revision);
        }
        Ok(revision)
    }
}
