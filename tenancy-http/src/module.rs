//! [`Module`]: how an optional part of the SDK (billing, metering, jobs, …)
//! plugs into [`crate::TenancyBuilder`] without edits to the others.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;

use crate::pipeline::RequestContext;
use crate::problem::Problem;
use crate::routes::Route;
use crate::tenancy::Tenancy;

/// An optional part of the SDK, added with [`crate::TenancyBuilder::module`].
///
/// A module brings, each optional (every method has a default that does
/// nothing):
/// - its routes, mounted by the framework integrations beside the SDK's own
///   (their handlers find the module again with [`Tenancy::module`]);
/// - a pipeline step run on every authenticated request, after the tenant
///   and the caller are resolved;
/// - on Postgres, its migrations (run with the others, in version order)
///   and its channels on the one shared `LISTEN` connection;
/// - background tasks, started once the [`Tenancy`] is assembled and
///   stopped when its last clone is dropped.
/// - readiness checks, run by `GET /ready` beside the SDK's own.
#[async_trait]
pub trait Module: Any + Send + Sync {
    /// A short name, for logs and errors (`billing`, `metering`).
    fn name(&self) -> &'static str;

    /// The routes this module serves.
    fn routes(&self) -> Vec<Route> {
        Vec::new()
    }

    /// Whether [`Module::on_request`] does anything: when no module says
    /// so, the pipeline skips the step entirely.
    fn has_request_step(&self) -> bool {
        false
    }

    /// Runs on every authenticated request (SDK routes and the host's own
    /// behind the middleware); a problem answers the request instead of its
    /// handler. Keep it cheap: it is on the hot path.
    async fn on_request(&self, context: &RequestContext) -> Result<(), Problem> {
        let _ = context;
        Ok(())
    }

    /// The tenants' seats, if this module decides them: invitations past
    /// the limit are refused (`422 limit-exceeded`), and it hears of
    /// member changes. The first module answering one is used.
    fn seats(&self) -> Option<Arc<dyn tenancy_core::Seats>> {
        None
    }

    /// Public keys this module signs with (JWKs), published beside the
    /// access-token keys at `/.well-known/jwks.json`: the OIDC provider's
    /// ID-token keys.
    async fn public_keys(&self) -> Result<Vec<serde_json::Value>, Problem> {
        Ok(Vec::new())
    }

    /// A check asked before every password login (and tenant switch)
    /// whether the tenant accepts passwords: single sign-on can refuse them.
    /// The first module answering one is used.
    fn password_login_check(&self) -> Option<Arc<dyn tenancy_auth::PasswordLoginCheck>> {
        None
    }

    /// What `GET /ready` should ask about this module's dependencies (a
    /// broker, a Redis): each named in the answer.
    fn readiness_checks(&self) -> Vec<Arc<dyn crate::ReadinessCheck>> {
        Vec::new()
    }

    /// This module's migrations (in a version range of its own).
    #[cfg(feature = "postgres")]
    fn migrations(&self) -> Vec<tenancy_core::postgres::sqlx::migrate::Migrator> {
        Vec::new()
    }

    /// Registers this module's channels on the shared listener.
    #[cfg(feature = "postgres")]
    fn subscribe(&self, listener: &mut tenancy_core::postgres::Listener) {
        let _ = listener;
    }

    /// Starts this module's background tasks. They are aborted when the
    /// [`Tenancy`] is dropped; a task should hold what it needs (stores,
    /// services), not a clone of the `Tenancy`, which would keep it alive.
    fn start(&self, tenancy: &Tenancy) -> Vec<tokio::task::JoinHandle<()>> {
        let _ = tenancy;
        Vec::new()
    }

    /// Finishes what must not be lost when the process stops (flush
    /// buffered work); called by [`Tenancy::shutdown`].
    async fn shutdown(&self) {}
}

/// A registered module, held twice: as the trait the builder and the
/// pipeline call, and as `Any` for [`Tenancy::module`].
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) module: Arc<dyn Module>,
    pub(crate) any: Arc<dyn Any + Send + Sync>,
}

impl Registered {
    pub(crate) fn new<M: Module>(module: M) -> Self {
        let module = Arc::new(module);
        Self {
            any: module.clone(),
            module,
        }
    }
}

impl Tenancy {
    /// The module of type `M` added to the builder, if any: how a module's
    /// route handlers and host code reach its services.
    pub fn module<M: Module>(&self) -> Option<&M> {
        self.modules()
            .iter()
            .find_map(|registered| registered.any.downcast_ref::<M>())
    }

    /// Every route to mount: the SDK's own ([`crate::routes`]) and those of
    /// the modules added to the builder.
    pub fn routes(&self) -> Vec<Route> {
        let mut routes = crate::routes::routes();
        for registered in self.modules() {
            routes.extend(registered.module.routes());
        }
        routes
    }

    /// Runs the modules' request steps, in the order they were added.
    pub(crate) async fn module_steps(&self, context: &RequestContext) -> Result<(), Problem> {
        if !self.has_request_steps() {
            return Ok(());
        }
        for registered in self.modules() {
            if registered.module.has_request_step() {
                registered.module.on_request(context).await?;
            }
        }
        Ok(())
    }
}
