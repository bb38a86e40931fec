//! The Postgres store. Every call runs in a transaction scoped to its
//! tenant (`tenancy.tenant_id`), so row-level security confines it.

use async_trait::async_trait;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use tenancy_core::{Cursor, Event, EventId, Page, PageRequest, TenantId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::endpoint::{
    AttemptOutcome, DeliveryAttempt, DeliveryId, Endpoint, EndpointId, EndpointStatus, EventTypes,
    StoredSecrets,
};
use crate::error::WebhookError;
use crate::secret::SealedSecret;
use crate::store::{DELIVERIES_LIST, ENDPOINTS_LIST, Purged, WebhookStore};

/// The embedded tenancy-webhooks migrations (versions 9001+). Run
/// tenancy-core's first, or both through
/// [`tenancy_core::postgres::migrate_all`].
pub fn migrator() -> Migrator {
    tenancy_core::postgres::tenancy_migrator(sqlx::migrate!("./migrations"))
}

/// Endpoints, events and the delivery log in Postgres. Cheap to clone.
#[derive(Clone)]
pub struct PgWebhookStore {
    pool: PgPool,
}

impl std::fmt::Debug for PgWebhookStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgWebhookStore").finish_non_exhaustive()
    }
}

fn unavailable(error: sqlx::Error) -> WebhookError {
    if tenancy_core::postgres::is_missing_tenant(&error) {
        return WebhookError::NotFound("tenant");
    }
    WebhookError::unavailable(error)
}

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, event_types, status, \
    paused_reason, paused_since, consecutive_failures, healthy_at, created_at, updated_at";

const ATTEMPT_COLUMNS: &str = "id, tenant_id, endpoint_id, event_id, event_type, attempt, \
    outcome, status_code, latency_ms, error, response_excerpt, at";

fn endpoint_from_row(row: &PgRow) -> Result<Endpoint, WebhookError> {
    let status: String = row.try_get("status").map_err(WebhookError::corrupt)?;
    let status = match status.as_str() {
        "active" => EndpointStatus::Active,
        "disabled" => EndpointStatus::Disabled,
        "paused" => EndpointStatus::Paused {
            reason: row
                .try_get::<Option<String>, _>("paused_reason")
                .map_err(WebhookError::corrupt)?
                .unwrap_or_default(),
            since: row
                .try_get::<Option<OffsetDateTime>, _>("paused_since")
                .map_err(WebhookError::corrupt)?
                .ok_or_else(|| WebhookError::corrupt("a paused endpoint has no pause time"))?,
        },
        other => return Err(WebhookError::corrupt(format!("unknown status {other:?}"))),
    };
    let types: serde_json::Value = row.try_get("event_types").map_err(WebhookError::corrupt)?;
    let event_types: EventTypes = serde_json::from_value(types).map_err(WebhookError::corrupt)?;
    let failures: i32 = row
        .try_get("consecutive_failures")
        .map_err(WebhookError::corrupt)?;
    Ok(Endpoint {
        id: EndpointId::from_uuid(row.try_get("id").map_err(WebhookError::corrupt)?),
        tenant_id: TenantId::from_uuid(row.try_get("tenant_id").map_err(WebhookError::corrupt)?),
        url: row.try_get("url").map_err(WebhookError::corrupt)?,
        description: row.try_get("description").map_err(WebhookError::corrupt)?,
        event_types,
        status,
        consecutive_failures: u32::try_from(failures).map_err(WebhookError::corrupt)?,
        healthy_at: row.try_get("healthy_at").map_err(WebhookError::corrupt)?,
        created_at: row.try_get("created_at").map_err(WebhookError::corrupt)?,
        updated_at: row.try_get("updated_at").map_err(WebhookError::corrupt)?,
    })
}

fn attempt_from_row(row: &PgRow) -> Result<DeliveryAttempt, WebhookError> {
    let c = WebhookError::corrupt;
    let outcome: String = row.try_get("outcome").map_err(c)?;
    let attempt: i32 = row.try_get("attempt").map_err(c)?;
    let status: Option<i32> = row.try_get("status_code").map_err(c)?;
    let latency: Option<i64> = row.try_get("latency_ms").map_err(c)?;
    Ok(DeliveryAttempt {
        id: DeliveryId::from_uuid(row.try_get("id").map_err(c)?),
        tenant_id: TenantId::from_uuid(row.try_get("tenant_id").map_err(c)?),
        endpoint_id: EndpointId::from_uuid(row.try_get("endpoint_id").map_err(c)?),
        event_id: EventId::from_uuid(row.try_get("event_id").map_err(c)?),
        event_type: row.try_get("event_type").map_err(c)?,
        attempt: u32::try_from(attempt).map_err(WebhookError::corrupt)?,
        outcome: outcome.parse()?,
        status_code: status
            .map(u16::try_from)
            .transpose()
            .map_err(WebhookError::corrupt)?,
        latency_ms: latency
            .map(u64::try_from)
            .transpose()
            .map_err(WebhookError::corrupt)?,
        error: row.try_get("error").map_err(c)?,
        response_excerpt: row.try_get("response_excerpt").map_err(c)?,
        at: row.try_get("at").map_err(c)?,
    })
}

