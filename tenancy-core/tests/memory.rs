//! The conformance suites against the in-memory backend.

use std::sync::Arc;

use tenancy_core::{Backend, MemoryBackend};

async fn memory() -> Option<Arc<dyn Backend>> {
    Some(Arc::new(MemoryBackend::new()))
}

tenancy_core::conformance_tests!(memory());
