//! Role definitions: permissions and inherited roles.

use serde::{Deserialize, Serialize};
use tenancy_core::RoleName;

use crate::permission::{Catalog, PermissionError, PermissionPattern, sdk};

/// Most permission patterns one role may list.
pub const MAX_ROLE_PERMISSIONS: usize = 512;
/// Most roles one role may inherit directly.
pub const MAX_ROLE_PARENTS: usize = 32;
/// Longest role description, in characters.
pub const MAX_DESCRIPTION: usize = 512;

/// A role of a tenant: the permissions it grants directly and the roles it
/// inherits (whose permissions it grants too). Inheritance forms a DAG.
///
/// ```
/// use tenancy_authz::RoleDefinition;
/// use tenancy_core::RoleName;
/// let editor = RoleDefinition::new(RoleName::new("editor")?)
///     .grant("projects:update".parse()?)
///     .inherit(RoleName::MEMBER);
/// assert_eq!(editor.inherits, vec![RoleName::MEMBER]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RoleDefinition {
    /// The role name (as memberships hold it).
    pub name: RoleName,
    /// What it is for, shown to admins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Permissions granted directly.
    #[serde(default)]
    pub permissions: Vec<PermissionPattern>,
    /// Roles whose permissions this role also grants.
    #[serde(default)]
    pub inherits: Vec<RoleName>,
}

impl RoleDefinition {
    /// A role granting nothing yet.
    pub fn new(name: RoleName) -> Self {
        Self {
            name,
            description: None,
            permissions: Vec::new(),
            inherits: Vec::new(),
        }
    }

    /// Adds a permission pattern.
    pub fn grant(mut self, pattern: PermissionPattern) -> Self {
        self.permissions.push(pattern);
        self
    }

    /// Adds an inherited role.
    pub fn inherit(mut self, role: RoleName) -> Self {
        self.inherits.push(role);
        self
    }

