//! Idempotent requests and the health routes, through real servers: the
//! scenarios both framework integrations pass, on memory and Postgres.
//!
//! The app under test ([`launch`]) has idempotency on (keys living one
//! hour), and a [`Probe`] module: `POST /probe/sdk` among the SDK's routes,
//! and the integration serves `POST /probe` (the host's route) behind its
//! tenancy and idempotency layers, with `/projects` likewise.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Reply, Start, Stores, TestApp};
use crate::idempotency::IdempotencyConfig;
use crate::module::Module;
use crate::pipeline::RequestContext;
use crate::problem::{Problem, ProblemKind};
use crate::request::ApiRequest;
use crate::routes::{Access, Route};
use crate::tenancy::Tenancy;
use crate::{ReadinessCheck, route};

/// How long the scenario apps keep keys.
pub const SCENARIO_KEY_TTL: Duration = Duration::from_secs(3600);

/// A handler that counts its runs and, on request, fails or waits: the
/// side effect the idempotency scenarios count. A [`Module`], so the
/// integration's app finds it with `tenancy.module::<Probe>()`.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    inner: Arc<ProbeInner>,
}

#[derive(Debug)]
struct ProbeInner {
    runs: AtomicU32,
    gate: tokio::sync::Semaphore,
    ready: bool,
}

impl Default for ProbeInner {
    fn default() -> Self {
        Self {
            runs: AtomicU32::new(0),
            gate: tokio::sync::Semaphore::new(0),
            ready: true,
        }
    }
}

impl Probe {
    /// A probe whose readiness check reports up.
    pub fn new() -> Self {
        Self::default()
    }

    /// A probe whose readiness check (`probe`) reports down.
    pub fn down() -> Self {
        Self {
            inner: Arc::new(ProbeInner {
                ready: false,
                ..ProbeInner::default()
            }),
        }
    }

    /// How many times the handler ran.
    pub fn runs(&self) -> u32 {
        self.inner.runs.load(Ordering::SeqCst)
    }

    /// Lets one waiting request finish.
    pub fn open_gate(&self) {
        self.inner.gate.add_permits(1);
    }

    /// Serves a request with a JSON body `{"mode": "ok" | "fail" | "wait",
    /// "note": …}`: counts the run, then `201` with the run's number, the
    /// tenant and the note (`Location: /probe/<run>`, an `ETag`), or a
    /// `500` problem (`fail`), or waits for [`Self::open_gate`] first (`wait`).
    pub async fn handle(&self, context: &RequestContext, body: &[u8]) -> Response<Bytes> {
        let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let run = self.inner.runs.fetch_add(1, Ordering::SeqCst) + 1;
        match input["mode"].as_str() {
            Some("fail") => return Problem::of(ProblemKind::Internal).to_response(),
            Some("wait") => {
                if let Ok(permit) = self.inner.gate.acquire().await {
                    permit.forget();
                }
            }
            _ => {}
        }
        let body = json!({ "run": run, "tenant": context.tenant_id(), "note": input["note"] });
        let mut response = crate::response::json(StatusCode::CREATED, &body)
            .unwrap_or_else(|problem| problem.to_response());
        let headers = response.headers_mut();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_str(&format!("/probe/{run}")).unwrap(),
        );
        headers.insert(
            header::ETAG,
            HeaderValue::from_str(&format!("\"run-{run}\"")).unwrap(),
        );
        response
    }
}

async fn sdk_probe(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let probe = t.module::<Probe>().ok_or_else(Problem::not_found)?;
    let context = c.ok_or_else(|| Problem::bad_request("no context"))?;
    Ok(probe.handle(context, &r.body).await)
}

struct ProbeCheck(bool);

#[async_trait]
impl ReadinessCheck for ProbeCheck {
    fn name(&self) -> &str {
        "probe"
    }

    async fn check(&self) -> Result<(), tenancy_core::BoxError> {
        if self.0 {
            Ok(())
        } else {
            Err("probe is down at postgres://secret@internal-host".into())
        }
    }
}

#[async_trait]
impl Module for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn routes(&self) -> Vec<Route> {
        vec![route!(POST "/probe/sdk", Access::Authenticated, sdk_probe)]
    }

    fn readiness_checks(&self) -> Vec<Arc<dyn ReadinessCheck>> {
        vec![Arc::new(ProbeCheck(self.inner.ready))]
    }
}

