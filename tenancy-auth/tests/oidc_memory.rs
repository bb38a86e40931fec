//! The OAuth store conformance suite against the in-memory store.

use std::sync::Arc;

use tenancy_auth::oidc::{MemoryOAuthStore, OAuthStore};

async fn memory() -> Option<Arc<dyn OAuthStore>> {
    Some(Arc::new(MemoryOAuthStore::new()))
}

tenancy_auth::oauth_store_conformance_tests!(memory());
