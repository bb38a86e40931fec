//! `GET /audit/verify` names the first broken link of a chain edited in
//! the database behind the SDK's back (as the table owner could).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tenancy_core::postgres::sqlx;
use tenancy_core::testkit::postgres::TestSchema;
use tenancy_http::auth::{ClientInfo, Password, Registration};
use tenancy_http::core::{Email, NewTenant, NewUser, Slug, TenantId, TenantName};
use tenancy_http::testkit::scenario_config;
use tenancy_http::{ApiRequest, Tenancy, routes};

/// `GET /audit/verify` as `bearer`: the status and the JSON body.
async fn verify(tenancy: &Tenancy, bearer: &str) -> (StatusCode, Value) {
    let route = routes()
        .into_iter()
        .find(|r| r.path == "/audit/verify")
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {bearer}")).unwrap(),
    );
    let response = tenancy
        .dispatch(
            &route,
            ApiRequest::new(
                Method::GET,
                "/audit/verify".parse().unwrap(),
                headers,
                None,
                Bytes::new(),
            ),
        )
        .await;
    let status = response.status();
    (status, serde_json::from_slice(response.body()).unwrap())
}

/// An owner's tenant with a few events; the owner's access token.
async fn audited_tenant(tenancy: &Tenancy, slug: &str) -> (TenantId, String) {
    let done = tenancy
        .auth()
        .register(
            Registration {
                user: NewUser::new(Email::new(&format!("owner@{slug}.example")).unwrap()),
                password: Password::new("correct horse battery staple"),
                tenant: NewTenant::new(Slug::new(slug).unwrap(), TenantName::new(slug).unwrap()),
            },
            &ClientInfo::default(),
        )
        .await
        .unwrap();
    let tenant = done.membership.tenant_id;
    let scope = tenancy.directory().scope(tenant).await.unwrap();
    for n in 0..3 {
        tenancy
            .directory()
            .invite(
                &scope,
                Email::new(&format!("guest{n}@{slug}.example")).unwrap(),
                tenancy_http::core::RoleSet::parse(["member"]).unwrap(),
                &tenancy_http::core::AuditContext::system(),
            )
            .await
            .unwrap();
    }
    (tenant, done.access_token.token)
}

#[tokio::test]
async fn an_edited_event_is_named_as_the_first_broken_link() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let (catalog, auth, http) = scenario_config();
    let tenancy = Tenancy::postgres(schema.pool.clone(), catalog, auth, http)
        .await
        .unwrap();
    let (tenant, token) = audited_tenant(&tenancy, "verify-edited").await;
    let (kept, kept_token) = audited_tenant(&tenancy, "verify-kept").await;
    let (status, intact) = verify(&tenancy, &token).await;
    assert_eq!(status, StatusCode::OK, "{intact}");
    assert_eq!(intact["ok"], true, "{intact}");
    assert_eq!(intact["checked"], 5, "{intact}");

    // The test role owns the tables: it can switch the append-only trigger
    // off, which the app's own role could not.
    let mut conn = schema.pool.acquire().await.unwrap();
    sqlx::query(
        "ALTER TABLE tenancy_audit_events DISABLE TRIGGER tenancy_audit_events_append_only",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    let mut tx = tenancy_core::postgres::begin_tenant_transaction(&schema.pool, tenant)
        .await
        .unwrap();
    let edited =
        sqlx::query("UPDATE tenancy_audit_events SET target_id = 'someone-else' WHERE seq = 3")
            .execute(&mut *tx)
            .await
            .unwrap();
    assert_eq!(edited.rows_affected(), 1);
    tx.commit().await.unwrap();

    let (status, broken) = verify(&tenancy, &token).await;
    assert_eq!(status, StatusCode::OK, "{broken}");
    assert_eq!(broken["ok"], false, "{broken}");
    assert_eq!(broken["checked"], 2, "{broken}");
    assert_eq!(broken["last_intact"]["seq"], 2, "{broken}");
    assert_eq!(
        broken["first_broken"],
        json!({
            "seq": 3,
            "reason": { "kind": "hash_mismatch" },
            "detail": "event content does not match its hash",
        })
    );
    // Another tenant's chain is its own.
    let (_, other) = verify(&tenancy, &kept_token).await;
    assert_eq!(other["ok"], true, "{other} ({kept})");
}
