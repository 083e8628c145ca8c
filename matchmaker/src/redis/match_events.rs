//! Match-formed events on a Redis stream (`P:matches`, capped near
//! [`KEPT_EVENTS`] entries), one field `pb` holding the `MatchFormed` as the
//! versioned protobuf message of `bus.proto` (JSON in a field `formed`, as
//! releases before it wrote, is still read). Readers follow it with `XREAD`
//! from their own cursor (an entry id), polling like the results bus; an entry
//! they cannot read is skipped, logged and counted in
//! `rally_bus_events_refused_total{stream="matches"}`.

use std::time::Duration;

use rally_protocol::bus::{BusEvent, EventDecodeError};
use redis::streams::StreamId;

use super::RedisConnection;
use super::bus::{EVENT_FIELD, entry_bytes};
use crate::bus::count_refused;
use crate::error::BackendError;
use crate::match_events::{KEPT_EVENTS, MATCH_FORMED_VERSION, MatchEvents, MatchFormed};

/// Reads an entry: the protobuf in `pb`, or the JSON older releases wrote in `formed`.
fn read_formed(entry: &StreamId) -> Result<MatchFormed, EventDecodeError> {
    if let Some(bytes) = entry_bytes(entry, EVENT_FIELD) {
        return MatchFormed::decode(bytes);
    }
    const NAME: &str = <MatchFormed as BusEvent>::NAME;
    let malformed = |reason: String| EventDecodeError::Malformed { event: NAME, reason };
    let Some(json) = entry_bytes(entry, "formed") else {
        return Err(malformed(format!("no `{EVENT_FIELD}` field")));
    };
    let formed: MatchFormed =
        serde_json::from_slice(json).map_err(|err| malformed(format!("legacy JSON entry: {err}")))?;
    if formed.v > MATCH_FORMED_VERSION {
        return Err(EventDecodeError::UnknownVersion { event: NAME, found: formed.v, known: MATCH_FORMED_VERSION });
    }
    Ok(formed)
}

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
        let bytes = formed.encode();
        let mut conn = self.redis.conn();
        self.redis
            .run(
                redis::cmd("XADD")
                    .arg(self.stream_key())
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(KEPT_EVENTS)
                    .arg("*")
                    .arg(EVENT_FIELD)
                    .arg(bytes)
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
        let entries = self.redis.read_stream_after(&self.stream_key(), cursor, max, wait).await?;
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            match read_formed(&entry) {
                Ok(formed) => events.push((entry.id, formed)),
                // Skipped, but the cursor moves past it: the caller
                // sees no event, so hand back a marker it can skip.
                Err(err) => {
                    tracing::warn!(id = %entry.id, %err, "match-formed event refused; skipped");
                    count_refused("matches", err.reason());
                    events.push((entry.id, MatchFormed::skipped()));
                }
            }
        }
        Ok(events)
    }
}
