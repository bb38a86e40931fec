//! The outbox on Postgres (migration `1004_outbox`): appends on
//! [`PgTransaction`], relays' reads on [`PgBackend`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Postgres, Row};
use time::OffsetDateTime;

use super::{Inner, PgBackend, PgTransaction, Result, Scope, db_error};
use crate::error::{Entity, StoreError, ValidationError};
use crate::id::{EventId, TenantId};
use crate::outbox::{
    ClaimedEvents, ConsumerName, Event, EventFeed, EventType, NewEvent, Outbox, ReplayFrom,
    check_ack, check_limit,
};

/// Reads up to `$3` events of tenant `$1` numbered after `$2`, in order.
const SELECT_AFTER: &str = "SELECT tenant_id, seq, id, event_type, version, occurred_at, data \
     FROM tenancy_outbox_events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// Appends `event` to `tenant_id`'s stream on `conn`, which must be in a
/// transaction scoped to that tenant (see [`super::set_transaction_tenant`]):
/// for hosts that publish their own events from a transaction they opened
/// with sqlx. The event commits or rolls back with that transaction.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool, tenant: tenancy_core::TenantId) -> Result<(), Box<dyn std::error::Error>> {
/// use tenancy_core::outbox::{EventType, NewEvent};
/// let mut tx = tenancy_core::postgres::begin_tenant_transaction(&pool, tenant).await?;
/// sqlx::query("UPDATE projects SET archived = true WHERE id = $1").bind(7).execute(&mut *tx).await?;
/// let event = NewEvent::new(EventType::new("project.archived")?, serde_json::json!({ "id": 7 }));
/// tenancy_core::postgres::append_event(&mut tx, tenant, event).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub async fn append_event(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    event: NewEvent,
) -> Result<Event> {
    event.validate()?;
    insert_event(conn, tenant_id, event).await.map_err(db_error)
}

/// Takes, until the transaction ends, the lock every append to one
/// tenant's audit chain or event stream takes first: whichever of the two
/// heads a transaction then locks, and in whichever order, it cannot
/// deadlock with another (a transaction holding it already takes it again
/// at no cost).
pub(super) async fn lock_tenant_streams(
    conn: &mut PgConnection,
    tenant_id: TenantId,
) -> Result<(), sqlx::Error> {
    // Two-key form: the first key names tenancy's stream locks, the second
    // hashes the tenant; a hash collision only serializes two tenants.
    sqlx::query("SELECT pg_advisory_xact_lock(1952804449, hashtext($1::text))")
        .bind(tenant_id.as_uuid())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn insert_event(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    event: NewEvent,
) -> Result<Event, sqlx::Error> {
    lock_tenant_streams(conn, tenant_id).await?;
    // The head row stays locked until the transaction ends: the next append
    // to this tenant waits, so numbers follow commit order.
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO tenancy_outbox_heads AS h (tenant_id, seq) VALUES ($1, 1) \
         ON CONFLICT (tenant_id) DO UPDATE SET seq = h.seq + 1 RETURNING seq",
    )
    .bind(tenant_id.as_uuid())
    .fetch_one(&mut *conn)
    .await?;
    let seq = u64::try_from(seq).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let sealed = event.seal(tenant_id, seq, OffsetDateTime::now_utc());
    sqlx::query(
        "INSERT INTO tenancy_outbox_events (tenant_id, seq, id, event_type, version, occurred_at, data) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant_id.as_uuid())
    .bind(i64::try_from(sealed.seq).map_err(|e| sqlx::Error::Encode(Box::new(e)))?)
    .bind(sealed.id.as_uuid())
    .bind(sealed.event_type.as_str())
    .bind(i64::from(sealed.version))
    .bind(sealed.occurred_at)
    .bind(sqlx::types::Json(&sealed.data))
    .execute(&mut *conn)
    .await?;
    Ok(sealed)
}

impl Inner {
    /// Appends on this transaction, scoped to `tenant_id`.
    pub(super) async fn append_event(
        &mut self,
        tenant_id: TenantId,
        event: NewEvent,
    ) -> Result<Event> {
        let conn = self.scoped(Scope::Tenant(tenant_id)).await?;
        match insert_event(conn, tenant_id, event).await {
            Ok(event) => Ok(event),
            Err(error) => Err(self.fail(error)),
        }
    }
}

#[async_trait]
impl Outbox for PgTransaction {
    #[tracing::instrument(level = "debug", skip(self, event), fields(event_type = %event.event_type()), err)]
    async fn append_event(&self, tenant_id: TenantId, event: NewEvent) -> Result<Event> {
        event.validate()?;
        self.inner.lock().await.append_event(tenant_id, event).await
    }
}

fn event_from_row(row: &PgRow) -> Result<Event> {
    let corrupt = |e: sqlx::Error| StoreError::Corrupt(Box::new(e));
    let seq: i64 = row.try_get("seq").map_err(corrupt)?;
    let version: i64 = row.try_get("version").map_err(corrupt)?;
    let event_type: String = row.try_get("event_type").map_err(corrupt)?;
    let data: sqlx::types::Json<serde_json::Value> = row.try_get("data").map_err(corrupt)?;
    Ok(Event {
        id: EventId::from_uuid(row.try_get("id").map_err(corrupt)?),
        tenant_id: TenantId::from_uuid(row.try_get("tenant_id").map_err(corrupt)?),
        seq: u64::try_from(seq).map_err(|e| StoreError::Corrupt(Box::new(e)))?,
        event_type: EventType::new(event_type).map_err(|e| StoreError::Corrupt(Box::new(e)))?,
        version: u32::try_from(version).map_err(|e| StoreError::Corrupt(Box::new(e)))?,
        occurred_at: row.try_get("occurred_at").map_err(corrupt)?,
        data: data.0,
    })
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| ValidationError::EventSeq { seq: n }.into())
}

