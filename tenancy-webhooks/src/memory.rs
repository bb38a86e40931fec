//! The in-memory store, for tests and single-process apps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use tenancy_core::{Cursor, Event, EventId, Page, PageRequest, TenantId};
use time::OffsetDateTime;

use crate::endpoint::{
    AttemptOutcome, DeliveryAttempt, DeliveryId, Endpoint, EndpointId, EndpointStatus,
    StoredSecrets,
};
use crate::error::WebhookError;
use crate::store::{DELIVERIES_LIST, ENDPOINTS_LIST, Purged, WebhookStore};

#[derive(Default)]
struct State {
    endpoints: BTreeMap<EndpointId, (Endpoint, StoredSecrets)>,
    /// Each kept event with the time it was stored.
    messages: HashMap<EventId, (Event, OffsetDateTime)>,
    attempts: BTreeMap<DeliveryId, DeliveryAttempt>,
}

/// Endpoints, secrets, events and the delivery log in a mutex.
#[derive(Default)]
pub struct MemoryWebhookStore {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryWebhookStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryWebhookStore").finish_non_exhaustive()
    }
}

impl MemoryWebhookStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, WebhookError> {
        self.state
            .lock()
            .map_err(|_| WebhookError::unavailable("the memory store's lock is poisoned"))
    }
}

fn invalid_cursor(e: tenancy_core::ValidationError) -> WebhookError {
    WebhookError::InvalidInput(e.to_string())
}

fn endpoint_mut(
    state: &mut State,
    tenant_id: TenantId,
    id: EndpointId,
) -> Result<&mut (Endpoint, StoredSecrets), WebhookError> {
    state
        .endpoints
        .get_mut(&id)
        .filter(|(e, _)| e.tenant_id == tenant_id)
        .ok_or(WebhookError::NotFound("webhook endpoint"))
}

