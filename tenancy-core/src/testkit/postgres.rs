//! A fresh, migrated Postgres schema per test, so Postgres tests run in
//! parallel without seeing each other's rows.
//!
//! The database comes from `DATABASE_URL`. When it is unset the tests are
//! skipped with a notice, except under `CI=true`, where that is a failure.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use crate::postgres::PgBackend;
use crate::store::Backend;

/// Schemas older than this are dropped by later test runs.
const STALE_AFTER_SECS: u64 = 3600;
const PREFIX: &str = "tenancy_test_";

/// The database URL, or `None` (with a notice) when tests should be skipped.
///
/// # Panics
/// When `CI=true` and `DATABASE_URL` is unset: CI must never skip silently.
pub fn database_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("DATABASE_URL must be set when CI=true: Postgres tests may not be skipped")
        }
        _ => {
            eprintln!("DATABASE_URL is not set: skipping Postgres test");
            None
        }
    }
}

/// A schema created for one test, with its own pool.
#[derive(Debug, Clone)]
pub struct TestSchema {
    /// The schema name.
    pub name: String,
    /// A pool whose connections use the schema as `search_path`.
    pub pool: PgPool,
    /// The URL the pool connects to.
    pub url: String,
}

impl TestSchema {
    /// Creates an empty schema (and drops schemas stale test runs left).
    /// `None` when tests are skipped; see [`database_url`].
    pub async fn create() -> Option<Self> {
        let url = database_url()?;
        let mut admin = PgConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to DATABASE_URL: {e}"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        drop_stale_schemas(&mut admin, now).await;
        let name = format!("{PREFIX}{now}_{}", uuid::Uuid::now_v7().simple());
        admin
            .execute(AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .await
            .unwrap_or_else(|e| panic!("cannot create test schema: {e}"));
        let pool = pool_for(&url, &name, 8).await;
        Some(Self { name, pool, url })
    }

    /// Another pool on this schema, for example under another role.
    pub async fn pool_as(&self, url: &str, max_connections: u32) -> PgPool {
        pool_for(url, &self.name, max_connections).await
    }
}

async fn pool_for(url: &str, schema: &str, max_connections: u32) -> PgPool {
    let options = PgConnectOptions::from_str(url)
        .unwrap_or_else(|e| panic!("invalid DATABASE_URL: {e}"))
        .options([("search_path", schema)]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to DATABASE_URL: {e}"))
}

async fn drop_stale_schemas(admin: &mut PgConnection, now: u64) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(PREFIX)
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names {
        // Only names this module made: prefix, seconds, '_', 32 hex digits.
        let Some((secs, suffix)) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
        else {
            continue;
        };
        let ours = suffix.len() == 32
            && suffix
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        let created = secs.parse::<u64>().ok().filter(|_| ours);
        if created.is_some_and(|secs| secs.saturating_add(STALE_AFTER_SECS) < now) {
            // Another test may be dropping it too; either way it goes.
            let _ = admin
                .execute(AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {name} CASCADE"
                )))
                .await;
        }
    }
}

/// A migrated [`PgBackend`] on a fresh schema, or `None` when skipped.
pub async fn backend() -> Option<Arc<dyn Backend>> {
    let schema = TestSchema::create().await?;
    let backend = PgBackend::new(schema.pool);
    backend
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("migrations failed: {e}"));
    Some(Arc::new(backend))
}
