//! One suite of HTTP scenarios that every framework integration passes
//! (feature `testkit`).
//!
//! An integration provides a function that serves a [`Tenancy`] (the SDK's
//! routes at `/`, and the [`projects`] API at `/projects` behind its
//! middleware) on `127.0.0.1`, and invokes [`http_scenarios!`](crate::http_scenarios)
//! with it: every scenario then runs against a fresh app, on the in-memory
//! stores and on Postgres, with identical requests and assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod guards;
pub mod idempotency;
pub mod json_bodies;
mod launch;
mod logs;
pub mod projects;
mod scenarios;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tenancy_auth::{Argon2Config, AuthConfig};
use tenancy_authz::Catalog;
use tenancy_core::ManualClock;

use crate::config::{CookieConfig, HttpConfig, TenantSource};
use crate::forwarded::{ForwardedHeader, TrustedProxies};
use crate::tenancy::Tenancy;

pub use guards::Countdown;
pub use launch::Setup;
pub use logs::{CapturedLogs, assert_logs_hold_no_secrets, capture_logs};
pub use projects::Projects;
pub use scenarios::*;

/// Which stores a test app uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stores {
    /// In memory.
    Memory,
    /// Postgres (a fresh schema; needs `DATABASE_URL`).
    Postgres,
}

/// Starts serving `tenancy` (SDK routes) and `projects` (at `/projects`,
/// behind the integration's middleware) on `127.0.0.1`, returning the address.
pub type Start = fn(Tenancy, Arc<Projects>) -> Pin<Box<dyn Future<Output = SocketAddr> + Send>>;

/// A running app under test.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The app's clock, to move time (token expiry).
    pub clock: Arc<ManualClock>,
    /// The app's services, for what has no route (suspending a tenant).
    pub tenancy: Tenancy,
    client: reqwest::Client,
    secrets: std::sync::Mutex<Vec<String>>,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The scenario apps' largest audit export, small enough for a scenario
/// to pass it.
pub const SCENARIO_EXPORT_LIMIT: usize = 16 * 1024;

/// The scenario apps' settings: the projects catalog, fast hashing, the
/// tenant taken from `X-Tenant-Id` when sent, cookies without `Secure`
/// (plain `http://127.0.0.1`), a 64 KiB body limit, no status caching,
/// audit exports of at most [`SCENARIO_EXPORT_LIMIT`] bytes, and one
/// trusted proxy appending to `X-Forwarded-For`.
pub fn scenario_config() -> (Catalog, AuthConfig, HttpConfig) {
    let mut auth = AuthConfig::new("https://scenarios.test", "scenarios");
    auth.argon2 = Argon2Config::new(1024, 1, 1);
    // One fixed key, so replicas on one database read each other's signing keys.
    auth.key_encryption = tenancy_auth::KeyEncryption::key(
        tenancy_auth::KeyEncryptionKey::new("scenarios-1", [5; 32]).unwrap(),
    );
    // The scenario client stands in for one proxy in front of the app.
    let http = HttpConfig::default()
        .with_tenant_source(TenantSource::Header(http::HeaderName::from_static(
            "x-tenant-id",
        )))
        .with_cookies(CookieConfig::default().with_secure(false))
        .with_tenant_status_ttl(std::time::Duration::ZERO)
        .with_export_limit(SCENARIO_EXPORT_LIMIT)
        .with_trusted_proxies(TrustedProxies::count(1, ForwardedHeader::XForwardedFor));
    let catalog = Catalog::new(projects::PERMISSIONS).unwrap();
    (catalog, auth, http)
}

impl TestApp {
    /// Builds the services with [`Tenancy::builder`] (as a host would) and
    /// the app, and starts it. `None` when Postgres is asked for and no
    /// database is configured (outside CI).
    pub async fn launch(stores: Stores, start: Start) -> Option<Self> {
        Self::launch_with(stores, start, &[], |builder, _| builder).await
    }

