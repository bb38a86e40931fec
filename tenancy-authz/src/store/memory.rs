//! In-memory role and policy stores (feature `memory`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use tenancy_core::{AuditContext, Backend, Clock, RoleName, SystemClock, TenantId};
use tokio::sync::Mutex;

use super::{
    AuthzStoreError, Change, Epoch, MAX_POLICIES, MAX_ROLES, PolicyStore, RoleStore, Versioned,
};
use crate::policy::{PolicyDocument, PolicyId};
use crate::role::RoleDefinition;

#[derive(Clone, Default)]
struct TenantState {
    epoch: Epoch,
    roles: BTreeMap<String, RoleDefinition>,
    policies: BTreeMap<String, PolicyDocument>,
}

/// Roles and policies in process memory, implementing both [`RoleStore`]
/// and [`PolicyStore`] with one epoch per tenant. Audit events go to the
/// tenancy-core [`Backend`] given to [`MemoryAuthzStore::new`] (usually the
/// app's `MemoryBackend`), which must know the tenant.
///
/// Atomicity: a write holds this store's lock from the epoch check until
/// the change is installed, appends and commits the audit event first, and
/// installs the change only if that commit succeeded. No reader sees a
/// change without its audit event, and a failed append leaves the store
/// untouched. The reverse (an event for a change never installed) cannot
/// happen short of the process dying between the two steps, when memory
/// state is lost anyway. Two separate stores cannot share one transaction;
/// this ordering gives the same guarantees to anyone reading through the
/// stores.
pub struct MemoryAuthzStore {
    state: Mutex<HashMap<TenantId, TenantState>>,
    audit: Arc<dyn Backend>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryAuthzStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAuthzStore").finish_non_exhaustive()
    }
}

impl MemoryAuthzStore {
    /// An empty store recording audit events in `audit`.
    pub fn new(audit: Arc<dyn Backend>) -> Self {
        Self {
            state: Mutex::new(HashMap::new()),
            audit,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for audit timestamps.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    async fn epoch(&self, tenant_id: TenantId) -> Epoch {
        self.state
            .lock()
            .await
            .get(&tenant_id)
            .map_or(Epoch::ZERO, |t| t.epoch)
    }

    /// Runs one write: epoch check, change on a copy, audit, install.
    async fn write<'c>(
        &self,
        tenant_id: TenantId,
        expected: Epoch,
        audit: &AuditContext,
        change: impl FnOnce(&mut TenantState) -> Result<Change<'c>, AuthzStoreError>,
    ) -> Result<Epoch, AuthzStoreError> {
        let mut state = self.state.lock().await;
        let mut tenant = state.get(&tenant_id).cloned().unwrap_or_default();
        if tenant.epoch != expected {
            return Err(AuthzStoreError::StaleEpoch {
                expected,
                actual: tenant.epoch,
            });
        }
        let epoch = tenant.epoch.next();
        let event = {
            let described = change(&mut tenant)?;
            described.audit_event(audit, epoch, self.clock.now())?
        };
        let tx = self.audit.begin().await?;
        tx.append_audit(tenant_id, event)
            .await
            .map_err(AuthzStoreError::from_audit)?;
        tx.commit().await?;
        tenant.epoch = epoch;
        state.insert(tenant_id, tenant);
        Ok(epoch)
    }
}

#[async_trait]
impl RoleStore for MemoryAuthzStore {
    async fn roles_epoch(&self, tenant_id: TenantId) -> Result<Epoch, AuthzStoreError> {
        Ok(self.epoch(tenant_id).await)
    }

    async fn list_roles(
        &self,
        tenant_id: TenantId,
    ) -> Result<Versioned<Vec<RoleDefinition>>, AuthzStoreError> {
        let state = self.state.lock().await;
        Ok(state.get(&tenant_id).map_or_else(
            || Versioned {
                epoch: Epoch::ZERO,
                value: Vec::new(),
            },
            |t| Versioned {
                epoch: t.epoch,
                value: t.roles.values().cloned().collect(),
            },
        ))
    }

    async fn put_role(
        &self,
        tenant_id: TenantId,
        role: &RoleDefinition,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError> {
        self.write(tenant_id, expected, audit, |t| {
            let created =
                insert_limited(&mut t.roles, role.name.as_str(), role, "roles", MAX_ROLES)?;
            Ok(Change::PutRole { role, created })
        })
        .await
    }

    async fn delete_role(
        &self,
        tenant_id: TenantId,
        name: &RoleName,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError> {
        self.write(tenant_id, expected, audit, |t| {
            t.roles
                .remove(name.as_str())
                .ok_or_else(|| AuthzStoreError::RoleNotFound(name.clone()))?;
            Ok(Change::DeleteRole { name })
        })
        .await
    }
}

/// Creates or replaces `key`; `true` if it was created. Refuses a new one
/// once `documents` holds `max`.
fn insert_limited<T: Clone>(
    documents: &mut BTreeMap<String, T>,
    key: &str,
    document: &T,
    what: &'static str,
    max: usize,
) -> Result<bool, AuthzStoreError> {
    let created = !documents.contains_key(key);
    if created && documents.len() >= max {
        return Err(AuthzStoreError::Limit { what, max });
    }
    documents.insert(key.to_owned(), document.clone());
    Ok(created)
}

#[async_trait]
impl PolicyStore for MemoryAuthzStore {
    async fn policies_epoch(&self, tenant_id: TenantId) -> Result<Epoch, AuthzStoreError> {
        Ok(self.epoch(tenant_id).await)
    }

    async fn list_policies(
        &self,
        tenant_id: TenantId,
    ) -> Result<Versioned<Vec<PolicyDocument>>, AuthzStoreError> {
        let state = self.state.lock().await;
        Ok(state.get(&tenant_id).map_or_else(
            || Versioned {
                epoch: Epoch::ZERO,
                value: Vec::new(),
            },
            |t| Versioned {
                epoch: t.epoch,
                value: t.policies.values().cloned().collect(),
            },
        ))
    }

    async fn put_policy(
        &self,
        tenant_id: TenantId,
        policy: &PolicyDocument,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError> {
        self.write(tenant_id, expected, audit, |t| {
            let created = insert_limited(
                &mut t.policies,
                policy.id.as_str(),
                policy,
                "policies",
                MAX_POLICIES,
            )?;
            Ok(Change::PutPolicy { policy, created })
        })
        .await
    }

    async fn delete_policy(
        &self,
        tenant_id: TenantId,
        id: &PolicyId,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError> {
        self.write(tenant_id, expected, audit, |t| {
            t.policies
                .remove(id.as_str())
                .ok_or_else(|| AuthzStoreError::PolicyNotFound(id.clone()))?;
            Ok(Change::DeletePolicy { id })
        })
        .await
    }
}
