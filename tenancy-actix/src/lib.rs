//! actix-web integration of the tenancy SDK.
//!
//! - [`configure`]: the SDK's routes (register, login, refresh, sessions, API
//!   keys, members, invitations, roles, policies, explain, audit, JWKS) as a
//!   [`ServiceConfig`] function for [`App::configure`](actix_web::App::configure)
//!   or [`Scope::configure`](actix_web::Scope::configure).
//! - [`TenancyMiddleware`]: authenticates your own routes (bearer token, API
//!   key or cookie), resolves and checks the tenant, and puts the
//!   [`RequestContext`] in the request extensions.
//! - [`IdempotencyMiddleware`]: `Idempotency-Key` on your own routes
//!   (replay, `409` while in flight, `422` on reuse), registered before
//!   [`TenancyMiddleware`].
//! - [`require`]: middleware that requires a permission on a resource or
//!   scope.
//! - [`Json`]: your own JSON bodies, read and refused exactly as the SDK's
//!   routes read theirs (`400`, `413`, `415`, `422` naming the field);
//!   [`json_config`] does nearly the same for `web::Json<T>`.
//! - Extractors: [`Context`], [`Caller`], [`Tenant`], [`Session`],
//!   [`ApiKey`]; `Option<Caller>` for handlers that also serve callers that
//!   went through no [`TenancyMiddleware`]. Rejections are RFC 9457 problems
//!   ([`Rejection`]).
//!
//! actix runs the middleware registered last first: wrap a scope in
//! [`require`] before [`TenancyMiddleware`], so that the context exists when
//! the permission is checked.
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use tenancy_actix::{Context, TenancyMiddleware, require};
//! use tenancy_http::{HttpConfig, Tenancy, authz::Catalog, auth::AuthConfig};
//!
//! async fn projects(ctx: Context) -> String {
//!     format!("projects of {}", ctx.tenant_id())
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let tenancy = Tenancy::in_memory(
//!     Catalog::new(["projects:read", "projects:create"])?,
//!     AuthConfig::new("https://app.example", "app"),
//!     HttpConfig::default(),
//! )
//! .await?;
//! let read = tenancy.permission("projects:read")?;
//! HttpServer::new(move || {
//!     App::new()
//!         .configure(tenancy_actix::configure(tenancy.clone()))
//!         .service(
//!             web::scope("/projects")
//!                 .route("", web::get().to(projects))
//!                 .wrap(require(read))
//!                 .wrap(TenancyMiddleware::new(tenancy.clone())),
//!         )
//! })
//! .bind(("127.0.0.1", 3001))?
//! .run()
//! .await?;
//! # Ok(()) }
//! ```
//!
//! # On Postgres: build on a multi-thread runtime
//!
//! Each actix-web worker is a Tokio runtime of its own, and a socket is
//! driven by the runtime that opened it: a pooled connection opened by one
//! worker and used by another waits at every round trip for the first to
//! notice the reply. Build the [`Tenancy`] (and open your own pools) on a
//! multi-thread Tokio runtime instead, then start actix-web: that runtime
//! becomes the [store runtime](Tenancy::on_store_runtime), and this crate
//! hands each request's store work to it (authentication, guards,
//! permission checks, the SDK's routes, idempotency records). Your handlers
//! do the same for their own queries with
//! [`Tenancy::on_store_runtime`]. With memory stores nothing is handed
//! over.
//!
//! ```no_run
//! use actix_web::{App, HttpServer};
//! use tenancy_http::core::postgres::sqlx::PgPool;
//! use tenancy_http::auth::{AuthConfig, KeyEncryption, KeyEncryptionKey};
//! use tenancy_http::{HttpConfig, Tenancy, authz::Catalog};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Holds the pools and the SDK's background tasks until main returns.
//!     let store_runtime = tokio::runtime::Runtime::new()?;
//!     let tenancy = store_runtime.block_on(async {
//!         let pool = PgPool::connect("postgres://app@localhost/app").await?;
//!         let catalog = Catalog::new(["projects:read"])?;
//!         let kek = KeyEncryptionKey::from_base64("kek-1", &std::env::var("KEY_ENCRYPTION_KEY")?)?;
//!         let auth = AuthConfig::new("https://app.example", "app")
//!             .with_key_encryption(KeyEncryption::key(kek));
//!         let tenancy = Tenancy::postgres(pool, catalog, auth, HttpConfig::default()).await?;
//!         Ok::<_, Box<dyn std::error::Error>>(tenancy)
//!     })?;
//!     actix_web::rt::System::new().block_on(async move {
//!         HttpServer::new(move || App::new().configure(tenancy_actix::configure(tenancy.clone())))
//!             .bind(("127.0.0.1", 3001))?
//!             .run()
//!             .await
//!     })?;
//!     Ok(())
//! }
//! ```
//!
//! # Features
//!
//! - `memory` (default): the in-memory stores of `tenancy-http`.
//! - `postgres`: the Postgres stores of `tenancy-http`.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::ops::Deref;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::error::JsonPayloadError;
use actix_web::http::{Method, StatusCode, header};
use actix_web::web::{self, JsonConfig, ServiceConfig};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use tenancy_http::auth::{Principal, Subject};
use tenancy_http::core::{ApiKeyId, SessionId, TenantScope};
use tenancy_http::{
    ApiRequest, Guard, Problem, RequestContext, RequestHead, Route, RoutePermission, Tenancy,
};
use tracing::Instrument;

mod idempotency;

pub use idempotency::{IdempotencyMiddleware, IdempotencyService};

/// The actix-web crate this integration is built against.
pub use actix_web;
/// The framework-agnostic HTTP surface: [`Tenancy`], [`HttpConfig`](tenancy_http::HttpConfig),
/// [`Problem`], and the domain crates.
pub use tenancy_http;

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

// ---------------------------------------------------------------------------
// Conversions between actix-web (`http` 0.2 types) and tenancy-http (`http` 1).

/// The pipeline's view of an actix request: method, URI, headers (every
/// value of repeated names) and peer address. `400` if the method or URI do
/// not convert, which valid HTTP never causes.
fn head_of(request: &HttpRequest) -> Result<Head, Rejection> {
    let method = http::Method::from_bytes(request.method().as_str().as_bytes())
        .map_err(|_| Rejection::from(Problem::bad_request("unsupported method")))?;
    // A server sees origin-form targets (`/path?query`): converted from
    // that text directly, without formatting the whole URI first.
    let target = request.uri();
    let uri = match (target.scheme(), target.path_and_query()) {
        (None, Some(path_and_query)) => http::Uri::try_from(path_and_query.as_str()),
        _ => http::Uri::try_from(target.to_string()),
    }
    .map_err(|_| Rejection::from(Problem::bad_request("malformed request target")))?;
    let mut headers = http::HeaderMap::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        let name = http::HeaderName::from_bytes(name.as_str().as_bytes());
        let value = http::HeaderValue::from_bytes(value.as_bytes());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    Ok(Head {
        method,
        uri,
        headers,
        peer: request.peer_addr().map(|address| address.ip()),
        // Whether this server's listener is TLS; never from request headers.
        tls: request.app_config().secure(),
    })
}

/// A request head converted to `http` 1 types, owned.
struct Head {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    peer: Option<std::net::IpAddr>,
    tls: bool,
}

impl Head {
    fn borrowed(&self) -> RequestHead<'_> {
        RequestHead::new(&self.method, &self.uri, &self.headers, self.peer).with_tls(self.tls)
    }
}

