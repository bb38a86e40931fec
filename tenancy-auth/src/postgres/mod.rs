//! Postgres auth stores (feature `postgres`).
//!
//! Migrations are numbered 2000–2999 and reference tenancy-core's tables;
//! [`PgAuthStore::migrate`] runs core's migrations first. Private signing
//! keys are stored as JWE, encrypted under a key-encryption key the host
//! provides and the database never sees (see [`crate::key_encryption`]);
//! [`crate::Auth`] refuses to start on Postgres without one unless told
//! otherwise.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgListener, PgPool, PgRow};
use sqlx::{AssertSqlSafe, Postgres, Row};
use tenancy_core::{
    Actor, ApiKeyId, Conflict, Cursor, Email, Entity, Page, PageRequest, SessionId, StoreError,
    TenantId, TokenHash, UserId,
};
use time::{Duration, OffsetDateTime};

use crate::api_key::{ApiKey, Scope};
use crate::key_encryption::{EncryptedJwk, StoredPrivateKey};
use crate::keys::{KeyAlgorithm, PrivateJwk, StoredKey};
use crate::lockout::{ThrottleKey, ThrottleRule, ThrottleState};
use crate::one_time::{OneTimeToken, TokenPurpose};
use crate::password::PasswordHashString;
use crate::revocation::RevocationSet;
use crate::session::{
    RefreshRecord, RefreshTokenOwner, Revocation, RevokeReason, RotateOutcome, Session,
    SessionPurge,
};
use crate::store::{
    ApiKeyStore, CredentialStore, KeyStore, LockoutStore, OneTimeTokenStore, SessionStore,
};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The embedded tenancy-auth migrations (missing versions ignored, so other
/// crates' migrations in the same database do not stop them).
pub fn migrator() -> Migrator {
    tenancy_core::postgres::tenancy_migrator(sqlx::migrate!("./migrations"))
}

/// Every auth store in Postgres.
#[derive(Clone)]
pub struct PgAuthStore {
    pool: PgPool,
}

impl std::fmt::Debug for PgAuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuthStore").finish_non_exhaustive()
    }
}

impl PgAuthStore {
    /// A store over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Applies tenancy-core's migrations, then tenancy-auth's.
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
}

fn db_error(error: sqlx::Error) -> StoreError {
    if let Some(db) = error.as_database_error() {
        let constraint = db.constraint().unwrap_or_default();
        match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => match constraint {
                "tenancy_sessions_pkey" => {
                    return StoreError::Conflict(Conflict::Id(Entity::Session));
                }
                "tenancy_api_keys_pkey" => {
                    return StoreError::Conflict(Conflict::Id(Entity::ApiKey));
                }
                _ => {}
            },
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                if constraint.ends_with("_tenant_fkey") {
                    return StoreError::NotFound(Entity::Tenant);
                }
                if constraint.ends_with("_user_fkey") {
                    return StoreError::NotFound(Entity::User);
                }
            }
            _ => {}
        }
    }
    StoreError::unavailable(error)
}

pub(crate) fn corrupt(what: &'static str) -> StoreError {
    StoreError::Corrupt(format!("stored {what} is invalid").into())
}

pub(crate) fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column).map_err(StoreError::unavailable)
}

pub(crate) fn hash_of(row: &PgRow, column: &str) -> Result<TokenHash> {
    let bytes: Vec<u8> = get(row, column)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| corrupt("hash"))?;
    Ok(TokenHash::from_bytes(bytes))
}

macro_rules! session_columns {
    () => {
        "id, user_id, tenant_id, user_agent, host(ip) AS ip, created_at, last_seen_at, \
     idle_expires_at, absolute_expires_at, revoked_at, revoke_reason"
    };
}

