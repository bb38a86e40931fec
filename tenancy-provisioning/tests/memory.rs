//! The store suite and runner scenarios on the in-memory store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use tenancy_core::MemoryBackend;
use tenancy_provisioning::MemoryProvisioningStore;
use tenancy_provisioning::testkit::Fixture;

async fn fixture() -> Option<Fixture> {
    Some(Fixture {
        store: Arc::new(MemoryProvisioningStore::new()),
        backend: Arc::new(MemoryBackend::new()),
    })
}

tenancy_provisioning::conformance_tests!(fixture());

mod billing {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use tenancy_core::{Directory, MemoryBackend, TenantId};
    use tenancy_provisioning::steps::{BillingCustomers, CreateBillingCustomer, CreateTenant};
    use tenancy_provisioning::testkit::{SimulatedDns, clock, input, settle, test_policy};
    use tenancy_provisioning::{
        MemoryProvisioningStore, Pipeline, Provisioner, RunStatus, StepError, StepStatus,
    };

    /// A billing provider that fails its first call, keyed like a real
    /// one by the idempotency key.
    #[derive(Default)]
    struct Provider {
        by_key: Mutex<HashMap<String, (TenantId, String)>>,
        calls: Mutex<u32>,
        removed: Mutex<Vec<TenantId>>,
    }

    #[async_trait]
    impl BillingCustomers for Provider {
        async fn ensure_customer(
            &self,
            tenant_id: TenantId,
            email: &str,
            idempotency_key: &str,
        ) -> Result<String, StepError> {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            let mut by_key = self.by_key.lock().unwrap();
            let id = by_key
                .entry(idempotency_key.to_owned())
                .or_insert_with(|| (tenant_id, format!("cus_{email}")))
                .1
                .clone();
            if *calls == 1 {
                // Made, but the answer was lost on the way back.
                return Err(StepError::transient("provider timed out"));
            }
            Ok(id)
        }

        async fn remove_customer(&self, tenant_id: TenantId) -> Result<(), StepError> {
            self.removed.lock().unwrap().push(tenant_id);
            Ok(())
        }
    }

    /// The billing customer is made once across attempts (the idempotency
    /// key is the run's), and removed when a later step fails.
    #[tokio::test]
    async fn billing_customer_is_made_once_and_removed_on_failure() {
        let clock = clock();
        let provider = Arc::new(Provider::default());
        let dns = SimulatedDns::new();
        dns.set_broken(true);
        let directory = Directory::new(Arc::new(MemoryBackend::new())).with_clock(clock.clone());
        let p = Provisioner::new(Arc::new(MemoryProvisioningStore::new()))
            .with_clock(clock.clone())
            .with_pipeline(
                Pipeline::new("paid")
                    .with_policy(test_policy())
                    .step(CreateTenant::new(directory))
                    .step(CreateBillingCustomer::new(provider.clone()))
                    .step(dns.clone()),
            )
            .unwrap();
        let run = p.start("paid", input("acme")).await.unwrap();
        settle(&p, &clock, run.id).await;
        let run = p.status(run.id).await.unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        let billing = run.step("create_billing_customer").unwrap();
        assert_eq!(billing.attempts, 2);
        assert_eq!(billing.status, StepStatus::Cancelled);
        assert_eq!(run.state["billing_customer_id"], "cus_owner@acme.test");
        assert_eq!(provider.by_key.lock().unwrap().len(), 1);
        let tenant: TenantId = run.state["tenant_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(*provider.removed.lock().unwrap(), [tenant]);
    }
}
