//! The idempotency and health scenarios against an axum app: the SDK's
//! routes (idempotent through the builder), and the host's projects API and
//! probe behind `TenancyLayer` and `IdempotencyLayer`.

#![allow(clippy::expect_used)] // test setup: failing to bind is a failed test

mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use tenancy_axum::{Context, IdempotencyLayer, TenancyLayer};
use tenancy_http::Tenancy;
use tenancy_http::testkit::Projects;
use tenancy_http::testkit::idempotency::Probe;

fn app(tenancy: Tenancy, projects: Arc<Projects>) -> Router {
    let probe = tenancy.module::<Probe>().expect("the probe module").clone();
    let idempotency = tenancy.idempotency().expect("idempotency is on").clone();
    let list = move |ctx: Context, method: Method, body: Bytes| async move {
        into(projects.handle(&ctx, &method, None, &body).await)
    };
    let probed =
        move |ctx: Context, body: Bytes| async move { into(probe.handle(&ctx, &body).await) };
    Router::new()
        .route("/projects", any(list))
        .route("/probe", post(probed))
        .layer(IdempotencyLayer::new(idempotency))
        .layer(TenancyLayer::new(tenancy.clone()))
        .merge(tenancy_axum::router(tenancy))
        .fallback(tenancy_axum::not_found)
}

fn into(response: axum::http::Response<Bytes>) -> Response {
    response.map(axum::body::Body::from).into_response()
}

fn start(
    tenancy: Tenancy,
    projects: Arc<Projects>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = SocketAddr> + Send>> {
    serve::serve(app(tenancy, projects))
}

tenancy_http::idempotency_scenarios!(start);