/// The scenario app with idempotency on (`PUT` covered too) and `probe`.
pub async fn launch_with_probe(stores: Stores, start: Start, probe: Probe) -> Option<TestApp> {
    TestApp::launch_with(stores, start, &[], |builder, _| {
        builder
            .idempotency(
                IdempotencyConfig::default()
                    .with_ttl(SCENARIO_KEY_TTL)
                    .with_max_body(4096)
                    .with_methods([http::Method::POST, http::Method::PATCH, http::Method::PUT])
                    .with_purge_every(None),
            )
            .module(probe)
    })
    .await
}

/// The scenario app with a probe whose readiness check reports down and,
/// with the `postgres` feature, a second Postgres pool pointed at a closed
/// port (`replica`), each check given half a second.
pub async fn launch_down(stores: Stores, start: Start) -> Option<TestApp> {
    TestApp::launch_with(stores, start, &[], |builder, _| {
        let builder = builder
            .idempotency(IdempotencyConfig::default().with_purge_every(None))
            .module(Probe::down())
            .readiness_timeout(Duration::from_millis(500));
        #[cfg(feature = "postgres")]
        let builder = {
            let options = tenancy_core::postgres::sqlx::postgres::PgConnectOptions::new()
                .host("127.0.0.1")
                .port(1)
                .username("nobody")
                .password("secret")
                .database("internal-host");
            let pool = tenancy_core::postgres::sqlx::postgres::PgPoolOptions::new()
                .acquire_timeout(Duration::from_millis(300))
                .connect_lazy_with(options);
            builder.readiness_check(Arc::new(crate::PostgresCheck::new("replica", pool)))
        };
        builder
    })
    .await
}

/// [`launch_with_probe`] with a fresh [`Probe`].
pub async fn launch(stores: Stores, start: Start) -> Option<TestApp> {
    launch_with_probe(stores, start, Probe::new()).await
}

impl TestApp {
    fn probe(&self) -> &Probe {
        self.tenancy.module::<Probe>().expect("the probe module")
    }

    /// `method path` as `bearer`, with `Idempotency-Key: key` (sent as is)
    /// and a JSON body.
    pub async fn keyed(
        &self,
        method: Method,
        path: &str,
        bearer: &str,
        key: &str,
        body: Value,
    ) -> Reply {
        self.send(
            self.request(method, path)
                .bearer_auth(bearer)
                .header("idempotency-key", key)
                .json(&body),
        )
        .await
    }
}

#[track_caller]
fn assert_replay_of(replay: &Reply, first: &Reply) {
    assert_eq!(replay.status, first.status, "{}", replay.text);
    assert_eq!(replay.text, first.text);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    for name in ["content-type", "location", "etag"] {
        assert_eq!(replay.header(name), first.header(name), "{name}");
    }
}

