//! Idempotent requests: the `Idempotency-Key` header
//! (draft-ietf-httpapi-idempotency-key-header), shared by the SDK's routes
//! ([`crate::Tenancy::dispatch`]) and the framework layers that cover a
//! host's own routes (`tenancy_axum::IdempotencyLayer`,
//! `tenancy_actix::IdempotencyMiddleware`).
//!
//! | request | answer |
//! | --- | --- |
//! | first with a key | runs; its response is stored (see below) |
//! | same key, same method, target and body, after it completed | the stored status, headers and body, with `Idempotent-Replayed: true`; the handler does not run |
//! | same key, another method, target or body | `422 idempotency-key-reused` |
//! | same key while the first still runs | `409 idempotency-key-in-use` with `Retry-After: 1` |
//! | same key after its lifetime (24 h by default) | runs again, as a first request |
//! | a malformed key (not a string, over 255 characters, not printable ASCII, several values) | `400 idempotency-key-invalid` |
//!
//! Stored: the first response whose status is below 500, except `401`,
//! `403`, `408` and `429` — with its `Content-Type`, `Location` and `ETag`
//! and its body. Not stored (the key is released, so a retry runs again):
//! `5xx`, those four, answers made before the handler ran (authentication,
//! a malformed key), a body over [`IdempotencyConfig::with_max_body`] or of
//! unknown length (a stream, passed through as it is), and on the SDK's
//! routes an answer carrying a secret (a new API key, tokens, an
//! invitation: marked `Cache-Control: no-store` by its handler), which is
//! never written to the store in clear. A request whose process dies keeps
//! the key until its lease lapses ([`IdempotencyConfig::with_lease`]).
//!
//! Keys are per tenant and caller (user or API key): two tenants or two
//! callers using the same key never meet. Unauthenticated requests have no
//! caller and are not covered: the header is ignored on them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri, header};
use tenancy_auth::Subject;
use tenancy_core::{
    Claim, Clock, Fingerprint, IdempotencyKey, IdempotencyScope, IdempotencyStore, LeaseToken,
    Lifetimes, StoreError, StoredResponse,
};

use crate::pipeline::RequestContext;
use crate::problem::Problem;

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header marking a replayed answer (`true`).
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The headers stored with a response and replayed.
const STORED_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

/// How idempotent requests behave; give it to
/// [`crate::TenancyBuilder::idempotency`].
///
/// Off unless given: covering requests writes every keyed request's answer
/// to the store and needs the periodic purge, which a host should choose.
///
/// ```
/// use std::time::Duration;
/// use tenancy_http::IdempotencyConfig;
///
/// let config = IdempotencyConfig::default()
///     .with_ttl(Duration::from_secs(24 * 3600))
///     .with_lease(Duration::from_secs(30))
///     .with_max_body(128 * 1024);
/// assert_eq!(config.lease(), Duration::from_secs(30));
/// ```
#[derive(Clone)]
pub struct IdempotencyConfig {
    ttl: Duration,
    lease: Duration,
    max_body: usize,
    methods: Vec<Method>,
    sdk_routes: bool,
    purge_every: Option<Duration>,
    store: Option<Arc<dyn IdempotencyStore>>,
}

impl Default for IdempotencyConfig {
    /// Keys live 24 hours, leases 60 seconds, bodies up to 256 KiB are
    /// stored, `POST` and `PATCH` are covered on the SDK's routes too, and
    /// expired keys are purged every hour.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
            max_body: 256 * 1024,
            methods: vec![Method::POST, Method::PATCH],
            sdk_routes: true,
            purge_every: Some(Duration::from_secs(3600)),
            store: None,
        }
    }
}

impl std::fmt::Debug for IdempotencyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyConfig")
            .field("ttl", &self.ttl)
            .field("lease", &self.lease)
            .field("max_body", &self.max_body)
            .field("methods", &self.methods)
            .field("sdk_routes", &self.sdk_routes)
            .field("purge_every", &self.purge_every)
            .field("store", &self.store.is_some())
            .finish()
    }
}

impl IdempotencyConfig {
    /// How long a key and its stored answer live from the first request
    /// (default 24 hours); a retry after that runs again.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long a running request holds its key (default 60 s): if its
    /// process dies, a retry after this takes the key over. Longer than
    /// your slowest covered handler.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The largest response body stored (default 256 KiB); a larger one is
    /// answered as it is and its key released.
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The methods covered (default `POST` and `PATCH`; add `PUT` and
    /// `DELETE` if you like). Others ignore the header.
    pub fn with_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Whether the SDK's own routes (and modules' routes) are covered
    /// (default true); the framework layers cover the host's routes either
    /// way.
    pub fn with_sdk_routes(mut self, covered: bool) -> Self {
        self.sdk_routes = covered;
        self
    }

