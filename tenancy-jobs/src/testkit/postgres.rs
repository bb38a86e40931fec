//! A Postgres [`Fixture`] on a fresh, migrated schema per test (see
//! [`tenancy_core::testkit::postgres::TestSchema`]): skipped without
//! `DATABASE_URL` unless `CI=true`.

use std::sync::Arc;

use tenancy_core::ManualClock;
use tenancy_core::testkit::postgres::TestSchema;

use super::{Fixture, NOW};
use crate::JobStore;
use crate::postgres::PgJobStore;

/// A migrated schema with a fixture whose handles each have their own
/// pool, or `None` when Postgres tests are skipped.
pub async fn fixture_with_schema() -> Option<(TestSchema, Fixture)> {
    let schema = TestSchema::create().await?;
    let clock = Arc::new(ManualClock::new(NOW));
    let store = PgJobStore::with_clock(schema.pool.clone(), clock.clone());
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("migrations failed: {e}"));
    let mut others: Vec<Arc<dyn JobStore>> = Vec::new();
    for _ in 0..4 {
        let pool = schema.pool_as(&schema.url, 4).await;
        others.push(Arc::new(PgJobStore::with_clock(pool, clock.clone())));
    }
    Some((
        schema,
        Fixture {
            store: Arc::new(store),
            others,
            clock,
        },
    ))
}

/// A migrated Postgres fixture, or `None` when skipped.
pub async fn fixture() -> Option<Fixture> {
    fixture_with_schema().await.map(|(_, fixture)| fixture)
}
