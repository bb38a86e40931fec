//! The metering step never silently stops applying: a quota without a
//! plan source is refused when the guard is built, and a limit keyed by
//! client address still counts requests whose address is unknown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use tenancy_core::{
    AuditContext, Email, MemoryBackend, NewTenant, NewUser, Owner, Slug, TenantName,
};
use tenancy_http::auth::AuthConfig;
use tenancy_http::auth::NewApiKey;
use tenancy_http::authz::Catalog;
use tenancy_http::http::{HeaderMap, HeaderValue, Method, Uri, header};
use tenancy_http::{Guard, RequestHead, Tenancy};
use tenancy_metering::http::{GuardError, KeyPart, MeteringModule, RateRule};
use tenancy_metering::{
    Aggregation, MemoryMeteringStore, Meter, MeterName, Metering, Meters, OnStoreError, RateLimit,
};

fn module() -> MeteringModule {
    let meters = Meters::new([Meter::new(
        MeterName::new("api_calls").unwrap(),
        Aggregation::Count,
        "calls",
    )
    .unwrap()])
    .unwrap();
    let store = Arc::new(MemoryMeteringStore::new(Arc::new(MemoryBackend::new())));
    MeteringModule::builder(Metering::new(meters, store)).build()
}

#[test]
fn a_quota_without_plans_is_refused_when_the_guard_is_built() {
    let refused = module()
        .guard("GET /projects")
        .quota("api_calls", 1, OnStoreError::Closed);
    assert!(
        matches!(&refused, Err(GuardError::NoPlanSource(meter)) if meter == "api_calls"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_limit_by_client_address_counts_requests_without_one() {
    let tenancy = Tenancy::builder(
        Catalog::new(["projects:read"]).unwrap(),
        AuthConfig::new("https://app.example", "app"),
    )
    .build()
    .await
    .unwrap();
    let created = tenancy
        .directory()
        .create_tenant(
            NewTenant::new(
                Slug::new("ip-limits").unwrap(),
                TenantName::new("Ip").unwrap(),
            ),
            Owner::New(NewUser::new(Email::new("owner@ip.test").unwrap())),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let scope = tenancy.directory().scope(created.tenant.id).await.unwrap();
    let (_, secret) = tenancy
        .auth()
        .create_api_key(
            &scope,
            NewApiKey {
                name: "ci".into(),
                scopes: Vec::new(),
                expires_at: None,
            },
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", secret.expose_secret())).unwrap(),
    );
    let uri: Uri = "/projects".parse().unwrap();
    // No peer: the integration does not know the client's address.
    let context = tenancy
        .authenticate(RequestHead::new(&Method::GET, &uri, &headers, None))
        .await
        .unwrap();
    assert!(context.client_ip().is_none());

    let guard = module().guard("GET /projects").limit(
        RateRule::new(
            "per-ip",
            RateLimit::new(1, Duration::from_secs(60)).unwrap(),
        )
        .unwrap()
        .by(KeyPart::ClientIp),
    );
    assert!(guard.check(&context).await.is_ok());
    let refused = guard.check(&context).await.unwrap_err();
    assert_eq!(refused.status(), 429);
}
