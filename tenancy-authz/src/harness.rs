//! Policy tests for users: a table of requests and the decisions they
//! expect, run against a policy set, failing with the explanation of each
//! mismatch.
//!
//! A **policy set** declares the permission catalog, custom roles and
//! policies (JSON or TOML). A **table** lists cases: a principal (id,
//! roles, optional API-key scopes, attributes), an action, a resource
//! (type, id, attributes), a context, and `expect = "allow"` or `"deny"`,
//! optionally with `explain`, a text the explanation must contain. The
//! principal and resource act in the policy set's tenant unless
//! `other_tenant = true`. Typed attribute values are written
//! `{ ip = "10.1.2.3" }`, `{ cidr = "10.0.0.0/8" }`,
//! `{ time = "2030-01-07T10:00:00Z" }`.
//!
//! ```
//! use tenancy_authz::harness::{PolicySet, TestTable};
//!
//! let set = PolicySet::from_toml(r#"
//! permissions = ["projects:read", "projects:delete"]
//! "#)?;
//! let table = TestTable::from_toml(r#"
//! [[case]]
//! name = "members read projects"
//! principal = { id = "ann", roles = ["member"] }
//! action = "projects:read"
//! resource = { type = "project" }
//! expect = "allow"
//!
//! [[case]]
//! name = "members do not delete them"
//! principal = { id = "ann", roles = ["member"] }
//! action = "projects:delete"
//! resource = { type = "project" }
//! expect = "deny"
//! explain = "nothing grants `projects:delete`"
//! "#)?;
//! let report = set.run(&table)?;
//! assert_eq!(report.passed(), 2);
//! report.into_result()?; // or `assert!(report.is_success(), "{report}")`
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The crate ships an example set and table, `example-policies/office.toml`
//! and `example-policies/office.table.toml`: members may edit their own projects
//! during business hours from the office network, and the billing role
//! sees invoices only.

use std::fmt;

use serde::{Deserialize, Serialize};
use tenancy_core::{RoleName, RoleSet, TenantId};
use uuid::Uuid;

use crate::engine::{Authorizer, Engine, Explanation};
use crate::permission::{Catalog, PermissionError, PermissionPattern};
use crate::policy::{Policy, PolicyDocument, PolicyError};
use crate::request::{AuthzRequest, Principal, PrincipalKind, Resource};
use crate::role::{RoleDefinition, RoleError};
use crate::value::Attributes;

/// The tenant every case acts in, unless it says `other_tenant`.
pub const TENANT: TenantId =
    TenantId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001));
/// The tenant `other_tenant = true` stands for.
pub const OTHER_TENANT: TenantId =
    TenantId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002));

/// What loading a policy set or a table can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The file is not valid JSON or TOML of the right shape.
    #[error("invalid {what} {format}: {message}")]
    Syntax {
        /// `policy set` or `test table`.
        what: &'static str,
        /// `JSON` or `TOML`.
        format: &'static str,
        /// The parser's message, with the line and column.
        message: String,
    },
    /// The catalog is invalid.
    #[error(transparent)]
    Permission(#[from] PermissionError),
    /// A role is invalid.
    #[error(transparent)]
    Role(#[from] RoleError),
    /// A policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A case names an invalid role.
    #[error("case {case:?}: {message}")]
    Case {
        /// The case.
        case: String,
        /// What is wrong.
        message: String,
    },
}

/// A catalog, custom roles and policies, as one JSON or TOML file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicySet {
    /// The host permissions (the SDK's own are added).
    pub permissions: Vec<String>,
    /// Custom roles.
    #[serde(default)]
    pub roles: Vec<RoleDefinition>,
    /// Policies.
    #[serde(default)]
    pub policies: Vec<PolicyDocument>,
}

impl PolicySet {
    /// A set of the host permissions `permissions`, without custom roles
    /// or policies.
    pub fn new<S: Into<String>>(permissions: impl IntoIterator<Item = S>) -> Self {
        Self {
            permissions: permissions.into_iter().map(Into::into).collect(),
            roles: Vec::new(),
            policies: Vec::new(),
        }
    }

    /// Adds a custom role.
    pub fn with_role(mut self, role: RoleDefinition) -> Self {
        self.roles.push(role);
        self
    }

    /// Adds a policy.
    pub fn with_policy(mut self, policy: PolicyDocument) -> Self {
        self.policies.push(policy);
        self
    }

    /// Parses a JSON policy set.
    pub fn from_json(text: &str) -> Result<Self, HarnessError> {
        serde_json::from_str(text).map_err(|e| HarnessError::Syntax {
            what: "policy set",
            format: "JSON",
            message: e.to_string(),
        })
    }

