//! The hot path: [`Authorizer::check`] and its interned-id form.

use tenancy_core::{RoleName, RoleSet};

use super::authorizer::{Authorizer, CompiledStatement};
use super::decision::{Decision, PreparedPrincipal, Reason};
use crate::condition::EvalCtx;
use crate::permission::{Bits, PermissionId};
use crate::request::{AuthzRequest, Principal, Resource};
use crate::value::Attributes;

/// How a statement failed to apply, for explanations.
pub(super) enum Skip {
    ResourceType,
    Roles,
}

impl Authorizer {
    /// Decides `request`. Allocates nothing and takes no lock.
    ///
    /// Order: a principal or resource of another tenant is denied; an
    /// action outside the catalog is denied; an API key's scopes must
    /// include the action; any matching deny statement denies (except that
    /// none denies an owner reading or managing policies and roles: the
    /// break-glass rule); then a role of the principal or a matching allow
    /// statement allows; otherwise nothing grants, and the answer is deny.
    #[inline]
    pub fn check(&self, request: &AuthzRequest<'_>) -> Decision {
        let principal = request.principal;
        if principal.tenant_id != self.tenant_id {
            return Decision::deny(Reason::PrincipalInOtherTenant, 0);
        }
        if let Some(t) = request.resource.tenant_id
            && t != self.tenant_id
        {
            return Decision::deny(Reason::ResourceInOtherTenant, 0);
        }
        let Some(action) = self.catalog.id(request.action) else {
            return Decision::deny(Reason::UnknownAction, 0);
        };
        if let Some(scopes) = &principal.scopes
            && !self
                .catalog
                .get(action)
                .is_some_and(|p| scopes.iter().any(|s| s.matches(p)))
        {
            return Decision::deny(Reason::OutsideScopes, 0);
        }
        let a = action.index();
        if let Some(denied) = self.denied(a, principal, request.resource, request.context) {
            if !self.break_glass.get(a) {
                return denied;
            }
            let owner = self.owner.is_some() && principal.roles.contains(&RoleName::OWNER);
            return Self::unless_owner(denied, owner, || {
                self.granted(a, principal, request.resource, request.context)
            });
        }
        self.granted(a, principal, request.resource, request.context)
    }

    /// What the principal's roles or the allow statements grant.
    #[inline]
    fn granted(
        &self,
        a: usize,
        principal: &Principal,
        resource: &Resource,
        context: &Attributes,
    ) -> Decision {
        for role in principal.roles.iter() {
            if let Some(r) = self.role_index.get(role.as_str())
                && self.flat_has(r, a)
            {
                return Decision::allow(Reason::Role, r);
            }
        }
        self.allowed_by_statement(a, principal, resource, context)
    }

    /// A deny statement applied to a break-glass permission (reading or
    /// managing policies and roles): it decides, unless the principal holds
    /// `owner`, from whom no deny statement takes those. Then its roles and
    /// allow statements decide alone, and an allow says the rule was used.
    #[cold]
    #[inline(never)]
    pub(super) fn unless_owner(
        denied: Decision,
        owner: bool,
        granted: impl FnOnce() -> Decision,
    ) -> Decision {
        if !owner {
            return denied;
        }
        let decision = granted();
        if decision.allowed {
            Decision::allow(Reason::OwnerBreakGlass, denied.detail)
        } else {
            decision
        }
    }

    #[inline]
    pub(super) fn denied(
        &self,
        a: usize,
        principal: &Principal,
        resource: &Resource,
        context: &Attributes,
    ) -> Option<Decision> {
        self.first_applying(self.deny.get(a), principal, resource, context, true)
            .map(|s| Decision::deny(Reason::DenyStatement, s))
    }

    #[inline]
    pub(super) fn allowed_by_statement(
        &self,
        a: usize,
        principal: &Principal,
        resource: &Resource,
        context: &Attributes,
    ) -> Decision {
        self.first_applying(self.allow.get(a), principal, resource, context, false)
            .map_or(Decision::deny(Reason::NothingGrants, 0), |s| {
                Decision::allow(Reason::AllowStatement, s)
            })
    }

    /// The first statement of `bucket` that applies to the request. A
    /// condition that fails to evaluate counts as `on_error`: true for deny
    /// statements, false for allow statements, so errors never widen access.
    #[inline]
    pub(super) fn first_applying(
        &self,
        bucket: &[u32],
        principal: &Principal,
        resource: &Resource,
        context: &Attributes,
        on_error: bool,
    ) -> Option<u32> {
        if bucket.is_empty() {
            return None;
        }
        let ctx = EvalCtx {
            principal,
            resource,
            context,
        };
        let mut resource_type = None;
        bucket.iter().copied().find(|&s| {
            let statement = &self.statements[s as usize];
            self.skip(statement, principal, resource, &mut resource_type)
                .is_none()
                && statement
                    .condition
                    .as_ref()
                    .is_none_or(|expr| expr.eval_bool(&ctx).unwrap_or(on_error))
        })
    }