/// An `http` 1 response as an actix response: status, every header (each
/// value of repeated names such as `Set-Cookie`) and body.
fn into_actix(response: http::Response<Bytes>) -> HttpResponse {
    let (parts, body) = response.into_parts();
    let status =
        StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut answer = HttpResponse::with_body(status, body);
    append_headers(answer.headers_mut(), &parts.headers);
    answer.map_into_boxed_body()
}

/// Appends every `http` 1 header of `from` (each value of repeated names)
/// to an actix header map.
fn append_headers(to: &mut header::HeaderMap, from: &http::HeaderMap) {
    for (name, value) in from {
        let name = header::HeaderName::from_bytes(name.as_str().as_bytes());
        let value = header::HeaderValue::from_bytes(value.as_bytes());
        if let (Ok(name), Ok(value)) = (name, value) {
            to.append(name, value);
        }
    }
}

/// The body, at most `limit` bytes: a declared `Content-Length` past the
/// limit is refused before anything is read, a longer stream as soon as it
/// passes the limit (`413` both ways).
async fn read_body(
    request: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Bytes, Rejection> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(Problem::payload_too_large(limit).into());
    }
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(error)) => {
            // The client broke off or sent a malformed body.
            tracing::debug!(%error, "request body not read");
            Err(Problem::bad_request("the request body could not be read").into())
        }
        Err(_) => Err(Problem::payload_too_large(limit).into()),
    }
}

/// Path parameters by name, percent-decoded.
fn params_of(request: &HttpRequest) -> HashMap<String, String> {
    request
        .match_info()
        .iter()
        .map(|(name, value)| (name.to_owned(), percent_decode(value)))
        .collect()
}