    /// How often a background task deletes expired keys (default every
    /// hour; `None` for hosts that call [`Idempotency::purge_expired`]
    /// themselves).
    pub fn with_purge_every(mut self, interval: Option<Duration>) -> Self {
        self.purge_every = interval;
        self
    }

    /// The store of keys (default: Postgres when the builder has a pool,
    /// else process memory, which serves one replica only). Give one with
    /// stores of your own ([`crate::TenancyBuilder::stores`]).
    pub fn with_store(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// How long keys live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long a running request holds its key.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The largest response body stored.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Whether the SDK's routes are covered.
    pub fn sdk_routes(&self) -> bool {
        self.sdk_routes
    }

    pub(crate) fn purge_every(&self) -> Option<Duration> {
        self.purge_every
    }

    pub(crate) fn take_store(&mut self) -> Option<Arc<dyn IdempotencyStore>> {
        self.store.take()
    }
}

/// Idempotent requests at work: a store, a clock and the
/// [`IdempotencyConfig`]. Cheap to clone; from
/// [`crate::Tenancy::idempotency`] when the builder enabled it.
#[derive(Clone)]
pub struct Idempotency {
    inner: Arc<Engine>,
}

struct Engine {
    store: Arc<dyn IdempotencyStore>,
    clock: Arc<dyn Clock>,
    config: IdempotencyConfig,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What to do with a request, from [`Idempotency::begin`].
#[derive(Debug)]
#[must_use = "a claimed key must be finished or released"]
pub enum Begin {
    /// Not covered (no key, another method, no caller): run it as usual.
    Pass,
    /// Answer this without running the handler: a replay, or a `400`,
    /// `409`, `422` or `503` problem.
    Answer(Response<Bytes>),
    /// The key is this request's: run the handler, then
    /// [`Pending::finish`] (or [`Pending::release`]).
    Proceed(Pending),
}

impl Idempotency {
    pub(crate) fn new(
        store: Arc<dyn IdempotencyStore>,
        clock: Arc<dyn Clock>,
        config: IdempotencyConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Engine {
                store,
                clock,
                config,
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &IdempotencyConfig {
        &self.inner.config
    }

    /// The store of keys.
    pub fn store(&self) -> &Arc<dyn IdempotencyStore> {
        &self.inner.store
    }

    /// Deletes expired keys now (the builder's task does it periodically).
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.inner.store.purge_expired(self.inner.clock.now()).await
    }

    /// Whether requests of `method` are covered.
    pub fn covers(&self, method: &Method) -> bool {
        self.inner.config.methods.contains(method)
    }

    /// Looks at a request before its handler runs: `uri` is the target the
    /// client sent (path and query), `body` the whole request body.
    pub async fn begin(
        &self,
        context: &RequestContext,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Begin {
        if !self.covers(method) {
            return Begin::Pass;
        }
        let mut values = headers.get_all(&IDEMPOTENCY_KEY).iter();
        let Some(value) = values.next() else {
            return Begin::Pass;
        };
        if values.next().is_some() {
            return Begin::Answer(invalid("send one Idempotency-Key").to_response());
        }
        let key = match IdempotencyKey::parse_header(value.as_bytes()) {
            Ok(key) => key,
            Err(error) => return Begin::Answer(invalid(error.to_string()).to_response()),
        };
        let scope = match IdempotencyScope::new(context.tenant_id(), caller(context), key) {
            Ok(scope) => scope,
            Err(error) => return Begin::Answer(invalid(error.to_string()).to_response()),
        };
        let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
        let fingerprint = Fingerprint::of(method.as_str(), target, body);
        let config = &self.inner.config;
        let lifetimes = Lifetimes {
            ttl: to_time(config.ttl),
            lease: to_time(config.lease),
        };
        let now = self.inner.clock.now();
        match self
            .inner
            .store
            .claim(&scope, &fingerprint, now, lifetimes)
            .await
        {
            Ok(Claim::Acquired(token)) => Begin::Proceed(Pending {
                engine: self.inner.clone(),
                scope,
                token,
                settled: false,
            }),
            Ok(Claim::Replay(stored)) => Begin::Answer(replay(stored)),
            Ok(Claim::Mismatch) => Begin::Answer(
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "Idempotency key reused",
                )
                .with_detail("this key was used for a request with another method, path or body")
                .to_response(),
            ),
            Ok(Claim::InFlight) => Begin::Answer(
                Problem::new(
                    StatusCode::CONFLICT,
                    "idempotency-key-in-use",
                    "Idempotency key in use",
                )
                .with_detail("a request with this key is still being processed; retry later")
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
                .to_response(),
            ),
            Ok(_) => Begin::Answer(Problem::of(crate::ProblemKind::Internal).to_response()),
            Err(error) => Begin::Answer(Problem::unavailable(&error).to_response()),
        }
    }

    /// Runs `handler` for an SDK route under the key of `request`, if any.
    pub(crate) async fn around<F>(
        &self,
        context: &RequestContext,
        request: &crate::ApiRequest,
        handler: F,
    ) -> Result<Response<Bytes>, Problem>
    where
        F: std::future::Future<Output = Result<Response<Bytes>, Problem>>,
    {
        let pending = match self
            .begin(
                context,
                &request.method,
                &request.uri,
                &request.headers,
                &request.body,
            )
            .await
        {
            Begin::Pass => return handler.await,
            Begin::Answer(response) => return Ok(response),
            Begin::Proceed(pending) => pending,
        };
        let response = handler
            .await
            .unwrap_or_else(|problem| problem.to_response());
        // The SDK marks answers carrying a secret `no-store`: never kept.
        let secret = response
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("no-store"));
        if secret {
            pending.release().await;
        } else {
            pending.finish_response(&response).await;
        }
        Ok(response)
    }
}

/// `400 idempotency-key-invalid`.
fn invalid(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "idempotency-key-invalid",
        "Invalid idempotency key",
    )
    .with_detail(detail)
}

/// Who is calling, as the key's scope names it.
fn caller(context: &RequestContext) -> String {
    match context.principal().subject {
        Subject::User(id) => format!("user:{id}"),
        Subject::ApiKey(id) => format!("api_key:{id}"),
        // A kind of caller added later: its own namespace, by its id text.
        other => format!(
            "other:{}",
            serde_json::to_string(&other).unwrap_or_default()
        ),
    }
}

fn to_time(duration: Duration) -> time::Duration {
    time::Duration::try_from(duration).unwrap_or(time::Duration::MAX)
}

/// A stored answer as a response, marked replayed.
fn replay(stored: StoredResponse) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(stored.body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Whether an answer of `status` is stored for replay.
pub fn is_stored_status(status: u16) -> bool {
    status < 500 && !matches!(status, 401 | 403 | 408 | 429)
}

/// A claimed key, while its request runs. Finish it with the response, or
/// release it; dropped without either (the handler panicked, the client
/// went away), it is released in the background.
pub struct Pending {
    engine: Arc<Engine>,
    scope: IdempotencyScope,
    token: LeaseToken,
    settled: bool,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// The largest body [`Self::finish`] stores.
    pub fn max_body(&self) -> usize {
        self.engine.config.max_body
    }

    /// Stores the answer (`status`, the headers `header` gives for the
    /// names stored, `body`) if it is one to store, or releases the key.
    /// A store failure is logged: the answer goes out regardless, and a
    /// retry finds the key running until its lease lapses.
    pub async fn finish(
        mut self,
        status: u16,
        header: impl Fn(&HeaderName) -> Option<String>,
        body: &[u8],
    ) {
        self.settled = true;
        if !is_stored_status(status) || body.len() > self.engine.config.max_body {
            self.release_now().await;
            return;
        }
        let headers = STORED_HEADERS
            .iter()
            .filter_map(|name| header(name).map(|value| (name.as_str().to_owned(), value)))
            .collect();
        let stored = StoredResponse {
            status,
            headers,
            body: body.to_vec(),
        };
        match self
            .engine
            .store
            .complete(&self.scope, self.token, &stored)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "an idempotent request outlived its lease; its answer was not stored"
            ),
            Err(error) => tracing::warn!(%error, "storing an idempotent answer failed"),
        }
    }

