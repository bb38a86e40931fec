//! A small "projects" API guarded by the SDK, framework-agnostic, as host
//! apps write them: the scenario suite's test apps (axum and actix) serve it
//! with a few lines of glue each.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenancy_authz::{AttrKey, PolicyDocument, Resource};
use tenancy_core::{AuditContext, TenantId};

use crate::pipeline::RequestContext;
use crate::problem::Problem;
use crate::response::{json, no_content};
use crate::tenancy::Tenancy;

/// The permissions of the projects API, for the host's catalog.
pub const PERMISSIONS: [&str; 4] = [
    "projects:read",
    "projects:create",
    "projects:update",
    "projects:delete",
];

/// A project.
#[derive(Debug, Clone, Serialize)]
pub struct Project {
    /// Its id.
    pub id: uuid::Uuid,
    /// Its name.
    pub name: String,
    /// Who created it: a user id or an API key id.
    pub owner: String,
}

/// Projects, per tenant, in memory.
#[derive(Debug, Default)]
pub struct Projects {
    rows: Mutex<BTreeMap<(TenantId, uuid::Uuid), Project>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectBody {
    name: String,
}

impl Projects {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `GET/POST /projects` (`id` absent) and
    /// `GET/PUT/DELETE /projects/{id}`.
    pub async fn handle(
        &self,
        context: &RequestContext,
        method: &Method,
        id: Option<&str>,
        body: &Bytes,
    ) -> Response<Bytes> {
        self.serve(context, method, id, body)
            .await
            .unwrap_or_else(|problem| problem.to_response())
    }

    async fn serve(
        &self,
        context: &RequestContext,
        method: &Method,
        id: Option<&str>,
        body: &Bytes,
    ) -> Result<Response<Bytes>, Problem> {
        let tenant = context.tenant_id();
        match (method.clone(), id) {
            (Method::GET, None) => {
                context.require("projects:read").await?;
                let items: Vec<Project> = self
                    .lock()
                    .range((tenant, uuid::Uuid::nil())..)
                    .take_while(|((t, _), _)| *t == tenant)
                    .map(|(_, p)| p.clone())
                    .collect();
                json(StatusCode::OK, &json!({ "items": items }))
            }
            (Method::POST, None) => {
                context.require("projects:create").await?;
                let input: ProjectBody = parse(body)?;
                let name = input.name.trim().to_owned();
                if name.is_empty() || name.chars().count() > 200 {
                    return Err(Problem::invalid("name", "must be 1 to 200 characters"));
                }
                ensure_policy(context.tenancy(), tenant).await?;
                let project = Project {
                    id: uuid::Uuid::now_v7(),
                    name,
                    owner: context.authz_principal().id().to_owned(),
                };
                self.lock().insert((tenant, project.id), project.clone());
                json(StatusCode::CREATED, &project)
            }
            (method, Some(id)) => {
                let id: uuid::Uuid = id.parse().map_err(|_| Problem::not_found())?;
                // Another tenant's project is simply not found here.
                let project = self
                    .lock()
                    .get(&(tenant, id))
                    .cloned()
                    .ok_or_else(Problem::not_found)?;
                let owner = AttrKey::new("owner").map_err(|e| Problem::internal(&e))?;
                let resource = Resource::new("project")
                    .with_id(project.id.to_string().as_str())
                    .in_tenant(tenant)
                    .with_attribute(owner, project.owner.as_str());
                match method {
                    Method::GET => {
                        context.authorize("projects:read", &resource, None).await?;
                        json(StatusCode::OK, &project)
                    }
                    Method::PUT => {
                        context
                            .authorize("projects:update", &resource, None)
                            .await?;
                        let input: ProjectBody = parse(body)?;
                        let mut rows = self.lock();
                        let stored = rows.get_mut(&(tenant, id)).ok_or_else(Problem::not_found)?;
                        stored.name = input.name;
                        json(StatusCode::OK, &stored.clone())
                    }
                    Method::DELETE => {
                        context
                            .authorize("projects:delete", &resource, None)
                            .await?;
                        self.lock().remove(&(tenant, id));
                        Ok(no_content())
                    }
                    _ => Err(Problem::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method",
                        "Method not allowed",
                    )),
                }
            }
            _ => Err(Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "Method not allowed",
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(TenantId, uuid::Uuid), Project>> {
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn parse(body: &Bytes) -> Result<ProjectBody, Problem> {
    serde_json::from_slice(body).map_err(|e| Problem::bad_request(format!("malformed JSON: {e}")))
}

/// The tenant's default policy, seeded by the host on first use: members
/// may update and delete the projects they created (owners and admins may
/// anyway, by role).
pub async fn ensure_policy(tenancy: &Tenancy, tenant: TenantId) -> Result<(), Problem> {
    let policy: PolicyDocument = serde_json::from_value(json!({
        "id": "own-projects",
        "description": "members change and delete the projects they created",
        "statements": [{
            "sid": "own",
            "effect": "allow",
            "actions": ["projects:update", "projects:delete"],
            "resource_types": ["project"],
            "condition": "resource.owner == principal.id"
        }]
    }))
    .map_err(|e| Problem::internal(&e))?;
    tenancy
        .seed_policy(tenant, &policy, &AuditContext::system())
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    Ok(())
}