fn session_from_row(row: &PgRow) -> Result<Session> {
    let ip: Option<String> = get(row, "ip")?;
    let reason: Option<String> = get(row, "revoke_reason")?;
    Ok(Session {
        id: SessionId::from_uuid(get(row, "id")?),
        user_id: UserId::from_uuid(get(row, "user_id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        user_agent: get(row, "user_agent")?,
        ip: ip
            .map(|ip| ip.parse())
            .transpose()
            .map_err(|_| corrupt("session ip"))?,
        created_at: get(row, "created_at")?,
        last_seen_at: get(row, "last_seen_at")?,
        idle_expires_at: get(row, "idle_expires_at")?,
        absolute_expires_at: get(row, "absolute_expires_at")?,
        revoked_at: get(row, "revoked_at")?,
        revoke_reason: reason
            .map(|r| RevokeReason::parse(&r).ok_or_else(|| corrupt("revoke reason")))
            .transpose()?,
    })
}

macro_rules! api_key_columns {
    () => {
        "id, tenant_id, name, scopes, secret_hash, created_by_kind, created_by_id, created_at, \
     expires_at, last_used_at, revoked_at"
    };
}

fn api_key_from_row(row: &PgRow) -> Result<ApiKey> {
    let scopes: Vec<String> = get(row, "scopes")?;
    let kind: String = get(row, "created_by_kind")?;
    Ok(ApiKey {
        id: ApiKeyId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        name: get(row, "name")?,
        scopes: scopes
            .into_iter()
            .map(Scope::new)
            .collect::<Result<_, _>>()
            .map_err(|_| corrupt("api key scope"))?,
        secret_hash: hash_of(row, "secret_hash")?,
        created_by: Actor::from_parts(&kind, get(row, "created_by_id")?)
            .ok_or_else(|| corrupt("api key creator"))?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        last_used_at: get(row, "last_used_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

macro_rules! one_time_columns {
    () => {
        "token_hash, purpose, user_id, email, created_at, expires_at, used_at"
    };
}

fn one_time_from_row(row: &PgRow) -> Result<OneTimeToken> {
    let purpose: String = get(row, "purpose")?;
    let email: String = get(row, "email")?;
    Ok(OneTimeToken {
        token_hash: hash_of(row, "token_hash")?,
        purpose: TokenPurpose::parse(&purpose).ok_or_else(|| corrupt("token purpose"))?,
        user_id: UserId::from_uuid(get(row, "user_id")?),
        email: Email::new(&email).map_err(|_| corrupt("token email"))?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        used_at: get(row, "used_at")?,
    })
}

mod transaction;
mod writes;

pub use transaction::PgAuthTransaction;

pub(crate) fn key_from_row(row: &PgRow) -> Result<StoredKey> {
    let algorithm: String = get(row, "algorithm")?;
    let plaintext: Option<Value> = get(row, "private_jwk")?;
    let encrypted: Option<String> = get(row, "private_jwe")?;
    let public: Option<Value> = get(row, "public_jwk")?;
    let as_map = |value: Value| match value {
        Value::Object(map) => Ok(map),
        _ => Err(corrupt("signing key")),
    };
    let private_key = match (encrypted, plaintext) {
        (Some(jwe), None) => StoredPrivateKey::Encrypted(EncryptedJwk::from_compact(jwe)),
        (None, Some(jwk)) => StoredPrivateKey::Plaintext(PrivateJwk::from_map(as_map(jwk)?)),
        _ => return Err(corrupt("signing key")),
    };
    Ok(StoredKey {
        kid: get(row, "kid")?,
        algorithm: KeyAlgorithm::from_str(&algorithm).map_err(|_| corrupt("key algorithm"))?,
        private_key,
        public_jwk: public.map(as_map).transpose()?,
        created_at: get(row, "created_at")?,
        retired_at: get(row, "retired_at")?,
    })
}

fn throttle_from_row(row: &PgRow) -> Result<ThrottleState> {
    let failures: i32 = get(row, "failures")?;
    Ok(ThrottleState {
        failures: u32::try_from(failures).unwrap_or_default(),
        window_started: get(row, "window_started")?,
        locked_until: get(row, "locked_until")?,
    })
}

#[async_trait]
impl CredentialStore for PgAuthStore {
    async fn set_password_hash(
        &self,
        user_id: UserId,
        hash: &PasswordHashString,
        at: OffsetDateTime,
    ) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        writes::set_password_hash(&mut conn, user_id, hash, at).await
    }

    async fn password_hash(&self, user_id: UserId) -> Result<Option<PasswordHashString>> {
        let phc: Option<String> =
            sqlx::query_scalar("SELECT phc FROM tenancy_password_credentials WHERE user_id = $1")
                .bind(user_id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(phc.map(PasswordHashString::new))
    }
}

#[async_trait]
impl LockoutStore for PgAuthStore {
    async fn record_login_failure(
        &self,
        key: &ThrottleKey,
        rule: &ThrottleRule,
        now: OffsetDateTime,
    ) -> Result<ThrottleState> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let row = sqlx::query(
            "SELECT failures, window_started, locked_until FROM tenancy_login_throttle WHERE key = $1 FOR UPDATE",
        )
        .bind(key.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let previous = row.as_ref().map(throttle_from_row).transpose()?;
        let next = ThrottleState::after_failure(previous, rule, now);
        // A first failure inserts; concurrent first failures meet in ON CONFLICT.
        sqlx::query(
            "INSERT INTO tenancy_login_throttle (key, failures, window_started, locked_until) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO UPDATE SET \
             failures = CASE WHEN $5 THEN EXCLUDED.failures ELSE tenancy_login_throttle.failures + 1 END, \
             window_started = CASE WHEN $5 THEN EXCLUDED.window_started ELSE tenancy_login_throttle.window_started END, \
             locked_until = CASE WHEN $5 THEN EXCLUDED.locked_until ELSE tenancy_login_throttle.locked_until END",
        )
        .bind(key.as_str())
        .bind(i32::try_from(next.failures).unwrap_or(i32::MAX))
        .bind(next.window_started)
        .bind(next.locked_until)
        .bind(previous.is_some())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let stored = sqlx::query("SELECT failures, window_started, locked_until FROM tenancy_login_throttle WHERE key = $1")
            .bind(key.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let stored = throttle_from_row(&stored)?;
        tx.commit().await.map_err(db_error)?;
        Ok(stored)
    }

    async fn throttle_state(&self, key: &ThrottleKey) -> Result<Option<ThrottleState>> {
        let row = sqlx::query("SELECT failures, window_started, locked_until FROM tenancy_login_throttle WHERE key = $1")
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(throttle_from_row).transpose()
    }

    async fn clear_throttle(&self, key: &ThrottleKey) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        writes::clear_throttle(&mut conn, key).await
    }

    async fn purge_expired(&self, now: OffsetDateTime, keep: Duration) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM tenancy_login_throttle WHERE window_started < $1 \
             AND (locked_until IS NULL OR locked_until < $1)",
        )
        .bind(now - keep)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl KeyStore for PgAuthStore {
    async fn list_signing_keys(&self) -> Result<Vec<StoredKey>> {
        self.signing_keys().list_signing_keys().await
    }

    async fn activate_signing_key(&self, key: &StoredKey, at: OffsetDateTime) -> Result<()> {
        self.signing_keys().activate_signing_key(key, at).await
    }

    async fn delete_signing_keys_retired_before(&self, cutoff: OffsetDateTime) -> Result<u64> {
        self.signing_keys()
            .delete_signing_keys_retired_before(cutoff)
            .await
    }

    async fn replace_private_key(&self, kid: &str, private_key: &StoredPrivateKey) -> Result<()> {
        self.signing_keys()
            .replace_private_key(kid, private_key)
            .await
    }
}

impl PgAuthStore {
    fn signing_keys(&self) -> PgKeyTable {
        PgKeyTable::new(self.pool.clone(), "tenancy_signing_keys")
    }
}

/// A table of signing keys: the access-token keys (`tenancy_signing_keys`)
/// or the OIDC provider's ID-token keys, which keep a table of their own
/// with the same columns and constraints (`{table}_pkey`,
/// `{table}_one_active`). The name comes from this crate's migrations,
/// never from input, so the SQL is built with it.
pub(crate) struct PgKeyTable {
    pool: PgPool,
    table: &'static str,
}

impl PgKeyTable {
    /// The keys in `table`, a name from this crate's migrations.
    pub(crate) fn new(pool: PgPool, table: &'static str) -> Self {
        Self { pool, table }
    }

    fn error(&self, error: sqlx::Error) -> StoreError {
        if let Some(db) = error.as_database_error()
            && db.kind() == sqlx::error::ErrorKind::UniqueViolation
            && let Some(suffix) = db
                .constraint()
                .and_then(|constraint| constraint.strip_prefix(self.table))
        {
            match suffix {
                "_one_active" => return StoreError::Conflict(Conflict::ActiveSigningKey),
                "_pkey" => return StoreError::Conflict(Conflict::Id(Entity::SigningKey)),
                _ => {}
            }
        }
        db_error(error)
    }
}

#[async_trait]
impl KeyStore for PgKeyTable {
    async fn list_signing_keys(&self) -> Result<Vec<StoredKey>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT kid, algorithm, private_jwk, private_jwe, public_jwk, created_at, retired_at \
             FROM {} ORDER BY created_at, kid",
            self.table
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        rows.iter().map(key_from_row).collect()
    }

    async fn activate_signing_key(&self, key: &StoredKey, at: OffsetDateTime) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET retired_at = $1 WHERE retired_at IS NULL",
            self.table
        )))
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(e))?;
        let (plaintext, encrypted) = private_columns(&key.private_key);
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (kid, algorithm, private_jwk, private_jwe, public_jwk, created_at, retired_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
            self.table
        )))
        .bind(&key.kid)
        .bind(key.algorithm.as_str())
        .bind(plaintext)
        .bind(encrypted)
        .bind(key.public_jwk.clone().map(Value::Object))
        .bind(key.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))
    }

    async fn delete_signing_keys_retired_before(&self, cutoff: OffsetDateTime) -> Result<u64> {
        let done = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE retired_at < $1",
            self.table
        )))
        .bind(cutoff)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(done.rows_affected())
    }

    async fn replace_private_key(&self, kid: &str, private_key: &StoredPrivateKey) -> Result<()> {
        let (plaintext, encrypted) = private_columns(private_key);
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET private_jwk = $2, private_jwe = $3 WHERE kid = $1",
            self.table
        )))
        .bind(kid)
        .bind(plaintext)
        .bind(encrypted)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(Entity::SigningKey));
        }
        Ok(())
    }
}

