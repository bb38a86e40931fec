//! The OAuth store conformance suite against the in-memory store.

use std::sync::Arc;

use tenancy_auth::oidc::MemoryOAuthStore;
use tenancy_auth::testkit::oidc::OAuthFixture;
use tenancy_core::MemoryBackend;

async fn memory() -> Option<OAuthFixture> {
    Some(OAuthFixture {
        backend: Arc::new(MemoryBackend::new()),
        store: Arc::new(MemoryOAuthStore::new()),
    })
}

tenancy_auth::oauth_store_conformance_tests!(memory());
