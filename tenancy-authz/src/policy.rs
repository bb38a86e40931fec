//! ABAC policies: documents of allow and deny statements, in JSON or TOML.
//!
//! ```
//! use tenancy_authz::{Catalog, Policy};
//! let catalog = Catalog::new(["projects:read", "projects:update"])?;
//! let policy = Policy::from_toml(r#"
//! id = "own-projects"
//!
//! [[statements]]
//! sid = "edit-own"
//! effect = "allow"
//! roles = ["member"]
//! actions = ["projects:update"]
//! resource_types = ["project"]
//! condition = "resource.owner == principal.id"
//!
//! [[statements]]
//! effect = "deny"
//! actions = ["*"]
//! condition = "has(principal.suspended) && principal.suspended"
//! "#, &catalog)?;
//! assert_eq!(policy.statements().len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tenancy_core::RoleName;

use crate::condition::{Condition, ConditionError};
use crate::permission::{Catalog, PermissionError, PermissionPattern};

/// Most statements one policy may hold.
pub const MAX_STATEMENTS: usize = 10_000;

/// Identifies a policy within its tenant: 1 to 64 characters of `a-z`,
/// `0-9`, `_`, `:` and `-`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PolicyId(String);

impl PolicyId {
    /// Validates an id.
    pub fn new(text: impl Into<String>) -> Result<Self, PolicyError> {
        let text = text.into();
        let ok = (1..=64).contains(&text.len())
            && text.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | ':' | '-')
            });
        if ok {
            Ok(Self(text))
        } else {
            Err(PolicyError::Id { id: text })
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for PolicyId {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for PolicyId {
    type Error = PolicyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<PolicyId> for String {
    fn from(id: PolicyId) -> Self {
        id.0
    }
}

/// Whether a statement allows or denies. Deny overrides allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Grants the actions when it matches.
    Allow,
    /// Refuses the actions when it matches, whatever else grants them.
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

/// One statement of a policy document, as written.
///
/// ```
/// use tenancy_authz::{Effect, StatementDocument};
/// let statement = StatementDocument::new(Effect::Allow, ["projects:update".parse()?])
///     .with_sid("edit-own")
///     .with_resource_types(["project"])
///     .with_condition("resource.owner == principal.id");
/// assert_eq!(statement.sid.as_deref(), Some("edit-own"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StatementDocument {
    /// A name for explanations; the 1-based position is used without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Allow or deny.
    pub effect: Effect,
    /// The actions (permission patterns) it covers.
    pub actions: Vec<PermissionPattern>,
    /// The resource types it covers; empty covers every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_types: Vec<String>,
    /// Only principals holding one of these roles (directly or through
    /// inheritance); empty covers every principal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleName>,
    /// A condition in the [`crate::condition`] language; none always holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// A policy document, as written in JSON or TOML and as stored.
///
/// ```
/// use tenancy_authz::{Effect, PolicyDocument, PolicyId, StatementDocument};
/// let document = PolicyDocument::new(PolicyId::new("guard")?)
///     .with_description("nobody acts while suspended")
///     .with_statement(
///         StatementDocument::new(Effect::Deny, ["*".parse()?])
///             .with_condition("has(principal.suspended) && principal.suspended"),
///     );
/// assert_eq!(document.statements.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicyDocument {
    /// Its id.
    pub id: PolicyId,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its statements, in order.
    #[serde(default)]
    pub statements: Vec<StatementDocument>,
}

impl StatementDocument {
    /// A statement of `effect` over `actions`, for every resource type and
    /// principal, without a condition.
    pub fn new(effect: Effect, actions: impl IntoIterator<Item = PermissionPattern>) -> Self {
        Self {
            sid: None,
            effect,
            actions: actions.into_iter().collect(),
            resource_types: Vec::new(),
            roles: Vec::new(),
            condition: None,
        }
    }

    /// Sets the statement id.
    pub fn with_sid(mut self, sid: impl Into<String>) -> Self {
        self.sid = Some(sid.into());
        self
    }

    /// Limits the statement to these resource types.
    pub fn with_resource_types<S: Into<String>>(
        mut self,
        types: impl IntoIterator<Item = S>,
    ) -> Self {
        self.resource_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Limits the statement to principals holding one of these roles.
    pub fn with_roles(mut self, roles: impl IntoIterator<Item = RoleName>) -> Self {
        self.roles = roles.into_iter().collect();
        self
    }

    /// Sets the condition (checked when the policy is validated).
    pub fn with_condition(mut self, condition: impl Into<String>) -> Self {
        self.condition = Some(condition.into());
        self
    }
}

impl PolicyDocument {
    /// A policy without statements.
    pub fn new(id: PolicyId) -> Self {
        Self {
            id,
            description: None,
            statements: Vec::new(),
        }
    }

    /// Sets the description.
    pub fn with_description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Appends a statement.
    pub fn with_statement(mut self, statement: StatementDocument) -> Self {
        self.statements.push(statement);
        self
    }
}

/// A validated policy: every action is in the catalog and every condition
/// parses. Build it with [`Policy::new`], [`Policy::from_json`] or
/// [`Policy::from_toml`].
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    inner: std::sync::Arc<PolicyInner>,
}

#[derive(Debug, PartialEq)]
struct PolicyInner {
    document: PolicyDocument,
    conditions: Vec<Option<Condition>>,
}

/// What is wrong with a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The document is not valid JSON or TOML of the right shape.
    #[error("invalid policy {format}: {message}")]
    Syntax {
        /// `JSON` or `TOML`.
        format: &'static str,
        /// The parser's message, with the line and column.
        message: String,
    },
    /// A malformed policy id.
    #[error("policy id {id:?} must be 1 to 64 characters of a-z, 0-9, '_', ':' and '-'")]
    Id {
        /// The rejected id.
        id: String,
    },
    /// A condition that does not parse.
    #[error("policy `{policy}` statement {statement}: condition: {source}")]
    Condition {
        /// The policy.
        policy: PolicyId,
        /// The statement's sid or `#position`.
        statement: String,
        /// Where and what.
        #[source]
        source: ConditionError,
    },
    /// An action outside the catalog.
    #[error("policy `{policy}` statement {statement}: {source}")]
    Permission {
        /// The policy.
        policy: PolicyId,
        /// The statement's sid or `#position`.
        statement: String,
        /// What is wrong with the action.
        #[source]
        source: PermissionError,
    },
    /// A statement without actions.
    #[error("policy `{policy}` statement {statement}: at least one action is required")]
    NoActions {
        /// The policy.
        policy: PolicyId,
        /// The statement's sid or `#position`.
        statement: String,
    },
    /// A malformed resource type.
    #[error(
        "policy `{policy}` statement {statement}: resource type {resource_type:?} must be 1 to 64 characters of a-z, 0-9 and '_' starting with a letter"
    )]
    ResourceType {
        /// The policy.
        policy: PolicyId,
        /// The statement's sid or `#position`.
        statement: String,
        /// The rejected type.
        resource_type: String,
    },
    /// A malformed or repeated statement id.
    #[error(
        "policy `{policy}`: statement id {sid:?} must be unique and 1 to 64 characters of letters, digits, '_' and '-'"
    )]
    Sid {
        /// The policy.
        policy: PolicyId,
        /// The rejected sid.
        sid: String,
    },
    /// A description that is too long or has control characters.
    #[error(
        "policy `{policy}`: description must be at most 512 characters without control characters"
    )]
    Description {
        /// The policy.
        policy: PolicyId,
    },
    /// Too many statements.
    #[error("policy `{policy}` has more than {max} statements")]
    TooManyStatements {
        /// The policy.
        policy: PolicyId,
        /// The limit.
        max: usize,
    },
}

