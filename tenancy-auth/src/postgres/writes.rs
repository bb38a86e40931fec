//! The writes both [`super::PgAuthStore`] (on a connection of its own) and
//! [`super::PgAuthTransaction`] (on the shared transaction) run: one SQL
//! text each, whatever transaction it belongs to.

use sqlx::postgres::PgConnection;
use tenancy_core::{ApiKeyId, Entity, SessionId, StoreError, TenantId, TokenHash, UserId};
use time::OffsetDateTime;

use super::{Result, api_key_from_row, db_error, one_time_from_row};
use crate::api_key::{ApiKey, Scope};
use crate::lockout::ThrottleKey;
use crate::one_time::{OneTimeToken, TokenPurpose};
use crate::password::PasswordHashString;
use crate::session::{RefreshRecord, RevokeReason, Session};

pub(super) async fn set_password_hash(
    conn: &mut PgConnection,
    user_id: UserId,
    hash: &PasswordHashString,
    at: OffsetDateTime,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenancy_password_credentials (user_id, phc, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET phc = EXCLUDED.phc, updated_at = EXCLUDED.updated_at",
    )
    .bind(user_id.as_uuid())
    .bind(hash.as_str())
    .bind(at)
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

pub(super) async fn clear_throttle(conn: &mut PgConnection, key: &ThrottleKey) -> Result<()> {
    sqlx::query("DELETE FROM tenancy_login_throttle WHERE key = $1")
        .bind(key.as_str())
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Runs inside a transaction: the advisory lock lasts until it ends.
pub(super) async fn create_session(
    conn: &mut PgConnection,
    session: &Session,
    refresh: &RefreshRecord,
    max_per_user: u32,
) -> Result<Vec<SessionId>> {
    // One login at a time per user, so the limit holds under concurrency.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('tenancy.sessions:' || $1::text, 0))",
    )
    .bind(session.user_id.as_uuid())
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    sqlx::query(
        "INSERT INTO tenancy_sessions (id, user_id, tenant_id, user_agent, ip, created_at, last_seen_at, \
         idle_expires_at, absolute_expires_at) VALUES ($1, $2, $3, $4, $5::inet, $6, $7, $8, $9)",
    )
    .bind(session.id.as_uuid())
    .bind(session.user_id.as_uuid())
    .bind(session.tenant_id.as_uuid())
    .bind(session.user_agent.as_deref())
    .bind(session.ip.map(|ip| ip.to_string()))
    .bind(session.created_at)
    .bind(session.last_seen_at)
    .bind(session.idle_expires_at)
    .bind(session.absolute_expires_at)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    sqlx::query(
        "INSERT INTO tenancy_refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)",
    )
    .bind(refresh.token_hash.as_bytes().as_slice())
    .bind(session.id.as_uuid())
    .bind(refresh.issued_at)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    let now = session.created_at;
    let evicted: Vec<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE tenancy_sessions SET revoked_at = $2, revoke_reason = 'evicted' WHERE id IN ( \
             SELECT id FROM tenancy_sessions WHERE user_id = $1 AND revoked_at IS NULL \
             AND idle_expires_at > $2 AND absolute_expires_at > $2 \
             ORDER BY created_at, id \
             LIMIT GREATEST((SELECT count(*) FROM tenancy_sessions WHERE user_id = $1 \
                 AND revoked_at IS NULL AND idle_expires_at > $2 AND absolute_expires_at > $2) - $3, 0)) \
         RETURNING id",
    )
    .bind(session.user_id.as_uuid())
    .bind(now)
    .bind(i64::from(max_per_user.max(1)))
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    let mut evicted: Vec<SessionId> = evicted.into_iter().map(SessionId::from_uuid).collect();
    evicted.sort();
    Ok(evicted)
}