/// A retry with the same key and body gets the first answer, replayed:
/// the host's routes (projects, probe) and the SDK's (a module's route,
/// a role). The handler ran once. The key may be sent quoted or bare.
pub async fn idempotent_replay(app: &TestApp) {
    let ada = app.register("replay", "ada@replay.test").await;
    let body = json!({ "name": "once" });
    let first = app
        .keyed(
            Method::POST,
            "/projects",
            &ada.token,
            "\"p-1\"",
            body.clone(),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = app
        .keyed(Method::POST, "/projects", &ada.token, "p-1", body)
        .await;
    assert_replay_of(&again, &first);
    let listed = app
        .call(Method::GET, "/projects", Some(&ada.token), None)
        .await;
    assert_eq!(listed.json["items"].as_array().unwrap().len(), 1);

    for path in ["/probe", "/probe/sdk"] {
        let before = app.probe().runs();
        let body = json!({ "mode": "ok", "note": path });
        let key = format!("probe-1{path}");
        let first = app
            .keyed(Method::POST, path, &ada.token, &key, body.clone())
            .await;
        assert_eq!(first.status, 201, "{path}: {}", first.text);
        assert!(first.header("location").is_some());
        let again = app.keyed(Method::POST, path, &ada.token, &key, body).await;
        assert_replay_of(&again, &first);
        assert_eq!(app.probe().runs(), before + 1, "{path}");
    }

    // An SDK route with PUT covered: the role is written once.
    let role = json!({ "permissions": ["projects:read"], "description": "readers" });
    let first = app
        .keyed(
            Method::PUT,
            "/roles/reader",
            &ada.token,
            "role-1",
            role.clone(),
        )
        .await;
    assert!(first.status < 300, "{}", first.text);
    let again = app
        .keyed(Method::PUT, "/roles/reader", &ada.token, "role-1", role)
        .await;
    assert_replay_of(&again, &first);
    assert_eq!(again.header("cache-control"), Some("no-store"));

    // An answer carrying a secret (a new API key) is never stored: the
    // retry runs again and makes a second key.
    let key = json!({ "name": "bot", "scopes": ["projects:read"] });
    let one = app
        .keyed(Method::POST, "/api-keys", &ada.token, "key-1", key.clone())
        .await;
    let two = app
        .keyed(Method::POST, "/api-keys", &ada.token, "key-1", key)
        .await;
    assert_eq!((one.status, two.status), (201, 201), "{}", two.text);
    assert_eq!(two.header("idempotent-replayed"), None);
    assert_ne!(one.json["api_key"]["id"], two.json["api_key"]["id"]);
    // Methods not covered ignore the header.
    let listed = app
        .send(
            app.request(Method::GET, "/projects")
                .bearer_auth(&ada.token)
                .header("idempotency-key", "p-1"),
        )
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.header("idempotent-replayed"), None);
}

/// The same key with another body or path is `422`; a malformed key is
/// `400`; neither runs the handler.
pub async fn idempotent_mismatch_and_malformed(app: &TestApp) {
    let ada = app.register("mismatch", "ada@mismatch.test").await;
    let first = app
        .keyed(
            Method::POST,
            "/probe",
            &ada.token,
            "k",
            json!({ "note": 1 }),
        )
        .await;
    assert_eq!(first.status, 201);
    // Another body, or the same body to another path (the SDK's or the
    // host's): the key names one request.
    for (path, body) in [
        ("/probe", json!({ "note": 2 })),
        ("/probe/sdk", json!({ "note": 1 })),
        ("/projects", json!({ "note": 1 })),
    ] {
        let reply = app.keyed(Method::POST, path, &ada.token, "k", body).await;
        reply.assert_problem(422, "idempotency-key-reused");
    }
    assert_eq!(app.probe().runs(), 1, "the mismatched retries did not run");
    let too_long = "k".repeat(256);
    for key in [
        "\"unterminated",
        "\"a\";param=1",
        "a, b",
        "",
        too_long.as_str(),
    ] {
        for path in ["/probe", "/probe/sdk"] {
            let reply = app
                .keyed(Method::POST, path, &ada.token, key, json!({}))
                .await;
            reply.assert_problem(400, "idempotency-key-invalid");
        }
    }
    let listed = app
        .call(Method::GET, "/projects", Some(&ada.token), None)
        .await;
    assert_eq!(listed.json["items"], json!([]));
    let several = app
        .send(
            app.request(Method::POST, "/probe")
                .bearer_auth(&ada.token)
                .header("idempotency-key", "a")
                .header("idempotency-key", "b")
                .json(&json!({})),
        )
        .await;
    several.assert_problem(400, "idempotency-key-invalid");
    assert_eq!(app.probe().runs(), 1);
    // Unauthenticated requests are not covered: the pipeline answers first.
    let anonymous = app
        .send(
            app.request(Method::POST, "/probe")
                .header("idempotency-key", "\"unterminated")
                .json(&json!({})),
        )
        .await;
    assert_eq!(anonymous.status, 401);
}

