//! axum integration of the tenancy SDK.
//!
//! - [`router`]: the SDK's routes (register, login, refresh, sessions, API
//!   keys, members, invitations, roles, policies, explain, audit, JWKS) as a
//!   [`Router`] to merge or nest into your app.
//! - [`TenancyLayer`]: authenticates your own routes (bearer token, API key
//!   or cookie), resolves and checks the tenant, and puts the
//!   [`RequestContext`] in the request extensions.
//! - [`IdempotencyLayer`]: `Idempotency-Key` on your own routes (replay,
//!   `409` while in flight, `422` on reuse), inside a [`TenancyLayer`].
//! - [`require`]: a layer that requires a permission on a route or group.
//! - Extractors: [`Context`], [`Caller`], [`Tenant`], [`Session`],
//!   [`ApiKey`]; `Option<Caller>` for routes that serve anonymous callers too;
//!   [`Json`] for your own bodies, failing like the SDK's routes (`400`,
//!   `413`, `415`, `422` with the field). Rejections are RFC 9457 problems.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tenancy_axum::{Context, TenancyLayer, require};
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
//! let app: Router = Router::new()
//!     .route("/projects", get(projects).layer(require(tenancy.permission("projects:read")?)))
//!     .layer(TenancyLayer::new(tenancy.clone()))
//!     .merge(tenancy_axum::router(tenancy));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, OptionalFromRequestParts, OriginalUri,
    RawPathParams, Request,
};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use bytes::Bytes;
use http::request::Parts;
use http::{StatusCode, header};
use serde::de::DeserializeOwned;
use tenancy_http::auth::{Principal, Subject};
use tenancy_http::core::{ApiKeyId, SessionId, TenantScope};
use tenancy_http::{
    ApiRequest, Guard, HttpConfig, Problem, ProblemKind, RequestContext, RequestHead, Route,
    RoutePermission, Tenancy, parse_json,
};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

mod idempotency;

pub use idempotency::{IdempotencyLayer, IdempotencyService};

/// A [`Problem`] as an axum response.
#[derive(Debug, Clone)]
pub struct Rejection(pub Problem);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        into_axum(self.0.to_response())
    }
}

impl From<Problem> for Rejection {
    fn from(problem: Problem) -> Self {
        Self(problem)
    }
}

fn into_axum(response: http::Response<Bytes>) -> Response {
    response.map(Body::from)
}

fn peer(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
}

/// The pipeline's view of a request. The URI is the one the client sent,
/// before any `nest` stripped a prefix, so path segments count alike under
/// axum and actix.
fn head_of_request(request: &Request) -> RequestHead<'_> {
    let uri = request
        .extensions()
        .get::<OriginalUri>()
        .map_or(request.uri(), |OriginalUri(uri)| uri);
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    RequestHead::new(request.method(), uri, request.headers(), peer)
}

/// The SDK's routes as a router, ready to merge into your app. For the
/// client address, serve with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router<S>(tenancy: Tenancy) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut by_path: BTreeMap<&'static str, MethodRouter<S>> = BTreeMap::new();
    for route in tenancy.routes() {
        let Ok(filter) = MethodFilter::try_from(route.method.clone()) else {
            continue;
        };
        let path = route.path;
        let tenancy = tenancy.clone();
        let route = Arc::new(route);
        let handler = move |request: Request| serve(tenancy.clone(), route.clone(), request);
        let method_router = match by_path.remove(path) {
            Some(existing) => existing.on(filter, handler),
            None => on(filter, handler),
        };
        by_path.insert(path, method_router);
    }
    by_path
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods)
        })
        .method_not_allowed_fallback(method_not_allowed)
}

/// The app's fallback for paths no route serves: `404` as a problem.
/// Mount it on your own router (the SDK's [`router`] leaves the fallback
/// to you, since axum refuses to merge two routers that both have one):
///
/// ```
/// use axum::Router;
/// let app: Router = Router::new()
///     .fallback(tenancy_axum::not_found)
///     .method_not_allowed_fallback(tenancy_axum::method_not_allowed);
/// ```
pub async fn not_found() -> Response {
    Rejection(Problem::not_found().with_detail("no route serves this path")).into_response()
}

/// A `405` problem for a path served with other methods (axum adds the
/// `Allow` header). [`router`] installs it on the SDK's routes; call
/// `Router::method_not_allowed_fallback` with it after adding your own.
pub async fn method_not_allowed(method: http::Method) -> Response {
    let problem = Problem::of(ProblemKind::MethodNotAllowed)
        .with_detail(format!("this path does not answer {method}"));
    Rejection(problem).into_response()
}

