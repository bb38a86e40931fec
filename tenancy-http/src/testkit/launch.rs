//! [`TestApp::launch_with`]: a scenario app with extra permissions and a
//! builder step of the caller's (a module), for suites that live beside
//! an optional part of the SDK (metering's).

use std::sync::Arc;

use tenancy_authz::Catalog;
use tenancy_core::ManualClock;

use super::{Projects, Start, Stores, TestApp, projects, scenario_config, scenarios};
use crate::TenancyBuilder;
use crate::tenancy::Tenancy;

/// What a [`TestApp::launch_with`] builder step may use.
#[derive(Clone)]
#[non_exhaustive]
pub struct Setup {
    /// The app's clock (already given to the builder).
    pub clock: Arc<ManualClock>,
    /// The in-memory backend the app's stores share, on memory (a module
    /// with in-memory stores of its own builds them over it).
    pub backend: Option<Arc<dyn tenancy_core::Backend>>,
    /// The fresh, migrated-on-build schema's pool, on Postgres.
    #[cfg(feature = "postgres")]
    pub pool: Option<tenancy_core::postgres::sqlx::PgPool>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("memory", &self.backend.is_some())
            .finish_non_exhaustive()
    }
}

impl TestApp {
    /// As [`TestApp::launch`], with `permissions` added to the catalog and
    /// `configure` applied to the builder before it builds (add a module
    /// there). `None` when Postgres is asked for and no database is
    /// configured (outside CI).
    pub async fn launch_with(
        stores: Stores,
        start: Start,
        permissions: &[&str],
        configure: impl FnOnce(TenancyBuilder, &Setup) -> TenancyBuilder,
    ) -> Option<Self> {
        let (_, auth_config, http) = scenario_config();
        let catalog = Catalog::new(projects::PERMISSIONS.iter().chain(permissions)).unwrap();
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let builder = Tenancy::builder(catalog, auth_config)
            .http(http)
            .clock(clock.clone());
        #[cfg(feature = "postgres")]
        let (builder, setup) = match stores {
            Stores::Memory => {
                let stores = crate::Stores::memory();
                let backend = Some(stores.backend.clone());
                (
                    builder.stores(stores),
                    Setup {
                        clock: clock.clone(),
                        backend,
                        pool: None,
                    },
                )
            }
            Stores::Postgres => {
                let schema = tenancy_core::testkit::postgres::TestSchema::create().await?;
                let pool = schema.pool.clone();
                (
                    builder.postgres(pool.clone()),
                    Setup {
                        clock: clock.clone(),
                        backend: None,
                        pool: Some(pool),
                    },
                )
            }
        };
        #[cfg(not(feature = "postgres"))]
        let (builder, setup) = match stores {
            Stores::Memory => {
                let stores = crate::Stores::memory();
                let backend = Some(stores.backend.clone());
                (
                    builder.stores(stores),
                    Setup {
                        clock: clock.clone(),
                        backend,
                    },
                )
            }
            Stores::Postgres => (
                super::on_postgres(builder).await?,
                Setup {
                    clock: clock.clone(),
                    backend: None,
                },
            ),
        };
        let tenancy = configure(builder, &setup).build().await.unwrap();
        let address = start(tenancy.clone(), Arc::new(Projects::new())).await;
        Some(Self {
            base: format!("http://{address}"),
            clock,
            tenancy,
            client: reqwest::Client::new(),
            secrets: std::sync::Mutex::new(vec![scenarios::PASSWORD.to_owned()]),
        })
    }
}
