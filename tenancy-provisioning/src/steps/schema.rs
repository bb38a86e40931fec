//! Schema per tenant on Postgres (feature `postgres`).

use async_trait::async_trait;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Connection};
use tenancy_core::TenantId;

use super::tenant_id;
use crate::step::{Compensation, Step, StepContext, StepError, StepOutput};

/// The schema name of `tenant`: `tenant_` and the id's 32 hex digits, a
/// valid identifier that needs no quoting.
pub fn schema_name(tenant: TenantId) -> String {
    format!("tenant_{}", tenant.as_uuid().simple())
}

fn unavailable(error: sqlx::Error) -> StepError {
    StepError::transient("postgres is unavailable").with_source(error)
}

/// Creates the tenant's own schema ([`schema_name`]) and runs the host's
/// migrations in it, with `search_path` set to it.
///
/// Compensation depends on its cause, as [`CreateTenant`](super::CreateTenant)'s
/// does: when the run is cancelled ([`Compensation::Cancelled`]) the schema
/// is dropped with everything in it; after a later step failed
/// ([`Compensation::StepFailed`]) it is kept, with any data written to it
/// meanwhile, so a retry of the run finds it and only applies the
/// migrations it lacks.
///
/// The schema, a bookkeeping table `_tenant_migrations` in it and every
/// migration not yet recorded run in one transaction (Postgres DDL is
/// transactional), so a crash leaves either no schema or a migrated one, and
/// a re-run applies only what is missing. Migrations are numbered by their
/// position: append new ones, never reorder. The connecting role needs the
/// `CREATE` privilege on the database.
///
/// Output: `schema` (the name).
#[derive(Debug, Clone)]
pub struct TenantSchema {
    pool: PgPool,
    migrations: Vec<String>,
}

impl TenantSchema {
    /// The step's name.
    pub const NAME: &'static str = "tenant_schema";

    /// The step creating schemas through `pool` and running `migrations`
    /// (SQL scripts, several statements each allowed, written without a
    /// schema prefix) in order.
    pub fn new(pool: PgPool, migrations: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            pool,
            migrations: migrations.into_iter().map(Into::into).collect(),
        }
    }
}

#[async_trait]
impl Step for TenantSchema {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let schema = schema_name(tenant_id(ctx)?);
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        // Two workers racing on one run serialise here.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(&schema)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             SET LOCAL search_path TO {schema};
             CREATE TABLE IF NOT EXISTS _tenant_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        )))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let done: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM _tenant_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        for (i, sql) in self.migrations.iter().enumerate() {
            let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
            if done.is_some_and(|d| version <= d) {
                continue;
            }
            sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    StepError::permanent(format!("tenant migration {version} failed"))
                        .with_source(e)
                })?;
            sqlx::query("INSERT INTO _tenant_migrations (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(StepOutput::empty().with("schema", schema))
    }

    async fn compensate(&self, ctx: &StepContext) -> Result<(), StepError> {
        let Ok(tenant) = tenant_id(ctx) else {
            return Ok(());
        };
        if ctx.compensation == Some(Compensation::StepFailed) {
            // The run may be retried: keep the schema and its data.
            return Ok(());
        }
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            schema_name(tenant)
        )))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}