/// Opens a transaction that reads every tenant's events.
async fn begin_relay(backend: &PgBackend) -> Result<sqlx::Transaction<'static, Postgres>> {
    let mut tx = backend.pool.begin().await.map_err(db_error)?;
    sqlx::query("SELECT set_config('tenancy.outbox_relay', 'on', true)")
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    Ok(tx)
}

/// The number a reader positioned at `from` in `tenant_id`'s stream has
/// read up to.
async fn position(conn: &mut PgConnection, tenant_id: TenantId, from: ReplayFrom) -> Result<u64> {
    let head: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(seq), 0) FROM tenancy_outbox_heads WHERE tenant_id = $1",
    )
    .bind(tenant_id.as_uuid())
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    let seq: Option<i64> = match from {
        ReplayFrom::Start => sqlx::query_scalar(
            "SELECT min(seq) - 1 FROM tenancy_outbox_events WHERE tenant_id = $1",
        )
        .bind(tenant_id.as_uuid())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?,
        ReplayFrom::AfterSeq(seq) if to_i64(seq)? <= head => Some(to_i64(seq)?),
        ReplayFrom::AfterSeq(seq) => return Err(ValidationError::EventSeq { seq }.into()),
        ReplayFrom::AfterEvent(id) => Some(
            sqlx::query_scalar(
                "SELECT seq FROM tenancy_outbox_events WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant_id.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?
            .ok_or(StoreError::NotFound(Entity::Event))?,
        ),
        ReplayFrom::Since(at) => sqlx::query_scalar(
            "SELECT min(seq) - 1 FROM tenancy_outbox_events WHERE tenant_id = $1 AND occurred_at >= $2",
        )
        .bind(tenant_id.as_uuid())
        .bind(at)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?,
    };
    u64::try_from(seq.unwrap_or(head)).map_err(|e| StoreError::Corrupt(Box::new(e)))
}

/// When each consumer last looked for tenants it has no position in yet.
#[derive(Clone, Default)]
pub(super) struct CursorScans(Arc<Mutex<HashMap<ConsumerName, Instant>>>);

/// How often a consumer looks for new tenants while others keep it busy.
const CURSOR_SCAN_EVERY: Duration = Duration::from_secs(1);

impl CursorScans {
    /// Whether `consumer` is due a scan; if so, records it as started now.
    fn due(&self, consumer: &ConsumerName) -> bool {
        let mut scans = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match scans.get(consumer) {
            Some(last) if now.duration_since(*last) < CURSOR_SCAN_EVERY => false,
            _ => {
                scans.insert(consumer.clone(), now);
                true
            }
        }
    }
}

struct PgClaim {
    tx: sqlx::Transaction<'static, Postgres>,
    backend: PgBackend,
    consumer: ConsumerName,
    tenant_id: TenantId,
    events: Vec<Event>,
}

#[async_trait]
impl ClaimedEvents for PgClaim {
    fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    fn events(&self) -> &[Event] {
        &self.events
    }

