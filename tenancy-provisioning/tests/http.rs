//! The provisioning routes served through a built app: operator access
//! only, start, status with steps, cancel, retry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tenancy_core::{
    AuditContext, Directory, Email, NewTenant, NewUser, Owner, Slug, TenantId, TenantName,
    TenantStore, TenantUpdate,
};
use tenancy_http::auth::{AuthConfig, NewApiKey, Scope};
use tenancy_http::authz::Catalog;
use tenancy_http::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tenancy_http::{ApiRequest, Stores, Tenancy};
use tenancy_provisioning::http::{PROVISIONING_MANAGE, ProvisioningModule};
use tenancy_provisioning::steps::{CreateApiKey, CreateTenant, KeyDelivery, WelcomeMail};
use tenancy_provisioning::testkit::{SimulatedDns, eventually, input, test_policy};
use tenancy_provisioning::{
    MemoryProvisioningStore, OnFailure, Pipeline, Provisioner, WorkerConfig,
};

/// An app whose operator tenant is `ops` (made before the app, as a host
/// makes its staff tenant once and configures its id).
async fn app(dns: &Arc<SimulatedDns>) -> Tenancy {
    let stores = Stores::memory();
    let ops = create_tenant(&Directory::new(stores.backend.clone()), "ops").await;
    let dns = dns.clone();
    let module = ProvisioningModule::new(ops, move |t: &Tenancy| {
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
    .stores(stores)
    .module(module)
    .build()
    .await
    .unwrap()
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

/// A tenant `slug` and an API key of it scoped to provisioning.
async fn key(t: &Tenancy, slug: &str) -> String {
    let id = match t
        .directory()
        .backend()
        .find_tenant_by_slug(&Slug::new(slug).unwrap())
        .await
        .unwrap()
    {
        Some(tenant) => tenant.id,
        None => create_tenant(t.directory(), slug).await,
    };
    key_of(t, id).await
}

/// An API key of the tenant `id` scoped to provisioning.
async fn key_of(t: &Tenancy, id: TenantId) -> String {
    let scope = t.directory().scope(id).await.unwrap();
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
    let bare = path.split('?').next().unwrap();
    let segments: Vec<&str> = bare.trim_start_matches('/').split('/').collect();
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
    // The dead letters, as an operator finds them.
    let (status, failed) = call(
        &t,
        Method::GET,
        "/provisioning?status=failed",
        Some(&ops),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(failed["items"].as_array().unwrap().len(), 1);
    assert_eq!(failed["items"][0]["id"], run["id"]);
    let (status, all) = call(&t, Method::GET, "/provisioning?limit=2", Some(&ops), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    assert!(all["next_cursor"].is_string());
    let (status, _) = call(
        &t,
        Method::GET,
        "/provisioning?status=done",
        Some(&ops),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
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

/// The operator tenant is pinned by id: once it changes its slug, a tenant
/// registering the old slug (as anyone may through the public sign-up)
/// gets nothing, and the operator keeps access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_is_pinned_by_id_not_by_slug() {
    let dns = SimulatedDns::new();
    let t = app(&dns).await;
    let operator = t.module::<ProvisioningModule>().unwrap().operator();
    let ops = key_of(&t, operator).await;
    let rename = TenantUpdate {
        slug: Some(Slug::new("staff").unwrap()),
        ..TenantUpdate::default()
    };
    t.directory()
        .update_tenant(operator, rename, &AuditContext::system())
        .await
        .unwrap();
    let squatter = t
        .directory()
        .create_tenant(
            NewTenant::new(Slug::new("ops").unwrap(), TenantName::new("ops").unwrap()),
            Owner::New(NewUser::new(Email::new("mallory@evil.test").unwrap())),
            &AuditContext::system(),
        )
        .await
        .unwrap()
        .tenant
        .id;
    let squatter = key_of(&t, squatter).await;
    let (status, _) = call(&t, Method::GET, "/provisioning", Some(&squatter), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let start = json!({ "pipeline": "signup", "input": input("acme") });
    let (status, _) = call(
        &t,
        Method::POST,
        "/provisioning",
        Some(&squatter),
        Some(start.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&t, Method::GET, "/provisioning", Some(&ops), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&t, Method::POST, "/provisioning", Some(&ops), Some(start)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[derive(Default)]
struct Mails(std::sync::Mutex<Vec<String>>);

#[tenancy_http::async_trait]
impl tenancy_http::auth::Mailer for Mails {
    async fn send(&self, mail: tenancy_http::auth::Mail) -> Result<(), tenancy_core::BoxError> {
        self.0.lock().unwrap().push(mail.to.as_str().to_owned());
        Ok(())
    }
}

#[derive(Default)]
struct Keys(std::sync::Mutex<Vec<(tenancy_core::ApiKeyId, String)>>);

#[tenancy_http::async_trait]
impl KeyDelivery for Keys {
    async fn deliver(
        &self,
        _tenant: tenancy_core::TenantId,
        key_id: tenancy_core::ApiKeyId,
        secret: &tenancy_http::auth::ApiKeySecret,
    ) -> Result<(), tenancy_provisioning::StepError> {
        self.0
            .lock()
            .unwrap()
            .push((key_id, secret.expose_secret().to_owned()));
        Ok(())
    }
}

/// A delivery that sees the secret and then fails (as when the channel
/// breaks after the secret left).
#[derive(Default)]
struct Failing(Keys);

#[tenancy_http::async_trait]
impl KeyDelivery for Failing {
    async fn deliver(
        &self,
        tenant: tenancy_core::TenantId,
        key_id: tenancy_core::ApiKeyId,
        secret: &tenancy_http::auth::ApiKeySecret,
    ) -> Result<(), tenancy_provisioning::StepError> {
        self.0.deliver(tenant, key_id, secret).await?;
        Err(tenancy_provisioning::StepError::transient(
            "the delivery channel is down",
        ))
    }
}

/// The API key and welcome mail steps: the secret is delivered once and
/// works, the state keeps only the key's id, the owner is mailed, and a
/// cancel revokes the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_api_key_and_welcome_mail() {
    let mails = Arc::new(Mails::default());
    let keys = Arc::new(Keys::default());
    let delivery: Arc<dyn KeyDelivery> = keys.clone();
    let module = ProvisioningModule::new(TenantId::new(), move |t: &Tenancy| {
        Provisioner::new(Arc::new(MemoryProvisioningStore::new())).with_pipeline(
            Pipeline::new("signup")
                .with_policy(test_policy())
                .step(CreateTenant::new(t.directory().clone()))
                .step(CreateApiKey::new(
                    t.auth().clone(),
                    t.directory().clone(),
                    Vec::new(),
                    delivery.clone(),
                ))
                .step(WelcomeMail::new(t.auth().clone())),
        )
    })
    .workers(0);
    let t = Tenancy::builder(
        Catalog::new([PROVISIONING_MANAGE]).unwrap(),
        AuthConfig::new("https://app.example", "app"),
    )
    .mailer(mails.clone())
    .module(module)
    .build()
    .await
    .unwrap();
    let p = t
        .module::<ProvisioningModule>()
        .unwrap()
        .provisioner()
        .unwrap();
    let run = p.start("signup", input("acme")).await.unwrap();
    p.drain().await.unwrap();
    let run = p.status(run.id).await.unwrap();
    assert_eq!(
        run.status,
        tenancy_provisioning::RunStatus::Succeeded,
        "{run:?}"
    );
    let (key_id, secret) = keys.0.lock().unwrap()[0].clone();
    assert_eq!(keys.0.lock().unwrap().len(), 1);
    assert_eq!(run.state["api_key_id"], json!(key_id.to_string()));
    let stored = serde_json::to_string(&run).unwrap();
    assert!(!stored.contains(&secret), "the secret is not in the run");
    // The key works in the new tenant.
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {secret}")).unwrap(),
    );
    let uri: tenancy_http::http::Uri = "/anything".parse().unwrap();
    let context = t
        .authenticate(tenancy_http::RequestHead::new(
            &Method::GET,
            &uri,
            &headers,
            None,
        ))
        .await
        .unwrap();
    assert_eq!(
        context.tenant_id().to_string(),
        run.state["tenant_id"].as_str().unwrap()
    );
    t.auth().wait_for_mail().await;
    assert_eq!(*mails.0.lock().unwrap(), ["owner@acme.test"]);

    // Run again (as on a retry): the key recorded in the state is revoked
    // and a new one delivered; compensation revokes that one too. A key a
    // tenant admin gave the very name the step uses is found by neither:
    // keys are found by the id in the state, never by name.
    let works = |secret: String| {
        let t = &t;
        async move {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {secret}")).unwrap(),
            );
            let uri: tenancy_http::http::Uri = "/anything".parse().unwrap();
            t.authenticate(tenancy_http::RequestHead::new(
                &Method::GET,
                &uri,
                &headers,
                None,
            ))
            .await
            .is_ok()
        }
    };
    let tenant: TenantId = run.state["tenant_id"].as_str().unwrap().parse().unwrap();
    let scope = t.directory().scope(tenant).await.unwrap();
    let (_, admins) = t
        .auth()
        .create_api_key(
            &scope,
            NewApiKey {
                name: format!("provisioning {}", run.id),
                scopes: Vec::new(),
                expires_at: None,
            },
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let admins = admins.expose_secret().to_owned();
    let again = Arc::new(Keys::default());
    let step = CreateApiKey::new(
        t.auth().clone(),
        t.directory().clone(),
        Vec::new(),
        again.clone(),
    );
    let ctx = tenancy_provisioning::StepContext::new(run.id, "signup", input("acme"))
        .with_state(run.state.clone());
    let output = tenancy_provisioning::Step::run(&step, &ctx).await.unwrap();
    let (second_id, second) = again.0.lock().unwrap()[0].clone();
    assert_eq!(output.state["api_key_id"], json!(second_id.to_string()));
    assert!(!works(secret).await, "the first key is revoked");
    assert!(works(second.clone()).await);
    assert!(works(admins.clone()).await, "the admin's key is left alone");
    let mut state = run.state.clone();
    state.extend(output.state);
    let ctx = tenancy_provisioning::StepContext::new(run.id, "signup", input("acme"))
        .with_state(state.clone())
        .compensating(tenancy_provisioning::Compensation::Cancelled);
    tenancy_provisioning::Step::compensate(&step, &ctx)
        .await
        .unwrap();
    assert!(!works(second).await, "compensation revoked the key");
    assert!(works(admins.clone()).await, "the admin's key is left alone");

    // A delivery that fails after the secret left: the key it carried is
    // revoked before the step fails, as no later attempt could find it.
    let failing = Arc::new(Failing::default());
    let step = CreateApiKey::new(
        t.auth().clone(),
        t.directory().clone(),
        Vec::new(),
        failing.clone(),
    );
    let ctx =
        tenancy_provisioning::StepContext::new(run.id, "signup", input("acme")).with_state(state);
    let error = tenancy_provisioning::Step::run(&step, &ctx)
        .await
        .unwrap_err();
    assert!(error.is_transient());
    let (_, leaked) = failing.0.0.lock().unwrap()[0].clone();
    assert!(!works(leaked).await, "the undelivered key is revoked");
    assert!(works(admins).await, "the admin's key is left alone");
}
