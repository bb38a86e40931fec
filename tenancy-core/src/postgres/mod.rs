//! Postgres backend (feature `postgres`), over sqlx.
//!
//! - [`PgBackend`] implements every store with the same semantics as the
//!   in-memory backend; the shared conformance suites prove it.
//! - Migrations are embedded ([`migrator`]) and numbered 1000–1999, so the
//!   other tenancy crates add theirs to the same database; they are recorded
//!   in a table of their own ([`MIGRATIONS_TABLE`]), so a host's own
//!   `sqlx::migrate!()` on that database is not disturbed. [`migrate_all`]
//!   runs several crates' migrations as one.
//! - Tenant status and membership changes are announced as they commit
//!   ([`DIRECTORY_CHANNELS`]), so replicas that cache them
//!   ([`crate::CachingStore`]) forget at once; one [`Listener`] connection
//!   carries these and every other module's notices.
//! - Tenant-owned tables (memberships, invitations, audit) have row-level
//!   security keyed on the transaction setting `tenancy.tenant_id`, with
//!   `FORCE ROW LEVEL SECURITY`, so a query that forgets its `tenant_id`
//!   filter still sees one tenant only. [`begin_tenant_transaction`] and
//!   [`enable_tenant_rls`] give host tables the same protection.
//!
//! What row-level security does and does not do: it keeps a query that
//! forgets its `WHERE tenant_id = …` inside the transaction's tenant. It is
//! not a defence against hostile SQL: the scope is a transaction setting any
//! statement may change, superusers and roles with `BYPASSRLS` skip it, and
//! a table's owner may switch it off. Connect the application as an ordinary
//! role that does not own the tables (run migrations as the owner). Tenants
//! and users are not tenant-owned and carry no row-level security.
//!
//! The audit chain detects events edited, removed or forged through the
//! application's queries, and by anyone who cannot also rewrite the chain
//! head consistently. Someone with the table owner's rights can rewrite both;
//! keep a copy of the head ([`crate::AuditLog::audit_head`]) outside the
//! database, or verify exports offline with [`crate::audit::ChainVerifier`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tenancy_core::{Directory, postgres::PgBackend};
//!
//! let backend = PgBackend::connect("postgres://app@localhost/app").await?;
//! backend.migrate().await?;
//! let directory = Directory::new(Arc::new(backend));
//! # let _ = directory; Ok(()) }
//! ```

mod changes;
mod idempotency;
mod listener;
mod migrations;
mod outbox;
mod rows;

/// The sqlx this backend is built on, so hosts share one version.
pub use sqlx;

pub use migrations::{MIGRATIONS_TABLE, migrate_all, tenancy_migrator};

pub use crate::cache::DirectoryChange;
pub use changes::{
    DIRECTORY_CHANNELS, MEMBER_CHANGED_CHANNEL, TENANT_CHANGED_CHANNEL, listen_directory_changes,
};
pub use idempotency::PgIdempotencyStore;
pub use listener::{FnSubscriber, Listener, RunningListener, Subscriber};
pub use outbox::append_event;

use std::fmt;

use async_trait::async_trait;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Row};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::audit::{
    ActionFilter, AuditEvent, AuditQuery, ChainEntry, ChainHash, ChainHead, NewAuditEvent,
};
use crate::clock::truncate_to_micros;
use crate::error::{Conflict, Entity, StoreError};
use crate::id::{InvitationId, MembershipId, TenantId, UserId};
use crate::invitation::{Invitation, TokenHash};
use crate::membership::{Member, Membership, RoleName, UserTenant};
use crate::page::{Cursor, Page, PageRequest};
use crate::store::{
    AuditLog, Backend, InvitationStore, MembershipStore, TenantStore, Transaction, UserStore,
};
use crate::tenant::{Slug, Tenant};
use crate::user::{Email, User};

use rows::{
    audit_columns, audit_from_row, invitation_columns, invitation_from_row, member_from_row,
    membership_columns, membership_from_row, roles_to_db, tenant_columns, tenant_from_row,
    user_columns, user_from_row, user_tenant_from_row,
};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The embedded tenancy-core migrations (versions 1000–1999), recorded in
/// [`MIGRATIONS_TABLE`]; the other tenancy crates' versions in the same
/// database are ignored. Run several crates' at once with [`migrate_all`].
pub fn migrator() -> Migrator {
    tenancy_migrator(sqlx::migrate!("./migrations"))
}

