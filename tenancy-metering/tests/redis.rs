//! The quota and rate-limit conformance suites against Redis, and what a
//! lost Redis connection does to each limit's fail-open or fail-closed
//! choice.
//!
//! Needs Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`); skipped
//! when unreachable unless `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers report failure by panicking

tenancy_metering::quota_conformance_tests!(tenancy_metering::testkit::redis::quota_fixture());

mod rate_limits {
    tenancy_metering::rate_limit_conformance_tests!(
        tenancy_metering::testkit::redis::rate_fixture()
    );
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tenancy_metering::redis::{RedisRateLimitStore, connect};
use tenancy_metering::testkit::redis::{connection, redis_url, unique_prefix};
use tenancy_metering::{OnStoreError, RateLimit, RateLimiter};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A TCP relay to Redis that the test can cut and restore, as a network
/// partition or a Redis restart would.
struct Relay {
    addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Relay {
    async fn start(addr: SocketAddr, upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut pipes = JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                pipes.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { addr, tasks }
    }

    /// Cuts every connection and stops listening.
    async fn cut(mut self) -> SocketAddr {
        self.tasks.shutdown().await;
        self.addr
    }
}

fn upstream() -> SocketAddr {
    let url = redis_url();
    let host_port = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .unwrap()
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_follows_each_limits_choice() {
    if connection().await.is_none() {
        return;
    }
    let relay = Relay::start("127.0.0.1:0".parse().unwrap(), upstream()).await;
    let conn = connect(
        &format!("redis://{}", relay.addr),
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    let limiter = RateLimiter::new(Arc::new(
        RedisRateLimitStore::new(conn).with_prefix(&unique_prefix()),
    ));
    let open = RateLimit::new(100, Duration::from_secs(1))
        .unwrap()
        .on_store_error(OnStoreError::Open);
    let closed = RateLimit::new(100, Duration::from_secs(1))
        .unwrap()
        .on_store_error(OnStoreError::Closed);
    for limit in [&open, &closed] {
        let d = limiter.check("login", limit, 1).await;
        assert!(d.allowed && !d.degraded, "{d:?}");
    }

    let addr = relay.cut().await;
    let d = limiter.check("login", &open, 1).await;
    assert!(d.allowed && d.degraded, "fail open: {d:?}");
    let d = limiter.check("export", &closed, 1).await;
    assert!(!d.allowed && d.degraded, "fail closed: {d:?}");
    assert_eq!(d.retry_after, Duration::from_secs(1));

    // Redis is back: the connection manager reconnects and checks are
    // answered by Redis again.
    let _relay = Relay::start(addr, upstream()).await;
    let mut recovered = false;
    for _ in 0..50 {
        let d = limiter.check("export", &closed, 1).await;
        if !d.degraded {
            assert!(d.allowed);
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "checks did not recover after Redis came back");
}
