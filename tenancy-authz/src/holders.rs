//! Who holds a role: what [`crate::AuthzAdmin`] asks before deleting one.

use std::sync::Arc;

use async_trait::async_trait;
use tenancy_core::{
    Backend, InvitationStatus, InvitationStore, MembershipStore, PageRequest, PageSize, RoleName,
    StoreError, TenantId,
};

/// Tells whether anyone in a tenant holds a role. The authz crate keeps
/// roles and policies, not memberships: the host provides this so that
/// [`crate::AuthzAdmin::delete_role`] can refuse to delete a role that
/// members or pending invitations still hold (re-creating it later would
/// silently hand it back to them).
///
/// [`DirectoryRoleHolders`] implements it over tenancy-core's stores.
#[async_trait]
pub trait RoleHolders: Send + Sync {
    /// Whether a membership of `tenant_id` (active, suspended or invited)
    /// or a pending invitation to it holds `role`.
    async fn role_in_use(&self, tenant_id: TenantId, role: &RoleName) -> Result<bool, StoreError>;
}

/// [`RoleHolders`] over a tenancy-core [`Backend`]: pages through the
/// tenant's memberships and invitations. Its cost grows with the tenant's
/// size; it runs only when a role is deleted.
#[derive(Clone)]
pub struct DirectoryRoleHolders {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for DirectoryRoleHolders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryRoleHolders")
            .finish_non_exhaustive()
    }
}

impl DirectoryRoleHolders {
    /// Reads memberships and invitations from `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }
}

#[async_trait]
impl RoleHolders for DirectoryRoleHolders {
    async fn role_in_use(&self, tenant_id: TenantId, role: &RoleName) -> Result<bool, StoreError> {
        let mut page = PageRequest::first(PageSize::MAX);
        loop {
            let members = self.backend.list_members(tenant_id, &page).await?;
            if members
                .items
                .iter()
                .any(|m| m.membership.roles.contains(role))
            {
                return Ok(true);
            }
            match members.next {
                Some(cursor) => page = page.after(cursor),
                None => break,
            }
        }
        let mut page = PageRequest::first(PageSize::MAX);
        loop {
            let invitations = self.backend.list_invitations(tenant_id, &page).await?;
            if invitations
                .items
                .iter()
                .any(|i| i.status == InvitationStatus::Pending && i.roles.contains(role))
            {
                return Ok(true);
            }
            match invitations.next {
                Some(cursor) => page = page.after(cursor),
                None => return Ok(false),
            }
        }
    }
}
