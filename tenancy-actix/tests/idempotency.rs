//! The idempotency and health scenarios against an actix-web app, each
//! server stopped when its test ends (`tests/serve`): the SDK's routes (idempotent through the builder), and the
//! host's projects API and probe behind `TenancyMiddleware` and
//! `IdempotencyMiddleware`.
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
use tenancy_actix::{Context, IdempotencyMiddleware, TenancyMiddleware};
use tenancy_http::Tenancy;
use tenancy_http::testkit::Projects;
use tenancy_http::testkit::idempotency::Probe;

async fn projects(
    ctx: Context,
    request: HttpRequest,
    projects: web::Data<Projects>,
    body: Bytes,
) -> HttpResponse {
    let method = http::Method::from_bytes(request.method().as_str().as_bytes()).expect("method");
    into(projects.handle(&ctx, &method, None, &body).await)
}

async fn probe(ctx: Context, probe: web::Data<Probe>, body: Bytes) -> HttpResponse {
    into(probe.handle(&ctx, &body).await)
}

fn into(response: http::Response<Bytes>) -> HttpResponse {
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
    let probe_data = web::Data::new(tenancy.module::<Probe>().expect("the probe module").clone());
    let idempotency = tenancy.idempotency().expect("idempotency is on").clone();
    serve::serve(move |config: &mut web::ServiceConfig| {
        config
            .app_data(data.clone())
            .app_data(probe_data.clone())
            .configure(tenancy_actix::configure(tenancy.clone()))
            .service(
                web::scope("/projects")
                    .route("", web::to(projects))
                    .wrap(IdempotencyMiddleware::new(idempotency.clone()))
                    .wrap(TenancyMiddleware::new(tenancy.clone())),
            )
            .service(
                web::resource("/probe")
                    .route(web::post().to(probe))
                    .wrap(IdempotencyMiddleware::new(idempotency.clone()))
                    .wrap(TenancyMiddleware::new(tenancy.clone())),
            );
    })
}

tenancy_http::idempotency_scenarios!(start);