    /// [`Self::finish`] with an `http` response.
    pub async fn finish_response(self, response: &Response<Bytes>) {
        let headers = response.headers();
        self.finish(
            response.status().as_u16(),
            |name| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            },
            response.body(),
        )
        .await;
    }

    /// Releases the key without storing anything: a retry runs again.
    pub async fn release(mut self) {
        self.settled = true;
        self.release_now().await;
    }

    async fn release_now(&self) {
        if let Err(error) = self.engine.store.release(&self.scope, self.token).await {
            tracing::warn!(%error, "releasing an idempotency key failed; its lease will lapse");
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.engine.store.clone();
            let scope = self.scope.clone();
            let token = self.token;
            runtime.spawn(async move {
                if let Err(error) = store.release(&scope, token).await {
                    tracing::warn!(%error, "releasing an idempotency key failed; its lease will lapse");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_statuses() {
        for status in [200, 201, 204, 302, 400, 404, 409, 422] {
            assert!(is_stored_status(status), "{status}");
        }
        for status in [401, 403, 408, 429, 500, 502, 503] {
            assert!(!is_stored_status(status), "{status}");
        }
    }

    #[test]
    fn replays_are_marked() {
        let response = replay(StoredResponse {
            status: 201,
            headers: vec![("location".into(), "/projects/1".into())],
            body: b"{}".to_vec(),
        });
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()[header::LOCATION], "/projects/1");
        assert_eq!(response.headers()[IDEMPOTENT_REPLAYED], "true");
        assert_eq!(&response.body()[..], b"{}");
    }
}
