//! The Postgres SCIM store (feature `postgres`).
//!
//! Tokens live in `tenancy_scim_tokens` (found by hash before the tenant is
//! known, like API keys); user records in `tenancy_scim_users`, a
//! tenant-owned table under row-level security: every statement on it runs
//! in a transaction scoped to its tenant. Migrations are embedded
//! ([`migrator`]), numbered 7000–7999.

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tenancy_core::postgres::begin_tenant_transaction;
use tenancy_core::{Actor, ScimTokenId, StoreError, TenantId, TokenHash, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

mod groups;

use super::{GroupRecord, ScimStore, ScimToken, TenantSettings, UserRecord};
use crate::error::ScimStoreError;

/// The embedded tenancy-scim migrations (versions 7000–7999). Run
/// [`tenancy_core::postgres::migrator`] first, or both through
/// [`tenancy_core::postgres::migrate_all`] (the SCIM module's
/// `migrations` does).
pub fn migrator() -> Migrator {
    tenancy_core::postgres::tenancy_migrator(sqlx::migrate!("./migrations"))
}

/// Tokens and user records in Postgres. Cheap to clone.
#[derive(Clone)]
pub struct PgScimStore {
    pool: PgPool,
}

impl std::fmt::Debug for PgScimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgScimStore").finish_non_exhaustive()
    }
}

impl PgScimStore {
    /// A store over `pool` (migrated with [`migrator`]).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn tenant_tx(
        &self,
        tenant: TenantId,
    ) -> Result<Transaction<'static, Postgres>, ScimStoreError> {
        begin_tenant_transaction(&self.pool, tenant)
            .await
            .map_err(failed)
    }
}

fn failed(error: sqlx::Error) -> ScimStoreError {
    if tenancy_core::postgres::is_missing_tenant(&error) {
        return ScimStoreError::TenantNotFound;
    }
    if error
        .as_database_error()
        .is_some_and(|db| db.kind() == sqlx::error::ErrorKind::UniqueViolation)
    {
        return ScimStoreError::Conflict;
    }
    ScimStoreError::Store(StoreError::unavailable(error))
}

fn corrupt(what: &'static str) -> ScimStoreError {
    ScimStoreError::Store(StoreError::Corrupt(what.into()))
}

macro_rules! token_columns {
    () => {
        "id, tenant_id, name, secret_hash, created_by_kind, created_by_id, created_at, last_used_at, revoked_at"
    };
}

fn token_from(row: &PgRow) -> Result<ScimToken, ScimStoreError> {
    let hash: Vec<u8> = row.try_get("secret_hash").map_err(failed)?;
    let hash: [u8; 32] = hash.try_into().map_err(|_| corrupt("scim token hash"))?;
    let kind: String = row.try_get("created_by_kind").map_err(failed)?;
    Ok(ScimToken {
        id: ScimTokenId::from_uuid(row.try_get("id").map_err(failed)?),
        tenant_id: TenantId::from_uuid(row.try_get("tenant_id").map_err(failed)?),
        name: row.try_get("name").map_err(failed)?,
        secret_hash: TokenHash::from_bytes(hash),
        created_by: Actor::from_parts(&kind, row.try_get("created_by_id").map_err(failed)?)
            .ok_or_else(|| corrupt("scim token creator"))?,
        created_at: row.try_get("created_at").map_err(failed)?,
        last_used_at: row.try_get("last_used_at").map_err(failed)?,
        revoked_at: row.try_get("revoked_at").map_err(failed)?,
    })
}

macro_rules! user_columns {
    () => {
        "tenant_id, id, user_id, user_name, external_id, active, attributes, version, created_at, updated_at"
    };
}