/// A duplicate while the first still runs is `409` with `Retry-After: 1`;
/// once the first finishes, the duplicate is replayed.
pub async fn idempotent_in_flight(app: &TestApp) {
    let ada = app.register("inflight", "ada@inflight.test").await;
    for path in ["/probe", "/probe/sdk"] {
        let before = app.probe().runs();
        let body = json!({ "mode": "wait" });
        let key = format!("slow{path}");
        let first = tokio::spawn(
            app.request(Method::POST, path)
                .bearer_auth(&ada.token)
                .header("idempotency-key", key.as_str())
                .json(&body)
                .send(),
        );
        for _ in 0..500 {
            if app.probe().runs() > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(app.probe().runs(), before + 1, "the first request started");
        let duplicate = app
            .keyed(Method::POST, path, &ada.token, &key, body.clone())
            .await;
        duplicate.assert_problem(409, "idempotency-key-in-use");
        assert_eq!(duplicate.header("retry-after"), Some("1"));
        app.probe().open_gate();
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.status().as_u16(), 201);
        let first_body = first.text().await.unwrap();
        let replay = app.keyed(Method::POST, path, &ada.token, &key, body).await;
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.text, first_body);
        assert_eq!(app.probe().runs(), before + 1, "{path}");
    }
}

/// The same key from two tenants, or from two callers of one tenant,
/// runs for each and replays to each its own answer.
pub async fn idempotent_keys_are_per_tenant_and_caller(app: &TestApp) {
    let ada = app.register("tenant-a", "ada@a.test").await;
    let bob = app.register("tenant-b", "bob@b.test").await;
    let created = app
        .call(
            Method::POST,
            "/api-keys",
            Some(&ada.token),
            Some(json!({ "name": "bot", "scopes": ["projects:read"] })),
        )
        .await;
    let bot = created.json["secret"].as_str().unwrap().to_owned();
    let body = json!({ "note": "shared" });
    let mut firsts = Vec::new();
    for token in [&ada.token, &bob.token, &bot] {
        let first = app
            .keyed(Method::POST, "/probe", token, "shared-key", body.clone())
            .await;
        assert_eq!(first.status, 201, "{}", first.text);
        assert_eq!(first.header("idempotent-replayed"), None);
        firsts.push(first);
    }
    assert_eq!(app.probe().runs(), 3);
    assert_eq!(firsts[0].json["tenant"], ada.tenant.as_str());
    assert_eq!(firsts[1].json["tenant"], bob.tenant.as_str());
    for (token, first) in [&ada.token, &bob.token, &bot].into_iter().zip(&firsts) {
        let again = app
            .keyed(Method::POST, "/probe", token, "shared-key", body.clone())
            .await;
        assert_replay_of(&again, first);
    }
    assert_eq!(app.probe().runs(), 3);
}

/// A `5xx` is not stored: the retry runs again, and may then succeed and
/// be stored. Nor is an answer over the body cap.
pub async fn idempotent_failures_are_not_stored(app: &TestApp) {
    let ada = app.register("failing", "ada@failing.test").await;
    for path in ["/probe", "/probe/sdk"] {
        let before = app.probe().runs();
        let fail = json!({ "mode": "fail" });
        let key = format!("flaky{path}");
        for _ in 0..2 {
            let reply = app
                .keyed(Method::POST, path, &ada.token, &key, fail.clone())
                .await;
            reply.assert_problem(500, "internal");
            assert_eq!(reply.header("idempotent-replayed"), None);
        }
        assert_eq!(app.probe().runs(), before + 2, "{path}");
        // Released: the same key now serves another body.
        let ok = app
            .keyed(
                Method::POST,
                path,
                &ada.token,
                &key,
                json!({ "mode": "ok" }),
            )
            .await;
        assert_eq!(ok.status, 201, "{}", ok.text);
        // An answer over the stored-body cap (4 KiB here) is passed through
        // and its key released: the retry runs again.
        let before = app.probe().runs();
        let big = json!({ "note": "x".repeat(5000) });
        let key = format!("big{path}");
        for _ in 0..2 {
            let reply = app
                .keyed(Method::POST, path, &ada.token, &key, big.clone())
                .await;
            assert_eq!(reply.status, 201, "{}", reply.status);
            assert_eq!(reply.json["note"].as_str().map(str::len), Some(5000));
            assert_eq!(reply.header("idempotent-replayed"), None);
        }
        assert_eq!(app.probe().runs(), before + 2, "{path}");
    }
}

