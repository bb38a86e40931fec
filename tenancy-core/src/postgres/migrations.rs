//! Tenancy's migrations: kept in a bookkeeping table of their own, so a host
//! running its own `sqlx::migrate!()` on the same database never meets
//! versions it does not know.

use std::collections::BTreeMap;

use sqlx::migrate::{MigrateError, Migration, Migrator};
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Connection};

/// The table that records which tenancy migrations ran. sqlx's default,
/// `_sqlx_migrations`, stays the host's own.
pub const MIGRATIONS_TABLE: &str = "_tenancy_migrations";

/// Makes `migrator` one of tenancy's: bookkeeping in [`MIGRATIONS_TABLE`],
/// and the versions of the other tenancy crates (each numbered in its own
/// thousand) ignored rather than reported missing. Every tenancy crate's
/// `migrator()` goes through this.
pub fn tenancy_migrator(mut migrator: Migrator) -> Migrator {
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator.set_ignore_missing(true);
    migrator
}

/// Applies the migrations of several tenancy crates as one ordered run,
/// under one lock: pass the `migrator()` of each crate you use, in any
/// order. Already applied versions are skipped, so calling it at every
/// start is cheap.
///
/// A database migrated before tenancy kept its own table has tenancy's
/// versions in `_sqlx_migrations`; they are moved to [`MIGRATIONS_TABLE`]
/// first (in one transaction), so nothing runs twice and the host's own
/// migrator stops seeing them.
///
/// Run it as the role that should own the tables, and serve requests as
/// another (see the crate docs on row-level security).
///
/// Errors: two crates claim one version with different SQL
/// ([`MigrateError::VersionMismatch`]), or a migration or the database failed.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
/// use tenancy_core::postgres::{migrate_all, migrator};
/// migrate_all(&pool, [migrator()]).await?;
/// # Ok(()) }
/// ```
pub async fn migrate_all<I>(pool: &PgPool, migrators: I) -> Result<(), MigrateError>
where
    I: IntoIterator<Item = Migrator>,
{
    let migrator = combined(migrators)?;
    adopt_legacy_rows(pool, &migrator).await?;
    let mut conn = pool.acquire().await?;
    match migrator.run(&mut *conn).await {
        Ok(()) => Ok(()),
        Err(error) => {
            // sqlx leaves its session-level migration lock held when a run
            // fails midway; closing the connection releases it, so other
            // replicas are not blocked forever.
            let _ = conn.detach().close().await;
            Err(error)
        }
    }
}

/// One migrator holding every version of `migrators`.
fn combined<I>(migrators: I) -> Result<Migrator, MigrateError>
where
    I: IntoIterator<Item = Migrator>,
{
    let mut by_version: BTreeMap<(i64, bool), Migration> = BTreeMap::new();
    for migrator in migrators {
        for migration in migrator.iter() {
            let key = (
                migration.version,
                migration.migration_type.is_down_migration(),
            );
            match by_version.get(&key) {
                Some(held) if held.checksum != migration.checksum => {
                    return Err(MigrateError::VersionMismatch(migration.version));
                }
                Some(_) => {}
                None => {
                    by_version.insert(key, migration.clone());
                }
            }
        }
    }
    Ok(tenancy_migrator(Migrator::with_migrations(
        by_version.into_values().collect(),
    )))
}

/// Moves the rows of `migrator`'s versions from `_sqlx_migrations` to
/// [`MIGRATIONS_TABLE`], once, for databases migrated before tenancy kept
/// its own table.
async fn adopt_legacy_rows(pool: &PgPool, migrator: &Migrator) -> Result<(), MigrateError> {
    let versions: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    // Replicas starting together adopt one after the other.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(MIGRATIONS_TABLE)
        .execute(&mut *tx)
        .await?;
    let tables: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT to_regclass('_sqlx_migrations')::text, to_regclass($1)::text")
            .bind(MIGRATIONS_TABLE)
            .fetch_one(&mut *tx)
            .await?;
    let (Some(legacy), None) = tables else {
        return Ok(());
    };
    let ours: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {legacy} WHERE version = ANY($1)"
    )))
    .bind(&versions)
    .fetch_one(&mut *tx)
    .await?;
    if ours == 0 {
        return Ok(());
    }
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {MIGRATIONS_TABLE} (LIKE {legacy} INCLUDING ALL)"
    )))
    .execute(&mut *tx)
    .await?;
    for statement in [
        format!("INSERT INTO {MIGRATIONS_TABLE} SELECT * FROM {legacy} WHERE version = ANY($1)"),
        format!("DELETE FROM {legacy} WHERE version = ANY($1)"),
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .bind(&versions)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    tracing::info!(
        moved = ours,
        "tenancy migrations moved from _sqlx_migrations to {MIGRATIONS_TABLE}"
    );
    Ok(())
}
