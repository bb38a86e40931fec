//! The compiled decision engine.
//!
//! [`Engine`] holds what is global to the app (the permission catalog and
//! the built-in roles) and compiles one tenant's roles and policies into an
//! [`Authorizer`]:
//!
//! - permissions are interned to small integers (catalog order);
//! - each role is flattened through inheritance into a permission bitset;
//! - statements are bucketed by permission (deny and allow apart) and
//!   filtered by interned resource type and a role bitmask;
//! - conditions are parsed into trees with interned attribute names.
//!
//! [`Authorizer::check`] then does a few hash lookups (the action, the
//! principal's roles) and bit tests, consults only the statements of the
//! requested action, allocates nothing and takes no lock.
//! [`Authorizer::explain`] answers the same and says why.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tenancy_core::{RoleName, RoleSet, TenantId};

use crate::condition::{EvalCtx, EvalError, Expr};
use crate::permission::{Bits, Catalog, Permission, PermissionId, PermissionPattern};
use crate::policy::{Effect, Policy, PolicyId, statement_name};
use crate::request::{AuthzRequest, Principal, Resource};
use crate::role::{RoleDefinition, RoleError, default_built_ins};
use crate::store::Epoch;
use crate::table::StrTable;
use crate::value::Attributes;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Global configuration: the permission catalog and the built-in roles.
/// Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    catalog: Catalog,
    built_ins: Vec<RoleDefinition>,
    owners_exempt: bool,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("permissions", &self.inner.catalog.len())
            .field("owners_exempt", &self.inner.owners_exempt)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Engine`] with non-default built-in roles or settings.
#[derive(Debug)]
pub struct EngineBuilder {
    catalog: Catalog,
    built_ins: Vec<RoleDefinition>,
    owners_exempt: bool,
}

impl EngineBuilder {
    /// Replaces the definition of a built-in role (see
    /// [`crate::role::default_built_ins`] for the defaults).
    pub fn built_in(mut self, definition: RoleDefinition) -> Result<Self, RoleError> {
        let Some(slot) = self
            .built_ins
            .iter_mut()
            .find(|r| r.name == definition.name)
        else {
            return Err(RoleError::UnknownParent {
                role: definition.name.clone(),
                parent: definition.name,
            });
        };
        definition.validate(&self.catalog)?;
        *slot = definition;
        Ok(self)
    }

    /// Whether principals holding `owner` may create roles, edit roles and
    /// assign roles beyond their own permissions (they hold `*` by default,
    /// so this matters only when `owner` is redefined). Default: `true`.
    pub fn owners_exempt(mut self, exempt: bool) -> Self {
        self.owners_exempt = exempt;
        self
    }

    /// The engine.
    pub fn build(self) -> Engine {
        Engine {
            inner: Arc::new(EngineInner {
                catalog: self.catalog,
                built_ins: self.built_ins,
                owners_exempt: self.owners_exempt,
            }),
        }
    }
}

impl Engine {
    /// An engine over `catalog` with the default built-in roles.
    pub fn new(catalog: Catalog) -> Self {
        Self::builder(catalog).build()
    }

    /// A builder, to override built-in roles.
    pub fn builder(catalog: Catalog) -> EngineBuilder {
        EngineBuilder {
            built_ins: default_built_ins(&catalog),
            catalog,
            owners_exempt: true,
        }
    }

    /// The permission catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The built-in roles, as defined for this engine.
    pub fn built_ins(&self) -> &[RoleDefinition] {
        &self.inner.built_ins
    }

    /// Whether owners may grant beyond their own permissions.
    pub fn owners_exempt(&self) -> bool {
        self.inner.owners_exempt
    }

    /// Compiles `tenant_id`'s custom roles and policies. Fails on a cycle,
    /// an unknown inherited role, a redefined built-in, a duplicate, or a
    /// permission outside the catalog.
    pub fn compile(
        &self,
        tenant_id: TenantId,
        roles: &[RoleDefinition],
        policies: &[Policy],
    ) -> Result<Authorizer, RoleError> {
        compile(self, tenant_id, roles, policies)
    }
}

// ---------------------------------------------------------------- compiled form

#[derive(Debug)]
struct CompiledRole {
    definition: RoleDefinition,
    parents: Vec<u32>,
    /// Permissions granted directly.
    direct: Bits,
    /// Permissions granted directly or through inheritance.
    flat: Bits,
    /// This role and every role it inherits, over role indexes.
    closure: Bits,
}

#[derive(Debug)]
struct CompiledStatement {
    policy: u32,
    index: u32,
    effect: Effect,
    /// Interned resource types; `None` matches every type.
    resource_types: Option<Box<[u32]>>,
    /// Roles, over role indexes; `None` matches every principal.
    roles: Option<Bits>,
    condition: Option<Arc<Expr>>,
}

/// Per-permission lists of statement indexes, packed (offsets + items).
#[derive(Debug, Default)]
struct Buckets {
    offsets: Box<[u32]>,
    items: Box<[u32]>,
}

impl Buckets {
    fn build(permissions: usize, lists: Vec<Vec<u32>>) -> Self {
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
    fn get(&self, permission: usize) -> &[u32] {
        if self.items.is_empty() {
            return &[];
        }
        let start = self.offsets.get(permission).copied().unwrap_or(0) as usize;
        let end = self.offsets.get(permission + 1).copied().unwrap_or(0) as usize;
        self.items.get(start..end).unwrap_or_default()
    }
}

static NEXT_AUTHORIZER: AtomicU64 = AtomicU64::new(1);

/// One tenant's roles and policies, compiled. Answers [`Authorizer::check`]
/// without allocating, locking or touching storage. Share it as
/// `Arc<Authorizer>`; [`crate::PolicyCache`] keeps one per tenant and
/// replaces it when the tenant's epoch moves.
pub struct Authorizer {
    serial: u64,
    tenant_id: TenantId,
    epoch: Option<Epoch>,
    catalog: Catalog,
    owners_exempt: bool,
    roles: Vec<CompiledRole>,
    role_index: StrTable,
    /// Every role's `flat` bitset, back to back (`words` per role), so the
    /// RBAC path reads one contiguous array.
    flat: Box<[u64]>,
    words: usize,
    permission_count: usize,
    owner: Option<u32>,
    policies: Vec<Policy>,
    statements: Vec<CompiledStatement>,
    deny: Buckets,
    allow: Buckets,
    resource_types: StrTable,
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

fn compile(
    engine: &Engine,
    tenant_id: TenantId,
    custom: &[RoleDefinition],
    policies: &[Policy],
) -> Result<Authorizer, RoleError> {
    let catalog = engine.catalog().clone();
    let words = catalog.words();
    let mut definitions: Vec<RoleDefinition> = engine.built_ins().to_vec();
    for role in custom {
        if role.name.is_built_in() {
            return Err(RoleError::BuiltIn {
                role: role.name.clone(),
            });
        }
        role.validate(&catalog)?;
        definitions.push(role.clone());
    }
    let mut role_index: FastMap<Box<str>, u32> = FastMap::default();
    for (i, role) in definitions.iter().enumerate() {
        if role_index
            .insert(role.name.as_str().into(), i as u32)
            .is_some()
        {
            return Err(RoleError::Duplicate {
                role: role.name.clone(),
            });
        }
    }
    let role_words = definitions.len().div_ceil(64);
    let mut roles = Vec::with_capacity(definitions.len());
    for role in definitions {
        let mut parents = Vec::with_capacity(role.inherits.len());
        for parent in &role.inherits {
            match role_index.get(parent.as_str()) {
                Some(&p) => parents.push(p),
                None => {
                    return Err(RoleError::UnknownParent {
                        role: role.name.clone(),
                        parent: parent.clone(),
                    });
                }
            }
        }
        let mut direct = Bits::new(words);
        for pattern in &role.permissions {
            for id in catalog.expand(pattern) {
                direct.set(id.index());
            }
        }
        roles.push(CompiledRole {
            definition: role,
            parents,
            flat: direct.clone(),
            direct,
            closure: Bits::new(role_words),
        });
    }
    flatten(&mut roles)?;

    let mut resource_types: FastMap<Box<str>, u32> = FastMap::default();
    let mut statements = Vec::new();
    let mut deny_lists = vec![Vec::new(); catalog.len()];
    let mut allow_lists = vec![Vec::new(); catalog.len()];
    for (p, policy) in policies.iter().enumerate() {
        for (s, (statement, condition)) in policy.parts().enumerate() {
            let types = if statement.resource_types.is_empty() {
                None
            } else {
                Some(
                    statement
                        .resource_types
                        .iter()
                        .map(|t| {
                            let next = resource_types.len() as u32;
                            *resource_types.entry(t.as_str().into()).or_insert(next)
                        })
                        .collect(),
                )
            };
            let role_mask = if statement.roles.is_empty() {
                None
            } else {
                // Roles the tenant does not define match nobody.
                let mut mask = Bits::new(role_words);
                for name in &statement.roles {
                    if let Some(&r) = role_index.get(name.as_str()) {
                        mask.set(r as usize);
                    }
                }
                Some(mask)
            };
            let index = statements.len() as u32;
            let mut covered = Bits::new(words);
            for action in &statement.actions {
                for id in catalog.expand(action) {
                    covered.set(id.index());
                }
            }
            let lists = match statement.effect {
                Effect::Deny => &mut deny_lists,
                Effect::Allow => &mut allow_lists,
            };
            for id in covered.iter() {
                if let Some(list) = lists.get_mut(id) {
                    list.push(index);
                }
            }
            statements.push(CompiledStatement {
                policy: p as u32,
                index: s as u32,
                effect: statement.effect,
                resource_types: types,
                roles: role_mask,
                condition: condition.map(|c| Arc::clone(&c.expr)),
            });
        }
    }
    let owner = role_index.get(RoleName::OWNER.as_str()).copied();
    let permission_count = catalog.len();
    let mut flat = Vec::with_capacity(roles.len() * words);
    for role in &roles {
        flat.extend_from_slice(role.flat.as_words());
    }
    // Both maps have unique keys already.
    let role_index = StrTable::from_unique(role_index.iter().map(|(k, &v)| (&**k, v)));
    let resource_types = StrTable::from_unique(resource_types.iter().map(|(k, &v)| (&**k, v)));
    Ok(Authorizer {
        serial: NEXT_AUTHORIZER.fetch_add(1, Ordering::Relaxed),
        tenant_id,
        epoch: None,
        owners_exempt: engine.owners_exempt(),
        deny: Buckets::build(catalog.len(), deny_lists),
        allow: Buckets::build(catalog.len(), allow_lists),
        catalog,
        roles,
        role_index,
        flat: flat.into(),
        words,
        permission_count,
        owner,
        policies: policies.to_vec(),
        statements,
        resource_types,
    })
}

/// Flattens permissions and role closures through inheritance, rejecting
/// cycles with the cycle named.
fn flatten(roles: &mut [CompiledRole]) -> Result<(), RoleError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = roles.len();
    let mut marks = vec![Mark::New; n];
    let mut order = Vec::with_capacity(n);
    // Iterative depth-first search: a stack of (role, next parent to visit).
    for start in 0..n {
        if marks[start] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Active;
        while let Some(&mut (role, ref mut next)) = stack.last_mut() {
            let parents = &roles[role].parents;
            if *next < parents.len() {
                let parent = parents[*next] as usize;
                *next += 1;
                match marks[parent] {
                    Mark::New => {
                        marks[parent] = Mark::Active;
                        stack.push((parent, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|&(r, _)| r == parent).unwrap_or(0);
                        let mut path: Vec<RoleName> = stack[from..]
                            .iter()
                            .map(|&(r, _)| roles[r].definition.name.clone())
                            .collect();
                        path.push(roles[parent].definition.name.clone());
                        return Err(RoleError::Cycle { path });
                    }
                    Mark::Done => {}
                }
            } else {
                marks[role] = Mark::Done;
                order.push(role);
                stack.pop();
            }
        }
    }
    // `order` lists parents before children.
    for role in order {
        let mut flat = roles[role].direct.clone();
        let mut closure = Bits::new(roles[role].closure.words());
        closure.set(role);
        let parents = roles[role].parents.clone();
        for parent in parents {
            flat.union_with(&roles[parent as usize].flat);
            closure.union_with(&roles[parent as usize].closure);
        }
        roles[role].flat = flat;
        roles[role].closure = closure;
    }
    Ok(())
}

// ---------------------------------------------------------------- decisions

/// Why a decision went the way it did, in brief; [`Authorizer::explain`]
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
/// and costs nothing to build; ask [`Authorizer::explain`] for the full
/// explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    allowed: bool,
    reason: Reason,
    detail: u32,
}

impl Decision {
    #[inline]
    fn allow(reason: Reason, detail: u32) -> Self {
        Self {
            allowed: true,
            reason,
            detail,
        }
    }

    #[inline]
    fn deny(reason: Reason, detail: u32) -> Self {
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

/// A principal resolved against one [`Authorizer`]: its roles as indexes
/// and its permissions as a bitset, for the interned-id API
/// ([`Authorizer::check_prepared`]). Build it once per request or session.
#[derive(Debug, Clone)]
pub struct PreparedPrincipal<'p> {
    serial: u64,
    tenant_id: TenantId,
    principal: &'p Principal,
    /// Role indexes, inline: a role set holds at most 32 roles.
    held: [u32; RoleSet::MAX_ROLES],
    held_len: usize,
    permissions: Bits,
    scopes: Option<Bits>,
}

impl PreparedPrincipal<'_> {
    /// The principal.
    pub fn principal(&self) -> &Principal {
        self.principal
    }
}

/// The full answer of [`Authorizer::explain`]. Its `Display` reads as one
/// sentence, such as "denied: nothing grants `projects:delete` on `project`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Whether the action is allowed.
    pub allowed: bool,
    /// Why, in brief.
    pub reason: Reason,
    /// Why, in full.
    pub detail: Explain,
    /// Statements for the action that did not apply, and why (at most 16),
    /// to help debug a policy that should have matched.
    pub notes: Vec<String>,
}

/// Why, in full.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Explain {
    /// Granted by a role: the role the principal holds, then each inherited
    /// role down to the one whose own `pattern` grants `permission`.
    Role {
        /// The permission.
        permission: String,
        /// Held role first, granting role last.
        path: Vec<RoleName>,
        /// The granting pattern.
        pattern: String,
    },
    /// Decided by a policy statement.
    Statement {
        /// The policy.
        policy: PolicyId,
        /// Its sid, or `#position`.
        statement: String,
        /// Allow or deny.
        effect: Effect,
        /// The permission.
        permission: String,
        /// For a deny whose condition failed to evaluate: the error.
        error: Option<String>,
    },
    /// Nothing grants the permission.
    NothingGrants {
        /// The action.
        action: String,
        /// The resource type.
        resource_type: String,
    },
    /// The action is not in the catalog.
    UnknownAction {
        /// The action.
        action: String,
    },
    /// Left out by the principal's scopes.
    OutsideScopes {
        /// The action.
        action: String,
    },
    /// The resource belongs to another tenant.
    ResourceInOtherTenant {
        /// The resource's tenant.
        resource_tenant: TenantId,
        /// The tenant of this authorizer.
        tenant: TenantId,
    },
    /// The principal acts in another tenant.
    PrincipalInOtherTenant {
        /// The principal's tenant.
        principal_tenant: TenantId,
        /// The tenant of this authorizer.
        tenant: TenantId,
    },
}

