//! The conformance suites against the in-memory store.

tenancy_metering::conformance_tests!(tenancy_metering::testkit::memory());

tenancy_metering::quota_conformance_tests!(tenancy_metering::testkit::quota::memory());
