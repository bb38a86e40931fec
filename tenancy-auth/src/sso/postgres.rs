//! The Postgres SSO store (features `sso` + `postgres`).
//!
//! Connections and policies are tenant-owned tables under row-level
//! security: every statement on them runs in a transaction scoped to its
//! tenant. Domains (found by name before the tenant is known), pending
//! sign-ins and identities are global tables whose statements name the
//! tenant where there is one. Migrations are embedded ([`migrator`]),
//! numbered 2700–2799.

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tenancy_core::postgres::begin_tenant_transaction;
use tenancy_core::{RoleName, SessionId, StoreError, TenantId, TokenHash, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use super::connection::{
    ConnectionId, ConnectionRef, DomainName, EmailDomain, EnterpriseConnection, ExternalIdentity,
    SealedSecret, SignInState, SsoPolicy,
};
use super::error::SsoStoreError;
use super::store::{MAX_PER_TENANT, SsoStore};

type Result<T> = std::result::Result<T, SsoStoreError>;

/// The embedded SSO migrations (versions 2700–2799). Run
/// [`tenancy_core::postgres::migrator`] first, or all through
/// [`tenancy_core::postgres::migrate_all`].
pub fn migrator() -> Migrator {
    tenancy_core::postgres::tenancy_migrator(sqlx::migrate!("./migrations-sso"))
}

/// The SSO store in Postgres. Cheap to clone.
#[derive(Clone)]
pub struct PgSsoStore {
    pool: PgPool,
}

impl std::fmt::Debug for PgSsoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSsoStore").finish_non_exhaustive()
    }
}

impl PgSsoStore {
    /// A store over `pool` (migrated with [`migrator`]).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn tenant_tx(&self, tenant: TenantId) -> Result<Transaction<'static, Postgres>> {
        begin_tenant_transaction(&self.pool, tenant)
            .await
            .map_err(failed)
    }
}