    /// Every secret the app has handed out so far (tokens, keys), and the
    /// scenario password.
    pub fn secrets(&self) -> Vec<String> {
        self.secrets.lock().unwrap().clone()
    }

    /// A request to `path`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// Sends `request` and reads the answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        collect_secrets(&json, &mut self.secrets.lock().unwrap());
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// `method path` with an optional bearer credential and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.request(method, path);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }
}

#[cfg(not(feature = "postgres"))]
async fn on_postgres(_: crate::TenancyBuilder) -> Option<crate::TenancyBuilder> {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("the Postgres scenarios need the `postgres` feature under CI");
    }
    eprintln!("built without the postgres feature: skipping Postgres scenario");
    None
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body text.
    pub text: String,
    /// The body as JSON (`Null` if it is not).
    pub json: Value,
}

impl Reply {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem answer of `status` and `kind` (`urn:tenancy:problem:<kind>`).
    #[track_caller]
    pub fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some(crate::PROBLEM_JSON),
            "{}",
            self.text
        );
        assert_eq!(
            self.json["type"],
            format!("urn:tenancy:problem:{kind}"),
            "{}",
            self.text
        );
        assert_eq!(self.json["status"], status);
        assert_eq!(self.header("x-content-type-options"), Some("nosniff"));
    }
}

/// Generates one test per scenario for `$start`, on memory and on Postgres.
#[macro_export]
macro_rules! http_scenarios {
    ($start:ident) => {
        $crate::http_scenarios!(@stores $start;
            register_login_and_me, refresh_and_reuse_detection, cross_tenant_access_is_not_found,
            permission_denied_is_a_problem, api_key_lifecycle, members_and_roles,
            roles_policies_and_explain, audit_query_and_export, malformed_and_oversized_bodies,
            missing_or_garbage_authorization, expired_token, suspended_tenant, cookies_and_csrf,
            jwks_and_password_reset, forwarded_client_address, security_headers,
            unknown_routes_and_lookalike_slugs, invitations_follow_their_sender,
            wildcard_api_key_scopes, audit_chain_verifies, policy_writes_are_rate_limited,
            floods_are_throttled, undefined_roles_are_refused
        );
    };
    (@stores $start:ident; $($scenario:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let app = $crate::testkit::TestApp::launch($crate::testkit::Stores::Memory, super::$start)
                        .await
                        .expect("memory app");
                    $crate::testkit::$scenario(&app).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(app) = $crate::testkit::TestApp::launch($crate::testkit::Stores::Postgres, super::$start).await {
                        $crate::testkit::$scenario(&app).await;
                    }
                }
            )+
        }
    };
}

/// Secrets in an answer: the values of token, key and secret fields.
fn collect_secrets(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let secret_field = key.ends_with("token") || key == "secret" || key == "key";
                match value {
                    Value::String(text) if secret_field && text.len() >= 16 => {
                        into.push(text.clone());
                    }
                    other => collect_secrets(other, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_secrets(item, into)),
        _ => {}
    }
}

/// A test, `logs_hold_no_secrets`, that runs the credential-heavy
/// scenarios on the in-memory stores with every tenancy log captured, and
/// asserts no token, key or password the scenarios saw was logged and the
/// request span carried its fields. Invoke it beside [`http_scenarios!`](crate::http_scenarios).
#[macro_export]
macro_rules! http_log_test {
    ($start:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn logs_hold_no_secrets() {
            let logs = $crate::testkit::capture_logs();
            let app = $crate::testkit::TestApp::launch($crate::testkit::Stores::Memory, $start)
                .await
                .expect("memory app");
            $crate::testkit::register_login_and_me(&app).await;
            $crate::testkit::refresh_and_reuse_detection(&app).await;
            $crate::testkit::api_key_lifecycle(&app).await;
            $crate::testkit::permission_denied_is_a_problem(&app).await;
            $crate::testkit::cookies_and_csrf(&app).await;
            $crate::testkit::jwks_and_password_reset(&app).await;
            $crate::testkit::assert_logs_hold_no_secrets(&logs, &app.secrets());
        }
    };
}
