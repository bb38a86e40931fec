//! [`PgOAuthStore`]: the provider's records in Postgres (migrations
//! `migrations-oidc/`, versions 2600-2699).
//!
//! Row-level security covers consents. Clients, codes and grants are
//! exempt, as tenancy-auth's API keys and sessions are: each is found by a
//! credential before a tenant is known (client id, code hash, session id),
//! global clients have no tenant, and purging crosses tenants. Every
//! tenant-facing statement on clients names the tenant in its `WHERE`
//! (migration 2601 records this on the tables).

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgPool, PgRow};
use tenancy_core::{
    Actor, Conflict, Cursor, Entity, OAuthClientId, Page, PageRequest, SessionId, StoreError,
    TenantId, TokenHash, UserId,
};
use time::OffsetDateTime;

use super::store::OAuthStore;
use super::types::{
    AuthorizationCode, AuthorizationRequest, ClientId, ClientKind, CodeRedemption, Consent,
    GrantType, Interaction, InteractionId, OAuthClient, RedirectUri, SessionGrant,
};
use crate::keys::KeyAlgorithm;
use crate::postgres::{PgKeyTable, corrupt, get, hash_of};
use crate::store::KeyStore;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The provider's embedded migrations (2600-2699; missing versions
/// ignored, as every tenancy crate's).
pub fn migrator() -> Migrator {
    tenancy_core::postgres::tenancy_migrator(sqlx::migrate!("./migrations-oidc"))
}

/// The provider's records in Postgres.
#[derive(Clone)]
pub struct PgOAuthStore {
    pool: PgPool,
    keys: Arc<PgKeyTable>,
}

impl std::fmt::Debug for PgOAuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOAuthStore").finish_non_exhaustive()
    }
}

impl PgOAuthStore {
    /// A store over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            keys: Arc::new(PgKeyTable::new(pool.clone(), "tenancy_oidc_signing_keys")),
            pool,
        }
    }

    /// The provider's migrations, to run with the others.
    pub fn migrator() -> Migrator {
        migrator()
    }

    /// Applies tenancy-core's, tenancy-auth's and the provider's migrations.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        tenancy_core::postgres::migrate_all(
            &self.pool,
            [
                tenancy_core::postgres::migrator(),
                crate::postgres::migrator(),
                migrator(),
            ],
        )
        .await
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn db_error(error: sqlx::Error) -> StoreError {
    if let Some(db) = error.as_database_error() {
        let constraint = db.constraint().unwrap_or_default();
        match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => {
                return match constraint {
                    "tenancy_oauth_clients_pkey" => {
                        StoreError::Conflict(Conflict::Id(Entity::OAuthClient))
                    }
                    _ => StoreError::Conflict(Conflict::Id(Entity::Session)),
                };
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                if constraint.ends_with("_tenant_fkey") {
                    return StoreError::NotFound(Entity::Tenant);
                }
                if constraint.ends_with("_client_fkey") {
                    return StoreError::NotFound(Entity::OAuthClient);
                }
            }
            _ => {}
        }
    }
    StoreError::unavailable(error)
}

macro_rules! client_columns {
    () => {
        "id, tenant_id, name, kind, redirect_uris, post_logout_redirect_uris, grant_types, scopes, first_party, id_token_alg, secret_hash, created_by_kind, created_by_id, created_at, updated_at, jwks"
    };
}

