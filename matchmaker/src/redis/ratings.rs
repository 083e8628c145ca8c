//! Rating events on a Redis stream (`P:ratings`, capped near
//! [`KEPT_RATING_EVENTS`] entries, one field `pb` holding the versioned
//! protobuf `RatingEvent` of `bus.proto`), and the matchmaker's read model as
//! a hash (`P:ratings:model`, one field per player id) that every matchmaker
//! replica shares. Each replica follows the stream from its own cursor and
//! applies events with one script that compares versions, so an older event
//! (a replay, another replica applying the same event late) never overwrites
//! a newer rating.

use std::time::Duration;

use rally_protocol::PlayerId;
use rally_protocol::bus::{BusEvent, EventDecodeError, RatingEvent};

use super::RedisConnection;
use super::bus::{EVENT_FIELD, entry_bytes};
use crate::error::BackendError;
use crate::rating_events::{KEPT_RATING_EVENTS, RatingEntry, RatingEvents};
use crate::ratings::{ModelRating, RatingModel};

/// A model value for a deleted account.
const DELETED: &str = "deleted";

/// KEYS = the model hash; ARGV = player id, `rated` or `deleted`, rated
/// games, the value's rest (rating, deviation, volatility). A value is
/// `deleted` or `<rated games> <rating> <deviation> <volatility>`. The rule
/// is `crate::ratings::supersedes`: a deletion is final, otherwise only more
/// rated games win. Returns 1 if it changed the model, else 0.
const APPLY: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current == 'deleted' then return 0 end
if ARGV[2] == 'deleted' then
  redis.call('HSET', KEYS[1], ARGV[1], 'deleted')
  return 1
end
if current then
  local games = tonumber(string.match(current, '^(%d+) '))
  if games and games >= tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. ' ' .. ARGV[4])
return 1
";

static APPLY_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(APPLY));

/// Rating events on a Redis stream.
#[derive(Clone, Debug)]
pub struct RedisRatingEvents {
    redis: RedisConnection,
}

impl RedisRatingEvents {
    /// The events at `<prefix>:ratings`.
    pub fn new(redis: RedisConnection) -> Self {
        Self { redis }
    }

    fn stream_key(&self) -> String {
        self.redis.key("ratings")
    }

    /// Appends an entry of raw bytes, as a producer of another version (or
    /// corruption) would: for tests, and for replaying entries by hand.
    pub async fn publish_bytes(&self, bytes: &[u8]) -> Result<(), BackendError> {
        let mut conn = self.redis.conn();
        self.redis
            .run(
                redis::cmd("XADD")
                    .arg(self.stream_key())
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(KEPT_RATING_EVENTS)
                    .arg("*")
                    .arg(EVENT_FIELD)
                    .arg(bytes)
                    .query_async::<String>(&mut conn),
            )
            .await
            .map(drop)
    }
}

#[tonic::async_trait]
impl RatingEvents for RedisRatingEvents {
    async fn publish(&self, event: &RatingEvent) -> Result<(), BackendError> {
        self.publish_bytes(&event.encode()).await
    }

    async fn read_after(
        &self,
        cursor: Option<&str>,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<RatingEntry>, BackendError> {
        let entries = self.redis.read_stream_after(&self.stream_key(), cursor, max, wait).await?;
        Ok(entries
            .into_iter()
            .map(|entry| {
                let event = match entry_bytes(&entry, EVENT_FIELD) {
                    Some(bytes) => RatingEvent::decode(bytes),
                    None => Err(EventDecodeError::Malformed {
                        event: <RatingEvent as BusEvent>::NAME,
                        reason: format!("no `{EVENT_FIELD}` field"),
                    }),
                };
                (entry.id, event)
            })
            .collect())
    }
}

/// The matchmaker's rating read model in a Redis hash, shared by replicas.
#[derive(Clone, Debug)]
pub struct RedisRatingModel {
    redis: RedisConnection,
}

impl RedisRatingModel {
    /// The model at `<prefix>:ratings:model`.
    pub fn new(redis: RedisConnection) -> Self {
        Self { redis }
    }

    fn hash_key(&self) -> String {
        self.redis.key("ratings:model")
    }
}

/// Reads a model value (`deleted`, or `<rated games> <rating> …`).
fn parse_value(value: &str) -> Option<ModelRating> {
    if value == DELETED {
        return Some(ModelRating::Deleted);
    }
    let mut parts = value.split(' ');
    let rated_games = parts.next()?.parse().ok()?;
    let rating: f64 = parts.next()?.parse().ok()?;
    rating.is_finite().then_some(ModelRating::Rated { rating, rated_games })
}

#[tonic::async_trait]
impl RatingModel for RedisRatingModel {
    async fn apply(&self, event: &RatingEvent) -> Result<bool, BackendError> {
        let mut invocation = APPLY_SCRIPT.prepare_invoke();
        invocation.key(self.hash_key()).arg(event.player_id().0);
        match event {
            RatingEvent::Changed(changed) => invocation
                .arg("rated")
                .arg(changed.rated_games)
                .arg(format!("{} {} {}", changed.rating, changed.deviation, changed.volatility)),
            RatingEvent::AccountDeleted { .. } => invocation.arg(DELETED).arg(0).arg(""),
        };
        let mut conn = self.redis.conn();
        let changed: i64 = self.redis.run(invocation.invoke_async(&mut conn)).await?;
        Ok(changed == 1)
    }

    async fn get(&self, player: PlayerId) -> Result<Option<ModelRating>, BackendError> {
        let mut conn = self.redis.conn();
        let value: Option<String> =
            self.redis.run(redis::cmd("HGET").arg(self.hash_key()).arg(player.0).query_async(&mut conn)).await?;
        match value {
            None => Ok(None),
            Some(value) => parse_value(&value).map(Some).ok_or_else(|| {
                BackendError::Corrupt(format!("rating model entry of player {} is unreadable: {value:?}", player.0))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_values_parse_and_garbage_does_not() {
        assert_eq!(parse_value("deleted"), Some(ModelRating::Deleted));
        assert_eq!(parse_value("3 1612.5 80 0.06"), Some(ModelRating::Rated { rating: 1612.5, rated_games: 3 }));
        assert_eq!(parse_value("x 1"), None);
        assert_eq!(parse_value("3 NaN 1 1"), None);
        assert_eq!(parse_value(""), None);
    }
}
