//! The Postgres usage store (feature `postgres`).
//!
//! - [`PgMeteringStore`] implements [`MeteringStore`] over three
//!   tenant-owned tables under row-level security
//!   (`tenancy_metering_events`, `tenancy_metering_rollups`,
//!   `tenancy_metering_uniques`); every statement runs in a transaction
//!   scoped to the tenant.
//! - A durable write inserts the event row (whose primary key is the
//!   tenant and idempotency key) and adds it to the rollups in one
//!   transaction: a crash before the commit leaves neither, so the retry
//!   counts once; a concurrent duplicate waits on the key and then sees it.
//! - A batch of rollups is one `INSERT … SELECT FROM UNNEST(…) ON CONFLICT
//!   DO UPDATE` per table, whatever its size.
//! - It is also a [`QuotaStore`]: counters per tenant, meter and period in
//!   `tenancy_metering_quotas`, moved by one conditional upsert.
//! - Migrations are embedded ([`migrator`]), numbered 5000–5999, recorded
//!   with the other tenancy crates' (see
//!   [`tenancy_core::postgres::migrate_all`]).

mod outbox;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgPool};
use tenancy_core::postgres::set_transaction_tenant;
use tenancy_core::{StoreError, TenantId};
use time::OffsetDateTime;

use super::{IngestStep, MeteringStore, MeteringStoreError, Recorded};
use crate::event::{Dimensions, Event};
use crate::meter::{Aggregation, DimensionName};
use crate::quota::{Consumption, MAX_COUNTER, QuotaKey, QuotaStore, QuotaStoreError, check_range};
use crate::rollup::{Rollup, RollupBatch};
use crate::usage::{UsagePoint, UsageQuery, sort_points};

/// The embedded tenancy-metering migrations (versions 5000–5999). Run
/// [`tenancy_core::postgres::migrator`] first, or both through
/// [`tenancy_core::postgres::migrate_all`].
pub fn migrator() -> Migrator {
    tenancy_core::postgres::tenancy_migrator(sqlx::migrate!("./migrations"))
}

/// Usage in Postgres. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgMeteringStore {
    pool: PgPool,
    crash_after: Option<IngestStep>,
}

impl std::fmt::Debug for PgMeteringStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMeteringStore").finish_non_exhaustive()
    }
}

fn unavailable(error: sqlx::Error) -> MeteringStoreError {
    if tenancy_core::postgres::is_missing_tenant(&error) {
        return MeteringStoreError::TenantNotFound;
    }
    MeteringStoreError::Store(StoreError::unavailable(error))
}

fn corrupt(error: impl Into<tenancy_core::BoxError>) -> MeteringStoreError {
    MeteringStoreError::Store(StoreError::Corrupt(error.into()))
}

fn dimensions_json(dimensions: &Dimensions) -> serde_json::Value {
    serde_json::Value::Object(
        dimensions
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}

fn dimensions_from_json(value: serde_json::Value) -> Result<Dimensions, MeteringStoreError> {
    let serde_json::Value::Object(map) = value else {
        return Err(corrupt("dimensions are not an object"));
    };
    map.into_iter()
        .map(|(k, v)| {
            let name = DimensionName::new(&k).map_err(corrupt)?;
            match v {
                serde_json::Value::String(s) => Ok((name, s)),
                _ => Err(corrupt("a dimension value is not a string")),
            }
        })
        .collect()
}

impl PgMeteringStore {
    /// A store over `pool`. Connect as an ordinary role: row-level security
    /// does not apply to superusers or `BYPASSRLS` roles.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            crash_after: None,
        }
    }

    /// Applies tenancy-core's migrations, then tenancy-metering's.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        tenancy_core::postgres::migrate_all(
            &self.pool,
            [tenancy_core::postgres::migrator(), migrator()],
        )
        .await
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A handle on the same database whose durable writes stop after
    /// `step` without committing, as if the process died there. For
    /// exactly-once tests.
    #[cfg(feature = "testkit")]
    pub fn crash_after(&self, step: IngestStep) -> Self {
        Self {
            crash_after: Some(step),
            ..self.clone()
        }
    }

    fn crashed(&self, step: IngestStep) -> Result<(), MeteringStoreError> {
        if self.crash_after == Some(step) {
            return Err(StoreError::unavailable(format!("writer stopped after {step:?}")).into());
        }
        Ok(())
    }

    async fn begin(
        &self,
        tenant_id: TenantId,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, MeteringStoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        set_transaction_tenant(&mut tx, tenant_id)
            .await
            .map_err(unavailable)?;
        Ok(tx)
    }
}

