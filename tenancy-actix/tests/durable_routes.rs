//! The webhook and provisioning modules' routes served by actix-web over
//! real HTTP on 127.0.0.1: `tenancy_actix::configure` mounts every module's routes
//! beside the SDK's, behind the module's permission, with another tenant's
//! endpoint and a non-operator's runs answered 404.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/shared/durable_routes.rs"]
mod durable;
mod serve;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_serves_the_webhook_and_provisioning_routes() {
    let (tenancy, operator) = durable::durable_app().await;
    let app = tenancy.clone();
    let address = serve::serve(move |config: &mut actix_web::web::ServiceConfig| {
        config.configure(tenancy_actix::configure(app.clone()));
    })
    .await;
    durable::run(&tenancy, operator, address).await;
}
