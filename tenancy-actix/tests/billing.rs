//! The billing scenarios against an actix-web app: the SDK's routes
//! (billing's among them) and a route gated with `require_entitlement`.
// A test harness: failing to bind or start is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod serve;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use tenancy_actix::{Context, TenancyMiddleware, require_entitlement};
use tenancy_billing::http::BillingContext;
use tenancy_billing::testkit::scenarios::{GATED_FEATURE, GATED_PATH};
use tenancy_http::Tenancy;
use tenancy_http::testkit::Projects;

/// Answers the plan the tenant holds, read from the context.
async fn report(ctx: Context) -> HttpResponse {
    match ctx.entitlements().await {
        Ok(entitlements) => HttpResponse::Ok()
            .content_type("application/json")
            .body(serde_json::json!({ "plan": entitlements.plan() }).to_string()),
        Err(problem) => {
            let response = problem.to_response();
            let mut answer = HttpResponse::build(
                StatusCode::from_u16(response.status().as_u16()).expect("status"),
            );
            for (name, value) in response.headers() {
                answer.append_header((name.as_str(), value.as_bytes()));
            }
            answer.body(response.into_body())
        }
    }
}

fn start(tenancy: Tenancy, _: Arc<Projects>) -> Pin<Box<dyn Future<Output = SocketAddr> + Send>> {
    serve::serve(move |config: &mut web::ServiceConfig| {
        config
            .configure(tenancy_actix::configure(tenancy.clone()))
            .service(
                web::resource(GATED_PATH)
                    .route(web::get().to(report))
                    .wrap(require_entitlement(GATED_FEATURE))
                    .wrap(TenancyMiddleware::new(tenancy.clone())),
            );
    })
}

tenancy_billing::billing_scenarios!(start);