/// The body, at most `limit` bytes: a declared `Content-Length` past the
/// limit is refused before anything is read, a longer stream as soon as it
/// passes the limit (`413` both ways); a body that breaks off is `400`.
async fn read_body(parts: &Parts, body: Body, limit: usize) -> Result<Bytes, Problem> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(Problem::payload_too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_long = std::error::Error::source(&error)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_long {
            Problem::payload_too_large(limit)
        } else {
            tracing::debug!(%error, "request body not read");
            Problem::bad_request("the request body could not be read")
        }
    })
}

async fn serve(tenancy: Tenancy, route: Arc<Route>, request: Request) -> Response {
    let span = tenancy_http::trace::request_span(request.method().as_str(), request.uri().path());
    serve_in_span(tenancy, route, request)
        .instrument(span)
        .await
}

async fn serve_in_span(tenancy: Tenancy, route: Arc<Route>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let body = match read_body(&parts, body, tenancy.config().body_limit).await {
        Ok(body) => body,
        Err(problem) => return Rejection(problem).into_response(),
    };
    let params: HashMap<String, String> =
        match RawPathParams::from_request_parts(&mut parts, &()).await {
            Ok(raw) => raw
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            Err(_) => HashMap::new(),
        };
    let peer = peer(&parts);
    let request =
        ApiRequest::new(parts.method, parts.uri, parts.headers, peer, body).with_params(params);
    into_axum(tenancy.dispatch(&route, request).await)
}

/// Authenticates every request it wraps and resolves its tenant; puts the
/// [`RequestContext`] in the request extensions for the extractors, or
/// answers the problem (`401`, `403`, `404`) itself.
#[derive(Clone, Debug)]
pub struct TenancyLayer {
    tenancy: Tenancy,
}

impl TenancyLayer {
    /// A layer over `tenancy`.
    pub fn new(tenancy: Tenancy) -> Self {
        Self { tenancy }
    }
}

impl<S> Layer<S> for TenancyLayer {
    type Service = TenancyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenancyService {
            inner,
            tenancy: self.tenancy.clone(),
        }
    }
}

/// The service of [`TenancyLayer`].
#[derive(Clone, Debug)]
pub struct TenancyService<S> {
    inner: S,
    tenancy: Tenancy,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request> for TenancyService<S>
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

    fn call(&mut self, mut request: Request) -> Self::Future {
        // Take the service that was driven to readiness; leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tenancy = self.tenancy.clone();
        let span =
            tenancy_http::trace::request_span(request.method().as_str(), request.uri().path());
        Box::pin(
            async move {
                match tenancy.authenticate(head_of_request(&request)).await {
                    Ok(context) => {
                        request.extensions_mut().insert(context);
                        inner.call(request).await
                    }
                    Err(problem) => Ok(Rejection(problem).into_response()),
                }
            }
            .instrument(span),
        )
    }
}

/// A layer requiring `permission` (checked against the tenant's roles and
/// policies) on the routes it wraps; place it inside a [`TenancyLayer`].
/// The permission comes from [`Tenancy::permission`], which checks the
/// catalog declares it when the app is assembled.
pub fn require(permission: RoutePermission) -> RequireLayer {
    RequireLayer { permission }
}

/// See [`require`].
#[derive(Clone, Copy, Debug)]
pub struct RequireLayer {
    permission: RoutePermission,
}

impl<S> Layer<S> for RequireLayer {
    type Service = RequireService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireService {
            inner,
            permission: self.permission,
        }
    }
}

/// The service of [`RequireLayer`].
#[derive(Clone, Debug)]
pub struct RequireService<S> {
    inner: S,
    permission: RoutePermission,
}

impl<S> Service<Request> for RequireService<S>
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
        let permission = self.permission;
        Box::pin(async move {
            let allowed = match request.extensions().get::<RequestContext>() {
                Some(context) => context.require(permission.as_str()).await,
                None => Err(missing_layer()),
            };
            match allowed {
                Ok(()) => inner.call(request).await,
                Err(problem) => Ok(Rejection(problem).into_response()),
            }
        })
    }
}

/// A layer running `guard` (an entitlement, a rate limit, a quota: see
/// [`Guard`]) on the routes it wraps, after the [`TenancyLayer`] and any
/// [`require`] placed outside it. A refusal answers the guard's problem;
/// an admission's headers are added to the handler's answer.
pub fn guard(guard: impl Guard) -> GuardLayer {
    GuardLayer {
        guard: Arc::new(guard),
    }
}

