//! Adding a member without an invitation: what an identity provider does
//! when it provisions someone into a tenant (SCIM).

use serde_json::json;

use super::{Directory, DirectoryError, Result, actions, ensure_active};
use crate::audit::AuditContext;
use crate::error::{Conflict, StoreError};
use crate::id::MembershipId;
use crate::membership::{Membership, MembershipStatus, RoleSet};
use crate::scope::TenantScope;
use crate::user::{DisplayName, Email, NewUser, User, UserStatus};

/// What [`Directory::provision_member`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Provisioned {
    /// The user: found by email, or created.
    pub user: User,
    /// The new, active membership.
    pub membership: Membership,
    /// Whether the user account was created by this call.
    pub user_created: bool,
}

impl Directory {
    /// Makes the holder of `email` an active member of the scope's tenant
    /// with `roles`, creating their account (unverified, with
    /// `display_name`) if none exists: an existing account is linked, not
    /// copied, and keeps its name. One transaction, audited as
    /// `member.provisioned`.
    ///
    /// Errors: [`DirectoryError::TenantNotActive`],
    /// [`DirectoryError::SeatLimitReached`] (a hard seat limit counts a
    /// provisioned member like an invited one),
    /// [`DirectoryError::UserDisabled`], [`DirectoryError::AlreadyMember`],
    /// or a store conflict when another request created the account at the
    /// same moment (retry).
    #[tracing::instrument(skip_all, fields(tenant_id = %scope.tenant_id()), err(Debug))]
    pub async fn provision_member(
        &self,
        scope: &TenantScope,
        email: Email,
        display_name: Option<DisplayName>,
        roles: RoleSet,
        context: &AuditContext,
    ) -> Result<Provisioned> {
        let limit = self.seat_limit(scope.tenant_id()).await?;
        let tx = self.backend.begin().await?;
        let tenant = tx.lock_tenant(scope.tenant_id()).await?;
        ensure_active(&tenant)?;
        let (user, user_created) = match tx.find_user_by_email(&email).await? {
            Some(user) if user.status == UserStatus::Disabled => {
                return Err(DirectoryError::UserDisabled);
            }
            Some(user) => (user, false),
            None => {
                let mut new = NewUser::new(email);
                new.display_name = display_name;
                let user = self.user_from(new);
                match tx.insert_user(&user).await {
                    Err(StoreError::Conflict(Conflict::UserEmail)) => {
                        return Err(StoreError::Conflict(Conflict::UserEmail).into());
                    }
                    other => other?,
                }
                (user, true)
            }
        };
        if tx.find_membership(tenant.id, user.id).await?.is_some() {
            return Err(DirectoryError::AlreadyMember);
        }
        let now = self.now();
        // A provisioned member takes a seat like an invited one.
        if let Some(limit) = limit
            && crate::seats::seats_used(&*tx, tenant.id, now, limit).await? >= limit
        {
            return Err(DirectoryError::SeatLimitReached { limit });
        }
        let membership = Membership {
            id: MembershipId::new(),
            tenant_id: tenant.id,
            user_id: user.id,
            roles,
            status: MembershipStatus::Active,
            created_at: now,
            updated_at: now,
        };
        tx.insert_membership(&membership).await?;
        let event = self.event(
            context,
            actions::MEMBER_PROVISIONED,
            ("membership", &membership.id),
            json!({ "user_id": user.id, "roles": membership.roles, "user_created": user_created }),
        )?;
        tx.append_audit(tenant.id, event).await?;
        tx.commit().await?;
        self.members_changed(tenant.id);
        Ok(Provisioned {
            user,
            membership,
            user_created,
        })
    }
}