/// Decodes the escapes actix leaves in path segments (`%25`, `%2F`, `%2B`,
/// and any others); a `%` not followed by two hex digits stays as it is,
/// and invalid UTF-8 is replaced.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// The request as the shared route logic takes it.
async fn api_request(
    request: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<ApiRequest, Rejection> {
    let Head {
        method,
        uri,
        headers,
        peer,
        tls,
    } = head_of(request)?;
    let body = read_body(request, payload, limit).await?;
    Ok(ApiRequest::new(method, uri, headers, peer, body)
        .with_params(params_of(request))
        .with_tls(tls))
}

// ---------------------------------------------------------------------------
// Routes.

/// The SDK's routes, to mount with [`App::configure`](actix_web::App::configure)
/// (or inside a [`Scope`](actix_web::Scope)). Each route authenticates and
/// authorizes itself: do not wrap them in [`TenancyMiddleware`].
///
/// Bodies are limited to [`HttpConfig::body_limit`](tenancy_http::HttpConfig::body_limit)
/// (`413` past it); the client address is the TCP peer (or the client a
/// trusted proxy names: [`HttpConfig::trusted_proxies`](tenancy_http::HttpConfig::trusted_proxies)).
pub fn configure(tenancy: Tenancy) -> impl FnOnce(&mut ServiceConfig) {
    move |config| {
        // One resource per path with a route per method: actix picks the
        // first resource whose path matches, so literal segments go before
        // parameters (`/invitations/accept` before `/invitations/{id}`).
        let mut by_path: Vec<(&'static str, Vec<Route>)> = Vec::new();
        for route in tenancy.routes() {
            match by_path.iter_mut().find(|(path, _)| *path == route.path) {
                Some((_, routes)) => routes.push(route),
                None => by_path.push((route.path, vec![route])),
            }
        }
        by_path.sort_by(|(a, _), (b, _)| literal_first(a).cmp(&literal_first(b)));
        for (path, routes) in by_path {
            let mut allow: Vec<http::Method> = Vec::new();
            for route in &routes {
                allow.push(route.method.clone());
                if route.method == http::Method::GET {
                    allow.push(http::Method::HEAD);
                }
            }
            let not_allowed = Problem::method_not_allowed(&allow);
            let mut resource =
                web::resource(actix_path(path)).default_service(web::to(move || {
                    let problem = not_allowed.clone();
                    async move { Rejection::from(problem).error_response() }
                }));
            for route in routes {
                let Ok(method) = Method::from_bytes(route.method.as_str().as_bytes()) else {
                    continue;
                };
                let route = Arc::new(route);
                // `GET` routes answer `HEAD` too (without the body), as in axum.
                let head = (method == Method::GET).then_some(Method::HEAD);
                for method in std::iter::once(method).chain(head) {
                    let tenancy = tenancy.clone();
                    let route = route.clone();
                    resource = resource.route(web::method(method).to(
                        move |request: HttpRequest, payload: web::Payload| {
                            serve(tenancy.clone(), route.clone(), request, payload)
                        },
                    ));
                }
            }
            config.service(resource);
        }
    }
}

/// The app's default service for paths no route serves: `404` as a
/// problem. Mount it with
/// `App::new().default_service(web::to(tenancy_actix::not_found))`.
pub async fn not_found() -> HttpResponse {
    Rejection::from(Problem::not_found().with_detail("no route serves this path")).error_response()
}

/// Path parameters, deserialized like `actix_web::web::Path`, rejecting
/// like the SDK's routes: a `400` problem naming what did not parse.
#[derive(Clone, Copy, Debug, Default)]
pub struct Path<T>(pub T);

impl<T> Path<T> {
    /// The parameters.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Path<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: serde::de::DeserializeOwned + 'static> FromRequest for Path<T> {
    type Error = Rejection;
    type Future = std::future::Ready<Result<Self, Rejection>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let parsed = <web::Path<T> as FromRequest>::from_request(request, payload).into_inner();
        std::future::ready(parsed.map(|path| Path(path.into_inner())).map_err(|error| {
            Rejection::from(Problem::bad_request(format!(
                "invalid path parameter: {error}"
            )))
        }))
    }
}

/// A sort key ordering paths segment by segment, literal segments before
/// `{parameters}`.
/// A route path in actix's syntax: a trailing `{*name}` (the rest of the
/// path) is `{name:.+}`; `{name}` is the same in both.
fn actix_path(path: &str) -> String {
    match path.rsplit_once("/{*") {
        Some((head, tail)) if tail.ends_with('}') => {
            format!("{head}/{{{}:.+}}", &tail[..tail.len() - 1])
        }
        _ => path.to_owned(),
    }
}

fn literal_first(path: &str) -> Vec<(bool, &str)> {
    path.split('/')
        .map(|segment| (segment.starts_with('{'), segment))
        .collect()
}

async fn serve(
    tenancy: Tenancy,
    route: Arc<Route>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let span = tenancy_http::trace::request_span(request.method().as_str(), request.path());
    async move {
        match api_request(&request, payload, tenancy.config().body_limit).await {
            Ok(api) => {
                let on_store = tenancy.clone();
                match on_store
                    .on_store_runtime(async move { tenancy.dispatch(&route, api).await })
                    .await
                {
                    Ok(response) => into_actix(response),
                    Err(problem) => Rejection::from(problem).error_response(),
                }
            }
            Err(rejection) => rejection.error_response(),
        }
    }
    .instrument(span)
    .await
}

// ---------------------------------------------------------------------------
// Middleware.

/// Authenticates every request it wraps and resolves its tenant; puts the
/// [`RequestContext`] in the request extensions for the extractors, or
/// answers the problem (`401` with `WWW-Authenticate`, `403`, `404`) itself.
#[derive(Clone, Debug)]
pub struct TenancyMiddleware {
    tenancy: Tenancy,
}

impl TenancyMiddleware {
    /// Middleware over `tenancy`.
    pub fn new(tenancy: Tenancy) -> Self {
        Self { tenancy }
    }
}

impl<S, B> Transform<S, ServiceRequest> for TenancyMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = TenancyService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(TenancyService {
            service: Rc::new(service),
            tenancy: self.tenancy.clone(),
        }))
    }
}

/// The service of [`TenancyMiddleware`].
pub struct TenancyService<S> {
    service: Rc<S>,
    tenancy: Tenancy,
}

impl<S> fmt::Debug for TenancyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenancyService")
            .field("tenancy", &self.tenancy)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for TenancyService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let tenancy = self.tenancy.clone();
        let span = tenancy_http::trace::request_span(request.method().as_str(), request.path());
        Box::pin(
            async move {
                let outcome = match head_of(request.request()) {
                    Ok(head) => {
                        let on_store = tenancy.clone();
                        on_store
                            .on_store_runtime(
                                async move { tenancy.authenticate(head.borrowed()).await },
                            )
                            .await
                            .and_then(|outcome| outcome)
                            .map_err(Rejection::from)
                    }
                    Err(rejection) => Err(rejection),
                };
                let outcome = outcome.map(|context| {
                    request.extensions_mut().insert(context);
                });
                forward(&*service, request, outcome).await
            }
            .instrument(span),
        )
    }
}

/// Passes the request on to `service` when the middleware's check passed,
/// or answers the rejection.
async fn forward<S, B>(
    service: &S,
    request: ServiceRequest,
    outcome: Result<(), Rejection>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    match outcome {
        Ok(()) => Ok(service.call(request).await?.map_into_left_body()),
        Err(rejection) => Ok(request
            .into_response(rejection.error_response())
            .map_into_right_body()),
    }
}