fn user_from(row: &PgRow) -> Result<UserRecord, ScimStoreError> {
    let attributes: Value = row.try_get("attributes").map_err(failed)?;
    let Value::Object(attributes) = attributes else {
        return Err(corrupt("scim user attributes"));
    };
    Ok(UserRecord {
        id: row.try_get("id").map_err(failed)?,
        tenant_id: TenantId::from_uuid(row.try_get("tenant_id").map_err(failed)?),
        user_id: UserId::from_uuid(row.try_get("user_id").map_err(failed)?),
        user_name: row.try_get("user_name").map_err(failed)?,
        external_id: row.try_get("external_id").map_err(failed)?,
        active: row.try_get("active").map_err(failed)?,
        attributes,
        version: row.try_get("version").map_err(failed)?,
        created_at: row.try_get("created_at").map_err(failed)?,
        updated_at: row.try_get("updated_at").map_err(failed)?,
    })
}

fn attributes_json(attributes: &Map<String, Value>) -> Value {
    Value::Object(attributes.clone())
}

impl PgScimStore {
    async fn one_user(
        &self,
        tenant: TenantId,
        query: sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Option<UserRecord>, ScimStoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row = query
            .bind(tenant.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        row.as_ref().map(user_from).transpose()
    }
}

#[async_trait]
impl ScimStore for PgScimStore {
    async fn insert_token(&self, token: &ScimToken) -> Result<(), ScimStoreError> {
        sqlx::query(concat!(
            "INSERT INTO tenancy_scim_tokens (",
            token_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(token.id.as_uuid())
        .bind(token.tenant_id.as_uuid())
        .bind(&token.name)
        .bind(token.secret_hash.as_bytes().as_slice())
        .bind(token.created_by.kind())
        .bind(token.created_by.id())
        .bind(token.created_at)
        .bind(token.last_used_at)
        .bind(token.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn find_token(&self, hash: &TokenHash) -> Result<Option<ScimToken>, ScimStoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tenancy_scim_tokens WHERE secret_hash = $1"
        ))
        .bind(hash.as_bytes().as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(failed)?;
        row.as_ref().map(token_from).transpose()
    }

    async fn list_tokens(&self, tenant: TenantId) -> Result<Vec<ScimToken>, ScimStoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tenancy_scim_tokens WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        rows.iter().map(token_from).collect()
    }

    async fn revoke_token(
        &self,
        tenant: TenantId,
        id: ScimTokenId,
        at: OffsetDateTime,
    ) -> Result<ScimToken, ScimStoreError> {
        let row = sqlx::query(concat!(
            "UPDATE tenancy_scim_tokens SET revoked_at = COALESCE(revoked_at, $3) \
             WHERE tenant_id = $1 AND id = $2 RETURNING ",
            token_columns!(),
            ""
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(at)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed)?;
        row.as_ref()
            .map(token_from)
            .transpose()?
            .ok_or(ScimStoreError::NotFound)
    }

    async fn touch_token(&self, id: ScimTokenId, at: OffsetDateTime) -> Result<(), ScimStoreError> {
        sqlx::query("UPDATE tenancy_scim_tokens SET last_used_at = $2 WHERE id = $1")
            .bind(id.as_uuid())
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn insert_user(&self, record: &UserRecord) -> Result<(), ScimStoreError> {
        let mut tx = self.tenant_tx(record.tenant_id).await?;
        sqlx::query(concat!(
            "INSERT INTO tenancy_scim_users (",
            user_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(record.tenant_id.as_uuid())
        .bind(record.id)
        .bind(record.user_id.as_uuid())
        .bind(&record.user_name)
        .bind(&record.external_id)
        .bind(record.active)
        .bind(attributes_json(&record.attributes))
        .bind(record.version)
        .bind(record.created_at)
        .bind(record.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)
    }

    async fn get_user(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<UserRecord>, ScimStoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM tenancy_scim_users WHERE id = $1 AND tenant_id = $2"
        ));
        self.one_user(tenant, query.bind(id)).await
    }

    async fn find_user_by_name(
        &self,
        tenant: TenantId,
        user_name: &str,
    ) -> Result<Option<UserRecord>, ScimStoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM tenancy_scim_users WHERE lower(user_name) = lower($1) AND tenant_id = $2"
        ));
        self.one_user(tenant, query.bind(user_name.to_owned()))
            .await
    }

