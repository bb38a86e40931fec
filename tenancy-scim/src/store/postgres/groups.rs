//! Groups and per-tenant settings in Postgres: `tenancy_scim_groups`,
//! `tenancy_scim_group_members` (members reference the user records, so
//! deleting a record removes it from its groups) and
//! `tenancy_scim_settings`, all under row-level security; every statement
//! also names the tenant in its `WHERE` clause.

use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use tenancy_core::TenantId;
use uuid::Uuid;

use super::{PgScimStore, corrupt, failed};
use crate::error::ScimStoreError;
use crate::module::Deprovision;
use crate::store::{GroupRecord, GroupRole, TenantSettings};

macro_rules! group_select {
    () => {
        "SELECT g.tenant_id, g.id, g.display_name, g.external_id, g.version, \
     g.created_at, g.updated_at, \
     COALESCE((SELECT array_agg(m.user_id ORDER BY m.user_id) FROM tenancy_scim_group_members m \
               WHERE m.tenant_id = g.tenant_id AND m.group_id = g.id), '{}') AS members \
     FROM tenancy_scim_groups g WHERE g.tenant_id = $1"
    };
}

fn group_from(row: &PgRow) -> Result<GroupRecord, ScimStoreError> {
    Ok(GroupRecord {
        id: row.try_get("id").map_err(failed)?,
        tenant_id: TenantId::from_uuid(row.try_get("tenant_id").map_err(failed)?),
        display_name: row.try_get("display_name").map_err(failed)?,
        external_id: row.try_get("external_id").map_err(failed)?,
        members: row.try_get("members").map_err(failed)?,
        version: row.try_get("version").map_err(failed)?,
        created_at: row.try_get("created_at").map_err(failed)?,
        updated_at: row.try_get("updated_at").map_err(failed)?,
    })
}

