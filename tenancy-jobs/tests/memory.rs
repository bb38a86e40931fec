//! The conformance suites against the in-memory store.

tenancy_jobs::conformance_tests!(tenancy_jobs::testkit::memory());