/// A layer admitting only tenants whose plan includes `feature` (a
/// feature of the billing catalog): others get `402`
/// `urn:tenancy:problem:entitlement-required` naming the feature and the
/// plans that include it. [`guard`] over tenancy-billing's `Entitlement`;
/// needs the `BillingModule` on the `Tenancy` (feature `billing`).
#[cfg(feature = "billing")]
pub fn require_entitlement(feature: impl Into<std::borrow::Cow<'static, str>>) -> GuardLayer {
    guard(tenancy_billing::http::Entitlement::new(feature))
}

/// See [`guard`].
#[derive(Clone)]
pub struct GuardLayer {
    guard: Arc<dyn Guard>,
}

impl std::fmt::Debug for GuardLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardLayer")
            .field("guard", &self.guard.name())
            .finish()
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The service of [`GuardLayer`].
#[derive(Clone)]
pub struct GuardService<S> {
    inner: S,
    guard: Arc<dyn Guard>,
}

impl<S> std::fmt::Debug for GuardService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardService")
            .field("guard", &self.guard.name())
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request> for GuardService<S>
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
        let guard = self.guard.clone();
        Box::pin(async move {
            let admitted = match request.extensions().get::<RequestContext>() {
                Some(context) => guard.check(context).await,
                None => Err(missing_layer()),
            };
            match admitted {
                Ok(admission) => {
                    let mut response = inner.call(request).await?;
                    admission.apply(response.headers_mut());
                    Ok(response)
                }
                Err(problem) => Ok(Rejection(problem).into_response()),
            }
        })
    }
}

/// A route asked for the context but no [`TenancyLayer`] runs before it:
/// logged for the developer, answered as a plain 500.
fn missing_layer() -> Problem {
    tracing::error!("a route needing the tenancy context is not wrapped in TenancyLayer");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal server error",
    )
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

impl<S: Send + Sync> FromRequestParts<S> for Context {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .map(Context)
            .ok_or_else(|| Rejection(missing_layer()))
    }
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller(pub Arc<Principal>);

impl Deref for Caller {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Context(context) = Context::from_request_parts(parts, state).await?;
        Ok(Caller(context.principal().clone()))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestContext>()
            .map(|context| Caller(context.principal().clone())))
    }
}

/// The tenant the request acts in.
#[derive(Clone, Copy, Debug)]
pub struct Tenant(pub TenantScope);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Context(context) = Context::from_request_parts(parts, state).await?;
        Ok(Tenant(*context.scope()))
    }
}

/// The caller's session: only for signed-in users (`403` for API keys).
#[derive(Clone, Copy, Debug)]
pub struct Session(pub SessionId);

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Caller(principal) =
            <Caller as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        principal
            .session_id
            .map(Session)
            .ok_or_else(|| Rejection(Problem::forbidden("this route needs a signed-in user")))
    }
}

/// The calling API key: only for API keys (`403` for users).
#[derive(Clone, Copy, Debug)]
pub struct ApiKey(pub ApiKeyId);

impl<S: Send + Sync> FromRequestParts<S> for ApiKey {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Caller(principal) =
            <Caller as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        match principal.subject {
            Subject::ApiKey(id) => Ok(ApiKey(id)),
            _ => Err(Rejection(Problem::forbidden("this route needs an API key"))),
        }
    }
}

/// A JSON request body as `T`, read and checked the way the SDK's routes
/// read theirs (see [`parse_json`]): `415` unless the content type is JSON,
/// `413` past [`HttpConfig::body_limit`] (of the [`TenancyLayer`]'s
/// configuration, or the default 64 KiB on routes outside it), `400` for
/// malformed JSON, `422` naming the field that is missing or of the wrong
/// type. Used like `axum::Json` (destructuring, `Deref`); as a response it
/// serializes the same.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json<T>(pub T);

impl<T> std::ops::Deref for Json<T> {
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

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let limit = parts.extensions.get::<RequestContext>().map_or_else(
            || HttpConfig::default().body_limit,
            |context| context.tenancy().config().body_limit,
        );
        let body = read_body(&parts, body, limit).await?;
        Ok(Json(parse_json(&parts.headers, &body)?))
    }
}

/// Path parameters, deserialized like `axum::extract::Path`, rejecting
/// like the SDK's routes: a problem (`400` naming what did not parse, or a
/// path that is not UTF-8) instead of a plain-text answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Path<T>(pub T);

