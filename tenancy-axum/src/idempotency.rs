//! [`IdempotencyLayer`]: `Idempotency-Key` on the host's own routes.

use std::convert::Infallible;
use std::task::{Context as TaskContext, Poll};

use axum::body::{Body, HttpBody as _};
use axum::extract::{OriginalUri, Request};
use axum::response::{IntoResponse, Response};
use tenancy_http::idempotency::{Begin, IDEMPOTENCY_KEY};
use tenancy_http::{Idempotency, Problem, RequestContext};
use tower_layer::Layer;
use tower_service::Service;

use crate::{BoxFuture, Rejection, into_axum, missing_layer, read_body};

/// Makes the routes it wraps idempotent for clients sending an
/// `Idempotency-Key` (see [`tenancy_http::idempotency`] for what is stored
/// and replayed). Place it inside a [`crate::TenancyLayer`] (added before
/// it), which gives it the tenant and the caller:
///
/// ```no_run
/// use axum::{Router, routing::post};
/// use tenancy_axum::{IdempotencyLayer, TenancyLayer};
/// use tenancy_http::{IdempotencyConfig, Tenancy, authz::Catalog, auth::AuthConfig};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let tenancy = Tenancy::builder(
///     Catalog::new(["projects:create"])?,
///     AuthConfig::new("https://app.example", "app"),
/// )
/// .idempotency(IdempotencyConfig::default())
/// .build()
/// .await?;
/// let idempotency = tenancy.idempotency().ok_or("idempotency is off")?.clone();
/// let app: Router = Router::new()
///     .route("/projects", post(|| async { "created" }))
///     .layer(IdempotencyLayer::new(idempotency))
///     .layer(TenancyLayer::new(tenancy.clone()));
/// # let _ = app; Ok(()) }
/// ```
///
/// The request body is read whole (up to the `HttpConfig::body_limit`,
/// `413` past it) to fingerprint it. A response whose length is unknown
/// (a stream) or above `IdempotencyConfig::with_max_body` is passed
/// through and its key released.
#[derive(Clone, Debug)]
pub struct IdempotencyLayer {
    idempotency: Idempotency,
}

impl IdempotencyLayer {
    /// A layer over the [`Tenancy`](tenancy_http::Tenancy)'s idempotency
    /// ([`Tenancy::idempotency`](tenancy_http::Tenancy::idempotency)).
    pub fn new(idempotency: Idempotency) -> Self {
        Self { idempotency }
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            idempotency: self.idempotency.clone(),
        }
    }
}

/// The service of [`IdempotencyLayer`].
#[derive(Clone, Debug)]
pub struct IdempotencyService<S> {
    inner: S,
    idempotency: Idempotency,
}

impl<S> Service<Request> for IdempotencyService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let idempotency = self.idempotency.clone();
        Box::pin(async move {
            if !idempotency.covers(request.method())
                || !request.headers().contains_key(IDEMPOTENCY_KEY)
            {
                return inner.call(request).await;
            }
            let Some(context) = request.extensions().get::<RequestContext>().cloned() else {
                return Ok(Rejection(missing_layer()).into_response());
            };
            let (parts, body) = request.into_parts();
            let body = match read_body(&parts, body, context.tenancy().config().body_limit).await {
                Ok(body) => body,
                Err(problem) => return Ok(Rejection(problem).into_response()),
            };
            let uri = parts
                .extensions
                .get::<OriginalUri>()
                .map_or(&parts.uri, |OriginalUri(uri)| uri)
                .clone();
            let begun = idempotency
                .begin(&context, &parts.method, &uri, &parts.headers, &body)
                .await;
            let pending = match begun {
                Begin::Pass => {
                    return inner
                        .call(Request::from_parts(parts, Body::from(body)))
                        .await;
                }
                Begin::Answer(response) => return Ok(into_axum(response)),
                Begin::Proceed(pending) => pending,
            };
            let response = inner
                .call(Request::from_parts(parts, Body::from(body)))
                .await?;
            let length = response.body().size_hint().exact();
            let Some(length) = length
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n <= pending.max_body())
            else {
                pending.release().await;
                return Ok(response);
            };
            let (parts, body) = response.into_parts();
            match axum::body::to_bytes(body, length).await {
                Ok(bytes) => {
                    let headers = &parts.headers;
                    pending
                        .finish(
                            parts.status.as_u16(),
                            |name| {
                                headers
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned)
                            },
                            &bytes,
                        )
                        .await;
                    Ok(Response::from_parts(parts, Body::from(bytes)))
                }
                Err(error) => {
                    pending.release().await;
                    Ok(Rejection(Problem::internal(&error)).into_response())
                }
            }
        })
    }
}
