//! The results bus on a Redis stream (`P:results`), one field `result` holding
//! the `MatchResult` as JSON (readable with `redis-cli XRANGE`). Consumer
//! groups give at-least-once delivery; `XAUTOCLAIM` hands entries idle with a
//! dead consumer to a live one. Reads poll without `BLOCK`, so they never tie
//! up the shared multiplexed connection; an empty read waits a short while.
//! A match's outcome is settled with `P:settled:<match id>` (a marker with a
//! TTL) set and the entry appended in one script, so a match has one outcome.

use std::collections::HashMap;
use std::time::Duration;

use rally_protocol::results::MatchResult;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::RedisConnection;
use crate::bus::{ConsumerLag, Delivery, ResultsBus, SETTLED_TTL, Settlement};
use crate::error::BackendError;

/// Longest pause between two polls of an empty stream.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// KEYS = the match's settled marker, the stream; ARGV = marker TTL ms, result JSON.
/// Returns the entry id, or nil when the match was already settled.
const SETTLE: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return false end
return redis.call('XADD', KEYS[2], '*', 'result', ARGV[2])
";

static SETTLE_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(SETTLE));

/// The results bus on a Redis stream.
#[derive(Clone, Debug)]
pub struct RedisBus {
    redis: RedisConnection,
}

impl RedisBus {
    /// The bus at `<prefix>:results`.
    pub fn new(redis: RedisConnection) -> Self {
        Self { redis }
    }

    fn stream_key(&self) -> String {
        self.redis.key("results")
    }

    /// Turns stream entries into deliveries. Entries that cannot be read (a
    /// newer writer, corruption) are acknowledged and dropped with a warning,
    /// so one bad entry cannot block the group forever.
    async fn decode(&self, group: &str, entries: Vec<StreamId>) -> Result<Vec<Delivery>, BackendError> {
        let mut deliveries = Vec::with_capacity(entries.len());
        let mut poison = Vec::new();
        for entry in entries {
            let decoded = entry
                .get::<String>("result")
                .ok_or_else(|| "no `result` field".to_owned())
                .and_then(|json| serde_json::from_str::<MatchResult>(&json).map_err(|err| err.to_string()));
            match decoded {
                Ok(result) => deliveries.push(Delivery { id: entry.id, result }),
                Err(err) => {
                    tracing::warn!(id = %entry.id, %err, "unreadable results entry; acknowledged and skipped");
                    poison.push(entry.id);
                }
            }
        }
        if !poison.is_empty() {
            self.ack(group, &poison).await?;
        }
        Ok(deliveries)
    }

    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        from: &str,
    ) -> Result<Vec<StreamId>, BackendError> {
        let mut conn = self.redis.conn();
        let reply: Option<StreamReadReply> = self
            .redis
            .run(
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(group)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(max.max(1))
                    .arg("STREAMS")
                    .arg(self.stream_key())
                    .arg(from)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(reply.map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect()).unwrap_or_default())
    }
}

#[tonic::async_trait]
impl ResultsBus for RedisBus {
    async fn publish(&self, result: &MatchResult) -> Result<String, BackendError> {
        let json = serde_json::to_string(result)?;
        let mut conn = self.redis.conn();
        self.redis
            .run(redis::cmd("XADD").arg(self.stream_key()).arg("*").arg("result").arg(json).query_async(&mut conn))
            .await
    }

    async fn settle(&self, result: &MatchResult) -> Result<Settlement, BackendError> {
        let json = serde_json::to_string(result)?;
        let mut invocation = SETTLE_SCRIPT.prepare_invoke();
        invocation
            .key(self.redis.key(&format!("settled:{}", result.match_id.0)))
            .key(self.stream_key())
            .arg(SETTLED_TTL.as_millis() as u64)
            .arg(json);
        let mut conn = self.redis.conn();
        let id: Option<String> = self.redis.run(invocation.invoke_async(&mut conn)).await?;
        Ok(id.map_or(Settlement::AlreadySettled, Settlement::Published))
    }

    async fn ensure_group(&self, group: &str) -> Result<(), BackendError> {
        let mut conn = self.redis.conn();
        let created: redis::RedisResult<()> = self
            .redis
            .run_raw(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(self.stream_key())
                    .arg(group)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut conn),
            )
            .await?;
        match created {
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            other => other.map_err(|err| self.redis.error(err)),
        }
    }

    async fn read_new(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BackendError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let entries = self.read_group(group, consumer, max, ">").await?;
            if !entries.is_empty() {
                return self.decode(group, entries).await;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }

    async fn read_pending(&self, group: &str, consumer: &str, max: usize) -> Result<Vec<Delivery>, BackendError> {
        let entries = self.read_group(group, consumer, max, "0").await?;
        // Entries deleted from the stream come back with no fields; acknowledge those too.
        self.decode(group, entries).await
    }

    async fn claim_stale(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>, BackendError> {
        let mut conn = self.redis.conn();
        let mut start = "0-0".to_owned();
        let mut claimed = Vec::new();
        loop {
            let reply: StreamAutoClaimReply = self
                .redis
                .run(
                    redis::cmd("XAUTOCLAIM")
                        .arg(self.stream_key())
                        .arg(group)
                        .arg(consumer)
                        .arg(min_idle.as_millis() as u64)
                        .arg(&start)
                        .arg("COUNT")
                        .arg(max.max(1))
                        .query_async(&mut conn),
                )
                .await?;
            claimed.extend(reply.claimed);
            if reply.next_stream_id == "0-0" || claimed.len() >= max {
                break;
            }
            start = reply.next_stream_id;
        }
        self.decode(group, claimed).await
    }

    async fn lag(&self, group: &str) -> Result<Option<ConsumerLag>, BackendError> {
        let mut conn = self.redis.conn();
        let groups: redis::RedisResult<Vec<HashMap<String, redis::Value>>> =
            self.redis.run_raw(redis::cmd("XINFO").arg("GROUPS").arg(self.stream_key()).query_async(&mut conn)).await?;
        let groups = match groups {
            Ok(groups) => groups,
            // No stream yet: nothing behind.
            Err(err) if err.code() == Some("ERR") && err.to_string().contains("no such key") => return Ok(None),
            Err(err) => return Err(self.redis.error(err)),
        };
        let number = |value: Option<&redis::Value>| match value {
            Some(redis::Value::Int(n)) => Some((*n).max(0) as u64),
            _ => None,
        };
        for info in groups {
            let name: Option<String> = info.get("name").and_then(|value| redis::from_redis_value(value.clone()).ok());
            if name.as_deref() == Some(group) {
                // `lag` is nil when Redis cannot tell (entries deleted); count none then.
                return Ok(Some(ConsumerLag {
                    pending: number(info.get("pending")).unwrap_or(0),
                    undelivered: number(info.get("lag")).unwrap_or(0),
                }));
            }
        }
        Ok(None)
    }

    async fn ack(&self, group: &str, ids: &[String]) -> Result<(), BackendError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.conn();
        self.redis
            .run(redis::cmd("XACK").arg(self.stream_key()).arg(group).arg(ids).query_async::<i64>(&mut conn))
            .await
            .map(drop)
    }
}