impl fmt::Display for Explain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Explain::Role {
                permission,
                path,
                pattern,
            } => {
                if path.len() == 1 {
                    write!(f, "`{permission}` granted by role `")?;
                } else {
                    write!(f, "`{permission}` granted by role path `")?;
                }
                let names: Vec<&str> = path.iter().map(RoleName::as_str).collect();
                write!(f, "{}` (pattern `{pattern}`)", names.join("` -> `"))
            }
            Explain::Statement {
                policy,
                statement,
                effect: Effect::Allow,
                permission,
                ..
            } => write!(
                f,
                "`{permission}` granted by policy `{policy}` statement `{statement}`"
            ),
            Explain::Statement {
                policy,
                statement,
                permission,
                error,
                ..
            } => {
                write!(
                    f,
                    "policy `{policy}` statement `{statement}` denies `{permission}`"
                )?;
                match error {
                    Some(error) => write!(
                        f,
                        ": its condition could not be evaluated ({error}), and a deny fails closed"
                    ),
                    None => f.write_str(" (deny overrides allow)"),
                }
            }
            Explain::NothingGrants {
                action,
                resource_type,
            } => write!(f, "nothing grants `{action}` on `{resource_type}`"),
            Explain::UnknownAction { action } => {
                write!(f, "`{action}` is not a permission of the catalog")
            }
            Explain::OutsideScopes { action } => {
                write!(f, "the principal's scopes do not include `{action}`")
            }
            Explain::ResourceInOtherTenant {
                resource_tenant,
                tenant,
            } => write!(
                f,
                "the resource belongs to tenant {resource_tenant}, not {tenant}"
            ),
            Explain::PrincipalInOtherTenant {
                principal_tenant,
                tenant,
            } => write!(
                f,
                "the principal acts in tenant {principal_tenant}, not {tenant}"
            ),
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        write!(f, "{verdict}: {}", self.detail)?;
        for note in &self.notes {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

/// How a statement failed to apply, for explanations.
enum Skip {
    ResourceType,
    Roles,
}

impl Authorizer {
    /// Decides `request`. Allocates nothing and takes no lock.
    ///
    /// Order: a principal or resource of another tenant is denied; an
    /// action outside the catalog is denied; an API key's scopes must
    /// include the action; any matching deny statement denies; then a role
    /// of the principal or a matching allow statement allows; otherwise
    /// nothing grants, and the answer is deny.
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
        if let Some(decision) = self.denied(a, principal, request.resource, request.context) {
            return decision;
        }
        for role in principal.roles.iter() {
            if let Some(r) = self.role_index.get(role.as_str())
                && self.flat_has(r, a)
            {
                return Decision::allow(Reason::Role, r);
            }
        }
        self.allowed_by_statement(a, principal, request.resource, request.context)
    }

    #[inline]
    fn denied(
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
    fn allowed_by_statement(
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
    fn first_applying(
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
    fn flat_has(&self, r: u32, a: usize) -> bool {
        self.flat
            .get(r as usize * self.words + a / 64)
            .is_some_and(|w| w & (1 << (a % 64)) != 0)
    }

    /// Whether a statement's resource-type and role filters leave it out.
    #[inline]
    fn skip(
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

    fn permission_list(&self, bits: &Bits) -> Vec<Permission> {
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

    /// Decides `request` and explains the decision in full.
    pub fn explain(&self, request: &AuthzRequest<'_>) -> Explanation {
        let decision = self.check(request);
        let action = request.action.to_owned();
        let mut notes = Vec::new();
        let detail = match decision.reason {
            Reason::PrincipalInOtherTenant => Explain::PrincipalInOtherTenant {
                principal_tenant: request.principal.tenant_id,
                tenant: self.tenant_id,
            },
            Reason::ResourceInOtherTenant => Explain::ResourceInOtherTenant {
                resource_tenant: request.resource.tenant_id.unwrap_or(self.tenant_id),
                tenant: self.tenant_id,
            },
            Reason::UnknownAction => Explain::UnknownAction { action },
            Reason::OutsideScopes => Explain::OutsideScopes { action },
            Reason::Role => self.role_path(decision.detail, &action),
            Reason::AllowStatement | Reason::DenyStatement => {
                self.statement_detail(decision.detail, request, action)
            }
            Reason::NothingGrants => {
                if let Some(id) = self.catalog.id(request.action) {
                    notes = self.allow_notes(id.index(), request);
                }
                Explain::NothingGrants {
                    action,
                    resource_type: request.resource.resource_type.to_string(),
                }
            }
        };
        Explanation {
            allowed: decision.allowed,
            reason: decision.reason,
            detail,
            notes,
        }
    }

    fn role_path(&self, held: u32, action: &str) -> Explain {
        let a = self.catalog.id(action).map_or(usize::MAX, |id| id.index());
        // Breadth-first from the held role to the nearest role granting directly.
        let mut previous: Vec<Option<u32>> = vec![None; self.roles.len()];
        let mut seen = vec![false; self.roles.len()];
        let mut queue = std::collections::VecDeque::from([held]);
        seen[held as usize] = true;
        let mut found = held;
        while let Some(r) = queue.pop_front() {
            if self.roles[r as usize].direct.get(a) {
                found = r;
                break;
            }
            for &p in &self.roles[r as usize].parents {
                if !seen[p as usize] {
                    seen[p as usize] = true;
                    previous[p as usize] = Some(r);
                    queue.push_back(p);
                }
            }
        }
        let mut path = vec![self.roles[found as usize].definition.name.clone()];
        let mut at = found;
        while let Some(p) = previous[at as usize] {
            path.push(self.roles[p as usize].definition.name.clone());
            at = p;
        }
        path.reverse();
        let pattern = self
            .catalog
            .id(action)
            .and_then(|id| self.catalog.get(id))
            .and_then(|permission| {
                self.roles[found as usize]
                    .definition
                    .permissions
                    .iter()
                    .find(|p| p.matches(permission))
            })
            .map_or_else(String::new, |p| p.as_str().to_owned());
        Explain::Role {
            permission: action.to_owned(),
            path,
            pattern,
        }
    }

    fn statement_detail(&self, s: u32, request: &AuthzRequest<'_>, action: String) -> Explain {
        let statement = &self.statements[s as usize];
        let policy = &self.policies[statement.policy as usize];
        let name = policy
            .document()
            .statements
            .get(statement.index as usize)
            .map_or_else(String::new, |doc| {
                statement_name(doc, statement.index as usize)
            });
        let error = statement.condition.as_ref().and_then(|expr| {
            let ctx = EvalCtx {
                principal: request.principal,
                resource: request.resource,
                context: request.context,
            };
            expr.eval_bool(&ctx).err().map(|e: EvalError| e.to_string())
        });
        Explain::Statement {
            policy: policy.id().clone(),
            statement: name,
            effect: statement.effect,
            permission: action,
            error,
        }
    }

    fn allow_notes(&self, a: usize, request: &AuthzRequest<'_>) -> Vec<String> {
        let ctx = EvalCtx {
            principal: request.principal,
            resource: request.resource,
            context: request.context,
        };
        let mut notes = Vec::new();
        let mut resource_type = None;
        for &s in self.allow.get(a).iter().take(16) {
            let statement = &self.statements[s as usize];
            let policy = &self.policies[statement.policy as usize];
            let name = policy
                .document()
                .statements
                .get(statement.index as usize)
                .map_or_else(String::new, |doc| {
                    statement_name(doc, statement.index as usize)
                });
            let why = match self.skip(
                statement,
                request.principal,
                request.resource,
                &mut resource_type,
            ) {
                Some(Skip::ResourceType) => "it covers other resource types".to_owned(),
                Some(Skip::Roles) => "the principal holds none of its roles".to_owned(),
                None => match statement.condition.as_ref().map(|e| e.eval_bool(&ctx)) {
                    Some(Ok(false)) => "its condition is false".to_owned(),
                    Some(Err(e)) => format!("its condition could not be evaluated ({e})"),
                    _ => "it matched".to_owned(),
                },
            };
            notes.push(format!(
                "allow statement `{}` of policy `{}` did not apply: {why}",
                name,
                policy.id()
            ));
        }
        notes
    }
}

impl PreparedPrincipal<'_> {
    #[inline]
    fn check_with(
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
        if let Some(decision) = authorizer.denied(a, principal, resource, context) {
            return decision;
        }
        if self.permissions.get(a) {
            let role = self
                .held
                .get(..self.held_len)
                .unwrap_or_default()
                .iter()
                .copied()
                .find(|&r| authorizer.flat_has(r, a))
                .unwrap_or(0);
            return Decision::allow(Reason::Role, role);
        }
        authorizer.allowed_by_statement(a, principal, resource, context)
    }
}
