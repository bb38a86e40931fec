//! The webhook and provisioning modules' routes over real HTTP, shared by
//! the axum and actix-web tests (each serves the app its own way): every
//! module's routes are mounted beside the SDK's, behind the module's
//! permission, with another tenant's endpoint and a non-operator's runs
//! answered 404.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tenancy_http::auth::{AuthConfig, NewApiKey, Scope};
use tenancy_http::authz::Catalog;
use tenancy_http::core::{
    AuditContext, Directory, Email, NewTenant, NewUser, Owner, Slug, TenantId, TenantName,
    TenantStore,
};
use tenancy_http::{PROBLEM_JSON, Stores, Tenancy};
use tenancy_jobs::MemoryJobStore;
use tenancy_provisioning::http::{PROVISIONING_MANAGE, ProvisioningModule};
use tenancy_provisioning::steps::CreateTenant;
use tenancy_provisioning::{MemoryProvisioningStore, Pipeline, Provisioner, WorkerConfig};
use tenancy_webhooks::http::{WEBHOOKS_MANAGE, WebhooksModule};
use tenancy_webhooks::{
    MemoryWebhookStore, SecretCipher, SecretKey, TargetPolicy, WebhookConfig, Webhooks,
};

/// An app on the in-memory stores with both modules; its operator tenant
/// is made before the app, as a host makes its staff tenant once and
/// configures its id.
pub(crate) async fn durable_app() -> (Tenancy, TenantId) {
    let stores = Stores::memory();
    let backend = stores.backend.clone();
    let operator = create_tenant(&Directory::new(backend.clone()), "ops").await;
    // The test's target is a local address (never contacted: no event is
    // sent), which the default policy refuses.
    let webhooks = Webhooks::new(
        Arc::new(MemoryWebhookStore::new()),
        Arc::new(MemoryJobStore::new()),
        backend,
        SecretCipher::new(SecretKey::generate("k").unwrap()),
        WebhookConfig::default().with_policy(TargetPolicy::AllowPrivate),
    )
    .unwrap();
    let provisioning = ProvisioningModule::new(operator, |app: &Tenancy| {
        let mut config = WorkerConfig::default();
        config.idle_poll = Duration::from_millis(10);
        Provisioner::new(Arc::new(MemoryProvisioningStore::new()))
            .with_config(config)
            .with_pipeline(Pipeline::new("signup").step(CreateTenant::new(app.directory().clone())))
    });
    let tenancy = Tenancy::builder(
        Catalog::new([WEBHOOKS_MANAGE, PROVISIONING_MANAGE]).unwrap(),
        AuthConfig::new("https://app.example", "app"),
    )
    .stores(stores)
    .module(WebhooksModule::new(webhooks))
    .module(provisioning)
    .build()
    .await
    .unwrap();
    (tenancy, operator)
}

async fn create_tenant(directory: &Directory, slug: &str) -> TenantId {
    directory
        .create_tenant(
            NewTenant::new(Slug::new(slug).unwrap(), TenantName::new(slug).unwrap()),
            Owner::New(NewUser::new(
                Email::new(&format!("staff@{slug}.test")).unwrap(),
            )),
            &AuditContext::system(),
        )
        .await
        .unwrap()
        .tenant
        .id
}

/// An API key of `tenant` scoped to both modules' permissions.
async fn key(tenancy: &Tenancy, tenant: TenantId) -> String {
    let scope = tenancy.directory().scope(tenant).await.unwrap();
    let (_, secret) = tenancy
        .auth()
        .create_api_key(
            &scope,
            NewApiKey {
                name: "durable".into(),
                scopes: vec![
                    Scope::new(WEBHOOKS_MANAGE).unwrap(),
                    Scope::new(PROVISIONING_MANAGE).unwrap(),
                ],
                expires_at: None,
            },
            &AuditContext::system(),
        )
        .await
        .unwrap();
    secret.expose_secret().to_owned()
}

/// `method path` on the served app, with an optional bearer key and JSON
/// body; the status, the content type and the body as JSON.
async fn call(
    base: &str,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, String, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.unwrap();
    (
        status,
        content_type,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// The scenario, against the app served at `address`.
pub(crate) async fn run(tenancy: &Tenancy, operator: TenantId, address: std::net::SocketAddr) {
    let base = format!("http://{address}");
    let tenancy = tenancy.clone();
    let a = key(
        &tenancy,
        create_tenant(tenancy.directory(), "hooks-a").await,
    )
    .await;
    let b = key(
        &tenancy,
        create_tenant(tenancy.directory(), "hooks-b").await,
    )
    .await;
    let ops = key(&tenancy, operator).await;

    // Webhooks: the module's permission is checked before its handler.
    let (status, _, body) = call(&base, Method::GET, "/webhooks/endpoints", None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, created) = call(
        &base,
        Method::POST,
        "/webhooks/endpoints",
        Some(&a),
        Some(json!({"url": "http://127.0.0.1:9/hook", "event_types": ["member.*"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let id = created["id"].as_str().unwrap().to_owned();
    let endpoint = format!("/webhooks/endpoints/{id}");

    let (status, _, list) = call(&base, Method::GET, "/webhooks/endpoints", Some(&a), None).await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["id"], id.as_str());
    assert!(items[0].get("secret").is_none(), "{list}");

    // Another tenant: the endpoint does not exist for it.
    let (status, content_type, body) = call(&base, Method::GET, &endpoint, Some(&b), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(content_type, PROBLEM_JSON);
    let (status, _, body) = call(&base, Method::DELETE, &endpoint, Some(&b), None).await;
    assert_eq!(status, 404, "{body}");
    let (_, _, other) = call(&base, Method::GET, "/webhooks/endpoints", Some(&b), None).await;
    assert_eq!(other["items"], json!([]), "{other}");

    let (status, _, got) = call(&base, Method::GET, &endpoint, Some(&a), None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["event_types"], json!(["member.*"]));
    let (status, _, body) = call(&base, Method::DELETE, &endpoint, Some(&a), None).await;
    assert_eq!(status, 204, "{body}");
    let (status, _, body) = call(&base, Method::GET, &endpoint, Some(&a), None).await;
    assert_eq!(status, 404, "{body}");

    // Provisioning: the operator starts a run and watches it succeed.
    let start = json!({
        "pipeline": "signup",
        "input": {"slug": "acme", "name": "Acme", "owner_email": "owner@acme.test"},
    });
    let (status, _, run) = call(
        &base,
        Method::POST,
        "/provisioning",
        Some(&ops),
        Some(start.clone()),
    )
    .await;
    assert_eq!(status, 202, "{run}");
    let run_path = format!("/provisioning/{}", run["id"].as_str().unwrap());
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    let run = loop {
        let (status, _, run) = call(&base, Method::GET, &run_path, Some(&ops), None).await;
        assert_eq!(status, 200, "{run}");
        if run["status"] == "succeeded" {
            break run;
        }
        assert!(tokio::time::Instant::now() < give_up, "the run: {run}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(run["steps"][0]["name"], "create_tenant", "{run}");
    assert!(
        tenancy
            .directory()
            .backend()
            .find_tenant_by_slug(&Slug::new("acme").unwrap())
            .await
            .unwrap()
            .is_some()
    );

    // Any other tenant, even holding the permission: the runs do not exist.
    let (status, content_type, body) = call(&base, Method::GET, &run_path, Some(&a), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(content_type, PROBLEM_JSON);
    let (status, _, body) = call(&base, Method::POST, "/provisioning", Some(&a), Some(start)).await;
    assert_eq!(status, 404, "{body}");
}
