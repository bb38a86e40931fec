//! The Postgres billing store (feature `postgres`).
//!
//! - [`PgBillingStore`] implements [`BillingStore`] over
//!   `tenancy_billing_states` and `tenancy_billing_overrides` (tenant-owned,
//!   under row-level security), `tenancy_billing_accounts` (customer ↔
//!   tenant, read before a tenant is known, so like `tenancy_tenants` not
//!   under RLS) and `tenancy_billing_events` (processed event ids).
//! - Each write runs in one transaction scoped to the tenant: it records
//!   the event id (a duplicate ends it there), locks the tenant's state
//!   row, changes what changes, bumps the revision, appends the audit
//!   event through tenancy-core's [`PgTransaction`] and sends
//!   `NOTIFY tenancy_billing_change, '<tenant>:<revision>'`, delivered
//!   only if the transaction commits.
//! - An [`EntitlementCache`] registered on the shared
//!   [`tenancy_core::postgres::Listener`] for [`CHANGE_CHANNEL`] hears of
//!   other replicas' changes; after a lost connection it forgets every
//!   tenant.
//! - Migrations are embedded ([`migrator`]), numbered 4000–4999.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres};
use tenancy_core::postgres::{PgTransaction, Subscriber, set_transaction_tenant};
use tenancy_core::{AuditContext, AuditLog, Clock, StoreError, SystemClock, TenantId};

use super::{
    Applied, BillingStore, BillingStoreError, Change, Decision, EventRecord, MAX_ACCOUNTS_PAGE,
    decide,
};
use crate::cache::EntitlementCache;
use crate::entitlements::{BillingState, Revision};
use crate::overrides::{MAX_OVERRIDES, Override, OverrideId};
use crate::subscription::{BillingAccount, CustomerId, EventId, Subscription};

/// The channel revision notifications are sent on.
pub const CHANGE_CHANNEL: &str = "tenancy_billing_change";

/// The embedded tenancy-billing migrations (versions 4000–4999). Run
/// [`tenancy_core::postgres::migrator`] first, or both through
/// [`tenancy_core::postgres::migrate_all`].
pub fn migrator() -> Migrator {
    tenancy_core::postgres::tenancy_migrator(sqlx::migrate!("./migrations"))
}

/// Billing state in Postgres. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgBillingStore {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PgBillingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBillingStore").finish_non_exhaustive()
    }
}

fn unavailable(error: sqlx::Error) -> BillingStoreError {
    if tenancy_core::postgres::is_missing_tenant(&error) {
        return BillingStoreError::TenantNotFound;
    }
    BillingStoreError::Store(StoreError::unavailable(error))
}

fn corrupt(error: impl Into<tenancy_core::BoxError>) -> BillingStoreError {
    BillingStoreError::Store(StoreError::Corrupt(error.into()))
}

fn revision_from_db(value: i64) -> Result<Revision, BillingStoreError> {
    u64::try_from(value).map(Revision).map_err(corrupt)
}

fn revision_to_db(revision: Revision) -> Result<i64, BillingStoreError> {
    i64::try_from(revision.0).map_err(|e| BillingStoreError::Store(StoreError::unavailable(e)))
}

type Tx = sqlx::Transaction<'static, Postgres>;

/// A write in progress: the transaction, the tenant's revision and
/// subscription as locked.
struct Write {
    tx: Tx,
    tenant_id: TenantId,
    revision: Revision,
    subscription: Option<Subscription>,
}

impl PgBillingStore {
    /// A store over `pool`. Connect as an ordinary role: row-level security
    /// does not apply to superusers or `BYPASSRLS` roles.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for audit and link timestamps.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Applies tenancy-core's migrations, then tenancy-billing's.
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

