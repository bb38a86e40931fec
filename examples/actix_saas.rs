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
//! `DATABASE_URL`, tenancy and the projects table live in Postgres, the
//! table under tenancy's row-level security.
//!
//! The services are set up on a multi-thread Tokio runtime, which keeps the
//! database connections; actix-web's workers (each a runtime of its own)
//! hand every request's queries to it (`Tenancy::on_store_runtime`)
//! instead of driving sockets that belong to another runtime.

use std::error::Error;
use std::future::Future;

use tenancy::actix::actix_web::{self, App, HttpRequest, HttpResponse, HttpServer, web};
use tenancy::actix::{Context, Json, Rejection, TenancyMiddleware, require};
use tenancy::http::auth::AuthConfig;
use tenancy::http::authz::Catalog;
use tenancy::http::{HttpConfig, Problem, Tenancy};

#[path = "shared/metering.rs"]
mod metering;
#[path = "shared/projects.rs"]
mod projects;

use projects::{ProjectInput, Projects};

type Reply = Result<HttpResponse, Rejection>;

/// Runs a handler's queries on the runtime that holds the connections.
async fn on_store<T: Send + 'static>(
    ctx: &Context,
    work: impl Future<Output = Result<T, Problem>> + Send + 'static,
) -> Result<T, Rejection> {
    Ok(ctx.tenancy().on_store_runtime(work).await??)
}

/// `GET /projects?limit=&cursor=`, behind `require(projects:read)`: one
/// page, asked for and answered like the SDK's lists.
async fn list(ctx: Context, projects: web::Data<Projects>, req: HttpRequest) -> Reply {
    let page = tenancy::http::page_request(Some(req.query_string()))?;
    let (tenant, projects) = (ctx.tenant_id(), projects.into_inner());
    let page = on_store(&ctx, async move { projects.list(tenant, &page).await }).await?;
    Ok(HttpResponse::Ok().json(tenancy::http::page_json(&page)))
}

/// `POST /projects`, behind `require(projects:create)`.
async fn create(ctx: Context, projects: web::Data<Projects>, input: Json<ProjectInput>) -> Reply {
    let name = projects::valid_name(&input.name)?;
    let (context, projects) = (ctx.0.clone(), projects.into_inner());
    let project = on_store(&ctx, async move {
        projects::seed_policy(context.tenancy(), context.tenant_id()).await?;
        let owner = context.authz_principal().id().to_owned();
        projects.create(context.tenant_id(), name, owner).await
    })
    .await?;
    Ok(HttpResponse::Created().json(project))
}

/// `GET /projects/{id}`.
async fn show(ctx: Context, projects: web::Data<Projects>, id: web::Path<String>) -> Reply {
    let (context, projects) = (ctx.0.clone(), projects.into_inner());
    let project = on_store(&ctx, async move {
        projects.guarded(&context, &id, "projects:read").await
    })
    .await?;
    Ok(HttpResponse::Ok().json(project))
}

/// `PUT /projects/{id}`: the owner, or an owner or admin of the tenant.
async fn update(
    ctx: Context,
    projects: web::Data<Projects>,
    id: web::Path<String>,
    input: Json<ProjectInput>,
) -> Reply {
    let (context, projects) = (ctx.0.clone(), projects.into_inner());
    let renamed = on_store(&ctx, async move {
        let project = projects.guarded(&context, &id, "projects:update").await?;
        let name = projects::valid_name(&input.name)?;
        projects.rename(context.tenant_id(), project.id, name).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(renamed))
}

/// `DELETE /projects/{id}`: the owner, or an owner or admin of the tenant.
async fn remove(ctx: Context, projects: web::Data<Projects>, id: web::Path<String>) -> Reply {
    let (context, projects) = (ctx.0.clone(), projects.into_inner());
    on_store(&ctx, async move {
        let project = projects.guarded(&context, &id, "projects:delete").await?;
        projects.delete(context.tenant_id(), project.id).await
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

type Usage = tenancy_metering::http::MeteringModule;

async fn services() -> Result<(Tenancy, Projects, Usage), Box<dyn Error>> {
    let catalog = Catalog::new(projects::PERMISSIONS)?;
    let auth = AuthConfig::new("http://127.0.0.1", "projects-example");
    // Plain http on localhost: cookies without `Secure`.
    let mut http = HttpConfig::default();
    http.cookies.secure = false;
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let auth = auth.with_key_encryption(projects::key_encryption_from_env()?);
        let builder = Tenancy::builder(catalog, auth).http(http);
        let (builder, usage) = metering::with_metering(builder, Some(&url))?;
        let (tenancy, projects) = projects::on_postgres(builder, &url).await?;
        return Ok((tenancy, projects, usage));
    }
    let builder = projects::with_scim(Tenancy::builder(catalog, auth).http(http));
    let (builder, usage) = metering::with_metering(builder, None)?;
    Ok((builder.build().await?, Projects::memory(), usage))
}

async fn serve(services: (Tenancy, Projects, Usage)) -> Result<(), Box<dyn Error>> {
    let (tenancy, projects, usage) = services;
    // Every request to /projects counts one api_call (GET /usage).
    let count_calls = metering::count_calls(&usage)?;
    let projects = web::Data::new(projects);
    // Permissions are checked against the catalog here, at startup.
    let read = tenancy.permission("projects:read")?;
    let create_permission = tenancy.permission("projects:create")?;
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(projects.clone())
            // The SDK's routes: register, login, API keys, members, audit…
            .configure(tenancy::actix::configure(tenancy.clone()))
            // The app's routes, behind the middleware. actix runs the
            // middleware registered last first: authentication, then the
            // route's permission, then the handler.
            .service(
                web::scope("/projects")
                    .service(
                        web::resource("")
                            .route(web::get().to(list).wrap(require(read)))
                            .route(web::post().to(create).wrap(require(create_permission))),
                    )
                    .service(
                        web::resource("/{id}")
                            .route(web::get().to(show))
                            .route(web::put().to(update))
                            .route(web::delete().to(remove)),
                    )
                    .wrap(tenancy::actix::guard(count_calls.clone()))
                    .wrap(TenancyMiddleware::new(tenancy.clone())),
            )
            // Unknown paths answer a problem too.
            .default_service(web::to(tenancy::actix::not_found))
    })
    .bind(("127.0.0.1", port))?;
    for address in server.addrs() {
        println!("listening on http://{address}");
    }
    server.run().await?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    // The store runtime: tenancy, its pools and its background tasks live
    // here; it runs until main returns.
    let store_runtime = tokio::runtime::Runtime::new()?;
    let services = store_runtime.block_on(services())?;
    actix_web::rt::System::new().block_on(serve(services))
}
