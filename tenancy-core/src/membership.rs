//! Memberships: a user's place in a tenant, with the roles they hold there.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::ValidationError;
use crate::id::{MembershipId, TenantId, UserId};
use crate::tenant::UnknownStatus;

/// A role name: 1 to 64 characters of `a-z`, `0-9`, `_`, `:` and `-`.
///
/// This crate only stores role names; `tenancy-authz` gives them
/// permissions. The built-in roles every tenant starts with are
/// [`RoleName::OWNER`], [`RoleName::ADMIN`], [`RoleName::MEMBER`],
/// [`RoleName::BILLING`] and [`RoleName::READONLY`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoleName(std::borrow::Cow<'static, str>);

impl RoleName {
    /// Full control of the tenant, including deleting it. Every tenant keeps at least one active owner.
    pub const OWNER: RoleName = RoleName(std::borrow::Cow::Borrowed("owner"));
    /// Manages members, roles and settings.
    pub const ADMIN: RoleName = RoleName(std::borrow::Cow::Borrowed("admin"));
    /// Works with the tenant's resources.
    pub const MEMBER: RoleName = RoleName(std::borrow::Cow::Borrowed("member"));
    /// Manages the subscription and invoices.
    pub const BILLING: RoleName = RoleName(std::borrow::Cow::Borrowed("billing"));
    /// Reads, never writes.
    pub const READONLY: RoleName = RoleName(std::borrow::Cow::Borrowed("readonly"));

    /// The roles every tenant has from the start.
    pub const BUILT_IN: [RoleName; 5] = [
        Self::OWNER,
        Self::ADMIN,
        Self::MEMBER,
        Self::BILLING,
        Self::READONLY,
    ];

    /// Validates a role name.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValidationError> {
        let raw = raw.into();
        let ok = (1..=64).contains(&raw.len())
            && raw.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | ':' | '-')
            });
        if ok {
            Ok(Self(raw.into()))
        } else {
            Err(ValidationError::RoleName { name: raw })
        }
    }

    /// The name text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is one of [`RoleName::BUILT_IN`].
    pub fn is_built_in(&self) -> bool {
        Self::BUILT_IN.contains(self)
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl TryFrom<String> for RoleName {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<RoleName> for String {
    fn from(role: RoleName) -> Self {
        role.0.into_owned()
    }
}

impl FromStr for RoleName {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// The roles of a membership or invitation: 1 to 32 distinct names, kept sorted.
///
/// ```
/// use tenancy_core::{RoleName, RoleSet};
/// let roles = RoleSet::new([RoleName::MEMBER, RoleName::ADMIN, RoleName::MEMBER]).unwrap();
/// assert_eq!(roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(), ["admin", "member"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<RoleName>", into = "Vec<RoleName>")]
pub struct RoleSet(Vec<RoleName>);

impl RoleSet {
    /// Most roles one membership may hold.
    pub const MAX_ROLES: usize = 32;

    /// Sorts and de-duplicates `roles`, then checks there are 1 to 32 of them.
    pub fn new(roles: impl IntoIterator<Item = RoleName>) -> Result<Self, ValidationError> {
        let mut roles: Vec<RoleName> = roles.into_iter().collect();
        roles.sort();
        roles.dedup();
        match roles.len() {
            0 => Err(ValidationError::NoRoles),
            len if len > Self::MAX_ROLES => Err(ValidationError::TooManyRoles {
                max: Self::MAX_ROLES,
                len,
            }),
            _ => Ok(Self(roles)),
        }
    }

    /// A set holding one role.
    pub fn single(role: RoleName) -> Self {
        Self(vec![role])
    }

    /// Parses and validates role names given as strings.
    pub fn parse<S: AsRef<str>>(
        names: impl IntoIterator<Item = S>,
    ) -> Result<Self, ValidationError> {
        let roles = names
            .into_iter()
            .map(|name| RoleName::new(name.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(roles)
    }

    /// Whether `role` is in the set.
    pub fn contains(&self, role: &RoleName) -> bool {
        self.0.binary_search(role).is_ok()
    }

    /// The roles, sorted.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &RoleName> {
        self.0.iter()
    }

    /// The roles as a sorted slice.
    pub fn as_slice(&self) -> &[RoleName] {
        &self.0
    }
}

impl TryFrom<Vec<RoleName>> for RoleSet {
    type Error = ValidationError;
    fn try_from(value: Vec<RoleName>) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<RoleSet> for Vec<RoleName> {
    fn from(set: RoleSet) -> Self {
        set.0
    }
}

/// Whether a membership is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipStatus {
    /// Created for a user who has not yet accepted.
    Invited,
    /// In force.
    Active,
    /// Kept, but grants nothing until reactivated.
    Suspended,
}

impl MembershipStatus {
    /// The lowercase name used in storage and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            MembershipStatus::Invited => "invited",
            MembershipStatus::Active => "active",
            MembershipStatus::Suspended => "suspended",
        }
    }
}

impl fmt::Display for MembershipStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MembershipStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "invited" => Ok(MembershipStatus::Invited),
            "active" => Ok(MembershipStatus::Active),
            "suspended" => Ok(MembershipStatus::Suspended),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// A membership as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Its id.
    pub id: MembershipId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The member.
    pub user_id: UserId,
    /// The roles the member holds in this tenant.
    pub roles: RoleSet,
    /// Whether it is in force.
    pub status: MembershipStatus,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Membership {
    /// Whether this is an active membership holding the owner role.
    pub fn is_active_owner(&self) -> bool {
        self.status == MembershipStatus::Active && self.roles.contains(&RoleName::OWNER)
    }
}

/// A member of a tenant: the user and their membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The user.
    pub user: crate::user::User,
    /// Their membership in the tenant.
    pub membership: Membership,
}

/// A tenant a user belongs to, with the user's membership in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserTenant {
    /// The tenant.
    pub tenant: crate::tenant::Tenant,
    /// The user's membership in it.
    pub membership: Membership,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_name_rules() {
        for ok in ["owner", "projects:editor", "team_lead", "a-b", "x"] {
            assert_eq!(RoleName::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "Owner", "has space", "émoji", &"r".repeat(65)] {
            let err = RoleName::new(bad).unwrap_err();
            assert_eq!(
                err,
                ValidationError::RoleName {
                    name: bad.to_owned()
                }
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "role name {bad:?} must be 1 to 64 characters of a-z, 0-9, '_', ':' and '-'"
                )
            );
        }
        assert!(RoleName::OWNER.is_built_in());
        assert!(!RoleName::new("custom").unwrap().is_built_in());
    }

    #[test]
    fn role_set_rules() {
        assert_eq!(
            RoleSet::new([]).unwrap_err().to_string(),
            "at least one role is required"
        );
        let many = (0..33).map(|i| RoleName::new(format!("r{i}")).unwrap());
        assert_eq!(
            RoleSet::new(many).unwrap_err(),
            ValidationError::TooManyRoles { max: 32, len: 33 }
        );
        let set = RoleSet::parse(["member", "admin", "member"]).unwrap();
        assert_eq!(set.as_slice(), &[RoleName::ADMIN, RoleName::MEMBER]);
        assert!(set.contains(&RoleName::ADMIN));
        assert!(!set.contains(&RoleName::OWNER));
        assert!(matches!(
            RoleSet::parse(["ok", "Bad"]),
            Err(ValidationError::RoleName { .. })
        ));
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["admin","member"]"#);
        assert!(serde_json::from_str::<RoleSet>("[]").is_err());
    }
}
