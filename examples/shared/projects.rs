//! The projects of the example apps (axum and actix share this file):
//! where they live (memory, or a Postgres table under tenancy's row-level
//! security) and the tenant defaults the host seeds.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tenancy::http::authz::{AttrKey, PolicyDocument, Resource};
use tenancy::http::{Problem, RequestContext, Tenancy};
use tenancy::{AuditContext, Cursor, Page, PageRequest, TenantId};
use uuid::Uuid;

/// The app's permissions, declared once.
pub(crate) const PERMISSIONS: [&str; 4] = [
    "projects:read",
    "projects:create",
    "projects:update",
    "projects:delete",
];

/// A project.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Project {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    /// Who created it: a user id, or an API key id.
    pub(crate) owner: String,
}

/// The body of `POST /projects` and `PUT /projects/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProjectInput {
    pub(crate) name: String,
}

pub(crate) enum Projects {
    Memory(Mutex<BTreeMap<(TenantId, Uuid), Project>>),
    #[cfg(feature = "postgres")]
    Postgres(tenancy::postgres::sqlx::PgPool),
}

pub(crate) fn valid_name(raw: &str) -> Result<String, Problem> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(Problem::invalid(
            "name",
            "must be 1 to 200 characters, without control characters",
        ));
    }
    Ok(name.to_owned())
}

/// Seeds a tenant's default policy on first use: members may change and
/// delete the projects they created (owners and admins may anyway).
pub(crate) async fn seed_policy(tenancy: &Tenancy, tenant: TenantId) -> Result<(), Problem> {
    let policy: PolicyDocument = serde_json::from_value(json!({
        "id": "own-projects",
        "description": "members change and delete the projects they created",
        "statements": [{
            "sid": "own",
            "effect": "allow",
            "actions": ["projects:update", "projects:delete"],
            "resource_types": ["project"],
            "condition": "resource.owner == principal.id"
        }]
    }))
    .map_err(|e| Problem::internal(&e))?;
    tenancy
        .seed_policy(tenant, &policy, &AuditContext::system())
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    Ok(())
}

impl Projects {
    /// Loads a project of the caller's tenant (another tenant's is not
    /// found) and checks `action` on it, with its owner as an attribute for
    /// the policy.
    pub(crate) async fn guarded(
        &self,
        ctx: &RequestContext,
        id: &str,
        action: &str,
    ) -> Result<Project, Problem> {
        let id = id.parse().map_err(|_| Problem::not_found())?;
        let project = self
            .get(ctx.tenant_id(), id)
            .await?
            .ok_or_else(Problem::not_found)?;
        let owner = AttrKey::new("owner").map_err(|e| Problem::internal(&e))?;
        let resource = Resource::new("project")
            .with_id(id.to_string().as_str())
            .in_tenant(ctx.tenant_id())
            .with_attribute(owner, project.owner.as_str());
        ctx.authorize(action, &resource, None).await?;
        Ok(project)
    }

    pub(crate) fn memory() -> Self {
        Projects::Memory(Mutex::new(BTreeMap::new()))
    }

