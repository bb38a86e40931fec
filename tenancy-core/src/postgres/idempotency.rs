//! [`PgIdempotencyStore`]: idempotency keys in `tenancy_idempotency_keys`,
//! tenant-isolated by row-level security.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgPool;
use time::OffsetDateTime;

use super::{begin_tenant_transaction, db_error};
use crate::clock::truncate_to_micros;
use crate::error::StoreError;
use crate::idempotency::{
    Claim, Fingerprint, IdempotencyScope, IdempotencyStore, LeaseToken, Lifetimes, StoredResponse,
};

/// Idempotency keys on Postgres (migration `1003_idempotency`). A claim is
/// one `INSERT … ON CONFLICT DO UPDATE … WHERE <free>` statement, so of
/// replicas racing for one key exactly one acquires it.
#[derive(Clone)]
pub struct PgIdempotencyStore {
    pool: PgPool,
}

impl std::fmt::Debug for PgIdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgIdempotencyStore").finish_non_exhaustive()
    }
}

impl PgIdempotencyStore {
    /// A store over `pool` (migrated with the tenancy-core migrations).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// How often a claim looks again when the record it lost to vanished
/// (released) before it could be read.
const CLAIM_ATTEMPTS: usize = 3;

#[async_trait]
impl IdempotencyStore for PgIdempotencyStore {
    async fn claim(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &Fingerprint,
        now: OffsetDateTime,
        lifetimes: Lifetimes,
    ) -> Result<Claim, StoreError> {
        let now = truncate_to_micros(now);
        for _ in 0..CLAIM_ATTEMPTS {
            let token = LeaseToken::new();
            let mut tx = begin_tenant_transaction(&self.pool, scope.tenant_id())
                .await
                .map_err(db_error)?;
            let acquired = sqlx::query(
                "INSERT INTO tenancy_idempotency_keys AS k \
                 (tenant_id, caller, key, fingerprint, token, locked_until, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (tenant_id, caller, key) DO UPDATE SET \
                 fingerprint = EXCLUDED.fingerprint, token = EXCLUDED.token, \
                 locked_until = EXCLUDED.locked_until, expires_at = EXCLUDED.expires_at, \
                 created_at = EXCLUDED.created_at, status = NULL, headers = NULL, body = NULL \
                 WHERE k.expires_at <= $8 OR (k.status IS NULL AND k.locked_until <= $8) \
                 RETURNING token",
            )
            .bind(scope.tenant_id().as_uuid())
            .bind(scope.caller())
            .bind(scope.key().as_str())
            .bind(&fingerprint.as_bytes()[..])
            .bind(token.as_uuid())
            .bind(now + lifetimes.lease)
            .bind(now + lifetimes.ttl)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            if acquired.is_some() {
                tx.commit().await.map_err(db_error)?;
                return Ok(Claim::Acquired(token));
            }
            // Someone holds the key: the statement locked their row, read it.
            let row = sqlx::query(
                "SELECT fingerprint, status, headers, body FROM tenancy_idempotency_keys \
                 WHERE tenant_id = $1 AND caller = $2 AND key = $3",
            )
            .bind(scope.tenant_id().as_uuid())
            .bind(scope.caller())
            .bind(scope.key().as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            let Some(row) = row else { continue };
            let stored: Vec<u8> = row.try_get("fingerprint").map_err(db_error)?;
            if stored.as_slice() != fingerprint.as_bytes() {
                return Ok(Claim::Mismatch);
            }
            let status: Option<i16> = row.try_get("status").map_err(db_error)?;
            let Some(status) = status else {
                return Ok(Claim::InFlight);
            };
            let headers: sqlx::types::Json<Vec<(String, String)>> =
                row.try_get("headers").map_err(corrupt)?;
            let body: Vec<u8> = row.try_get("body").map_err(db_error)?;
            let status = u16::try_from(status).map_err(corrupt)?;
            return Ok(Claim::Replay(StoredResponse {
                status,
                headers: headers.0,
                body,
            }));
        }
        // The key keeps changing hands: as good as in use.
        Ok(Claim::InFlight)
    }

    async fn complete(
        &self,
        scope: &IdempotencyScope,
        token: LeaseToken,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let status = i16::try_from(response.status).map_err(|e| StoreError::Corrupt(e.into()))?;
        let mut tx = begin_tenant_transaction(&self.pool, scope.tenant_id())
            .await
            .map_err(db_error)?;
        let done = sqlx::query(
            "UPDATE tenancy_idempotency_keys SET status = $5, headers = $6, body = $7 \
             WHERE tenant_id = $1 AND caller = $2 AND key = $3 AND token = $4 AND status IS NULL",
        )
        .bind(scope.tenant_id().as_uuid())
        .bind(scope.caller())
        .bind(scope.key().as_str())
        .bind(token.as_uuid())
        .bind(status)
        .bind(sqlx::types::Json(&response.headers))
        .bind(&response.body)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, scope: &IdempotencyScope, token: LeaseToken) -> Result<(), StoreError> {
        let mut tx = begin_tenant_transaction(&self.pool, scope.tenant_id())
            .await
            .map_err(db_error)?;
        sqlx::query(
            "DELETE FROM tenancy_idempotency_keys \
             WHERE tenant_id = $1 AND caller = $2 AND key = $3 AND token = $4 AND status IS NULL",
        )
        .bind(scope.tenant_id().as_uuid())
        .bind(scope.caller())
        .bind(scope.key().as_str())
        .bind(token.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let now = truncate_to_micros(now);
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("SELECT set_config('tenancy.idempotency_purge_before', $1, true)")
            .bind(
                now.format(&time::format_description::well_known::Rfc3339)
                    .map_err(|e| StoreError::Corrupt(e.into()))?,
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let done = sqlx::query("DELETE FROM tenancy_idempotency_keys WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

fn corrupt(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Corrupt(Box::new(error))
}