pub(crate) fn valid_resource_type(text: &str) -> bool {
    let mut chars = text.chars();
    text.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Policy {
    /// Validates a document against `catalog`.
    pub fn new(document: PolicyDocument, catalog: &Catalog) -> Result<Self, PolicyError> {
        let policy = document.id.clone();
        if document.statements.len() > MAX_STATEMENTS {
            return Err(PolicyError::TooManyStatements {
                policy,
                max: MAX_STATEMENTS,
            });
        }
        if let Some(text) = &document.description
            && (text.chars().count() > 512 || text.chars().any(char::is_control))
        {
            return Err(PolicyError::Description { policy });
        }
        let mut sids = std::collections::HashSet::new();
        let mut conditions = Vec::with_capacity(document.statements.len());
        for (i, statement) in document.statements.iter().enumerate() {
            let name = statement_name(statement, i);
            if let Some(sid) = &statement.sid {
                let ok = (1..=64).contains(&sid.len())
                    && sid
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !ok || !sids.insert(sid.as_str()) {
                    return Err(PolicyError::Sid {
                        policy,
                        sid: sid.clone(),
                    });
                }
            }
            if statement.actions.is_empty() {
                return Err(PolicyError::NoActions {
                    policy,
                    statement: name,
                });
            }
            for action in &statement.actions {
                catalog
                    .check_pattern(action)
                    .map_err(|source| PolicyError::Permission {
                        policy: policy.clone(),
                        statement: name.clone(),
                        source,
                    })?;
            }
            if let Some(bad) = statement
                .resource_types
                .iter()
                .find(|t| !valid_resource_type(t))
            {
                return Err(PolicyError::ResourceType {
                    policy,
                    statement: name,
                    resource_type: bad.clone(),
                });
            }
            let condition = statement
                .condition
                .as_deref()
                .map(Condition::parse)
                .transpose()
                .map_err(|source| PolicyError::Condition {
                    policy: policy.clone(),
                    statement: name.clone(),
                    source,
                })?;
            conditions.push(condition);
        }
        Ok(Self {
            inner: std::sync::Arc::new(PolicyInner {
                document,
                conditions,
            }),
        })
    }

    /// Parses and validates a JSON document.
    pub fn from_json(text: &str, catalog: &Catalog) -> Result<Self, PolicyError> {
        let document = serde_json::from_str(text).map_err(|e| PolicyError::Syntax {
            format: "JSON",
            message: e.to_string(),
        })?;
        Self::new(document, catalog)
    }

    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str, catalog: &Catalog) -> Result<Self, PolicyError> {
        let document = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            format: "TOML",
            message: e.to_string().trim_end().to_owned(),
        })?;
        Self::new(document, catalog)
    }

    /// The id.
    pub fn id(&self) -> &PolicyId {
        &self.inner.document.id
    }

    /// The document.
    pub fn document(&self) -> &PolicyDocument {
        &self.inner.document
    }

    /// The statements with their parsed conditions.
    pub fn statements(&self) -> Vec<(&StatementDocument, Option<&Condition>)> {
        self.inner
            .document
            .statements
            .iter()
            .zip(self.inner.conditions.iter())
            .map(|(s, c)| (s, c.as_ref()))
            .collect()
    }

    pub(crate) fn parts(&self) -> impl Iterator<Item = (&StatementDocument, Option<&Condition>)> {
        self.inner
            .document
            .statements
            .iter()
            .zip(self.inner.conditions.iter())
            .map(|(s, c)| (s, c.as_ref()))
    }
}

