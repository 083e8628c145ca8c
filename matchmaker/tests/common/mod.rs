//! Test scaffolding: the backends (in memory, or on the Redis at
//! `RALLY_TEST_REDIS_URL` under a fresh key prefix), shards, tickets, waiting.

#![expect(unreachable_pub, reason = "a module of each test binary, not a library")]
// Not `expect`: each test binary uses a different part of this module, so
// dead code is found in some binaries and not in others.
#![allow(dead_code, reason = "each test binary uses a different part of this module")]

use std::sync::Arc;
use std::time::Duration;

use rally_matchmaker::config::MatchmakerConfig;
use rally_matchmaker::registry::ShardInfo;
use rally_matchmaker::{Backends, FixedRatings, Matchmaker, RedisConnection, TokenMinter};

/// Where a test's shared state lives.
pub enum Backend {
    Memory,
    Redis(RedisConnection),
}

impl Backend {
    pub fn memory() -> Self {
        Self::Memory
    }

    /// A fresh key prefix on the server at `RALLY_TEST_REDIS_URL`; fails if it is unreachable.
    pub async fn redis() -> Self {
        let url = std::env::var("RALLY_TEST_REDIS_URL").expect(
            "RALLY_TEST_REDIS_URL is not set: the Redis half of the matchmaker suite needs a server, e.g. \
             export RALLY_TEST_REDIS_URL=redis://127.0.0.1:6379",
        );
        let prefix = format!("rally-test-{:016x}", rand::random::<u64>());
        let redis = RedisConnection::connect_lazy(&url, &prefix).expect("redis url");
        redis.delete_all().await.expect("RALLY_TEST_REDIS_URL is set but Redis does not answer");
        Self::Redis(redis)
    }

    /// Backends over a connection of their own (a separate matchmaker
    /// process, as far as Redis can tell), sharing the same keys.
    pub fn own_connection(&self, shared: &Backends) -> Backends {
        match self {
            Self::Memory => shared.clone(),
            Self::Redis(redis) => {
                let url = std::env::var("RALLY_TEST_REDIS_URL").expect("RALLY_TEST_REDIS_URL");
                let own = RedisConnection::connect_lazy(&url, redis.prefix()).expect("redis url");
                Backends::redis(&own, Duration::from_secs(600))
            }
        }
    }

    pub fn backends(&self) -> Backends {
        match self {
            Self::Memory => Backends::in_memory(Duration::from_secs(600)),
            Self::Redis(redis) => Backends::redis(redis, Duration::from_secs(600)),
        }
    }

    pub async fn cleanup(self) {
        if let Self::Redis(redis) = self {
            redis.delete_all().await.expect("delete test keys");
        }
    }
}

/// One `#[tokio::test]` per scenario and backend; each scenario is
/// `async fn(&Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let backend = $crate::common::Backend::memory();
                    super::$scenario(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let backend = $crate::common::Backend::redis().await;
                    super::$scenario(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
    };
}

pub fn shard(name: &str, region: &str, capacity: u32) -> ShardInfo {
    ShardInfo {
        name: name.into(),
        address: "127.0.0.1:7777".into(),
        region: region.into(),
        capacity,
        version: "test".into(),
        certificate_sha256: "ab".repeat(32),
        // One process per name unless a test restarts it with another incarnation.
        incarnation: 1,
    }
}

pub fn minter() -> TokenMinter {
    TokenMinter::new(ed25519_dalek::SigningKey::from_bytes(&[42; 32]), 1)
}

/// A matchmaker over `backends` where every player is rated 1500 unless listed.
pub fn matchmaker(config: MatchmakerConfig, backends: Backends, ratings: &[(u64, f64)]) -> Matchmaker {
    let ratings = FixedRatings::new(ratings.iter().map(|&(id, rating)| (rally_protocol::PlayerId(id), rating)));
    Matchmaker::new(config, backends, Arc::new(ratings), minter()).expect("valid config")
}

/// Fails the test rather than hanging CI.
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future).await.expect("timed out after 60 s")
}

/// Polls `condition` until it holds, or fails after 30 s: for state held in
/// Redis or reached over the network (the registry, the bus, a reconnecting
/// client), which offers no change signal to wait on. In-process state is
/// waited on directly (`ProfileResults::wait_until`).
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