pub(super) async fn revoke_session(
    conn: &mut PgConnection,
    id: SessionId,
    reason: RevokeReason,
    at: OffsetDateTime,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE tenancy_sessions SET revoked_at = $2, revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id.as_uuid())
    .bind(at)
    .bind(reason.as_str())
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    if done.rows_affected() > 0 {
        return Ok(true);
    }
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenancy_sessions WHERE id = $1")
        .bind(id.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    match exists {
        Some(_) => Ok(false),
        None => Err(StoreError::NotFound(Entity::Session)),
    }
}

pub(super) async fn revoke_user_sessions(
    conn: &mut PgConnection,
    user_id: UserId,
    tenant_id: Option<TenantId>,
    reason: RevokeReason,
    at: OffsetDateTime,
) -> Result<Vec<SessionId>> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE tenancy_sessions SET revoked_at = $3, revoke_reason = $4 \
         WHERE user_id = $1 AND ($2::uuid IS NULL OR tenant_id = $2) AND revoked_at IS NULL \
         AND absolute_expires_at > $3 RETURNING id",
    )
    .bind(user_id.as_uuid())
    .bind(tenant_id.map(|t| t.as_uuid()))
    .bind(at)
    .bind(reason.as_str())
    .fetch_all(conn)
    .await
    .map_err(db_error)?;
    let mut ids: Vec<SessionId> = ids.into_iter().map(SessionId::from_uuid).collect();
    ids.sort();
    Ok(ids)
}

pub(super) async fn insert_api_key(conn: &mut PgConnection, key: &ApiKey) -> Result<()> {
    let scopes: Vec<&str> = key.scopes.iter().map(Scope::as_str).collect();
    sqlx::query(
        "INSERT INTO tenancy_api_keys (id, tenant_id, name, scopes, secret_hash, created_by_kind, created_by_id, \
         created_at, expires_at, last_used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(key.id.as_uuid())
    .bind(key.tenant_id.as_uuid())
    .bind(&key.name)
    .bind(scopes)
    .bind(key.secret_hash.as_bytes().as_slice())
    .bind(key.created_by.kind())
    .bind(key.created_by.id())
    .bind(key.created_at)
    .bind(key.expires_at)
    .bind(key.last_used_at)
    .bind(key.revoked_at)
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

pub(super) async fn revoke_api_key(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: ApiKeyId,
    at: OffsetDateTime,
) -> Result<ApiKey> {
    let row = sqlx::query(concat!(
        "UPDATE tenancy_api_keys SET revoked_at = COALESCE(revoked_at, $3) \
         WHERE tenant_id = $1 AND id = $2 RETURNING ",
        api_key_columns!()
    ))
    .bind(tenant_id.as_uuid())
    .bind(id.as_uuid())
    .bind(at)
    .fetch_optional(conn)
    .await
    .map_err(db_error)?;
    row.as_ref()
        .map(api_key_from_row)
        .transpose()?
        .ok_or(StoreError::NotFound(Entity::ApiKey))
}

/// Two statements: run it inside a transaction.
pub(super) async fn consume_one_time_token(
    conn: &mut PgConnection,
    hash: &TokenHash,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<Option<OneTimeToken>> {
    let row = sqlx::query(concat!(
        "UPDATE tenancy_one_time_tokens SET used_at = $3 WHERE token_hash = $1 AND purpose = $2 \
         AND used_at IS NULL AND expires_at > $3 RETURNING ",
        one_time_columns!()
    ))
    .bind(hash.as_bytes().as_slice())
    .bind(purpose.as_str())
    .bind(now)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    let Some(used) = row.as_ref().map(one_time_from_row).transpose()? else {
        return Ok(None);
    };
    // One link used ends the others of its kind.
    sqlx::query(
        "UPDATE tenancy_one_time_tokens SET used_at = $3 WHERE user_id = $1 AND purpose = $2 \
         AND used_at IS NULL",
    )
    .bind(used.user_id.as_uuid())
    .bind(purpose.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(Some(used))
}
