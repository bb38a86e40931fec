//! The provisioning routes served through a built app: operator access
//! only, start, status with steps, cancel, retry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tenancy_core::{AuditContext, Email, NewTenant, NewUser, Owner, Slug, TenantName, TenantStore};
use tenancy_http::auth::{AuthConfig, NewApiKey, Scope};
use tenancy_http::authz::Catalog;
use tenancy_http::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tenancy_http::{ApiRequest, Tenancy};
use tenancy_provisioning::http::{PROVISIONING_MANAGE, ProvisioningModule};
use tenancy_provisioning::steps::CreateTenant;
use tenancy_provisioning::testkit::{SimulatedDns, eventually, input, test_policy};
use tenancy_provisioning::{
    MemoryProvisioningStore, OnFailure, Pipeline, Provisioner, WorkerConfig,
};

async fn app(dns: &Arc<SimulatedDns>) -> Tenancy {
    let dns = dns.clone();
    let module = ProvisioningModule::new(Slug::new("ops").unwrap(), move |t: &Tenancy| {
        let mut config = WorkerConfig::default();
        config.heartbeat = std::time::Duration::from_millis(10);
        config.idle_poll = std::time::Duration::from_millis(10);
        Provisioner::new(Arc::new(MemoryProvisioningStore::new()))
            .with_config(config)
            .with_pipeline(
                Pipeline::new("signup")
                    .with_policy(test_policy())
                    .on_failure(OnFailure::Hold)
                    .step(CreateTenant::new(t.directory().clone()))
                    .step(dns.clone()),
            )
    });
    Tenancy::builder(
        Catalog::new([PROVISIONING_MANAGE]).unwrap(),
        AuthConfig::new("https://app.example", "app"),
    )
    .module(module)
    .build()
    .await
    .unwrap()
}

/// A tenant `slug` and an API key of it scoped to provisioning.
async fn key(t: &Tenancy, slug: &str) -> String {
    let created = t
        .directory()
        .create_tenant(
            NewTenant::new(Slug::new(slug).unwrap(), TenantName::new(slug).unwrap()),
            Owner::New(NewUser::new(
                Email::new(&format!("staff@{slug}.test")).unwrap(),
            )),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let scope = t.directory().scope(created.tenant.id).await.unwrap();
    let (_, secret) = t
        .auth()
        .create_api_key(
            &scope,
            NewApiKey {
                name: "ops".into(),
                scopes: vec![Scope::new(PROVISIONING_MANAGE).unwrap()],
                expires_at: None,
            },
            &AuditContext::system(),
        )
        .await
        .unwrap();
    secret.expose_secret().to_owned()
}

async fn call(
    t: &Tenancy,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let route = t
        .routes()
        .into_iter()
        .find(|r| {
            let pattern: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
            r.method == method
                && pattern.len() == segments.len()
                && pattern
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p.starts_with('{') || p == s)
        })
        .unwrap();
    let mut params = HashMap::new();
    for (p, s) in route.path.trim_start_matches('/').split('/').zip(&segments) {
        if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            params.insert(name.to_owned(), (*s).to_owned());
        }
    }
    let mut headers = HeaderMap::new();
    if let Some(key) = key {
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
    }
    let body = match body {
        Some(b) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Bytes::from(serde_json::to_vec(&b).unwrap())
        }
        None => Bytes::new(),
    };
    let request = ApiRequest::new(
        method,
        format!("http://app.test{path}").parse().unwrap(),
        headers,
        None,
        body,
    )
    .with_params(params);
    let response = t.dispatch(&route, request).await;
    let status = response.status();
    let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_start_watch_cancel_and_retry_runs() {
    let dns = SimulatedDns::new();
    let t = app(&dns).await;
    let ops = key(&t, "ops").await;
    let outsider = key(&t, "outsider").await;
    let start = json!({ "pipeline": "signup", "input": input("acme") });

    // Not signed in: 401. Another tenant's key: the routes do not exist.
    let (status, _) = call(&t, Method::POST, "/provisioning", None, Some(start.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &t,
        Method::POST,
        "/provisioning",
        Some(&outsider),
        Some(start.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, run) = call(&t, Method::POST, "/provisioning", Some(&ops), Some(start)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let path = format!("/provisioning/{id}");
    eventually("the run succeeded", || async {
        call(&t, Method::GET, &path, Some(&ops), None).await.1["status"] == "succeeded"
    })
    .await;
    let (status, run) = call(&t, Method::GET, &path, Some(&ops), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["steps"][0]["name"], "create_tenant");
    assert_eq!(run["steps"][1]["attempts"], 1);
    assert!(run["steps"][1]["started_at"].is_string());
    assert!(
        t.directory()
            .backend()
            .find_tenant_by_slug(&Slug::new("acme").unwrap())
            .await
            .unwrap()
            .is_some()
    );
    let (status, _) = call(&t, Method::GET, &path, Some(&outsider), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&t, Method::POST, &format!("{path}/retry"), Some(&ops), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = call(&t, Method::GET, "/provisioning/not-an-id", Some(&ops), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Cancel mid-step.
    dns.set_hang(true);
    let start = json!({ "pipeline": "signup", "input": input("beta") });
    let (_, run) = call(&t, Method::POST, "/provisioning", Some(&ops), Some(start)).await;
    let path = format!("/provisioning/{}", run["id"].as_str().unwrap());
    dns.hanging().await;
    let (status, run) = call(
        &t,
        Method::POST,
        &format!("{path}/cancel"),
        Some(&ops),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(run["status"], "cancelling");
    eventually("the run is cancelled", || async {
        call(&t, Method::GET, &path, Some(&ops), None).await.1["status"] == "cancelled"
    })
    .await;
    assert_eq!(dns.record("beta"), None);

    // A failed run keeps its tenant (OnFailure::Hold) and is retried from
    // the failed step once the cause is gone.
    dns.set_hang(false);
    dns.set_broken(true);
    let start = json!({ "pipeline": "signup", "input": input("gamma") });
    let (_, run) = call(&t, Method::POST, "/provisioning", Some(&ops), Some(start)).await;
    let path = format!("/provisioning/{}", run["id"].as_str().unwrap());
    eventually("the run failed", || async {
        call(&t, Method::GET, &path, Some(&ops), None).await.1["status"] == "failed"
    })
    .await;
    let (_, run) = call(&t, Method::GET, &path, Some(&ops), None).await;
    assert_eq!(run["steps"][1]["status"], "failed");
    assert_eq!(
        run["steps"][1]["last_error"],
        "dns zone rejected the record"
    );
    dns.set_broken(false);
    let (status, _) = call(&t, Method::POST, &format!("{path}/retry"), Some(&ops), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("the retried run succeeded", || async {
        call(&t, Method::GET, &path, Some(&ops), None).await.1["status"] == "succeeded"
    })
    .await;
    let (_, run) = call(&t, Method::GET, &path, Some(&ops), None).await;
    assert_eq!(run["manual_retries"], 1);
    assert_eq!(run["steps"][0]["attempts"], 1);
}