/// Opens a transaction scoped to `tenant_id`: row-level security then shows
/// and accepts only that tenant's rows, on tenancy's tables and on host
/// tables given [`enable_tenant_rls`].
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool, tenant: tenancy_core::TenantId) -> Result<(), sqlx::Error> {
/// let mut tx = tenancy_core::postgres::begin_tenant_transaction(&pool, tenant).await?;
/// sqlx::query("UPDATE projects SET archived = true").execute(&mut *tx).await?; // this tenant's rows only
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub async fn begin_tenant_transaction(
    pool: &PgPool,
    tenant_id: TenantId,
) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    set_transaction_tenant(&mut tx, tenant_id).await?;
    Ok(tx)
}

/// Scopes the current transaction of `conn` to `tenant_id` (until it ends),
/// for hosts that open transactions themselves. Outside a transaction the
/// setting would vanish with the statement, so call it inside one.
pub async fn set_transaction_tenant(
    conn: &mut PgConnection,
    tenant_id: TenantId,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('tenancy.tenant_id', $1, true), set_config('tenancy.user_id', '', true)",
    )
    .bind(tenant_id.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether `error` is a write naming a tenant that does not exist: a
/// foreign key violation on a `*_tenant_fkey` constraint, which every
/// tenant-owned table of the SDK declares. Stores of other crates map it
/// to their own "tenant not found" error.
pub fn is_missing_tenant(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|db| {
        db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation
            && db.constraint().is_some_and(|c| c.ends_with("_tenant_fkey"))
    })
}

/// Enables tenant isolation on a host table: `ENABLE` and `FORCE ROW LEVEL
/// SECURITY` and a policy admitting only rows whose `tenant_column` equals the
/// transaction's tenant. Run it once, in a migration, as the table owner.
///
/// The same is available in SQL: `SELECT tenancy_enable_rls('projects', 'tenant_id');`
pub async fn enable_tenant_rls(
    conn: &mut PgConnection,
    table: &str,
    tenant_column: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT tenancy_enable_rls($1::regclass, $2::name)")
        .bind(table)
        .bind(tenant_column)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores everything in Postgres. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgBackend {
    pool: PgPool,
    /// When each outbox consumer last looked for tenants it has no position in.
    cursor_scans: outbox::CursorScans,
}

impl fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBackend").finish_non_exhaustive()
    }
}

impl PgBackend {
    /// A backend over an existing pool.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cursor_scans: outbox::CursorScans::default(),
        }
    }

    /// Connects a pool of up to 10 connections to `url`.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(url)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(Self::new(pool))
    }

    /// Applies the embedded migrations (see [`migrate_all`]).
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        migrate_all(&self.pool, [migrator()]).await
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Backend for PgBackend {
    async fn begin(&self) -> Result<Box<dyn Transaction>> {
        let tx = self.pool.begin().await.map_err(StoreError::unavailable)?;
        Ok(Box::new(PgTransaction::from_sqlx(tx)))
    }
}

/// A transaction of [`PgBackend`]. Wrap a transaction of your own with
/// [`PgTransaction::from_sqlx`] to make tenancy's writes part of it, and take
/// it back with [`PgTransaction::into_sqlx`].
///
/// Each tenant-owned call scopes the transaction to its tenant (see
/// [`set_transaction_tenant`]); the last scope stays in force for queries
/// you run on the transaction afterwards.
pub struct PgTransaction {
    inner: Mutex<Inner>,
}

impl fmt::Debug for PgTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTransaction").finish_non_exhaustive()
    }
}

struct Inner {
    tx: sqlx::Transaction<'static, Postgres>,
    scope: Scope,
    aborted: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Unknown,
    Tenant(TenantId),
    User(UserId),
}

