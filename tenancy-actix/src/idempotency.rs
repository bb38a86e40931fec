//! [`IdempotencyMiddleware`]: `Idempotency-Key` on the host's own routes.

use std::fmt;
use std::future::{Ready, ready};
use std::rc::Rc;

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::{HttpMessage, ResponseError, web};
use tenancy_http::idempotency::{Begin, IDEMPOTENCY_KEY, Pending};
use tenancy_http::{Idempotency, Problem, RequestContext, Tenancy};

use crate::{LocalBoxFuture, Rejection, head_of, into_actix, read_body};

/// Makes the resources or scope it wraps idempotent for clients sending an
/// `Idempotency-Key` (see [`tenancy_http::idempotency`] for what is stored
/// and replayed). It needs the context of a [`crate::TenancyMiddleware`]
/// running before it, so register it first:
///
/// ```no_run
/// use actix_web::{App, web};
/// use tenancy_actix::{IdempotencyMiddleware, TenancyMiddleware};
/// use tenancy_http::Tenancy;
///
/// fn app(tenancy: Tenancy) -> Option<App<impl actix_web::dev::ServiceFactory<
///     actix_web::dev::ServiceRequest,
///     Config = (),
///     Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
///     Error = actix_web::Error,
///     InitError = (),
/// >>> {
///     let idempotency = tenancy.idempotency()?.clone();
///     Some(App::new().service(
///         web::scope("/projects")
///             .route("", web::post().to(|| async { "created" }))
///             .wrap(IdempotencyMiddleware::new(idempotency))
///             .wrap(TenancyMiddleware::new(tenancy)),
///     ))
/// }
/// ```
///
/// The request body is read whole (up to the `HttpConfig::body_limit`,
/// `413` past it) to fingerprint it, then handed on. A response whose
/// length is unknown (a stream) or above
/// `IdempotencyConfig::with_max_body` is passed through and its key
/// released.
#[derive(Clone, Debug)]
pub struct IdempotencyMiddleware {
    idempotency: Idempotency,
}

impl IdempotencyMiddleware {
    /// Middleware over the [`Tenancy`](tenancy_http::Tenancy)'s idempotency
    /// ([`Tenancy::idempotency`](tenancy_http::Tenancy::idempotency)).
    pub fn new(idempotency: Idempotency) -> Self {
        Self { idempotency }
    }
}

impl<S, B> Transform<S, ServiceRequest> for IdempotencyMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = IdempotencyService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(IdempotencyService {
            service: Rc::new(service),
            idempotency: self.idempotency.clone(),
        }))
    }
}

/// The service of [`IdempotencyMiddleware`].
pub struct IdempotencyService<S> {
    service: Rc<S>,
    idempotency: Idempotency,
}

impl<S> fmt::Debug for IdempotencyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyService")
            .field("idempotency", &self.idempotency)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for IdempotencyService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, mut request: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let idempotency = self.idempotency.clone();
        Box::pin(async move {
            let head = match head_of(request.request()) {
                Ok(head) => head,
                Err(rejection) => return Ok(answer(request, rejection)),
            };
            if !idempotency.covers(&head.method) || !head.headers.contains_key(IDEMPOTENCY_KEY) {
                return Ok(service.call(request).await?.map_into_left_body());
            }
            let context = request.extensions().get::<RequestContext>().cloned();
            let Some(context) = context else {
                return Ok(answer(request, Rejection::missing_middleware()));
            };
            let payload = request.extract::<web::Payload>().await?;
            let limit = context.tenancy().config().body_limit;
            let body = match read_body(request.request(), payload, limit).await {
                Ok(body) => body,
                Err(rejection) => return Ok(answer(request, rejection)),
            };
            request.set_payload(actix_web::dev::Payload::from(body.clone()));
            let tenancy = context.tenancy().clone();
            let begun = tenancy
                .on_store_runtime(async move {
                    idempotency
                        .begin(&context, &head.method, &head.uri, &head.headers, &body)
                        .await
                })
                .await;
            let begun = match begun {
                Ok(begun) => begun,
                Err(problem) => return Ok(answer(request, Rejection::from(problem))),
            };
            let pending = match begun {
                Begin::Pass => return Ok(service.call(request).await?.map_into_left_body()),
                Begin::Answer(response) => {
                    return Ok(request
                        .into_response(into_actix(response))
                        .map_into_right_body());
                }
                Begin::Proceed(pending) => pending,
            };
            let response = service.call(request).await?;
            let length = match response.response().body().size() {
                BodySize::None => Some(0),
                BodySize::Sized(n) => usize::try_from(n).ok(),
                BodySize::Stream => None,
            };
            if length.is_none_or(|n| n > pending.max_body()) {
                release(&tenancy, pending).await;
                return Ok(response.map_into_left_body());
            }
            let (request, response) = response.into_parts();
            let (response, body) = response.into_parts();
            match actix_web::body::to_bytes(body).await {
                Ok(bytes) => {
                    let status = response.status().as_u16();
                    let headers: Vec<(String, String)> = response
                        .headers()
                        .iter()
                        .filter_map(|(name, value)| {
                            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                        })
                        .collect();
                    let stored = bytes.clone();
                    let finished = tenancy
                        .on_store_runtime(async move {
                            pending
                                .finish(
                                    status,
                                    |name| {
                                        headers
                                            .iter()
                                            .find(|(stored, _)| stored == name.as_str())
                                            .map(|(_, value)| value.clone())
                                    },
                                    &stored,
                                )
                                .await;
                        })
                        .await;
                    if let Err(problem) = finished {
                        tracing::warn!(?problem, "storing an idempotent response failed");
                    }
                    let response = response.set_body(bytes).map_into_boxed_body();
                    Ok(ServiceResponse::new(request, response).map_into_right_body())
                }
                Err(error) => {
                    release(&tenancy, pending).await;
                    let error: Box<dyn std::error::Error> = error.into();
                    tracing::error!(%error, "reading a response body failed");
                    let problem = Rejection::from(Problem::of(tenancy_http::ProblemKind::Internal));
                    Ok(ServiceResponse::new(request, problem.error_response())
                        .map_into_right_body())
                }
            }
        })
    }
}

/// Answers `rejection` for `request`.
fn answer<B>(request: ServiceRequest, rejection: Rejection) -> ServiceResponse<EitherBody<B>> {
    request
        .into_response(rejection.error_response())
        .map_into_right_body()
}

/// Gives the key back on the store runtime (see
/// [`Tenancy::on_store_runtime`](tenancy_http::Tenancy::on_store_runtime));
/// if that runtime is gone, the key's lease lapses on its own.
async fn release(tenancy: &Tenancy, pending: Pending) {
    if let Err(problem) = tenancy
        .on_store_runtime(async move { pending.release().await })
        .await
    {
        tracing::warn!(
            ?problem,
            "releasing an idempotency key failed; its lease will lapse"
        );
    }
}
