//! Postgres role and policy stores (feature `postgres`).
//!
//! - [`PgAuthzStore`] implements [`RoleStore`] and [`PolicyStore`] over
//!   three tenant-owned tables with row-level security
//!   (`tenancy_authz_epochs`, `tenancy_authz_roles`,
//!   `tenancy_authz_policies`).
//! - Each write runs in one transaction: it locks the tenant's epoch row,
//!   checks the expected epoch, changes the row, bumps the epoch, appends
//!   the audit event through tenancy-core's
//!   [`PgTransaction`] and sends
//!   `NOTIFY tenancy_authz_epoch, '<tenant>:<epoch>'`, delivered only if
//!   the transaction commits.
//! - A [`PolicyCache`] registered on the shared
//!   [`tenancy_core::postgres::Listener`] for [`EPOCH_CHANNEL`] (or
//!   [`listen_for_epochs`] on a connection of its own) hears of them on
//!   every replica and recompiles the tenant on its next use; after a lost
//!   connection it forgets every tenant.
//! - Migrations are embedded ([`migrator`]), numbered 3000–3999, recorded
//!   with the other tenancy crates' (see
//!   [`tenancy_core::postgres::migrate_all`]).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres};
use tenancy_core::postgres::{Listener, RunningListener, Subscriber};
use tenancy_core::postgres::{PgTransaction, set_transaction_tenant};
use tenancy_core::{AuditContext, AuditLog, Clock, RoleName, StoreError, SystemClock, TenantId};

use super::{
    AuthzStoreError, Change, Epoch, MAX_POLICIES, MAX_ROLES, PolicyStore, RoleStore, Versioned,
};
use crate::cache::PolicyCache;
use crate::policy::{PolicyDocument, PolicyId};
use crate::role::RoleDefinition;

/// The channel epoch notifications are sent on.
pub const EPOCH_CHANNEL: &str = "tenancy_authz_epoch";

/// The embedded tenancy-authz migrations (versions 3000–3999). Missing
/// versions are ignored, so other crates' migrations in the same database
/// do not stop it. Run [`tenancy_core::postgres::migrator`] first.
pub fn migrator() -> Migrator {
    tenancy_core::postgres::tenancy_migrator(sqlx::migrate!("./migrations"))
}

/// Roles and policies in Postgres. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgAuthzStore {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PgAuthzStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuthzStore").finish_non_exhaustive()
    }
}

fn unavailable(error: sqlx::Error) -> AuthzStoreError {
    if tenancy_core::postgres::is_missing_tenant(&error) {
        return AuthzStoreError::TenantNotFound;
    }
    AuthzStoreError::Store(StoreError::unavailable(error))
}

fn epoch_from_db(value: i64) -> Result<Epoch, AuthzStoreError> {
    u64::try_from(value)
        .map(Epoch)
        .map_err(|e| AuthzStoreError::Store(StoreError::unavailable(e)))
}

fn epoch_to_db(epoch: Epoch) -> Result<i64, AuthzStoreError> {
    i64::try_from(epoch.0).map_err(|e| AuthzStoreError::Store(StoreError::unavailable(e)))
}

impl PgAuthzStore {
    /// A store over `pool`. Connect as an ordinary role: row-level security
    /// does not apply to superusers or `BYPASSRLS` roles.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for audit timestamps.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Applies tenancy-core's migrations, then tenancy-authz's.
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

    async fn read_epoch(
        conn: &mut PgConnection,
        tenant_id: TenantId,
    ) -> Result<Epoch, AuthzStoreError> {
        let epoch: Option<i64> =
            sqlx::query_scalar("SELECT epoch FROM tenancy_authz_epochs WHERE tenant_id = $1")
                .bind(tenant_id.as_uuid())
                .fetch_optional(conn)
                .await
                .map_err(unavailable)?;
        epoch.map_or(Ok(Epoch::ZERO), epoch_from_db)
    }

