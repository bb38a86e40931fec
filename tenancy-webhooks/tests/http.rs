//! The webhook routes through tenancy-http's pipeline (`Tenancy::dispatch`),
//! on the in-memory stores: permission, problems, another tenant's 404,
//! secrets shown once, pagination of the delivery log, redelivery.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tenancy_core::{
    AuditContext, Email, NewTenant, NewUser, Owner, Slug, TenantId, TenantName, TenantScope,
};
use tenancy_http::auth::{AuthConfig, NewApiKey, Scope};
use tenancy_http::authz::Catalog;
use tenancy_http::http::{HeaderMap, HeaderValue, Method, header};
use tenancy_http::{ApiRequest, Module, Tenancy};
use tenancy_jobs::{MemoryJobStore, Worker, WorkerConfig};
use tenancy_webhooks::http::{WEBHOOKS_MANAGE, WebhooksModule};
use tenancy_webhooks::{SecretCipher, SecretKey, TargetPolicy, WebhookConfig, Webhooks};

struct App {
    tenancy: Tenancy,
    routes: Vec<tenancy_http::Route>,
}

impl App {
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
        let segments: Vec<&str> = path_only.split('/').collect();
        let route = self
            .routes
            .iter()
            .find(|route| {
                let pattern: Vec<&str> = route.path.split('/').collect();
                route.method == method
                    && pattern.len() == segments.len()
                    && pattern
                        .iter()
                        .zip(&segments)
                        .all(|(p, s)| p.starts_with('{') || p == s)
            })
            .unwrap_or_else(|| panic!("no route for {method} {path}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let uri = if query.is_empty() {
            path_only.to_owned()
        } else {
            format!("{path_only}?{query}")
        };
        let body = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        let mut request = ApiRequest::new(
            method,
            uri.parse().unwrap(),
            headers,
            Some("127.0.0.1".parse().unwrap()),
            body.into(),
        );
        for (p, s) in route.path.split('/').zip(&segments) {
            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                request.params.insert(name.to_owned(), (*s).to_owned());
            }
        }
        let response = self.tenancy.dispatch(route, request).await;
        let status = response.status().as_u16();
        let json = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (status, json)
    }
}

