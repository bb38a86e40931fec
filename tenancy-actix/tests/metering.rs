//! The metering HTTP scenarios against an actix-web app: the projects API
//! behind the metering guard, `/usage` among the SDK's routes.
// A test harness: failing to bind or start is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod serve;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use tenancy_actix::{Context, TenancyMiddleware};
use tenancy_http::Tenancy;
use tenancy_http::testkit::Projects;
use tenancy_metering::testkit::http::scenario_guard;

async fn projects(
    ctx: Context,
    request: HttpRequest,
    projects: web::Data<Projects>,
    body: Bytes,
) -> HttpResponse {
    let method = http::Method::from_bytes(request.method().as_str().as_bytes()).expect("method");
    let response = projects.handle(&ctx, &method, None, &body).await;
    let (parts, body) = response.into_parts();
    let mut answer =
        HttpResponse::build(StatusCode::from_u16(parts.status.as_u16()).expect("status"));
    for (name, value) in &parts.headers {
        answer.append_header((name.as_str(), value.as_bytes()));
    }
    answer.body(body)
}

fn start(
    tenancy: Tenancy,
    projects_api: Arc<Projects>,
) -> Pin<Box<dyn Future<Output = SocketAddr> + Send>> {
    let data = web::Data::from(projects_api);
    serve::serve(move |config: &mut web::ServiceConfig| {
        config
            .app_data(data.clone())
            .configure(tenancy_actix::configure(tenancy.clone()))
            .service(
                web::scope("/projects")
                    .route("", web::to(projects))
                    .wrap(tenancy_actix::guard(scenario_guard(&tenancy)))
                    .wrap(TenancyMiddleware::new(tenancy.clone())),
            );
    })
}

tenancy_metering::metering_http_scenarios!(start);
