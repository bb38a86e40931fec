//! Permissions, permission patterns and the host's permission catalog.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::table::StrTable;

/// Longest resource or action segment, in characters.
const MAX_SEGMENT: usize = 64;

/// What is wrong with a permission, a pattern or a catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PermissionError {
    /// Not of the form `resource:action`.
    #[error(
        "permission {text:?} must be `resource:action`, each part 1 to 64 characters of a-z, 0-9, '_' and '-' starting with a letter"
    )]
    Invalid {
        /// The rejected text.
        text: String,
    },
    /// Not a pattern: `resource:action` where either part may be `*`, or `*` alone.
    #[error(
        "permission pattern {text:?} must be `resource:action` where either part may be `*`, or `*` alone"
    )]
    InvalidPattern {
        /// The rejected text.
        text: String,
    },
    /// A permission the catalog does not declare.
    #[error("unknown permission `{name}`: it is not in the permission catalog")]
    Unknown {
        /// The unknown permission.
        name: String,
    },
    /// A pattern that matches no permission in the catalog (a typo, most likely).
    #[error("permission pattern `{pattern}` matches no permission in the catalog")]
    MatchesNothing {
        /// The pattern.
        pattern: String,
    },
    /// The catalog lists a permission twice.
    #[error("permission `{name}` is declared twice in the catalog")]
    Duplicate {
        /// The repeated permission.
        name: String,
    },
}

fn valid_segment(segment: &str) -> bool {
    let mut chars = segment.chars();
    segment.len() <= MAX_SEGMENT
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// A permission: `resource:action`, such as `projects:read`.
///
/// ```
/// use tenancy_authz::Permission;
/// let p: Permission = "projects:read".parse()?;
/// assert_eq!((p.resource(), p.action()), ("projects", "read"));
/// assert!("Projects:read".parse::<Permission>().is_err());
/// # Ok::<(), tenancy_authz::PermissionError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Permission {
    text: Arc<str>,
    colon: usize,
}

impl Permission {
    /// Validates a permission.
    pub fn new(text: &str) -> Result<Self, PermissionError> {
        match text.split_once(':') {
            Some((resource, action)) if valid_segment(resource) && valid_segment(action) => {
                Ok(Self {
                    text: text.into(),
                    colon: resource.len(),
                })
            }
            _ => Err(PermissionError::Invalid {
                text: text.to_owned(),
            }),
        }
    }

    /// The whole text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The resource part, before the `:`.
    pub fn resource(&self) -> &str {
        self.text.get(..self.colon).unwrap_or_default()
    }