/// Middleware requiring `permission` (checked against the tenant's roles and
/// policies) on the resources or scope it wraps. It needs the context of a
/// [`TenancyMiddleware`] running before it, so register it first:
/// `.wrap(require(read)).wrap(TenancyMiddleware::new(tenancy))`, where
/// `read` comes from [`Tenancy::permission`], which checks the catalog
/// declares it when the app is assembled.
pub fn require(permission: RoutePermission) -> Require {
    Require { permission }
}

/// See [`require`].
#[derive(Clone, Copy, Debug)]
pub struct Require {
    permission: RoutePermission,
}

impl<S, B> Transform<S, ServiceRequest> for Require
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = RequireService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequireService {
            service: Rc::new(service),
            permission: self.permission,
        }))
    }
}

/// The service of [`Require`].
pub struct RequireService<S> {
    service: Rc<S>,
    permission: RoutePermission,
}

impl<S> fmt::Debug for RequireService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireService")
            .field("permission", &self.permission)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for RequireService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let permission = self.permission;
        Box::pin(async move {
            let context = request.extensions().get::<RequestContext>().cloned();
            let outcome = match context {
                Some(context) => {
                    let tenancy = context.tenancy().clone();
                    tenancy
                        .on_store_runtime(async move { context.require(permission.as_str()).await })
                        .await
                        .and_then(|outcome| outcome)
                        .map_err(Rejection::from)
                }
                None => Err(Rejection::missing_middleware()),
            };
            forward(&*service, request, outcome).await
        })
    }
}

/// Middleware admitting only tenants whose plan includes `feature` (a
/// feature of the billing catalog): others get `402`
/// `urn:tenancy:problem:entitlement-required` naming the feature and the
/// plans that include it. [`guard`] over tenancy-billing's `Entitlement`;
/// needs the `BillingModule` on the `Tenancy` (feature `billing`).
#[cfg(feature = "billing")]
pub fn require_entitlement(feature: impl Into<std::borrow::Cow<'static, str>>) -> GuardMiddleware {
    guard(tenancy_billing::http::Entitlement::new(feature))
}

/// Middleware running `guard` (an entitlement, a rate limit, a quota: see
/// [`Guard`]) on the resources or scope it wraps. Like [`require`], it
/// needs a [`TenancyMiddleware`] registered after it (so running before
/// it). A refusal answers the guard's problem; an admission's headers are
/// added to the handler's answer.
pub fn guard(guard: impl Guard) -> GuardMiddleware {
    GuardMiddleware {
        guard: Arc::new(guard),
    }
}

/// See [`guard`].
#[derive(Clone)]
pub struct GuardMiddleware {
    guard: Arc<dyn Guard>,
}

impl fmt::Debug for GuardMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardMiddleware")
            .field("guard", &self.guard.name())
            .finish()
    }
}

impl<S, B> Transform<S, ServiceRequest> for GuardMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = GuardService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(GuardService {
            service: Rc::new(service),
            guard: self.guard.clone(),
        }))
    }
}

/// The service of [`GuardMiddleware`].
pub struct GuardService<S> {
    service: Rc<S>,
    guard: Arc<dyn Guard>,
}

impl<S> fmt::Debug for GuardService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardService")
            .field("guard", &self.guard.name())
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for GuardService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let guard = self.guard.clone();
        Box::pin(async move {
            let context = request.extensions().get::<RequestContext>().cloned();
            let admitted = match context {
                Some(context) => {
                    let tenancy = context.tenancy().clone();
                    tenancy
                        .on_store_runtime(async move { guard.check(&context).await })
                        .await
                        .and_then(|outcome| outcome)
                        .map_err(Rejection::from)
                }
                None => Err(Rejection::missing_middleware()),
            };
            match admitted {
                Ok(admission) => {
                    let mut response = service.call(request).await?.map_into_left_body();
                    if let Some(headers) = admission.headers() {
                        append_headers(response.headers_mut(), headers);
                    }
                    Ok(response)
                }
                Err(rejection) => Ok(request
                    .into_response(rejection.error_response())
                    .map_into_right_body()),
            }
        })
    }
}

// ---------------------------------------------------------------------------
// Your own JSON bodies.

/// A JSON request body as `T`, read and checked exactly as the SDK's routes
/// read theirs (see [`parse_json`](tenancy_http::parse_json)): `415` unless
/// the content type is JSON, `413` past
/// [`HttpConfig::body_limit`](tenancy_http::HttpConfig::body_limit) (of the
/// [`TenancyMiddleware`]'s configuration, or the default 64 KiB on routes
/// outside it), `400` for malformed JSON, `422` naming the field that is
/// missing or of the wrong type (`owner.email`). Used like `web::Json`
/// (destructuring, `Deref`, `into_inner`); as a response it serializes the
/// same.
///
/// ```
/// use serde::Deserialize;
/// use tenancy_actix::{Context, Json, Rejection};
///
/// #[derive(Deserialize)]
/// struct NewProject {
///     name: String,
/// }
///
/// async fn create(ctx: Context, Json(input): Json<NewProject>) -> Result<String, Rejection> {
///     ctx.require("projects:create").await?;
///     Ok(format!("{} in {}", input.name, ctx.tenant_id()))
/// }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Json<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: serde::de::DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = Rejection;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Rejection>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let request = request.clone();
        let payload = web::Payload::from_request(&request, payload);
        Box::pin(async move {
            let limit = request.extensions().get::<RequestContext>().map_or_else(
                || tenancy_http::HttpConfig::default().body_limit,
                |context| context.tenancy().config().body_limit,
            );
            let payload = payload
                .await
                .map_err(|_| Problem::bad_request("the request body could not be read"))?;
            let body = read_body(&request, payload, limit).await?;
            let mut headers = http::HeaderMap::new();
            if let Some(media) = request.headers().get(header::CONTENT_TYPE)
                && let Ok(media) = http::HeaderValue::from_bytes(media.as_bytes())
            {
                headers.insert(http::header::CONTENT_TYPE, media);
            }
            Ok(Json(tenancy_http::parse_json(&headers, &body)?))
        })
    }
}

