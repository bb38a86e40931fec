//! The store suite and runner scenarios on Postgres, each on a fresh
//! migrated schema, plus the schema-per-tenant step.
//!
//! Needs `DATABASE_URL`; skipped without it unless `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

tenancy_provisioning::conformance_tests!(tenancy_provisioning::testkit::postgres::fixture());

use std::sync::Arc;

use serde_json::json;
use tenancy_core::postgres::PgBackend;
use tenancy_core::{Directory, PageRequest, TenantId, TenantStore};
use tenancy_provisioning::postgres::PgProvisioningStore;
use tenancy_provisioning::steps::{CreateTenant, TenantSchema, schema_name};
use tenancy_provisioning::testkit::postgres::fixture_with_schema;
use tenancy_provisioning::testkit::{
    Fixture, SeedRoles, SimulatedDns, clock, input, provisioner, settle, signup, test_policy,
};
use tenancy_provisioning::{Compensation, OnFailure, Pipeline, RunStatus, Step, StepContext};
use time::Duration;

const MIGRATIONS: [&str; 2] = [
    "CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL)",
    "ALTER TABLE notes ADD COLUMN pinned boolean NOT NULL DEFAULT false;
     CREATE INDEX notes_pinned ON notes (pinned)",
];

async fn schema_exists(pool: &sqlx::PgPool, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The tenant's schema is created and migrated (every migration once, even
/// when the step runs again), kept for a retry when a later step fails and
/// dropped when the run is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_schema_is_migrated_once_kept_for_retry_and_dropped_on_cancel() {
    let Some((schema, f)) = fixture_with_schema().await else {
        return;
    };
    let (clock, dns) = (clock(), SimulatedDns::new());
    let directory = Directory::new(f.backend.clone()).with_clock(clock.clone());
    let pipeline = Pipeline::new("schema")
        .with_policy(test_policy())
        .step(CreateTenant::new(directory))
        .step(TenantSchema::new(schema.pool.clone(), MIGRATIONS))
        .step(dns.clone());
    let p = provisioner(&f, &clock, pipeline);
    let run = p.start("schema", input("acme")).await.unwrap();
    settle(&p, &clock, run.id).await;
    let run = p.status(run.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let tenant: TenantId = run.state["tenant_id"].as_str().unwrap().parse().unwrap();
    let name = schema_name(tenant);
    assert_eq!(run.state["schema"], json!(name));
    let columns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns
         WHERE table_schema = $1 AND table_name = 'notes'",
    )
    .bind(&name)
    .fetch_one(&schema.pool)
    .await
    .unwrap();
    assert_eq!(columns, 3);

    // Run again (as after a crash): nothing is applied twice.
    let step = TenantSchema::new(schema.pool.clone(), MIGRATIONS);
    let ctx = StepContext::new(run.id, "schema", input("acme")).with_state(run.state.clone());
    step.run(&ctx).await.unwrap();
    let versions: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {name}._tenant_migrations"
    )))
    .fetch_one(&schema.pool)
    .await
    .unwrap();
    assert_eq!(versions, 2);

    // A run failing after its schema was made keeps it, with what was
    // written to it meanwhile, for a retry; a cancel drops it.
    dns.set_broken(true);
    let beta = p.start("schema", input("beta")).await.unwrap();
    settle(&p, &clock, beta.id).await;
    let beta = p.status(beta.id).await.unwrap();
    assert_eq!(beta.status, RunStatus::Failed);
    let beta_tenant: TenantId = beta.state["tenant_id"].as_str().unwrap().parse().unwrap();
    let beta_name = schema_name(beta_tenant);
    assert!(schema_exists(&schema.pool, &beta_name).await);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {beta_name}.notes (id, body) VALUES (1, 'kept')"
    )))
    .execute(&schema.pool)
    .await
    .unwrap();
    dns.set_broken(false);
    p.retry(beta.id).await.unwrap();
    settle(&p, &clock, beta.id).await;
    let beta = p.status(beta.id).await.unwrap();
    assert_eq!(beta.status, RunStatus::Succeeded, "{beta:?}");
    let body: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT body FROM {beta_name}.notes WHERE id = 1"
    )))
    .fetch_one(&schema.pool)
    .await
    .unwrap();
    assert_eq!(body, "kept");
    let ctx = StepContext::new(beta.id, "schema", input("beta"))
        .with_state(beta.state.clone())
        .compensating(Compensation::Cancelled);
    step.compensate(&ctx).await.unwrap();
    assert!(!schema_exists(&schema.pool, &beta_name).await);
    assert!(schema_exists(&schema.pool, &name).await);
}

/// A worker killed mid-step with its connections closed (as when its
/// process dies): after the lease, another process completes the run and
/// nothing exists twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_with_its_connections_is_resumed() {
    let Some((schema, f)) = fixture_with_schema().await else {
        return;
    };
    let crashed_pool = schema.pool_as(&schema.url, 4).await;
    let crashed = Fixture {
        store: Arc::new(PgProvisioningStore::new(crashed_pool.clone())),
        backend: Arc::new(PgBackend::new(crashed_pool.clone())),
    };
    let (clock, seed, dns) = (clock(), SeedRoles::default(), SimulatedDns::new());
    let p = provisioner(
        &crashed,
        &clock,
        signup(&crashed, &clock, &seed, &dns, OnFailure::Compensate),
    );
    dns.set_hang(true);
    let run = p.start("signup", input("acme")).await.unwrap();
    let worker = p.spawn_worker();
    dns.hanging().await;
    worker.abort();
    let _ = worker.await;
    crashed_pool.close().await;
    dns.set_hang(false);

    let restarted = provisioner(
        &f,
        &clock,
        signup(&f, &clock, &seed, &dns, OnFailure::Compensate),
    );
    assert_eq!(restarted.drain().await.unwrap(), 0, "the lease still holds");
    clock.advance(Duration::seconds(31));
    assert_eq!(restarted.drain().await.unwrap(), 1);
    let done = restarted.status(run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(done.step("dns").unwrap().attempts, 2);
    assert_eq!(dns.creations(), 1);
    let tenants = f
        .backend
        .admin_list_tenants(&PageRequest::default())
        .await
        .unwrap();
    assert_eq!(tenants.items.len(), 1);
}
