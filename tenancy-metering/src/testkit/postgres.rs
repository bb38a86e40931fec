//! A Postgres [`Fixture`] on a fresh, migrated schema per test (see
//! [`tenancy_core::testkit::postgres::TestSchema`]): skipped without
//! `DATABASE_URL` unless `CI=true`.

use std::sync::Arc;

use tenancy_core::postgres::PgBackend;
use tenancy_core::testkit::postgres::TestSchema;

use super::Fixture;
use crate::store::postgres::PgMeteringStore;

/// A migrated schema (tenancy-core's migrations, then tenancy-metering's)
/// with its store, or `None` when Postgres tests are skipped.
pub async fn fixture_with_schema() -> Option<(TestSchema, Fixture)> {
    let schema = TestSchema::create().await?;
    let store = PgMeteringStore::new(schema.pool.clone());
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("migrations failed: {e}"));
    let crashing = store.clone();
    let fixture = Fixture {
        backend: Arc::new(PgBackend::new(schema.pool.clone())),
        store: Arc::new(store),
        crash_after: Arc::new(move |step| Arc::new(crashing.crash_after(step))),
    };
    Some((schema, fixture))
}

/// A migrated Postgres fixture, or `None` when skipped.
pub async fn fixture() -> Option<Fixture> {
    fixture_with_schema().await.map(|(_, fixture)| fixture)
}

/// A migrated Postgres quota fixture (the metering store is the quota
/// store), or `None` when skipped.
pub async fn quota_fixture() -> Option<super::quota::QuotaFixture> {
    let (schema, fixture) = fixture_with_schema().await?;
    Some(super::quota::QuotaFixture {
        backend: fixture.backend,
        store: Arc::new(PgMeteringStore::new(schema.pool.clone())),
    })
}

/// A migrated Postgres outbox fixture (the metering store is the outbox),
/// or `None` when skipped.
pub async fn outbox_fixture() -> Option<super::outbox::OutboxFixture> {
    let (schema, usage) = fixture_with_schema().await?;
    Some(super::outbox::OutboxFixture {
        usage,
        outbox: Arc::new(PgMeteringStore::new(schema.pool.clone())),
    })
}
