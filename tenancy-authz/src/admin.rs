//! Validated, escalation-checked, audited changes to roles and policies.

use std::fmt;
use std::sync::Arc;

use tenancy_core::{AuditContext, RoleName, RoleSet, TenantScope};

use crate::cache::{CacheError, PolicyCache, Ticket};
use crate::engine::Authorizer;
use crate::holders::RoleHolders;
use crate::limits::{LimitError, WriteRate, WriteThrottle};
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
    /// The change would grant permissions the actor does not hold, or
    /// deny (through a deny statement) permissions the actor does not hold.
    /// Replacing or deleting a role or policy counts as writing its old
    /// content: one may undo only what one could have written.
    #[error("privilege escalation: the change would {} {} which the actor does not hold", verb(*effect), quoted(missing))]
    Escalation {
        /// What the change would do with the missing permissions:
        /// [`Effect::Allow`] to grant them (a role, an assignment, an allow
        /// statement), [`Effect::Deny`] to deny them (a deny statement).
        effect: Effect,
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
    /// A role assigned or invited to is neither built in nor defined by
    /// the tenant (assigning it now would hand it to whoever defines it
    /// later).
    #[error("role `{role}` is not defined in this tenant")]
    UnknownRole {
        /// The role.
        role: RoleName,
    },
    /// The role cannot be deleted while it is in use: another role inherits
    /// it, or members or pending invitations hold it.
    #[error("role `{role}` is {by}")]
    RoleInUse {
        /// The role.
        role: RoleName,
        /// Who uses it.
        by: RoleUse,
    },
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The change would take the tenant past one of the engine's
    /// [`crate::Limits`] (the error names which).
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The tenant changed its policies faster than the admin's
    /// [`WriteRate`] allows; retry after `retry_after`.
    #[error("too many policy changes in this tenant; retry in {} s", retry_after.as_secs().max(1))]
    RateLimited {
        /// How long until a write is allowed again.
        retry_after: std::time::Duration,
    },
    /// The store failed (including [`AuthzStoreError::StaleEpoch`] after
    /// several retries under heavy concurrent editing).
    #[error(transparent)]
    Store(#[from] AuthzStoreError),
    /// Loading the current roles and policies failed.
    #[error(transparent)]
    Load(#[from] CacheError),
}

/// Who keeps a role from being deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoleUse {
    /// This role inherits it.
    InheritedBy(RoleName),
    /// Members (whatever their status) or pending invitations hold it.
    Assigned,
}

impl fmt::Display for RoleUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoleUse::InheritedBy(by) => write!(f, "inherited by `{by}`"),
            RoleUse::Assigned => f.write_str("still held by members or pending invitations"),
        }
    }
}

