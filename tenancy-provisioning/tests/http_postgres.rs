//! The module on Postgres: its migrations run with the app's, and a run
//! started through the routes creates the tenant and its API key in the
//! app's Postgres directory.
//!
//! Needs `DATABASE_URL`; skipped without it unless `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use tenancy_core::testkit::postgres::TestSchema;
use tenancy_core::{Slug, TenantId, TenantStore};
use tenancy_http::Tenancy;
use tenancy_http::auth::{ApiKeySecret, AuthConfig, KeyEncryption, KeyEncryptionKey};
use tenancy_http::authz::Catalog;
use tenancy_provisioning::http::{PROVISIONING_MANAGE, ProvisioningModule};
use tenancy_provisioning::postgres::PgProvisioningStore;
use tenancy_provisioning::steps::{CreateApiKey, CreateTenant, KeyDelivery};
use tenancy_provisioning::testkit::{eventually, input, test_policy};
use tenancy_provisioning::{Pipeline, Provisioner, RunStatus, StepError, WorkerConfig};

struct Discard;

#[tenancy_http::async_trait]
impl KeyDelivery for Discard {
    async fn deliver(
        &self,
        _: tenancy_core::TenantId,
        _: tenancy_core::ApiKeyId,
        _: &ApiKeySecret,
    ) -> Result<(), StepError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_provisions_into_the_apps_postgres() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let pool = schema.pool.clone();
    let module = ProvisioningModule::new(TenantId::new(), move |t: &Tenancy| {
        let mut config = WorkerConfig::default();
        config.heartbeat = std::time::Duration::from_millis(10);
        config.idle_poll = std::time::Duration::from_millis(10);
        Provisioner::new(Arc::new(PgProvisioningStore::new(pool.clone())))
            .with_config(config)
            .with_pipeline(
                Pipeline::new("signup")
                    .with_policy(test_policy())
                    .step(CreateTenant::new(t.directory().clone()))
                    .step(CreateApiKey::new(
                        t.auth().clone(),
                        t.directory().clone(),
                        Vec::new(),
                        Arc::new(Discard),
                    )),
            )
    });
    let t = Tenancy::builder(
        Catalog::new([PROVISIONING_MANAGE]).unwrap(),
        AuthConfig::new("https://app.example", "app").with_key_encryption(KeyEncryption::key(
            KeyEncryptionKey::generate("test-1").unwrap(),
        )),
    )
    .postgres(schema.pool.clone())
    .module(module)
    .build()
    .await
    .unwrap();
    // The module's tables exist: its migrations ran with the app's.
    let p = t
        .module::<ProvisioningModule>()
        .unwrap()
        .provisioner()
        .unwrap();
    let run = p.start("signup", input("acme")).await.unwrap();
    eventually("the run succeeded", || async {
        p.status(run.id).await.unwrap().status == RunStatus::Succeeded
    })
    .await;
    let run = p.status(run.id).await.unwrap();
    let tenant = t
        .directory()
        .backend()
        .find_tenant_by_slug(&Slug::new("acme").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.state["tenant_id"], tenant.id.to_string());
    let scope = t.directory().scope(tenant.id).await.unwrap();
    let keys = t
        .auth()
        .list_api_keys(&scope, &Default::default())
        .await
        .unwrap();
    assert_eq!(keys.items.len(), 1);
    assert_eq!(run.state["api_key_id"], keys.items[0].id.to_string());
}
