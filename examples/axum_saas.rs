//! A small multi-tenant "projects" API on axum, protected by tenancy:
//! accounts, tenants, members, API keys and audit from the SDK's routes,
//! and the app's own `/projects` routes behind its middleware.
//!
//! ```text
//! cargo run --example axum_saas --features axum
//! DATABASE_URL=postgres://… cargo run --example axum_saas --features axum,postgres
//! ```
//!
//! Members may read and create projects; they may change and delete only
//! the projects they created (an ABAC policy each tenant gets on first use);
//! owners and admins may do everything. See the README for a curl
//! walk-through.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::handler::Handler as _;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::Value;
use tenancy::axum::{Context, Json, Rejection, TenancyLayer, require};
use tenancy::http::auth::AuthConfig;
use tenancy::http::authz::Catalog;
use tenancy::http::{HttpConfig, Tenancy};

#[path = "shared/metering.rs"]
mod metering;
#[path = "shared/projects.rs"]
mod projects;

use projects::{Project, ProjectInput, Projects};

#[derive(Clone)]
struct App {
    projects: Arc<Projects>,
}

type Reply<T> = Result<T, Rejection>;

/// `GET /projects?limit=&cursor=`, behind `require(projects:read)`: one
/// page, asked for and answered like the SDK's lists.
async fn list(
    State(app): State<App>,
    ctx: Context,
    RawQuery(query): RawQuery,
) -> Reply<Json<Value>> {
    let page = tenancy::http::page_request(query.as_deref())?;
    let page = app.projects.list(ctx.tenant_id(), &page).await?;
    Ok(Json(tenancy::http::page_json(&page)))
}

/// `POST /projects`, behind `require(projects:create)`: the permission is
/// checked before the body is read.
async fn create(
    State(app): State<App>,
    ctx: Context,
    Json(input): Json<ProjectInput>,
) -> Reply<(StatusCode, Json<Project>)> {
    let name = projects::valid_name(&input.name)?;
    projects::seed_policy(ctx.tenancy(), ctx.tenant_id()).await?;
    let owner = ctx.authz_principal().id().to_owned();
    let project = app.projects.create(ctx.tenant_id(), name, owner).await?;
    Ok((StatusCode::CREATED, Json(project)))
}

async fn show(
    State(app): State<App>,
    ctx: Context,
    Path(id): Path<String>,
) -> Reply<Json<Project>> {
    Ok(Json(
        app.projects.guarded(&ctx, &id, "projects:read").await?,
    ))
}

async fn update(
    State(app): State<App>,
    ctx: Context,
    Path(id): Path<String>,
    Json(input): Json<ProjectInput>,
) -> Reply<Json<Project>> {
    let project = app.projects.guarded(&ctx, &id, "projects:update").await?;
    let name = projects::valid_name(&input.name)?;
    Ok(Json(
        app.projects
            .rename(ctx.tenant_id(), project.id, name)
            .await?,
    ))
}

async fn remove(State(app): State<App>, ctx: Context, Path(id): Path<String>) -> Reply<StatusCode> {
    let project = app.projects.guarded(&ctx, &id, "projects:delete").await?;
    app.projects.delete(ctx.tenant_id(), project.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let catalog = Catalog::new(projects::PERMISSIONS)?;
    let auth = AuthConfig::new("http://127.0.0.1", "projects-example");
    // Plain http on localhost: cookies without `Secure`.
    let mut http = HttpConfig::default();
    http.cookies.secure = false;
    let database_url = std::env::var("DATABASE_URL").ok();
    let (tenancy, projects, usage) = match database_url {
        #[cfg(feature = "postgres")]
        Some(url) => {
            let auth = auth.with_key_encryption(projects::key_encryption_from_env()?);
            let builder = Tenancy::builder(catalog, auth).http(http);
            let (builder, usage) = metering::with_metering(builder, Some(&url))?;
            let (tenancy, projects) = projects::on_postgres(builder, &url).await?;
            (tenancy, projects, usage)
        }
        _ => {
            let builder = projects::with_scim(Tenancy::builder(catalog, auth).http(http));
            let (builder, usage) = metering::with_metering(builder, None)?;
            (builder.build().await?, Projects::memory(), usage)
        }
    };
    let app = App {
        projects: Arc::new(projects),
    };
    // Permissions are checked against the catalog here, at startup.
    let read = tenancy.permission("projects:read")?;
    let create = tenancy.permission("projects:create")?;
    let router = Router::new()
        .route(
            "/projects",
            get(list.layer(require(read))).post(self::create.layer(require(create))),
        )
        .route("/projects/{id}", get(show).put(update).delete(remove))
        // Every request to /projects counts one api_call (GET /usage).
        .route_layer(tenancy::axum::guard(metering::count_calls(&usage)?))
        .layer(TenancyLayer::new(tenancy.clone()))
        .with_state(app)
        .merge(tenancy::axum::router(tenancy))
        // Unknown paths answer a problem too.
        .fallback(tenancy::axum::not_found);
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