#[async_trait]
impl WebhookStore for MemoryWebhookStore {
    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        secrets: &StoredSecrets,
        max_per_tenant: usize,
    ) -> Result<(), WebhookError> {
        let mut state = self.state()?;
        let count = state
            .endpoints
            .values()
            .filter(|(e, _)| e.tenant_id == endpoint.tenant_id)
            .count();
        if count >= max_per_tenant {
            return Err(WebhookError::TooManyEndpoints {
                max: max_per_tenant,
            });
        }
        if state.endpoints.contains_key(&endpoint.id) {
            return Err(WebhookError::InvalidInput(
                "an endpoint with this id exists".into(),
            ));
        }
        state
            .endpoints
            .insert(endpoint.id, (endpoint.clone(), secrets.clone()));
        Ok(())
    }

    async fn get_endpoint(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
    ) -> Result<Endpoint, WebhookError> {
        let mut state = self.state()?;
        Ok(endpoint_mut(&mut state, tenant_id, id)?.0.clone())
    }

    async fn list_endpoints(
        &self,
        tenant_id: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Endpoint>, WebhookError> {
        let after: Option<uuid::Uuid> = page.after_key(ENDPOINTS_LIST).map_err(invalid_cursor)?;
        let state = self.state()?;
        let items: Vec<Endpoint> = state
            .endpoints
            .values()
            .map(|(e, _)| e)
            .filter(|e| e.tenant_id == tenant_id)
            .filter(|e| after.is_none_or(|a| e.id.as_uuid() > a))
            .take(page.size.get() + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(items, page.size, |e| {
            Cursor::encode(ENDPOINTS_LIST, e.id.as_uuid())
        }))
    }

    async fn active_endpoints(&self, tenant_id: TenantId) -> Result<Vec<Endpoint>, WebhookError> {
        let state = self.state()?;
        Ok(state
            .endpoints
            .values()
            .map(|(e, _)| e)
            .filter(|e| e.tenant_id == tenant_id && e.status.is_active())
            .cloned()
            .collect())
    }

    async fn update_endpoint(&self, endpoint: &Endpoint) -> Result<(), WebhookError> {
        let mut state = self.state()?;
        let (stored, _) = endpoint_mut(&mut state, endpoint.tenant_id, endpoint.id)?;
        stored.url = endpoint.url.clone();
        stored.description = endpoint.description.clone();
        stored.event_types = endpoint.event_types.clone();
        stored.status = endpoint.status.clone();
        stored.updated_at = endpoint.updated_at;
        Ok(())
    }

    async fn delete_endpoint(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
    ) -> Result<(), WebhookError> {
        let mut state = self.state()?;
        endpoint_mut(&mut state, tenant_id, id)?;
        state.endpoints.remove(&id);
        Ok(())
    }

    async fn secrets(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
    ) -> Result<StoredSecrets, WebhookError> {
        let mut state = self.state()?;
        Ok(endpoint_mut(&mut state, tenant_id, id)?.1.clone())
    }

    async fn set_secrets(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
        secrets: &StoredSecrets,
    ) -> Result<(), WebhookError> {
        let mut state = self.state()?;
        endpoint_mut(&mut state, tenant_id, id)?.1 = secrets.clone();
        Ok(())
    }

    async fn put_message(&self, event: &Event) -> Result<(), WebhookError> {
        let mut state = self.state()?;
        state
            .messages
            .entry(event.id)
            .or_insert_with(|| (event.clone(), OffsetDateTime::now_utc()));
        Ok(())
    }

    async fn purge(&self, before: OffsetDateTime) -> Result<Purged, WebhookError> {
        let mut state = self.state()?;
        let logged = state.attempts.len();
        state.attempts.retain(|_, row| row.at >= before);
        let deliveries = logged - state.attempts.len();
        let referenced: std::collections::HashSet<(TenantId, EventId)> = state
            .attempts
            .values()
            .map(|row| (row.tenant_id, row.event_id))
            .collect();
        let kept = state.messages.len();
        state.messages.retain(|id, (event, stored_at)| {
            *stored_at >= before || referenced.contains(&(event.tenant_id, *id))
        });
        let messages = kept - state.messages.len();
        Ok(Purged {
            deliveries: deliveries as u64,
            messages: messages as u64,
        })
    }

    async fn get_message(
        &self,
        tenant_id: TenantId,
        event_id: EventId,
    ) -> Result<Event, WebhookError> {
        let state = self.state()?;
        state
            .messages
            .get(&event_id)
            .filter(|(e, _)| e.tenant_id == tenant_id)
            .map(|(e, _)| e.clone())
            .ok_or(WebhookError::NotFound("event"))
    }

    async fn record_attempt(&self, attempt: &DeliveryAttempt) -> Result<Endpoint, WebhookError> {
        let mut state = self.state()?;
        state.attempts.insert(attempt.id, attempt.clone());
        let (endpoint, _) = endpoint_mut(&mut state, attempt.tenant_id, attempt.endpoint_id)?;
        match attempt.outcome {
            AttemptOutcome::Succeeded => {
                endpoint.consecutive_failures = 0;
                endpoint.healthy_at = endpoint.healthy_at.max(attempt.at);
            }
            AttemptOutcome::Failed | AttemptOutcome::Dead => {
                endpoint.consecutive_failures = endpoint.consecutive_failures.saturating_add(1);
            }
            AttemptOutcome::Skipped => {}
        }
        Ok(endpoint.clone())
    }

    async fn get_attempt(
        &self,
        tenant_id: TenantId,
        id: DeliveryId,
    ) -> Result<DeliveryAttempt, WebhookError> {
        let state = self.state()?;
        state
            .attempts
            .get(&id)
            .filter(|a| a.tenant_id == tenant_id)
            .cloned()
            .ok_or(WebhookError::NotFound("delivery"))
    }

    async fn list_attempts(
        &self,
        tenant_id: TenantId,
        endpoint_id: EndpointId,
        page: &PageRequest,
    ) -> Result<Page<DeliveryAttempt>, WebhookError> {
        let before: Option<uuid::Uuid> = page.after_key(DELIVERIES_LIST).map_err(invalid_cursor)?;
        let state = self.state()?;
        let items: Vec<DeliveryAttempt> = state
            .attempts
            .values()
            .rev()
            .filter(|a| a.tenant_id == tenant_id && a.endpoint_id == endpoint_id)
            .filter(|a| before.is_none_or(|b| a.id.as_uuid() < b))
            .take(page.size.get() + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(items, page.size, |a| {
            Cursor::encode(DELIVERIES_LIST, a.id.as_uuid())
        }))
    }

    async fn pause_if_active(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<bool, WebhookError> {
        let mut state = self.state()?;
        let (endpoint, _) = endpoint_mut(&mut state, tenant_id, id)?;
        if !endpoint.status.is_active() {
            return Ok(false);
        }
        endpoint.status = EndpointStatus::Paused {
            reason: reason.to_owned(),
            since: at,
        };
        endpoint.updated_at = at;
        Ok(true)
    }

    async fn resume(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
        at: OffsetDateTime,
    ) -> Result<Endpoint, WebhookError> {
        let mut state = self.state()?;
        let (endpoint, _) = endpoint_mut(&mut state, tenant_id, id)?;
        if matches!(endpoint.status, EndpointStatus::Disabled) {
            return Err(WebhookError::InvalidInput(
                "a disabled endpoint is enabled by an update, not resumed".into(),
            ));
        }
        endpoint.status = EndpointStatus::Active;
        endpoint.consecutive_failures = 0;
        endpoint.healthy_at = at;
        endpoint.updated_at = at;
        Ok(endpoint.clone())
    }
}
