//! A Postgres [`Fixture`] on a fresh, migrated schema per test (see
//! [`tenancy_core::testkit::postgres::TestSchema`]): skipped without
//! `DATABASE_URL` unless `CI=true`.

use std::sync::Arc;

use tenancy_core::postgres::{PgBackend, migrate_all};
use tenancy_core::testkit::postgres::TestSchema;

use super::Fixture;
use crate::postgres::{PgProvisioningStore, migrator};

/// A schema migrated with tenancy-core's and this crate's migrations, and
/// a fixture on it, or `None` when Postgres tests are skipped.
pub async fn fixture_with_schema() -> Option<(TestSchema, Fixture)> {
    let schema = TestSchema::create().await?;
    migrate_all(
        &schema.pool,
        [tenancy_core::postgres::migrator(), migrator()],
    )
    .await
    .unwrap_or_else(|e| panic!("migrations failed: {e}"));
    let fixture = Fixture {
        store: Arc::new(PgProvisioningStore::new(schema.pool.clone())),
        backend: Arc::new(PgBackend::new(schema.pool.clone())),
    };
    Some((schema, fixture))
}

/// A migrated Postgres fixture, or `None` when skipped.
pub async fn fixture() -> Option<Fixture> {
    fixture_with_schema().await.map(|(_, fixture)| fixture)
}