/// The `private_jwk` and `private_jwe` columns of a private key: one is set.
pub(crate) fn private_columns(key: &StoredPrivateKey) -> (Option<Value>, Option<&str>) {
    match key {
        StoredPrivateKey::Encrypted(jwe) => (None, Some(jwe.as_compact())),
        StoredPrivateKey::Plaintext(jwk) => {
            (Some(Value::Object(jwk.expose_secret().clone())), None)
        }
    }
}

#[async_trait]
impl SessionStore for PgAuthStore {
    async fn create_session(
        &self,
        session: &Session,
        refresh: &RefreshRecord,
        max_per_user: u32,
    ) -> Result<Vec<SessionId>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let evicted = writes::create_session(&mut tx, session, refresh, max_per_user).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(evicted)
    }

    async fn get_session(&self, id: SessionId) -> Result<Session> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM tenancy_sessions WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref()
            .map(session_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound(Entity::Session))
    }

    async fn find_session_by_refresh_token(
        &self,
        token: &TokenHash,
    ) -> Result<Option<RefreshTokenOwner>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            ", (SELECT rotated_at IS NOT NULL FROM tenancy_refresh_tokens WHERE token_hash = $1) AS spent \
             FROM tenancy_sessions WHERE id = \
             (SELECT session_id FROM tenancy_refresh_tokens WHERE token_hash = $1)"
        ))
        .bind(token.as_bytes().as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref()
            .map(|row| {
                Ok(RefreshTokenOwner {
                    session: session_from_row(row)?,
                    spent: get(row, "spent")?,
                })
            })
            .transpose()
    }

    async fn list_user_sessions(
        &self,
        user_id: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>> {
        let rows = sqlx::query(concat!("SELECT ", session_columns!(), " FROM tenancy_sessions WHERE user_id = $1 AND revoked_at IS NULL \
             AND idle_expires_at > $2 AND absolute_expires_at > $2 ORDER BY created_at DESC, id DESC"))
        .bind(user_id.as_uuid())
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        now: OffsetDateTime,
        idle_timeout: Duration,
    ) -> Result<RotateOutcome> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Spending the token takes its row lock: a concurrent presentation
        // of the same token waits here, then finds it spent.
        let spent: Option<uuid::Uuid> = sqlx::query_scalar(
            "UPDATE tenancy_refresh_tokens SET rotated_at = $2 WHERE token_hash = $1 AND rotated_at IS NULL \
             RETURNING session_id",
        )
        .bind(presented.as_bytes().as_slice())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let session_id = match spent {
            Some(id) => id,
            None => {
                let owner: Option<uuid::Uuid> = sqlx::query_scalar(
                    "SELECT session_id FROM tenancy_refresh_tokens WHERE token_hash = $1",
                )
                .bind(presented.as_bytes().as_slice())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
                let Some(owner) = owner else {
                    return Ok(RotateOutcome::Unknown);
                };
                owner
            }
        };
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM tenancy_sessions WHERE id = $1 FOR UPDATE"
        ))
        .bind(session_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let session = session_from_row(&row)?;
        if !session.is_live_at(now) {
            // Nothing changes for an ended session; the transaction rolls back.
            return Ok(RotateOutcome::Inactive(session));
        }
        if spent.is_none() {
            let row = sqlx::query(concat!("UPDATE tenancy_sessions SET revoked_at = $2, revoke_reason = 'refresh_token_reuse' \
                 WHERE id = $1 RETURNING ", session_columns!()))
            .bind(session_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            let revoked = session_from_row(&row)?;
            tx.commit().await.map_err(db_error)?;
            return Ok(RotateOutcome::Reused(revoked));
        }
        sqlx::query("INSERT INTO tenancy_refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)")
            .bind(next.as_bytes().as_slice())
            .bind(session_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let row = sqlx::query(concat!("UPDATE tenancy_sessions SET last_seen_at = $2, idle_expires_at = LEAST($3, absolute_expires_at) \
             WHERE id = $1 RETURNING ", session_columns!()))
        .bind(session_id)
        .bind(now)
        .bind(now + idle_timeout)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let updated = session_from_row(&row)?;
        tx.commit().await.map_err(db_error)?;
        Ok(RotateOutcome::Rotated(updated))
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        writes::revoke_session(&mut conn, id, reason, at).await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: UserId,
        tenant_id: Option<TenantId>,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        writes::revoke_user_sessions(&mut conn, user_id, tenant_id, reason, at).await
    }

    async fn revoke_tenant_sessions(
        &self,
        tenant_id: TenantId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "UPDATE tenancy_sessions SET revoked_at = $2, revoke_reason = $3 \
             WHERE tenant_id = $1 AND revoked_at IS NULL AND absolute_expires_at > $2 RETURNING id",
        )
        .bind(tenant_id.as_uuid())
        .bind(at)
        .bind(reason.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut ids: Vec<SessionId> = ids.into_iter().map(SessionId::from_uuid).collect();
        ids.sort();
        Ok(ids)
    }

    async fn revocations_since(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Vec<Revocation>> {
        let rows: Vec<(uuid::Uuid, OffsetDateTime, OffsetDateTime)> = sqlx::query_as(
            "SELECT id, revoked_at, absolute_expires_at FROM tenancy_sessions \
             WHERE revoked_at >= $1 AND absolute_expires_at > $2 ORDER BY revoked_at, id",
        )
        .bind(since)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(id, revoked_at, expires_at)| Revocation {
                session_id: SessionId::from_uuid(id),
                revoked_at,
                expires_at,
            })
            .collect())
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        keep_ended: Duration,
        keep_spent: Duration,
    ) -> Result<SessionPurge> {
        // One statement: the refresh tokens go with their sessions, and the
        // foreign key is checked once both are gone.
        let (sessions, tokens): (i64, i64) = sqlx::query_as(
            "WITH ended AS ( \
                 SELECT id FROM tenancy_sessions \
                 WHERE revoked_at < $1 OR LEAST(idle_expires_at, absolute_expires_at) < $1 \
             ), tokens AS ( \
                 DELETE FROM tenancy_refresh_tokens \
                 WHERE session_id IN (SELECT id FROM ended) OR rotated_at < $2 RETURNING 1 \
             ), sessions AS ( \
                 DELETE FROM tenancy_sessions WHERE id IN (SELECT id FROM ended) RETURNING 1 \
             ) SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM tokens)",
        )
        .bind(now - keep_ended)
        .bind(now - keep_spent)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(SessionPurge::new(
            u64::try_from(sessions).unwrap_or_default(),
            u64::try_from(tokens).unwrap_or_default(),
        ))
    }
}

