//! The auth conformance suites against the in-memory stores.

use std::sync::Arc;

use tenancy_auth::MemoryAuthStore;
use tenancy_auth::testkit::Fixture;
use tenancy_core::MemoryBackend;

async fn memory() -> Option<Fixture> {
    Some(Fixture {
        backend: Arc::new(MemoryBackend::new()),
        store: Arc::new(MemoryAuthStore::new()),
    })
}

tenancy_auth::auth_conformance_tests!(memory());