impl PgTransaction {
    /// Wraps an open sqlx transaction.
    pub fn from_sqlx(tx: sqlx::Transaction<'static, Postgres>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                tx,
                scope: Scope::Unknown,
                aborted: false,
            }),
        }
    }

    /// Returns the sqlx transaction, uncommitted.
    pub fn into_sqlx(self) -> sqlx::Transaction<'static, Postgres> {
        self.inner.into_inner().tx
    }

    /// The transaction's connection, for statements on other tables (such
    /// as another crate's) that must commit with tenancy's writes. Calls on
    /// this transaction wait while the guard is held: drop it before the
    /// next one. A failed statement aborts the transaction in Postgres, so
    /// the caller must then drop it rather than commit.
    /// [`StoreError::TransactionAborted`] if a call on it already failed.
    pub async fn connection(&self) -> Result<MappedMutexGuard<'_, PgConnection>> {
        let mut inner = self.inner.lock().await;
        inner.unscoped()?;
        Ok(MutexGuard::map(inner, |inner| &mut *inner.tx))
    }
}

impl Inner {
    /// The connection, with row-level security scoped to `scope`.
    async fn scoped(&mut self, scope: Scope) -> Result<&mut PgConnection> {
        self.unscoped()?;
        if self.scope != scope {
            let (tenant, user) = match scope {
                Scope::Tenant(id) => (id.to_string(), String::new()),
                Scope::User(id) => (String::new(), id.to_string()),
                Scope::Unknown => (String::new(), String::new()),
            };
            sqlx::query(
                "SELECT set_config('tenancy.tenant_id', $1, true), set_config('tenancy.user_id', $2, true)",
            )
            .bind(tenant)
            .bind(user)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| self.fail(e))?;
            self.scope = scope;
        }
        Ok(&mut *self.tx)
    }

    /// The connection, for tables without row-level security.
    fn unscoped(&mut self) -> Result<&mut PgConnection> {
        if self.aborted {
            return Err(StoreError::TransactionAborted);
        }
        Ok(&mut self.tx)
    }

    /// Records that the transaction is aborted (Postgres refuses every later
    /// statement) and maps the error.
    fn fail(&mut self, error: sqlx::Error) -> StoreError {
        self.aborted = true;
        db_error(error)
    }
}

/// Maps a database error: unique and foreign-key violations become
/// [`StoreError::Conflict`] and [`StoreError::NotFound`]. The error kind
/// decides that it is a violation; the constraint, all named in our own
/// migration, only says which rule.
fn db_error(error: sqlx::Error) -> StoreError {
    if let Some(db) = error.as_database_error() {
        let constraint = db.constraint().unwrap_or_default();
        match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => {
                let conflict = match constraint {
                    "tenancy_tenants_pkey" => Some(Conflict::Id(Entity::Tenant)),
                    "tenancy_tenants_slug_key" => Some(Conflict::TenantSlug),
                    "tenancy_users_pkey" => Some(Conflict::Id(Entity::User)),
                    "tenancy_users_email_key" => Some(Conflict::UserEmail),
                    "tenancy_memberships_pkey" => Some(Conflict::Id(Entity::Membership)),
                    "tenancy_memberships_tenant_user_key" => Some(Conflict::Membership),
                    "tenancy_invitations_pkey" => Some(Conflict::Id(Entity::Invitation)),
                    "tenancy_invitations_pending_key" => Some(Conflict::PendingInvitation),
                    "tenancy_audit_events_id_key" => Some(Conflict::Id(Entity::AuditEvent)),
                    "tenancy_outbox_events_id_key" => Some(Conflict::Id(Entity::Event)),
                    _ => None,
                };
                if let Some(conflict) = conflict {
                    return StoreError::Conflict(conflict);
                }
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                if constraint.ends_with("_tenant_fkey") {
                    return StoreError::NotFound(Entity::Tenant);
                }
                if constraint.ends_with("_user_fkey") || constraint.ends_with("_accepted_by_fkey") {
                    return StoreError::NotFound(Entity::User);
                }
            }
            _ => {}
        }
    }
    StoreError::unavailable(error)
}

fn found(rows_affected: u64, entity: Entity) -> Result<()> {
    if rows_affected == 0 {
        Err(StoreError::NotFound(entity))
    } else {
        Ok(())
    }
}

