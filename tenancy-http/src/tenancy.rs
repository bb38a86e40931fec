//! [`Tenancy`]: everything the HTTP surface needs, in one cheap-to-clone value.

use std::sync::{Arc, Mutex, PoisonError};

use tenancy_auth::Auth;
use tenancy_authz::{AuthzAdmin, AuthzStoreError, PolicyCache, PolicyDocument};
use tenancy_core::{AuditContext, CachingStore, Directory, TenantId};
use tokio::runtime::RuntimeFlavor;

use crate::config::HttpConfig;
use crate::module::Registered;

/// The services behind the routes and the middleware: identity
/// ([`Auth`], which also holds the [`Directory`]), authorization
/// ([`PolicyCache`], [`AuthzAdmin`]), the cached tenant and membership reads
/// of the pipeline, the optional modules and the HTTP settings. Assemble it
/// with [`Tenancy::builder`]; cheap to clone.
#[derive(Clone)]
pub struct Tenancy {
    inner: Arc<Inner>,
}

struct Inner {
    auth: Auth,
    authz: Arc<PolicyCache>,
    admin: AuthzAdmin,
    directory_cache: Arc<CachingStore>,
    principals: crate::pipeline::PrincipalCache,
    config: HttpConfig,
    modules: Vec<Registered>,
    request_steps: bool,
    idempotency: Option<crate::idempotency::Idempotency>,
    readiness: crate::health::Readiness,
    background: Mutex<Background>,
    store_runtime: Option<tokio::runtime::Handle>,
}

/// What runs behind the services (the shared listener, periodic syncs,
/// modules' tasks); stopped when the last clone of the [`Tenancy`] goes.
#[derive(Default)]
pub(crate) struct Background {
    #[cfg(feature = "postgres")]
    pub(crate) listener: Option<tenancy_core::postgres::RunningListener>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenancy")
            .field("config", &self.inner.config)
            .field(
                "modules",
                &self
                    .inner
                    .modules
                    .iter()
                    .map(|m| m.module.name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Tenancy {
    #[allow(clippy::too_many_arguments)] // each part built apart by the builder
    pub(crate) fn assemble(
        auth: Auth,
        authz: Arc<PolicyCache>,
        admin: AuthzAdmin,
        directory_cache: Arc<CachingStore>,
        config: HttpConfig,
        modules: Vec<Registered>,
        background: Background,
        idempotency: Option<crate::idempotency::Idempotency>,
        readiness: crate::health::Readiness,
        store_runtime: Option<tokio::runtime::Handle>,
    ) -> Self {
        let request_steps = modules.iter().any(|m| m.module.has_request_step());
        Self {
            inner: Arc::new(Inner {
                admin,
                auth,
                authz,
                principals: crate::pipeline::PrincipalCache::new(directory_cache.config()),
                directory_cache,
                config,
                modules,
                request_steps,
                idempotency,
                readiness,
                background: Mutex::new(background),
                store_runtime,
            }),
        }
    }

    /// The multi-thread Tokio runtime that drives the stores' connections
    /// ([`TenancyBuilder::store_runtime`](crate::TenancyBuilder::store_runtime);
    /// on Postgres by default the runtime it was built on, if a multi-thread
    /// one). `None` for memory stores, or when built on a current-thread
    /// runtime (such as actix-web's `System`).
    pub fn store_runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.inner.store_runtime.as_ref()
    }

    /// Runs `work` on [`Self::store_runtime`] when called from elsewhere (a
    /// current-thread runtime such as an actix-web worker, or no runtime),
    /// and in place otherwise.
    ///
    /// Why: a Tokio socket is driven by the runtime that opened it. A
    /// sqlx connection opened on one runtime and used from an actix-web
    /// worker (each worker is a runtime of its own) waits, at every round
    /// trip, for that other runtime's thread to notice its reply and wake
    /// the worker; under load the workers stall on each other and the CPU
    /// idles. Built on a multi-thread runtime, the `Tenancy` keeps its
    /// connections there, and the actix integration hands each request's
    /// store work (authentication, permission checks, guards, the SDK's
    /// routes, idempotency records) to it through this method. Use it
    /// for your own handlers' queries on a pool opened on that runtime.
    ///
    /// # Errors
    ///
    /// `503` ([`ProblemKind::Unavailable`](crate::ProblemKind)) when the
    /// store runtime has shut down. A panic in `work` resumes on the caller,
    /// as it would have in place.
    ///
    /// ```
    /// # async fn run(tenancy: tenancy_http::Tenancy) -> Result<(), tenancy_http::Problem> {
    /// let answer = tenancy.on_store_runtime(async { 6 * 7 }).await?;
    /// assert_eq!(answer, 42);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn on_store_runtime<F>(&self, work: F) -> Result<F::Output, crate::Problem>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let Some(store_runtime) = self.dispatch_target() else {
            return Ok(work.await);
        };
        match store_runtime.spawn(work).await {
            Ok(output) => Ok(output),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(crate::Problem::unavailable(&error)),
        }
    }

