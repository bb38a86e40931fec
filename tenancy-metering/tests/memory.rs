//! The conformance suites against the in-memory store.

tenancy_metering::conformance_tests!(tenancy_metering::testkit::memory());