fn limit(page: &PageRequest) -> i64 {
    page.size.get() as i64 + 1
}

#[async_trait]
impl Transaction for PgTransaction {
    async fn commit(self: Box<Self>) -> Result<()> {
        let inner = self.inner.into_inner();
        if inner.aborted {
            // COMMIT of an aborted transaction silently rolls back; say so.
            return Err(StoreError::TransactionAborted);
        }
        inner.tx.commit().await.map_err(StoreError::unavailable)
    }
}

#[async_trait]
impl TenantStore for PgTransaction {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant.id), err)]
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<()> {
        let mut inner = self.inner.lock().await;
        sqlx::query(
            "INSERT INTO tenancy_tenants (id, slug, name, status, metadata, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant.id.as_uuid())
        .bind(tenant.slug.as_str())
        .bind(tenant.name.as_str())
        .bind(tenant.status.as_str())
        .bind(serde_json::Value::from(tenant.metadata.clone()))
        .bind(tenant.created_at)
        .bind(tenant.updated_at)
        .execute(inner.unscoped()?)
        .await
        .map_err(|e| inner.fail(e))?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(tenant_id = %id), err)]
    async fn get_tenant(&self, id: TenantId) -> Result<Tenant> {
        let mut inner = self.inner.lock().await;
        let row = sqlx::query(concat!(
            "SELECT ",
            tenant_columns!(""),
            " FROM tenancy_tenants WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(inner.unscoped()?)
        .await
        .map_err(|e| inner.fail(e))?;
        row.as_ref()
            .map(tenant_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound(Entity::Tenant))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(tenant_id = %id), err)]
    async fn lock_tenant(&self, id: TenantId) -> Result<Tenant> {
        let mut inner = self.inner.lock().await;
        let row = sqlx::query(concat!(
            "SELECT ",
            tenant_columns!(""),
            " FROM tenancy_tenants WHERE id = $1 FOR UPDATE"
        ))
        .bind(id.as_uuid())
        .fetch_optional(inner.unscoped()?)
        .await
        .map_err(|e| inner.fail(e))?;
        row.as_ref()
            .map(tenant_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound(Entity::Tenant))
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn find_tenant_by_slug(&self, slug: &Slug) -> Result<Option<Tenant>> {
        let mut inner = self.inner.lock().await;
        let row = sqlx::query(concat!(
            "SELECT ",
            tenant_columns!(""),
            " FROM tenancy_tenants WHERE slug = $1"
        ))
        .bind(slug.as_str())
        .fetch_optional(inner.unscoped()?)
        .await
        .map_err(|e| inner.fail(e))?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant.id), err)]
    async fn update_tenant(&self, tenant: &Tenant) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let done = sqlx::query(
            "UPDATE tenancy_tenants SET slug = $2, name = $3, status = $4, metadata = $5, updated_at = $6 \
             WHERE id = $1",
        )
        .bind(tenant.id.as_uuid())
        .bind(tenant.slug.as_str())
        .bind(tenant.name.as_str())
        .bind(tenant.status.as_str())
        .bind(serde_json::Value::from(tenant.metadata.clone()))
        .bind(tenant.updated_at)
        .execute(inner.unscoped()?)
        .await
        .map_err(|e| inner.fail(e))?;
        found(done.rows_affected(), Entity::Tenant)
    }

    #[tracing::instrument(level = "debug", skip_all, err)]
    async fn admin_list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>> {
        let after: Option<TenantId> = page.after_key("tenants")?;
        let mut inner = self.inner.lock().await;
        let rows = sqlx::query(concat!(
            "SELECT ",
            tenant_columns!(""),
            " FROM tenancy_tenants WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
        ))
        .bind(after.map(|id| id.as_uuid()))
        .bind(limit(page))
        .fetch_all(inner.unscoped()?)
        .await
        .map_err(|e| inner.fail(e))?;
        let items = rows
            .iter()
            .map(tenant_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.size, |t| {
            Cursor::encode("tenants", t.id)
        }))
    }
}

