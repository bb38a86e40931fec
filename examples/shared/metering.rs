//! Usage metering for the example apps: `api_calls` counted per request
//! to `/projects` (by route), readable at `GET /usage` by owners,
//! admins and the billing role (`usage:read`).

use std::sync::Arc;

use tenancy::http::TenancyBuilder;
use tenancy_metering::http::{MeteringGuard, MeteringModule};
use tenancy_metering::{
    Aggregation, DimensionName, Meter, MeterName, Metering, MeteringStore, Meters,
};

/// `builder` with the metering module added: usage in Postgres when the
/// app runs on `DATABASE_URL` (as `APP_DATABASE_URL`'s role when set; the
/// builder migrates the tables), in memory otherwise (the builder then
/// gets in-memory stores sharing their tenants with the usage store).
pub(crate) fn with_metering(
    builder: TenancyBuilder,
    database_url: Option<&str>,
) -> Result<(TenancyBuilder, MeteringModule), Box<dyn std::error::Error>> {
    let (builder, store): (_, Arc<dyn MeteringStore>) = match database_url {
        #[cfg(feature = "postgres")]
        Some(url) => {
            let app_url = std::env::var("APP_DATABASE_URL").unwrap_or_else(|_| url.to_owned());
            // Lazy: the builder has migrated by the first write.
            let pool = tenancy::postgres::sqlx::PgPool::connect_lazy(&app_url)?;
            let store = tenancy_metering::store::postgres::PgMeteringStore::new(pool);
            (builder, Arc::new(store))
        }
        _ => {
            let backend: Arc<dyn tenancy::Backend> = Arc::new(tenancy::MemoryBackend::new());
            let authz = Arc::new(tenancy::http::authz::MemoryAuthzStore::new(backend.clone()));
            let builder = builder.stores(tenancy::http::Stores::new(
                backend.clone(),
                Arc::new(tenancy::http::auth::MemoryAuthStore::new()),
                authz.clone(),
                authz,
            ));
            let store = tenancy_metering::MemoryMeteringStore::new(backend);
            (builder, Arc::new(store))
        }
    };
    let meters =
        Meters::new([
            Meter::new(MeterName::new("api_calls")?, Aggregation::Count, "calls")?
                .keep([DimensionName::new("route")?])?,
        ])?;
    let module = MeteringModule::builder(Metering::new(meters, store)).build();
    Ok((builder.module(module.clone()), module))
}

/// The guard of the `/projects` routes: one `api_calls` per request.
pub(crate) fn count_calls(
    module: &MeteringModule,
) -> Result<MeteringGuard, Box<dyn std::error::Error>> {
    Ok(module.guard("/projects").record("api_calls", 1)?)
}
