//! The billing scenarios against an axum app: the SDK's routes (billing's
//! among them) and a route gated with `require_entitlement`.

#![allow(clippy::expect_used)] // test setup: failing to bind is a failed test

mod serve;

use std::net::SocketAddr;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tenancy_axum::{Context, TenancyLayer, require_entitlement};
use tenancy_billing::http::BillingContext;
use tenancy_billing::testkit::scenarios::{GATED_FEATURE, GATED_PATH};
use tenancy_http::Tenancy;
use tenancy_http::testkit::Projects;

/// Answers the plan the tenant holds, read from the context.
async fn report(ctx: Context) -> Response {
    match ctx.entitlements().await {
        Ok(entitlements) => {
            axum::Json(serde_json::json!({ "plan": entitlements.plan() })).into_response()
        }
        Err(problem) => problem
            .to_response()
            .map(axum::body::Body::from)
            .into_response(),
    }
}

fn start(
    tenancy: Tenancy,
    _: std::sync::Arc<Projects>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = SocketAddr> + Send>> {
    serve::serve(
        Router::new()
            .route(GATED_PATH, get(report))
            .layer(require_entitlement(GATED_FEATURE))
            .layer(TenancyLayer::new(tenancy.clone()))
            .merge(tenancy_axum::router(tenancy))
            .fallback(tenancy_axum::not_found),
    )
}

tenancy_billing::billing_scenarios!(start);
