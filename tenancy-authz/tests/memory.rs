//! The conformance suites against the in-memory stores.

tenancy_authz::conformance_tests!(tenancy_authz::testkit::memory());