/// Adds `rollups` of `tenant_id` in two statements (rollups, then distinct
/// values), in the caller's transaction.
async fn upsert(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    rollups: &[Rollup],
) -> Result<(), MeteringStoreError> {
    // Rows of one statement must have distinct keys for ON CONFLICT.
    let mut merged = RollupBatch::new();
    let mut any_unique = false;
    for r in rollups {
        merged.add_exact(r);
        any_unique |= r.aggregation == Aggregation::UniqueCount;
    }
    let rollups = merged.into_rollups();
    let n = rollups.len();
    let mut meters = Vec::with_capacity(n);
    let mut granularities = Vec::with_capacity(n);
    let mut buckets = Vec::with_capacity(n);
    let mut dimensions = Vec::with_capacity(n);
    let mut totals = Vec::with_capacity(n);
    let mut events = Vec::with_capacity(n);
    let mut maxima: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut latest_at: Vec<Option<OffsetDateTime>> = Vec::with_capacity(n);
    let mut latest_value: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut u_meters = Vec::new();
    let mut u_granularities = Vec::new();
    let mut u_buckets = Vec::new();
    let mut u_dimensions = Vec::new();
    let mut u_members = Vec::new();
    for r in &rollups {
        let dims = dimensions_json(&r.key.dimensions);
        if any_unique {
            for member in &r.aggregate.members {
                u_meters.push(r.key.meter.as_str().to_owned());
                u_granularities.push(r.key.granularity.as_str());
                u_buckets.push(r.key.bucket);
                u_dimensions.push(dims.clone());
                u_members.push(*member);
            }
        }
        meters.push(r.key.meter.as_str().to_owned());
        granularities.push(r.key.granularity.as_str());
        buckets.push(r.key.bucket);
        dimensions.push(dims);
        totals.push(r.aggregate.sum);
        events.push(r.aggregate.count);
        maxima.push(r.aggregate.max);
        latest_at.push(r.aggregate.latest.map(|(at, _)| at));
        latest_value.push(r.aggregate.latest.map(|(_, v)| v));
    }
    sqlx::query(
        "INSERT INTO tenancy_metering_rollups AS r \
           (tenant_id, meter, granularity, bucket, dimensions, total, events, max_value, latest_at, latest_value) \
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::timestamptz[], $5::jsonb[], \
                                  $6::int8[], $7::int8[], $8::int8[], $9::timestamptz[], $10::int8[]) \
         ON CONFLICT (tenant_id, meter, granularity, bucket, dimensions) DO UPDATE SET \
           total = LEAST(GREATEST(r.total::numeric + excluded.total, -9223372036854775808), 9223372036854775807)::bigint, \
           events = LEAST(r.events::numeric + excluded.events, 9223372036854775807)::bigint, \
           max_value = GREATEST(r.max_value, excluded.max_value), \
           latest_at = CASE WHEN r.latest_at IS NULL OR (excluded.latest_at, excluded.latest_value) > (r.latest_at, r.latest_value) \
                            THEN excluded.latest_at ELSE r.latest_at END, \
           latest_value = CASE WHEN r.latest_at IS NULL OR (excluded.latest_at, excluded.latest_value) > (r.latest_at, r.latest_value) \
                               THEN excluded.latest_value ELSE r.latest_value END",
    )
    .bind(tenant_id.as_uuid())
    .bind(&meters)
    .bind(&granularities)
    .bind(&buckets)
    .bind(&dimensions)
    .bind(&totals)
    .bind(&events)
    .bind(&maxima)
    .bind(&latest_at)
    .bind(&latest_value)
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    if !u_members.is_empty() {
        sqlx::query(
            "INSERT INTO tenancy_metering_uniques \
               (tenant_id, meter, granularity, bucket, dimensions, member) \
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::timestamptz[], $5::jsonb[], $6::int8[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant_id.as_uuid())
        .bind(&u_meters)
        .bind(&u_granularities)
        .bind(&u_buckets)
        .bind(&u_dimensions)
        .bind(&u_members)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    }
    Ok(())
}

#[async_trait]
impl MeteringStore for PgMeteringStore {
    async fn record(&self, event: &Event) -> Result<Recorded, MeteringStoreError> {
        let tenant_id = event.tenant_id();
        let dimensions = dimensions_json(event.dimensions());
        let mut tx = self.begin(tenant_id).await?;
        let inserted = sqlx::query(
            "INSERT INTO tenancy_metering_events \
               (tenant_id, idempotency_key, meter, value, occurred_at, dimensions) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
        )
        .bind(tenant_id.as_uuid())
        .bind(event.key().as_str())
        .bind(event.meter().name().as_str())
        .bind(event.value())
        .bind(event.timestamp())
        .bind(&dimensions)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if inserted == 0 {
            let held: (String, i64, OffsetDateTime, serde_json::Value) = sqlx::query_as(
                "SELECT meter, value, occurred_at, dimensions FROM tenancy_metering_events \
                 WHERE tenant_id = $1 AND idempotency_key = $2",
            )
            .bind(tenant_id.as_uuid())
            .bind(event.key().as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
            tx.rollback().await.map_err(unavailable)?;
            let same = held.0 == event.meter().name().as_str()
                && held.1 == event.value()
                && held.2 == event.timestamp()
                && dimensions_from_json(held.3)? == *event.dimensions();
            return if same {
                Ok(Recorded::Duplicate)
            } else {
                Err(MeteringStoreError::KeyReused {
                    key: event.key().clone(),
                })
            };
        }
        self.crashed(IngestStep::EventWritten)?;
        let mut batch = RollupBatch::new();
        batch.add_event(event);
        upsert(&mut tx, tenant_id, &batch.into_rollups()).await?;
        self.crashed(IngestStep::RollupsWritten)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Recorded::Counted)
    }

    async fn apply(
        &self,
        tenant_id: TenantId,
        rollups: &[Rollup],
    ) -> Result<(), MeteringStoreError> {
        if rollups.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin(tenant_id).await?;
        upsert(&mut tx, tenant_id, rollups).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsagePoint>, MeteringStoreError> {
        let aggregation = query.meter().aggregation();
        let (figure, table) = match aggregation {
            Aggregation::Sum => (
                "LEAST(GREATEST(sum(total), -9223372036854775808), 9223372036854775807)::bigint",
                "tenancy_metering_rollups",
            ),
            Aggregation::Count => (
                "LEAST(sum(events), 9223372036854775807)::bigint",
                "tenancy_metering_rollups",
            ),
            Aggregation::Max => ("max(max_value)", "tenancy_metering_rollups"),
            Aggregation::Latest => (
                "(array_agg(latest_value ORDER BY latest_at DESC, latest_value DESC))[1]",
                "tenancy_metering_rollups",
            ),
            Aggregation::UniqueCount => ("count(DISTINCT member)", "tenancy_metering_uniques"),
        };
        let sql = format!(
            "SELECT bucket, \
                    ARRAY(SELECT dimensions ->> d FROM unnest($6::text[]) WITH ORDINALITY AS g(d, i) ORDER BY i) AS grp, \
                    {figure} \
             FROM {table} \
             WHERE tenant_id = $1 AND meter = $2 AND granularity = $3 AND bucket >= $4 AND bucket < $5 \
             GROUP BY bucket, grp"
        );
        let group_by: Vec<&str> = query.group_by().iter().map(DimensionName::as_str).collect();
        let mut tx = self.begin(query.tenant_id()).await?;
        let rows: Vec<(OffsetDateTime, Vec<Option<String>>, Option<i64>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(query.tenant_id().as_uuid())
                .bind(query.meter().name().as_str())
                .bind(query.granularity().as_str())
                .bind(query.from())
                .bind(query.to())
                .bind(&group_by)
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        let mut points = rows
            .into_iter()
            .map(|(bucket, grp, value)| UsagePoint {
                bucket,
                group: query.group_by().iter().cloned().zip(grp).collect(),
                value: value.unwrap_or(0),
            })
            .collect::<Vec<_>>();
        sort_points(&mut points);
        Ok(points)
    }
}

fn quota_error(error: sqlx::Error) -> QuotaStoreError {
    match unavailable(error) {
        MeteringStoreError::TenantNotFound => QuotaStoreError::TenantNotFound,
        MeteringStoreError::Store(e) => QuotaStoreError::Store(e),
        other => QuotaStoreError::Store(StoreError::unavailable(other)),
    }
}

fn used_from_db(used: i64) -> Result<u64, QuotaStoreError> {
    u64::try_from(used).map_err(|e| QuotaStoreError::Store(StoreError::Corrupt(Box::new(e))))
}

impl PgMeteringStore {
    async fn quota_tx(
        &self,
        tenant_id: TenantId,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, QuotaStoreError> {
        let mut tx = self.pool.begin().await.map_err(quota_error)?;
        set_transaction_tenant(&mut tx, tenant_id)
            .await
            .map_err(quota_error)?;
        Ok(tx)
    }
}

/// Quota counters in `tenancy_metering_quotas`: a check-and-consume is one
/// conditional upsert (`INSERT … ON CONFLICT DO UPDATE … WHERE used +
/// amount <= cap`), atomic under the row's lock.
#[async_trait]
impl QuotaStore for PgMeteringStore {
    async fn consume(
        &self,
        key: &QuotaKey,
        amount: u64,
        cap: u64,
    ) -> Result<Consumption, QuotaStoreError> {
        let amount_db = check_range(amount)?;
        let cap_db = check_range(cap.min(MAX_COUNTER))?;
        let mut tx = self.quota_tx(key.tenant_id).await?;
        let after: Option<i64> = sqlx::query_scalar(
            "INSERT INTO tenancy_metering_quotas AS q (tenant_id, meter, period_start, used) \
             SELECT $1, $2, $3, $4 WHERE $4 <= $5 \
             ON CONFLICT (tenant_id, meter, period_start) DO UPDATE SET used = q.used + excluded.used \
             WHERE q.used <= $5 - excluded.used \
             RETURNING used",
        )
        .bind(key.tenant_id.as_uuid())
        .bind(key.meter.as_str())
        .bind(key.period_start)
        .bind(amount_db)
        .bind(cap_db)
        .fetch_optional(&mut *tx)
        .await
        .map_err(quota_error)?;
        let consumption = match after {
            Some(used) => Consumption {
                admitted: true,
                used: used_from_db(used)?,
            },
            None => {
                let used: Option<i64> = sqlx::query_scalar(
                    "SELECT used FROM tenancy_metering_quotas \
                     WHERE tenant_id = $1 AND meter = $2 AND period_start = $3",
                )
                .bind(key.tenant_id.as_uuid())
                .bind(key.meter.as_str())
                .bind(key.period_start)
                .fetch_optional(&mut *tx)
                .await
                .map_err(quota_error)?;
                Consumption {
                    admitted: false,
                    used: used_from_db(used.unwrap_or(0))?,
                }
            }
        };
        tx.commit().await.map_err(quota_error)?;
        Ok(consumption)
    }

    async fn release(&self, key: &QuotaKey, amount: u64) -> Result<(), QuotaStoreError> {
        let amount = check_range(amount.min(MAX_COUNTER))?;
        let mut tx = self.quota_tx(key.tenant_id).await?;
        sqlx::query(
            "UPDATE tenancy_metering_quotas SET used = GREATEST(used - $4, 0) \
             WHERE tenant_id = $1 AND meter = $2 AND period_start = $3",
        )
        .bind(key.tenant_id.as_uuid())
        .bind(key.meter.as_str())
        .bind(key.period_start)
        .bind(amount)
        .execute(&mut *tx)
        .await
        .map_err(quota_error)?;
        tx.commit().await.map_err(quota_error)?;
        Ok(())
    }

    async fn used(&self, key: &QuotaKey) -> Result<u64, QuotaStoreError> {
        let mut tx = self.quota_tx(key.tenant_id).await?;
        let used: Option<i64> = sqlx::query_scalar(
            "SELECT used FROM tenancy_metering_quotas \
             WHERE tenant_id = $1 AND meter = $2 AND period_start = $3",
        )
        .bind(key.tenant_id.as_uuid())
        .bind(key.meter.as_str())
        .bind(key.period_start)
        .fetch_optional(&mut *tx)
        .await
        .map_err(quota_error)?;
        tx.commit().await.map_err(quota_error)?;
        used_from_db(used.unwrap_or(0))
    }
}
