//! [`JobsModule`]: a worker started and stopped with the app built by
//! tenancy-http (feature `http`).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tenancy_http::{Module, Tenancy};

use crate::store::JobStore;
use crate::worker::{Worker, WorkerHandle, WorkerWaker};

/// Runs a [`Worker`] with the app: add it with `TenancyBuilder::module`.
/// The worker starts when the app is built; on Postgres the builder runs
/// this crate's migrations with the others and the shared `LISTEN`
/// connection wakes the worker when any replica enqueues;
/// [`Tenancy::shutdown`] lets running jobs finish for the grace period
/// (10 s by default) and releases the rest.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tenancy_http::{Tenancy, auth::AuthConfig, authz::Catalog};
/// use tenancy_jobs::{JobKind, JobStore, JobsModule, MemoryJobStore, NewJob, Worker, WorkerConfig, handler_fn};
///
/// let store: Arc<dyn JobStore> = Arc::new(MemoryJobStore::new());
/// let worker = Worker::new(store.clone(), WorkerConfig::default())
///     .handler(handler_fn(JobKind::new("report.build")?, |ctx| async move {
///         let _ = ctx.id(); // build the report, keyed by the job id
///         Ok(())
///     }));
/// let tenancy = Tenancy::builder(Catalog::new(["reports:read"])?, AuthConfig::new("https://app.example", "app"))
///     .module(JobsModule::new(store.clone(), worker))
///     .build()
///     .await?;
/// store.enqueue(NewJob::new(JobKind::new("report.build")?, serde_json::json!({}))?).await?;
/// tenancy.module::<JobsModule>().ok_or("no jobs module")?.wake();
/// tenancy.shutdown().await;
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
pub struct JobsModule {
    store: Arc<dyn JobStore>,
    worker: Mutex<Option<Worker>>,
    handle: Mutex<Option<WorkerHandle>>,
    waker: Arc<OnceLock<WorkerWaker>>,
    grace: Duration,
}

impl std::fmt::Debug for JobsModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobsModule")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl JobsModule {
    /// A module running `worker`, whose jobs live in `store` (the store the
    /// worker was built on).
    pub fn new(store: Arc<dyn JobStore>, worker: Worker) -> Self {
        Self {
            store,
            worker: Mutex::new(Some(worker)),
            handle: Mutex::new(None),
            waker: Arc::new(OnceLock::new()),
            grace: Duration::from_secs(10),
        }
    }

    /// How long [`Tenancy::shutdown`] lets running jobs finish.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The job store, to enqueue from route handlers and host code.
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    /// Makes the worker look for jobs now (after an enqueue in this
    /// process; other replicas' enqueues wake it through `LISTEN` on Postgres).
    pub fn wake(&self) {
        if let Some(waker) = self.waker.get() {
            waker.wake();
        }
    }
}

#[async_trait]
impl Module for JobsModule {
    fn name(&self) -> &'static str {
        "jobs"
    }

    #[cfg(feature = "postgres")]
    fn migrations(&self) -> Vec<tenancy_core::postgres::sqlx::migrate::Migrator> {
        vec![crate::postgres::migrator()]
    }

    #[cfg(feature = "postgres")]
    fn subscribe(&self, listener: &mut tenancy_core::postgres::Listener) {
        listener.subscribe(
            [crate::postgres::NOTIFY_CHANNEL],
            Arc::new(LateWaker(Arc::clone(&self.waker))),
        );
    }

    fn start(&self, _tenancy: &Tenancy) -> Vec<tokio::task::JoinHandle<()>> {
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(worker) = worker {
            let handle = worker.start();
            let _ = self.waker.set(handle.waker());
            *self.handle.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        }
        Vec::new()
    }

    async fn shutdown(&self) {
        let handle = self
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let report = handle.shutdown(self.grace).await;
            tracing::info!(?report, "job worker stopped");
        }
    }
}

/// Forwards `NOTIFY` to the worker once it has started.
#[cfg(feature = "postgres")]
struct LateWaker(Arc<OnceLock<WorkerWaker>>);

#[cfg(feature = "postgres")]
impl tenancy_core::postgres::Subscriber for LateWaker {
    fn notify(&self, _channel: &str, queue: &str) {
        if let Some(waker) = self.0.get()
            && waker.claims_from(queue)
        {
            waker.wake();
        }
    }

    fn resync(&self) {
        if let Some(waker) = self.0.get() {
            waker.wake();
        }
    }
}
