//! [`RedisCheck`]: the Redis behind shared quotas and rate limits, as a
//! check of `GET /ready`.

use redis::aio::ConnectionManager;
use tenancy_http::ReadinessCheck;

/// Redis answering `PING`, for
/// `TenancyBuilder::readiness_check(Arc::new(RedisCheck::new(conn)))`
/// beside the Redis quota or rate-limit store it serves. Shown as `redis`.
#[derive(Clone)]
pub struct RedisCheck {
    conn: ConnectionManager,
}

impl std::fmt::Debug for RedisCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCheck").finish_non_exhaustive()
    }
}

impl RedisCheck {
    /// A check over `conn` (a clone of the stores' connection).
    pub fn new(conn: ConnectionManager) -> Self {
        Self { conn }
    }
}

#[tenancy_http::async_trait]
impl ReadinessCheck for RedisCheck {
    fn name(&self) -> &str {
        "redis"
    }

    async fn check(&self) -> Result<(), tenancy_core::BoxError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn redis_answers_ping() {
        let Some(conn) = crate::testkit::redis::connection().await else {
            return;
        };
        let check = RedisCheck::new(conn);
        assert_eq!(check.name(), "redis");
        check.check().await.unwrap();
    }
}