fn client_from_row(row: &PgRow) -> Result<OAuthClient> {
    let uris = |column: &str| -> Result<Vec<RedirectUri>> {
        let texts: Vec<String> = get(row, column)?;
        texts
            .iter()
            .map(|t| RedirectUri::parse(t).map_err(|_| corrupt("redirect uri")))
            .collect()
    };
    let grants: Vec<String> = get(row, "grant_types")?;
    let kind: String = get(row, "kind")?;
    let alg: String = get(row, "id_token_alg")?;
    let secret: Option<Vec<u8>> = get(row, "secret_hash")?;
    let creator_kind: String = get(row, "created_by_kind")?;
    let creator_id: Option<uuid::Uuid> = get(row, "created_by_id")?;
    Ok(OAuthClient {
        id: ClientId::from_id(OAuthClientId::from_uuid(get(row, "id")?)),
        tenant_id: get::<Option<uuid::Uuid>>(row, "tenant_id")?.map(TenantId::from_uuid),
        name: get(row, "name")?,
        kind: ClientKind::parse(&kind).ok_or_else(|| corrupt("client kind"))?,
        redirect_uris: uris("redirect_uris")?,
        post_logout_redirect_uris: uris("post_logout_redirect_uris")?,
        grant_types: grants
            .iter()
            .map(|g| GrantType::parse(g).ok_or_else(|| corrupt("grant type")))
            .collect::<Result<_>>()?,
        scopes: get(row, "scopes")?,
        first_party: get(row, "first_party")?,
        id_token_signed_response_alg: KeyAlgorithm::from_str(&alg)
            .map_err(|_| corrupt("key algorithm"))?,
        secret_hash: secret
            .map(|bytes| {
                <[u8; 32]>::try_from(bytes)
                    .map(TokenHash::from_bytes)
                    .map_err(|_| corrupt("hash"))
            })
            .transpose()?,
        created_by: Actor::from_parts(&creator_kind, creator_id).ok_or_else(|| corrupt("actor"))?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        jwks: get(row, "jwks")?,
    })
}

fn texts(uris: &[RedirectUri]) -> Vec<String> {
    uris.iter().map(|u| u.as_str().to_owned()).collect()
}

fn grant_names(grants: &[GrantType]) -> Vec<String> {
    grants.iter().map(|g| g.as_str().to_owned()).collect()
}

fn interaction_from_row(row: &PgRow) -> Result<Interaction> {
    let request: Value = get(row, "request")?;
    let request: AuthorizationRequest =
        serde_json::from_value(request).map_err(|_| corrupt("authorization request"))?;
    let id: String = get(row, "id")?;
    let session: Option<uuid::Uuid> = get(row, "login_session")?;
    let at: Option<OffsetDateTime> = get(row, "logged_in_at")?;
    Ok(Interaction {
        id: InteractionId::parse(&id).ok_or_else(|| corrupt("interaction id"))?,
        request,
        logged_in: session
            .zip(at)
            .map(|(session, at)| (SessionId::from_uuid(session), at)),
        consent_user: get::<Option<uuid::Uuid>>(row, "consent_user")?.map(UserId::from_uuid),
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
    })
}

macro_rules! code_columns {
    () => {
        "code_hash, client_id, redirect_uri, code_challenge, nonce, user_id, tenant_id, browser_session, auth_time, scopes, created_at, expires_at, redeemed_at, issued_session"
    };
}

