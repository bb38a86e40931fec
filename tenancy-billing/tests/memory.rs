//! The conformance suites against the in-memory store.

tenancy_billing::conformance_tests!(tenancy_billing::testkit::memory());
