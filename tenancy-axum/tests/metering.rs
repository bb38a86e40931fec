//! The metering HTTP scenarios against an axum app: the projects API
//! behind the metering guard, `/usage` among the SDK's routes.

#![allow(clippy::expect_used)] // test setup: failing to bind is a failed test

mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::Method;
use axum::response::IntoResponse;
use axum::routing::any;
use tenancy_axum::{Context, TenancyLayer};
use tenancy_http::Tenancy;
use tenancy_http::testkit::Projects;
use tenancy_metering::testkit::http::scenario_guard;

fn app(tenancy: Tenancy, projects: Arc<Projects>) -> Router {
    let list = move |ctx: Context, method: Method, body: Bytes| async move {
        let response = projects.handle(&ctx, &method, None, &body).await;
        response.map(axum::body::Body::from).into_response()
    };
    Router::new()
        .route("/projects", any(list))
        .layer(tenancy_axum::guard(scenario_guard(&tenancy)))
        .layer(TenancyLayer::new(tenancy.clone()))
        .merge(tenancy_axum::router(tenancy))
        .fallback(tenancy_axum::not_found)
}

fn start(
    tenancy: Tenancy,
    projects: Arc<Projects>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = SocketAddr> + Send>> {
    serve::serve(app(tenancy, projects))
}

tenancy_metering::metering_http_scenarios!(start);
