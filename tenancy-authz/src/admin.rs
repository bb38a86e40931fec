//! Validated, escalation-checked, audited changes to roles and policies.

use std::sync::Arc;

use tenancy_core::{AuditContext, RoleName, RoleSet, TenantScope};

use crate::cache::{CacheError, PolicyCache};
use crate::engine::Authorizer;
use crate::permission::{Bits, sdk};
use crate::policy::{Effect, Policy, PolicyDocument, PolicyError, PolicyId};
use crate::request::{AuthzRequest, Principal, Resource};
use crate::role::{RoleDefinition, RoleError};
use crate::store::{AuthzStoreError, Epoch};

/// How many times a write is retried when another write moved the epoch.
const RETRIES: usize = 5;

/// What an [`AuthzAdmin`] change can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The actor may not do this at all (it lacks `permission`).
    #[error("`{permission}` is required")]
    Forbidden {
        /// The permission required.
        permission: &'static str,
    },
    /// The change would grant permissions the actor does not hold.
    #[error("privilege escalation: the change would grant {} which the actor does not hold", missing.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "))]
    Escalation {
        /// The permissions beyond the actor's own (up to 20 shown).
        missing: Vec<String>,
    },
    /// The actor belongs to another tenant than the scope.
    #[error("the actor acts in another tenant")]
    OtherTenant,
    /// The role is invalid, or the change would make the tenant's roles invalid
    /// (a cycle, an unknown inherited role, a built-in redefined).
    #[error(transparent)]
    Role(#[from] RoleError),
    /// The role is inherited by another role and cannot be deleted.
    #[error("role `{role}` is inherited by `{by}`")]
    RoleInUse {
        /// The role.
        role: RoleName,
        /// A role inheriting it.
        by: RoleName,
    },
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The store failed (including [`AuthzStoreError::StaleEpoch`] after
    /// several retries under heavy concurrent editing).
    #[error(transparent)]
    Store(#[from] AuthzStoreError),
    /// Loading the current roles and policies failed.
    #[error(transparent)]
    Load(#[from] CacheError),
}

/// Changes a tenant's roles and policies on behalf of an actor, enforcing:
///
/// - the actor holds `roles:manage` (roles) or `policies:manage`
///   (policies), or `members:manage` to assign roles, checked with the
///   tenant's own roles and policies;
/// - **no privilege escalation**: a role the actor creates or edits may
///   grant (through its inheritance too) only permissions the actor holds;
///   an allow statement may cover only such permissions; roles the actor
///   assigns or removes may grant only such permissions. Principals holding
///   `owner` are exempt when the engine says so
///   ([`crate::EngineBuilder::owners_exempt`], default yes);
/// - the tenant's roles still compile afterwards (no cycle, no unknown
///   parent, nothing outside the catalog).
///
/// Writes are based on the epoch they were checked at and retried if
/// another write moved it, so checks and write cannot interleave with a
/// concurrent change. The cache is invalidated after each write.
#[derive(Debug, Clone)]
pub struct AuthzAdmin {
    cache: Arc<PolicyCache>,
}

impl AuthzAdmin {
    /// An admin writing through `cache`'s stores.
    pub fn new(cache: Arc<PolicyCache>) -> Self {
        Self { cache }
    }

    fn require(
        authorizer: &Authorizer,
        actor: &Principal,
        permission: &'static str,
        resource_type: &str,
    ) -> Result<(), AdminError> {
        let resource = Resource::new(resource_type).in_tenant(authorizer.tenant_id());
        if authorizer
            .check(&AuthzRequest::new(actor, permission, &resource))
            .allowed()
        {
            Ok(())
        } else {
            Err(AdminError::Forbidden { permission })
        }
    }

    fn within(
        authorizer: &Authorizer,
        actor: &Principal,
        granted: &Bits,
    ) -> Result<(), AdminError> {
        if authorizer.exempt_owner(actor) {
            return Ok(());
        }
        let held = authorizer.effective_bits(actor);
        if granted.is_subset_of(&held) {
            return Ok(());
        }
        let mut missing = authorizer.empty_bits();
        for i in granted.iter().filter(|&i| !held.get(i)) {
            missing.set(i);
        }
        let mut names = authorizer.bits_names(&missing);
        names.truncate(20);
        Err(AdminError::Escalation { missing: names })
    }

    /// Loads the current state, fresh from the store.
    async fn current(
        &self,
        scope: &TenantScope,
        actor: &Principal,
    ) -> Result<
        (
            Arc<Authorizer>,
            Vec<RoleDefinition>,
            Vec<Policy>,
            Epoch,
            Epoch,
        ),
        AdminError,
    > {
        if actor.tenant_id() != scope.tenant_id() {
            return Err(AdminError::OtherTenant);
        }
        let tenant = scope.tenant_id();
        let roles = self.cache.role_store().list_roles(tenant).await?;
        let documents = self.cache.policy_store().list_policies(tenant).await?;
        let catalog = self.cache.engine().catalog();
        let policies = documents
            .value
            .into_iter()
            .map(|d| Policy::new(d, catalog))
            .collect::<Result<Vec<_>, _>>()?;
        let authorizer = Arc::new(
            self.cache
                .engine()
                .compile(tenant, &roles.value, &policies)?,
        );
        Ok((
            authorizer,
            roles.value,
            policies,
            roles.epoch,
            documents.epoch,
        ))
    }

    /// Interprets a write of the retry loops: the new epoch (and the cache
    /// invalidated), `None` to read again and retry after a concurrent
    /// change, or the error.
    fn settle(
        &self,
        scope: &TenantScope,
        written: Result<Epoch, AuthzStoreError>,
        attempt: &mut usize,
    ) -> Result<Option<Epoch>, AdminError> {
        match written {
            Ok(epoch) => {
                self.cache.invalidate(scope.tenant_id());
                Ok(Some(epoch))
            }
            Err(AuthzStoreError::StaleEpoch { .. }) if *attempt < RETRIES => {
                *attempt += 1;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates or replaces a custom role. Returns the new epoch.
    pub async fn put_role(
        &self,
        scope: &TenantScope,
        actor: &Principal,
        role: RoleDefinition,
        audit: &AuditContext,
    ) -> Result<Epoch, AdminError> {
        if role.name.is_built_in() {
            return Err(RoleError::BuiltIn { role: role.name }.into());
        }
        role.validate(self.cache.engine().catalog())?;
        let mut attempt = 0;
        loop {
            let (current, mut roles, policies, epoch, _) = self.current(scope, actor).await?;
            Self::require(&current, actor, sdk::ROLES_MANAGE, "role")?;
            roles.retain(|r| r.name != role.name);
            roles.push(role.clone());
            let candidate = self
                .cache
                .engine()
                .compile(scope.tenant_id(), &roles, &policies)?;
            let granted = candidate
                .role_bits(&role.name)
                .cloned()
                .unwrap_or_else(|| candidate.empty_bits());
            Self::within(&current, actor, &granted)?;
            let written = self
                .cache
                .role_store()
                .put_role(scope.tenant_id(), &role, epoch, audit)
                .await;
            if let Some(epoch) = self.settle(scope, written, &mut attempt)? {
                return Ok(epoch);
            }
        }
    }

    /// Deletes a custom role that no other role inherits. Members holding
    /// it keep the name, which then grants nothing.
    pub async fn delete_role(
        &self,
        scope: &TenantScope,
        actor: &Principal,
        name: &RoleName,
        audit: &AuditContext,
    ) -> Result<Epoch, AdminError> {
        if name.is_built_in() {
            return Err(RoleError::BuiltIn { role: name.clone() }.into());
        }
        let mut attempt = 0;
        loop {
            let (current, roles, _, epoch, _) = self.current(scope, actor).await?;
            Self::require(&current, actor, sdk::ROLES_MANAGE, "role")?;
            if let Some(by) = roles.iter().find(|r| r.inherits.contains(name)) {
                return Err(AdminError::RoleInUse {
                    role: name.clone(),
                    by: by.name.clone(),
                });
            }
            // Deleting a role only takes permissions away, but a member may
            // delete only roles they could have created.
            if let Some(bits) = current.role_bits(name) {
                Self::within(&current, actor, &bits.clone())?;
            }
            let written = self
                .cache
                .role_store()
                .delete_role(scope.tenant_id(), name, epoch, audit)
                .await;
            if let Some(epoch) = self.settle(scope, written, &mut attempt)? {
                return Ok(epoch);
            }
        }
    }

    /// Creates or replaces a policy. Its allow statements may cover only
    /// permissions the actor holds. Returns the new epoch.
    pub async fn put_policy(
        &self,
        scope: &TenantScope,
        actor: &Principal,
        document: PolicyDocument,
        audit: &AuditContext,
    ) -> Result<Epoch, AdminError> {
        let policy = Policy::new(document, self.cache.engine().catalog())?;
        let mut attempt = 0;
        loop {
            let (current, _, _, _, epoch) = self.current(scope, actor).await?;
            Self::require(&current, actor, sdk::POLICIES_MANAGE, "policy")?;
            let allowed: Vec<_> = policy
                .document()
                .statements
                .iter()
                .filter(|s| s.effect == Effect::Allow)
                .flat_map(|s| s.actions.iter().cloned())
                .collect();
            Self::within(&current, actor, &current.pattern_bits(&allowed))?;
            let written = self
                .cache
                .policy_store()
                .put_policy(scope.tenant_id(), policy.document(), epoch, audit)
                .await;
            if let Some(epoch) = self.settle(scope, written, &mut attempt)? {
                return Ok(epoch);
            }
        }
    }

    /// Deletes a policy.
    pub async fn delete_policy(
        &self,
        scope: &TenantScope,
        actor: &Principal,
        id: &PolicyId,
        audit: &AuditContext,
    ) -> Result<Epoch, AdminError> {
        let mut attempt = 0;
        loop {
            let (current, _, _, _, epoch) = self.current(scope, actor).await?;
            Self::require(&current, actor, sdk::POLICIES_MANAGE, "policy")?;
            let written = self
                .cache
                .policy_store()
                .delete_policy(scope.tenant_id(), id, epoch, audit)
                .await;
            if let Some(epoch) = self.settle(scope, written, &mut attempt)? {
                return Ok(epoch);
            }
        }
    }

    /// Checks that `actor` may change a member's roles from `before` to
    /// `after`: it needs `members:manage`, and every role added or removed
    /// may grant only permissions the actor holds. Call it before
    /// [`tenancy_core::Directory::change_roles`] (or when inviting, with
    /// `before` = `None`).
    pub async fn authorize_assignment(
        &self,
        scope: &TenantScope,
        actor: &Principal,
        before: Option<&RoleSet>,
        after: &RoleSet,
    ) -> Result<(), AdminError> {
        let added = after
            .iter()
            .filter(|r| before.is_none_or(|b| !b.contains(r)));
        let removed = before
            .into_iter()
            .flat_map(|b| b.iter())
            .filter(|r| !after.contains(r));
        self.authorize_role_change(scope, actor, added.chain(removed))
            .await
    }

    /// Checks that `actor` may remove a member holding `roles`: it needs
    /// `members:manage` and every permission those roles grant, so an admin
    /// cannot remove an owner it could not demote. Call it before
    /// removing the membership.
    pub async fn authorize_removal(
        &self,
        scope: &TenantScope,
        actor: &Principal,
        roles: &RoleSet,
    ) -> Result<(), AdminError> {
        self.authorize_role_change(scope, actor, roles.iter()).await
    }

    async fn authorize_role_change<'r>(
        &self,
        scope: &TenantScope,
        actor: &Principal,
        changed_roles: impl Iterator<Item = &'r RoleName>,
    ) -> Result<(), AdminError> {
        if actor.tenant_id() != scope.tenant_id() {
            return Err(AdminError::OtherTenant);
        }
        let current = self.cache.load(scope.tenant_id()).await?;
        Self::require(&current, actor, sdk::MEMBERS_MANAGE, "membership")?;
        let mut changed = current.empty_bits();
        for role in changed_roles {
            if let Some(bits) = current.role_bits(role) {
                changed.union_with(bits);
            }
        }
        Self::within(&current, actor, &changed)
    }
}
