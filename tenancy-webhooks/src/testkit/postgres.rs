//! A Postgres [`Fixture`] on a fresh, migrated schema per test (see
//! [`tenancy_core::testkit::postgres::TestSchema`]): skipped without
//! `DATABASE_URL` unless `CI=true`.

use std::sync::Arc;

use tenancy_core::postgres::PgBackend;
use tenancy_core::testkit::postgres::TestSchema;

use super::Fixture;
use crate::postgres::PgWebhookStore;

/// A migrated schema (tenancy-core's migrations, then tenancy-webhooks')
/// with its store, or `None` when Postgres tests are skipped.
pub async fn fixture_with_schema() -> Option<(TestSchema, Fixture)> {
    let schema = TestSchema::create().await?;
    let store = PgWebhookStore::new(schema.pool.clone());
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("migrations failed: {e}"));
    let fixture = Fixture {
        backend: Arc::new(PgBackend::new(schema.pool.clone())),
        store: Arc::new(store),
    };
    Some((schema, fixture))
}

/// A migrated Postgres fixture, or `None` when skipped.
pub async fn fixture() -> Option<Fixture> {
    fixture_with_schema().await.map(|(_, fixture)| fixture)
}