#[async_trait]
impl UserStore for PgTransaction {
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %user.id), err)]
    async fn insert_user(&self, user: &User) -> Result<()> {
        let mut inner = self.inner.lock().await;
        sqlx::query(
            "INSERT INTO tenancy_users (id, email, display_name, email_verified, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(user.id.as_uuid())
        .bind(user.email.as_str())
        .bind(user.display_name.as_ref().map(|n| n.as_str()))
        .bind(user.email_verified)
        .bind(user.status.as_str())
        .bind(user.created_at)
        .bind(user.updated_at)
        .execute(inner.unscoped()?)
        .await
        .map_err(|e| inner.fail(e))?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn get_user(&self, id: UserId) -> Result<User> {
        let mut inner = self.inner.lock().await;
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(""),
            " FROM tenancy_users WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(inner.unscoped()?)
        .await
        .map_err(|e| inner.fail(e))?;
        row.as_ref()
            .map(user_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound(Entity::User))
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn lock_user(&self, id: UserId) -> Result<User> {
        let mut inner = self.inner.lock().await;
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(""),
            " FROM tenancy_users WHERE id = $1 FOR UPDATE"
        ))
        .bind(id.as_uuid())
        .fetch_optional(inner.unscoped()?)
        .await
        .map_err(|e| inner.fail(e))?;
        row.as_ref()
            .map(user_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound(Entity::User))
    }

    #[tracing::instrument(level = "debug", skip_all, err)]
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>> {
        let mut inner = self.inner.lock().await;
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(""),
            " FROM tenancy_users WHERE lower(email COLLATE \"C\") = $1"
        ))
        .bind(email.unique_key())
        .fetch_optional(inner.unscoped()?)
        .await
        .map_err(|e| inner.fail(e))?;
        row.as_ref().map(user_from_row).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %user.id), err)]
    async fn update_user(&self, user: &User) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let done = sqlx::query(
            "UPDATE tenancy_users SET email = $2, display_name = $3, email_verified = $4, status = $5, \
             updated_at = $6 WHERE id = $1",
        )
        .bind(user.id.as_uuid())
        .bind(user.email.as_str())
        .bind(user.display_name.as_ref().map(|n| n.as_str()))
        .bind(user.email_verified)
        .bind(user.status.as_str())
        .bind(user.updated_at)
        .execute(inner.unscoped()?)
        .await
        .map_err(|e| inner.fail(e))?;
        found(done.rows_affected(), Entity::User)
    }

    #[tracing::instrument(level = "debug", skip_all, err)]
    async fn admin_list_users(&self, page: &PageRequest) -> Result<Page<User>> {
        let after: Option<UserId> = page.after_key("users")?;
        let mut inner = self.inner.lock().await;
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_columns!(""),
            " FROM tenancy_users WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
        ))
        .bind(after.map(|id| id.as_uuid()))
        .bind(limit(page))
        .fetch_all(inner.unscoped()?)
        .await
        .map_err(|e| inner.fail(e))?;
        let items = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.size, |u| {
            Cursor::encode("users", u.id)
        }))
    }
}

