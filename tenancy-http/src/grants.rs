//! The [`GrantCheck`] the builder gives the directory: an invitation's
//! sender must still be able to send it, by the rule the invite route
//! applied ([`AuthzAdmin::authorize_assignment`]: `members:manage`, roles
//! that exist, no escalation), judged with the sender's current powers.

use std::sync::Arc;

use async_trait::async_trait;
use tenancy_auth::AuthStore;
use tenancy_authz::{AdminError, AuthzAdmin, PermissionPattern, Principal};
use tenancy_core::{
    Actor, Clock, GrantCheck, Grantor, MembershipStatus, RoleName, RoleSet, StoreError, TenantId,
    TenantScope, Transaction,
};

/// Judges senders with the tenant's roles and policies: a member by the
/// roles the directory passes, an API key as the pipeline would
/// authenticate it now (not revoked or expired, its creator's current
/// roles, capped by its scopes).
pub(crate) struct SenderPowers {
    pub(crate) admin: AuthzAdmin,
    pub(crate) keys: Arc<dyn AuthStore>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl SenderPowers {
    /// The key as the pipeline would see it now, or `None` if it no longer
    /// authenticates (or belongs to another tenant).
    async fn key_principal(
        &self,
        tx: &dyn Transaction,
        tenant_id: TenantId,
        id: tenancy_core::ApiKeyId,
    ) -> Result<Option<Principal>, StoreError> {
        let key = match self.keys.get_api_key(id).await {
            Ok(key) => key,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(other) => return Err(other),
        };
        let now = self.clock.now();
        if key.tenant_id != tenant_id
            || key.revoked_at.is_some()
            || key.expires_at.is_some_and(|at| at <= now)
        {
            return Ok(None);
        }
        let roles = match key.created_by {
            Actor::User(user) => match tx
                .find_membership(tenant_id, user)
                .await?
                .filter(|m| m.status == MembershipStatus::Active)
            {
                Some(membership) => membership.roles,
                None => return Ok(None),
            },
            Actor::System => RoleSet::single(RoleName::OWNER),
            // Made by another key, or by no one known: no powers.
            _ => return Ok(None),
        };
        let scopes = key
            .scopes
            .iter()
            .filter_map(|scope| PermissionPattern::new(scope.as_str()).ok());
        Ok(Some(Principal::api_key(id, tenant_id, roles, scopes)))
    }
}

#[async_trait]
impl GrantCheck for SenderPowers {
    async fn may_grant(
        &self,
        tx: &dyn Transaction,
        tenant_id: TenantId,
        grantor: Grantor<'_>,
        roles: &RoleSet,
    ) -> Result<bool, StoreError> {
        let principal = match grantor {
            Grantor::Member { user, roles } => Principal::user(user, tenant_id, roles.clone()),
            Grantor::ApiKey(id) => match self.key_principal(tx, tenant_id, id).await? {
                Some(principal) => principal,
                None => return Ok(false),
            },
            // A kind of sender this check does not know backs nothing.
            _ => return Ok(false),
        };
        let scope = TenantScope::assume_resolved(tenant_id);
        match self
            .admin
            .authorize_assignment(&scope, &principal, None, roles)
            .await
        {
            Ok(()) => Ok(true),
            Err(
                AdminError::Forbidden { .. }
                | AdminError::Escalation { .. }
                | AdminError::UnknownRole { .. },
            ) => Ok(false),
            Err(other) => Err(StoreError::Unavailable(Box::new(other))),
        }
    }
}