#[async_trait]
impl ApiKeyStore for PgAuthStore {
    async fn insert_api_key(&self, key: &ApiKey) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        writes::insert_api_key(&mut conn, key).await
    }

    async fn get_api_key(&self, id: ApiKeyId) -> Result<ApiKey> {
        let row = sqlx::query(concat!(
            "SELECT ",
            api_key_columns!(),
            " FROM tenancy_api_keys WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref()
            .map(api_key_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound(Entity::ApiKey))
    }

    async fn list_api_keys(&self, tenant_id: TenantId, page: &PageRequest) -> Result<Page<ApiKey>> {
        let after: Option<ApiKeyId> = page.after_key("api-keys")?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            api_key_columns!(),
            " FROM tenancy_api_keys WHERE tenant_id = $1 \
             AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(tenant_id.as_uuid())
        .bind(after.map(|id| id.as_uuid()))
        .bind(page.size.get() as i64 + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let items = rows
            .iter()
            .map(api_key_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.size, |k| {
            Cursor::encode("api-keys", k.id)
        }))
    }

    async fn revoke_api_key(
        &self,
        tenant_id: TenantId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<ApiKey> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        writes::revoke_api_key(&mut conn, tenant_id, id, at).await
    }

    async fn touch_api_key(&self, id: ApiKeyId, at: OffsetDateTime) -> Result<()> {
        let done = sqlx::query(
            "UPDATE tenancy_api_keys SET last_used_at = GREATEST(COALESCE(last_used_at, $2), $2) WHERE id = $1",
        )
        .bind(id.as_uuid())
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(Entity::ApiKey));
        }
        Ok(())
    }
}

