//! The relay as a tenancy-http module: started with the app, delivering
//! what the app's own workflows publish, reporting its lag in `GET /ready`,
//! and finishing on `Tenancy::shutdown`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenancy_core::{
    AuditContext, ConsumerName, Email, Event, NewTenant, NewUser, Owner, Slug, TenantName,
};
use tenancy_events::{EventsModule, RelayConfig, Subscription};
use tenancy_http::auth::AuthConfig;
use tenancy_http::authz::Catalog;
use tenancy_http::http::{HeaderMap, Method, StatusCode};
use tenancy_http::{ApiRequest, Tenancy};

async fn ready(tenancy: &Tenancy) -> (StatusCode, serde_json::Value) {
    let route = tenancy
        .routes()
        .into_iter()
        .chain(tenancy_http::routes())
        .find(|r| r.path == "/ready")
        .unwrap();
    let request = ApiRequest::new(
        Method::GET,
        "http://app.test/ready".parse().unwrap(),
        HeaderMap::new(),
        None,
        Default::default(),
    );
    let response = tenancy.dispatch(&route, request).await;
    let body = serde_json::from_slice(response.body()).unwrap();
    (response.status(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_relays_what_the_app_publishes() {
    let seen = Arc::new(Mutex::new(Vec::<Event>::new()));
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let subscription = {
        let (seen, stalled) = (Arc::clone(&seen), Arc::clone(&stalled));
        Subscription::new(ConsumerName::new("test").unwrap(), move |event: Event| {
            let (seen, stalled) = (Arc::clone(&seen), Arc::clone(&stalled));
            async move {
                if stalled.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err("not yet".into());
                }
                seen.lock().unwrap().push(event);
                Ok(())
            }
        })
    };
    let mut config = RelayConfig::default();
    config.poll_interval = Duration::from_millis(10);
    config.base_backoff = Duration::from_millis(10);
    config.max_backoff = Duration::from_millis(20);
    let module = EventsModule::new()
        .sink(Arc::new(subscription))
        .config(config)
        .max_lag(Duration::from_millis(50));
    let tenancy = Tenancy::builder(
        Catalog::new(["projects:read"]).unwrap(),
        AuthConfig::new("https://app.example", "app"),
    )
    .module(module)
    .build()
    .await
    .unwrap();
    assert!(tenancy.module::<EventsModule>().unwrap().relay().is_some());

    let created = tenancy
        .directory()
        .create_tenant(
            NewTenant::new(
                Slug::new("events-module").unwrap(),
                TenantName::new("Events").unwrap(),
            ),
            Owner::New(NewUser::new(Email::new("owner@events.test").unwrap())),
            &AuditContext::system(),
        )
        .await
        .unwrap();

    // The subscriber refuses for now: the relay falls behind, /ready says so.
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (status, body) = ready(&tenancy).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.to_string().contains("event-relay"), "{body}");

    stalled.store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "nothing relayed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let event = seen.lock().unwrap()[0].clone();
    assert_eq!(event.event_type.as_str(), "tenant.created");
    assert_eq!(event.tenant_id, created.tenant.id);
    let (status, body) = ready(&tenancy).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tenancy.shutdown().await;
}

/// Without a relay, the builder's purge still bounds the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_purges_events_past_the_outbox_retention() {
    use tenancy_core::outbox::ReplayFrom;
    let tenancy = Tenancy::builder(
        Catalog::new(["projects:read"]).unwrap(),
        AuthConfig::new("https://app.example", "app"),
    )
    .purge_every(Some(Duration::from_millis(20)))
    .outbox_retention(Some(Duration::ZERO))
    .build()
    .await
    .unwrap();
    let created = tenancy
        .directory()
        .create_tenant(
            NewTenant::new(
                Slug::new("outbox-retention").unwrap(),
                TenantName::new("Retention").unwrap(),
            ),
            Owner::New(NewUser::new(Email::new("owner@retention.test").unwrap())),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let backend = tenancy.directory().backend().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = backend
            .read_events(created.tenant.id, ReplayFrom::Start, 10)
            .await
            .unwrap();
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never purged: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
