//! The results bus on a Redis stream (`P:results`), one field `pb` holding the
//! `MatchResult` as the versioned protobuf message of `bus.proto` (converted
//! by `rally_protocol::bus`). Entries of releases before it, JSON in a field
//! `result`, are still read. An entry this build cannot read (a version it
//! does not know, garbage) is dead-lettered: copied to `P:results:dead` with
//! the group and the reason, counted in `rally_bus_events_refused_total` and
//! acknowledged, so it never blocks the group and is never misread; an
//! upgraded consumer can replay it from there. Consumer groups give
//! at-least-once delivery; `XAUTOCLAIM` hands entries idle with a
//! dead consumer to a live one. Reads poll without `BLOCK`, so they never tie
//! up the shared multiplexed connection; an empty read waits a short while.
//! A match's outcome is settled with `P:settled:<match id>` (a marker with a
//! TTL) set and the entry appended in one script, so a match has one outcome.

use std::collections::HashMap;
use std::time::Duration;

use rally_protocol::bus::{BusEvent, EventDecodeError};
use rally_protocol::results::MatchResult;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::RedisConnection;
use crate::bus::{ConsumerLag, Delivery, ResultsBus, SETTLED_TTL, Settlement, count_refused};
use crate::error::BackendError;

/// Longest pause between two polls of an empty stream.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Dead-lettered entries kept per stream.
const KEPT_DEAD: usize = 10_000;

/// The field of a stream entry that holds its protobuf event.
pub(super) const EVENT_FIELD: &str = "pb";

/// The bytes of `entry`'s field `field`, if it has one.
pub(super) fn entry_bytes<'a>(entry: &'a StreamId, field: &str) -> Option<&'a [u8]> {
    match entry.map.get(field) {
        Some(redis::Value::BulkString(bytes)) => Some(bytes),
        _ => None,
    }
}

/// Reads a results entry: the protobuf in `pb`, or the JSON older releases
/// wrote in `result`.
fn read_result(entry: &StreamId) -> Result<MatchResult, EventDecodeError> {
    if let Some(bytes) = entry_bytes(entry, EVENT_FIELD) {
        return MatchResult::decode(bytes);
    }
    let malformed = |reason: String| EventDecodeError::Malformed { event: <MatchResult as BusEvent>::NAME, reason };
    match entry_bytes(entry, "result") {
        Some(json) => serde_json::from_slice(json).map_err(|err| malformed(format!("legacy JSON entry: {err}"))),
        None => Err(malformed(format!("no `{EVENT_FIELD}` field"))),
    }
}

/// KEYS = the match's settled marker, the stream; ARGV = marker TTL ms, result bytes.
/// Returns the entry id, or nil when the match was already settled.
const SETTLE: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return false end
return redis.call('XADD', KEYS[2], '*', 'pb', ARGV[2])
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

    /// The dead-letter stream, `<prefix>:results:dead`.
    pub fn dead_letter_key(&self) -> String {
        self.redis.key("results:dead")
    }

    /// Turns stream entries into deliveries. Entries that cannot be read (a
    /// version this build does not know, corruption, an entry deleted from
    /// the stream) are dead-lettered and acknowledged with a warning, so one
    /// bad entry cannot block the group forever and none is misread.
    async fn decode(&self, group: &str, entries: Vec<StreamId>) -> Result<Vec<Delivery>, BackendError> {
        let mut deliveries = Vec::with_capacity(entries.len());
        let mut poison = Vec::new();
        for entry in entries {
            if entry.map.is_empty() {
                // Deleted from the stream (trimmed) while pending: nothing to read or keep.
                tracing::warn!(id = %entry.id, group, "results entry gone from the stream; acknowledged");
                poison.push(entry.id);
                continue;
            }
            match read_result(&entry) {
                Ok(result) => deliveries.push(Delivery { id: entry.id, result }),
                Err(err) => {
                    tracing::warn!(
                        id = %entry.id,
                        group,
                        %err,
                        dead_letters = %self.dead_letter_key(),
                        "results entry refused: dead-lettered and acknowledged"
                    );
                    count_refused("results", err.reason());
                    self.dead_letter(group, &entry, &err).await?;
                    poison.push(entry.id);
                }
            }
        }
        if !poison.is_empty() {
            self.ack(group, &poison).await?;
        }
        Ok(deliveries)
    }

    /// Copies a refused entry, with its id, the group and the reason, to the
    /// dead-letter stream (capped near [`KEPT_DEAD`] entries).
    async fn dead_letter(&self, group: &str, entry: &StreamId, err: &EventDecodeError) -> Result<(), BackendError> {
        let mut command = redis::cmd("XADD");
        command
            .arg(self.dead_letter_key())
            .arg("MAXLEN")
            .arg("~")
            .arg(KEPT_DEAD)
            .arg("*")
            .arg("entry")
            .arg(&entry.id)
            .arg("group")
            .arg(group)
            .arg("reason")
            .arg(err.to_string());
        let mut fields: Vec<(&String, &[u8])> = entry
            .map
            .iter()
            .filter_map(|(field, value)| match value {
                redis::Value::BulkString(bytes) => Some((field, bytes.as_slice())),
                _ => None,
            })
            .collect();
        fields.sort();
        for (field, bytes) in fields {
            command.arg(format!("field:{field}")).arg(bytes);
        }
        let mut conn = self.redis.conn();
        self.redis.run(command.query_async::<String>(&mut conn)).await.map(drop)
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
        let bytes = result.encode();
        let mut conn = self.redis.conn();
        self.redis
            .run(redis::cmd("XADD").arg(self.stream_key()).arg("*").arg(EVENT_FIELD).arg(bytes).query_async(&mut conn))
            .await
    }

    async fn settle(&self, result: &MatchResult) -> Result<Settlement, BackendError> {
        let bytes = result.encode();
        let mut invocation = SETTLE_SCRIPT.prepare_invoke();
        invocation
            .key(self.redis.key(&format!("settled:{}", result.match_id.0)))
            .key(self.stream_key())
            .arg(SETTLED_TTL.as_millis() as u64)
            .arg(bytes);
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