    /// The store runtime, when the caller is not already on a multi-thread
    /// runtime (Tokio cannot tell two runtimes apart on stable, so a
    /// multi-thread caller is taken to be on the store runtime).
    fn dispatch_target(&self) -> Option<&tokio::runtime::Handle> {
        let store_runtime = self.inner.store_runtime.as_ref()?;
        match tokio::runtime::Handle::try_current() {
            Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => None,
            _ => Some(store_runtime),
        }
    }

    /// Hands background tasks to the `Tenancy`, which aborts them when dropped.
    pub(crate) fn adopt_tasks(&self, tasks: Vec<tokio::task::JoinHandle<()>>) {
        self.inner
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tasks
            .extend(tasks);
    }

    /// Stops cleanly, once the server has stopped taking requests: each
    /// module finishes its work ([`crate::Module::shutdown`], such as
    /// flushing buffered usage), queued mail is delivered, and the
    /// background tasks (listener, syncs, purges, modules' tasks) stop.
    /// Dropping every clone stops the tasks too, but without the first two.
    pub async fn shutdown(&self) {
        for registered in self.modules() {
            registered.module.shutdown().await;
        }
        self.inner.auth.wait_for_mail().await;
        let mut background = self
            .inner
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *background = Background::default();
    }

    pub(crate) fn modules(&self) -> &[Registered] {
        &self.inner.modules
    }

    pub(crate) fn has_request_steps(&self) -> bool {
        self.inner.request_steps
    }

    /// Idempotent requests, when the builder enabled them
    /// ([`crate::TenancyBuilder::idempotency`]): what the framework layers
    /// covering the host's routes take.
    pub fn idempotency(&self) -> Option<&crate::idempotency::Idempotency> {
        self.inner.idempotency.as_ref()
    }

    /// The checks `GET /ready` runs.
    pub(crate) fn readiness(&self) -> &crate::health::Readiness {
        &self.inner.readiness
    }

    /// Identity.
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// Tenants, members and invitations.
    pub fn directory(&self) -> &Directory {
        self.inner.auth.directory()
    }

    /// Compiled per-tenant authorizers.
    pub fn authz(&self) -> &Arc<PolicyCache> {
        &self.inner.authz
    }

    /// Role and policy changes with escalation checks.
    pub fn authz_admin(&self) -> &AuthzAdmin {
        &self.inner.admin
    }

    /// The HTTP settings.
    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    /// Members as the authorization engine sees them, by membership.
    pub(crate) fn principals(&self) -> &crate::pipeline::PrincipalCache {
        &self.inner.principals
    }

    /// The tenant and membership reads of the pipeline, cached; changes
    /// made through it are forgotten at once.
    pub fn directory_cache(&self) -> &Arc<CachingStore> {
        &self.inner.directory_cache
    }

    /// Adds `policy` to `tenant`'s policies unless one with its id exists,
    /// and says whether it did: for the defaults a host gives every tenant
    /// (at sign-up, or on first use). Concurrent callers add it once; a
    /// policy of that id the tenant has since edited is left as it is.
    /// Written straight to the store, without escalation checks: this is
    /// the host acting, not a member.
    pub async fn seed_policy(
        &self,
        tenant: TenantId,
        policy: &PolicyDocument,
        audit: &AuditContext,
    ) -> Result<bool, AuthzStoreError> {
        const ATTEMPTS: usize = 5;
        let store = self.authz().policy_store();
        let mut attempt = 1;
        loop {
            let current = store.list_policies(tenant).await?;
            if current.value.iter().any(|p| p.id == policy.id) {
                return Ok(false);
            }
            match store.put_policy(tenant, policy, current.epoch, audit).await {
                Ok(_) => {
                    self.authz().invalidate(tenant);
                    return Ok(true);
                }
                // Another change came first: look again.
                Err(AuthzStoreError::StaleEpoch { .. }) if attempt < ATTEMPTS => attempt += 1,
                Err(other) => return Err(other),
            }
        }
    }
}