    /// Creates the `projects` table with tenant isolation (run as the
    /// tables' owner): every query runs in a transaction scoped to the
    /// caller's tenant.
    #[cfg(feature = "postgres")]
    pub(crate) async fn migrate(
        owner: &tenancy::postgres::sqlx::PgPool,
    ) -> Result<(), Box<dyn std::error::Error>> {
        use tenancy::postgres::sqlx;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS projects (id uuid PRIMARY KEY, tenant_id uuid NOT NULL, \
             name text NOT NULL, owner text NOT NULL)",
        )
        .execute(owner)
        .await?;
        // Each list reads one tenant's projects in id order: without this
        // index Postgres walks the primary key through every tenant's rows.
        sqlx::query("CREATE INDEX IF NOT EXISTS projects_tenant_id ON projects (tenant_id, id)")
            .execute(owner)
            .await?;
        let mut conn = owner.acquire().await?;
        tenancy::postgres::enable_tenant_rls(&mut conn, "projects", "tenant_id").await?;
        Ok(())
    }

    /// The projects on Postgres, read and written through `pool`.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(pool: tenancy::postgres::sqlx::PgPool) -> Self {
        Projects::Postgres(pool)
    }

    fn rows(
        map: &Mutex<BTreeMap<(TenantId, Uuid), Project>>,
    ) -> std::sync::MutexGuard<'_, BTreeMap<(TenantId, Uuid), Project>> {
        map.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One page of the tenant's projects in id order (ids are UUIDv7, so
    /// oldest first), continuing after the page's cursor like the SDK's
    /// own lists: a project created meanwhile is never listed twice.
    pub(crate) async fn list(
        &self,
        tenant: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Project>, Problem> {
        let after: Option<Uuid> = page
            .after_key("projects")
            .map_err(|e| Problem::invalid("cursor", e.to_string()))?;
        let wanted = page.size.get() + 1;
        let rows = match self {
            Projects::Memory(map) => {
                let start = (tenant, after.unwrap_or_else(Uuid::nil));
                Self::rows(map)
                    .range((Bound::Excluded(start), Bound::Unbounded))
                    .take_while(|((t, _), _)| *t == tenant)
                    .take(wanted)
                    .map(|(_, p)| p.clone())
                    .collect()
            }
            #[cfg(feature = "postgres")]
            Projects::Postgres(pool) => {
                let mut tx = scoped(pool, tenant).await?;
                let rows: Vec<(Uuid, String, String)> = tenancy::postgres::sqlx::query_as(
                    "SELECT id, name, owner FROM projects WHERE tenant_id = $1 \
                     AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
                )
                .bind(tenant.as_uuid())
                .bind(after)
                .bind(i64::try_from(wanted).unwrap_or(i64::MAX))
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| Problem::unavailable(&e))?;
                rows.into_iter()
                    .map(|(id, name, owner)| Project { id, name, owner })
                    .collect()
            }
        };
        Ok(Page::from_overfetch(rows, page.size, |p| {
            Cursor::encode("projects", p.id)
        }))
    }

    pub(crate) async fn get(&self, tenant: TenantId, id: Uuid) -> Result<Option<Project>, Problem> {
        match self {
            Projects::Memory(map) => Ok(Self::rows(map).get(&(tenant, id)).cloned()),
            #[cfg(feature = "postgres")]
            Projects::Postgres(pool) => {
                let mut tx = scoped(pool, tenant).await?;
                let row: Option<(Uuid, String, String)> = tenancy::postgres::sqlx::query_as(
                    "SELECT id, name, owner FROM projects WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.as_uuid())
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| Problem::unavailable(&e))?;
                Ok(row.map(|(id, name, owner)| Project { id, name, owner }))
            }
        }
    }

    pub(crate) async fn create(
        &self,
        tenant: TenantId,
        name: String,
        owner: String,
    ) -> Result<Project, Problem> {
        let project = Project {
            id: Uuid::now_v7(),
            name,
            owner,
        };
        match self {
            Projects::Memory(map) => {
                Self::rows(map).insert((tenant, project.id), project.clone());
            }
            #[cfg(feature = "postgres")]
            Projects::Postgres(pool) => {
                let mut tx = scoped(pool, tenant).await?;
                tenancy::postgres::sqlx::query(
                    "INSERT INTO projects (id, tenant_id, name, owner) VALUES ($1, $2, $3, $4)",
                )
                .bind(project.id)
                .bind(tenant.as_uuid())
                .bind(&project.name)
                .bind(&project.owner)
                .execute(&mut *tx)
                .await
                .map_err(|e| Problem::unavailable(&e))?;
                tx.commit().await.map_err(|e| Problem::unavailable(&e))?;
            }
        }
        Ok(project)
    }

    pub(crate) async fn rename(
        &self,
        tenant: TenantId,
        id: Uuid,
        name: String,
    ) -> Result<Project, Problem> {
        match self {
            Projects::Memory(map) => {
                let mut rows = Self::rows(map);
                let project = rows.get_mut(&(tenant, id)).ok_or_else(Problem::not_found)?;
                project.name = name;
                Ok(project.clone())
            }
            #[cfg(feature = "postgres")]
            Projects::Postgres(pool) => {
                let mut tx = scoped(pool, tenant).await?;
                let row: Option<(Uuid, String, String)> = tenancy::postgres::sqlx::query_as(
                    "UPDATE projects SET name = $3 WHERE tenant_id = $1 AND id = $2 RETURNING id, name, owner",
                )
                .bind(tenant.as_uuid())
                .bind(id)
                .bind(&name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| Problem::unavailable(&e))?;
                tx.commit().await.map_err(|e| Problem::unavailable(&e))?;
                row.map(|(id, name, owner)| Project { id, name, owner })
                    .ok_or_else(Problem::not_found)
            }
        }
    }

    pub(crate) async fn delete(&self, tenant: TenantId, id: Uuid) -> Result<(), Problem> {
        match self {
            Projects::Memory(map) => {
                Self::rows(map).remove(&(tenant, id));
                Ok(())
            }
            #[cfg(feature = "postgres")]
            Projects::Postgres(pool) => {
                let mut tx = scoped(pool, tenant).await?;
                tenancy::postgres::sqlx::query(
                    "DELETE FROM projects WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.as_uuid())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| Problem::unavailable(&e))?;
                tx.commit().await.map_err(|e| Problem::unavailable(&e))
            }
        }
    }
}

