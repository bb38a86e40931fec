//! Tenants: the organizations, workspaces or accounts of the host app.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::ValidationError;
use crate::id::TenantId;
use crate::text::{Metadata, bounded_text};

/// Slugs that no tenant may take, because hosts commonly route them
/// (`www.example.com`, `api.example.com`, `/admin`).
pub const RESERVED_SLUGS: &[&str] = &[
    "admin",
    "api",
    "app",
    "assets",
    "auth",
    "billing",
    "cdn",
    "dashboard",
    "docs",
    "help",
    "login",
    "logout",
    "mail",
    "root",
    "signup",
    "static",
    "status",
    "support",
    "system",
    "www",
];

/// A tenant's unique, URL-safe name: 3 to 63 characters of `a-z`, `0-9` and
/// `-`, not starting or ending with `-`, without `--` as third and fourth
/// characters, and not in [`RESERVED_SLUGS`].
///
/// The rules make a slug usable as a DNS label, so hosts can resolve tenants
/// by subdomain, and keep out the labels DNS reserves for encodings
/// (`xn--…` is punycode: a browser would show `xn--80ak6aa92e` as a Unicode
/// lookalike of another name).
///
/// ```
/// use tenancy_core::Slug;
/// assert!(Slug::new("acme-corp").is_ok());
/// assert!(Slug::new("Acme").is_err());
/// assert!(Slug::new("www").is_err());
/// assert!(Slug::new("xn--80ak6aa92e").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

impl Slug {
    /// Validates a slug. Uppercase is rejected rather than folded, so the
    /// slug a user typed is the slug they get.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValidationError> {
        let raw = raw.into();
        let len = raw.chars().count();
        if !(3..=63).contains(&len) {
            return Err(ValidationError::SlugLength { len });
        }
        if let Some(found) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(ValidationError::SlugCharacter { found });
        }
        if raw.starts_with('-') || raw.ends_with('-') {
            return Err(ValidationError::SlugHyphenEdge);
        }
        // RFC 5891 §4.2.3.1 / RFC 5890 §2.3.1: labels with "--" here are
        // reserved, `xn--` for punycode, which browsers show as Unicode (a
        // lookalike of another tenant's name in subdomain mode).
        if raw.get(2..4) == Some("--") {
            return Err(ValidationError::SlugReservedHyphens);
        }
        if RESERVED_SLUGS.contains(&raw.as_str()) {
            return Err(ValidationError::SlugReserved { slug: raw });
        }
        Ok(Self(raw))
    }

    /// The slug text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl TryFrom<String> for Slug {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Slug> for String {
    fn from(slug: Slug) -> Self {
        slug.0
    }
}

impl FromStr for Slug {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A tenant's display name: trimmed, 1 to 200 characters, no control characters.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantName(String);

impl TenantName {
    /// Largest accepted length, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Trims and validates a tenant name.
    pub fn new(raw: &str) -> Result<Self, ValidationError> {
        bounded_text("tenant name", raw, Self::MAX_CHARS).map(Self)
    }

    /// The name text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl TryFrom<String> for TenantName {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<TenantName> for String {
    fn from(name: TenantName) -> Self {
        name.0
    }
}

/// Where a tenant is in its lifecycle.
///
/// `Active ⇄ Suspended`, and either may become `Deleted`, which is final: a
/// deleted tenant is kept (soft delete) so its audit log and slug survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// In normal use.
    Active,
    /// Temporarily blocked, for example for non-payment; members cannot act in it.
    Suspended,
    /// Soft-deleted; never listed to users again.
    Deleted,
}

impl TenantStatus {
    /// The lowercase name used in storage and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Deleted => "deleted",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TenantStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(TenantStatus::Active),
            "suspended" => Ok(TenantStatus::Suspended),
            "deleted" => Ok(TenantStatus::Deleted),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// A status string that no status enum of this crate knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub(crate) String);

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// Its unique slug.
    pub slug: Slug,
    /// Its display name.
    pub name: TenantName,
    /// Lifecycle status.
    pub status: TenantStatus,
    /// Free-form data the host keeps with the tenant.
    pub metadata: Metadata,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// What it takes to create a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    /// The unique slug.
    pub slug: Slug,
    /// The display name.
    pub name: TenantName,
    /// Initial metadata.
    pub metadata: Metadata,
}

