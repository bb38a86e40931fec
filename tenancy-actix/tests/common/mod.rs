//! The actix-web app the scenario suites run against: the SDK's routes and
//! the testkit's projects API behind the middleware.

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

/// `GET/POST /projects` and `GET/PUT/DELETE /projects/{id}`, served by the
/// testkit's framework-agnostic projects API.
async fn projects(
    ctx: Context,
    request: HttpRequest,
    projects: web::Data<Projects>,
    body: Bytes,
) -> HttpResponse {
    let method = http::Method::from_bytes(request.method().as_str().as_bytes()).expect("method");
    let id = request.match_info().get("id");
    into(projects.handle(&ctx, &method, id, &body).await)
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

pub(crate) fn start(
    tenancy: Tenancy,
    projects_api: Arc<Projects>,
) -> Pin<Box<dyn Future<Output = SocketAddr> + Send>> {
    let data = web::Data::from(projects_api);
    crate::serve::serve(move |config: &mut web::ServiceConfig| {
        config
            .app_data(data.clone())
            .configure(tenancy_actix::configure(tenancy.clone()))
            .service(
                web::scope("/projects")
                    .route("", web::to(projects))
                    .route("/{id}", web::to(projects))
                    .wrap(TenancyMiddleware::new(tenancy.clone())),
            );
    })
}
