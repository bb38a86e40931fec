//! Two replicas on one Postgres database: what one changes, the other's
//! pipeline caches forget as it commits, long before their TTL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use tenancy_core::testkit::postgres::TestSchema;
use tenancy_http::auth::{ClientInfo, NewApiKey, Password, Registration, Scope};
use tenancy_http::core::{
    Acceptor, AuditContext, Email, NewTenant, NewUser, RoleName, RoleSet, Slug, TenantName,
};
use tenancy_http::testkit::scenario_config;
use tenancy_http::{RequestHead, Tenancy, TenantSource};

/// A replica whose caches would hold for an hour without notices.
async fn replica(schema: &TestSchema) -> Tenancy {
    let (catalog, auth, mut config) = scenario_config();
    config.tenant_source = TenantSource::Token;
    config.tenant_status_ttl = Duration::from_secs(3600);
    Tenancy::postgres(schema.pool.clone(), catalog, auth, config)
        .await
        .unwrap()
}

/// Authenticates `authorization` on `tenancy` and checks `permission`.
async fn status_of(tenancy: &Tenancy, authorization: &str, permission: &str) -> StatusCode {
    let uri = Uri::from_static("/projects");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(authorization).unwrap(),
    );
    let head = RequestHead::new(&Method::GET, &uri, &headers, None);
    let outcome = match tenancy.authenticate(head).await {
        Ok(context) => context.require(permission).await,
        Err(problem) => Err(problem),
    };
    outcome.map_or_else(|problem| problem.status(), |()| StatusCode::OK)
}

/// Waits up to ten seconds for `tenancy` to answer `expected`.
async fn eventually(
    tenancy: &Tenancy,
    authorization: &str,
    permission: &str,
    expected: StatusCode,
) {
    let start = Instant::now();
    loop {
        let status = status_of(tenancy, authorization, permission).await;
        if status == expected {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still {status}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn membership_and_tenant_changes_reach_other_replicas_at_once() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let writer = replica(&schema).await;
    let reader = replica(&schema).await;

    let ada = reader
        .auth()
        .register(
            Registration {
                user: NewUser::new(Email::new("ada@replicas.test").unwrap()),
                password: Password::new("correct horse battery staple"),
                tenant: NewTenant::new(
                    Slug::new("replicas").unwrap(),
                    TenantName::new("Replicas").unwrap(),
                ),
            },
            &ClientInfo::default(),
        )
        .await
        .unwrap();
    let scope = writer
        .directory()
        .scope(ada.membership.tenant_id)
        .await
        .unwrap();
    let invited = writer
        .directory()
        .invite(
            &scope,
            Email::new("mia@replicas.test").unwrap(),
            RoleSet::single(RoleName::ADMIN),
            &AuditContext::user(ada.user.id),
        )
        .await
        .unwrap();
    let mia = writer
        .directory()
        .accept_invitation(
            &invited.token,
            Acceptor::NewUser { display_name: None },
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let (_, secret) = reader
        .auth()
        .create_api_key(
            &scope,
            NewApiKey {
                name: "mia's key".into(),
                scopes: vec![Scope::new("*").unwrap()],
                expires_at: None,
            },
            &AuditContext::user(mia.user.id),
        )
        .await
        .unwrap();
    let key = format!("Bearer {}", secret.expose_secret());

    // The reader caches mia's roles and the tenant's status…
    assert_eq!(
        status_of(&reader, &key, "members:manage").await,
        StatusCode::OK
    );
    // …the writer demotes her, and the reader forgets at once.
    writer
        .directory()
        .change_roles(
            &scope,
            mia.user.id,
            RoleSet::single(RoleName::MEMBER),
            &AuditContext::user(ada.user.id),
        )
        .await
        .unwrap();
    eventually(&reader, &key, "members:manage", StatusCode::FORBIDDEN).await;
    assert_eq!(
        status_of(&reader, &key, "projects:read").await,
        StatusCode::OK
    );

    // A suspension elsewhere stops the key here too.
    writer
        .directory()
        .suspend_tenant(scope.tenant_id(), &AuditContext::system())
        .await
        .unwrap();
    eventually(&reader, &key, "projects:read", StatusCode::FORBIDDEN).await;
    writer
        .directory()
        .reactivate_tenant(scope.tenant_id(), &AuditContext::system())
        .await
        .unwrap();
    eventually(&reader, &key, "projects:read", StatusCode::OK).await;
}