#[cfg(feature = "postgres")]
async fn scoped(
    pool: &tenancy::postgres::sqlx::PgPool,
    tenant: TenantId,
) -> Result<tenancy::postgres::sqlx::Transaction<'static, tenancy::postgres::sqlx::Postgres>, Problem>
{
    tenancy::postgres::begin_tenant_transaction(pool, tenant)
        .await
        .map_err(|e| Problem::unavailable(&e))
}

/// The key that encrypts the signing keys stored in Postgres, from
/// `KEY_ENCRYPTION_KEY`: 32 bytes in base64 (`openssl rand -base64 32`),
/// kept outside the database.
#[cfg(feature = "postgres")]
pub(crate) fn key_encryption_from_env()
-> Result<tenancy::http::auth::KeyEncryption, Box<dyn std::error::Error>> {
    use tenancy::http::auth::{KeyEncryption, KeyEncryptionKey};
    let text = std::env::var("KEY_ENCRYPTION_KEY")
        .map_err(|_| "set KEY_ENCRYPTION_KEY (openssl rand -base64 32) to run on Postgres")?;
    Ok(KeyEncryption::key(KeyEncryptionKey::from_base64(
        "example-1",
        &text,
    )?))
}

/// Adds SCIM provisioning (`/scim/v2`, feature `scim`) on in-memory stores.
pub(crate) fn with_scim(builder: tenancy::http::TenancyBuilder) -> tenancy::http::TenancyBuilder {
    #[cfg(feature = "scim")]
    let builder = builder.module(tenancy::scim::Scim::memory());
    builder
}

/// On Postgres: migrates tenancy's tables and the projects table as the
/// role of `DATABASE_URL` (their owner); when `APP_DATABASE_URL` names
/// another role, grants it the rows it needs (never `UPDATE`, `DELETE` or
/// `TRUNCATE` on the audit trail) and serves as that role, which cannot
/// alter the tables, switch the audit trigger off or rewrite history.
/// Returns the services and the projects.
#[cfg(feature = "postgres")]
pub(crate) async fn on_postgres(
    builder: tenancy::http::TenancyBuilder,
    owner_url: &str,
) -> Result<(Tenancy, Projects), Box<dyn std::error::Error>> {
    use tenancy::postgres::sqlx::{self, PgPool};
    let owner = PgPool::connect(owner_url).await?;
    let app_url = std::env::var("APP_DATABASE_URL").ok();
    let Some(app_url) = app_url.filter(|url| url != owner_url) else {
        // One role for everything: the builder migrates at startup, then
        // the projects table (its row-level security uses tenancy's function).
        #[cfg(feature = "scim")]
        let builder = builder.module(tenancy::scim::Scim::postgres(owner.clone()));
        let tenancy = builder.postgres(owner.clone()).build().await?;
        Projects::migrate(&owner).await?;
        return Ok((tenancy, Projects::postgres(owner)));
    };
    // SCIM provisioning keeps its records through the serving role.
    #[cfg(feature = "scim")]
    let builder = builder.module(tenancy::scim::Scim::postgres(PgPool::connect_lazy(
        &app_url,
    )?));
    builder.migrate_with(&owner).await?;
    Projects::migrate(&owner).await?;
    let app = PgPool::connect(&app_url).await?;
    let (role,): (String,) = sqlx::query_as("SELECT current_user::text")
        .fetch_one(&app)
        .await?;
    let role = format!("\"{}\"", role.replace('"', "\"\""));
    for statement in [
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"),
        format!("REVOKE UPDATE, DELETE, TRUNCATE ON tenancy_audit_events FROM {role}"),
        format!("REVOKE ALL ON _tenancy_migrations FROM {role}"),
    ] {
        // The role name comes from the database itself, quoted above.
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&owner)
            .await?;
    }
    owner.close().await;
    let tenancy = builder.migrate(false).postgres(app.clone()).build().await?;
    Ok((tenancy, Projects::postgres(app)))
}
