//! [`ProvisioningModule`]: the provisioner as a tenancy-http module
//! (feature `http`), with its operator routes and its workers.
//!
//! # Routes and who may call them
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /provisioning` `{"pipeline": "…", "input": {…}}` | `202` and the run |
//! | `GET /provisioning?status=failed&limit=…&cursor=…` | `200`, a page of runs oldest first (`items`, `next_cursor`); `status` optional |
//! | `GET /provisioning/{id}` | `200` and the run with its steps |
//! | `POST /provisioning/{id}/cancel` | `202` and the run (`409` once it succeeded) |
//! | `POST /provisioning/{id}/retry` | `202` and the run (`409` unless it failed) |
//!
//! No tenant exists yet when a run starts, so these are operator routes:
//! the caller must act in the *operator tenant* the module was given (the
//! host's own staff tenant) and hold [`PROVISIONING_MANAGE`] there, for
//! example through an API key of that tenant scoped to it. Callers in any
//! other tenant get `404`, as for a resource of another tenant. Declare
//! [`PROVISIONING_MANAGE`] in the app's permission catalog.
//!
//! The operator tenant is pinned by its [`TenantId`], never by its slug:
//! anyone may register a tenant through the public sign-up and pick or
//! change its slug, so a slug would let them claim the operator's.
//!
//! A run's input and state are shown to the operator as stored: put no
//! secrets in the input (steps never put any in the state).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use tenancy_core::TenantId;
use tenancy_http::http::{Response, StatusCode};
use tenancy_http::{Access, ApiRequest, Module, Problem, RequestContext, Route, Tenancy, route};

use crate::model::{RunId, RunStatus};
use crate::runner::{ProvisionError, Provisioner};
use crate::store::ProvisioningStoreError;

/// The permission the provisioning routes require, in the operator tenant.
pub const PROVISIONING_MANAGE: &str = "provisioning:manage";

/// Builds the provisioner once the app is assembled, so its steps can use
/// the app's directory, auth and mailer.
pub type BuildProvisioner =
    dyn Fn(&Tenancy) -> Result<Provisioner, ProvisionError> + Send + Sync + 'static;

/// Provisioning as a [`tenancy_http::Module`]: add it with
/// `TenancyBuilder::module`. On start it builds the [`Provisioner`] from
/// the assembled app and spawns its workers (stopped with the app); its
/// routes are listed in the [module docs](self); on Postgres its
/// migrations run with the others.
///
/// ```no_run
/// # async fn demo(builder: tenancy_http::TenancyBuilder) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tenancy_core::TenantId;
/// use tenancy_http::Tenancy;
/// use tenancy_provisioning::http::ProvisioningModule;
/// use tenancy_provisioning::steps::{CreateTenant, WelcomeMail};
/// use tenancy_provisioning::{MemoryProvisioningStore, Pipeline, Provisioner};
///
/// // The app's catalog declares `provisioning:manage`; staff call the
/// // routes with a key of their own tenant, whose id the host keeps in
/// // its configuration.
/// let ops: TenantId = "0192e4a0-7b1c-7cc3-9f4e-1b2c3d4e5f60".parse()?;
/// let module = ProvisioningModule::new(ops, |app: &Tenancy| {
///     Provisioner::new(Arc::new(MemoryProvisioningStore::new())).with_pipeline(
///         Pipeline::new("signup")
///             .step(CreateTenant::new(app.directory().clone()))
///             .step(WelcomeMail::new(app.auth().clone())),
///     )
/// })
/// .workers(2);
/// let app = builder.module(module).build().await?;
/// let provisioner = app.module::<ProvisioningModule>().and_then(ProvisioningModule::provisioner);
/// # let _ = provisioner; Ok(()) }
/// ```
pub struct ProvisioningModule {
    operator: TenantId,
    build: Arc<BuildProvisioner>,
    workers: usize,
    provisioner: Arc<OnceLock<Provisioner>>,
}

impl std::fmt::Debug for ProvisioningModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisioningModule")
            .field("operator", &self.operator)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl ProvisioningModule {
    /// A module whose routes answer callers of the tenant `operator` (see
    /// the module docs), with the provisioner `build` makes from the app
    /// and one worker.
    pub fn new(
        operator: TenantId,
        build: impl Fn(&Tenancy) -> Result<Provisioner, ProvisionError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            operator,
            build: Arc::new(build),
            workers: 1,
            provisioner: Arc::new(OnceLock::new()),
        }
    }

    /// Runs `workers` workers in this process (0: none; another process
    /// works the runs).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The operator tenant whose callers the routes answer.
    pub fn operator(&self) -> TenantId {
        self.operator
    }

    /// The provisioner, once the app is built.
    pub fn provisioner(&self) -> Option<&Provisioner> {
        self.provisioner.get()
    }
}

