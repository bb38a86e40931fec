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
//! - conditions are parsed into trees whose attribute names carry their
//!   hash (see [`crate::AttrKey`]).
//!
//! [`Authorizer::check`] then does a few hash lookups (the action, the
//! principal's roles) and bit tests, consults only the statements of the
//! requested action, allocates nothing and takes no lock.
//! [`Authorizer::explain`] answers the same and says why.

mod authorizer;
mod check;
mod compile;
mod decision;
mod explain;

use std::fmt;
use std::sync::Arc;

use tenancy_core::TenantId;

use crate::limits::Limits;
use crate::permission::Catalog;
use crate::policy::Policy;
use crate::role::{RoleDefinition, RoleError, default_built_ins};

pub use authorizer::Authorizer;
pub use decision::{Decision, PreparedPrincipal, Reason};
pub use explain::{Explain, Explanation};

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
    limits: Limits,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("permissions", &self.inner.catalog.len())
            .field("owners_exempt", &self.inner.owners_exempt)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Engine`] with non-default built-in roles or settings.
#[derive(Debug)]
pub struct EngineBuilder {
    catalog: Catalog,
    built_ins: Vec<RoleDefinition>,
    owners_exempt: bool,
    limits: Limits,
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

    /// How much policy one tenant may hold (see [`Limits`] for the
    /// defaults).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The engine.
    pub fn build(self) -> Engine {
        Engine {
            inner: Arc::new(EngineInner {
                catalog: self.catalog,
                built_ins: self.built_ins,
                owners_exempt: self.owners_exempt,
                limits: self.limits,
            }),
        }
    }
}

impl Engine {
    /// An engine over `catalog` with the default built-in roles.
    pub fn new(catalog: Catalog) -> Self {
        Self::builder(catalog).build()
    }

    /// A builder, to override built-in roles or settings.
    pub fn builder(catalog: Catalog) -> EngineBuilder {
        EngineBuilder {
            built_ins: default_built_ins(&catalog),
            catalog,
            owners_exempt: true,
            limits: Limits::default(),
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

    /// How much policy one tenant may hold.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Compiles `tenant_id`'s custom roles and policies. Fails on a cycle,
    /// an unknown inherited role, a redefined built-in, a duplicate, or a
    /// permission outside the catalog. The [`Limits`] are not checked here
    /// (they bound what tenants store): [`crate::PolicyCache`] and
    /// [`crate::AuthzAdmin`] check them.
    pub fn compile(
        &self,
        tenant_id: TenantId,
        roles: &[RoleDefinition],
        policies: &[Policy],
    ) -> Result<Authorizer, RoleError> {
        compile::compile(self, tenant_id, roles, policies)
    }
}