#[async_trait]
impl OneTimeTokenStore for PgAuthStore {
    async fn insert_one_time_token(
        &self,
        token: &OneTimeToken,
        cooldown_since: OffsetDateTime,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // One issuer at a time per user and purpose, so the cooldown holds
        // under concurrency.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('tenancy.one_time:' || $1::text || ':' || $2, 0))",
        )
        .bind(token.user_id.as_uuid())
        .bind(token.purpose.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let recent: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tenancy_one_time_tokens WHERE user_id = $1 AND purpose = $2 \
             AND used_at IS NULL AND expires_at > $3 AND created_at >= $4)",
        )
        .bind(token.user_id.as_uuid())
        .bind(token.purpose.as_str())
        .bind(token.created_at)
        .bind(cooldown_since)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        if recent {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO tenancy_one_time_tokens (token_hash, purpose, user_id, email, created_at, expires_at, used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token.token_hash.as_bytes().as_slice())
        .bind(token.purpose.as_str())
        .bind(token.user_id.as_uuid())
        .bind(token.email.as_str())
        .bind(token.created_at)
        .bind(token.expires_at)
        .bind(token.used_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn find_one_time_token(&self, hash: &TokenHash) -> Result<Option<OneTimeToken>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            one_time_columns!(),
            " FROM tenancy_one_time_tokens WHERE token_hash = $1"
        ))
        .bind(hash.as_bytes().as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(one_time_from_row).transpose()
    }

    async fn consume_one_time_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<OneTimeToken>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let used = writes::consume_one_time_token(&mut tx, hash, purpose, now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(used)
    }

    async fn purge_expired(&self, now: OffsetDateTime, keep: Duration) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM tenancy_one_time_tokens WHERE expires_at < $1 OR used_at < $1",
        )
        .bind(now - keep)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

