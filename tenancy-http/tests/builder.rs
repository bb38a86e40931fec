//! What the builder starts and stops: the retention purge, modules'
//! shutdown work, and the background tasks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tenancy_http::auth::testkit::InstrumentedStore;
use tenancy_http::auth::{Argon2Config, AuthConfig, MemoryAuthStore};
use tenancy_http::authz::{Catalog, MemoryAuthzStore};
use tenancy_http::core::{Backend, MemoryBackend};
use tenancy_http::{Module, Stores, Tenancy, TenancyBuilder};

fn builder(store: &InstrumentedStore) -> TenancyBuilder {
    let mut auth = AuthConfig::new("https://builder.test", "builder");
    auth.argon2 = Argon2Config::new(1024, 1, 1);
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let authz = Arc::new(MemoryAuthzStore::new(backend.clone()));
    Tenancy::builder(Catalog::new(["projects:read"]).unwrap(), auth).stores(Stores::new(
        backend,
        Arc::new(store.clone()),
        authz.clone(),
        authz,
    ))
}

fn instrumented() -> InstrumentedStore {
    InstrumentedStore::new(Arc::new(MemoryAuthStore::new()))
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(120)).await;
}

#[tokio::test]
async fn the_purge_runs_at_start_and_on_its_interval_until_shutdown() {
    let store = instrumented();
    let tenancy = builder(&store)
        .purge_every(Some(Duration::from_millis(20)))
        .build()
        .await
        .unwrap();
    settle().await;
    let purged = store.calls("purge_sessions");
    assert!(purged >= 2, "purged {purged} times");
    assert_eq!(store.calls("purge_one_time_tokens"), purged);
    tenancy.shutdown().await;
    let after = store.calls("purge_sessions");
    settle().await;
    assert_eq!(
        store.calls("purge_sessions"),
        after,
        "the purge outlived shutdown"
    );
}

#[tokio::test]
async fn no_purge_when_turned_off() {
    let store = instrumented();
    let tenancy = builder(&store).purge_every(None).build().await.unwrap();
    settle().await;
    assert_eq!(store.calls("purge_sessions"), 0);
    drop(tenancy);
}

#[tokio::test]
async fn a_failing_purge_is_retried_on_the_next_tick() {
    let store = instrumented();
    store.fail_next("purge_sessions");
    let _tenancy = builder(&store)
        .purge_every(Some(Duration::from_millis(20)))
        .build()
        .await
        .unwrap();
    settle().await;
    assert!(store.calls("purge_sessions") >= 2);
}

struct Flusher(Arc<AtomicBool>);

#[async_trait]
impl Module for Flusher {
    fn name(&self) -> &'static str {
        "flusher"
    }

    async fn shutdown(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn shutdown_lets_modules_finish_their_work() {
    let flushed = Arc::new(AtomicBool::new(false));
    let tenancy = builder(&instrumented())
        .module(Flusher(flushed.clone()))
        .build()
        .await
        .unwrap();
    assert!(!flushed.load(Ordering::SeqCst));
    tenancy.shutdown().await;
    assert!(flushed.load(Ordering::SeqCst));
}
