//! Users: people who sign in. A user is global and may belong to many tenants.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::ValidationError;
use crate::id::UserId;
use crate::tenant::UnknownStatus;
use crate::text::bounded_text;

/// An email address: trimmed, domain lowercased, `local@domain.tld` form.
///
/// The local part keeps its case, as mail servers may treat it as
/// significant, but uniqueness and matching ignore case
/// ([`Email::same_address`]), so `Ann@x.io` and `ann@x.io` can never be two
/// accounts. Quoted local parts, IP-literal domains and raw Unicode domains
/// are not accepted; give internationalized domains in their `xn--` form.
///
/// ```
/// use tenancy_core::Email;
/// let email = Email::new("  Ann.Lee@Example.COM ").unwrap();
/// assert_eq!(email.as_str(), "Ann.Lee@example.com");
/// assert!(Email::new("ann@localhost").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Longest accepted address, in bytes (RFC 5321 path limit minus brackets).
    pub const MAX_LEN: usize = 254;

    /// Validates and normalizes an email address.
    pub fn new(raw: &str) -> Result<Self, ValidationError> {
        let invalid = |reason| ValidationError::Email { reason };
        let trimmed = raw.trim();
        if trimmed.len() > Self::MAX_LEN {
            return Err(invalid("longer than 254 characters"));
        }
        let (local, domain) = trimmed
            .rsplit_once('@')
            .ok_or_else(|| invalid("missing '@'"))?;
        if local.contains('@') {
            return Err(invalid("more than one '@'"));
        }
        if local.is_empty() || local.len() > 64 {
            return Err(invalid("local part must be 1 to 64 characters"));
        }
        if !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        {
            return Err(invalid(
                "local part contains a character that is not allowed",
            ));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(invalid(
                "local part may not start or end with '.' or contain '..'",
            ));
        }
        let domain = domain.to_ascii_lowercase();
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid("domain must contain a '.'"));
        }
        let label_ok = |label: &&str| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !labels.iter().all(label_ok) {
            return Err(invalid(
                "domain labels must be 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            ));
        }
        if labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(invalid("top-level domain may not be numeric"));
        }
        Ok(Self(format!("{local}@{domain}")))
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two addresses are the same mailbox, ignoring case.
    pub fn same_address(&self, other: &Email) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }

    /// The lowercase form that uniqueness is enforced on.
    pub fn unique_key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl TryFrom<String> for Email {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<Email> for String {
    fn from(email: Email) -> Self {
        email.0
    }
}

impl FromStr for Email {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// How a user is shown to others: trimmed, 1 to 200 characters, no control characters.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    /// Largest accepted length, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Trims and validates a display name.
    pub fn new(raw: &str) -> Result<Self, ValidationError> {
        bounded_text("display name", raw, Self::MAX_CHARS).map(Self)
    }

    /// The name text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl TryFrom<String> for DisplayName {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<DisplayName> for String {
    fn from(name: DisplayName) -> Self {
        name.0
    }
}

/// Whether a user may sign in at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// May sign in.
    Active,
    /// Blocked everywhere, in every tenant.
    Disabled,
}

impl UserStatus {
    /// The lowercase name used in storage and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }
}

impl fmt::Display for UserStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UserStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(UserStatus::Active),
            "disabled" => Ok(UserStatus::Disabled),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Its unique email address.
    pub email: Email,
    /// How it is shown to others, if known.
    pub display_name: Option<DisplayName>,
    /// Whether the user proved they receive mail at `email`.
    pub email_verified: bool,
    /// Whether the user may sign in.
    pub status: UserStatus,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// What it takes to create a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// The unique email address.
    pub email: Email,
    /// How the user is shown to others.
    pub display_name: Option<DisplayName>,
    /// Whether the email address is already proven (for example, the user
    /// followed an invitation link sent to it).
    pub email_verified: bool,
}

impl NewUser {
    /// A user with an unverified email and no display name.
    pub fn new(email: Email) -> Self {
        Self {
            email,
            display_name: None,
            email_verified: false,
        }
    }

    /// Sets the display name.
    pub fn with_display_name(mut self, name: DisplayName) -> Self {
        self.display_name = Some(name);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_domain_lowercased() {
        let e = Email::new("  Ann.O'Neil+tag@Mail.Example.ORG\t").unwrap();
        assert_eq!(e.as_str(), "Ann.O'Neil+tag@mail.example.org");
        assert!(e.same_address(&Email::new("ann.o'neil+TAG@mail.example.org").unwrap()));
        assert_eq!(e.unique_key(), "ann.o'neil+tag@mail.example.org");
    }

    #[test]
    fn email_rules() {
        let cases = [
            ("ann.example.com", "missing '@'"),
            ("a@b@example.com", "more than one '@'"),
            ("@example.com", "local part must be 1 to 64 characters"),
            (
                "ann lee@example.com",
                "local part contains a character that is not allowed",
            ),
            (
                "\"ann\"@example.com",
                "local part contains a character that is not allowed",
            ),
            (
                ".ann@example.com",
                "local part may not start or end with '.' or contain '..'",
            ),
            (
                "ann..lee@example.com",
                "local part may not start or end with '.' or contain '..'",
            ),
            ("ann@localhost", "domain must contain a '.'"),
            (
                "ann@-x.com",
                "domain labels must be 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            ),
            (
                "ann@x..com",
                "domain labels must be 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            ),
            (
                "ann@exämple.com",
                "domain labels must be 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            ),
            ("ann@10.0.0.1", "top-level domain may not be numeric"),
        ];
        for (raw, reason) in cases {
            let err = Email::new(raw).unwrap_err();
            assert_eq!(err, ValidationError::Email { reason }, "{raw:?}");
            assert_eq!(err.to_string(), format!("invalid email address: {reason}"));
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(
            Email::new(&long_local).unwrap_err().to_string(),
            "invalid email address: local part must be 1 to 64 characters"
        );
        let too_long = format!("a@{}.com", "b".repeat(252));
        assert_eq!(
            Email::new(&too_long).unwrap_err().to_string(),
            "invalid email address: longer than 254 characters"
        );
    }

    #[test]
    fn display_name_rules() {
        assert_eq!(DisplayName::new(" Ann ").unwrap().as_str(), "Ann");
        assert_eq!(
            DisplayName::new("").unwrap_err().to_string(),
            "display name must be 1 to 200 characters after trimming, got 0"
        );
        assert_eq!(
            DisplayName::new("A\u{7}nn").unwrap_err().to_string(),
            "display name may not contain control characters"
        );
    }
}