/// Applies every session revocation to `revocations` the moment it commits,
/// through `LISTEN tenancy_session_revoked` (the auth migration's trigger
/// notifies it). Revoked sessions are held for `hold` (use the absolute
/// session lifetime). Reconnects after a lost connection, re-reading what it
/// missed with [`RevocationSet::sync`]; abort the handle to stop it.
pub fn listen_revocations(
    pool: PgPool,
    store: Arc<PgAuthStore>,
    revocations: Arc<RevocationSet>,
    hold: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "revocation listener cannot connect; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(error) = listener.listen("tenancy_session_revoked").await {
                tracing::warn!(%error, "revocation listener cannot subscribe; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            // Catch up on anything revoked while not listening.
            let now = OffsetDateTime::now_utc();
            if let Err(error) = revocations.sync(&*store, now, hold).await {
                tracing::warn!(%error, "revocation catch-up failed");
            }
            loop {
                match listener.recv().await {
                    Ok(notification) => match SessionId::from_str(notification.payload()) {
                        Ok(id) => revocations.insert(id, OffsetDateTime::now_utc() + hold),
                        Err(error) => tracing::warn!(%error, "unreadable revocation notice"),
                    },
                    Err(error) => {
                        tracing::warn!(%error, "revocation listener lost its connection");
                        break;
                    }
                }
            }
        }
    })
}
