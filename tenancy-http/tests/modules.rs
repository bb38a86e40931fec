//! A module plugs its routes, request step and background tasks into the
//! builder without touching the SDK's own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};
use tenancy_http::auth::{Argon2Config, AuthConfig, ClientInfo, Password, Registration};
use tenancy_http::authz::Catalog;
use tenancy_http::core::{Email, NewTenant, NewUser, Slug, TenantId, TenantName};
use tenancy_http::{
    Access, ApiRequest, Module, Problem, RequestContext, Route, Tenancy, json, route,
};

/// Counts greetings, refuses one tenant, and runs a task until dropped.
struct Greeter {
    greeted: AtomicUsize,
    refused: std::sync::Mutex<Option<TenantId>>,
    task_running: Arc<AtomicBool>,
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

async fn greet(
    tenancy: &Tenancy,
    _: &ApiRequest,
    context: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let greeter = tenancy
        .module::<Greeter>()
        .expect("the module is registered");
    let count = greeter.greeted.fetch_add(1, Ordering::SeqCst) + 1;
    let tenant = context.expect("authenticated").tenant_id();
    json(
        StatusCode::OK,
        &serde_json::json!({ "tenant": tenant, "count": count }),
    )
}

#[async_trait]
impl Module for Greeter {
    fn name(&self) -> &'static str {
        "greeter"
    }

    fn routes(&self) -> Vec<Route> {
        vec![route!(GET "/greet", Access::Authenticated, greet)]
    }

    fn has_request_step(&self) -> bool {
        true
    }

    async fn on_request(&self, context: &RequestContext) -> Result<(), Problem> {
        let refused = *self.refused.lock().unwrap();
        if refused == Some(context.tenant_id()) {
            return Err(Problem::forbidden("this tenant may not be greeted"));
        }
        Ok(())
    }

    fn start(&self, _: &Tenancy) -> Vec<tokio::task::JoinHandle<()>> {
        let flag = self.task_running.clone();
        flag.store(true, Ordering::SeqCst);
        vec![tokio::spawn(async move {
            let _guard = SetOnDrop(flag);
            std::future::pending::<()>().await;
        })]
    }
}

fn request(path: &str, token: &str) -> ApiRequest {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    ApiRequest::new(
        Method::GET,
        path.parse().unwrap(),
        headers,
        None,
        Bytes::new(),
    )
}

#[tokio::test]
async fn a_module_brings_routes_a_request_step_and_tasks() {
    let mut auth = AuthConfig::new("https://modules.test", "modules");
    auth.argon2 = Argon2Config::new(1024, 1, 1);
    let task_running = Arc::new(AtomicBool::new(false));
    let tenancy = Tenancy::builder(Catalog::new(["projects:read"]).unwrap(), auth)
        .module(Greeter {
            greeted: AtomicUsize::new(0),
            refused: std::sync::Mutex::new(None),
            task_running: task_running.clone(),
        })
        .build()
        .await
        .unwrap();
    assert!(task_running.load(Ordering::SeqCst));
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
    let token = registered.access_token.token.clone();
    let tenant = registered.membership.tenant_id;

    // The module's route is mounted with the SDK's, behind the pipeline.
    let routes = tenancy.routes();
    assert!(routes.iter().any(|r| r.path == "/auth/login"));
    let greet = routes.iter().find(|r| r.path == "/greet").unwrap();
    let answer = tenancy.dispatch(greet, request("/greet", &token)).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(answer.body()).unwrap();
    assert_eq!(body["tenant"], tenant.to_string());
    assert_eq!(body["count"], 1);
    let anonymous = request("/greet", "garbage");
    assert_eq!(
        tenancy.dispatch(greet, anonymous).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // The request step runs on every authenticated request, SDK routes too.
    *tenancy.module::<Greeter>().unwrap().refused.lock().unwrap() = Some(tenant);
    let answer = tenancy.dispatch(greet, request("/greet", &token)).await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let me = routes.iter().find(|r| r.path == "/auth/me").unwrap();
    assert_eq!(
        tenancy
            .dispatch(me, request("/auth/me", &token))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        tenancy
            .module::<Greeter>()
            .unwrap()
            .greeted
            .load(Ordering::SeqCst),
        1
    );

    // The module's tasks stop with the last clone of the Tenancy.
    drop(routes);
    drop(tenancy);
    for _ in 0..100 {
        if !task_running.load(Ordering::SeqCst) {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the module's task outlived the Tenancy");
}

/// A module whose route requires a permission nobody declared.
struct Misspelled;

#[async_trait]
impl Module for Misspelled {
    fn name(&self) -> &'static str {
        "misspelled"
    }

    fn routes(&self) -> Vec<Route> {
        vec![route!(GET "/reports", Access::Permission("report:read"), greet)]
    }
}

#[tokio::test]
async fn a_module_route_needing_an_undeclared_permission_fails_the_build() {
    let mut auth = AuthConfig::new("https://modules.test", "modules");
    auth.argon2 = Argon2Config::new(1024, 1, 1);
    let built = Tenancy::builder(Catalog::new(["reports:read"]).unwrap(), auth)
        .module(Misspelled)
        .build()
        .await;
    match built {
        Err(tenancy_http::SetupError::UnknownPermission(unknown)) => {
            assert_eq!(unknown.name(), "report:read");
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the build must fail"),
    }
}
