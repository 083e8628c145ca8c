//! Running several lobby processes on one database: the Redis they share for
//! what the database does not carry. With [`LobbyRedisConfig`] set, chat's
//! live fan-out crosses processes over Redis pub/sub (the database stays the
//! source of truth), presence is kept in Redis with an expiry each process
//! refreshes, and the per-account limits (logins, chat sends) are counted in
//! Redis. Without it the lobby is one process and keeps all of that in memory.
//!
//! Every key and pub/sub channel lives under [`LobbyRedisConfig::prefix`].
//! A Redis outage degrades, it does not fail requests: chat is stored and
//! delivered on this process at once and on others once Redis is back (their
//! subscriptions resync from the database); limits fall back to this
//! process's own; presence answers UNAVAILABLE.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::LobbyError;

/// How long one Redis command may take before the lobby treats Redis as down.
pub(crate) const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// The Redis that a deployment's lobby replicas share (`rally lobby --redis-url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyRedisConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Key and channel prefix, the same for every role of one deployment.
    pub prefix: String,
}

impl LobbyRedisConfig {
    /// Redis at `url`, keys under `prefix`.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self { url: url.into(), prefix: prefix.into() }
    }
}

/// One process's link to the shared Redis: a multiplexed connection that
/// reconnects by itself for commands, the client for pub/sub connections,
/// and the name this process uses for itself there. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RedisLink {
    client: redis::Client,
    manager: ConnectionManager,
    prefix: String,
    replica_id: String,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink").field("prefix", &self.prefix).field("replica_id", &self.replica_id).finish()
    }
}

impl RedisLink {
    /// A link that connects on first use (so a lobby starts while Redis is down).
    pub(crate) fn connect_lazy(config: &LobbyRedisConfig) -> Result<Self, LobbyError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|err| LobbyError::Internal(format!("invalid Redis URL {:?}: {err}", config.url)))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(REDIS_COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|err| LobbyError::Internal(format!("Redis connection manager: {err}")))?;
        let mut id = [0_u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        Ok(Self { client, manager, prefix: config.prefix.clone(), replica_id: hex::encode(id) })
    }

    /// `<prefix>:<suffix>`.
    pub(crate) fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// This process's name among the replicas (random per start).
    pub(crate) fn replica_id(&self) -> &str {
        &self.replica_id
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// Runs one Redis operation within [`REDIS_COMMAND_TIMEOUT`]; the error says what failed.
    pub(crate) async fn run<T>(&self, operation: impl Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
        match tokio::time::timeout(REDIS_COMMAND_TIMEOUT, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {} ms", REDIS_COMMAND_TIMEOUT.as_millis())),
        }
    }
}