fn verb(effect: Effect) -> &'static str {
    match effect {
        Effect::Allow => "grant",
        Effect::Deny => "deny",
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Changes a tenant's roles and policies on behalf of an actor, enforcing:
///
/// - the actor holds `roles:manage` (roles) or `policies:manage`
///   (policies), or `members:manage` to assign roles, checked with the
///   tenant's own roles and policies;
/// - **no privilege escalation**: a role the actor creates, edits or
///   deletes may grant (through its inheritance too) only permissions the
///   actor holds; an allow statement may cover only such permissions; roles
///   the actor assigns or removes may grant only such permissions;
/// - **deny statements restrict only what the writer holds**: every
///   permission a deny statement's actions match must be one the actor
///   holds, so a member with `policies:manage` alone cannot deny others
///   `members:read` (or anything else it does not hold). A policy may be
///   replaced or deleted only by an actor who could have written it.
///   Whatever the policies say, an owner can always read and manage
///   policies and roles (the engine's break-glass rule, see
///   [`crate::Reason::OwnerBreakGlass`]), so no policy locks owners out;
/// - **only roles that exist are handed out**: an assignment or invitation
///   naming a role that is neither built in nor defined by the tenant is
///   refused ([`AdminError::UnknownRole`]), and a role still held by
///   members or pending invitations cannot be deleted
///   ([`AdminError::RoleInUse`], asked of the [`RoleHolders`]), so a role
///   defined later never lands on someone who was given its name before;
/// - the tenant's roles still compile afterwards (no cycle, no unknown
///   parent, nothing outside the catalog) and its policies stay within the
///   engine's [`crate::Limits`].
///
/// Principals holding `owner` are exempt from the escalation checks when
/// the engine says so ([`crate::EngineBuilder::owners_exempt`], default
/// yes).
///
/// Policy writes are rate-limited per tenant ([`WriteRate`], default a
/// burst of 30 then one a second; [`AuthzAdmin::with_write_rate`]):
/// each compiles the tenant's whole policy set.
///
/// Writes are based on the epoch they were checked at and retried if
/// another write moved it, so checks and write cannot interleave with a
/// concurrent change. Each write compiles the tenant's new roles and
/// policies once, on the cache's compile pool, and installs the result in
/// the cache at the epoch the write committed.
#[derive(Clone)]
pub struct AuthzAdmin {
    cache: Arc<PolicyCache>,
    holders: Arc<dyn RoleHolders>,
    policy_writes: Option<Arc<WriteThrottle>>,
}

impl fmt::Debug for AuthzAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthzAdmin")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl AuthzAdmin {
    /// An admin writing through `cache`'s stores, asking `holders` whether
    /// a role is still held before deleting it.
    pub fn new(cache: Arc<PolicyCache>, holders: Arc<dyn RoleHolders>) -> Self {
        Self {
            cache,
            holders,
            policy_writes: Some(Arc::new(WriteThrottle::new(WriteRate::default()))),
        }
    }

    /// Limits each tenant's policy writes (puts and deletes) to `rate`;
    /// `None` lifts the limit.
    pub fn with_write_rate(mut self, rate: Option<WriteRate>) -> Self {
        self.policy_writes = rate.map(|rate| Arc::new(WriteThrottle::new(rate)));
        self
    }

    /// Counts a policy write of `scope`'s tenant against the write rate.
    fn admit_policy_write(&self, scope: &TenantScope) -> Result<(), AdminError> {
        match &self.policy_writes {
            Some(throttle) => throttle
                .admit(scope.tenant_id(), std::time::Instant::now())
                .map_err(|retry_after| AdminError::RateLimited { retry_after }),
            None => Ok(()),
        }
    }

    /// The cache it writes through.
    pub fn cache(&self) -> &Arc<PolicyCache> {
        &self.cache
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

    /// Checks that `covered` holds only permissions the actor holds;
    /// `effect` says what the change would do with them.
    fn within(
        authorizer: &Authorizer,
        actor: &Principal,
        covered: &Bits,
        effect: Effect,
    ) -> Result<(), AdminError> {
        if authorizer.exempt_owner(actor) {
            return Ok(());
        }
        let held = authorizer.effective_bits(actor);
        if covered.is_subset_of(&held) {
            return Ok(());
        }
        let mut missing = authorizer.empty_bits();
        for i in covered.iter().filter(|&i| !held.get(i)) {
            missing.set(i);
        }
        let mut names = authorizer.bits_names(&missing);
        names.truncate(20);
        Err(AdminError::Escalation {
            effect,
            missing: names,
        })
    }

    /// Checks that the actor could write every statement of `document`:
    /// allow statements grant, deny statements restrict, only what the
    /// actor holds.
    fn may_write(
        authorizer: &Authorizer,
        actor: &Principal,
        document: &PolicyDocument,
    ) -> Result<(), AdminError> {
        for effect in [Effect::Allow, Effect::Deny] {
            let actions: Vec<_> = document
                .statements
                .iter()
                .filter(|s| s.effect == effect)
                .flat_map(|s| s.actions.iter().cloned())
                .collect();
            Self::within(
                authorizer,
                actor,
                &authorizer.pattern_bits(&actions),
                effect,
            )?;
        }
        Ok(())
    }

    /// The tenant's current state, fresh from the store, and a ticket
    /// taken before it was read.
    async fn current(
        &self,
        scope: &TenantScope,
        actor: &Principal,
    ) -> Result<(Ticket, Arc<Authorizer>, Epoch), AdminError> {
        if actor.tenant_id() != scope.tenant_id() {
            return Err(AdminError::OtherTenant);
        }
        let ticket = self.cache.ticket(scope.tenant_id());
        let current = self.cache.current(scope.tenant_id()).await?;
        let epoch = current.epoch().unwrap_or_default();
        Ok((ticket, current, epoch))
    }

    /// Compiles the tenant's roles and policies as a write leaves them.
    async fn candidate(
        &self,
        scope: &TenantScope,
        roles: Vec<RoleDefinition>,
        policies: Vec<Policy>,
    ) -> Result<Authorizer, AdminError> {
        Ok(self
            .cache
            .compile(scope.tenant_id(), roles, policies)
            .await??)
    }

    /// Interprets a write of the retry loops: the new epoch (with the
    /// candidate installed in the cache at it), `None` to read again and
    /// retry after a concurrent change, or the error.
    fn settle(
        &self,
        ticket: Ticket,
        candidate: Authorizer,
        written: Result<Epoch, AuthzStoreError>,
        attempt: &mut usize,
    ) -> Result<Option<Epoch>, AdminError> {
        match written {
            Ok(epoch) => {
                self.cache.install(ticket, candidate, epoch);
                Ok(Some(epoch))
            }
            Err(AuthzStoreError::StaleEpoch { .. }) if *attempt < RETRIES => {
                *attempt += 1;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates or replaces a custom role. The new definition, and the one
    /// it replaces, may grant only permissions the actor holds. Returns the
    /// new epoch.
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
            let (ticket, current, epoch) = self.current(scope, actor).await?;
            Self::require(&current, actor, sdk::ROLES_MANAGE, "role")?;
            if let Some(before) = current.role_bits(&role.name) {
                Self::within(&current, actor, before, Effect::Allow)?;
            }
            let mut roles = current.custom_roles();
            roles.retain(|r| r.name != role.name);
            roles.push(role.clone());
            let candidate = self
                .candidate(scope, roles, current.policies().to_vec())
                .await?;
            let granted = candidate
                .role_bits(&role.name)
                .cloned()
                .unwrap_or_else(|| candidate.empty_bits());
            Self::within(&current, actor, &granted, Effect::Allow)?;
            let written = self
                .cache
                .role_store()
                .put_role(scope.tenant_id(), &role, epoch, audit)
                .await;
            if let Some(epoch) = self.settle(ticket, candidate, written, &mut attempt)? {
                return Ok(epoch);
            }
        }
    }

    /// Deletes a custom role. Refused while the role is in use: while
    /// another role inherits it, or while members or pending invitations
    /// hold it (asked of the [`RoleHolders`]; remove it from them first).
    /// The actor may delete only roles granting nothing beyond its own
    /// permissions.
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
            let (ticket, current, epoch) = self.current(scope, actor).await?;
            Self::require(&current, actor, sdk::ROLES_MANAGE, "role")?;
            let Some(bits) = current.role_bits(name) else {
                return Err(AuthzStoreError::RoleNotFound(name.clone()).into());
            };
            let mut roles = current.custom_roles();
            if let Some(by) = roles.iter().find(|r| r.inherits.contains(name)) {
                return Err(AdminError::RoleInUse {
                    role: name.clone(),
                    by: RoleUse::InheritedBy(by.name.clone()),
                });
            }
            // Deleting a role only takes permissions away, but a member may
            // delete only roles they could have created.
            Self::within(&current, actor, bits, Effect::Allow)?;
            if self
                .holders
                .role_in_use(scope.tenant_id(), name)
                .await
                .map_err(AuthzStoreError::Store)?
            {
                return Err(AdminError::RoleInUse {
                    role: name.clone(),
                    by: RoleUse::Assigned,
                });
            }
            roles.retain(|r| &r.name != name);
            let candidate = self
                .candidate(scope, roles, current.policies().to_vec())
                .await?;
            let written = self
                .cache
                .role_store()
                .delete_role(scope.tenant_id(), name, epoch, audit)
                .await;
            if let Some(epoch) = self.settle(ticket, candidate, written, &mut attempt)? {
                return Ok(epoch);
            }
        }
    }

    /// Creates or replaces a policy. Its allow statements may grant, and
    /// its deny statements may deny, only permissions the actor holds; a
    /// policy it replaces must satisfy the same. Counts against the
    /// tenant's [`WriteRate`] once the actor is known to hold
    /// `policies:manage` ([`AdminError::RateLimited`] past it). Returns the
    /// new epoch.
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
            let (ticket, current, epoch) = self.current(scope, actor).await?;
            Self::require(&current, actor, sdk::POLICIES_MANAGE, "policy")?;
            if attempt == 0 {
                self.admit_policy_write(scope)?;
            }
            Self::may_write(&current, actor, policy.document())?;
            let mut policies = current.policies().to_vec();
            match policies.iter_mut().find(|p| p.id() == policy.id()) {
                Some(before) => {
                    Self::may_write(&current, actor, before.document())?;
                    *before = policy.clone();
                }
                None => policies.push(policy.clone()),
            }
            self.cache.engine().limits().check(&policies)?;
            let candidate = self
                .candidate(scope, current.custom_roles(), policies)
                .await?;
            let written = self
                .cache
                .policy_store()
                .put_policy(scope.tenant_id(), policy.document(), epoch, audit)
                .await;
            if let Some(epoch) = self.settle(ticket, candidate, written, &mut attempt)? {
                return Ok(epoch);
            }
        }
    }

    /// Deletes a policy. The actor must be one who could have written it
    /// (its statements cover only permissions the actor holds). Counts
    /// against the tenant's [`WriteRate`] like [`AuthzAdmin::put_policy`].
    pub async fn delete_policy(
        &self,
        scope: &TenantScope,
        actor: &Principal,
        id: &PolicyId,
        audit: &AuditContext,
    ) -> Result<Epoch, AdminError> {
        let mut attempt = 0;
        loop {
            let (ticket, current, epoch) = self.current(scope, actor).await?;
            Self::require(&current, actor, sdk::POLICIES_MANAGE, "policy")?;
            if attempt == 0 {
                self.admit_policy_write(scope)?;
            }
            let mut policies = current.policies().to_vec();
            let Some(at) = policies.iter().position(|p| p.id() == id) else {
                return Err(AuthzStoreError::PolicyNotFound(id.clone()).into());
            };
            Self::may_write(&current, actor, policies[at].document())?;
            policies.remove(at);
            let candidate = self
                .candidate(scope, current.custom_roles(), policies)
                .await?;
            let written = self
                .cache
                .policy_store()
                .delete_policy(scope.tenant_id(), id, epoch, audit)
                .await;
            if let Some(epoch) = self.settle(ticket, candidate, written, &mut attempt)? {
                return Ok(epoch);
            }
        }
    }

    /// Checks that `actor` may change a member's roles from `before` to
    /// `after`: it needs `members:manage`, every role added must be built
    /// in or defined by the tenant ([`AdminError::UnknownRole`] otherwise),
    /// and every role added or removed may grant only permissions the actor
    /// holds. Call it before [`tenancy_core::Directory::change_roles`] (or
    /// when inviting, with `before` = `None`).
    pub async fn authorize_assignment(
        &self,
        scope: &TenantScope,
        actor: &Principal,
        before: Option<&RoleSet>,
        after: &RoleSet,
    ) -> Result<(), AdminError> {
        let added: Vec<&RoleName> = after
            .iter()
            .filter(|r| before.is_none_or(|b| !b.contains(r)))
            .collect();
        let removed = before
            .into_iter()
            .flat_map(|b| b.iter())
            .filter(|r| !after.contains(r));
        let current = self.current_for_members(scope, actor).await?;
        if let Some(unknown) = added.iter().find(|r| !current.defines(r)) {
            return Err(AdminError::UnknownRole {
                role: (*unknown).clone(),
            });
        }
        Self::role_change(&current, actor, added.into_iter().chain(removed))
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
        let current = self.current_for_members(scope, actor).await?;
        Self::role_change(&current, actor, roles.iter())
    }

    async fn current_for_members(
        &self,
        scope: &TenantScope,
        actor: &Principal,
    ) -> Result<Arc<Authorizer>, AdminError> {
        if actor.tenant_id() != scope.tenant_id() {
            return Err(AdminError::OtherTenant);
        }
        let current = self.cache.current(scope.tenant_id()).await?;
        Self::require(&current, actor, sdk::MEMBERS_MANAGE, "membership")?;
        Ok(current)
    }

    fn role_change<'r>(
        current: &Authorizer,
        actor: &Principal,
        changed_roles: impl Iterator<Item = &'r RoleName>,
    ) -> Result<(), AdminError> {
        let mut changed = current.empty_bits();
        for role in changed_roles {
            if let Some(bits) = current.role_bits(role) {
                changed.union_with(bits);
            }
        }
        Self::within(current, actor, &changed, Effect::Allow)
    }
}