    async fn ack(self: Box<Self>, through: u64) -> Result<()> {
        if let Err(refused) = check_ack(&self.events, through) {
            self.release().await?;
            return Err(refused.into());
        }
        let PgClaim {
            mut tx,
            consumer,
            tenant_id,
            ..
        } = *self;
        sqlx::query(
            "UPDATE tenancy_outbox_cursors SET seq = $3, turn = clock_timestamp() \
             WHERE consumer = $1 AND tenant_id = $2",
        )
        .bind(consumer.as_str())
        .bind(tenant_id.as_uuid())
        .bind(to_i64(through)?)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn release(self: Box<Self>) -> Result<()> {
        let PgClaim {
            tx,
            backend,
            consumer,
            tenant_id,
            ..
        } = *self;
        tx.rollback().await.map_err(db_error)?;
        // The tenant goes to the back of the line: one whose batches keep
        // failing does not hold up the others.
        let mut tx = begin_relay(&backend).await?;
        sqlx::query(
            "UPDATE tenancy_outbox_cursors SET turn = clock_timestamp() \
             WHERE consumer = $1 AND tenant_id = $2",
        )
        .bind(consumer.as_str())
        .bind(tenant_id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }
}

impl PgBackend {
    /// Gives `consumer` a position in the streams of tenants it has none in yet.
    async fn add_cursors(&self, consumer: &ConsumerName) -> Result<u64> {
        let mut tx = begin_relay(self).await?;
        let added = sqlx::query(
            "INSERT INTO tenancy_outbox_cursors (consumer, tenant_id) \
             SELECT $1, h.tenant_id FROM tenancy_outbox_heads h \
             WHERE NOT EXISTS (SELECT 1 FROM tenancy_outbox_cursors c \
                               WHERE c.consumer = $1 AND c.tenant_id = h.tenant_id) \
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(added.rows_affected())
    }

    async fn try_claim(
        &self,
        consumer: &ConsumerName,
        limit: usize,
    ) -> Result<Option<Box<dyn ClaimedEvents>>> {
        loop {
            let mut tx = begin_relay(self).await?;
            let next: Option<(uuid::Uuid, i64, i64)> = sqlx::query_as(
                "SELECT c.tenant_id, c.seq, h.seq FROM tenancy_outbox_cursors c \
                 JOIN tenancy_outbox_heads h ON h.tenant_id = c.tenant_id \
                 WHERE c.consumer = $1 AND h.seq > c.seq \
                 ORDER BY c.turn LIMIT 1 FOR UPDATE OF c SKIP LOCKED",
            )
            .bind(consumer.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            let Some((tenant, seq, head)) = next else {
                return Ok(None);
            };
            let rows = sqlx::query(SELECT_AFTER)
                .bind(tenant)
                .bind(seq)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            if rows.is_empty() {
                // Purged before this consumer read them: nothing left to deliver.
                tracing::warn!(
                    consumer = %consumer,
                    tenant_id = %tenant,
                    from = seq + 1,
                    through = head,
                    "outbox events were purged before this consumer read them"
                );
                sqlx::query(
                    "UPDATE tenancy_outbox_cursors SET seq = $3 WHERE consumer = $1 AND tenant_id = $2",
                )
                .bind(consumer.as_str())
                .bind(tenant)
                .bind(head)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                continue;
            }
            let events = rows
                .iter()
                .map(event_from_row)
                .collect::<Result<Vec<_>>>()?;
            if let Some(first) = events.first()
                && u64::try_from(seq).is_ok_and(|seq| first.seq > seq + 1)
            {
                tracing::warn!(
                    consumer = %consumer,
                    tenant_id = %tenant,
                    from = seq + 1,
                    through = first.seq - 1,
                    "outbox events were purged before this consumer read them"
                );
            }
            return Ok(Some(Box::new(PgClaim {
                tx,
                backend: self.clone(),
                consumer: consumer.clone(),
                tenant_id: TenantId::from_uuid(tenant),
                events,
            })));
        }
    }
}

#[async_trait]
impl EventFeed for PgBackend {
    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn claim(
        &self,
        consumer: &ConsumerName,
        limit: usize,
    ) -> Result<Option<Box<dyn ClaimedEvents>>> {
        let limit = check_limit(limit)?;
        // New tenants get a position at least every CURSOR_SCAN_EVERY, even
        // while older tenants always have events pending.
        let scanned = self.cursor_scans.due(consumer);
        if scanned {
            self.add_cursors(consumer).await?;
        }
        if let Some(claim) = self.try_claim(consumer, limit).await? {
            return Ok(Some(claim));
        }
        if scanned || self.add_cursors(consumer).await? == 0 {
            return Ok(None);
        }
        self.try_claim(consumer, limit).await
    }

    async fn read_events(
        &self,
        tenant_id: TenantId,
        from: ReplayFrom,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let limit = check_limit(limit)?;
        let mut tx = super::begin_tenant_transaction(&self.pool, tenant_id)
            .await
            .map_err(db_error)?;
        let after = position(&mut tx, tenant_id, from).await?;
        let rows = sqlx::query(SELECT_AFTER)
            .bind(tenant_id.as_uuid())
            .bind(to_i64(after)?)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn rewind(
        &self,
        consumer: &ConsumerName,
        tenant_id: TenantId,
        from: ReplayFrom,
    ) -> Result<()> {
        let mut tx = super::begin_tenant_transaction(&self.pool, tenant_id)
            .await
            .map_err(db_error)?;
        let seq = position(&mut tx, tenant_id, from).await?;
        // Waits for a claim of this tenant by this consumer to end.
        sqlx::query(
            "INSERT INTO tenancy_outbox_cursors (consumer, tenant_id, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer, tenant_id) DO UPDATE SET seq = excluded.seq",
        )
        .bind(consumer.as_str())
        .bind(tenant_id.as_uuid())
        .bind(to_i64(seq)?)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn oldest_pending(&self, consumer: &ConsumerName) -> Result<Option<OffsetDateTime>> {
        let mut tx = begin_relay(self).await?;
        let oldest: Option<OffsetDateTime> = sqlx::query_scalar(
            "SELECT min(first.occurred_at) FROM tenancy_outbox_heads h \
             LEFT JOIN tenancy_outbox_cursors c ON c.tenant_id = h.tenant_id AND c.consumer = $1 \
             CROSS JOIN LATERAL (SELECT e.occurred_at FROM tenancy_outbox_events e \
                                 WHERE e.tenant_id = h.tenant_id AND e.seq > coalesce(c.seq, 0) \
                                 ORDER BY e.seq LIMIT 1) first \
             WHERE h.seq > coalesce(c.seq, 0)",
        )
        .bind(consumer.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(oldest)
    }

    async fn purge_events(
        &self,
        before: OffsetDateTime,
        consumers: &[ConsumerName],
    ) -> Result<u64> {
        let consumers: Vec<&str> = consumers.iter().map(ConsumerName::as_str).collect();
        let mut tx = begin_relay(self).await?;
        // Only a prefix of each stream goes (never a hole in the middle),
        // and only what every listed (or, with none listed, every known)
        // consumer has acknowledged.
        let purged = sqlx::query(
            "WITH listed AS ( \
                 SELECT unnest($2::text[]) AS consumer \
                 UNION SELECT DISTINCT consumer FROM tenancy_outbox_cursors \
                       WHERE cardinality($2::text[]) = 0), \
             kept AS ( \
                 SELECT tenant_id, min(seq) AS first_kept FROM tenancy_outbox_events \
                 WHERE occurred_at >= $1 GROUP BY tenant_id), \
             acked AS ( \
                 SELECT t.tenant_id, min(coalesce(c.seq, 0)) AS seq \
                 FROM (SELECT DISTINCT tenant_id FROM tenancy_outbox_events WHERE occurred_at < $1) t \
                 CROSS JOIN listed l \
                 LEFT JOIN tenancy_outbox_cursors c \
                   ON c.consumer = l.consumer AND c.tenant_id = t.tenant_id \
                 GROUP BY t.tenant_id) \
             DELETE FROM tenancy_outbox_events e WHERE e.occurred_at < $1 \
             AND e.seq < coalesce((SELECT k.first_kept FROM kept k WHERE k.tenant_id = e.tenant_id), \
                                  9223372036854775807) \
             AND e.seq <= coalesce((SELECT a.seq FROM acked a WHERE a.tenant_id = e.tenant_id), \
                                   9223372036854775807)",
        )
        .bind(before)
        .bind(&consumers)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        tx.commit().await.map_err(db_error)?;
        Ok(purged)
    }

    async fn forget_consumer(&self, consumer: &ConsumerName) -> Result<u64> {
        let mut tx = begin_relay(self).await?;
        let forgotten = sqlx::query("DELETE FROM tenancy_outbox_cursors WHERE consumer = $1")
            .bind(consumer.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        tx.commit().await.map_err(db_error)?;
        Ok(forgotten)
    }
}