    async fn find_user_by_account(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<UserRecord>, ScimStoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM tenancy_scim_users WHERE user_id = $1 AND tenant_id = $2"
        ));
        self.one_user(tenant, query.bind(user.as_uuid())).await
    }

    async fn list_users(&self, tenant: TenantId) -> Result<Vec<UserRecord>, ScimStoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM tenancy_scim_users WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        rows.iter().map(user_from).collect()
    }

    async fn update_user(&self, record: &UserRecord, expected: i64) -> Result<(), ScimStoreError> {
        let mut tx = self.tenant_tx(record.tenant_id).await?;
        let done = sqlx::query(
            "UPDATE tenancy_scim_users SET user_name = $3, external_id = $4, active = $5, \
             attributes = $6, version = $7, updated_at = $8 WHERE id = $1 AND version = $2 AND tenant_id = $9",
        )
        .bind(record.id)
        .bind(expected)
        .bind(&record.user_name)
        .bind(&record.external_id)
        .bind(record.active)
        .bind(attributes_json(&record.attributes))
        .bind(record.version)
        .bind(record.updated_at)
        .bind(record.tenant_id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        if done.rows_affected() == 0 {
            let exists =
                sqlx::query("SELECT 1 FROM tenancy_scim_users WHERE id = $1 AND tenant_id = $2")
                    .bind(record.id)
                    .bind(record.tenant_id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(failed)?;
            return Err(if exists.is_some() {
                ScimStoreError::VersionMismatch
            } else {
                ScimStoreError::NotFound
            });
        }
        tx.commit().await.map_err(failed)
    }

    async fn delete_user(&self, tenant: TenantId, id: Uuid) -> Result<(), ScimStoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        // Its groups lose it (the foreign key cascades): their version and
        // lastModified change with them, in the same transaction.
        sqlx::query(
            "UPDATE tenancy_scim_groups g SET version = g.version + 1, updated_at = $3 \
             WHERE g.tenant_id = $1 AND EXISTS (SELECT 1 FROM tenancy_scim_group_members m \
             WHERE m.tenant_id = g.tenant_id AND m.group_id = g.id AND m.user_id = $2)",
        )
        .bind(tenant.as_uuid())
        .bind(id)
        .bind(tenancy_core::truncate_to_micros(OffsetDateTime::now_utc()))
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        let done = sqlx::query("DELETE FROM tenancy_scim_users WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        if done.rows_affected() == 0 {
            return Err(ScimStoreError::NotFound);
        }
        Ok(())
    }

    async fn insert_group(&self, group: &GroupRecord) -> Result<(), ScimStoreError> {
        self.pg_insert_group(group).await
    }

    async fn get_group(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<GroupRecord>, ScimStoreError> {
        self.pg_get_group(tenant, id).await
    }

    async fn list_groups(&self, tenant: TenantId) -> Result<Vec<GroupRecord>, ScimStoreError> {
        self.pg_list_groups(tenant).await
    }

    async fn groups_of(
        &self,
        tenant: TenantId,
        member: Uuid,
    ) -> Result<Vec<GroupRecord>, ScimStoreError> {
        self.pg_groups_of(tenant, member).await
    }

    async fn update_group(&self, group: &GroupRecord, expected: i64) -> Result<(), ScimStoreError> {
        self.pg_update_group(group, expected).await
    }

    async fn delete_group(
        &self,
        tenant: TenantId,
        id: Uuid,
        expected: i64,
    ) -> Result<(), ScimStoreError> {
        self.pg_delete_group(tenant, id, expected).await
    }

    async fn get_settings(
        &self,
        tenant: TenantId,
    ) -> Result<Option<TenantSettings>, ScimStoreError> {
        self.pg_get_settings(tenant).await
    }

    async fn put_settings(&self, settings: &TenantSettings) -> Result<(), ScimStoreError> {
        self.pg_put_settings(settings).await
    }
}
