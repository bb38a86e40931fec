//! actix-web's workers hand store work to the runtime that holds the
//! stores' connections (`Tenancy::on_store_runtime`): on Postgres built on a
//! multi-thread runtime, authentication, guards, permission checks, the
//! SDK's routes and a handler's own queries run there; with memory stores
//! everything runs on the worker; a stopped store runtime answers `503`.
// A test harness: failing to bind or start is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use async_trait::async_trait;
use serde_json::{Value, json};
use tenancy_actix::{Context, Rejection, TenancyMiddleware, guard, require};
use tenancy_http::core::testkit::postgres::TestSchema;
use tenancy_http::testkit::scenario_config;
use tenancy_http::{Admission, Guard, Problem, RequestContext, Tenancy, TenantSource};

const STORE_THREAD: &str = "tenancy-store";

/// The names of the threads something ran on.
#[derive(Default)]
struct Threads(Mutex<Vec<String>>);

impl Threads {
    fn record(&self) {
        self.0.lock().unwrap().push(current_thread());
    }

    fn names(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

fn current_thread() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned()
}

/// Admits every request, noting the thread it ran on.
struct Recorder(Arc<Threads>);

#[async_trait]
impl Guard for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn check(&self, _context: &RequestContext) -> Result<Admission, Problem> {
        self.0.record();
        Ok(Admission::new())
    }
}

struct Seen {
    guard: Arc<Threads>,
    handler: Arc<Threads>,
    handler_work: Arc<Threads>,
}

/// `GET /probe`: notes the worker's thread and the thread its store work
/// ran on.
async fn probe(ctx: Context, seen: web::Data<Seen>) -> Result<HttpResponse, Rejection> {
    seen.handler.record();
    let work = seen.handler_work.clone();
    ctx.tenancy()
        .on_store_runtime(async move { work.record() })
        .await?;
    Ok(HttpResponse::Ok().finish())
}

fn store_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(STORE_THREAD)
        .enable_all()
        .build()
        .unwrap()
}

fn tenancy_config() -> (
    tenancy_http::authz::Catalog,
    tenancy_http::auth::AuthConfig,
    tenancy_http::HttpConfig,
) {
    let (catalog, auth, mut config) = scenario_config();
    config.tenant_source = TenantSource::Token;
    (catalog, auth, config)
}

/// Serves the SDK's routes and `/probe` (middleware, guard, permission) on
/// actix's own runtime, with two workers, on a thread of its own.
fn serve(tenancy: Tenancy) -> (SocketAddr, ServerHandle, web::Data<Seen>) {
    let seen = web::Data::new(Seen {
        guard: Arc::default(),
        handler: Arc::default(),
        handler_work: Arc::default(),
    });
    let read = tenancy.permission("projects:read").unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    let data = seen.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .configure(tenancy_actix::configure(tenancy.clone()))
                    .service(
                        web::resource("/probe")
                            .route(web::get().to(probe))
                            .wrap(require(read))
                            .wrap(guard(Recorder(data.guard.clone())))
                            .wrap(TenancyMiddleware::new(tenancy.clone())),
                    )
            })
            .workers(2)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .unwrap();
            let address = server.addrs()[0];
            let running = server.run();
            sender.send((address, running.handle())).unwrap();
            running.await.unwrap();
        });
    });
    let (address, handle) = receiver.recv().unwrap();
    (address, handle, seen)
}

/// A client on a runtime of its own.
struct Client {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(address: SocketAddr) -> Self {
        Self {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(20))
                .build()
                .unwrap(),
            base: format!("http://{address}"),
        }
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.runtime.block_on(async {
            let mut request = self.http.request(method, format!("{}{path}", self.base));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.expect("an answer, not a hang");
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        })
    }

    /// Registers an owner and tenant; their access token.
    fn register(&self, slug: &str) -> String {
        let (status, body) = self.call(
            reqwest::Method::POST,
            "/auth/register",
            None,
            Some(json!({
                "email": format!("owner@{slug}.test"),
                "password": "correct horse battery staple",
                "tenant": { "slug": slug, "name": slug },
            })),
        );
        assert_eq!(status, 201, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }
}

/// Serves `tenancy`, registers an owner of tenant `slug` and probes
/// `/probe` once with their token.
fn serve_and_probe(
    tenancy: Tenancy,
    slug: &str,
) -> (Client, ServerHandle, web::Data<Seen>, String) {
    let (address, server, seen) = serve(tenancy);
    let client = Client::new(address);
    let token = client.register(slug);
    let (status, body) = client.call(reqwest::Method::GET, "/probe", Some(&token), None);
    assert_eq!(status, 200, "{body}");
    (client, server, seen, token)
}

#[test]
fn postgres_store_work_runs_on_the_runtime_holding_the_connections() {
    let store = store_runtime();
    let Some(schema) = store.block_on(TestSchema::create()) else {
        return;
    };
    let tenancy = store.block_on(async {
        let (catalog, auth, config) = tenancy_config();
        Tenancy::postgres(schema.pool.clone(), catalog, auth, config)
            .await
            .unwrap()
    });
    assert!(
        tenancy.store_runtime().is_some(),
        "built on a multi-thread runtime over Postgres"
    );
    let (client, server, seen, token) = serve_and_probe(tenancy, "store-runtime");
    let (status, body) = client.call(reqwest::Method::GET, "/auth/me", Some(&token), None);
    assert_eq!(status, 200, "{body}");

    let on_store = |names: Vec<String>| names.iter().all(|name| name.starts_with(STORE_THREAD));
    let guard = seen.guard.names();
    assert_eq!(guard.len(), 1);
    assert!(on_store(guard.clone()), "the guard ran on {guard:?}");
    let work = seen.handler_work.names();
    assert!(
        on_store(work.clone()),
        "the handler's store work ran on {work:?}"
    );
    let handler = seen.handler.names();
    assert!(
        !on_store(handler.clone()),
        "the handler itself stays on its worker: {handler:?}"
    );

    // The store runtime stops (a host shutting down out of order): requests
    // are answered 503, not left hanging.
    store.shutdown_timeout(std::time::Duration::from_secs(5));
    let (status, body) = client.call(reqwest::Method::GET, "/probe", Some(&token), None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "urn:tenancy:problem:unavailable", "{body}");
    let (status, _) = client.call(reqwest::Method::GET, "/auth/me", Some(&token), None);
    assert_eq!(status, 503);
    client.runtime.block_on(server.stop(false));
}

#[test]
fn memory_store_work_runs_on_the_worker() {
    let store = store_runtime();
    let tenancy = store.block_on(async {
        let (catalog, auth, config) = tenancy_config();
        Tenancy::builder(catalog, auth)
            .http(config)
            .build()
            .await
            .unwrap()
    });
    assert!(
        tenancy.store_runtime().is_none(),
        "memory stores need no store runtime"
    );
    let (client, server, seen, _token) = serve_and_probe(tenancy, "in-memory");
    let handler = seen.handler.names();
    assert_eq!(
        seen.guard.names(),
        handler,
        "the guard ran on the handler's worker"
    );
    assert_eq!(
        seen.handler_work.names(),
        handler,
        "in place, on the worker"
    );
    assert!(!handler[0].starts_with(STORE_THREAD));
    client.runtime.block_on(server.stop(false));
}
