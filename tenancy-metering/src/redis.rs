//! Redis stores (feature `redis`): quota counters and GCRA rate limits
//! shared by every replica, each check one Lua script run atomically by Redis (`EVALSHA`, loaded
//! on first use), over the `redis` crate's [`ConnectionManager`] (tokio),
//! which reconnects by itself after a lost connection.
//!
//! Point a host at its Redis with a URL such as `redis://127.0.0.1:6379/0`
//! (or `rediss://` for TLS) through [`connect`]. Keys start with a prefix
//! (default `tenancy:`), so several applications can share one database.
//!
//! Counters are Lua numbers inside the scripts: exact up to 2^53.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use tenancy_core::StoreError;

use crate::quota::{Consumption, MAX_COUNTER, QuotaKey, QuotaStore, QuotaStoreError, check_range};
use crate::ratelimit::{RateDecision, RateLimit, RateLimitStore};

/// Connects a [`ConnectionManager`] to `url` (`redis://host:port/db`),
/// answering within `timeout` per command and connection attempt.
pub async fn connect(url: &str, timeout: Duration) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1);
    ConnectionManager::new_with_config(client, config).await
}

const CONSUME: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
if amount > cap - used then
  return {0, used}
end
used = redis.call('INCRBY', KEYS[1], amount)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, used}
";

const RELEASE: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if amount > used then amount = used end
if amount > 0 then redis.call('DECRBY', KEYS[1], amount) end
return 0
";

fn unavailable(error: redis::RedisError) -> QuotaStoreError {
    QuotaStoreError::Store(StoreError::unavailable(error))
}

/// Quota counters in Redis. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisQuotaStore {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
    consume: redis::Script,
    release: redis::Script,
}

impl std::fmt::Debug for RedisQuotaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQuotaStore")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisQuotaStore {
    /// Counters over `conn`, keys prefixed `tenancy:`, each kept 62 days
    /// after its last change (longer than any billing period).
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            prefix: "tenancy:".to_owned(),
            ttl: Duration::from_secs(62 * 24 * 3600),
            consume: redis::Script::new(CONSUME),
            release: redis::Script::new(RELEASE),
        }
    }

    /// Prefixes keys with `prefix`.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// Keeps each counter `ttl` after its last change: it must outlive the
    /// longest period.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn key(&self, key: &QuotaKey) -> String {
        format!(
            "{}quota:{}:{}:{}",
            self.prefix,
            key.tenant_id,
            key.meter,
            key.period_start.unix_timestamp_nanos() / 1_000
        )
    }
}

#[async_trait]
impl QuotaStore for RedisQuotaStore {
    async fn consume(
        &self,
        key: &QuotaKey,
        amount: u64,
        cap: u64,
    ) -> Result<Consumption, QuotaStoreError> {
        let amount = check_range(amount)?;
        let cap = check_range(cap.min(MAX_COUNTER))?;
        let mut conn = self.conn.clone();
        let (admitted, used): (i64, i64) = self
            .consume
            .key(self.key(key))
            .arg(amount)
            .arg(cap)
            .arg(self.ttl.as_secs().max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(Consumption {
            admitted: admitted == 1,
            used: u64::try_from(used).unwrap_or(0),
        })
    }

    async fn release(&self, key: &QuotaKey, amount: u64) -> Result<(), QuotaStoreError> {
        let amount = check_range(amount.min(MAX_COUNTER))?;
        let mut conn = self.conn.clone();
        let _: i64 = self
            .release
            .key(self.key(key))
            .arg(amount)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn used(&self, key: &QuotaKey) -> Result<u64, QuotaStoreError> {
        let mut conn = self.conn.clone();
        let used: Option<i64> = redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(used.and_then(|u| u64::try_from(u).ok()).unwrap_or(0))
    }
}

const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2]) * interval
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - burst
if now < allow_at then
  return {0, allow_at - now, tat - now, math.floor((burst - (tat - now)) / interval)}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0, new_tat - now, math.floor((burst - (new_tat - now)) / interval)}
";

/// GCRA rate limits in Redis: the clock is the Redis server's (`TIME`),
/// so replicas with skewed clocks agree. Keys expire when their bucket is
/// full again. Cheap to clone.
#[derive(Clone)]
pub struct RedisRateLimitStore {
    conn: ConnectionManager,
    prefix: String,
    script: redis::Script,
}

impl std::fmt::Debug for RedisRateLimitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimitStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimitStore {
    /// Limits over `conn`, keys prefixed `tenancy:`.
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            prefix: "tenancy:".to_owned(),
            script: redis::Script::new(GCRA),
        }
    }

    /// Prefixes keys with `prefix`.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us.max(0)).unwrap_or(0))
}

#[async_trait]
impl RateLimitStore for RedisRateLimitStore {
    async fn check(
        &self,
        key: &str,
        limit: &RateLimit,
        cost: u32,
    ) -> Result<RateDecision, StoreError> {
        let mut conn = self.conn.clone();
        let (allowed, retry_after, reset_after, remaining): (i64, i64, i64, i64) = self
            .script
            .key(format!("{}rate:{key}", self.prefix))
            .arg(limit.interval_micros())
            .arg(limit.burst())
            .arg(cost)
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(RateDecision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            retry_after: micros(retry_after),
            reset_after: micros(reset_after),
            degraded: false,
        })
    }
}
