//! The store trait, implemented in memory and on Postgres.

use async_trait::async_trait;
use tenancy_core::{Event, EventId, Page, PageRequest, TenantId};
use time::OffsetDateTime;

use crate::endpoint::{DeliveryAttempt, DeliveryId, Endpoint, EndpointId, StoredSecrets};
use crate::error::WebhookError;

/// The cursor list name of endpoints.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) const ENDPOINTS_LIST: &str = "webhook_endpoints";
/// The cursor list name of deliveries.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))]
pub(crate) const DELIVERIES_LIST: &str = "webhook_deliveries";

/// What a [`WebhookStore::purge`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Purged {
    /// Delivery-log rows deleted.
    pub deliveries: u64,
    /// Kept events deleted.
    pub messages: u64,
}

/// Where endpoints, their secrets, the events to deliver and the delivery
/// log are kept. Every call is confined to one tenant: another tenant's
/// endpoint or delivery is [`WebhookError::NotFound`].
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Stores a new endpoint with its secret, unless the tenant already
    /// has `max_per_tenant` endpoints ([`WebhookError::TooManyEndpoints`]).
    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        secrets: &StoredSecrets,
        max_per_tenant: usize,
    ) -> Result<(), WebhookError>;

    /// One endpoint.
    async fn get_endpoint(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
    ) -> Result<Endpoint, WebhookError>;

    /// The tenant's endpoints, oldest first, keyset-paginated.
    async fn list_endpoints(
        &self,
        tenant_id: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Endpoint>, WebhookError>;

    /// The tenant's active endpoints (at most the per-tenant maximum).
    async fn active_endpoints(&self, tenant_id: TenantId) -> Result<Vec<Endpoint>, WebhookError>;

    /// Replaces the URL, description, event types, status and
    /// `updated_at` of a stored endpoint (health counters are kept).
    async fn update_endpoint(&self, endpoint: &Endpoint) -> Result<(), WebhookError>;

    /// Deletes an endpoint and its secrets; its delivery log stays.
    async fn delete_endpoint(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
    ) -> Result<(), WebhookError>;

    /// The endpoint's encrypted secrets.
    async fn secrets(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
    ) -> Result<StoredSecrets, WebhookError>;

    /// Replaces the endpoint's encrypted secrets.
    async fn set_secrets(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
        secrets: &StoredSecrets,
    ) -> Result<(), WebhookError>;

    /// Keeps an event to deliver (and redeliver); storing the same event
    /// again changes nothing.
    async fn put_message(&self, event: &Event) -> Result<(), WebhookError>;

    /// A kept event.
    async fn get_message(
        &self,
        tenant_id: TenantId,
        event_id: EventId,
    ) -> Result<Event, WebhookError>;

    /// Appends an attempt to the delivery log and updates the endpoint's
    /// health: a success resets its failure count and moves its
    /// `healthy_at` to the attempt's time, a failure ([`crate::AttemptOutcome::Failed`] or `Dead`)
    /// adds one, a skip changes nothing. Returns the endpoint after the
    /// update ([`WebhookError::NotFound`] if it was deleted: the row is
    /// still logged).
    async fn record_attempt(&self, attempt: &DeliveryAttempt) -> Result<Endpoint, WebhookError>;

    /// One row of the delivery log.
    async fn get_attempt(
        &self,
        tenant_id: TenantId,
        id: DeliveryId,
    ) -> Result<DeliveryAttempt, WebhookError>;

    /// An endpoint's delivery log, newest first, keyset-paginated.
    async fn list_attempts(
        &self,
        tenant_id: TenantId,
        endpoint_id: EndpointId,
        page: &PageRequest,
    ) -> Result<Page<DeliveryAttempt>, WebhookError>;

    /// Pauses the endpoint if it is active; `true` only for the call that
    /// paused it, so the tenant is told once.
    async fn pause_if_active(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<bool, WebhookError>;

    /// Deletes, across every tenant, the delivery-log rows logged before
    /// `before`, then the kept events stored before `before` that no
    /// remaining log row refers to (an event still being retried or
    /// redelivered has a recent row and stays).
    async fn purge(&self, before: OffsetDateTime) -> Result<Purged, WebhookError>;

    /// Makes a paused endpoint active again and resets its health: no
    /// failures, failing (if at all) only since `at`.
    async fn resume(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
        at: OffsetDateTime,
    ) -> Result<Endpoint, WebhookError>;
}