impl<T: serde::Serialize> actix_web::Responder for Json<T> {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, request: &HttpRequest) -> HttpResponse {
        web::Json(self.0).respond_to(request).map_into_boxed_body()
    }
}

/// A [`JsonConfig`] for your own `web::Json<T>` bodies that fails nearly
/// the way the SDK's routes do ([`Json`] matches them exactly, and names
/// the offending field's path where this says `body`): `413` past `limit` bytes, `415` unless the content
/// type is JSON, `400` for malformed JSON (with line and column), `422` for
/// JSON of the wrong shape. Register it with
/// `App::new().app_data(json_config(tenancy.config().body_limit))`.
pub fn json_config(limit: usize) -> JsonConfig {
    JsonConfig::default()
        .limit(limit)
        .error_handler(move |error, _request| Rejection::from(json_problem(error, limit)).into())
}

fn json_problem(error: JsonPayloadError, limit: usize) -> Problem {
    match error {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            Problem::payload_too_large(limit)
        }
        JsonPayloadError::ContentType => Problem::unsupported_media_type(),
        JsonPayloadError::Deserialize(error) => Problem::from_json_error("body", &error),
        other => {
            // The client broke off or sent a malformed body.
            tracing::debug!(error = %other, "JSON body not read");
            Problem::bad_request("the request body could not be read")
        }
    }
}

// ---------------------------------------------------------------------------
// Rejections and extractors.

/// A [`Problem`] as an actix error: renders the problem exactly (status,
/// `application/problem+json` body, `WWW-Authenticate`, `Retry-After`).
#[derive(Debug, Clone)]
pub struct Rejection {
    problem: Problem,
    missing_middleware: bool,
}

impl Rejection {
    /// The problem this rejection answers.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// The problem, owned.
    pub fn into_problem(self) -> Problem {
        self.problem
    }

    /// A handler asked for the context but no [`TenancyMiddleware`] ran
    /// before it: logged for the developer when answered, as a plain 500.
    fn missing_middleware() -> Self {
        Self {
            problem: Problem::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
            missing_middleware: true,
        }
    }
}

impl From<Problem> for Rejection {
    fn from(problem: Problem) -> Self {
        Self {
            problem,
            missing_middleware: false,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.problem, f)
    }
}

impl std::error::Error for Rejection {}

impl ResponseError for Rejection {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.problem.status().as_u16())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if self.missing_middleware {
            // Only when answered: `Option<Caller>` swallows the rejection.
            tracing::error!(
                "a handler needing the tenancy context is not wrapped in TenancyMiddleware"
            );
        }
        into_actix(self.problem.to_response())
    }
}

fn context_of(request: &HttpRequest) -> Result<RequestContext, Rejection> {
    request
        .extensions()
        .get::<RequestContext>()
        .cloned()
        .ok_or_else(Rejection::missing_middleware)
}

/// The request's [`RequestContext`]: caller, tenant, and permission checks.
#[derive(Clone, Debug)]
pub struct Context(pub RequestContext);

impl Deref for Context {
    type Target = RequestContext;
    fn deref(&self) -> &RequestContext {
        &self.0
    }
}

impl FromRequest for Context {
    type Error = Rejection;
    type Future = Ready<Result<Self, Rejection>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(context_of(request).map(Context))
    }
}

/// The authenticated caller. As `Option<Caller>`, `None` where no
/// [`TenancyMiddleware`] ran.
#[derive(Clone, Debug)]
pub struct Caller(pub Arc<Principal>);

impl Deref for Caller {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl FromRequest for Caller {
    type Error = Rejection;
    type Future = Ready<Result<Self, Rejection>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(context_of(request).map(|context| Caller(context.principal().clone())))
    }
}

/// The tenant the request acts in.
#[derive(Clone, Copy, Debug)]
pub struct Tenant(pub TenantScope);

impl FromRequest for Tenant {
    type Error = Rejection;
    type Future = Ready<Result<Self, Rejection>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(context_of(request).map(|context| Tenant(*context.scope())))
    }
}

/// The caller's session: only for signed-in users (`403` for API keys).
#[derive(Clone, Copy, Debug)]
pub struct Session(pub SessionId);

impl FromRequest for Session {
    type Error = Rejection;
    type Future = Ready<Result<Self, Rejection>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(context_of(request).and_then(|context| {
            context
                .principal()
                .session_id
                .map(Session)
                .ok_or_else(|| Problem::forbidden("this route needs a signed-in user").into())
        }))
    }
}

/// The calling API key: only for API keys (`403` for users).
#[derive(Clone, Copy, Debug)]
pub struct ApiKey(pub ApiKeyId);