    async fn epoch(&self, tenant_id: TenantId) -> Result<Epoch, AuthzStoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        set_transaction_tenant(&mut tx, tenant_id)
            .await
            .map_err(unavailable)?;
        let epoch = Self::read_epoch(&mut tx, tenant_id).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(epoch)
    }

    /// Reads rows of `sql` (a `SELECT` of one jsonb column for `$1`) with
    /// the epoch, in one snapshot.
    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        tenant_id: TenantId,
        sql: &'static str,
    ) -> Result<Versioned<Vec<T>>, AuthzStoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        set_transaction_tenant(&mut tx, tenant_id)
            .await
            .map_err(unavailable)?;
        let epoch = Self::read_epoch(&mut tx, tenant_id).await?;
        let rows: Vec<serde_json::Value> = sqlx::query_scalar(sql)
            .bind(tenant_id.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        let value = rows
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<Vec<T>, _>>()
            .map_err(|e| AuthzStoreError::Store(StoreError::unavailable(e)))?;
        Ok(Versioned { epoch, value })
    }

    /// Starts a write: opens a transaction scoped to the tenant, locks the
    /// tenant's epoch row and checks it is still `expected`.
    async fn begin_write(
        &self,
        tenant_id: TenantId,
        expected: Epoch,
    ) -> Result<sqlx::Transaction<'static, Postgres>, AuthzStoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        set_transaction_tenant(&mut tx, tenant_id)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO tenancy_authz_epochs (tenant_id, epoch) VALUES ($1, 0) \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant_id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let current: i64 = sqlx::query_scalar(
            "SELECT epoch FROM tenancy_authz_epochs WHERE tenant_id = $1 FOR UPDATE",
        )
        .bind(tenant_id.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        let current = epoch_from_db(current)?;
        if current != expected {
            return Err(AuthzStoreError::StaleEpoch {
                expected,
                actual: current,
            });
        }
        Ok(tx)
    }

    /// Ends a write: bumps and announces the epoch, appends the audit
    /// event in the same transaction, commits.
    async fn finish_write(
        &self,
        mut tx: sqlx::Transaction<'static, Postgres>,
        tenant_id: TenantId,
        expected: Epoch,
        change: Change<'_>,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError> {
        let epoch = expected.next();
        sqlx::query("UPDATE tenancy_authz_epochs SET epoch = $2 WHERE tenant_id = $1")
            .bind(tenant_id.as_uuid())
            .bind(epoch_to_db(epoch)?)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EPOCH_CHANNEL)
            .bind(format!("{tenant_id}:{epoch}"))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let event = change.audit_event(audit, epoch, self.clock.now())?;
        let core = PgTransaction::from_sqlx(tx);
        core.append_audit(tenant_id, event)
            .await
            .map_err(AuthzStoreError::from_audit)?;
        let tx = core.into_sqlx();
        tx.commit().await.map_err(unavailable)?;
        Ok(epoch)
    }
}

