//! The SSO conformance suites against the in-memory stores.

use std::sync::Arc;

use tenancy_auth::MemoryAuthStore;
use tenancy_auth::sso::MemorySsoStore;
use tenancy_auth::testkit::Fixture;
use tenancy_auth::testkit::sso::SsoFixture;
use tenancy_core::MemoryBackend;

async fn memory() -> Option<SsoFixture> {
    Some(SsoFixture {
        auth: Fixture {
            backend: Arc::new(MemoryBackend::new()),
            store: Arc::new(MemoryAuthStore::new()),
        },
        sso: Arc::new(MemorySsoStore::new()),
    })
}

tenancy_auth::sso_conformance_tests!(memory());

// The flows against the simulated identity provider (feature `testkit-idp`).
#[cfg(feature = "testkit-idp")]
tenancy_auth::sso_flow_tests!(memory());
