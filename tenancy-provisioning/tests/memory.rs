//! The store suite and runner scenarios on the in-memory store.

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
