//! Permissions that routes require, checked against the catalog when the
//! app is assembled: a typo fails at startup instead of answering `403` to
//! everyone.

use tenancy_authz::PermissionEnum;

use crate::tenancy::Tenancy;

/// A permission of the app's catalog that a route or layer requires. Made
/// only by [`Tenancy::permission`] or [`Tenancy::typed_permission`], which
/// check it exists; the framework integrations' `require` layers take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoutePermission {
    name: &'static str,
    resource_type: &'static str,
}

impl RoutePermission {
    /// The permission, `resource:action`.
    pub fn as_str(&self) -> &'static str {
        self.name
    }

    /// The resource type it is checked on (the part before `:`).
    pub fn resource_type(&self) -> &'static str {
        self.resource_type
    }
}

impl std::fmt::Display for RoutePermission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A route asked for a permission the catalog does not declare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission `{name}` is not in the catalog; declare it or fix its spelling")]
pub struct UnknownPermission {
    name: String,
}

impl UnknownPermission {
    pub(crate) fn new(name: &str) -> Self {
        Self { name: name.into() }
    }

    /// The permission asked for.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Tenancy {
    /// The catalog's permission `name`, for a route's `require` layer:
    /// fails when the catalog does not declare it.
    ///
    /// ```
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use tenancy_http::{HttpConfig, Tenancy, auth::AuthConfig, authz::Catalog};
    ///
    /// let tenancy = Tenancy::in_memory(
    ///     Catalog::new(["projects:read"])?,
    ///     AuthConfig::new("https://app.example", "app"),
    ///     HttpConfig::default(),
    /// )
    /// .await?;
    /// assert!(tenancy.permission("projects:read").is_ok());
    /// assert!(tenancy.permission("project:read").is_err());
    /// # Ok(()) }
    /// ```
    pub fn permission(&self, name: &'static str) -> Result<RoutePermission, UnknownPermission> {
        if !self.authz().engine().catalog().contains(name) {
            return Err(UnknownPermission::new(name));
        }
        let resource_type = name.split_once(':').map_or(name, |(resource, _)| resource);
        Ok(RoutePermission {
            name,
            resource_type,
        })
    }

    /// [`Tenancy::permission`] for a variant of the app's permission enum
    /// (the one its catalog came from, [`Catalog::from_enum`](tenancy_authz::Catalog::from_enum)).
    pub fn typed_permission<P: PermissionEnum>(
        &self,
        permission: P,
    ) -> Result<RoutePermission, UnknownPermission> {
        self.permission(permission.as_str())
    }
}
