//! The quota (and rate-limit) conformance suites against Redis.
//!
//! Needs Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`); skipped
//! when unreachable unless `CI=true`.

tenancy_metering::quota_conformance_tests!(tenancy_metering::testkit::redis::quota_fixture());
