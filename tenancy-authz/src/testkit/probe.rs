//! A store wrapper for the cache suites: counts list reads, and can hold
//! one policy read after it read the store, so a test can act in the gap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use tenancy_core::{AuditContext, RoleName, TenantId};
use tokio::sync::Notify;

use crate::policy::{PolicyDocument, PolicyId};
use crate::role::RoleDefinition;
use crate::store::{AuthzStoreError, Epoch, PolicyStore, RoleStore, Versioned};

/// Both stores of a fixture, observed.
pub(crate) struct Probe {
    roles: Arc<dyn RoleStore>,
    policies: Arc<dyn PolicyStore>,
    lists: AtomicUsize,
    armed: AtomicBool,
    reached: Notify,
    release: Notify,
}

impl Probe {
    pub(crate) fn new(roles: Arc<dyn RoleStore>, policies: Arc<dyn PolicyStore>) -> Arc<Self> {
        Arc::new(Self {
            roles,
            policies,
            lists: AtomicUsize::new(0),
            armed: AtomicBool::new(false),
            reached: Notify::new(),
            release: Notify::new(),
        })
    }

    /// How many times roles or policies were listed.
    pub(crate) fn lists(&self) -> usize {
        self.lists.load(Ordering::SeqCst)
    }

    /// Makes the next policy list wait, after reading, until [`Probe::release`].
    pub(crate) fn hold_next_policy_read(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Waits until a held read has read the store.
    pub(crate) async fn held(&self) {
        self.reached.notified().await;
    }

    /// Lets the held read return what it read.
    pub(crate) fn release(&self) {
        self.release.notify_one();
    }
}

#[async_trait]
impl RoleStore for Probe {
    async fn roles_epoch(&self, tenant_id: TenantId) -> Result<Epoch, AuthzStoreError> {
        self.roles.roles_epoch(tenant_id).await
    }

    async fn list_roles(
        &self,
        tenant_id: TenantId,
    ) -> Result<Versioned<Vec<RoleDefinition>>, AuthzStoreError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.roles.list_roles(tenant_id).await
    }

    async fn put_role(
        &self,
        tenant_id: TenantId,
        role: &RoleDefinition,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError> {
        self.roles.put_role(tenant_id, role, expected, audit).await
    }

    async fn delete_role(
        &self,
        tenant_id: TenantId,
        name: &RoleName,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError> {
        self.roles
            .delete_role(tenant_id, name, expected, audit)
            .await
    }
}

#[async_trait]
impl PolicyStore for Probe {
    async fn policies_epoch(&self, tenant_id: TenantId) -> Result<Epoch, AuthzStoreError> {
        self.policies.policies_epoch(tenant_id).await
    }

    async fn list_policies(
        &self,
        tenant_id: TenantId,
    ) -> Result<Versioned<Vec<PolicyDocument>>, AuthzStoreError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let read = self.policies.list_policies(tenant_id).await;
        if self.armed.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            self.release.notified().await;
        }
        read
    }

    async fn put_policy(
        &self,
        tenant_id: TenantId,
        policy: &PolicyDocument,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError> {
        self.policies
            .put_policy(tenant_id, policy, expected, audit)
            .await
    }

    async fn delete_policy(
        &self,
        tenant_id: TenantId,
        id: &PolicyId,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError> {
        self.policies
            .delete_policy(tenant_id, id, expected, audit)
            .await
    }
}