    /// The action part, after the `:`.
    pub fn action(&self) -> &str {
        self.text.get(self.colon + 1..).unwrap_or_default()
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl FromStr for Permission {
    type Err = PermissionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Permission {
    type Error = PermissionError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<Permission> for String {
    fn from(p: Permission) -> Self {
        p.text.to_string()
    }
}

/// A permission or a pattern of permissions: `projects:read`,
/// `projects:*`, `*:read` or `*`.
///
/// ```
/// use tenancy_authz::{Permission, PermissionPattern};
/// let any_read: PermissionPattern = "*:read".parse()?;
/// assert!(any_read.matches(&"invoices:read".parse::<Permission>()?));
/// assert!(!any_read.matches(&"invoices:pay".parse::<Permission>()?));
/// # Ok::<(), tenancy_authz::PermissionError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PermissionPattern {
    text: Arc<str>,
    resource: Option<Box<str>>,
    action: Option<Box<str>>,
}

impl PermissionPattern {
    /// Every permission.
    pub fn all() -> Self {
        Self {
            text: "*".into(),
            resource: None,
            action: None,
        }
    }

    /// Validates a pattern.
    pub fn new(text: &str) -> Result<Self, PermissionError> {
        if text == "*" {
            return Ok(Self::all());
        }
        let invalid = || PermissionError::InvalidPattern {
            text: text.to_owned(),
        };
        let (resource, action) = text.split_once(':').ok_or_else(invalid)?;
        let part = |segment: &str| -> Result<Option<Box<str>>, PermissionError> {
            if segment == "*" {
                Ok(None)
            } else if valid_segment(segment) {
                Ok(Some(segment.into()))
            } else {
                Err(invalid())
            }
        };
        Ok(Self {
            text: text.into(),
            resource: part(resource)?,
            action: part(action)?,
        })
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this names one permission exactly (no `*`).
    pub fn is_exact(&self) -> bool {
        self.resource.is_some() && self.action.is_some()
    }

    /// Whether `permission` matches.
    pub fn matches(&self, permission: &Permission) -> bool {
        self.resource
            .as_deref()
            .is_none_or(|r| r == permission.resource())
            && self
                .action
                .as_deref()
                .is_none_or(|a| a == permission.action())
    }
}

impl fmt::Display for PermissionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for PermissionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl FromStr for PermissionPattern {
    type Err = PermissionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for PermissionPattern {
    type Error = PermissionError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<PermissionPattern> for String {
    fn from(p: PermissionPattern) -> Self {
        p.text.to_string()
    }
}

impl From<Permission> for PermissionPattern {
    fn from(p: Permission) -> Self {
        Self {
            resource: Some(p.resource().into()),
            action: Some(p.action().into()),
            text: p.text,
        }
    }
}

/// The permissions the SDK itself checks. Every [`Catalog`] includes them.
pub mod sdk {
    /// Change the tenant's name, slug and settings.
    pub const TENANT_MANAGE: &str = "tenant:manage";
    /// Delete the tenant.
    pub const TENANT_DELETE: &str = "tenant:delete";
    /// List members.
    pub const MEMBERS_READ: &str = "members:read";
    /// Invite, remove and suspend members and change their roles.
    pub const MEMBERS_MANAGE: &str = "members:manage";
    /// List roles and their permissions.
    pub const ROLES_READ: &str = "roles:read";
    /// Create, change and delete custom roles.
    pub const ROLES_MANAGE: &str = "roles:manage";
    /// Read ABAC policies.
    pub const POLICIES_READ: &str = "policies:read";
    /// Create, change and delete ABAC policies.
    pub const POLICIES_MANAGE: &str = "policies:manage";
    /// List API keys.
    pub const API_KEYS_READ: &str = "api_keys:read";
    /// Mint and revoke API keys.
    pub const API_KEYS_MANAGE: &str = "api_keys:manage";
    /// See the subscription and invoices.
    pub const BILLING_READ: &str = "billing:read";
    /// Change the plan and payment details.
    pub const BILLING_MANAGE: &str = "billing:manage";
    /// Read the audit log.
    pub const AUDIT_READ: &str = "audit:read";
    /// Issue, list and revoke the tenant's SCIM provisioning tokens.
    pub const SCIM_MANAGE: &str = "scim:manage";
    /// Read the tenant's metered usage (`GET /usage`, its export).
    pub const USAGE_READ: &str = "usage:read";
    /// Register, change, list and delete the tenant's OAuth clients and
    /// rotate their secrets (the SDK's authorization server).
    pub const OAUTH_CLIENTS_MANAGE: &str = "oauth_clients:manage";
    /// Register the tenant's identity providers, claim and verify its email
    /// domains, and require single sign-on (`/sso/connections`,
    /// `/sso/domains`, `/sso/policy`).
    pub const SSO_MANAGE: &str = "sso:manage";

    /// All of the above.
    pub const ALL: [&str; 17] = [
        TENANT_MANAGE,
        TENANT_DELETE,
        MEMBERS_READ,
        MEMBERS_MANAGE,
        ROLES_READ,
        ROLES_MANAGE,
        POLICIES_READ,
        POLICIES_MANAGE,
        API_KEYS_READ,
        API_KEYS_MANAGE,
        BILLING_READ,
        BILLING_MANAGE,
        AUDIT_READ,
        SCIM_MANAGE,
        USAGE_READ,
        OAUTH_CLIENTS_MANAGE,
        SSO_MANAGE,
    ];
}

/// A permission enum of the host app, with stable strings.
///
/// ```
/// use tenancy_authz::{Catalog, PermissionEnum};
///
/// #[derive(Clone, Copy)]
/// enum Perm { ProjectsRead, ProjectsUpdate }
///
/// impl PermissionEnum for Perm {
///     const ALL: &'static [Self] = &[Perm::ProjectsRead, Perm::ProjectsUpdate];
///     fn as_str(self) -> &'static str {
///         match self {
///             Perm::ProjectsRead => "projects:read",
///             Perm::ProjectsUpdate => "projects:update",
///         }
///     }
/// }
///
/// let catalog = Catalog::from_enum::<Perm>()?;
/// assert!(catalog.contains("projects:update"));
/// assert!(catalog.contains("roles:manage")); // the SDK's own permissions are always there
/// # Ok::<(), tenancy_authz::PermissionError>(())
/// ```
pub trait PermissionEnum: Copy + 'static {
    /// Every variant.
    const ALL: &'static [Self];
    /// The stable `resource:action` string. Changing it orphans stored roles.
    fn as_str(self) -> &'static str;
}

/// Index of a permission in its [`Catalog`], for the interned-id API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PermissionId(pub(crate) u32);

impl PermissionId {
    /// The index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The permissions the host app declares in code, plus the SDK's own
/// ([`sdk`]). Roles and policies naming anything else are rejected when
/// written. Permissions are interned to small integers in declaration order
/// (the SDK's first). Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<CatalogInner>,
}

struct CatalogInner {
    permissions: Vec<Permission>,
    index: StrTable,
    /// Ids by resource and by action, to expand `x:*` and `*:y` quickly.
    by_resource: std::collections::HashMap<Box<str>, Vec<u32>>,
    by_action: std::collections::HashMap<Box<str>, Vec<u32>>,
    host_start: usize,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.inner.permissions).finish()
    }
}

impl Catalog {
    /// A catalog of the SDK permissions and `host` permissions.
    pub fn new<I, S>(host: I) -> Result<Self, PermissionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let sdk = sdk::ALL.iter().map(|s| (*s).to_owned());
        let host: Vec<String> = host.into_iter().map(|s| s.as_ref().to_owned()).collect();
        let host_start = sdk::ALL.len();
        let permissions = sdk
            .chain(host)
            .map(|text| Permission::new(&text))
            .collect::<Result<Vec<_>, _>>()?;
        if u32::try_from(permissions.len()).is_err() {
            return Err(PermissionError::Invalid {
                text: "too many permissions".to_owned(),
            });
        }
        let index = StrTable::build(
            permissions
                .iter()
                .enumerate()
                .map(|(i, p)| (p.as_str(), i as u32)),
        )
        .map_err(|name| PermissionError::Duplicate {
            name: name.to_owned(),
        })?;
        let mut by_resource: std::collections::HashMap<Box<str>, Vec<u32>> = Default::default();
        let mut by_action: std::collections::HashMap<Box<str>, Vec<u32>> = Default::default();
        for (i, p) in permissions.iter().enumerate() {
            by_resource
                .entry(p.resource().into())
                .or_default()
                .push(i as u32);
            by_action
                .entry(p.action().into())
                .or_default()
                .push(i as u32);
        }
        Ok(Self {
            inner: Arc::new(CatalogInner {
                permissions,
                index,
                by_resource,
                by_action,
                host_start,
            }),
        })
    }

    /// A catalog from a [`PermissionEnum`].
    pub fn from_enum<P: PermissionEnum>() -> Result<Self, PermissionError> {
        Self::new(P::ALL.iter().map(|p| p.as_str()))
    }

    /// Every permission, SDK ones first.
    pub fn permissions(&self) -> &[Permission] {
        &self.inner.permissions
    }

    /// The host's own permissions.
    pub fn host_permissions(&self) -> &[Permission] {
        self.inner
            .permissions
            .get(self.inner.host_start..)
            .unwrap_or_default()
    }

    /// How many permissions there are.
    pub fn len(&self) -> usize {
        self.inner.permissions.len()
    }

    /// Whether there are none (never: the SDK's are always present).
    pub fn is_empty(&self) -> bool {
        self.inner.permissions.is_empty()
    }

    /// Whether `name` is declared.
    pub fn contains(&self, name: &str) -> bool {
        self.inner.index.get(name).is_some()
    }

    /// The interned id of `name`.
    #[inline]
    pub fn id(&self, name: &str) -> Option<PermissionId> {
        self.inner.index.get(name).map(PermissionId)
    }

    /// The permission with id `id`.
    pub fn get(&self, id: PermissionId) -> Option<&Permission> {
        self.inner.permissions.get(id.index())
    }

    /// Whether `permission` is one of the SDK's.
    pub fn is_sdk(&self, id: PermissionId) -> bool {
        id.index() < self.inner.host_start
    }

    /// Checks that `pattern` names declared permissions: an exact one must
    /// be in the catalog, a wildcard must match at least one.
    pub fn check_pattern(&self, pattern: &PermissionPattern) -> Result<(), PermissionError> {
        if self.expand(pattern).next().is_some() {
            Ok(())
        } else if pattern.is_exact() {
            Err(PermissionError::Unknown {
                name: pattern.as_str().to_owned(),
            })
        } else {
            Err(PermissionError::MatchesNothing {
                pattern: pattern.as_str().to_owned(),
            })
        }
    }

    /// The ids of every permission `pattern` matches, in catalog order.
    pub fn expand<'a>(
        &'a self,
        pattern: &'a PermissionPattern,
    ) -> impl Iterator<Item = PermissionId> + 'a {
        let ids: Vec<u32> = match (pattern.resource.as_deref(), pattern.action.as_deref()) {
            (None, None) => (0..self.len() as u32).collect(),
            (Some(_), Some(_)) => self.inner.index.get(pattern.as_str()).into_iter().collect(),
            (Some(resource), None) => self
                .inner
                .by_resource
                .get(resource)
                .cloned()
                .unwrap_or_default(),
            (None, Some(action)) => self
                .inner
                .by_action
                .get(action)
                .cloned()
                .unwrap_or_default(),
        };
        ids.into_iter().map(PermissionId)
    }

