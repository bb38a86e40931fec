//! The compiled form of one tenant's roles and policies, and what it
//! tells about them outside of decisions.

use std::fmt;
use std::sync::Arc;

use tenancy_core::{RoleName, TenantId};

use crate::condition::Expr;
use crate::permission::{Bits, Catalog, Permission, PermissionId, PermissionPattern};
use crate::policy::{Effect, Policy};
use crate::request::Principal;
use crate::role::RoleDefinition;
use crate::store::Epoch;
use crate::table::StrTable;

#[derive(Debug)]
pub(super) struct CompiledRole {
    pub(super) definition: RoleDefinition,
    pub(super) parents: Vec<u32>,
    /// Permissions granted directly.
    pub(super) direct: Bits,
    /// Permissions granted directly or through inheritance.
    pub(super) flat: Bits,
    /// This role and every role it inherits, over role indexes.
    pub(super) closure: Bits,
}

#[derive(Debug)]
pub(super) struct CompiledStatement {
    pub(super) policy: u32,
    pub(super) index: u32,
    pub(super) effect: Effect,
    /// Interned resource types; `None` matches every type.
    pub(super) resource_types: Option<Box<[u32]>>,
    /// Roles, over role indexes; `None` matches every principal.
    pub(super) roles: Option<Bits>,
    pub(super) condition: Option<Arc<Expr>>,
}

/// Per-permission lists of statement indexes, packed (offsets + items).
#[derive(Debug, Default)]
pub(super) struct Buckets {
    pub(super) offsets: Box<[u32]>,
    pub(super) items: Box<[u32]>,
}

impl Buckets {
    pub(super) fn build(permissions: usize, lists: Vec<Vec<u32>>) -> Self {
        let mut offsets = Vec::with_capacity(permissions + 1);
        let mut items = Vec::new();
        offsets.push(0u32);
        for list in lists {
            items.extend(list);
            offsets.push(items.len() as u32);
        }
        Self {
            offsets: offsets.into(),
            items: items.into(),
        }
    }

    #[inline]
    pub(super) fn get(&self, permission: usize) -> &[u32] {
        if self.items.is_empty() {
            return &[];
        }
        let start = self.offsets.get(permission).copied().unwrap_or(0) as usize;
        let end = self.offsets.get(permission + 1).copied().unwrap_or(0) as usize;
        self.items.get(start..end).unwrap_or_default()
    }
}

/// One tenant's roles and policies, compiled. Answers [`Authorizer::check`]
/// without allocating, locking or touching storage. Share it as
/// `Arc<Authorizer>`; [`crate::PolicyCache`] keeps one per tenant and
/// replaces it when the tenant's epoch moves.
pub struct Authorizer {
    pub(super) serial: u64,
    pub(super) tenant_id: TenantId,
    pub(super) epoch: Option<Epoch>,
    pub(super) catalog: Catalog,
    pub(super) owners_exempt: bool,
    pub(super) roles: Vec<CompiledRole>,
    pub(super) role_index: StrTable,
    /// Every role's `flat` bitset, back to back (`words` per role), so the
    /// RBAC path reads one contiguous array.
    pub(super) flat: Box<[u64]>,
    pub(super) words: usize,
    pub(super) permission_count: usize,
    pub(super) owner: Option<u32>,
    /// What no deny statement takes from an owner: `policies:read`,
    /// `policies:manage`, `roles:read` and `roles:manage`.
    pub(super) break_glass: Bits,
    pub(super) policies: Vec<Policy>,
    pub(super) statements: Vec<CompiledStatement>,
    pub(super) deny: Buckets,
    pub(super) allow: Buckets,
    pub(super) resource_types: StrTable,
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field("tenant_id", &self.tenant_id)
            .field("epoch", &self.epoch)
            .field("roles", &self.roles.len())
            .field("statements", &self.statements.len())
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// The tenant whose roles and policies these are.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The epoch these roles and policies were read at, if known.
    pub fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    pub(crate) fn with_epoch(mut self, epoch: Epoch) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// The permission catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Every role, built-in ones first.
    pub fn roles(&self) -> impl Iterator<Item = &RoleDefinition> {
        self.roles.iter().map(|r| &r.definition)
    }

    /// The definition of `name`.
    pub fn role(&self, name: &RoleName) -> Option<&RoleDefinition> {
        self.role_index
            .get(name.as_str())
            .map(|r| &self.roles[r as usize].definition)
    }

    /// The policies.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Everything `name` grants, through inheritance.
    pub fn role_permissions(&self, name: &RoleName) -> Option<Vec<Permission>> {
        self.role_bits(name).map(|bits| self.permission_list(bits))
    }

    /// Everything the principal's roles grant, capped by its scopes
    /// (statements not included: they depend on each request).
    pub fn permissions_of(&self, principal: &Principal) -> Vec<Permission> {
        self.permission_list(&self.effective_bits(principal))
    }

    pub(super) fn permission_list(&self, bits: &Bits) -> Vec<Permission> {
        bits.iter()
            .filter_map(|i| self.catalog.get(PermissionId(i as u32)).cloned())
            .collect()
    }

    pub(crate) fn role_bits(&self, name: &RoleName) -> Option<&Bits> {
        self.role_index
            .get(name.as_str())
            .map(|r| &self.roles[r as usize].flat)
    }

    pub(crate) fn effective_bits(&self, principal: &Principal) -> Bits {
        let prepared = self.prepare(principal);
        let mut bits = prepared.permissions;
        if let Some(scopes) = &prepared.scopes {
            bits.intersect_with(scopes);
        }
        bits
    }

    pub(crate) fn empty_bits(&self) -> Bits {
        Bits::new(self.catalog.words())
    }

    pub(crate) fn pattern_bits(&self, patterns: &[PermissionPattern]) -> Bits {
        let mut bits = self.empty_bits();
        for pattern in patterns {
            for id in self.catalog.expand(pattern) {
                bits.set(id.index());
            }
        }
        bits
    }

    pub(crate) fn bits_names(&self, bits: &Bits) -> Vec<String> {
        self.permission_list(bits)
            .into_iter()
            .map(|p| p.as_str().to_owned())
            .collect()
    }

    /// Whether the principal holds `owner` directly and owners are exempt
    /// from the no-escalation rule.
    pub(crate) fn exempt_owner(&self, principal: &Principal) -> bool {
        self.owners_exempt
            && principal.scopes.is_none()
            && self
                .owner
                .is_some_and(|_| principal.roles.contains(&RoleName::OWNER))
    }

    /// The tenant's custom roles (the built-in ones are the engine's).
    pub(crate) fn custom_roles(&self) -> Vec<RoleDefinition> {
        self.roles()
            .filter(|r| !r.name.is_built_in())
            .cloned()
            .collect()
    }

    /// Whether the tenant defines `name`, or it is built in.
    pub(crate) fn defines(&self, name: &RoleName) -> bool {
        self.role(name).is_some()
    }
}