async fn tenant_with_key(tenancy: &Tenancy, slug: &str, scopes: &[&str]) -> (TenantId, String) {
    let created = tenancy
        .directory()
        .create_tenant(
            NewTenant::new(Slug::new(slug).unwrap(), TenantName::new(slug).unwrap()),
            Owner::New(NewUser::new(
                Email::new(&format!("owner@{slug}.test")).unwrap(),
            )),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let tenant = created.tenant.id;
    let (_, secret) = tenancy
        .auth()
        .create_api_key(
            &TenantScope::assume_resolved(tenant),
            NewApiKey {
                name: "ops".to_owned(),
                scopes: scopes.iter().map(|s| Scope::new(*s).unwrap()).collect(),
                expires_at: None,
            },
            &AuditContext::system(),
        )
        .await
        .unwrap();
    (tenant, secret.expose_secret().to_owned())
}

#[tokio::test]
async fn webhook_routes_manage_endpoints_per_tenant() {
    let stores = tenancy_http::Stores::memory();
    let backend = stores.backend.clone();
    let jobs = Arc::new(MemoryJobStore::new());
    let webhooks = Webhooks::new(
        Arc::new(tenancy_webhooks::MemoryWebhookStore::new()),
        jobs.clone(),
        backend,
        SecretCipher::new(SecretKey::generate("k").unwrap()),
        WebhookConfig::default()
            .with_policy(TargetPolicy::AllowPrivate)
            .with_retry_schedule(vec![]),
    )
    .unwrap();
    let module = WebhooksModule::new(webhooks.clone());
    let routes = module.routes();
    let tenancy = Tenancy::builder(
        Catalog::new([WEBHOOKS_MANAGE, "projects:read"]).unwrap(),
        AuthConfig::new("https://app.example", "app"),
    )
    .stores(stores)
    .module(module)
    .build()
    .await
    .unwrap();
    let app = App {
        tenancy: tenancy.clone(),
        routes,
    };
    let (tenant, key) = tenant_with_key(&tenancy, "hooks-a", &[WEBHOOKS_MANAGE]).await;
    let (_, other_key) = tenant_with_key(&tenancy, "hooks-b", &[WEBHOOKS_MANAGE]).await;
    let (_, weak_key) = tenant_with_key(&tenancy, "hooks-c", &["projects:read"]).await;

    // Without the permission: 403.
    let (status, body) = app
        .call(Method::GET, "/webhooks/endpoints", &weak_key, None)
        .await;
    assert_eq!(status, 403, "{body}");

    // Invalid input: a problem.
    let (status, body) = app
        .call(
            Method::POST,
            "/webhooks/endpoints",
            &key,
            Some(json!({"url": "ftp://x.example/"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:tenancy:problem:"),
        "{body}"
    );

    // This app allows private targets (its receiver is local); under the
    // default policy an internal address is refused, answered as a 400.
    let strict = Webhooks::new(
        Arc::new(tenancy_webhooks::MemoryWebhookStore::new()),
        Arc::new(MemoryJobStore::new()),
        Arc::new(tenancy_core::MemoryBackend::new()),
        SecretCipher::new(SecretKey::generate("k").unwrap()),
        WebhookConfig::default(),
    )
    .unwrap();
    let refused = strict
        .check_url("https://169.254.169.254/latest")
        .await
        .unwrap_err();
    let answer = tenancy_webhooks::http::problem(&refused);
    assert_eq!(answer.status().as_u16(), 400);
    // The answer names no resolved address: it could describe the
    // internal network of a host name.
    assert_eq!(
        answer.detail(),
        Some(tenancy_webhooks::ssrf::NON_PUBLIC_ADDRESS)
    );
    let by_name = strict
        .check_url("https://localhost/hook")
        .await
        .unwrap_err();
    let detail = tenancy_webhooks::http::problem(&by_name)
        .detail()
        .unwrap()
        .to_owned();
    assert!(
        !detail.contains("127.0.0.1") && !detail.contains("Loopback"),
        "{detail}"
    );

    // Create: the secret is in this answer only.
    let (status, created) = app
        .call(
            Method::POST,
            "/webhooks/endpoints",
            &key,
            Some(json!({"url": "http://127.0.0.1:9/hook", "description": "orders", "event_types": ["member.*"]})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, got) = app
        .call(
            Method::GET,
            &format!("/webhooks/endpoints/{id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["event_types"], json!(["member.*"]));
    assert!(got.get("secret").is_none());
    assert!(!got.to_string().contains(&secret[6..]));

    let (status, list) = app
        .call(Method::GET, "/webhooks/endpoints?limit=10", &key, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // Another tenant: 404 everywhere.
    for (method, path) in [
        (Method::GET, format!("/webhooks/endpoints/{id}")),
        (Method::DELETE, format!("/webhooks/endpoints/{id}")),
        (
            Method::POST,
            format!("/webhooks/endpoints/{id}/rotate-secret"),
        ),
        (Method::POST, format!("/webhooks/endpoints/{id}/resume")),
        (Method::GET, format!("/webhooks/endpoints/{id}/deliveries")),
    ] {
        let (status, body) = app.call(method.clone(), &path, &other_key, None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (_, other_list) = app
        .call(Method::GET, "/webhooks/endpoints", &other_key, None)
        .await;
    assert!(other_list["items"].as_array().unwrap().is_empty());

    // Update and rotate.
    let (status, updated) = app
        .call(
            Method::PATCH,
            &format!("/webhooks/endpoints/{id}"),
            &key,
            Some(json!({"description": "all", "event_types": ["*"]})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["description"], "all");
    let (status, rotated) = app
        .call(
            Method::POST,
            &format!("/webhooks/endpoints/{id}/rotate-secret"),
            &key,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(rotated["secret"].as_str().unwrap(), secret);

    // A delivery (to a closed port: it fails and is dead at once), then
    // the log and a redelivery.
    let worker = Worker::new(
        jobs,
        WorkerConfig::default()
            .with_poll_interval(Duration::from_millis(10))
            .with_retention(None),
    )
    .handler(webhooks.handler())
    .start();
    let event = tenancy_core::Outbox::append_event(
        &**tenancy.directory().backend(),
        tenant,
        tenancy_core::NewEvent::new(
            tenancy_core::EventType::new("member.joined").unwrap(),
            json!({}),
        ),
    )
    .await;
    let event = event.unwrap();
    tenancy_events::EventSink::deliver(&*webhooks.sink().unwrap(), &[event])
        .await
        .unwrap();
    worker.wake();
    let log = loop {
        let (status, log) = app
            .call(
                Method::GET,
                &format!("/webhooks/endpoints/{id}/deliveries?limit=1"),
                &key,
                None,
            )
            .await;
        assert_eq!(status, 200, "{log}");
        if !log["items"].as_array().unwrap().is_empty() {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(log["items"][0]["outcome"], "dead");
    let delivery = log["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/webhooks/deliveries/{delivery}/redeliver"),
            &other_key,
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/webhooks/deliveries/{delivery}/redeliver"),
            &key,
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(body["job_id"].is_string());

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/webhooks/endpoints/{id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/webhooks/endpoints/{id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(status, 404);
    worker.shutdown(Duration::from_secs(1)).await;
}