async fn count(
    conn: &mut PgConnection,
    sql: &'static str,
    tenant_id: TenantId,
) -> Result<usize, AuthzStoreError> {
    let n: i64 = sqlx::query_scalar(sql)
        .bind(tenant_id.as_uuid())
        .fetch_one(conn)
        .await
        .map_err(unavailable)?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, AuthzStoreError> {
    serde_json::to_value(value).map_err(|e| AuthzStoreError::Store(StoreError::unavailable(e)))
}

/// A tenant's documents of one kind, keyed by name or id, at most `max`.
struct Documents {
    what: &'static str,
    max: usize,
    exists: &'static str,
    count: &'static str,
    delete: &'static str,
    upsert: &'static str,
}

const ROLES: Documents = Documents {
    what: "roles",
    max: MAX_ROLES,
    exists: "SELECT EXISTS (SELECT 1 FROM tenancy_authz_roles WHERE tenant_id = $1 AND name = $2)",
    count: "SELECT count(*) FROM tenancy_authz_roles WHERE tenant_id = $1",
    delete: "DELETE FROM tenancy_authz_roles WHERE tenant_id = $1 AND name = $2",
    upsert: "INSERT INTO tenancy_authz_roles (tenant_id, name, definition, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, name) \
             DO UPDATE SET definition = EXCLUDED.definition, updated_at = EXCLUDED.updated_at",
};

const POLICIES: Documents = Documents {
    what: "policies",
    max: MAX_POLICIES,
    exists: "SELECT EXISTS (SELECT 1 FROM tenancy_authz_policies WHERE tenant_id = $1 AND id = $2)",
    count: "SELECT count(*) FROM tenancy_authz_policies WHERE tenant_id = $1",
    delete: "DELETE FROM tenancy_authz_policies WHERE tenant_id = $1 AND id = $2",
    upsert: "INSERT INTO tenancy_authz_policies (tenant_id, id, document, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, id) \
             DO UPDATE SET document = EXCLUDED.document, updated_at = EXCLUDED.updated_at",
};

/// Deletes the document `key`; `false` if there was none.
async fn remove(
    conn: &mut PgConnection,
    kind: &Documents,
    tenant_id: TenantId,
    key: &str,
) -> Result<bool, AuthzStoreError> {
    let done = sqlx::query(kind.delete)
        .bind(tenant_id.as_uuid())
        .bind(key)
        .execute(conn)
        .await
        .map_err(unavailable)?;
    Ok(done.rows_affected() > 0)
}

/// Creates or replaces the document `key`; `true` if it was created.
/// Refuses a new one past the kind's limit.
async fn upsert(
    conn: &mut PgConnection,
    kind: &Documents,
    tenant_id: TenantId,
    key: &str,
    document: serde_json::Value,
    now: time::OffsetDateTime,
) -> Result<bool, AuthzStoreError> {
    let exists: bool = sqlx::query_scalar(kind.exists)
        .bind(tenant_id.as_uuid())
        .bind(key)
        .fetch_one(&mut *conn)
        .await
        .map_err(unavailable)?;
    if !exists && count(conn, kind.count, tenant_id).await? >= kind.max {
        return Err(AuthzStoreError::Limit {
            what: kind.what,
            max: kind.max,
        });
    }
    sqlx::query(kind.upsert)
        .bind(tenant_id.as_uuid())
        .bind(key)
        .bind(document)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    Ok(!exists)
}

#[async_trait]
impl RoleStore for PgAuthzStore {
    async fn roles_epoch(&self, tenant_id: TenantId) -> Result<Epoch, AuthzStoreError> {
        self.epoch(tenant_id).await
    }

    async fn list_roles(
        &self,
        tenant_id: TenantId,
    ) -> Result<Versioned<Vec<RoleDefinition>>, AuthzStoreError> {
        self.list(
            tenant_id,
            "SELECT definition FROM tenancy_authz_roles WHERE tenant_id = $1 ORDER BY name",
        )
        .await
    }

    async fn put_role(
        &self,
        tenant_id: TenantId,
        role: &RoleDefinition,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError> {
        let definition = to_json(role)?;
        let now = self.clock.now();
        let mut tx = self.begin_write(tenant_id, expected).await?;
        let created = upsert(
            &mut tx,
            &ROLES,
            tenant_id,
            role.name.as_str(),
            definition,
            now,
        )
        .await?;
        self.finish_write(
            tx,
            tenant_id,
            expected,
            Change::PutRole { role, created },
            audit,
        )
        .await
    }

    async fn delete_role(
        &self,
        tenant_id: TenantId,
        name: &RoleName,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError> {
        let mut tx = self.begin_write(tenant_id, expected).await?;
        if !remove(&mut tx, &ROLES, tenant_id, name.as_str()).await? {
            return Err(AuthzStoreError::RoleNotFound(name.clone()));
        }
        self.finish_write(tx, tenant_id, expected, Change::DeleteRole { name }, audit)
            .await
    }
}

#[async_trait]
impl PolicyStore for PgAuthzStore {
    async fn policies_epoch(&self, tenant_id: TenantId) -> Result<Epoch, AuthzStoreError> {
        self.epoch(tenant_id).await
    }

    async fn list_policies(
        &self,
        tenant_id: TenantId,
    ) -> Result<Versioned<Vec<PolicyDocument>>, AuthzStoreError> {
        self.list(
            tenant_id,
            "SELECT document FROM tenancy_authz_policies WHERE tenant_id = $1 ORDER BY id",
        )
        .await
    }

    async fn put_policy(
        &self,
        tenant_id: TenantId,
        policy: &PolicyDocument,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError> {
        let document = to_json(policy)?;
        let now = self.clock.now();
        let mut tx = self.begin_write(tenant_id, expected).await?;
        let created = upsert(
            &mut tx,
            &POLICIES,
            tenant_id,
            policy.id.as_str(),
            document,
            now,
        )
        .await?;
        self.finish_write(
            tx,
            tenant_id,
            expected,
            Change::PutPolicy { policy, created },
            audit,
        )
        .await
    }

    async fn delete_policy(
        &self,
        tenant_id: TenantId,
        id: &PolicyId,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError> {
        let mut tx = self.begin_write(tenant_id, expected).await?;
        if !remove(&mut tx, &POLICIES, tenant_id, id.as_str()).await? {
            return Err(AuthzStoreError::PolicyNotFound(id.clone()));
        }
        self.finish_write(tx, tenant_id, expected, Change::DeletePolicy { id }, audit)
            .await
    }
}

/// A [`PolicyCache`] learns of other replicas' role and policy changes
/// from [`EPOCH_CHANNEL`]: register it on the shared
/// [`tenancy_core::postgres::Listener`]. After a lost connection it forgets
/// every authorizer (and caches nothing read before), so a change announced
/// meanwhile cannot be missed.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool, cache: std::sync::Arc<tenancy_authz::PolicyCache>) -> Result<(), sqlx::Error> {
/// use tenancy_authz::store::postgres::EPOCH_CHANNEL;
/// use tenancy_core::postgres::Listener;
///
/// let mut listener = Listener::new(pool);
/// listener.subscribe([EPOCH_CHANNEL], cache);
/// let running = listener.start().await?; // stops when dropped
/// # drop(running); Ok(()) }
/// ```
impl Subscriber for PolicyCache {
    fn notify(&self, _channel: &str, payload: &str) {
        if let Err(error) = self.apply_notification(payload) {
            tracing::warn!(%error, "ignoring malformed authz epoch notification");
        }
    }

    fn resync(&self) {
        self.forget_all();
    }
}

/// Listens for [`EPOCH_CHANNEL`] on a connection of its own and tells
/// `cache` (see the [`Subscriber`] impl of [`PolicyCache`]); to share one
/// connection with the other modules, register the cache on a
/// [`Listener`] instead. Stops when the returned handle is dropped.
///
/// Errors: the first connection or subscription failed.
pub async fn listen_for_epochs(
    pool: &PgPool,
    cache: Arc<PolicyCache>,
) -> Result<RunningListener, sqlx::Error> {
    let mut listener = Listener::new(pool.clone());
    listener.subscribe([EPOCH_CHANNEL], cache);
    listener.start().await
}
