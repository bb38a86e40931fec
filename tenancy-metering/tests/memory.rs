//! The conformance suites against the in-memory store.

tenancy_metering::conformance_tests!(tenancy_metering::testkit::memory());

tenancy_metering::quota_conformance_tests!(tenancy_metering::testkit::quota::memory());

mod outbox {
    tenancy_metering::outbox_conformance_tests!(tenancy_metering::testkit::outbox::memory());
}

mod rate_limits {
    tenancy_metering::rate_limit_conformance_tests!(tenancy_metering::testkit::ratelimit::memory());
}