/// After its lifetime a key runs again; the purge deletes expired keys.
pub async fn idempotent_keys_expire(app: &TestApp) {
    let ada = app.register("expiry", "ada@expiry.test").await;
    let body = json!({ "note": "old" });
    let first = app
        .keyed(Method::POST, "/probe", &ada.token, "ttl", body.clone())
        .await;
    assert_eq!(first.status, 201);
    let idempotency = app.tenancy.idempotency().expect("idempotency is on");
    assert_eq!(idempotency.purge_expired().await.unwrap(), 0);
    app.clock
        .advance(time::Duration::try_from(SCENARIO_KEY_TTL).unwrap() + time::Duration::seconds(1));
    assert!(idempotency.purge_expired().await.unwrap() >= 1);
    // The access token expired meanwhile too.
    let ada = app.login("ada@expiry.test", Some(&ada.tenant)).await;
    let again = app
        .keyed(Method::POST, "/probe", &ada.token, "ttl", body)
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), None);
    assert_eq!(again.json["run"], 2);
}

/// `/health` answers `200` without I/O; `/ready` answers `200` naming each
/// check (the Postgres pool on Postgres, the probe module's).
pub async fn health_and_ready(app: &TestApp) {
    let health = app.call(Method::GET, "/health", None, None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json, json!({ "status": "up" }));
    assert_eq!(health.header("cache-control"), Some("no-store"));
    let ready = app.call(Method::GET, "/ready", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.header("cache-control"), Some("no-store"));
    assert_eq!(ready.json["status"], "ready");
    let checks = ready.json["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "probe" && c["status"] == "up")
    );
    for check in checks {
        assert!(check["latency_ms"].is_u64(), "{check}");
    }
}

/// On Postgres, `/ready` names the builder's pool, `postgres`, up.
pub async fn ready_checks_postgres(app: &TestApp) {
    let ready = app.call(Method::GET, "/ready", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let checks = ready.json["checks"].as_array().unwrap();
    assert_eq!(checks[0]["name"], "postgres", "{}", ready.text);
    assert_eq!(checks[0]["status"], "up");
}

/// A check that reports down makes `/ready` `503` and names it, without
/// its error text; `/health` stays `200`.
pub async fn ready_names_what_is_down(app: &TestApp) {
    let ready = app.call(Method::GET, "/ready", None, None).await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.json["status"], "unavailable");
    let checks = ready.json["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "probe" && c["status"] == "down"),
        "{}",
        ready.text
    );
    #[cfg(feature = "postgres")]
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "replica" && c["status"] != "up"),
        "{}",
        ready.text
    );
    assert!(!ready.text.contains("secret") && !ready.text.contains("internal-host"));
    let health = app.call(Method::GET, "/health", None, None).await;
    assert_eq!(health.status, 200);
}

/// Generates the idempotency and health scenarios for `$start`, on memory
/// and on Postgres.
#[macro_export]
macro_rules! idempotency_scenarios {
    ($start:ident) => {
        $crate::idempotency_scenarios!(@stores $start;
            idempotent_replay, idempotent_mismatch_and_malformed, idempotent_in_flight,
            idempotent_keys_are_per_tenant_and_caller, idempotent_failures_are_not_stored,
            idempotent_keys_expire, health_and_ready
        );
    };
    (@stores $start:ident; $($scenario:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let app = $crate::testkit::idempotency::launch($crate::testkit::Stores::Memory, super::$start)
                        .await
                        .expect("memory app");
                    $crate::testkit::idempotency::$scenario(&app).await;
                }
            )+
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ready_names_what_is_down() {
                let app = $crate::testkit::idempotency::launch_down($crate::testkit::Stores::Memory, super::$start)
                .await
                .expect("memory app");
                $crate::testkit::idempotency::ready_names_what_is_down(&app).await;
            }
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(app) = $crate::testkit::idempotency::launch($crate::testkit::Stores::Postgres, super::$start).await {
                        $crate::testkit::idempotency::$scenario(&app).await;
                    }
                }
            )+
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ready_checks_postgres() {
                if let Some(app) = $crate::testkit::idempotency::launch($crate::testkit::Stores::Postgres, super::$start).await {
                    $crate::testkit::idempotency::ready_checks_postgres(&app).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ready_names_what_is_down() {
                if let Some(app) = $crate::testkit::idempotency::launch_down($crate::testkit::Stores::Postgres, super::$start).await {
                    $crate::testkit::idempotency::ready_names_what_is_down(&app).await;
                }
            }
        }
    };
}