fn code_from_row(row: &PgRow) -> Result<AuthorizationCode> {
    Ok(AuthorizationCode {
        code_hash: hash_of(row, "code_hash")?,
        client_id: ClientId::from_id(OAuthClientId::from_uuid(get(row, "client_id")?)),
        redirect_uri: get(row, "redirect_uri")?,
        code_challenge: get(row, "code_challenge")?,
        nonce: get(row, "nonce")?,
        user_id: UserId::from_uuid(get(row, "user_id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        browser_session: SessionId::from_uuid(get(row, "browser_session")?),
        auth_time: get(row, "auth_time")?,
        scopes: get(row, "scopes")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        redeemed_at: get(row, "redeemed_at")?,
        issued_session: get::<Option<uuid::Uuid>>(row, "issued_session")?.map(SessionId::from_uuid),
    })
}

fn grant_from_row(row: &PgRow) -> Result<SessionGrant> {
    Ok(SessionGrant {
        session_id: SessionId::from_uuid(get(row, "session_id")?),
        client_id: ClientId::from_id(OAuthClientId::from_uuid(get(row, "client_id")?)),
        user_id: UserId::from_uuid(get(row, "user_id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        scopes: get(row, "scopes")?,
        auth_time: get(row, "auth_time")?,
        created_at: get(row, "created_at")?,
    })
}

/// Opens a transaction scoped to `tenant` (row-level security).
async fn scoped(
    pool: &PgPool,
    tenant: TenantId,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    sqlx::query(
        "SELECT set_config('tenancy.tenant_id', $1, true), set_config('tenancy.user_id', '', true)",
    )
    .bind(tenant.to_string())
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    Ok(tx)
}

#[async_trait]
impl OAuthStore for PgOAuthStore {
    async fn insert_client(&self, client: &OAuthClient) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO tenancy_oauth_clients (",
            client_columns!(),
            ") \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
        .bind(client.id.id().as_uuid())
        .bind(client.tenant_id.map(|t| t.as_uuid()))
        .bind(&client.name)
        .bind(client.kind.as_str())
        .bind(texts(&client.redirect_uris))
        .bind(texts(&client.post_logout_redirect_uris))
        .bind(grant_names(&client.grant_types))
        .bind(&client.scopes)
        .bind(client.first_party)
        .bind(client.id_token_signed_response_alg.as_str())
        .bind(client.secret_hash.as_ref().map(|h| h.as_bytes().to_vec()))
        .bind(client.created_by.kind())
        .bind(client.created_by.id())
        .bind(client.created_at)
        .bind(client.updated_at)
        .bind(&client.jwks)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn get_client(&self, id: &ClientId) -> Result<OAuthClient> {
        let row = sqlx::query(concat!(
            "SELECT ",
            client_columns!(),
            " FROM tenancy_oauth_clients WHERE id = $1"
        ))
        .bind(id.id().as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .ok_or(StoreError::NotFound(Entity::OAuthClient))?;
        client_from_row(&row)
    }

    async fn list_clients(
        &self,
        tenant_id: Option<TenantId>,
        page: &PageRequest,
    ) -> Result<Page<OAuthClient>> {
        let after: Option<OAuthClientId> = page.after_key("oauth-clients")?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            client_columns!(),
            " FROM tenancy_oauth_clients \
             WHERE tenant_id IS NOT DISTINCT FROM $1 AND ($2::uuid IS NULL OR id > $2) \
             ORDER BY id LIMIT $3"
        ))
        .bind(tenant_id.map(|t| t.as_uuid()))
        .bind(after.map(|id| id.as_uuid()))
        .bind(page.size.get() as i64 + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let items = rows
            .iter()
            .map(client_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.size, |c| {
            Cursor::encode("oauth-clients", c.id.id())
        }))
    }

    async fn update_client(&self, client: &OAuthClient) -> Result<()> {
        let done = sqlx::query(
            "UPDATE tenancy_oauth_clients SET name = $3, redirect_uris = $4, \
             post_logout_redirect_uris = $5, grant_types = $6, scopes = $7, first_party = $8, \
             id_token_alg = $9, created_by_kind = $10, created_by_id = $11, updated_at = $12, \
             kind = $13, jwks = $14 \
             WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2",
        )
        .bind(client.id.id().as_uuid())
        .bind(client.tenant_id.map(|t| t.as_uuid()))
        .bind(&client.name)
        .bind(texts(&client.redirect_uris))
        .bind(texts(&client.post_logout_redirect_uris))
        .bind(grant_names(&client.grant_types))
        .bind(&client.scopes)
        .bind(client.first_party)
        .bind(client.id_token_signed_response_alg.as_str())
        .bind(client.created_by.kind())
        .bind(client.created_by.id())
        .bind(client.updated_at)
        .bind(client.kind.as_str())
        .bind(&client.jwks)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(Entity::OAuthClient));
        }
        Ok(())
    }

    async fn set_client_secret(&self, client: &OAuthClient) -> Result<()> {
        let done = sqlx::query(
            "UPDATE tenancy_oauth_clients SET secret_hash = $3, created_by_kind = $4, \
             created_by_id = $5, updated_at = $6 \
             WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2",
        )
        .bind(client.id.id().as_uuid())
        .bind(client.tenant_id.map(|t| t.as_uuid()))
        .bind(client.secret_hash.as_ref().map(|h| h.as_bytes().to_vec()))
        .bind(client.created_by.kind())
        .bind(client.created_by.id())
        .bind(client.updated_at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(Entity::OAuthClient));
        }
        Ok(())
    }

    async fn delete_client(
        &self,
        tenant_id: Option<TenantId>,
        id: &ClientId,
    ) -> Result<Vec<SessionId>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let found = sqlx::query(
            "SELECT 1 FROM tenancy_oauth_clients WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2 FOR UPDATE",
        )
        .bind(id.id().as_uuid())
        .bind(tenant_id.map(|t| t.as_uuid()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if found.is_none() {
            return Err(StoreError::NotFound(Entity::OAuthClient));
        }
        let sessions: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT session_id FROM tenancy_oauth_grants WHERE client_id = $1 ORDER BY session_id",
        )
        .bind(id.id().as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query("DELETE FROM tenancy_oauth_clients WHERE id = $1")
            .bind(id.id().as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(sessions.into_iter().map(SessionId::from_uuid).collect())
    }

    async fn insert_interaction(&self, interaction: &Interaction) -> Result<()> {
        let request =
            serde_json::to_value(&interaction.request).map_err(StoreError::unavailable)?;
        sqlx::query(
            "INSERT INTO tenancy_oauth_interactions \
             (id, client_id, request, login_session, logged_in_at, consent_user, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(interaction.id.as_str())
        .bind(interaction.request.client_id.id().as_uuid())
        .bind(request)
        .bind(interaction.logged_in.map(|(s, _)| s.as_uuid()))
        .bind(interaction.logged_in.map(|(_, at)| at))
        .bind(interaction.consent_user.map(|u| u.as_uuid()))
        .bind(interaction.created_at)
        .bind(interaction.expires_at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn get_interaction(
        &self,
        id: &InteractionId,
        now: OffsetDateTime,
    ) -> Result<Option<Interaction>> {
        let row = sqlx::query(
            "SELECT id, request, login_session, logged_in_at, consent_user, created_at, expires_at \
             FROM tenancy_oauth_interactions WHERE id = $1 AND expires_at > $2",
        )
        .bind(id.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(interaction_from_row).transpose()
    }

    async fn update_interaction(&self, interaction: &Interaction) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tenancy_oauth_interactions SET login_session = $2, logged_in_at = $3, consent_user = $4 \
             WHERE id = $1",
        )
        .bind(interaction.id.as_str())
        .bind(interaction.logged_in.map(|(s, _)| s.as_uuid()))
        .bind(interaction.logged_in.map(|(_, at)| at))
        .bind(interaction.consent_user.map(|u| u.as_uuid()))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn take_interaction(
        &self,
        id: &InteractionId,
        now: OffsetDateTime,
    ) -> Result<Option<Interaction>> {
        let row = sqlx::query(
            "DELETE FROM tenancy_oauth_interactions WHERE id = $1 \
             RETURNING id, request, login_session, logged_in_at, consent_user, created_at, expires_at",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(row
            .as_ref()
            .map(interaction_from_row)
            .transpose()?
            .filter(|i| i.expires_at > now))
    }

    async fn insert_code(&self, code: &AuthorizationCode) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO tenancy_oauth_codes (",
            code_columns!(),
            ") \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(code.code_hash.as_bytes().to_vec())
        .bind(code.client_id.id().as_uuid())
        .bind(&code.redirect_uri)
        .bind(&code.code_challenge)
        .bind(&code.nonce)
        .bind(code.user_id.as_uuid())
        .bind(code.tenant_id.as_uuid())
        .bind(code.browser_session.as_uuid())
        .bind(code.auth_time)
        .bind(&code.scopes)
        .bind(code.created_at)
        .bind(code.expires_at)
        .bind(code.redeemed_at)
        .bind(code.issued_session.map(|s| s.as_uuid()))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn redeem_code(
        &self,
        code_hash: &TokenHash,
        client_id: &ClientId,
        now: OffsetDateTime,
    ) -> Result<CodeRedemption> {
        let hash = code_hash.as_bytes().to_vec();
        // One statement: of two concurrent redemptions, the second waits for
        // the first's row lock and then sees it redeemed. Another client's
        // presentation leaves the code unspent.
        let redeemed = sqlx::query(concat!(
            "UPDATE tenancy_oauth_codes SET redeemed_at = $2 \
             WHERE code_hash = $1 AND redeemed_at IS NULL AND expires_at > $2 \
             AND client_id = $3 \
             RETURNING ",
            code_columns!()
        ))
        .bind(&hash)
        .bind(now)
        .bind(client_id.id().as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        if let Some(row) = redeemed {
            return Ok(CodeRedemption::Redeemed(code_from_row(&row)?));
        }
        // A spent code presented again is marked replayed, and read back in
        // the same statement: the session its redemption recorded, or (if
        // that redemption is still under way) the mark tells it.
        let replayed = sqlx::query(concat!(
            "UPDATE tenancy_oauth_codes SET replayed_at = COALESCE(replayed_at, $2) \
             WHERE code_hash = $1 AND redeemed_at IS NOT NULL \
             RETURNING ",
            code_columns!()
        ))
        .bind(&hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        match replayed {
            Some(row) => Ok(CodeRedemption::Replayed(code_from_row(&row)?)),
            None => Ok(CodeRedemption::Unknown),
        }
    }

    async fn set_code_session(&self, code_hash: &TokenHash, session_id: SessionId) -> Result<bool> {
        let replayed: Option<bool> = sqlx::query_scalar(
            "UPDATE tenancy_oauth_codes SET issued_session = $2 WHERE code_hash = $1 \
             RETURNING replayed_at IS NOT NULL",
        )
        .bind(code_hash.as_bytes().to_vec())
        .bind(session_id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(replayed.unwrap_or(false))
    }

    async fn find_consent(
        &self,
        user_id: UserId,
        client_id: &ClientId,
        tenant_id: TenantId,
    ) -> Result<Option<Consent>> {
        let mut tx = scoped(&self.pool, tenant_id).await?;
        let row = sqlx::query(
            "SELECT scopes, granted_at FROM tenancy_oauth_consents \
             WHERE tenant_id = $1 AND user_id = $2 AND client_id = $3",
        )
        .bind(tenant_id.as_uuid())
        .bind(user_id.as_uuid())
        .bind(client_id.id().as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        row.map(|row| {
            Ok(Consent::new(
                user_id,
                client_id.clone(),
                tenant_id,
                get(&row, "scopes")?,
                get(&row, "granted_at")?,
            ))
        })
        .transpose()
    }

    async fn put_consent(&self, consent: &Consent) -> Result<()> {
        let mut scopes = consent.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let mut tx = scoped(&self.pool, consent.tenant_id).await?;
        sqlx::query(
            "INSERT INTO tenancy_oauth_consents (tenant_id, user_id, client_id, scopes, granted_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, user_id, client_id) DO UPDATE SET scopes = $4, granted_at = $5",
        )
        .bind(consent.tenant_id.as_uuid())
        .bind(consent.user_id.as_uuid())
        .bind(consent.client_id.id().as_uuid())
        .bind(&scopes)
        .bind(consent.granted_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn insert_grant(&self, grant: &SessionGrant) -> Result<()> {
        sqlx::query(
            "INSERT INTO tenancy_oauth_grants (session_id, client_id, user_id, tenant_id, scopes, auth_time, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(grant.session_id.as_uuid())
        .bind(grant.client_id.id().as_uuid())
        .bind(grant.user_id.as_uuid())
        .bind(grant.tenant_id.as_uuid())
        .bind(&grant.scopes)
        .bind(grant.auth_time)
        .bind(grant.created_at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn get_grant(&self, session_id: SessionId) -> Result<Option<SessionGrant>> {
        let row = sqlx::query(
            "SELECT session_id, client_id, user_id, tenant_id, scopes, auth_time, created_at \
             FROM tenancy_oauth_grants WHERE session_id = $1",
        )
        .bind(session_id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(grant_from_row).transpose()
    }

    async fn use_assertion(
        &self,
        client_id: &ClientId,
        jti: &str,
        expires_at: OffsetDateTime,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO tenancy_oauth_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (client_id, jti) DO NOTHING",
        )
        .bind(client_id.id().as_uuid())
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge_expired(
        &self,
        before: OffsetDateTime,
        spent_before: OffsetDateTime,
    ) -> Result<u64> {
        let assertions = sqlx::query("DELETE FROM tenancy_oauth_assertions WHERE expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        let interactions =
            sqlx::query("DELETE FROM tenancy_oauth_interactions WHERE expires_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
        let codes = sqlx::query(
            "DELETE FROM tenancy_oauth_codes WHERE \
             (redeemed_at IS NULL AND expires_at < $1) OR expires_at < $2",
        )
        .bind(before)
        .bind(spent_before)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        let grants = sqlx::query("DELETE FROM tenancy_oauth_grants WHERE created_at < $1")
            .bind(spent_before)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(interactions.rows_affected()
            + codes.rows_affected()
            + assertions.rows_affected()
            + grants.rows_affected())
    }

    fn id_token_keys(&self) -> Arc<dyn KeyStore> {
        self.keys.clone()
    }
}
