//! The export outbox in Postgres (`tenancy_metering_outbox`, under
//! row-level security): every statement in a transaction scoped to the
//! row's tenant.

use async_trait::async_trait;
use tenancy_core::TenantId;
use time::OffsetDateTime;

use super::{PgMeteringStore, unavailable};
use crate::export::{OutboxStore, OutboxTotals, UsageReport};
use crate::meter::MeterName;
use crate::store::MeteringStoreError;

fn bigint(value: u64) -> Result<i64, MeteringStoreError> {
    i64::try_from(value).map_err(super::corrupt)
}

type ReportRow = (
    String,
    OffsetDateTime,
    i64,
    i64,
    String,
    OffsetDateTime,
    i32,
);

#[async_trait]
impl OutboxStore for PgMeteringStore {
    async fn totals(
        &self,
        tenant_id: TenantId,
        meter: &MeterName,
        period_start: OffsetDateTime,
    ) -> Result<OutboxTotals, MeteringStoreError> {
        let mut tx = self.begin(tenant_id).await?;
        let (enqueued, sent, parked, last): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(value), 0)::bigint, \
                    coalesce(sum(value) FILTER (WHERE sent_at IS NOT NULL), 0)::bigint, \
                    coalesce(sum(value) FILTER (WHERE parked_at IS NOT NULL), 0)::bigint, \
                    coalesce(max(sequence), 0) \
             FROM tenancy_metering_outbox \
             WHERE tenant_id = $1 AND meter = $2 AND period_start = $3",
        )
        .bind(tenant_id.as_uuid())
        .bind(meter.as_str())
        .bind(period_start)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        let unsigned = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(OutboxTotals {
            enqueued: unsigned(enqueued),
            sent: unsigned(sent),
            parked: unsigned(parked),
            last_sequence: last,
        })
    }

    async fn insert(&self, report: &UsageReport, held: u64) -> Result<bool, MeteringStoreError> {
        let mut tx = self.begin(report.tenant_id).await?;
        // The row goes in only if the rows before it are the ones read (the
        // primary key settles two writers of the same sequence).
        let inserted = sqlx::query(
            "INSERT INTO tenancy_metering_outbox \
                (tenant_id, meter, period_start, sequence, value, identifier, occurred_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7 \
             WHERE (SELECT coalesce(sum(value), 0) FROM tenancy_metering_outbox \
                    WHERE tenant_id = $1 AND meter = $2 AND period_start = $3) = $8 \
             ON CONFLICT DO NOTHING",
        )
        .bind(report.tenant_id.as_uuid())
        .bind(report.meter.as_str())
        .bind(report.period_start)
        .bind(report.sequence)
        .bind(bigint(report.value)?)
        .bind(&report.identifier)
        .bind(report.timestamp)
        .bind(bigint(held)?)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        tx.commit().await.map_err(unavailable)?;
        Ok(inserted == 1)
    }

    async fn due(
        &self,
        tenant_id: TenantId,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<UsageReport>, MeteringStoreError> {
        let mut tx = self.begin(tenant_id).await?;
        let rows: Vec<ReportRow> = sqlx::query_as(
            "SELECT meter, period_start, sequence, value, identifier, occurred_at, attempts \
             FROM tenancy_metering_outbox \
             WHERE tenant_id = $1 AND sent_at IS NULL AND parked_at IS NULL \
               AND next_attempt_at <= $2 \
             ORDER BY created_at, meter, period_start, sequence LIMIT $3",
        )
        .bind(tenant_id.as_uuid())
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        rows.into_iter()
            .map(
                |(meter, period_start, sequence, value, identifier, at, attempts)| {
                    Ok(UsageReport {
                        tenant_id,
                        meter: MeterName::new(&meter).map_err(super::corrupt)?,
                        period_start,
                        sequence,
                        value: u64::try_from(value).map_err(super::corrupt)?,
                        identifier,
                        timestamp: at,
                        attempts: u32::try_from(attempts).unwrap_or(0),
                    })
                },
            )
            .collect()
    }

    async fn mark_sent(
        &self,
        report: &UsageReport,
        at: OffsetDateTime,
    ) -> Result<(), MeteringStoreError> {
        self.update(report, "sent_at = $5, last_error = $6", at, None)
            .await
    }

    async fn mark_failed(
        &self,
        report: &UsageReport,
        at: OffsetDateTime,
        retry_at: Option<OffsetDateTime>,
        error: &str,
    ) -> Result<(), MeteringStoreError> {
        match retry_at {
            Some(retry_at) => {
                let set = "attempts = attempts + 1, next_attempt_at = $5, last_error = $6";
                self.update(report, set, retry_at, Some(error)).await
            }
            None => {
                let set = "attempts = attempts + 1, parked_at = $5, last_error = $6";
                self.update(report, set, at, Some(error)).await
            }
        }
    }
}

impl PgMeteringStore {
    async fn update(
        &self,
        report: &UsageReport,
        set: &'static str,
        at: OffsetDateTime,
        error: Option<&str>,
    ) -> Result<(), MeteringStoreError> {
        let mut tx = self.begin(report.tenant_id).await?;
        let sql = format!(
            "UPDATE tenancy_metering_outbox SET {set} \
             WHERE tenant_id = $1 AND meter = $2 AND period_start = $3 AND sequence = $4"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(report.tenant_id.as_uuid())
            .bind(report.meter.as_str())
            .bind(report.period_start)
            .bind(report.sequence)
            .bind(at)
            .bind(error.map(|e| e.chars().take(500).collect::<String>()))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }
}