    /// Parses a TOML policy set.
    pub fn from_toml(text: &str) -> Result<Self, HarnessError> {
        toml::from_str(text).map_err(|e| HarnessError::Syntax {
            what: "policy set",
            format: "TOML",
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// The engine of this set's catalog, with default built-in roles.
    pub fn engine(&self) -> Result<Engine, HarnessError> {
        Ok(Engine::new(Catalog::new(&self.permissions)?))
    }

    /// Compiles the set for [`TENANT`].
    pub fn compile(&self) -> Result<Authorizer, HarnessError> {
        self.compile_with(&self.engine()?)
    }

    /// Compiles the set with `engine` (for custom built-in roles).
    pub fn compile_with(&self, engine: &Engine) -> Result<Authorizer, HarnessError> {
        let policies = self
            .policies
            .iter()
            .map(|doc| Policy::new(doc.clone(), engine.catalog()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(engine.compile(TENANT, &self.roles, &policies)?)
    }

    /// Compiles the set and runs `table` against it.
    pub fn run(&self, table: &TestTable) -> Result<Report, HarnessError> {
        run(&self.compile()?, table)
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The request must be allowed.
    Allow,
    /// The request must be denied.
    Deny,
}

/// The principal of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalCase {
    /// Its id (`principal.id`).
    pub id: String,
    /// Its roles.
    pub roles: Vec<RoleName>,
    /// API-key scopes; the principal is an API key when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<PermissionPattern>>,
    /// `principal.*` attributes.
    #[serde(default)]
    pub attributes: Attributes,
    /// Acts in [`OTHER_TENANT`].
    #[serde(default)]
    pub other_tenant: bool,
}

/// The resource of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceCase {
    /// Its type.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `resource.*` attributes.
    #[serde(default)]
    pub attributes: Attributes,
    /// Belongs to [`OTHER_TENANT`].
    #[serde(default)]
    pub other_tenant: bool,
}

/// One request and the decision it expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the case checks.
    pub name: String,
    /// Who asks.
    pub principal: PrincipalCase,
    /// The action.
    pub action: String,
    /// On what.
    pub resource: ResourceCase,
    /// `context.*` attributes.
    #[serde(default)]
    pub context: Attributes,
    /// The expected decision.
    pub expect: Expect,
    /// Text the explanation must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<String>,
}

/// A table of cases: `[[case]]` in TOML, `{"case": [...]}` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestTable {
    /// The cases, run in order.
    #[serde(rename = "case", default)]
    pub cases: Vec<TestCase>,
}

impl TestTable {
    /// Parses a JSON table.
    pub fn from_json(text: &str) -> Result<Self, HarnessError> {
        serde_json::from_str(text).map_err(|e| HarnessError::Syntax {
            what: "test table",
            format: "JSON",
            message: e.to_string(),
        })
    }

    /// Parses a TOML table.
    pub fn from_toml(text: &str) -> Result<Self, HarnessError> {
        toml::from_str(text).map_err(|e| HarnessError::Syntax {
            what: "test table",
            format: "TOML",
            message: e.to_string().trim_end().to_owned(),
        })
    }
}

/// A case whose decision or explanation was not the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mismatch {
    /// The case.
    pub name: String,
    /// What it expected.
    pub expected: Expect,
    /// The text its explanation had to contain, if any.
    pub expected_explain: Option<String>,
    /// What the engine answered, explained.
    pub explanation: Explanation,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expected = match self.expected {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
        };
        write!(f, "case {:?}: expected {expected}", self.name)?;
        if let Some(text) = &self.expected_explain {
            write!(f, " explained as {text:?}")?;
        }
        write!(f, ", got {}", self.explanation)
    }
}

/// The outcome of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    passed: usize,
    mismatches: Vec<Mismatch>,
}

impl Report {
    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.passed
    }

    /// The cases that failed.
    pub fn mismatches(&self) -> &[Mismatch] {
        &self.mismatches
    }

    /// Whether every case passed.
    pub fn is_success(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// `Ok` with the number of cases if all passed, else the report as the error.
    pub fn into_result(self) -> Result<usize, Report> {
        if self.is_success() {
            Ok(self.passed)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed",
            self.passed,
            self.mismatches.len()
        )?;
        for mismatch in &self.mismatches {
            write!(f, "\n  {mismatch}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

/// Runs every case of `table` against `authorizer`, which must be compiled
/// for [`TENANT`].
pub fn run(authorizer: &Authorizer, table: &TestTable) -> Result<Report, HarnessError> {
    let mut report = Report {
        passed: 0,
        mismatches: Vec::new(),
    };
    for case in &table.cases {
        let roles =
            RoleSet::new(case.principal.roles.iter().cloned()).map_err(|e| HarnessError::Case {
                case: case.name.clone(),
                message: e.to_string(),
            })?;
        let tenant = |other: bool| if other { OTHER_TENANT } else { TENANT };
        let kind = if case.principal.scopes.is_some() {
            PrincipalKind::ApiKey
        } else {
            PrincipalKind::User
        };
        let mut principal = Principal::new(
            kind,
            case.principal.id.as_str(),
            tenant(case.principal.other_tenant),
            roles,
        )
        .with_attributes(case.principal.attributes.clone());
        if let Some(scopes) = &case.principal.scopes {
            principal = principal.with_scopes(scopes.iter().cloned());
        }
        let mut resource = Resource::new(case.resource.resource_type.as_str())
            .in_tenant(tenant(case.resource.other_tenant))
            .with_attributes(case.resource.attributes.clone());
        if let Some(id) = &case.resource.id {
            resource = resource.with_id(id.as_str());
        }
        let request =
            AuthzRequest::new(&principal, &case.action, &resource).with_context(&case.context);
        let explanation = authorizer.explain(&request);
        let decision_ok = explanation.allowed == (case.expect == Expect::Allow);
        let explain_ok = case
            .explain
            .as_ref()
            .is_none_or(|text| explanation.to_string().contains(text.as_str()));
        if decision_ok && explain_ok {
            report.passed += 1;
        } else {
            report.mismatches.push(Mismatch {
                name: case.name.clone(),
                expected: case.expect,
                expected_explain: case.explain.clone(),
                explanation,
            });
        }
    }
    Ok(report)
}
