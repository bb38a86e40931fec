//! The worker as a tenancy-http module: started with the app, woken by
//! enqueues (on Postgres through the shared `LISTEN` connection, from
//! another process's pool), stopped by `Tenancy::shutdown`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use tenancy_http::auth::AuthConfig;
use tenancy_http::authz::Catalog;
use tenancy_http::{Tenancy, TenancyBuilder};
use tenancy_jobs::{
    JobKind, JobState, JobStore, JobsModule, NewJob, Worker, WorkerConfig, handler_fn,
};

fn builder() -> TenancyBuilder {
    let mut auth = AuthConfig::new("https://app.example", "app");
    auth.key_encryption = tenancy_http::auth::KeyEncryption::key(
        tenancy_http::auth::KeyEncryptionKey::new("jobs-test", [7; 32]).unwrap(),
    );
    Tenancy::builder(Catalog::new(["reports:read"]).unwrap(), auth)
}

/// A worker that polls only every minute: a job started sooner was woken.
fn worker(store: Arc<dyn JobStore>, ran: tokio::sync::mpsc::UnboundedSender<u64>) -> Worker {
    Worker::new(
        store,
        WorkerConfig::default().with_poll_interval(Duration::from_secs(60)),
    )
    .handler(handler_fn(
        JobKind::new("report.build").unwrap(),
        move |ctx| {
            let ran = ran.clone();
            async move {
                let n: u64 = ctx.payload()?;
                let _ = ran.send(n);
                Ok(())
            }
        },
    ))
}

async fn until_succeeded(store: &Arc<dyn JobStore>, id: tenancy_jobs::JobId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.get(id).await.unwrap().state != JobState::Succeeded {
        assert!(tokio::time::Instant::now() < deadline, "job never finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_runs_jobs_in_memory() {
    let store: Arc<dyn JobStore> = Arc::new(tenancy_jobs::MemoryJobStore::new());
    let (sent, mut ran) = tokio::sync::mpsc::unbounded_channel();
    let tenancy = builder()
        .module(JobsModule::new(store.clone(), worker(store.clone(), sent)))
        .build()
        .await
        .unwrap();
    let module = tenancy.module::<JobsModule>().unwrap();
    let job = NewJob::new(JobKind::new("report.build").unwrap(), serde_json::json!(7)).unwrap();
    let id = module.store().enqueue(job).await.unwrap().id();
    module.wake();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), ran.recv())
            .await
            .unwrap(),
        Some(7)
    );
    until_succeeded(&store, id).await;
    tenancy.shutdown().await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_builder_migrates_and_notify_wakes_the_worker() {
    use tenancy_core::testkit::postgres::TestSchema;
    use tenancy_jobs::postgres::PgJobStore;

    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store: Arc<dyn JobStore> = Arc::new(PgJobStore::new(schema.pool.clone()));
    let (sent, mut ran) = tokio::sync::mpsc::unbounded_channel();
    let tenancy = builder()
        .postgres(schema.pool.clone())
        .module(JobsModule::new(store.clone(), worker(store.clone(), sent)))
        .build()
        .await
        .unwrap();

    // Another replica's pool enqueues; nothing here calls wake().
    let other = schema.pool_as(&schema.url, 2).await;
    let job = NewJob::new(JobKind::new("report.build").unwrap(), serde_json::json!(9)).unwrap();
    let id = PgJobStore::new(other).enqueue(job).await.unwrap().id();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), ran.recv())
            .await
            .unwrap(),
        Some(9),
        "the worker polls every minute: only NOTIFY could start the job this soon"
    );
    until_succeeded(&store, id).await;
    tenancy.shutdown().await;
}
