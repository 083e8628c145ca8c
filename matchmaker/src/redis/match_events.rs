//! Match-formed events on a Redis stream (`P:matches`, capped near
//! [`KEPT_EVENTS`] entries), one field `formed` holding the `MatchFormed` as
//! JSON. Readers follow it with `XREAD` from their own cursor (an entry id),
//! polling like the results bus.

use std::time::Duration;

use redis::streams::StreamReadReply;

use super::RedisConnection;
use crate::error::BackendError;
use crate::match_events::{KEPT_EVENTS, MATCH_FORMED_VERSION, MatchEvents, MatchFormed};

/// Longest pause between two polls of an empty stream.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Match-formed events on a Redis stream.
#[derive(Clone, Debug)]
pub struct RedisMatchEvents {
    redis: RedisConnection,
}

impl RedisMatchEvents {
    /// The events at `<prefix>:matches`.
    pub fn new(redis: RedisConnection) -> Self {
        Self { redis }
    }

    fn stream_key(&self) -> String {
        self.redis.key("matches")
    }
}

#[tonic::async_trait]
impl MatchEvents for RedisMatchEvents {
    async fn announce(&self, formed: &MatchFormed) -> Result<(), BackendError> {
        let json = serde_json::to_string(formed)?;
        let mut conn = self.redis.conn();
        self.redis
            .run(
                redis::cmd("XADD")
                    .arg(self.stream_key())
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(KEPT_EVENTS)
                    .arg("*")
                    .arg("formed")
                    .arg(json)
                    .query_async::<String>(&mut conn),
            )
            .await
            .map(drop)
    }

    async fn read_after(
        &self,
        cursor: Option<&str>,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<(String, MatchFormed)>, BackendError> {
        let deadline = tokio::time::Instant::now() + wait;
        let from = cursor.unwrap_or("0-0");
        loop {
            let mut conn = self.redis.conn();
            let reply: Option<StreamReadReply> = self
                .redis
                .run(
                    redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(max.max(1))
                        .arg("STREAMS")
                        .arg(self.stream_key())
                        .arg(from)
                        .query_async(&mut conn),
                )
                .await?;
            let entries: Vec<_> =
                reply.map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect()).unwrap_or_default();
            if !entries.is_empty() {
                let mut events = Vec::with_capacity(entries.len());
                for entry in entries {
                    let decoded = entry
                        .get::<String>("formed")
                        .and_then(|json| serde_json::from_str::<MatchFormed>(&json).ok())
                        .filter(|formed| formed.v <= MATCH_FORMED_VERSION);
                    match decoded {
                        Some(formed) => events.push((entry.id, formed)),
                        // Skipped, but the cursor moves past it: the caller
                        // sees no event, so hand back a marker it can skip.
                        None => {
                            tracing::warn!(id = %entry.id, "unreadable match-formed event; skipped");
                            events.push((entry.id, MatchFormed::skipped()));
                        }
                    }
                }
                return Ok(events);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }
}
