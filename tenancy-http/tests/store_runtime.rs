//! `Tenancy::on_store_runtime`: which runtime a `Tenancy` takes as the one
//! holding its stores' connections, and what runs there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::StatusCode;
use tenancy_core::testkit::postgres::TestSchema;
use tenancy_http::Tenancy;
use tenancy_http::testkit::scenario_config;
use tokio::runtime::{Builder, Runtime};

const STORE_THREAD: &str = "tenancy-store";

fn store_runtime() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(STORE_THREAD)
        .enable_all()
        .build()
        .unwrap()
}

fn current_thread_runtime() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

fn thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned()
}

/// Memory stores built on `runtime`, with `store` as the store runtime.
fn memory_tenancy(runtime: &Runtime, store: Option<&Runtime>) -> Tenancy {
    runtime.block_on(async {
        let (catalog, auth, config) = scenario_config();
        let builder = Tenancy::builder(catalog, auth).http(config);
        let builder = match store {
            Some(store) => builder.store_runtime(store.handle().clone()),
            None => builder,
        };
        builder.build().await.unwrap()
    })
}

#[test]
fn memory_stores_run_their_work_in_place() {
    let runtime = store_runtime();
    let tenancy = memory_tenancy(&runtime, None);
    assert!(tenancy.store_runtime().is_none());
    let local = current_thread_runtime();
    let ran_on = local
        .block_on(tenancy.on_store_runtime(async { thread_name() }))
        .unwrap();
    assert_eq!(ran_on, thread_name());
}

#[test]
fn work_from_another_runtime_runs_on_the_store_runtime() {
    let store = store_runtime();
    let tenancy = memory_tenancy(&store, Some(&store));
    assert!(tenancy.store_runtime().is_some());

    // From a current-thread runtime (an actix-web worker): handed over.
    let local = current_thread_runtime();
    let ran_on = local
        .block_on(tenancy.on_store_runtime(async { thread_name() }))
        .unwrap();
    assert_eq!(ran_on, STORE_THREAD);

    // From a task of the store runtime itself: in place.
    let (caller, ran_on) = store
        .block_on(store.spawn({
            let tenancy = tenancy.clone();
            async move {
                let ran_on = tenancy
                    .on_store_runtime(async { thread_name() })
                    .await
                    .unwrap();
                (thread_name(), ran_on)
            }
        }))
        .unwrap();
    assert_eq!(caller, STORE_THREAD);
    assert_eq!(ran_on, STORE_THREAD);
}

#[test]
fn a_stopped_store_runtime_answers_unavailable() {
    let builder_runtime = current_thread_runtime();
    let store = store_runtime();
    let tenancy = memory_tenancy(&builder_runtime, Some(&store));
    store.shutdown_timeout(std::time::Duration::from_secs(5));
    let problem = builder_runtime
        .block_on(tenancy.on_store_runtime(async { 42 }))
        .unwrap_err();
    assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem.kind(), "urn:tenancy:problem:unavailable");
}

#[test]
fn a_panic_in_store_work_resumes_on_the_caller() {
    let store = store_runtime();
    let local = current_thread_runtime();
    let tenancy = memory_tenancy(&local, Some(&store));
    let outcome = local.block_on(async move {
        tokio::spawn(async move {
            tenancy
                .on_store_runtime(async { panic!("store work failed") })
                .await
        })
        .await
    });
    let payload = outcome.unwrap_err().into_panic();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"store work failed"));
}

#[test]
fn postgres_takes_the_multi_thread_runtime_it_was_built_on() {
    let store = store_runtime();
    let Some(schema) = store.block_on(TestSchema::create()) else {
        return;
    };
    let build = |runtime: &Runtime| {
        runtime.block_on(async {
            let (catalog, auth, config) = scenario_config();
            Tenancy::postgres(schema.pool.clone(), catalog, auth, config)
                .await
                .unwrap()
        })
    };
    let on_store = build(&store);
    assert!(on_store.store_runtime().is_some());
    let local = current_thread_runtime();
    let ran_on = local
        .block_on(on_store.on_store_runtime(async { thread_name() }))
        .unwrap();
    assert_eq!(ran_on, STORE_THREAD);

    // Built on a current-thread runtime, there is none to hand work to.
    let on_local = build(&local);
    assert!(on_local.store_runtime().is_none());
}