fn failed(error: sqlx::Error) -> SsoStoreError {
    if tenancy_core::postgres::is_missing_tenant(&error) {
        return SsoStoreError::TenantNotFound;
    }
    SsoStoreError::Store(StoreError::unavailable(error))
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

fn corrupt(what: &str) -> SsoStoreError {
    SsoStoreError::Store(StoreError::Corrupt(what.to_owned().into()))
}

fn hash_of(bytes: &[u8]) -> Result<TokenHash> {
    let array: [u8; 32] = bytes.try_into().map_err(|_| corrupt("hash length"))?;
    Ok(TokenHash::from_bytes(array))
}

fn connection_of(row: &PgRow) -> Result<EnterpriseConnection> {
    let role: String = row.try_get("default_role").map_err(failed)?;
    Ok(EnterpriseConnection {
        id: ConnectionId::from_uuid(row.try_get("id").map_err(failed)?),
        tenant_id: TenantId::from_uuid(row.try_get("tenant_id").map_err(failed)?),
        name: row.try_get("name").map_err(failed)?,
        issuer: row.try_get("issuer").map_err(failed)?,
        client_id: row.try_get("client_id").map_err(failed)?,
        client_secret: SealedSecret::from_stored(
            row.try_get::<String, _>("client_secret").map_err(failed)?,
        ),
        default_role: RoleName::new(role).map_err(|_| corrupt("default role"))?,
        create_users: row.try_get("create_users").map_err(failed)?,
        enabled: row.try_get("enabled").map_err(failed)?,
        created_at: row.try_get("created_at").map_err(failed)?,
        updated_at: row.try_get("updated_at").map_err(failed)?,
    })
}

fn domain_of(row: &PgRow) -> Result<EmailDomain> {
    let name: String = row.try_get("domain").map_err(failed)?;
    Ok(EmailDomain {
        tenant_id: TenantId::from_uuid(row.try_get("tenant_id").map_err(failed)?),
        domain: DomainName::new(&name).map_err(|_| corrupt("domain"))?,
        verification_token: row.try_get("verification_token").map_err(failed)?,
        verified_at: row.try_get("verified_at").map_err(failed)?,
        created_at: row.try_get("created_at").map_err(failed)?,
    })
}

fn identity_of(row: &PgRow) -> Result<ExternalIdentity> {
    Ok(ExternalIdentity {
        provider: row.try_get("provider").map_err(failed)?,
        subject: row.try_get("subject").map_err(failed)?,
        user_id: UserId::from_uuid(row.try_get("user_id").map_err(failed)?),
        created_at: row.try_get("created_at").map_err(failed)?,
    })
}

#[async_trait]
impl SsoStore for PgSsoStore {
    async fn insert_connection(&self, c: &EnterpriseConnection) -> Result<()> {
        let mut tx = self.tenant_tx(c.tenant_id).await?;
        sqlx::query(
            "INSERT INTO tenancy_sso_connections (tenant_id, id, name, issuer, client_id, \
             client_secret, default_role, create_users, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(c.tenant_id.as_uuid())
        .bind(c.id.as_uuid())
        .bind(&c.name)
        .bind(&c.issuer)
        .bind(&c.client_id)
        .bind(c.client_secret.as_stored())
        .bind(c.default_role.as_str())
        .bind(c.create_users)
        .bind(c.enabled)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)
    }

    async fn get_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<Option<EnterpriseConnection>> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row =
            sqlx::query("SELECT * FROM tenancy_sso_connections WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        row.as_ref().map(connection_of).transpose()
    }

    async fn list_connections(&self, tenant: TenantId) -> Result<Vec<EnterpriseConnection>> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows = sqlx::query(
            "SELECT * FROM tenancy_sso_connections WHERE tenant_id = $1 \
             ORDER BY created_at, id LIMIT $2",
        )
        .bind(tenant.as_uuid())
        .bind(MAX_PER_TENANT as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        rows.iter().map(connection_of).collect()
    }

    async fn update_connection(&self, c: &EnterpriseConnection) -> Result<()> {
        let mut tx = self.tenant_tx(c.tenant_id).await?;
        let done = sqlx::query(
            "UPDATE tenancy_sso_connections SET name = $3, issuer = $4, client_id = $5, \
             client_secret = $6, default_role = $7, create_users = $8, enabled = $9, updated_at = $10 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(c.tenant_id.as_uuid())
        .bind(c.id.as_uuid())
        .bind(&c.name)
        .bind(&c.issuer)
        .bind(&c.client_id)
        .bind(c.client_secret.as_stored())
        .bind(c.default_role.as_str())
        .bind(c.create_users)
        .bind(c.enabled)
        .bind(c.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        if done.rows_affected() == 0 {
            return Err(SsoStoreError::ConnectionNotFound);
        }
        tx.commit().await.map_err(failed)
    }

    async fn delete_connection(&self, tenant: TenantId, id: ConnectionId) -> Result<()> {
        let mut tx = self.tenant_tx(tenant).await?;
        let done =
            sqlx::query("DELETE FROM tenancy_sso_connections WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
        if done.rows_affected() == 0 {
            return Err(SsoStoreError::ConnectionNotFound);
        }
        tx.commit().await.map_err(failed)
    }

    async fn insert_domain(&self, d: &EmailDomain) -> Result<()> {
        sqlx::query(
            "INSERT INTO tenancy_sso_domains (domain, tenant_id, verification_token, verified_at, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(d.domain.as_str())
        .bind(d.tenant_id.as_uuid())
        .bind(&d.verification_token)
        .bind(d.verified_at)
        .bind(d.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                SsoStoreError::DomainTaken
            } else {
                failed(e)
            }
        })?;
        Ok(())
    }

    async fn find_domain(&self, domain: &DomainName) -> Result<Option<EmailDomain>> {
        let row = sqlx::query("SELECT * FROM tenancy_sso_domains WHERE domain = $1")
            .bind(domain.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(failed)?;
        row.as_ref().map(domain_of).transpose()
    }

    async fn list_domains(&self, tenant: TenantId) -> Result<Vec<EmailDomain>> {
        let rows = sqlx::query(
            "SELECT * FROM tenancy_sso_domains WHERE tenant_id = $1 ORDER BY domain LIMIT $2",
        )
        .bind(tenant.as_uuid())
        .bind(MAX_PER_TENANT as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        rows.iter().map(domain_of).collect()
    }

    async fn verify_domain(
        &self,
        tenant: TenantId,
        domain: &DomainName,
        at: OffsetDateTime,
    ) -> Result<EmailDomain> {
        let row = sqlx::query(
            "UPDATE tenancy_sso_domains SET verified_at = COALESCE(verified_at, $3) \
             WHERE tenant_id = $1 AND domain = $2 RETURNING *",
        )
        .bind(tenant.as_uuid())
        .bind(domain.as_str())
        .bind(at)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed)?
        .ok_or(SsoStoreError::DomainNotFound)?;
        domain_of(&row)
    }

    async fn delete_domain(&self, tenant: TenantId, domain: &DomainName) -> Result<()> {
        let done =
            sqlx::query("DELETE FROM tenancy_sso_domains WHERE tenant_id = $1 AND domain = $2")
                .bind(tenant.as_uuid())
                .bind(domain.as_str())
                .execute(&self.pool)
                .await
                .map_err(failed)?;
        if done.rows_affected() == 0 {
            return Err(SsoStoreError::DomainNotFound);
        }
        Ok(())
    }

    async fn policy(&self, tenant: TenantId) -> Result<SsoPolicy> {
        let mut tx = self.tenant_tx(tenant).await?;
        let require: Option<bool> =
            sqlx::query_scalar("SELECT require_sso FROM tenancy_sso_policies WHERE tenant_id = $1")
                .bind(tenant.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(SsoPolicy {
            require_sso: require.unwrap_or(false),
        })
    }

    async fn set_policy(&self, tenant: TenantId, policy: SsoPolicy) -> Result<()> {
        let mut tx = self.tenant_tx(tenant).await?;
        sqlx::query(
            "INSERT INTO tenancy_sso_policies (tenant_id, require_sso) VALUES ($1, $2) \
             ON CONFLICT (tenant_id) DO UPDATE SET require_sso = EXCLUDED.require_sso",
        )
        .bind(tenant.as_uuid())
        .bind(policy.require_sso)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)
    }

    async fn insert_state(&self, state: &SignInState) -> Result<()> {
        let (social, tenant, connection): (Option<&str>, Option<Uuid>, Option<Uuid>) =
            match &state.connection {
                ConnectionRef::Social(key) => (Some(key.as_str()), None, None),
                ConnectionRef::Enterprise { tenant_id, id } => {
                    (None, Some(tenant_id.as_uuid()), Some(id.as_uuid()))
                }
            };
        sqlx::query(
            "INSERT INTO tenancy_sso_states (state_hash, binding_hash, social_key, tenant_id, \
             connection_id, return_to, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(state.state_hash.as_bytes().as_slice())
        .bind(state.binding_hash.as_bytes().as_slice())
        .bind(social)
        .bind(tenant)
        .bind(connection)
        .bind(state.return_to.as_deref())
        .bind(state.created_at)
        .bind(state.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                SsoStoreError::StateTaken
            } else {
                failed(e)
            }
        })?;
        Ok(())
    }

    async fn take_state(
        &self,
        state_hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<SignInState>> {
        let row = sqlx::query("DELETE FROM tenancy_sso_states WHERE state_hash = $1 RETURNING *")
            .bind(state_hash.as_bytes().as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(failed)?;
        let Some(row) = row else { return Ok(None) };
        let social: Option<String> = row.try_get("social_key").map_err(failed)?;
        let tenant: Option<Uuid> = row.try_get("tenant_id").map_err(failed)?;
        let connection: Option<Uuid> = row.try_get("connection_id").map_err(failed)?;
        let connection = match (social, tenant, connection) {
            (Some(key), None, None) => ConnectionRef::Social(key),
            (None, Some(tenant), Some(id)) => ConnectionRef::Enterprise {
                tenant_id: TenantId::from_uuid(tenant),
                id: ConnectionId::from_uuid(id),
            },
            _ => return Err(corrupt("sign-in state connection")),
        };
        let state = SignInState {
            state_hash: hash_of(row.try_get::<&[u8], _>("state_hash").map_err(failed)?)?,
            binding_hash: hash_of(row.try_get::<&[u8], _>("binding_hash").map_err(failed)?)?,
            connection,
            return_to: row.try_get("return_to").map_err(failed)?,
            created_at: row.try_get("created_at").map_err(failed)?,
            expires_at: row.try_get("expires_at").map_err(failed)?,
        };
        Ok((state.expires_at > now).then_some(state))
    }

    async fn purge_states(&self, now: OffsetDateTime) -> Result<u64> {
        let done = sqlx::query("DELETE FROM tenancy_sso_states WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(failed)?;
        let sessions = sqlx::query("DELETE FROM tenancy_sso_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(failed)?;
        Ok(done.rows_affected() + sessions.rows_affected())
    }

    async fn insert_identity(&self, identity: &ExternalIdentity) -> Result<()> {
        sqlx::query(
            "INSERT INTO tenancy_sso_identities (provider, subject, user_id, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&identity.provider)
        .bind(&identity.subject)
        .bind(identity.user_id.as_uuid())
        .bind(identity.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                SsoStoreError::IdentityTaken
            } else {
                failed(e)
            }
        })?;
        Ok(())
    }

    async fn find_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<ExternalIdentity>> {
        let row = sqlx::query(
            "SELECT * FROM tenancy_sso_identities WHERE provider = $1 AND subject = $2",
        )
        .bind(provider)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed)?;
        row.as_ref().map(identity_of).transpose()
    }

    async fn user_identities(&self, user: UserId) -> Result<Vec<ExternalIdentity>> {
        let rows = sqlx::query(
            "SELECT * FROM tenancy_sso_identities WHERE user_id = $1 ORDER BY created_at, provider LIMIT 1000",
        )
        .bind(user.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        rows.iter().map(identity_of).collect()
    }

    async fn delete_provider_identities(&self, provider: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM tenancy_sso_identities WHERE provider = $1")
            .bind(provider)
            .execute(&self.pool)
            .await
            .map_err(failed)?;
        Ok(done.rows_affected())
    }

    async fn insert_sso_session(
        &self,
        session: SessionId,
        expires_at: OffsetDateTime,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO tenancy_sso_sessions (session_id, expires_at) VALUES ($1, $2) \
             ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(session.as_uuid())
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn is_sso_session(&self, session: SessionId) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM tenancy_sso_sessions WHERE session_id = $1")
            .bind(session.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(failed)?;
        Ok(row.is_some())
    }
}