#[async_trait]
impl MembershipStore for PgTransaction {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %membership.tenant_id), err)]
    async fn insert_membership(&self, membership: &Membership) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(membership.tenant_id)).await?;
        sqlx::query(
            "INSERT INTO tenancy_memberships (id, tenant_id, user_id, roles, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(membership.id.as_uuid())
        .bind(membership.tenant_id.as_uuid())
        .bind(membership.user_id.as_uuid())
        .bind(roles_to_db(&membership.roles))
        .bind(membership.status.as_str())
        .bind(membership.created_at)
        .bind(membership.updated_at)
        .execute(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn get_membership(&self, tenant_id: TenantId, id: MembershipId) -> Result<Membership> {
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            membership_columns!(""),
            " FROM tenancy_memberships WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        row.as_ref()
            .map(membership_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound(Entity::Membership))
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn find_membership(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
    ) -> Result<Option<Membership>> {
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            membership_columns!(""),
            " FROM tenancy_memberships WHERE tenant_id = $1 AND user_id = $2"
        ))
        .bind(tenant_id.as_uuid())
        .bind(user_id.as_uuid())
        .fetch_optional(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        row.as_ref().map(membership_from_row).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %membership.tenant_id), err)]
    async fn update_membership(&self, membership: &Membership) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(membership.tenant_id)).await?;
        let done = sqlx::query(
            "UPDATE tenancy_memberships SET roles = $3, status = $4, updated_at = $5 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(membership.tenant_id.as_uuid())
        .bind(membership.id.as_uuid())
        .bind(roles_to_db(&membership.roles))
        .bind(membership.status.as_str())
        .bind(membership.updated_at)
        .execute(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        found(done.rows_affected(), Entity::Membership)
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn delete_membership(&self, tenant_id: TenantId, id: MembershipId) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        let done = sqlx::query("DELETE FROM tenancy_memberships WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id.as_uuid())
            .bind(id.as_uuid())
            .execute(conn)
            .await
            .map_err(|e| inner.fail(e))?;
        found(done.rows_affected(), Entity::Membership)
    }

    #[tracing::instrument(level = "debug", skip(self, page), err)]
    async fn list_members(&self, tenant_id: TenantId, page: &PageRequest) -> Result<Page<Member>> {
        let after: Option<MembershipId> = page.after_key("members")?;
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            membership_columns!("m."),
            ", ",
            user_columns!("u."),
            " FROM tenancy_memberships m JOIN tenancy_users u ON u.id = m.user_id \
             WHERE m.tenant_id = $1 AND ($2::uuid IS NULL OR m.id > $2) ORDER BY m.id LIMIT $3"
        ))
        .bind(tenant_id.as_uuid())
        .bind(after.map(|id| id.as_uuid()))
        .bind(limit(page))
        .fetch_all(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        let items = rows
            .iter()
            .map(member_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.size, |m| {
            Cursor::encode("members", m.membership.id)
        }))
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn count_active_with_role(&self, tenant_id: TenantId, role: &RoleName) -> Result<u64> {
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tenancy_memberships \
             WHERE tenant_id = $1 AND status = 'active' AND $2 = ANY (roles)",
        )
        .bind(tenant_id.as_uuid())
        .bind(role.as_str())
        .fetch_one(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    #[tracing::instrument(level = "debug", skip(self, page), err)]
    async fn list_user_tenants(
        &self,
        user_id: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserTenant>> {
        let after: Option<MembershipId> = page.after_key("user-tenants")?;
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::User(user_id)).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            membership_columns!("m."),
            ", ",
            tenant_columns!("t."),
            " FROM tenancy_memberships m JOIN tenancy_tenants t ON t.id = m.tenant_id \
             WHERE m.user_id = $1 AND t.status <> 'deleted' AND ($2::uuid IS NULL OR m.id > $2) \
             ORDER BY m.id LIMIT $3"
        ))
        .bind(user_id.as_uuid())
        .bind(after.map(|id| id.as_uuid()))
        .bind(limit(page))
        .fetch_all(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        let items = rows
            .iter()
            .map(user_tenant_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.size, |ut| {
            Cursor::encode("user-tenants", ut.membership.id)
        }))
    }
}