#[tenancy_http::async_trait]
impl Module for ProvisioningModule {
    fn name(&self) -> &'static str {
        "provisioning"
    }

    fn routes(&self) -> Vec<Route> {
        vec![
            route!(POST "/provisioning", Access::Permission(PROVISIONING_MANAGE), start),
            route!(GET "/provisioning", Access::Permission(PROVISIONING_MANAGE), list),
            route!(GET "/provisioning/{id}", Access::Permission(PROVISIONING_MANAGE), status),
            route!(POST "/provisioning/{id}/cancel", Access::Permission(PROVISIONING_MANAGE), cancel),
            route!(POST "/provisioning/{id}/retry", Access::Permission(PROVISIONING_MANAGE), retry),
        ]
    }

    #[cfg(feature = "postgres")]
    fn migrations(&self) -> Vec<tenancy_core::postgres::sqlx::migrate::Migrator> {
        vec![crate::postgres::migrator()]
    }

    fn start(&self, tenancy: &Tenancy) -> Vec<tokio::task::JoinHandle<()>> {
        let provisioner = match (self.build)(tenancy) {
            Ok(p) => p,
            Err(error) => {
                tracing::error!(%error, "the provisioner is not started");
                return Vec::new();
            }
        };
        let provisioner = self.provisioner.get_or_init(|| provisioner);
        (0..self.workers)
            .map(|_| provisioner.spawn_worker())
            .collect()
    }
}

async fn operator<'a>(
    t: &'a Tenancy,
    c: Option<&RequestContext>,
) -> Result<&'a Provisioner, Problem> {
    let module = t.module::<ProvisioningModule>().ok_or_else(|| {
        Problem::internal(&Problem::bad_request(
            "the provisioning module is not registered",
        ))
    })?;
    let context =
        c.ok_or_else(|| Problem::internal(&Problem::bad_request("route ran without its context")))?;
    // Only the operator tenant may see runs; to anyone else they do not
    // exist. Compared by id: a slug can be taken or changed by anyone.
    if context.tenant_id() != module.operator {
        return Err(Problem::not_found());
    }
    module.provisioner().ok_or_else(|| {
        Problem::unavailable(&Problem::bad_request("the provisioner is not started"))
    })
}

fn problem(error: ProvisionError) -> Problem {
    match error {
        ProvisionError::Store(ProvisioningStoreError::NotFound) => Problem::not_found(),
        ProvisionError::Store(e @ ProvisioningStoreError::InvalidTransition { .. }) => {
            Problem::conflict(e.to_string())
        }
        ProvisionError::UnknownPipeline(_) => {
            Problem::invalid("pipeline", "no pipeline of this name")
        }
        ProvisionError::Store(e @ ProvisioningStoreError::Store(_)) => Problem::unavailable(&e),
        other => Problem::internal(&other),
    }
}

fn run_id(r: &ApiRequest) -> Result<RunId, Problem> {
    r.param("id")?.parse().map_err(|_| Problem::not_found())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    pipeline: String,
    input: Value,
}

async fn start(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let provisioner = operator(t, c).await?;
    let body: StartBody = r.json(64 * 1024)?;
    if !body.input.is_object() {
        return Err(Problem::invalid("input", "expected an object"));
    }
    let run = provisioner
        .start(&body.pipeline, body.input)
        .await
        .map_err(problem)?;
    tenancy_http::json(StatusCode::ACCEPTED, &run)
}

async fn list(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let provisioner = operator(t, c).await?;
    let status = r
        .query("status")
        .map(|s| {
            s.parse::<RunStatus>().map_err(|_| {
                Problem::invalid(
                    "status",
                    "expected pending, running, succeeded, failed, cancelling or cancelled",
                )
            })
        })
        .transpose()?;
    let page = tenancy_http::page_request(r.uri.query())?;
    let runs = provisioner.list(status, &page).await.map_err(|e| match e {
        ProvisionError::Store(ProvisioningStoreError::Store(
            tenancy_core::StoreError::InvalidInput(_),
        )) => Problem::invalid("cursor", "not a cursor of this list"),
        other => problem(other),
    })?;
    tenancy_http::json(StatusCode::OK, &tenancy_http::page_json(&runs))
}

async fn status(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let provisioner = operator(t, c).await?;
    let run = provisioner.status(run_id(r)?).await.map_err(problem)?;
    tenancy_http::json(StatusCode::OK, &run)
}

async fn cancel(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let provisioner = operator(t, c).await?;
    let run = provisioner.cancel(run_id(r)?).await.map_err(problem)?;
    tenancy_http::json(StatusCode::ACCEPTED, &run)
}

async fn retry(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let provisioner = operator(t, c).await?;
    let run = provisioner.retry(run_id(r)?).await.map_err(problem)?;
    tenancy_http::json(StatusCode::ACCEPTED, &run)
}