/// How explanations name a statement: its sid, or `#position`.
pub(crate) fn statement_name(statement: &StatementDocument, index: usize) -> String {
    match &statement.sid {
        Some(sid) => sid.clone(),
        None => format!("#{}", index + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::new(["projects:read", "projects:update"]).unwrap()
    }

    #[test]
    fn json_and_toml_agree() {
        let json = r#"{"id": "p", "statements": [
            {"effect": "allow", "actions": ["projects:*"], "resource_types": ["project"],
             "condition": "resource.owner == principal.id"}]}"#;
        let toml = r#"
id = "p"
[[statements]]
effect = "allow"
actions = ["projects:*"]
resource_types = ["project"]
condition = "resource.owner == principal.id"
"#;
        let a = Policy::from_json(json, &catalog()).unwrap();
        let b = Policy::from_toml(toml, &catalog()).unwrap();
        assert_eq!(a.document(), b.document());
    }

    #[test]
    fn errors_name_the_statement() {
        let err = Policy::from_json(
            r#"{"id": "p", "statements": [{"effect": "allow", "actions": ["projects:delete"]}]}"#,
            &catalog(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy `p` statement #1: unknown permission `projects:delete`: it is not in the permission catalog"
        );
        let err = Policy::from_json(
            r#"{"id": "p", "statements": [{"sid": "x", "effect": "deny", "actions": ["*"], "condition": "principal.a =="}]}"#,
            &catalog(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy `p` statement x: condition: line 1, column 15: expected an operand, found end of input"
        );
        let err = Policy::from_toml(
            "id = \"p\"\n[[statements]]\neffect = \"maybe\"\nactions = []\n",
            &catalog(),
        )
        .unwrap_err();
        assert!(
            matches!(err, PolicyError::Syntax { format: "TOML", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = Policy::from_json(
            r#"{"id": "p", "statements": [{"effect": "allow", "actions": []}]}"#,
            &catalog(),
        )
        .unwrap_err();
        assert!(matches!(err, PolicyError::NoActions { .. }));
        let err = Policy::from_json(r#"{"id": "P"}"#, &catalog()).unwrap_err();
        assert!(matches!(err, PolicyError::Syntax { .. }));
        let err = Policy::from_json(
            r#"{"id": "p", "statements": [{"sid": "a", "effect": "allow", "actions": ["*"]}, {"sid": "a", "effect": "allow", "actions": ["*"]}]}"#,
            &catalog(),
        )
        .unwrap_err();
        assert!(matches!(err, PolicyError::Sid { .. }));
    }
}