    /// Opens a transaction scoped to the tenant, records `event` (`None`
    /// back if it was recorded before) and locks the tenant's state row.
    async fn begin_write(
        &self,
        tenant_id: TenantId,
        event: Option<&EventRecord>,
    ) -> Result<Option<Write>, BillingStoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        set_transaction_tenant(&mut tx, tenant_id)
            .await
            .map_err(unavailable)?;
        if let Some(event) = event
            && !insert_event(&mut tx, event).await?
        {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO tenancy_billing_states (tenant_id, revision) VALUES ($1, 0) \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant_id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let (revision, subscription): (i64, Option<serde_json::Value>) = sqlx::query_as(
            "SELECT revision, subscription FROM tenancy_billing_states \
             WHERE tenant_id = $1 FOR UPDATE",
        )
        .bind(tenant_id.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        let subscription = subscription
            .map(serde_json::from_value)
            .transpose()
            .map_err(corrupt)?;
        Ok(Some(Write {
            tx,
            tenant_id,
            revision: revision_from_db(revision)?,
            subscription,
        }))
    }

    /// Ends a write: stores the revision, announces it, appends the audit
    /// events in the same transaction, commits.
    async fn finish_write(
        &self,
        write: Write,
        changes: Vec<(Change<'_>, Revision)>,
        event: Option<&EventRecord>,
        audit: &AuditContext,
    ) -> Result<(), BillingStoreError> {
        let Write {
            mut tx,
            tenant_id,
            revision,
            ..
        } = write;
        let now = self.clock.now();
        let mut audit_events = Vec::with_capacity(changes.len());
        for (change, at) in &changes {
            audit_events.push(change.audit_event(audit, *at, event, now)?);
        }
        if !changes.is_empty() {
            sqlx::query("UPDATE tenancy_billing_states SET revision = $2 WHERE tenant_id = $1")
                .bind(tenant_id.as_uuid())
                .bind(revision_to_db(revision)?)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANGE_CHANNEL)
                .bind(format!("{tenant_id}:{revision}"))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        let core = PgTransaction::from_sqlx(tx);
        for audit_event in audit_events {
            core.append_audit(tenant_id, audit_event)
                .await
                .map_err(BillingStoreError::from_audit)?;
        }
        let tx = core.into_sqlx();
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }
}

async fn insert_event(
    conn: &mut PgConnection,
    event: &EventRecord,
) -> Result<bool, BillingStoreError> {
    let done = sqlx::query(
        "INSERT INTO tenancy_billing_events (event_id, event_type, received_at) \
         VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event.id.as_str())
    .bind(&event.event_type)
    .bind(event.received_at)
    .execute(conn)
    .await
    .map_err(unavailable)?;
    Ok(done.rows_affected() == 1)
}

/// Checks a link of the tenant to `customer` (serialized by the locked
/// state row): `true` if it must be made.
async fn check_link(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    customer: &CustomerId,
) -> Result<bool, BillingStoreError> {
    let owner: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT tenant_id FROM tenancy_billing_accounts WHERE customer_id = $1")
            .bind(customer.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)?;
    if let Some(owner) = owner {
        return if owner == tenant_id.as_uuid() {
            Ok(false)
        } else {
            Err(BillingStoreError::CustomerTaken)
        };
    }
    let linked: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenancy_billing_accounts WHERE tenant_id = $1)",
    )
    .bind(tenant_id.as_uuid())
    .fetch_one(&mut *conn)
    .await
    .map_err(unavailable)?;
    if linked {
        Err(BillingStoreError::AccountMismatch)
    } else {
        Ok(true)
    }
}

async fn insert_link(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    customer: &CustomerId,
    now: time::OffsetDateTime,
) -> Result<(), BillingStoreError> {
    sqlx::query(
        "INSERT INTO tenancy_billing_accounts (customer_id, tenant_id, created_at) \
         VALUES ($1, $2, $3)",
    )
    .bind(customer.as_str())
    .bind(tenant_id.as_uuid())
    .bind(tenancy_core::truncate_to_micros(now))
    .execute(conn)
    .await
    .map_err(|e| {
        if e.as_database_error()
            .is_some_and(|db| db.kind() == sqlx::error::ErrorKind::UniqueViolation)
        {
            BillingStoreError::CustomerTaken
        } else {
            unavailable(e)
        }
    })?;
    Ok(())
}

fn account_from_row(
    (customer_id, tenant_id, created_at): (String, uuid::Uuid, time::OffsetDateTime),
) -> Result<BillingAccount, BillingStoreError> {
    Ok(BillingAccount {
        tenant_id: TenantId::from_uuid(tenant_id),
        customer_id: CustomerId::new(customer_id).map_err(corrupt)?,
        created_at,
    })
}

#[async_trait]
impl BillingStore for PgBillingStore {
    async fn state(&self, tenant_id: TenantId) -> Result<BillingState, BillingStoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        set_transaction_tenant(&mut tx, tenant_id)
            .await
            .map_err(unavailable)?;
        let row: Option<(i64, Option<serde_json::Value>)> = sqlx::query_as(
            "SELECT revision, subscription FROM tenancy_billing_states WHERE tenant_id = $1",
        )
        .bind(tenant_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let account: Option<(String, uuid::Uuid, time::OffsetDateTime)> = sqlx::query_as(
            "SELECT customer_id, tenant_id, created_at FROM tenancy_billing_accounts \
             WHERE tenant_id = $1",
        )
        .bind(tenant_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let overrides: Vec<serde_json::Value> = sqlx::query_scalar(
            "SELECT document FROM tenancy_billing_overrides WHERE tenant_id = $1 \
             ORDER BY created_at, id",
        )
        .bind(tenant_id.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        let (revision, subscription) = match row {
            Some((revision, subscription)) => (
                revision_from_db(revision)?,
                subscription
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(corrupt)?,
            ),
            None => (Revision::ZERO, None),
        };
        Ok(BillingState {
            revision,
            account: account.map(account_from_row).transpose()?,
            subscription,
            overrides: overrides
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<_, _>>()
                .map_err(corrupt)?,
        })
    }

    async fn tenant_of_customer(
        &self,
        customer: &CustomerId,
    ) -> Result<Option<TenantId>, BillingStoreError> {
        let tenant: Option<uuid::Uuid> = sqlx::query_scalar(
            "SELECT tenant_id FROM tenancy_billing_accounts WHERE customer_id = $1",
        )
        .bind(customer.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(tenant.map(TenantId::from_uuid))
    }

    async fn link_customer(
        &self,
        tenant_id: TenantId,
        customer: &CustomerId,
        event: Option<&EventRecord>,
        audit: &AuditContext,
    ) -> Result<Applied, BillingStoreError> {
        let Some(mut write) = self.begin_write(tenant_id, event).await? else {
            return Ok(Applied::Duplicate);
        };
        if !check_link(&mut write.tx, tenant_id, customer).await? {
            let revision = write.revision;
            write.tx.commit().await.map_err(unavailable)?;
            return Ok(Applied::Unchanged(revision));
        }
        insert_link(&mut write.tx, tenant_id, customer, self.clock.now()).await?;
        write.revision = write.revision.next();
        let revision = write.revision;
        self.finish_write(
            write,
            vec![(Change::Linked { customer }, revision)],
            event,
            audit,
        )
        .await?;
        Ok(Applied::Changed(revision))
    }

    async fn sync_subscription(
        &self,
        tenant_id: TenantId,
        subscription: &Subscription,
        event: Option<&EventRecord>,
        audit: &AuditContext,
    ) -> Result<Applied, BillingStoreError> {
        let Some(mut write) = self.begin_write(tenant_id, event).await? else {
            return Ok(Applied::Duplicate);
        };
        let link = check_link(&mut write.tx, tenant_id, &subscription.customer_id).await?;
        if link {
            insert_link(
                &mut write.tx,
                tenant_id,
                &subscription.customer_id,
                self.clock.now(),
            )
            .await?;
        }
        let previous = write.subscription.clone();
        let (next, changed) = match decide(previous.as_ref(), subscription) {
            Decision::Keep => (None, false),
            Decision::Touch(next) => (Some(next), false),
            Decision::Change(next) => (Some(next), true),
        };
        if let Some(next) = &next {
            let document = serde_json::to_value(next)
                .map_err(|e| BillingStoreError::Store(StoreError::unavailable(e)))?;
            sqlx::query("UPDATE tenancy_billing_states SET subscription = $2 WHERE tenant_id = $1")
                .bind(tenant_id.as_uuid())
                .bind(document)
                .execute(&mut *write.tx)
                .await
                .map_err(unavailable)?;
        }
        let mut changes = Vec::new();
        if link {
            write.revision = write.revision.next();
            changes.push((
                Change::Linked {
                    customer: &subscription.customer_id,
                },
                write.revision,
            ));
        }
        if changed && let Some(next) = &next {
            write.revision = write.revision.next();
            changes.push((
                Change::Subscription {
                    subscription: next,
                    previous: previous.as_ref(),
                },
                write.revision,
            ));
        }
        let revision = write.revision;
        let any = !changes.is_empty();
        self.finish_write(write, changes, event, audit).await?;
        Ok(if any {
            Applied::Changed(revision)
        } else {
            Applied::Unchanged(revision)
        })
    }

    async fn record_event(&self, event: &EventRecord) -> Result<bool, BillingStoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        insert_event(&mut conn, event).await
    }

    async fn event_recorded(&self, id: &EventId) -> Result<bool, BillingStoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tenancy_billing_events WHERE event_id = $1)",
        )
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)
    }

    async fn add_override(
        &self,
        fields: &Override,
        audit: &AuditContext,
    ) -> Result<Revision, BillingStoreError> {
        let Some(mut write) = self.begin_write(fields.tenant_id, None).await? else {
            return Err(BillingStoreError::Store(StoreError::TransactionAborted));
        };
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tenancy_billing_overrides WHERE tenant_id = $1",
        )
        .bind(fields.tenant_id.as_uuid())
        .fetch_one(&mut *write.tx)
        .await
        .map_err(unavailable)?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_OVERRIDES {
            return Err(BillingStoreError::TooManyOverrides { max: MAX_OVERRIDES });
        }
        let mut stored = fields.clone();
        stored.created_at = tenancy_core::truncate_to_micros(stored.created_at);
        stored.expires_at = stored.expires_at.map(tenancy_core::truncate_to_micros);
        let document = serde_json::to_value(&stored)
            .map_err(|e| BillingStoreError::Store(StoreError::unavailable(e)))?;
        sqlx::query(
            "INSERT INTO tenancy_billing_overrides (tenant_id, id, document, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(fields.tenant_id.as_uuid())
        .bind(fields.id.as_uuid())
        .bind(document)
        .bind(stored.created_at)
        .execute(&mut *write.tx)
        .await
        .map_err(unavailable)?;
        write.revision = write.revision.next();
        let revision = write.revision;
        self.finish_write(
            write,
            vec![(Change::OverrideAdded { fields: &stored }, revision)],
            None,
            audit,
        )
        .await?;
        Ok(revision)
    }

    async fn remove_override(
        &self,
        tenant_id: TenantId,
        id: OverrideId,
        audit: &AuditContext,
    ) -> Result<Revision, BillingStoreError> {
        let Some(mut write) = self.begin_write(tenant_id, None).await? else {
            return Err(BillingStoreError::Store(StoreError::TransactionAborted));
        };
        let done =
            sqlx::query("DELETE FROM tenancy_billing_overrides WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id.as_uuid())
                .bind(id.as_uuid())
                .execute(&mut *write.tx)
                .await
                .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(BillingStoreError::OverrideNotFound);
        }
        write.revision = write.revision.next();
        let revision = write.revision;
        self.finish_write(
            write,
            vec![(Change::OverrideRemoved { id }, revision)],
            None,
            audit,
        )
        .await?;
        Ok(revision)
    }

    async fn list_accounts(
        &self,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<BillingAccount>, BillingStoreError> {
        let limit = i64::try_from(limit.min(MAX_ACCOUNTS_PAGE)).unwrap_or(0);
        let rows: Vec<(String, uuid::Uuid, time::OffsetDateTime)> = sqlx::query_as(
            "SELECT customer_id, tenant_id, created_at FROM tenancy_billing_accounts \
             WHERE $1::uuid IS NULL OR tenant_id > $1 ORDER BY tenant_id LIMIT $2",
        )
        .bind(after.map(|t| t.as_uuid()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.into_iter().map(account_from_row).collect()
    }
}

/// An [`EntitlementCache`] learns of other replicas' billing changes from
/// [`CHANGE_CHANNEL`]: register it on the shared
/// [`tenancy_core::postgres::Listener`]. After a lost connection it forgets
/// every tenant, so a change announced meanwhile cannot be missed.
impl Subscriber for EntitlementCache {
    fn notify(&self, _channel: &str, payload: &str) {
        if let Err(error) = self.apply_notification(payload) {
            tracing::warn!(%error, "ignoring malformed billing change notification");
        }
    }

    fn resync(&self) {
        self.forget_all();
    }
}