    /// Whether role `r` grants permission `a`, through inheritance.
    #[inline]
    pub(super) fn flat_has(&self, r: u32, a: usize) -> bool {
        self.flat
            .get(r as usize * self.words + a / 64)
            .is_some_and(|w| w & (1 << (a % 64)) != 0)
    }

    /// Whether a statement's resource-type and role filters leave it out.
    #[inline]
    pub(super) fn skip(
        &self,
        statement: &CompiledStatement,
        principal: &Principal,
        resource: &Resource,
        resource_type: &mut Option<Option<u32>>,
    ) -> Option<Skip> {
        if let Some(types) = &statement.resource_types {
            let id = *resource_type
                .get_or_insert_with(|| self.resource_types.get(&resource.resource_type));
            if !id.is_some_and(|id| types.contains(&id)) {
                return Some(Skip::ResourceType);
            }
        }
        if let Some(mask) = &statement.roles {
            let holds = principal.roles.iter().any(|role| {
                self.role_index
                    .get(role.as_str())
                    .is_some_and(|r| self.roles[r as usize].closure.intersects(mask))
            });
            if !holds {
                return Some(Skip::Roles);
            }
        }
        None
    }

    /// The interned id of a permission, for [`Authorizer::check_prepared`].
    pub fn permission_id(&self, action: &str) -> Option<PermissionId> {
        self.catalog.id(action)
    }

    /// Resolves `principal` against this authorizer for
    /// [`Authorizer::check_prepared`].
    pub fn prepare<'p>(&self, principal: &'p Principal) -> PreparedPrincipal<'p> {
        let mut held = [0u32; RoleSet::MAX_ROLES];
        let mut held_len = 0;
        let mut permissions = Bits::new(self.catalog.words());
        for r in principal
            .roles
            .iter()
            .filter_map(|role| self.role_index.get(role.as_str()))
        {
            if let Some(slot) = held.get_mut(held_len) {
                *slot = r;
                held_len += 1;
            }
            permissions.union_with(&self.roles[r as usize].flat);
        }
        let scopes = principal.scopes.as_ref().map(|scopes| {
            let mut bits = Bits::new(self.catalog.words());
            for scope in scopes.iter() {
                for id in self.catalog.expand(scope) {
                    bits.set(id.index());
                }
            }
            bits
        });
        PreparedPrincipal {
            serial: self.serial,
            tenant_id: principal.tenant_id,
            principal,
            held,
            held_len,
            permissions,
            scopes,
        }
    }

    /// The interned-id form of [`Authorizer::check`]: the same answer, with
    /// the action and the principal's roles already resolved, so the RBAC
    /// path is a bit test. A principal prepared by another authorizer (an
    /// older epoch) is re-resolved on the way.
    #[inline]
    pub fn check_prepared(
        &self,
        prepared: &PreparedPrincipal<'_>,
        action: PermissionId,
        resource: &Resource,
        context: &Attributes,
    ) -> Decision {
        let principal = prepared.principal;
        if prepared.serial != self.serial {
            return self
                .prepare(principal)
                .check_with(self, action, resource, context);
        }
        prepared.check_with(self, action, resource, context)
    }
}

impl PreparedPrincipal<'_> {
    #[inline]
    pub(super) fn check_with(
        &self,
        authorizer: &Authorizer,
        action: PermissionId,
        resource: &Resource,
        context: &Attributes,
    ) -> Decision {
        let principal = self.principal;
        if self.tenant_id != authorizer.tenant_id {
            return Decision::deny(Reason::PrincipalInOtherTenant, 0);
        }
        if let Some(t) = resource.tenant_id
            && t != authorizer.tenant_id
        {
            return Decision::deny(Reason::ResourceInOtherTenant, 0);
        }
        let a = action.index();
        if a >= authorizer.permission_count {
            return Decision::deny(Reason::UnknownAction, 0);
        }
        if let Some(scopes) = &self.scopes
            && !scopes.get(a)
        {
            return Decision::deny(Reason::OutsideScopes, 0);
        }
        if let Some(denied) = authorizer.denied(a, principal, resource, context) {
            if !authorizer.break_glass.get(a) {
                return denied;
            }
            let owner = authorizer
                .owner
                .is_some_and(|owner| self.held().contains(&owner));
            return Authorizer::unless_owner(denied, owner, || {
                self.granted(authorizer, a, resource, context)
            });
        }
        self.granted(authorizer, a, resource, context)
    }

    /// The role indexes the principal holds.
    #[inline]
    fn held(&self) -> &[u32] {
        self.held.get(..self.held_len).unwrap_or_default()
    }

    /// What the principal's roles or the allow statements grant.
    #[inline]
    fn granted(
        &self,
        authorizer: &Authorizer,
        a: usize,
        resource: &Resource,
        context: &Attributes,
    ) -> Decision {
        if self.permissions.get(a) {
            let role = self
                .held()
                .iter()
                .copied()
                .find(|&r| authorizer.flat_has(r, a))
                .unwrap_or(0);
            return Decision::allow(Reason::Role, role);
        }
        authorizer.allowed_by_statement(a, self.principal, resource, context)
    }
}
