//! Membership and tenant changes that also end sessions.

use tenancy_core::{AuditContext, Membership, Tenant, TenantId, TenantScope, UserId};

use crate::session::RevokeReason;

use super::{Auth, Result};

impl Auth {
    /// Removes a member and ends their sessions in that tenant.
    pub async fn remove_member(
        &self,
        scope: &TenantScope,
        user: UserId,
        context: &AuditContext,
    ) -> Result<Membership> {
        let removed = self
            .inner
            .directory
            .remove_member(scope, user, context)
            .await?;
        self.end_member_sessions(scope, user).await?;
        Ok(removed)
    }

    /// Suspends a member and ends their sessions in that tenant.
    pub async fn suspend_member(
        &self,
        scope: &TenantScope,
        user: UserId,
        context: &AuditContext,
    ) -> Result<Membership> {
        let suspended = self
            .inner
            .directory
            .suspend_member(scope, user, context)
            .await?;
        self.end_member_sessions(scope, user).await?;
        Ok(suspended)
    }

    /// Suspends a tenant and ends every session in it.
    pub async fn suspend_tenant(&self, tenant: TenantId, context: &AuditContext) -> Result<Tenant> {
        let suspended = self.inner.directory.suspend_tenant(tenant, context).await?;
        self.end_tenant_sessions(tenant).await?;
        Ok(suspended)
    }

    /// Soft-deletes a tenant and ends every session in it.
    pub async fn delete_tenant(&self, tenant: TenantId, context: &AuditContext) -> Result<Tenant> {
        let deleted = self.inner.directory.delete_tenant(tenant, context).await?;
        self.end_tenant_sessions(tenant).await?;
        Ok(deleted)
    }

    /// Ends every session `user` has in the scope's tenant; how many.
    async fn end_member_sessions(&self, scope: &TenantScope, user: UserId) -> Result<usize> {
        let revoked = self
            .inner
            .store
            .revoke_user_sessions(
                user,
                Some(scope.tenant_id()),
                RevokeReason::MembershipEnded,
                self.now(),
            )
            .await?;
        self.revoke_many(revoked)
    }

    /// Ends every session in `tenant`; how many.
    async fn end_tenant_sessions(&self, tenant: TenantId) -> Result<usize> {
        let revoked = self
            .inner
            .store
            .revoke_tenant_sessions(tenant, RevokeReason::TenantInactive, self.now())
            .await?;
        self.revoke_many(revoked)
    }
}