    pub(crate) fn words(&self) -> usize {
        self.len().div_ceil(64)
    }
}

/// A fixed-size set of small integers (permission or role indexes).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Bits(Box<[u64]>);

impl Bits {
    pub(crate) fn new(words: usize) -> Self {
        Self(vec![0; words].into_boxed_slice())
    }

    pub(crate) fn words(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn as_words(&self) -> &[u64] {
        &self.0
    }

    #[inline]
    pub(crate) fn set(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub(crate) fn union_with(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= *b;
        }
    }

    pub(crate) fn intersect_with(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a &= *b;
        }
    }

    pub(crate) fn is_subset_of(&self, other: &Bits) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }

    pub(crate) fn intersects(&self, other: &Bits) -> bool {
        self.0.iter().zip(other.0.iter()).any(|(a, b)| a & b != 0)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            (0..64)
                .filter(move |b| word & (1 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }
}

impl fmt::Debug for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_rules() {
        for ok in ["projects:read", "api_keys:manage", "a:b-c", "x1:y2"] {
            assert_eq!(Permission::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "projects",
            "projects:",
            ":read",
            "Projects:read",
            "a:b:c",
            "1a:read",
            "*:read",
            "",
        ] {
            assert!(Permission::new(bad).is_err(), "{bad}");
        }
        let err = Permission::new("nope").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("permission \"nope\" must be `resource:action`")
        );
    }

    #[test]
    fn pattern_rules() {
        let p = |s: &str| Permission::new(s).unwrap();
        let pat = |s: &str| PermissionPattern::new(s).unwrap();
        assert!(pat("*").matches(&p("a:b")));
        assert!(pat("a:*").matches(&p("a:b")));
        assert!(!pat("a:*").matches(&p("ab:b")));
        assert!(pat("*:b").matches(&p("a:b")));
        assert!(pat("*:*").matches(&p("a:b")));
        assert!(pat("a:b").matches(&p("a:b")));
        assert!(!pat("a:b").matches(&p("a:bb")));
        for bad in ["**", "a", "a:**", "a*:b", "*:", ""] {
            assert!(PermissionPattern::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn catalog_rules() {
        let c = Catalog::new(["projects:read", "projects:update"]).unwrap();
        assert_eq!(c.len(), sdk::ALL.len() + 2);
        assert!(c.contains("projects:read") && c.contains("roles:manage"));
        assert_eq!(c.host_permissions().len(), 2);
        assert_eq!(
            Catalog::new(["a:b", "a:b"]).unwrap_err(),
            PermissionError::Duplicate { name: "a:b".into() }
        );
        assert_eq!(
            Catalog::new(["roles:manage"]).unwrap_err(),
            PermissionError::Duplicate {
                name: "roles:manage".into()
            }
        );
        let unknown = c
            .check_pattern(&"projects:delete".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown permission `projects:delete`: it is not in the permission catalog"
        );
        assert!(c.check_pattern(&"projects:*".parse().unwrap()).is_ok());
        assert!(matches!(
            c.check_pattern(&"projectz:*".parse().unwrap()),
            Err(PermissionError::MatchesNothing { .. })
        ));
        assert_eq!(c.expand(&"*:read".parse().unwrap()).count(), 8);
    }

    #[test]
    fn bits() {
        let mut a = Bits::new(3);
        a.set(0);
        a.set(130);
        a.set(500); // out of range: ignored
        assert!(a.get(130) && !a.get(1) && !a.get(500));
        let mut b = Bits::new(3);
        b.set(130);
        assert!(b.is_subset_of(&a) && !a.is_subset_of(&b) && a.intersects(&b));
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 130]);
    }
}