    /// Sets the description.
    pub fn describe(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Checks the definition on its own: sizes, and that every permission
    /// is in `catalog`. Inheritance is checked against the tenant's other
    /// roles when compiled.
    pub fn validate(&self, catalog: &Catalog) -> Result<(), RoleError> {
        if self.permissions.len() > MAX_ROLE_PERMISSIONS {
            return Err(RoleError::TooManyPermissions {
                role: self.name.clone(),
                max: MAX_ROLE_PERMISSIONS,
            });
        }
        if self.inherits.len() > MAX_ROLE_PARENTS {
            return Err(RoleError::TooManyParents {
                role: self.name.clone(),
                max: MAX_ROLE_PARENTS,
            });
        }
        if let Some(text) = &self.description
            && (text.chars().count() > MAX_DESCRIPTION || text.chars().any(char::is_control))
        {
            return Err(RoleError::Description {
                role: self.name.clone(),
                max: MAX_DESCRIPTION,
            });
        }
        if self.inherits.contains(&self.name) {
            return Err(RoleError::Cycle {
                path: vec![self.name.clone(), self.name.clone()],
            });
        }
        for pattern in &self.permissions {
            catalog
                .check_pattern(pattern)
                .map_err(|source| RoleError::Permission {
                    role: self.name.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// What is wrong with a role or a set of roles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoleError {
    /// A permission the catalog does not declare (or a malformed one).
    #[error("role `{role}`: {source}")]
    Permission {
        /// The role.
        role: RoleName,
        /// What is wrong with the permission.
        #[source]
        source: PermissionError,
    },
    /// Inheritance forms a cycle; `path` walks it, ending where it began.
    #[error("role inheritance cycle: {}", path.iter().map(RoleName::as_str).collect::<Vec<_>>().join(" -> "))]
    Cycle {
        /// The roles of the cycle, the first repeated at the end.
        path: Vec<RoleName>,
    },
    /// A role inherits a role the tenant does not define.
    #[error("role `{role}` inherits unknown role `{parent}`")]
    UnknownParent {
        /// The inheriting role.
        role: RoleName,
        /// The missing role.
        parent: RoleName,
    },
    /// A built-in role cannot be redefined or deleted.
    #[error("role `{role}` is built in and cannot be changed or deleted")]
    BuiltIn {
        /// The role.
        role: RoleName,
    },
    /// The tenant defines the same role twice.
    #[error("role `{role}` is defined twice")]
    Duplicate {
        /// The role.
        role: RoleName,
    },
    /// Too many permission patterns.
    #[error("role `{role}` lists more than {max} permissions")]
    TooManyPermissions {
        /// The role.
        role: RoleName,
        /// The limit.
        max: usize,
    },
    /// Too many inherited roles.
    #[error("role `{role}` inherits more than {max} roles")]
    TooManyParents {
        /// The role.
        role: RoleName,
        /// The limit.
        max: usize,
    },
    /// A description that is too long or has control characters.
    #[error(
        "role `{role}` description must be at most {max} characters without control characters"
    )]
    Description {
        /// The role.
        role: RoleName,
        /// The limit.
        max: usize,
    },
}

/// The default permissions of the built-in roles, given the catalog:
///
/// | role | permissions |
/// | --- | --- |
/// | `owner` | everything (`*`) |
/// | `admin` | everything except `tenant:delete`, `billing:manage`, `scim:manage` (a SCIM token outlives its issuer and manages members directly) and `sso:manage` (an identity provider decides who the members are) |
/// | `member` | every host permission whose action is `read` or `create`, plus `members:read` and `roles:read` |
/// | `billing` | `billing:*`, `usage:read` and `members:read` |
/// | `readonly` | every host permission whose action is `read` |
///
/// Changing or deleting a host resource's things (`update`, `delete`, …)
/// is therefore for admins, custom roles, or policies (such as "members may
/// edit the projects they own"). Override these with
/// [`crate::EngineBuilder::built_in`].
pub fn default_built_ins(catalog: &Catalog) -> Vec<RoleDefinition> {
    let exact = |text: &str| PermissionPattern::new(text).ok();
    let host_with = |actions: &[&str]| -> Vec<PermissionPattern> {
        catalog
            .host_permissions()
            .iter()
            .filter(|p| actions.contains(&p.action()))
            .map(|p| PermissionPattern::from(p.clone()))
            .collect()
    };
    let admin: Vec<PermissionPattern> = catalog
        .permissions()
        .iter()
        .filter(|p| {
            ![
                sdk::TENANT_DELETE,
                sdk::BILLING_MANAGE,
                sdk::SCIM_MANAGE,
                // Who registers an identity provider decides who the
                // tenant's members are: owner-only, like SCIM.
                sdk::SSO_MANAGE,
            ]
            .contains(&p.as_str())
        })
        .map(|p| PermissionPattern::from(p.clone()))
        .collect();
    let mut member = host_with(&["read", "create"]);
    member.extend(exact(sdk::MEMBERS_READ));
    member.extend(exact(sdk::ROLES_READ));
    let billing: Vec<PermissionPattern> = [
        exact("billing:*"),
        exact(sdk::USAGE_READ),
        exact(sdk::MEMBERS_READ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let define =
        |name: RoleName, description: &str, permissions: Vec<PermissionPattern>| RoleDefinition {
            name,
            description: Some(description.to_owned()),
            permissions,
            inherits: Vec::new(),
        };
    vec![
        define(
            RoleName::OWNER,
            "full control of the tenant",
            vec![PermissionPattern::all()],
        ),
        define(
            RoleName::ADMIN,
            "manages members, roles and settings",
            admin,
        ),
        define(
            RoleName::MEMBER,
            "reads and creates the tenant's resources",
            member,
        ),
        define(
            RoleName::BILLING,
            "manages the subscription and invoices",
            billing,
        ),
        define(
            RoleName::READONLY,
            "reads, never writes",
            host_with(&["read"]),
        ),
    ]
}
