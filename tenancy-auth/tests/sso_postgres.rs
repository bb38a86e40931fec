//! The SSO conformance suites against Postgres (each test on a fresh
//! schema, through a role under row-level security).
//!
//! Needs `DATABASE_URL` (see the README); skipped without it unless `CI=true`.

#![allow(clippy::unwrap_used)] // test setup reports failure by panicking

use std::sync::Arc;

use tenancy_auth::postgres::PgAuthStore;
use tenancy_auth::sso::postgres::{PgSsoStore, migrator};
use tenancy_auth::testkit::Fixture;
use tenancy_auth::testkit::sso::SsoFixture;
use tenancy_core::postgres::PgBackend;
use tenancy_core::testkit::postgres::TestSchema;

async fn postgres() -> Option<SsoFixture> {
    let schema = TestSchema::create().await?;
    let store = PgAuthStore::new(schema.pool.clone());
    store.migrate().await.unwrap();
    migrator().run(&schema.pool).await.unwrap();
    Some(SsoFixture {
        auth: Fixture {
            backend: Arc::new(PgBackend::new(schema.pool.clone())),
            store: Arc::new(store),
        },
        sso: Arc::new(PgSsoStore::new(schema.pool)),
    })
}

tenancy_auth::sso_conformance_tests!(postgres());

// The flows against the simulated identity provider (feature `testkit-idp`).
#[cfg(feature = "testkit-idp")]
tenancy_auth::sso_flow_tests!(postgres());
