//! One database transaction for auth and core writes.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tenancy_core::postgres::PgTransaction;
use tenancy_core::{
    ApiKeyId, Backend, SessionId, StoreError, TenantId, TokenHash, Transaction, UserId,
};
use time::OffsetDateTime;

use super::{PgAuthStore, Result, db_error, writes};
use crate::api_key::ApiKey;
use crate::lockout::ThrottleKey;
use crate::one_time::{OneTimeToken, TokenPurpose};
use crate::password::PasswordHashString;
use crate::session::{RefreshRecord, RevokeReason, Session};
use crate::store::{AuthTransaction, AuthTransactions};

/// A transaction of [`PgAuthStore`]: tenancy-core's writes go through its
/// [`PgTransaction`] ([`AuthTransaction::core`]), the auth writes through
/// the same connection, and one `COMMIT` makes them all visible.
pub struct PgAuthTransaction {
    core: PgTransaction,
    /// Set when an auth statement failed: Postgres refuses the rest and
    /// would turn a `COMMIT` into a silent rollback.
    aborted: AtomicBool,
}

impl std::fmt::Debug for PgAuthTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuthTransaction").finish_non_exhaustive()
    }
}

impl PgAuthTransaction {
    /// Joins an open core transaction: auth writes go to its connection.
    pub fn new(core: PgTransaction) -> Self {
        Self {
            core,
            aborted: AtomicBool::new(false),
        }
    }

    /// Runs one auth statement on the shared connection.
    async fn run<T>(
        &self,
        statement: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T>,
    ) -> Result<T> {
        if self.aborted.load(Ordering::Acquire) {
            return Err(StoreError::TransactionAborted);
        }
        let mut conn = self.core.connection().await?;
        let out = statement(&mut conn).await;
        if out.is_err() {
            self.aborted.store(true, Ordering::Release);
        }
        out
    }
}

#[async_trait]
impl AuthTransactions for PgAuthStore {
    /// Opens the transaction on this store's pool: `backend` is the same
    /// database (the auth tables' foreign keys need that), and its calls
    /// are made through [`AuthTransaction::core`].
    async fn begin(&self, _backend: &dyn Backend) -> Result<Box<dyn AuthTransaction>> {
        let tx = self.pool.begin().await.map_err(db_error)?;
        Ok(Box::new(PgAuthTransaction::new(PgTransaction::from_sqlx(
            tx,
        ))))
    }
}

#[async_trait]
impl AuthTransaction for PgAuthTransaction {
    fn core(&self) -> &dyn Transaction {
        &self.core
    }

    async fn set_password_hash(
        &self,
        user_id: UserId,
        hash: &PasswordHashString,
        at: OffsetDateTime,
    ) -> Result<()> {
        self.run(async |conn| writes::set_password_hash(conn, user_id, hash, at).await)
            .await
    }

    async fn clear_throttle(&self, key: &ThrottleKey) -> Result<()> {
        self.run(async |conn| writes::clear_throttle(conn, key).await)
            .await
    }

    async fn create_session(
        &self,
        session: &Session,
        refresh: &RefreshRecord,
        max_per_user: u32,
    ) -> Result<Vec<SessionId>> {
        self.run(async |conn| writes::create_session(conn, session, refresh, max_per_user).await)
            .await
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<bool> {
        self.run(async |conn| writes::revoke_session(conn, id, reason, at).await)
            .await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: UserId,
        tenant_id: Option<TenantId>,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>> {
        self.run(async |conn| {
            writes::revoke_user_sessions(conn, user_id, tenant_id, reason, at).await
        })
        .await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<()> {
        self.run(async |conn| writes::insert_api_key(conn, key).await)
            .await
    }

    async fn revoke_api_key(
        &self,
        tenant_id: TenantId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<ApiKey> {
        self.run(async |conn| writes::revoke_api_key(conn, tenant_id, id, at).await)
            .await
    }

    async fn consume_one_time_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<OneTimeToken>> {
        self.run(async |conn| writes::consume_one_time_token(conn, hash, purpose, now).await)
            .await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        if self.aborted.load(Ordering::Acquire) {
            return Err(StoreError::TransactionAborted);
        }
        Box::new(self.core).commit().await
    }
}
