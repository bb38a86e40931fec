//! The shared HTTP scenario suite against an axum app.

#![allow(clippy::expect_used)] // test setup: failing to bind is a failed test

mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use tenancy_axum::{Context, TenancyLayer};
use tenancy_http::Tenancy;
use tenancy_http::testkit::Projects;

/// The app: the SDK's routes, and the projects API behind the middleware.
fn app(tenancy: Tenancy, projects: Arc<Projects>) -> Router {
    let list = {
        let projects = projects.clone();
        move |ctx: Context, method: Method, body: Bytes| async move {
            into(projects.handle(&ctx, &method, None, &body).await)
        }
    };
    let one = move |ctx: Context, method: Method, Path(id): Path<String>, body: Bytes| async move {
        into(projects.handle(&ctx, &method, Some(&id), &body).await)
    };
    Router::new()
        .route("/projects", any(list))
        .route("/projects/{id}", any(one))
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

tenancy_http::http_scenarios!(start);
tenancy_http::http_log_test!(start);
tenancy_scim::scim_scenarios!(start);
