//! The store suite and runner scenarios on Postgres, each on a fresh
//! migrated schema, plus the schema-per-tenant step.
//!
//! Needs `DATABASE_URL`; skipped without it unless `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

tenancy_provisioning::conformance_tests!(tenancy_provisioning::testkit::postgres::fixture());