fn status_columns(status: &EndpointStatus) -> (&'static str, Option<&str>, Option<OffsetDateTime>) {
    match status {
        EndpointStatus::Paused { reason, since } => ("paused", Some(reason.as_str()), Some(*since)),
        other => (other.as_str(), None, None),
    }
}

fn clamp_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl PgWebhookStore {
    /// A store over `pool`. Connect as an ordinary role: row-level security
    /// does not apply to superusers or `BYPASSRLS` roles.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Applies tenancy-core's migrations, then tenancy-webhooks'.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
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

    async fn begin(
        &self,
        tenant_id: TenantId,
    ) -> Result<Transaction<'static, Postgres>, WebhookError> {
        tenancy_core::postgres::begin_tenant_transaction(&self.pool, tenant_id)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl WebhookStore for PgWebhookStore {
    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        secrets: &StoredSecrets,
        max_per_tenant: usize,
    ) -> Result<(), WebhookError> {
        let mut tx = self.begin(endpoint.tenant_id).await?;
        // One creation at a time per tenant, so the count below holds.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('tenancy_webhooks:' || $1::text, 0))",
        )
        .bind(endpoint.tenant_id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tenancy_webhook_endpoints WHERE tenant_id = $1",
        )
        .bind(endpoint.tenant_id.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= max_per_tenant {
            return Err(WebhookError::TooManyEndpoints {
                max: max_per_tenant,
            });
        }
        let (status, reason, since) = status_columns(&endpoint.status);
        let types = serde_json::to_value(&endpoint.event_types).map_err(WebhookError::corrupt)?;
        sqlx::query(
            "INSERT INTO tenancy_webhook_endpoints (id, tenant_id, url, description, event_types, \
             status, paused_reason, paused_since, consecutive_failures, healthy_at, secret, \
             previous_secret, previous_secret_until, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(endpoint.id.as_uuid())
        .bind(endpoint.tenant_id.as_uuid())
        .bind(&endpoint.url)
        .bind(&endpoint.description)
        .bind(types)
        .bind(status)
        .bind(reason)
        .bind(since)
        .bind(clamp_i32(endpoint.consecutive_failures))
        .bind(endpoint.healthy_at)
        .bind(secrets.current.as_compact())
        .bind(secrets.previous.as_ref().map(|(s, _)| s.as_compact()))
        .bind(secrets.previous.as_ref().map(|(_, until)| *until))
        .bind(endpoint.created_at)
        .bind(endpoint.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn get_endpoint(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
    ) -> Result<Endpoint, WebhookError> {
        let mut tx = self.begin(tenant_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM tenancy_webhook_endpoints WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant_id.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?
        .ok_or(WebhookError::NotFound("webhook endpoint"))?;
        tx.commit().await.map_err(unavailable)?;
        endpoint_from_row(&row)
    }

    async fn list_endpoints(
        &self,
        tenant_id: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Endpoint>, WebhookError> {
        let after: Option<Uuid> = page
            .after_key(ENDPOINTS_LIST)
            .map_err(|e| WebhookError::InvalidInput(e.to_string()))?;
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM tenancy_webhook_endpoints \
             WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
        )))
        .bind(tenant_id.as_uuid())
        .bind(after)
        .bind(i64::try_from(page.size.get() + 1).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        let items = rows
            .iter()
            .map(endpoint_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.size, |e| {
            Cursor::encode(ENDPOINTS_LIST, e.id.as_uuid())
        }))
    }

    async fn active_endpoints(&self, tenant_id: TenantId) -> Result<Vec<Endpoint>, WebhookError> {
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM tenancy_webhook_endpoints \
             WHERE tenant_id = $1 AND status = 'active' ORDER BY id"
        )))
        .bind(tenant_id.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        rows.iter().map(endpoint_from_row).collect()
    }

    async fn update_endpoint(&self, endpoint: &Endpoint) -> Result<(), WebhookError> {
        let mut tx = self.begin(endpoint.tenant_id).await?;
        let (status, reason, since) = status_columns(&endpoint.status);
        let types = serde_json::to_value(&endpoint.event_types).map_err(WebhookError::corrupt)?;
        let done = sqlx::query(
            "UPDATE tenancy_webhook_endpoints SET url = $3, description = $4, event_types = $5, \
             status = $6, paused_reason = $7, paused_since = $8, updated_at = $9 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(endpoint.tenant_id.as_uuid())
        .bind(endpoint.id.as_uuid())
        .bind(&endpoint.url)
        .bind(&endpoint.description)
        .bind(types)
        .bind(status)
        .bind(reason)
        .bind(since)
        .bind(endpoint.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(WebhookError::NotFound("webhook endpoint"));
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn delete_endpoint(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
    ) -> Result<(), WebhookError> {
        let mut tx = self.begin(tenant_id).await?;
        let done =
            sqlx::query("DELETE FROM tenancy_webhook_endpoints WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id.as_uuid())
                .bind(id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(WebhookError::NotFound("webhook endpoint"));
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn secrets(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
    ) -> Result<StoredSecrets, WebhookError> {
        let mut tx = self.begin(tenant_id).await?;
        let row: Option<(String, Option<String>, Option<OffsetDateTime>)> = sqlx::query_as(
            "SELECT secret, previous_secret, previous_secret_until FROM tenancy_webhook_endpoints \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        let (current, previous, until) = row.ok_or(WebhookError::NotFound("webhook endpoint"))?;
        Ok(StoredSecrets {
            current: SealedSecret::from_compact(current),
            previous: previous
                .zip(until)
                .map(|(secret, until)| (SealedSecret::from_compact(secret), until)),
        })
    }

    async fn set_secrets(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
        secrets: &StoredSecrets,
    ) -> Result<(), WebhookError> {
        let mut tx = self.begin(tenant_id).await?;
        let done = sqlx::query(
            "UPDATE tenancy_webhook_endpoints SET secret = $3, previous_secret = $4, \
             previous_secret_until = $5 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id.as_uuid())
        .bind(id.as_uuid())
        .bind(secrets.current.as_compact())
        .bind(secrets.previous.as_ref().map(|(s, _)| s.as_compact()))
        .bind(secrets.previous.as_ref().map(|(_, until)| *until))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(WebhookError::NotFound("webhook endpoint"));
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn put_message(&self, event: &Event) -> Result<(), WebhookError> {
        let mut tx = self.begin(event.tenant_id).await?;
        let json = serde_json::to_value(event).map_err(WebhookError::corrupt)?;
        sqlx::query(
            "INSERT INTO tenancy_webhook_messages (tenant_id, event_id, event) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, event_id) DO NOTHING",
        )
        .bind(event.tenant_id.as_uuid())
        .bind(event.id.as_uuid())
        .bind(json)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn purge(&self, before: OffsetDateTime) -> Result<Purged, WebhookError> {
        // Across tenants: the purge policies of migration 9002 let this
        // transaction, and only it, see and delete every tenant's rows.
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("SELECT set_config('tenancy.webhook_purge', 'on', true)")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let deliveries = sqlx::query("DELETE FROM tenancy_webhook_deliveries WHERE at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
        let messages = sqlx::query(
            "DELETE FROM tenancy_webhook_messages m WHERE m.stored_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM tenancy_webhook_deliveries d \
              WHERE d.tenant_id = m.tenant_id AND d.event_id = m.event_id)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        tx.commit().await.map_err(unavailable)?;
        Ok(Purged {
            deliveries,
            messages,
        })
    }

    async fn get_message(
        &self,
        tenant_id: TenantId,
        event_id: EventId,
    ) -> Result<Event, WebhookError> {
        let mut tx = self.begin(tenant_id).await?;
        let json: Option<serde_json::Value> = sqlx::query_scalar(
            "SELECT event FROM tenancy_webhook_messages WHERE tenant_id = $1 AND event_id = $2",
        )
        .bind(tenant_id.as_uuid())
        .bind(event_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        let json = json.ok_or(WebhookError::NotFound("event"))?;
        serde_json::from_value(json).map_err(WebhookError::corrupt)
    }

    async fn record_attempt(&self, attempt: &DeliveryAttempt) -> Result<Endpoint, WebhookError> {
        let mut tx = self.begin(attempt.tenant_id).await?;
        sqlx::query(
            "INSERT INTO tenancy_webhook_deliveries (id, tenant_id, endpoint_id, event_id, \
             event_type, attempt, outcome, status_code, latency_ms, error, response_excerpt, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(attempt.id.as_uuid())
        .bind(attempt.tenant_id.as_uuid())
        .bind(attempt.endpoint_id.as_uuid())
        .bind(attempt.event_id.as_uuid())
        .bind(&attempt.event_type)
        .bind(clamp_i32(attempt.attempt))
        .bind(attempt.outcome.as_str())
        .bind(attempt.status_code.map(i32::from))
        .bind(
            attempt
                .latency_ms
                .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
        )
        .bind(&attempt.error)
        .bind(&attempt.response_excerpt)
        .bind(attempt.at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let update = match attempt.outcome {
            AttemptOutcome::Succeeded => {
                "UPDATE tenancy_webhook_endpoints SET consecutive_failures = 0, \
                 healthy_at = greatest(healthy_at, $3) WHERE tenant_id = $1 AND id = $2"
            }
            AttemptOutcome::Failed | AttemptOutcome::Dead => {
                "UPDATE tenancy_webhook_endpoints SET consecutive_failures = \
                 least(consecutive_failures, 2147483646) + 1 \
                 WHERE tenant_id = $1 AND id = $2 AND $3::timestamptz IS NOT NULL"
            }
            _ => {
                "UPDATE tenancy_webhook_endpoints SET consecutive_failures = consecutive_failures \
                 WHERE tenant_id = $1 AND id = $2 AND $3::timestamptz IS NOT NULL"
            }
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{update} RETURNING {ENDPOINT_COLUMNS}"
        )))
        .bind(attempt.tenant_id.as_uuid())
        .bind(attempt.endpoint_id.as_uuid())
        .bind(attempt.at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        // The row is logged even when the endpoint is gone.
        tx.commit().await.map_err(unavailable)?;
        endpoint_from_row(&row.ok_or(WebhookError::NotFound("webhook endpoint"))?)
    }

    async fn get_attempt(
        &self,
        tenant_id: TenantId,
        id: DeliveryId,
    ) -> Result<DeliveryAttempt, WebhookError> {
        let mut tx = self.begin(tenant_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM tenancy_webhook_deliveries WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant_id.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?
        .ok_or(WebhookError::NotFound("delivery"))?;
        tx.commit().await.map_err(unavailable)?;
        attempt_from_row(&row)
    }

    async fn list_attempts(
        &self,
        tenant_id: TenantId,
        endpoint_id: EndpointId,
        page: &PageRequest,
    ) -> Result<Page<DeliveryAttempt>, WebhookError> {
        let before: Option<Uuid> = page
            .after_key(DELIVERIES_LIST)
            .map_err(|e| WebhookError::InvalidInput(e.to_string()))?;
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM tenancy_webhook_deliveries \
             WHERE tenant_id = $1 AND endpoint_id = $2 AND ($3::uuid IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4"
        )))
        .bind(tenant_id.as_uuid())
        .bind(endpoint_id.as_uuid())
        .bind(before)
        .bind(i64::try_from(page.size.get() + 1).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        let items = rows
            .iter()
            .map(attempt_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.size, |a| {
            Cursor::encode(DELIVERIES_LIST, a.id.as_uuid())
        }))
    }

    async fn pause_if_active(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<bool, WebhookError> {
        let mut tx = self.begin(tenant_id).await?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM tenancy_webhook_endpoints WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(tenant_id.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        match status.as_deref() {
            None => return Err(WebhookError::NotFound("webhook endpoint")),
            Some("active") => {}
            Some(_) => return Ok(false),
        }
        sqlx::query(
            "UPDATE tenancy_webhook_endpoints SET status = 'paused', paused_reason = $3, \
             paused_since = $4, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id.as_uuid())
        .bind(id.as_uuid())
        .bind(reason)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn resume(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
        at: OffsetDateTime,
    ) -> Result<Endpoint, WebhookError> {
        let mut tx = self.begin(tenant_id).await?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM tenancy_webhook_endpoints WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(tenant_id.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        match status.as_deref() {
            None => return Err(WebhookError::NotFound("webhook endpoint")),
            Some("disabled") => {
                return Err(WebhookError::InvalidInput(
                    "a disabled endpoint is enabled by an update, not resumed".into(),
                ));
            }
            Some(_) => {}
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tenancy_webhook_endpoints SET status = 'active', paused_reason = NULL, \
             paused_since = NULL, consecutive_failures = 0, healthy_at = $3, updated_at = $3 \
             WHERE tenant_id = $1 AND id = $2 RETURNING {ENDPOINT_COLUMNS}"
        )))
        .bind(tenant_id.as_uuid())
        .bind(id.as_uuid())
        .bind(at)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        endpoint_from_row(&row)
    }
}
