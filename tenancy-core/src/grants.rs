//! [`GrantCheck`]: whether whoever sent an invitation could still send it.
//!
//! An invitation grants roles when it is accepted, possibly days after it
//! was sent. The member (or API key) who sent it may have lost the power to
//! grant those roles in between: demoted, suspended, removed, or their
//! roles redefined. The [`crate::Directory`] asks a `GrantCheck` when an
//! invitation is accepted and when its sender's roles change, and revokes
//! what the sender no longer backs. tenancy-core knows memberships, not
//! permissions: the host wires a check over its authorization engine
//! (tenancy-http's builder does, over tenancy-authz).

use async_trait::async_trait;

use crate::error::StoreError;
use crate::id::{ApiKeyId, TenantId, UserId};
use crate::membership::RoleSet;
use crate::store::Transaction;

/// Who grants roles, as a [`GrantCheck`] is asked about them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Grantor<'a> {
    /// A member of the tenant, with the roles to judge them by: those of
    /// their active membership, or those a role change is giving them.
    Member {
        /// The member.
        user: UserId,
        /// Their roles.
        roles: &'a RoleSet,
    },
    /// An API key of the tenant; the check resolves its current powers
    /// (whether it still works, its creator's roles, its scopes). Asked
    /// only from [`crate::Directory::check_invitation_sender`] and
    /// [`crate::Directory::withdraw_unbacked_invitation`], in a transaction
    /// of the directory's own, so the check may read other stores.
    ApiKey(ApiKeyId),
}

/// Decides whether a grantor may grant roles in a tenant now: the same
/// rule that let them send the invitation in the first place (for
/// tenancy-authz, `members:manage` and no escalation).
#[async_trait]
pub trait GrantCheck: Send + Sync {
    /// Whether `grantor` may grant `roles` in `tenant_id`. `tx` is the
    /// directory's open transaction (holding the tenant's lock): read
    /// tenancy-core records through it, not through the backend, which
    /// may refuse a second transaction in the same task.
    async fn may_grant(
        &self,
        tx: &dyn Transaction,
        tenant_id: TenantId,
        grantor: Grantor<'_>,
        roles: &RoleSet,
    ) -> Result<bool, StoreError>;
}
