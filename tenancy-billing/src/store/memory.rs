//! The in-memory billing store (feature `memory`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use tenancy_core::{AuditContext, Backend, Clock, SystemClock, TenantId};
use tokio::sync::Mutex;

use super::{
    Applied, BillingStore, BillingStoreError, Change, Decision, EventRecord, MAX_ACCOUNTS_PAGE,
    decide,
};
use crate::entitlements::{BillingState, Revision};
use crate::overrides::{MAX_OVERRIDES, Override, OverrideId};
use crate::subscription::{BillingAccount, CustomerId, EventId, Subscription};

#[derive(Default)]
struct State {
    tenants: BTreeMap<TenantId, BillingState>,
    customers: HashMap<CustomerId, TenantId>,
    events: HashMap<EventId, EventRecord>,
}

/// Billing state in process memory. Audit events go to the tenancy-core
/// [`Backend`] given to [`MemoryBillingStore::new`] (usually the app's
/// `MemoryBackend`), which must know the tenant.
///
/// Atomicity: a write holds this store's lock from its checks until the
/// change is installed, appends and commits the audit event first, and
/// installs the change (with its event id) only if that commit succeeded.
/// No reader sees a change without its audit event or its event id, and
/// a failed append leaves the store untouched.
pub struct MemoryBillingStore {
    state: Mutex<State>,
    audit: Arc<dyn Backend>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryBillingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBillingStore").finish_non_exhaustive()
    }
}