impl<T> std::ops::Deref for Path<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::PathRejection;
        match <axum::extract::Path<T> as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
        {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => Err(Rejection(
                Problem::bad_request(format!("invalid path parameter: {}", error.body_text())),
            )),
            Err(PathRejection::MissingPathParams(_)) => {
                // A handler asking for parameters its route does not have.
                tracing::error!("a handler asked for path parameters its route does not declare");
                Err(Rejection(Problem::of(ProblemKind::Internal)))
            }
            Err(other) => Err(Rejection(Problem::bad_request(other.body_text()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::routing::{get, post};
    use serde_json::Value;
    use tenancy_http::auth::{ClientInfo, NewApiKey, Password, Registration, Scope};
    use tenancy_http::core::{
        AuditContext, Email, NewTenant, NewUser, Slug, TenantName, TenantStore as _,
    };
    use tower::ServiceExt as _;

    async fn tenancy() -> Tenancy {
        let (catalog, auth, http) = tenancy_http::testkit::scenario_config();
        Tenancy::in_memory(catalog, auth, http).await.unwrap()
    }

    /// A registered owner's bearer token.
    async fn owner_token(tenancy: &Tenancy) -> String {
        let registered = tenancy
            .auth()
            .register(
                Registration {
                    user: NewUser::new(Email::new("ada@acme.example").unwrap()),
                    password: Password::new("correct horse battery staple"),
                    tenant: NewTenant::new(
                        Slug::new("acme").unwrap(),
                        TenantName::new("Acme").unwrap(),
                    ),
                },
                &ClientInfo::default(),
            )
            .await
            .unwrap();
        format!("Bearer {}", registered.access_token.token)
    }

    async fn send(
        app: &Router,
        request: http::Request<Body>,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, headers, json)
    }

    fn get_with(uri: &str, authorization: Option<&str>) -> http::Request<Body> {
        let mut builder = http::Request::get(uri);
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn layer_answers_problems_and_hands_the_context_to_extractors() {
        let tenancy = tenancy().await;
        let token = owner_token(&tenancy).await;
        async fn whoami(ctx: Context, Tenant(scope): Tenant, Session(_): Session) -> String {
            assert_eq!(ctx.tenant_id(), scope.tenant_id());
            ctx.tenant_id().to_string()
        }
        async fn key_only(ApiKey(id): ApiKey) -> String {
            id.to_string()
        }
        let app = Router::new()
            .route("/whoami", get(whoami))
            .route("/key", get(key_only))
            .route(
                "/guarded",
                get(|| async { "ok" })
                    .layer(require(tenancy.permission("projects:delete").unwrap())),
            )
            .layer(TenancyLayer::new(tenancy.clone()));

        let (status, headers, body) = send(&app, get_with("/whoami", None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        assert_eq!(headers[header::CONTENT_TYPE], tenancy_http::PROBLEM_JSON);
        assert_eq!(body["status"], 401);

        let (status, _, _) = send(&app, get_with("/whoami", Some("Bearer garbage"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let (status, _, _) = send(&app, get_with("/whoami", Some(&token))).await;
        assert_eq!(status, StatusCode::OK);

        let (status, _, body) = send(&app, get_with("/key", Some(&token))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["detail"], "this route needs an API key");

        // The owner holds every permission of the catalog.
        let (status, _, _) = send(&app, get_with("/guarded", Some(&token))).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn require_refuses_what_the_caller_may_not_do_with_403() {
        let tenancy = tenancy().await;
        let token = owner_token(&tenancy).await;
        let tenant = tenancy
            .directory()
            .backend()
            .find_tenant_by_slug(&Slug::new("acme").unwrap())
            .await
            .unwrap()
            .unwrap()
            .id;
        let (_, secret) = tenancy
            .auth()
            .create_api_key(
                &TenantScope::assume_resolved(tenant),
                NewApiKey {
                    name: "reader".into(),
                    scopes: vec![Scope::new("projects:read").unwrap()],
                    expires_at: None,
                },
                &AuditContext::system(),
            )
            .await
            .unwrap();
        let key = format!("Bearer {}", secret.expose_secret());
        let app = Router::new()
            .route(
                "/read",
                get(|| async { "ok" }).layer(require(tenancy.permission("projects:read").unwrap())),
            )
            .route(
                "/delete",
                get(|| async { "ok" })
                    .layer(require(tenancy.permission("projects:delete").unwrap())),
            )
            .layer(TenancyLayer::new(tenancy.clone()));
        let (status, _, _) = send(&app, get_with("/read", Some(&key))).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, body) = send(&app, get_with("/delete", Some(&key))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["errors"][0]["field"], "permission");
        assert_eq!(body["errors"][0]["message"], "projects:delete");
        // A permission outside the catalog is refused when the app is
        // assembled, not answered `403` to everyone.
        let unknown = tenancy.permission("reports:export").unwrap_err();
        assert_eq!(unknown.name(), "reports:export");
        let (status, _, _) = send(&app, get_with("/read", Some(&token))).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_guard_admits_with_headers_and_refuses_with_its_problem() {
        let tenancy = tenancy().await;
        let token = owner_token(&tenancy).await;
        let app = Router::new()
            .route(
                "/counted",
                get(|| async { "ok" }).layer(guard(tenancy_http::testkit::Countdown::new(2))),
            )
            .layer(TenancyLayer::new(tenancy.clone()));
        for left in ["1", "0"] {
            let (status, headers, _) = send(&app, get_with("/counted", Some(&token))).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers["x-left"], left);
        }
        let (status, headers, body) = send(&app, get_with("/counted", Some(&token))).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers["x-left"], "0");
        assert_eq!(body["type"], "urn:tenancy:problem:rate-limited");
        // Unauthenticated requests never reach the guard.
        let (status, _, _) = send(&app, get_with("/counted", None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn extractors_without_the_layer() {
        async fn needs_context(_: Context) -> &'static str {
            "unreachable"
        }
        async fn maybe(caller: Option<Caller>) -> &'static str {
            if caller.is_some() {
                "caller"
            } else {
                "anonymous"
            }
        }
        let app = Router::new()
            .route("/context", get(needs_context))
            .route("/maybe", get(maybe));
        let (status, _, body) = send(&app, get_with("/context", None)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["title"], "Internal server error");
        let response = app.clone().oneshot(get_with("/maybe", None)).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 64)
            .await
            .unwrap();
        assert_eq!(&body[..], b"anonymous");
    }

    #[tokio::test]
    async fn json_bodies_fail_like_the_sdk_routes() {
        use tenancy_http::testkit::json_bodies::{CASES, Input};
        let app = Router::new().route("/", post(|Json(_): Json<Input>| async { "ok" }));
        let post_with = |content_type: &str, body: &str| {
            http::Request::post("/")
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body.to_owned()))
                .unwrap()
        };
        for case in CASES {
            let (status, _, problem) = send(&app, post_with(case.content_type, case.body)).await;
            assert_eq!(status.as_u16(), case.status, "{case:?}: {problem}");
            if let Some(kind) = case.problem {
                assert_eq!(problem["type"], format!("urn:tenancy:problem:{kind}"));
            }
            if let Some(field) = case.field {
                assert_eq!(problem["errors"][0]["field"], field, "{case:?}");
            }
        }
        let oversized = format!(r#"{{"name":"{}"}}"#, "a".repeat(70 * 1024));
        let (status, _, _) = send(&app, post_with("application/json", &oversized)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        // Streamed past the limit, with no Content-Length.
        let chunks = (0..80).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 1024])));
        let streamed = http::Request::post("/")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap();
        let (status, _, _) = send(&app, streamed).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        // A body that breaks off is the client's fault, not a size problem.
        let broken = [
            Ok(Bytes::from_static(b"{")),
            Err(std::io::Error::other("connection reset")),
        ];
        let broken = http::Request::post("/")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures_util::stream::iter(broken)))
            .unwrap();
        let (status, _, _) = send(&app, broken).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn unknown_paths_methods_and_bad_path_parameters_are_problems() {
        async fn item(Path(id): Path<u64>) -> String {
            id.to_string()
        }
        let tenancy = tenancy().await;
        let app: Router = Router::new()
            .route("/items/{id}", get(item))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .merge(router(tenancy));
        let request = |method: &str, uri: &str| {
            http::Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap()
        };
        for (method, uri, status, kind) in [
            ("GET", "/nowhere", 404, "not-found"),
            ("DELETE", "/auth/login", 405, "method-not-allowed"),
            ("POST", "/items/7", 405, "method-not-allowed"),
            ("GET", "/items/%ff%fe", 400, "bad-request"),
            ("GET", "/items/not-a-number", 400, "bad-request"),
        ] {
            let response = app.clone().oneshot(request(method, uri)).await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{method} {uri}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                tenancy_http::PROBLEM_JSON
            );
            if status == 405 {
                assert!(
                    response.headers().contains_key(header::ALLOW),
                    "{method} {uri}"
                );
            }
            let body = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                body["type"],
                format!("urn:tenancy:problem:{kind}"),
                "{method} {uri}"
            );
        }
        let allow = app
            .clone()
            .oneshot(request("DELETE", "/auth/login"))
            .await
            .unwrap();
        assert_eq!(allow.headers()[header::ALLOW], "POST");
    }
}
