//! The webhook and provisioning modules' routes served by axum over real
//! HTTP on 127.0.0.1: `tenancy_axum::router` mounts every module's routes
//! beside the SDK's, behind the module's permission, with another tenant's
//! endpoint and a non-operator's runs answered 404.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/shared/durable_routes.rs"]
mod durable;
mod serve;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_serves_the_webhook_and_provisioning_routes() {
    let (tenancy, operator) = durable::durable_app().await;
    let address =
        serve::serve(tenancy_axum::router(tenancy.clone()).fallback(tenancy_axum::not_found)).await;
    durable::run(&tenancy, operator, address).await;
}
