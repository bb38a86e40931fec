//! A small multi-tenant "projects" API on actix-web, protected by tenancy:
//! accounts, tenants, members, API keys and audit from the SDK's routes,
//! and the app's own `/projects` routes behind its middleware.
//!
//! ```text
//! cargo run --example actix_saas --features actix
//! DATABASE_URL=postgres://… cargo run --example actix_saas --features actix,postgres
//! ```
//!
//! It listens on `127.0.0.1:3001` (or `PORT`). Members may read and create
//! projects; they may change and delete only the projects they created (an
//! ABAC policy each tenant gets on first use); owners and admins may do
//! everything; a project of another tenant is not found. With
//! `DATABASE_URL`, tenancy keeps its data in Postgres; the projects
//! themselves stay in this process, standing in for the app's own table.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::{Value, json};
use tenancy::actix::actix_web::{self, App, HttpResponse, HttpServer, web};
use tenancy::actix::tenancy_http::auth::AuthConfig;
use tenancy::actix::tenancy_http::authz::{
    AttrKey, AuthzStoreError, Catalog, PolicyDocument, Resource,
};
use tenancy::actix::tenancy_http::{HttpConfig, Problem, Tenancy};
use tenancy::actix::{Context, Rejection, TenancyMiddleware, json_config, require};
use tenancy::{AuditContext, TenantId};

/// The app's permissions, declared once.
const PERMISSIONS: [&str; 4] = [
    "projects:read",
    "projects:create",
    "projects:update",
    "projects:delete",
];

/// A project.
#[derive(Debug, Clone)]
struct Project {
    id: u64,
    name: String,
    /// Who created it: a user id, or an API key id.
    owner: String,
}

impl Project {
    fn to_json(&self) -> Value {
        json!({ "id": self.id.to_string(), "name": self.name, "owner": self.owner })
    }
}

/// The projects of every tenant. A real app keeps them in its own table,
/// with tenant isolation (see `tenancy::postgres`).
#[derive(Default)]
struct Projects {
    next_id: AtomicU64,
    rows: Mutex<BTreeMap<(TenantId, u64), Project>>,
}

