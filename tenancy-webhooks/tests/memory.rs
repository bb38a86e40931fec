//! The conformance suite on the in-memory store.

tenancy_webhooks::conformance_tests!(tenancy_webhooks::testkit::memory_fixture());
