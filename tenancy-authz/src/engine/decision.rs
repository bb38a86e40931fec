//! Decisions: allowed or not, and in brief why.

use tenancy_core::{RoleSet, TenantId};

use crate::permission::Bits;
use crate::request::Principal;

/// Why a decision went the way it did, in brief; [`Authorizer::explain`](crate::Authorizer::explain)
/// gives the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// A role the principal holds (directly or through inheritance) grants the action.
    Role,
    /// An allow statement matched.
    AllowStatement,
    /// A deny statement matched, or its condition could not be evaluated.
    DenyStatement,
    /// A deny statement matched, but the principal holds `owner` and the
    /// action reads or manages policies or roles: no deny statement takes
    /// those from an owner (break-glass), and its roles allow it.
    OwnerBreakGlass,
    /// Nothing grants the action: the default.
    NothingGrants,
    /// The action is not a permission of the catalog.
    UnknownAction,
    /// The principal's scopes (an API key's) leave the action out.
    OutsideScopes,
    /// The resource belongs to another tenant.
    ResourceInOtherTenant,
    /// The principal acts in another tenant than the one compiled here.
    PrincipalInOtherTenant,
}

/// An authorization answer: allowed or not, and in brief why. It is `Copy`
/// and costs nothing to build; ask [`Authorizer::explain`](crate::Authorizer::explain) for the full
/// explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    pub(super) allowed: bool,
    pub(super) reason: Reason,
    pub(super) detail: u32,
}

impl Decision {
    #[inline]
    pub(super) fn allow(reason: Reason, detail: u32) -> Self {
        Self {
            allowed: true,
            reason,
            detail,
        }
    }

    #[inline]
    pub(super) fn deny(reason: Reason, detail: u32) -> Self {
        Self {
            allowed: false,
            reason,
            detail,
        }
    }

    /// Whether the action is allowed.
    #[inline]
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// Why, in brief.
    pub fn reason(&self) -> Reason {
        self.reason
    }
}

/// A principal resolved against one [`Authorizer`](crate::Authorizer): its roles as indexes
/// and its permissions as a bitset, for the interned-id API
/// ([`Authorizer::check_prepared`](crate::Authorizer::check_prepared)). Build it once per request or session.
#[derive(Debug, Clone)]
pub struct PreparedPrincipal<'p> {
    pub(super) serial: u64,
    pub(super) tenant_id: TenantId,
    pub(super) principal: &'p Principal,
    /// Role indexes, inline: a role set holds at most 32 roles.
    pub(super) held: [u32; RoleSet::MAX_ROLES],
    pub(super) held_len: usize,
    pub(super) permissions: Bits,
    pub(super) scopes: Option<Bits>,
}

impl PreparedPrincipal<'_> {
    /// The principal.
    pub fn principal(&self) -> &Principal {
        self.principal
    }
}
