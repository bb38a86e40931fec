//! The conformance suites against Postgres, plus what only Postgres has:
//! row-level security on the authz tables (as a non-superuser role),
//! epoch notifications reaching another replica's cache, and migrations
//! shared with tenancy-core.
//!
//! Needs `DATABASE_URL`; skipped without it unless `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers report failure by panicking

use std::sync::Arc;
use std::time::Duration;

use tenancy_authz::store::postgres::listen_for_epochs;
use tenancy_authz::testkit::postgres::fixture_with_schema;
use tenancy_authz::testkit::{Fixture, create_tenant};
use tenancy_authz::*;
use tenancy_core::postgres::begin_tenant_transaction;
use tenancy_core::{AuditContext, RoleName, RoleSet, UserId};

tenancy_authz::conformance_tests!(tenancy_authz::testkit::postgres::fixture());

fn editor() -> RoleDefinition {
    RoleDefinition::new(RoleName::new("editor").unwrap()).grant("projects:update".parse().unwrap())
}

#[tokio::test]
async fn row_level_security_hides_other_tenants_rows() {
    let Some((schema, f)) = fixture_with_schema().await else {
        return;
    };
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&schema.pool)
            .await
            .unwrap();
    assert!(
        !superuser && !bypass,
        "connect as an ordinary role to test row-level security"
    );
    let (a, _) = create_tenant(&f).await;
    let (b, _) = create_tenant(&f).await;
    f.roles
        .put_role(a, &editor(), Epoch(0), &AuditContext::system())
        .await
        .unwrap();
    let doc: PolicyDocument = serde_json::from_str(
        r#"{"id": "p", "statements": [{"effect": "deny", "actions": ["*"]}]}"#,
    )
    .unwrap();
    f.policies
        .put_policy(a, &doc, Epoch(1), &AuditContext::system())
        .await
        .unwrap();

    for table in [
        "tenancy_authz_roles",
        "tenancy_authz_policies",
        "tenancy_authz_epochs",
    ] {
        let unscoped: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&schema.pool)
                .await
                .unwrap();
        assert_eq!(unscoped, 0, "{table} unscoped");
        let mut tx = begin_tenant_transaction(&schema.pool, b).await.unwrap();
        let in_b: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(in_b, 0, "{table} seen from B");
        drop(tx);
        let mut tx = begin_tenant_transaction(&schema.pool, a).await.unwrap();
        let in_a: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(in_a, 1, "{table} seen from A");
    }
    // B cannot write rows for A, nor change A's.
    let mut tx = begin_tenant_transaction(&schema.pool, b).await.unwrap();
    let forged = sqlx::query(
        "INSERT INTO tenancy_authz_roles (tenant_id, name, definition, updated_at) VALUES ($1, 'x', '{}', now())",
    )
    .bind(a.as_uuid())
    .execute(&mut *tx)
    .await;
    assert!(
        forged
            .unwrap_err()
            .to_string()
            .contains("row-level security")
    );
    drop(tx);
    let mut tx = begin_tenant_transaction(&schema.pool, b).await.unwrap();
    let bumped = sqlx::query("UPDATE tenancy_authz_epochs SET epoch = epoch + 100")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(bumped.rows_affected(), 0);
    tx.commit().await.unwrap();
    assert_eq!(f.roles.roles_epoch(a).await.unwrap(), Epoch(2));
}

/// Two replicas, each with its own cache: a change written through one is
/// announced by NOTIFY and the other's listener marks its cache stale.
#[tokio::test]
async fn another_replica_learns_of_epoch_bumps() {
    let Some((schema, f)) = fixture_with_schema().await else {
        return;
    };
    let (tenant, _) = create_tenant(&f).await;
    let engine = Engine::new(Catalog::new(["projects:update"]).unwrap());
    let replica = |f: &Fixture| {
        Arc::new(
            PolicyCache::new(
                engine.clone(),
                Arc::clone(&f.roles),
                Arc::clone(&f.policies),
            )
            .with_freshness(Freshness::Notified),
        )
    };
    let (one, two) = (replica(&f), replica(&f));
    let listener = listen_for_epochs(&schema.pool, Arc::clone(&two))
        .await
        .unwrap();
    let ann = Principal::user(UserId::new(), tenant, RoleSet::parse(["editor"]).unwrap());
    let project = Resource::new("project").in_tenant(tenant);
    let request = AuthzRequest::new(&ann, "projects:update", &project);
    assert!(
        !two.authorizer(tenant)
            .await
            .unwrap()
            .check(&request)
            .allowed()
    );

    let owner = Principal::user(UserId::new(), tenant, RoleSet::single(RoleName::OWNER));
    AuthzAdmin::new(
        Arc::clone(&one),
        Arc::new(DirectoryRoleHolders::new(Arc::clone(&f.backend))),
    )
    .put_role(
        &tenancy_core::TenantScope::assume_resolved(tenant),
        &owner,
        editor(),
        &AuditContext::system(),
    )
    .await
    .unwrap();
    assert!(
        one.authorizer(tenant)
            .await
            .unwrap()
            .check(&request)
            .allowed()
    );
    let mut learned = false;
    for _ in 0..100 {
        if two
            .authorizer(tenant)
            .await
            .unwrap()
            .check(&request)
            .allowed()
        {
            learned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    listener.stop();
    assert!(learned, "replica two never learned of the new epoch");
    assert_eq!(two.cached_epoch(tenant), Some(Epoch(1)));
}

#[tokio::test]
async fn migrations_rerun_cleanly() {
    let Some((schema, _)) = fixture_with_schema().await else {
        return;
    };
    let store = store::postgres::PgAuthzStore::new(schema.pool.clone());
    store.migrate().await.unwrap();
    let versions: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM {} ORDER BY version",
        tenancy_core::postgres::MIGRATIONS_TABLE
    )))
    .fetch_all(&schema.pool)
    .await
    .unwrap();
    let expected: Vec<i64> = tenancy_core::postgres::migrator()
        .iter()
        .chain(store::postgres::migrator().iter())
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, expected);
}