impl FromRequest for ApiKey {
    type Error = Rejection;
    type Future = Ready<Result<Self, Rejection>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            context_of(request).and_then(|context| match context.principal().subject {
                Subject::ApiKey(id) => Ok(ApiKey(id)),
                _ => Err(Problem::forbidden("this route needs an API key").into()),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    // Tests: a failed unwrap is a failed assertion.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use actix_web::dev::ServiceResponse;
    use actix_web::test::{TestRequest, call_service, init_service, read_body};
    use actix_web::{App, Responder};
    use serde_json::{Value, json};
    use tenancy_http::auth::{Argon2Config, AuthConfig};
    use tenancy_http::authz::Catalog;
    use tenancy_http::{HttpConfig, PROBLEM_JSON};

    #[test]
    fn catch_all_paths_translate_to_actix() {
        assert_eq!(actix_path("/scim/v2/{*path}"), "/scim/v2/{path:.+}");
        assert_eq!(actix_path("/users/{id}"), "/users/{id}");
        assert_eq!(actix_path("/plain"), "/plain");
    }

    fn run<F: Future>(future: F) -> F::Output {
        actix_web::rt::System::new().block_on(future)
    }

    async fn tenancy(body_limit: usize) -> Tenancy {
        let mut auth = AuthConfig::new("https://unit.test", "unit");
        auth.argon2 = Argon2Config::new(1024, 1, 1);
        let config = HttpConfig::default().with_body_limit(body_limit);
        Tenancy::in_memory(Catalog::new(["projects:read"]).unwrap(), auth, config)
            .await
            .unwrap()
    }

    async fn json_of<B: MessageBody>(response: ServiceResponse<B>) -> Value {
        serde_json::from_slice(&read_body(response).await).unwrap()
    }

    fn header<B>(response: &ServiceResponse<B>, name: &str) -> Option<String> {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn responses_keep_status_every_header_and_body() {
        let mut response = http::Response::new(Bytes::from_static(b"{\"ok\":true}"));
        *response.status_mut() = http::StatusCode::CREATED;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        headers.append(http::header::SET_COOKIE, "a=1; Path=/".parse().unwrap());
        headers.append(http::header::SET_COOKIE, "b=2; Path=/auth".parse().unwrap());
        headers.insert(http::header::CACHE_CONTROL, "no-store".parse().unwrap());
        let converted = into_actix(response);
        assert_eq!(converted.status(), StatusCode::CREATED);
        let cookies: Vec<&str> = converted
            .headers()
            .get_all(header::SET_COOKIE)
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/auth"]);
        assert_eq!(
            converted.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        assert_eq!(
            converted.headers().get(header::CACHE_CONTROL).unwrap(),
            "no-store"
        );
        let body = actix_web::body::to_bytes(converted.into_body());
        assert_eq!(run(body).unwrap(), Bytes::from_static(b"{\"ok\":true}"));
    }

    #[test]
    fn problems_render_exactly() {
        let problem = Problem::bad_request("no").with_www_authenticate("Bearer realm=\"x\"".into());
        let rejection = Rejection::from(problem.clone());
        assert_eq!(rejection.status_code(), StatusCode::BAD_REQUEST);
        let response = rejection.error_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer realm=\"x\""
        );
        let body = run(actix_web::body::to_bytes(response.into_body())).unwrap();
        assert_eq!(body, problem.to_response().into_body());
        assert_eq!(rejection.to_string(), problem.to_string());
    }

    #[test]
    fn requests_keep_method_uri_repeated_headers_and_peer() {
        let request = TestRequest::delete()
            .uri("/members/abc?cascade=true")
            .append_header(("cookie", "a=1"))
            .append_header(("cookie", "b=2"))
            .insert_header(("authorization", "Bearer t"))
            .peer_addr("10.1.2.3:4567".parse().unwrap())
            .to_http_request();
        let head = head_of(&request).unwrap();
        assert_eq!(head.method, http::Method::DELETE);
        assert_eq!(head.uri, "/members/abc?cascade=true");
        let cookies: Vec<&str> = head
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(head.headers[http::header::AUTHORIZATION], "Bearer t");
        assert_eq!(head.peer, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(head.borrowed().cookie("b"), Some("2"));
    }

    #[test]
    fn path_parameters_are_decoded() {
        run(async {
            async fn echo(request: HttpRequest) -> impl Responder {
                params_of(&request)["name"].clone()
            }
            let app = init_service(App::new().route("/roles/{name}", web::get().to(echo))).await;
            for (uri, name) in [
                ("/roles/team%20lead%2Fops", "team lead/ops"),
                ("/roles/a%2Bb+c", "a+b+c"),
                ("/roles/100%25%2541", "100%%41"),
                ("/roles/caf%C3%A9", "café"),
            ] {
                let request = TestRequest::get().uri(uri).to_request();
                let body = read_body(call_service(&app, request).await).await;
                assert_eq!(body, name.as_bytes(), "{uri}");
            }
        });
    }

    #[test]
    fn bodies_past_the_limit_answer_413() {
        run(async {
            let app = init_service(App::new().configure(configure(tenancy(16).await))).await;
            // Refused on the declared length.
            let declared = TestRequest::post()
                .uri("/auth/login")
                .insert_header(("content-type", "application/json"))
                .set_payload(vec![b' '; 17])
                .to_request();
            let response = call_service(&app, declared).await;
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(
                header(&response, "content-type").as_deref(),
                Some(PROBLEM_JSON)
            );
            let body = json_of(response).await;
            assert_eq!(body["type"], "urn:tenancy:problem:payload-too-large");
            // Refused while reading, as a body longer than it claims to be.
            let streamed = TestRequest::post()
                .uri("/auth/login")
                .insert_header(("content-type", "application/json"))
                .set_payload(vec![b' '; 64])
                .insert_header(("content-length", "2"))
                .to_request();
            let response = call_service(&app, streamed).await;
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
            // Within the limit, the route itself answers.
            let small = TestRequest::post()
                .uri("/auth/login")
                .insert_header(("content-type", "application/json"))
                .set_payload("{")
                .to_request();
            let response = call_service(&app, small).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        });
    }

    #[test]
    fn literal_paths_win_over_parameters() {
        run(async {
            let app = init_service(App::new().configure(configure(tenancy(1024).await))).await;
            // `POST /invitations/accept` is not taken by `DELETE /invitations/{id}`.
            let request = TestRequest::post()
                .uri("/invitations/accept")
                .insert_header(("content-type", "application/json"))
                .set_payload("{}")
                .to_request();
            let response = call_service(&app, request).await;
            assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        });
    }

    #[test]
    fn get_routes_answer_head() {
        run(async {
            let app = init_service(App::new().configure(configure(tenancy(1024).await))).await;
            let request = TestRequest::default()
                .method(Method::HEAD)
                .uri("/.well-known/jwks.json")
                .to_request();
            let response = call_service(&app, request).await;
            assert_eq!(response.status(), StatusCode::OK);
            let request = TestRequest::put()
                .uri("/.well-known/jwks.json")
                .to_request();
            let response = call_service(&app, request).await;
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert!(header(&response, "allow").unwrap().contains("GET"));
        });
    }

    #[test]
    fn json_bodies_fail_like_the_sdk_routes() {
        run(async {
            async fn names(names: web::Json<Vec<String>>) -> impl Responder {
                names.join(",")
            }
            let app = init_service(
                App::new()
                    .app_data(json_config(16))
                    .route("/names", web::post().to(names)),
            )
            .await;
            for (content_type, body, status, kind) in [
                ("application/json", r#"["a","b"]"#, 200, None),
                (
                    "text/plain",
                    r#"["a"]"#,
                    415,
                    Some("unsupported-media-type"),
                ),
                ("application/json", r#"["a""#, 400, Some("bad-request")),
                ("application/json", r#"{"a":1}"#, 422, Some("validation")),
                (
                    "application/json",
                    r#"["aaaaaaaaaaaaaaaa"]"#,
                    413,
                    Some("payload-too-large"),
                ),
            ] {
                let request = TestRequest::post()
                    .uri("/names")
                    .insert_header(("content-type", content_type))
                    .set_payload(body)
                    .to_request();
                let response = call_service(&app, request).await;
                assert_eq!(response.status().as_u16(), status, "{body}");
                if let Some(kind) = kind {
                    assert_eq!(
                        header(&response, "content-type").as_deref(),
                        Some(PROBLEM_JSON)
                    );
                    let problem = json_of(response).await;
                    assert_eq!(
                        problem["type"],
                        format!("urn:tenancy:problem:{kind}"),
                        "{body}"
                    );
                } else {
                    assert_eq!(read_body(response).await, "a,b");
                }
            }
        });
    }

    #[test]
    fn json_extractor_reads_bodies_like_the_sdk_routes() {
        use tenancy_http::testkit::json_bodies::{CASES, Input};
        run(async {
            async fn echo(Json(input): Json<Input>) -> Json<Value> {
                Json(json!({ "name": input.name, "size": input.size }))
            }
            let app = init_service(App::new().route("/", web::post().to(echo))).await;
            let post_with = |content_type: &str, body: String| {
                TestRequest::post()
                    .uri("/")
                    .insert_header(("content-type", content_type))
                    .set_payload(body)
                    .to_request()
            };
            for case in CASES {
                let response =
                    call_service(&app, post_with(case.content_type, case.body.to_owned())).await;
                assert_eq!(response.status().as_u16(), case.status, "{case:?}");
                let content_type = header(&response, "content-type");
                let body = json_of(response).await;
                match case.problem {
                    None => {
                        assert_eq!(content_type.as_deref(), Some("application/json"));
                        assert_eq!(body["name"], "a", "{case:?}");
                    }
                    Some(kind) => {
                        assert_eq!(content_type.as_deref(), Some(PROBLEM_JSON));
                        assert_eq!(body["type"], format!("urn:tenancy:problem:{kind}"));
                    }
                }
                if let Some(field) = case.field {
                    assert_eq!(body["errors"][0]["field"], field, "{case:?}");
                }
            }
            // Outside the middleware, the default 64 KiB limit.
            let oversized = format!(r#"{{"name":"{}"}}"#, "a".repeat(70 * 1024));
            let response = call_service(&app, post_with("application/json", oversized)).await;
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        });
    }

    async fn whoami(
        ctx: Context,
        caller: Caller,
        tenant: Tenant,
        session: Session,
    ) -> impl Responder {
        assert_eq!(caller.tenant_id, tenant.0.tenant_id());
        assert_eq!(ctx.principal().session_id, Some(session.0));
        ctx.tenant_id().to_string()
    }

    async fn key_only(_key: ApiKey) -> impl Responder {
        "key"
    }

    async fn maybe(caller: Option<Caller>) -> impl Responder {
        if caller.is_some() {
            "caller"
        } else {
            "anonymous"
        }
    }

    #[test]
    fn middleware_and_extractors() {
        run(async {
            let tenancy = tenancy(64 * 1024).await;
            let app = init_service(
                App::new()
                    .configure(configure(tenancy.clone()))
                    .route("/open", web::get().to(maybe))
                    .route("/unwrapped", web::get().to(whoami))
                    .service(
                        web::scope("/unguarded")
                            .route("", web::get().to(whoami))
                            .wrap(require(tenancy.permission("projects:read").unwrap())),
                    )
                    .service(
                        web::scope("/app")
                            .route("/whoami", web::get().to(whoami))
                            .route("/key", web::get().to(key_only))
                            .route("/maybe", web::get().to(maybe))
                            .service(
                                web::scope("/read")
                                    .route("", web::get().to(whoami))
                                    .wrap(require(tenancy.permission("projects:read").unwrap())),
                            )
                            .service(
                                web::scope("/counted")
                                    .route("", web::get().to(whoami))
                                    .wrap(guard(tenancy_http::testkit::Countdown::new(2))),
                            )
                            .wrap(TenancyMiddleware::new(tenancy.clone())),
                    ),
            )
            .await;

            // No credentials: the middleware answers the bearer challenge.
            let response =
                call_service(&app, TestRequest::get().uri("/app/whoami").to_request()).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(
                header(&response, "www-authenticate").as_deref(),
                Some("Bearer realm=\"tenancy\"")
            );
            assert_eq!(
                header(&response, "content-type").as_deref(),
                Some(PROBLEM_JSON)
            );
            assert_eq!(
                json_of(response).await["type"],
                "urn:tenancy:problem:unauthorized"
            );

            // Without the middleware: a 500 for the developer, `None` for the option.
            let response =
                call_service(&app, TestRequest::get().uri("/unwrapped").to_request()).await;
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(
                json_of(response).await["type"],
                "urn:tenancy:problem:internal"
            );
            let response =
                call_service(&app, TestRequest::get().uri("/unguarded").to_request()).await;
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let response = call_service(&app, TestRequest::get().uri("/open").to_request()).await;
            assert_eq!(read_body(response).await, "anonymous");

            // A registered owner.
            let register = TestRequest::post()
                .uri("/auth/register")
                .set_json(json!({
                    "email": "ada@unit.test", "password": "correct horse battery", "display_name": "Ada",
                    "tenant": { "slug": "unit", "name": "Unit" }
                }))
                .to_request();
            let response = call_service(&app, register).await;
            assert_eq!(response.status(), StatusCode::CREATED);
            let registered = json_of(response).await;
            let token = registered["access_token"].as_str().unwrap().to_owned();
            let tenant = registered["tenant_id"].as_str().unwrap().to_owned();
            let bearer = ("authorization", format!("Bearer {token}"));

            for path in ["/app/whoami", "/app/read"] {
                let request = TestRequest::get()
                    .uri(path)
                    .insert_header(bearer.clone())
                    .to_request();
                let response = call_service(&app, request).await;
                assert_eq!(response.status(), StatusCode::OK, "{path}");
                assert_eq!(read_body(response).await, tenant.as_bytes(), "{path}");
            }
            // A guard admits with its headers, then refuses with its problem.
            for left in ["1", "0"] {
                let request = TestRequest::get()
                    .uri("/app/counted")
                    .insert_header(bearer.clone())
                    .to_request();
                let response = call_service(&app, request).await;
                assert_eq!(response.status(), StatusCode::OK);
                assert_eq!(header(&response, "x-left").as_deref(), Some(left));
            }
            let request = TestRequest::get()
                .uri("/app/counted")
                .insert_header(bearer.clone())
                .to_request();
            let response = call_service(&app, request).await;
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(header(&response, "x-left").as_deref(), Some("0"));
            assert_eq!(
                json_of(response).await["type"],
                "urn:tenancy:problem:rate-limited"
            );
            let request = TestRequest::get()
                .uri("/app/maybe")
                .insert_header(bearer.clone())
                .to_request();
            assert_eq!(read_body(call_service(&app, request).await).await, "caller");
            let request = TestRequest::get()
                .uri("/app/key")
                .insert_header(bearer.clone())
                .to_request();
            let response = call_service(&app, request).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            assert_eq!(
                json_of(response).await["type"],
                "urn:tenancy:problem:forbidden"
            );
        });
    }

    #[test]
    fn unknown_paths_methods_and_bad_path_parameters_are_problems() {
        run(async {
            async fn item(Path(id): Path<u64>) -> String {
                id.to_string()
            }
            let tenancy = tenancy(64 * 1024).await;
            let app = actix_web::test::init_service(
                App::new()
                    .route("/items/{id}", web::get().to(item))
                    .configure(configure(tenancy))
                    .default_service(web::to(not_found)),
            )
            .await;
            for (method, uri, status, kind) in [
                ("GET", "/nowhere", 404, "not-found"),
                ("DELETE", "/auth/login", 405, "method-not-allowed"),
                ("GET", "/items/%ff%fe", 400, "bad-request"),
                ("GET", "/items/not-a-number", 400, "bad-request"),
            ] {
                let request = TestRequest::default()
                    .method(actix_web::http::Method::from_bytes(method.as_bytes()).unwrap())
                    .uri(uri)
                    .to_request();
                let response = actix_web::test::call_service(&app, request).await;
                assert_eq!(response.status().as_u16(), status, "{method} {uri}");
                assert_eq!(
                    header(&response, "content-type").as_deref(),
                    Some(PROBLEM_JSON),
                    "{method} {uri}"
                );
                if status == 405 {
                    assert_eq!(header(&response, "allow").as_deref(), Some("POST"));
                }
                let body = json_of(response).await;
                assert_eq!(
                    body["type"],
                    format!("urn:tenancy:problem:{kind}"),
                    "{method} {uri}"
                );
            }
        });
    }
}