impl Projects {
    fn rows(&self) -> MutexGuard<'_, BTreeMap<(TenantId, u64), Project>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Reply = Result<HttpResponse, Rejection>;

/// `GET /projects`, behind `require("projects:read")`.
async fn list(ctx: Context, projects: web::Data<Projects>) -> Reply {
    let tenant = ctx.tenant_id();
    let items: Vec<Value> = projects
        .rows()
        .range((tenant, 0)..)
        .take_while(|((t, _), _)| *t == tenant)
        .map(|(_, project)| project.to_json())
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

/// `POST /projects`, behind `require("projects:create")`.
async fn create(ctx: Context, projects: web::Data<Projects>, input: web::Json<Value>) -> Reply {
    let name = valid_name(&input)?;
    seed_policy(ctx.tenancy(), ctx.tenant_id()).await?;
    let project = Project {
        id: projects.next_id.fetch_add(1, Ordering::Relaxed) + 1,
        name,
        owner: ctx.authz_principal().id().to_owned(),
    };
    projects
        .rows()
        .insert((ctx.tenant_id(), project.id), project.clone());
    Ok(HttpResponse::Created().json(project.to_json()))
}

/// `GET /projects/{id}`.
async fn show(ctx: Context, projects: web::Data<Projects>, id: web::Path<String>) -> Reply {
    let project = guarded(&projects, &ctx, &id, "projects:read").await?;
    Ok(HttpResponse::Ok().json(project.to_json()))
}

/// `PUT /projects/{id}`: the owner, or an owner or admin of the tenant.
async fn update(
    ctx: Context,
    projects: web::Data<Projects>,
    id: web::Path<String>,
    input: web::Json<Value>,
) -> Reply {
    let project = guarded(&projects, &ctx, &id, "projects:update").await?;
    let name = valid_name(&input)?;
    let mut rows = projects.rows();
    let stored = rows
        .get_mut(&(ctx.tenant_id(), project.id))
        .ok_or_else(Problem::not_found)?;
    stored.name = name;
    Ok(HttpResponse::Ok().json(stored.to_json()))
}

/// `DELETE /projects/{id}`: the owner, or an owner or admin of the tenant.
async fn remove(ctx: Context, projects: web::Data<Projects>, id: web::Path<String>) -> Reply {
    let project = guarded(&projects, &ctx, &id, "projects:delete").await?;
    projects.rows().remove(&(ctx.tenant_id(), project.id));
    Ok(HttpResponse::NoContent().finish())
}

/// Loads a project of the caller's tenant (another tenant's is not found)
/// and checks `action` on it, with its owner as an attribute for the policy.
async fn guarded(
    projects: &Projects,
    ctx: &Context,
    id: &str,
    action: &str,
) -> Result<Project, Rejection> {
    let id: u64 = id.parse().map_err(|_| Problem::not_found())?;
    let project = projects
        .rows()
        .get(&(ctx.tenant_id(), id))
        .cloned()
        .ok_or_else(Problem::not_found)?;
    let owner = AttrKey::new("owner").map_err(|e| Problem::internal(&e))?;
    let resource = Resource::new("project")
        .with_id(project.id.to_string().as_str())
        .in_tenant(ctx.tenant_id())
        .with_attribute(owner, project.owner.as_str());
    ctx.authorize(action, &resource, None).await?;
    Ok(project)
}

/// The body's `name`: `{ "name": "…" }` and nothing else, 1 to 200
/// characters once trimmed.
fn valid_name(input: &Value) -> Result<String, Rejection> {
    let Some(fields) = input.as_object() else {
        return Err(Problem::invalid("body", "expected an object").into());
    };
    if let Some(unknown) = fields.keys().find(|key| *key != "name") {
        return Err(Problem::invalid(unknown.as_str(), "unknown field").into());
    }
    let Some(raw) = fields.get("name").and_then(Value::as_str) else {
        return Err(Problem::invalid("name", "a string is required").into());
    };
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(Problem::invalid(
            "name",
            "must be 1 to 200 characters, without control characters",
        )
        .into());
    }
    Ok(name.to_owned())
}

/// Seeds a tenant's default policy on first use: members may change and
/// delete the projects they created (owners and admins may anyway).
async fn seed_policy(tenancy: &Tenancy, tenant: TenantId) -> Result<(), Problem> {
    let store = tenancy.authz().policy_store();
    let current = store
        .list_policies(tenant)
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    if current
        .value
        .iter()
        .any(|p| p.id.as_str() == "own-projects")
    {
        return Ok(());
    }
    let document: PolicyDocument = serde_json::from_value(json!({
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
    match store
        .put_policy(tenant, &document, current.epoch, &AuditContext::system())
        .await
    {
        // Another request seeded it first: fine.
        Ok(_) | Err(AuthzStoreError::StaleEpoch { .. }) => {
            tenancy.authz().invalidate(tenant);
            Ok(())
        }
        Err(other) => Err(Problem::unavailable(&other)),
    }
}

async fn tenancy() -> Result<Tenancy, Box<dyn Error>> {
    let catalog = Catalog::new(PERMISSIONS)?;
    let auth = AuthConfig::new("http://127.0.0.1", "projects-example");
    // Plain http on localhost: cookies without `Secure`.
    let mut http = HttpConfig::default();
    http.cookies.secure = false;
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let pool = tenancy::postgres::sqlx::PgPool::connect(&url).await?;
        return Ok(Tenancy::postgres(pool, catalog, auth, http).await?);
    }
    Ok(Tenancy::in_memory(catalog, auth, http).await?)
}

async fn serve() -> Result<(), Box<dyn Error>> {
    let tenancy = tenancy().await?;
    let projects = web::Data::new(Projects::default());
    let limit = tenancy.config().body_limit;
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(projects.clone())
            // Bad JSON bodies answer problems, as on the SDK's routes.
            .app_data(json_config(limit))
            // The SDK's routes: register, login, API keys, members, audit…
            .configure(tenancy::actix::configure(tenancy.clone()))
            // The app's routes, behind the middleware. actix runs the
            // middleware registered last first: authentication, then the
            // route's permission, then the handler.
            .service(
                web::scope("/projects")
                    .service(
                        web::resource("")
                            .route(web::get().to(list).wrap(require("projects:read")))
                            .route(web::post().to(create).wrap(require("projects:create"))),
                    )
                    .service(
                        web::resource("/{id}")
                            .route(web::get().to(show))
                            .route(web::put().to(update))
                            .route(web::delete().to(remove)),
                    )
                    .wrap(TenancyMiddleware::new(tenancy.clone())),
            )
    })
    .bind(("127.0.0.1", port))?;
    for address in server.addrs() {
        println!("listening on http://{address}");
    }
    server.run().await?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    actix_web::rt::System::new().block_on(serve())
}