#[async_trait]
impl InvitationStore for PgTransaction {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %invitation.tenant_id), err)]
    async fn insert_invitation(&self, invitation: &Invitation) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(invitation.tenant_id)).await?;
        sqlx::query(
            "INSERT INTO tenancy_invitations (id, tenant_id, email, roles, invited_by_kind, invited_by_id, \
             status, token_hash, expires_at, created_at, updated_at, accepted_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(invitation.id.as_uuid())
        .bind(invitation.tenant_id.as_uuid())
        .bind(invitation.email.as_str())
        .bind(roles_to_db(&invitation.roles))
        .bind(invitation.invited_by.kind())
        .bind(invitation.invited_by.id())
        .bind(invitation.status.as_str())
        .bind(invitation.token_hash.as_bytes().as_slice())
        .bind(invitation.expires_at)
        .bind(invitation.created_at)
        .bind(invitation.updated_at)
        .bind(invitation.accepted_by.map(|id| id.as_uuid()))
        .execute(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn get_invitation(&self, tenant_id: TenantId, id: InvitationId) -> Result<Invitation> {
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM tenancy_invitations WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        row.as_ref()
            .map(invitation_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound(Entity::Invitation))
    }

    #[tracing::instrument(level = "debug", skip(self, email), err)]
    async fn find_pending_invitation(
        &self,
        tenant_id: TenantId,
        email: &Email,
    ) -> Result<Option<Invitation>> {
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM tenancy_invitations WHERE tenant_id = $1 AND lower(email COLLATE \"C\") = $2 \
             AND status = 'pending'"
        ))
        .bind(tenant_id.as_uuid())
        .bind(email.unique_key())
        .fetch_optional(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        row.as_ref().map(invitation_from_row).transpose()
    }

    #[tracing::instrument(level = "debug", skip(self, token_hash), err)]
    async fn find_invitation_by_token(
        &self,
        tenant_id: TenantId,
        token_hash: &TokenHash,
    ) -> Result<Option<Invitation>> {
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM tenancy_invitations WHERE tenant_id = $1 AND token_hash = $2"
        ))
        .bind(tenant_id.as_uuid())
        .bind(token_hash.as_bytes().as_slice())
        .fetch_all(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        // The index finds the row; confirm the hash in constant time anyway.
        for row in &rows {
            let invitation = invitation_from_row(row)?;
            if invitation.token_hash == *token_hash {
                return Ok(Some(invitation));
            }
        }
        Ok(None)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %invitation.tenant_id), err)]
    async fn update_invitation(&self, invitation: &Invitation) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(invitation.tenant_id)).await?;
        let done = sqlx::query(
            "UPDATE tenancy_invitations SET status = $3, accepted_by = $4, updated_at = $5 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(invitation.tenant_id.as_uuid())
        .bind(invitation.id.as_uuid())
        .bind(invitation.status.as_str())
        .bind(invitation.accepted_by.map(|id| id.as_uuid()))
        .bind(invitation.updated_at)
        .execute(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        found(done.rows_affected(), Entity::Invitation)
    }

    #[tracing::instrument(level = "debug", skip(self, page), err)]
    async fn list_invitations(
        &self,
        tenant_id: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Invitation>> {
        let after: Option<InvitationId> = page.after_key("invitations")?;
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM tenancy_invitations WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) \
             ORDER BY id LIMIT $3"
        ))
        .bind(tenant_id.as_uuid())
        .bind(after.map(|id| id.as_uuid()))
        .bind(limit(page))
        .fetch_all(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        let items = rows
            .iter()
            .map(invitation_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.size, |i| {
            Cursor::encode("invitations", i.id)
        }))
    }
}