impl NewTenant {
    /// A tenant with empty metadata.
    pub fn new(slug: Slug, name: TenantName) -> Self {
        Self {
            slug,
            name,
            metadata: Metadata::empty(),
        }
    }

    /// Sets the initial metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// Changes to a tenant's profile; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantUpdate {
    /// A new slug.
    pub slug: Option<Slug>,
    /// A new display name.
    pub name: Option<TenantName>,
    /// New metadata, replacing the old object.
    pub metadata: Option<Metadata>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_rules() {
        assert_eq!(Slug::new("acme").unwrap().as_str(), "acme");
        for encoded in ["xn--80ak6aa92e", "xn--acme", "ac--me", "ab--"] {
            assert!(
                matches!(
                    Slug::new(encoded),
                    Err(ValidationError::SlugReservedHyphens | ValidationError::SlugHyphenEdge)
                ),
                "{encoded}"
            );
        }
        assert_eq!(
            Slug::new("xn--acme").unwrap_err(),
            ValidationError::SlugReservedHyphens
        );
        // Elsewhere a double hyphen is an ordinary DNS label.
        assert!(Slug::new("acme--corp").is_ok());
        assert_eq!(Slug::new("a-1").unwrap().as_str(), "a-1");
        assert_eq!(Slug::new("x".repeat(63)).unwrap().as_str().len(), 63);

        let cases: &[(&str, ValidationError, &str)] = &[
            (
                "ab",
                ValidationError::SlugLength { len: 2 },
                "slug must be 3 to 63 characters long, got 2",
            ),
            (
                "",
                ValidationError::SlugLength { len: 0 },
                "slug must be 3 to 63 characters long, got 0",
            ),
            (
                "Acme",
                ValidationError::SlugCharacter { found: 'A' },
                "slug may contain only lowercase letters a-z, digits and '-', found 'A'",
            ),
            (
                "acme_co",
                ValidationError::SlugCharacter { found: '_' },
                "slug may contain only lowercase letters a-z, digits and '-', found '_'",
            ),
            (
                "acmé",
                ValidationError::SlugCharacter { found: 'é' },
                "slug may contain only lowercase letters a-z, digits and '-', found 'é'",
            ),
            (
                "-acme",
                ValidationError::SlugHyphenEdge,
                "slug may not start or end with '-'",
            ),
            (
                "acme-",
                ValidationError::SlugHyphenEdge,
                "slug may not start or end with '-'",
            ),
            (
                "www",
                ValidationError::SlugReserved { slug: "www".into() },
                "slug \"www\" is reserved",
            ),
        ];
        for (raw, error, message) in cases {
            let err = Slug::new(*raw).unwrap_err();
            assert_eq!(&err, error, "{raw:?}");
            assert_eq!(err.to_string(), *message, "{raw:?}");
        }
        assert_eq!(
            Slug::new("x".repeat(64)).unwrap_err(),
            ValidationError::SlugLength { len: 64 }
        );
        for reserved in RESERVED_SLUGS.iter().filter(|s| s.len() >= 3) {
            assert!(matches!(
                Slug::new(*reserved),
                Err(ValidationError::SlugReserved { .. })
            ));
        }
    }

    #[test]
    fn slug_deserialization_validates() {
        let err = serde_json::from_str::<Slug>("\"No\"").unwrap_err();
        assert!(err.to_string().contains("slug must be 3 to 63"));
    }

    #[test]
    fn tenant_name_rules() {
        assert_eq!(
            TenantName::new("  Acme Inc.  ").unwrap().as_str(),
            "Acme Inc."
        );
        assert_eq!(
            TenantName::new(" \t ").unwrap_err().to_string(),
            "tenant name must be 1 to 200 characters after trimming, got 0"
        );
        assert_eq!(
            TenantName::new(&"n".repeat(201)).unwrap_err().to_string(),
            "tenant name must be 1 to 200 characters after trimming, got 201"
        );
        assert_eq!(
            TenantName::new("Acme\nInc").unwrap_err().to_string(),
            "tenant name may not contain control characters"
        );
    }

    #[test]
    fn status_round_trips() {
        for status in [
            TenantStatus::Active,
            TenantStatus::Suspended,
            TenantStatus::Deleted,
        ] {
            assert_eq!(status.as_str().parse::<TenantStatus>().unwrap(), status);
        }
        assert_eq!(
            "gone".parse::<TenantStatus>().unwrap_err().to_string(),
            "unknown status \"gone\""
        );
    }
}
