//! Redis fixtures: the server comes from `REDIS_URL` (default
//! `redis://127.0.0.1:6379`). When it cannot be reached the tests are
//! skipped with a notice, except under `CI=true`, where that is a failure.
//! Each fixture uses a key prefix of its own, so tests run in parallel.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::quota::QuotaFixture;
use super::ratelimit::RateFixture;
use crate::redis::{RedisQuotaStore, RedisRateLimitStore, connect};

/// The Redis URL tests use.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// A connection to the test Redis, or `None` (with a notice) when it
/// cannot be reached and tests may be skipped.
///
/// # Panics
/// When `CI=true` and Redis cannot be reached: CI must never skip silently.
pub async fn connection() -> Option<ConnectionManager> {
    let url = redis_url();
    let reached = match connect(&url, Duration::from_secs(2)).await {
        Ok(mut conn) => redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| conn),
        Err(e) => Err(e),
    };
    match reached {
        Ok(conn) => Some(conn),
        Err(e) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("Redis at {url} must be reachable when CI=true: {e}")
        }
        Err(e) => {
            eprintln!("Redis at {url} is not reachable ({e}): skipping Redis test");
            None
        }
    }
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("tenancy-test:{}:", uuid::Uuid::now_v7().simple())
}

/// A quota fixture over Redis (tenants in memory), or `None` when skipped.
pub async fn quota_fixture() -> Option<QuotaFixture> {
    let conn = connection().await?;
    Some(QuotaFixture {
        backend: Arc::new(tenancy_core::MemoryBackend::new()),
        store: Arc::new(
            RedisQuotaStore::new(conn)
                .with_prefix(&unique_prefix())
                .with_ttl(Duration::from_secs(600)),
        ),
    })
}

/// A rate-limit fixture over Redis, or `None` when skipped.
pub async fn rate_fixture() -> Option<RateFixture> {
    let conn = connection().await?;
    Some(RateFixture {
        store: Arc::new(RedisRateLimitStore::new(conn).with_prefix(&unique_prefix())),
    })
}