/// Writes the group's member rows (after its old ones were deleted).
async fn insert_members(
    tx: &mut Transaction<'static, Postgres>,
    group: &GroupRecord,
) -> Result<(), ScimStoreError> {
    let mut members = group.members.clone();
    members.sort_unstable();
    members.dedup();
    sqlx::query(
        "INSERT INTO tenancy_scim_group_members (tenant_id, group_id, user_id) \
         SELECT $1, $2, unnest($3::uuid[])",
    )
    .bind(group.tenant_id.as_uuid())
    .bind(group.id)
    .bind(&members)
    .execute(&mut **tx)
    .await
    .map_err(|error| {
        if error
            .as_database_error()
            .is_some_and(|db| db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
        {
            ScimStoreError::UnknownMember
        } else {
            failed(error)
        }
    })?;
    Ok(())
}

impl PgScimStore {
    async fn groups_query(
        &self,
        tenant: TenantId,
        sql: &'static str,
        member: Option<Uuid>,
    ) -> Result<Vec<GroupRecord>, ScimStoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let mut query = sqlx::query(sql).bind(tenant.as_uuid());
        if let Some(member) = member {
            query = query.bind(member);
        }
        let rows = query.fetch_all(&mut *tx).await.map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        rows.iter().map(group_from).collect()
    }

    pub(super) async fn pg_insert_group(&self, group: &GroupRecord) -> Result<(), ScimStoreError> {
        let mut tx = self.tenant_tx(group.tenant_id).await?;
        sqlx::query(
            "INSERT INTO tenancy_scim_groups \
             (tenant_id, id, display_name, external_id, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(group.tenant_id.as_uuid())
        .bind(group.id)
        .bind(&group.display_name)
        .bind(&group.external_id)
        .bind(group.version)
        .bind(group.created_at)
        .bind(group.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        insert_members(&mut tx, group).await?;
        tx.commit().await.map_err(failed)
    }

    pub(super) async fn pg_get_group(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<GroupRecord>, ScimStoreError> {
        Ok(self
            .groups_query(tenant, concat!(group_select!(), " AND g.id = $2"), Some(id))
            .await?
            .into_iter()
            .next())
    }

    pub(super) async fn pg_list_groups(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<GroupRecord>, ScimStoreError> {
        self.groups_query(
            tenant,
            concat!(group_select!(), " ORDER BY g.created_at, g.id"),
            None,
        )
        .await
    }

    pub(super) async fn pg_groups_of(
        &self,
        tenant: TenantId,
        member: Uuid,
    ) -> Result<Vec<GroupRecord>, ScimStoreError> {
        self.groups_query(
            tenant,
            concat!(
                group_select!(),
                " AND EXISTS (SELECT 1 FROM tenancy_scim_group_members m \
                 WHERE m.tenant_id = g.tenant_id AND m.group_id = g.id AND m.user_id = $2) \
                 ORDER BY g.created_at, g.id"
            ),
            Some(member),
        )
        .await
    }

    pub(super) async fn pg_update_group(
        &self,
        group: &GroupRecord,
        expected: i64,
    ) -> Result<(), ScimStoreError> {
        let mut tx = self.tenant_tx(group.tenant_id).await?;
        let done = sqlx::query(
            "UPDATE tenancy_scim_groups SET display_name = $4, external_id = $5, version = $6, \
             updated_at = $7 WHERE tenant_id = $1 AND id = $2 AND version = $3",
        )
        .bind(group.tenant_id.as_uuid())
        .bind(group.id)
        .bind(expected)
        .bind(&group.display_name)
        .bind(&group.external_id)
        .bind(group.version)
        .bind(group.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        if done.rows_affected() == 0 {
            let exists =
                sqlx::query("SELECT 1 FROM tenancy_scim_groups WHERE tenant_id = $1 AND id = $2")
                    .bind(group.tenant_id.as_uuid())
                    .bind(group.id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(failed)?;
            return Err(if exists.is_some() {
                ScimStoreError::VersionMismatch
            } else {
                ScimStoreError::NotFound
            });
        }
        sqlx::query(
            "DELETE FROM tenancy_scim_group_members WHERE tenant_id = $1 AND group_id = $2",
        )
        .bind(group.tenant_id.as_uuid())
        .bind(group.id)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        insert_members(&mut tx, group).await?;
        tx.commit().await.map_err(failed)
    }

    pub(super) async fn pg_delete_group(
        &self,
        tenant: TenantId,
        id: Uuid,
        expected: i64,
    ) -> Result<(), ScimStoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let done = sqlx::query(
            "DELETE FROM tenancy_scim_groups WHERE tenant_id = $1 AND id = $2 AND version = $3",
        )
        .bind(tenant.as_uuid())
        .bind(id)
        .bind(expected)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        if done.rows_affected() == 0 {
            let exists =
                sqlx::query("SELECT 1 FROM tenancy_scim_groups WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.as_uuid())
                    .bind(id)
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

    pub(super) async fn pg_get_settings(
        &self,
        tenant: TenantId,
    ) -> Result<Option<TenantSettings>, ScimStoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row = sqlx::query(
            "SELECT deprovision, group_roles, updated_at FROM tenancy_scim_settings \
             WHERE tenant_id = $1",
        )
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mode: String = row.try_get("deprovision").map_err(failed)?;
        let roles: serde_json::Value = row.try_get("group_roles").map_err(failed)?;
        Ok(Some(TenantSettings {
            tenant_id: tenant,
            deprovision: Deprovision::parse(&mode).ok_or_else(|| corrupt("scim deprovision"))?,
            group_roles: serde_json::from_value::<Vec<GroupRole>>(roles)
                .map_err(|_| corrupt("scim group roles"))?,
            updated_at: row.try_get("updated_at").map_err(failed)?,
        }))
    }

    pub(super) async fn pg_put_settings(
        &self,
        settings: &TenantSettings,
    ) -> Result<(), ScimStoreError> {
        let roles =
            serde_json::to_value(&settings.group_roles).map_err(|_| corrupt("scim group roles"))?;
        let mut tx = self.tenant_tx(settings.tenant_id).await?;
        sqlx::query(
            "INSERT INTO tenancy_scim_settings (tenant_id, deprovision, group_roles, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE SET \
             deprovision = EXCLUDED.deprovision, group_roles = EXCLUDED.group_roles, \
             updated_at = EXCLUDED.updated_at",
        )
        .bind(settings.tenant_id.as_uuid())
        .bind(settings.deprovision.as_str())
        .bind(roles)
        .bind(settings.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)
    }
}