impl MemoryBillingStore {
    /// An empty store recording audit events in `audit`.
    pub fn new(audit: Arc<dyn Backend>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            audit,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for audit timestamps.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    async fn append(
        &self,
        tenant_id: TenantId,
        change: Change<'_>,
        revision: Revision,
        event: Option<&EventRecord>,
        audit: &AuditContext,
    ) -> Result<(), BillingStoreError> {
        self.append_all(tenant_id, vec![(change, revision)], event, audit)
            .await
    }

    /// Appends the events of `changes` in one audit transaction.
    async fn append_all(
        &self,
        tenant_id: TenantId,
        changes: Vec<(Change<'_>, Revision)>,
        event: Option<&EventRecord>,
        audit: &AuditContext,
    ) -> Result<(), BillingStoreError> {
        let now = self.clock.now();
        let mut events = Vec::with_capacity(changes.len());
        for (change, revision) in &changes {
            events.push(change.audit_event(audit, *revision, event, now)?);
        }
        let tx = self.audit.begin().await?;
        for audit_event in events {
            tx.append_audit(tenant_id, audit_event)
                .await
                .map_err(BillingStoreError::from_audit)?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn tenant_exists(&self, tenant_id: TenantId) -> Result<(), BillingStoreError> {
        let tx = self.audit.begin().await?;
        tx.get_tenant(tenant_id)
            .await
            .map_err(BillingStoreError::from_audit)?;
        Ok(())
    }
}

/// Checks a link of `tenant_id` to `customer`: `Ok(true)` if it must be
/// made, `Ok(false)` if it exists.
fn check_link(
    state: &State,
    tenant_id: TenantId,
    customer: &CustomerId,
) -> Result<bool, BillingStoreError> {
    if let Some(owner) = state.customers.get(customer)
        && *owner != tenant_id
    {
        return Err(BillingStoreError::CustomerTaken);
    }
    match state
        .tenants
        .get(&tenant_id)
        .and_then(|t| t.account.as_ref())
    {
        Some(account) if account.customer_id == *customer => Ok(false),
        Some(_) => Err(BillingStoreError::AccountMismatch),
        None => Ok(true),
    }
}

#[async_trait]
impl BillingStore for MemoryBillingStore {
    async fn state(&self, tenant_id: TenantId) -> Result<BillingState, BillingStoreError> {
        Ok(self
            .state
            .lock()
            .await
            .tenants
            .get(&tenant_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn tenant_of_customer(
        &self,
        customer: &CustomerId,
    ) -> Result<Option<TenantId>, BillingStoreError> {
        Ok(self.state.lock().await.customers.get(customer).copied())
    }

    async fn link_customer(
        &self,
        tenant_id: TenantId,
        customer: &CustomerId,
        event: Option<&EventRecord>,
        audit: &AuditContext,
    ) -> Result<Applied, BillingStoreError> {
        let mut state = self.state.lock().await;
        if event.is_some_and(|e| state.events.contains_key(&e.id)) {
            return Ok(Applied::Duplicate);
        }
        let current = state
            .tenants
            .get(&tenant_id)
            .map_or(Revision::ZERO, |t| t.revision);
        if !check_link(&state, tenant_id, customer)? {
            self.tenant_exists(tenant_id).await?;
            if let Some(event) = event {
                state.events.insert(event.id.clone(), event.clone());
            }
            return Ok(Applied::Unchanged(current));
        }
        let revision = current.next();
        self.append(
            tenant_id,
            Change::Linked { customer },
            revision,
            event,
            audit,
        )
        .await?;
        let now = self.clock.now();
        let tenant = state.tenants.entry(tenant_id).or_default();
        tenant.revision = revision;
        tenant.account = Some(BillingAccount {
            tenant_id,
            customer_id: customer.clone(),
            created_at: tenancy_core::truncate_to_micros(now),
        });
        state.customers.insert(customer.clone(), tenant_id);
        if let Some(event) = event {
            state.events.insert(event.id.clone(), event.clone());
        }
        Ok(Applied::Changed(revision))
    }

    async fn sync_subscription(
        &self,
        tenant_id: TenantId,
        subscription: &Subscription,
        event: Option<&EventRecord>,
        audit: &AuditContext,
    ) -> Result<Applied, BillingStoreError> {
        let mut state = self.state.lock().await;
        if event.is_some_and(|e| state.events.contains_key(&e.id)) {
            return Ok(Applied::Duplicate);
        }
        let link = check_link(&state, tenant_id, &subscription.customer_id)?;
        let tenant = state.tenants.get(&tenant_id).cloned().unwrap_or_default();
        let decision = decide(tenant.subscription.as_ref(), subscription);
        let (next, changed) = match decision {
            Decision::Keep if !link => {
                self.tenant_exists(tenant_id).await?;
                if let Some(event) = event {
                    state.events.insert(event.id.clone(), event.clone());
                }
                return Ok(Applied::Unchanged(tenant.revision));
            }
            Decision::Keep => (tenant.subscription.clone(), false),
            Decision::Touch(next) => (Some(next), false),
            Decision::Change(next) => (Some(next), true),
        };
        let mut revision = tenant.revision;
        let mut changes = Vec::new();
        if link {
            revision = revision.next();
            changes.push((
                Change::Linked {
                    customer: &subscription.customer_id,
                },
                revision,
            ));
        }
        if changed && let Some(next) = &next {
            revision = revision.next();
            changes.push((
                Change::Subscription {
                    subscription: next,
                    previous: tenant.subscription.as_ref(),
                },
                revision,
            ));
        }
        if changes.is_empty() {
            self.tenant_exists(tenant_id).await?;
        } else {
            self.append_all(tenant_id, changes, event, audit).await?;
        }
        let now = tenancy_core::truncate_to_micros(self.clock.now());
        let entry = state.tenants.entry(tenant_id).or_default();
        entry.revision = revision;
        entry.subscription = next;
        if link {
            entry.account = Some(BillingAccount {
                tenant_id,
                customer_id: subscription.customer_id.clone(),
                created_at: now,
            });
            state
                .customers
                .insert(subscription.customer_id.clone(), tenant_id);
        }
        if let Some(event) = event {
            state.events.insert(event.id.clone(), event.clone());
        }
        Ok(if link || changed {
            Applied::Changed(revision)
        } else {
            Applied::Unchanged(revision)
        })
    }

    async fn record_event(&self, event: &EventRecord) -> Result<bool, BillingStoreError> {
        let mut state = self.state.lock().await;
        if state.events.contains_key(&event.id) {
            return Ok(false);
        }
        state.events.insert(event.id.clone(), event.clone());
        Ok(true)
    }

    async fn event_recorded(&self, id: &EventId) -> Result<bool, BillingStoreError> {
        Ok(self.state.lock().await.events.contains_key(id))
    }

    async fn add_override(
        &self,
        fields: &Override,
        audit: &AuditContext,
    ) -> Result<Revision, BillingStoreError> {
        let mut state = self.state.lock().await;
        let tenant = state
            .tenants
            .get(&fields.tenant_id)
            .cloned()
            .unwrap_or_default();
        if tenant.overrides.len() >= MAX_OVERRIDES {
            return Err(BillingStoreError::TooManyOverrides { max: MAX_OVERRIDES });
        }
        let revision = tenant.revision.next();
        self.append(
            fields.tenant_id,
            Change::OverrideAdded { fields },
            revision,
            None,
            audit,
        )
        .await?;
        let entry = state.tenants.entry(fields.tenant_id).or_default();
        entry.revision = revision;
        let mut stored = fields.clone();
        stored.created_at = tenancy_core::truncate_to_micros(stored.created_at);
        stored.expires_at = stored.expires_at.map(tenancy_core::truncate_to_micros);
        entry.overrides.push(stored);
        entry.overrides.sort_by_key(|o| (o.created_at, o.id));
        Ok(revision)
    }

    async fn remove_override(
        &self,
        tenant_id: TenantId,
        id: OverrideId,
        audit: &AuditContext,
    ) -> Result<Revision, BillingStoreError> {
        let mut state = self.state.lock().await;
        let Some(tenant) = state.tenants.get(&tenant_id) else {
            return Err(BillingStoreError::OverrideNotFound);
        };
        if !tenant.overrides.iter().any(|o| o.id == id) {
            return Err(BillingStoreError::OverrideNotFound);
        }
        let revision = tenant.revision.next();
        self.append(
            tenant_id,
            Change::OverrideRemoved { id },
            revision,
            None,
            audit,
        )
        .await?;
        if let Some(entry) = state.tenants.get_mut(&tenant_id) {
            entry.revision = revision;
            entry.overrides.retain(|o| o.id != id);
        }
        Ok(revision)
    }

    async fn list_accounts(
        &self,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<BillingAccount>, BillingStoreError> {
        let state = self.state.lock().await;
        let limit = limit.min(MAX_ACCOUNTS_PAGE);
        Ok(state
            .tenants
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| **id > a))
            .filter_map(|(_, t)| t.account.clone())
            .take(limit)
            .collect())
    }
}
