//! Proof that a request acts within one tenant.

use crate::id::TenantId;

/// Proof that a tenant was resolved for the current operation and found
/// active. The member, invitation and audit operations of
/// [`crate::Directory`] take one, so a handler cannot act on a tenant it
/// never resolved. (Tenant lifecycle operations, such as suspending, take a
/// plain [`TenantId`]: they are meant for operators and must work on
/// tenants that are not active.)
///
/// Obtain it from [`crate::Directory::scope`], which checks the tenant, or
/// from a request pipeline that did the same. [`TenantScope::assume_resolved`]
/// exists for code that checked by other means and says so at the call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantScope {
    tenant_id: TenantId,
}

impl TenantScope {
    /// Builds a scope without checking the tenant. The caller vouches that
    /// `tenant_id` was resolved and checked (for example, it came from a
    /// verified token and the tenant's status was read).
    pub fn assume_resolved(tenant_id: TenantId) -> Self {
        Self { tenant_id }
    }

    /// The tenant.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }
}
