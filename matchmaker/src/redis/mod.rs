//! The Redis backends: ticket store, shard registry and results bus on one
//! Redis, every key under one prefix. Multi-key changes that must be atomic
//! are Lua scripts (Redis runs a script without interleaving other commands).
//!
//! The connection is a `redis::aio::ConnectionManager` made lazily: the
//! matchmaker starts even when Redis is down, every call fails fast with
//! [`BackendError::Unavailable`] and a clear message, and the manager
//! reconnects with backoff in the background, so service resumes by itself
//! when Redis returns.

mod bus;
mod match_events;
mod ratings;
mod registry;
mod tickets;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use bus::RedisBus;
pub use match_events::RedisMatchEvents;
pub use ratings::{RedisRatingEvents, RedisRatingModel};
pub use registry::RedisRegistry;
pub use tickets::RedisTickets;

use crate::error::BackendError;

/// One Redis connection (multiplexed, shared by clones) and a key prefix.
#[derive(Clone)]
pub struct RedisConnection {
    manager: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
    /// Who holds the connection, for error messages ("the matchmaker", "the lobby").
    role: &'static str,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// A lazy connection to `url` (`redis://host:port/db`); keys start with
    /// `prefix:`. Only a malformed URL fails here; an unreachable server makes
    /// each call fail with [`BackendError::Unavailable`] until it is back.
    pub fn connect_lazy(url: &str, prefix: &str) -> Result<Self, BackendError> {
        let client = redis::Client::open(url)
            .map_err(|err| BackendError::Unavailable(format!("invalid Redis URL {url:?}: {err}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(3)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|err| BackendError::Unavailable(format!("Redis connection manager: {err}")))?;
        Ok(Self { manager, prefix: prefix.into(), timeout: Duration::from_secs(5), role: "the matchmaker" })
    }

    /// Names the process holding the connection in its error messages
    /// (default "the matchmaker"; the lobby's results consumer and shards set their own).
    #[must_use]
    pub fn with_role(mut self, role: &'static str) -> Self {
        self.role = role;
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// Runs one Redis operation with a deadline, mapping failures to [`BackendError`].
    pub(crate) async fn run<T, F>(&self, operation: F) -> Result<T, BackendError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(result) => result.map_err(|err| self.error(err)),
            Err(_) => Err(BackendError::Unavailable(format!(
                "Redis did not answer within {:?}; {} reconnects on its own, retry shortly",
                self.timeout, self.role
            ))),
        }
    }

    /// `err` as a [`BackendError`] whose message names who reconnects.
    pub(crate) fn error(&self, err: redis::RedisError) -> BackendError {
        match BackendError::from(err) {
            BackendError::Unavailable(message) => BackendError::Unavailable(message.replace(
                "the connection is re-established on its own",
                &format!("{} reconnects on its own", self.role),
            )),
            other => other,
        }
    }

    /// Runs one Redis operation with a deadline, leaving its own error to the caller.
    pub(crate) async fn run_raw<T, F>(&self, operation: F) -> Result<redis::RedisResult<T>, BackendError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        tokio::time::timeout(self.timeout, operation).await.map_err(|_| {
            BackendError::Unavailable(format!(
                "Redis did not answer within {:?}; {} reconnects on its own, retry shortly",
                self.timeout, self.role
            ))
        })
    }

    /// The entries of the stream at `key` after `cursor` (from the start when
    /// `None`), at most `max`; polls until some arrive or `wait` has passed
    /// (then none). Plain `XREAD`, no consumer group: for streams every
    /// reader follows with its own cursor.
    pub(crate) async fn read_stream_after(
        &self,
        key: &str,
        cursor: Option<&str>,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<redis::streams::StreamId>, BackendError> {
        /// Longest pause between two polls of an empty stream.
        const POLL_INTERVAL: Duration = Duration::from_millis(20);
        let deadline = tokio::time::Instant::now() + wait;
        let from = cursor.unwrap_or("0-0");
        loop {
            let mut conn = self.conn();
            let reply: Option<redis::streams::StreamReadReply> = self
                .run(
                    redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(max.max(1))
                        .arg("STREAMS")
                        .arg(key)
                        .arg(from)
                        .query_async(&mut conn),
                )
                .await?;
            let entries: Vec<_> =
                reply.map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect()).unwrap_or_default();
            if !entries.is_empty() {
                return Ok(entries);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }

    /// Deletes every key under this prefix (tests clean up with it).
    pub async fn delete_all(&self) -> Result<u64, BackendError> {
        let mut conn = self.conn();
        let pattern = format!("{}:*", self.prefix);
        let mut deleted = 0u64;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn),
                )
                .await?;
            if !keys.is_empty() {
                let n: u64 = self.run(redis::cmd("DEL").arg(&keys).query_async(&mut conn)).await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}