#[async_trait]
impl AuditLog for PgTransaction {
    #[tracing::instrument(level = "debug", skip(self, event), fields(action = %event.action), err)]
    async fn append_audit(&self, tenant_id: TenantId, event: NewAuditEvent) -> Result<AuditEvent> {
        event.validate()?;
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        outbox::lock_tenant_streams(conn, tenant_id)
            .await
            .map_err(|e| inner.fail(e))?;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        // Takes the row lock on the chain head: concurrent appends for this
        // tenant wait here until this transaction ends.
        let (seq, hash): (i64, Vec<u8>) = sqlx::query_as(
            "INSERT INTO tenancy_audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) \
             ON CONFLICT (tenant_id) DO UPDATE SET seq = tenancy_audit_heads.seq \
             RETURNING seq, hash",
        )
        .bind(tenant_id.as_uuid())
        .bind(ChainHash::GENESIS.as_bytes().as_slice())
        .fetch_one(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        let prev: [u8; 32] = hash
            .try_into()
            .map_err(|_| StoreError::unavailable("stored chain head hash is not 32 bytes"))?;
        let next = u64::try_from(seq)
            .map_err(StoreError::unavailable)?
            .saturating_add(1);
        let sealed = event.seal(tenant_id, next, ChainHash::from_bytes(prev));
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        // The insert trigger checks the link and moves the head.
        sqlx::query(
            "INSERT INTO tenancy_audit_events (tenant_id, seq, id, actor_kind, actor_id, action, \
             target_type, target_id, metadata, ip, user_agent, occurred_at, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::json, $10::inet, $11, $12, $13, $14)",
        )
        .bind(tenant_id.as_uuid())
        .bind(i64::try_from(sealed.seq).map_err(StoreError::unavailable)?)
        .bind(sealed.id.as_uuid())
        .bind(sealed.actor.kind())
        .bind(sealed.actor.id())
        .bind(sealed.action.as_str())
        .bind(sealed.target.target_type.as_str())
        .bind(sealed.target.id.as_str())
        .bind(sealed.metadata.canonical_json())
        .bind(sealed.ip.map(|ip| ip.to_string()))
        .bind(sealed.user_agent.as_deref())
        .bind(sealed.occurred_at)
        .bind(sealed.prev_hash.as_bytes().as_slice())
        .bind(sealed.hash.as_bytes().as_slice())
        .execute(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        if let Some(event) = crate::outbox::event_for_audit(&sealed) {
            inner.append_event(tenant_id, event).await?;
        }
        Ok(sealed)
    }

    #[tracing::instrument(level = "debug", skip(self, query, page), err)]
    async fn query_audit(
        &self,
        tenant_id: TenantId,
        query: &AuditQuery,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>> {
        let after: u64 = page.after_key("audit")?.unwrap_or(0);
        let mut sql = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM tenancy_audit_events WHERE tenant_id = "
        ));
        sql.push_bind(tenant_id.as_uuid());
        sql.push(" AND seq > ")
            .push_bind(i64::try_from(after).unwrap_or(i64::MAX));
        match &query.action {
            Some(ActionFilter::Exact(action)) => {
                sql.push(" AND action = ")
                    .push_bind(action.as_str().to_owned());
            }
            Some(ActionFilter::Prefix(prefix)) => {
                sql.push(" AND starts_with(action, ")
                    .push_bind(format!("{prefix}."))
                    .push(")");
            }
            None => {}
        }
        if let Some(actor) = &query.actor {
            sql.push(" AND actor_kind = ").push_bind(actor.kind());
            sql.push(" AND actor_id IS NOT DISTINCT FROM ")
                .push_bind(actor.id());
        }
        if let Some(target_type) = &query.target_type {
            sql.push(" AND target_type = ")
                .push_bind(target_type.as_str().to_owned());
        }
        if let Some(since) = query.since {
            sql.push(" AND occurred_at >= ")
                .push_bind(truncate_to_micros(since));
        }
        if let Some(until) = query.until {
            sql.push(" AND occurred_at < ")
                .push_bind(truncate_to_micros(until));
        }
        sql.push(" ORDER BY seq LIMIT ").push_bind(limit(page));
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        let rows = sql
            .build()
            .fetch_all(conn)
            .await
            .map_err(|e| inner.fail(e))?;
        let items = rows
            .iter()
            .map(audit_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.size, |e| {
            Cursor::encode("audit", e.seq)
        }))
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn read_chain(
        &self,
        tenant_id: TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChainEntry>> {
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM tenancy_audit_events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(tenant_id.as_uuid())
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(conn)
        .await
        .map_err(|e| inner.fail(e))?;
        rows.iter()
            .map(|row| match audit_from_row(row) {
                Ok(event) => Ok(ChainEntry::Event(Box::new(event))),
                Err(StoreError::Corrupt(_)) => {
                    let seq: i64 = row.try_get("seq").map_err(StoreError::unavailable)?;
                    Ok(ChainEntry::Corrupt {
                        seq: u64::try_from(seq).unwrap_or_default(),
                    })
                }
                Err(other) => Err(other),
            })
            .collect()
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn audit_head(&self, tenant_id: TenantId) -> Result<Option<ChainHead>> {
        let mut inner = self.inner.lock().await;
        let conn = inner.scoped(Scope::Tenant(tenant_id)).await?;
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, hash FROM tenancy_audit_heads WHERE tenant_id = $1")
                .bind(tenant_id.as_uuid())
                .fetch_optional(conn)
                .await
                .map_err(|e| inner.fail(e))?;
        row.map(|(seq, hash)| {
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| StoreError::unavailable("stored chain head hash is not 32 bytes"))?;
            Ok(ChainHead {
                seq: u64::try_from(seq).map_err(StoreError::unavailable)?,
                hash: ChainHash::from_bytes(hash),
            })
        })
        .transpose()
    }
}
