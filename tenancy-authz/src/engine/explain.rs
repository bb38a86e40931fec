//! Explanations: why a decision went the way it did, in full.

use std::fmt;

use tenancy_core::{RoleName, TenantId};

use super::authorizer::Authorizer;
use super::check::Skip;
use super::decision::Reason;
use crate::condition::{EvalCtx, EvalError};
use crate::policy::{Effect, PolicyId, statement_name};
use crate::request::AuthzRequest;

/// The full answer of [`Authorizer::explain`]. Its `Display` reads as one
/// sentence, such as "denied: nothing grants `projects:delete` on `project`".
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// A deny statement matched, but does not apply: the principal holds
    /// `owner`, and no deny statement takes reading or managing policies
    /// and roles from an owner (break-glass, so an owner can always undo a
    /// policy that locks everyone out). The owner's roles allow it.
    OwnerBreakGlass {
        /// The permission.
        permission: String,
        /// The policy of the deny statement set aside.
        policy: PolicyId,
        /// Its sid, or `#position`.
        statement: String,
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
            Explain::OwnerBreakGlass {
                permission,
                policy,
                statement,
            } => write!(
                f,
                "`{permission}` granted to an owner although policy `{policy}` statement `{statement}` denies it: no deny statement applies to owners reading or managing policies and roles (break-glass)"
            ),
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

impl Authorizer {
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
            Reason::OwnerBreakGlass => {
                let (policy, statement) = self.statement_name(decision.detail);
                Explain::OwnerBreakGlass {
                    permission: action,
                    policy,
                    statement,
                }
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

    /// The policy of statement `s`, and the statement's sid or `#position`.
    fn statement_name(&self, s: u32) -> (PolicyId, String) {
        let statement = &self.statements[s as usize];
        let policy = &self.policies[statement.policy as usize];
        let name = policy
            .document()
            .statements
            .get(statement.index as usize)
            .map_or_else(String::new, |doc| {
                statement_name(doc, statement.index as usize)
            });
        (policy.id().clone(), name)
    }

    fn statement_detail(&self, s: u32, request: &AuthzRequest<'_>, action: String) -> Explain {
        let statement = &self.statements[s as usize];
        let (policy, name) = self.statement_name(s);
        let error = statement.condition.as_ref().and_then(|expr| {
            let ctx = EvalCtx {
                principal: request.principal,
                resource: request.resource,
                context: request.context,
            };
            expr.eval_bool(&ctx).err().map(|e: EvalError| e.to_string())
        });
        Explain::Statement {
            policy,
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
