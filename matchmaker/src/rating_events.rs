//! Rating events: after the lobby's results consumer commits a match's
//! ratings ([`crate::lobby_results`]), it publishes each player's new rating
//! (`RatingChanged`, versioned by the player's rated games), and the
//! matchmaker keeps them as its read model ([`crate::ratings::BusRatings`]),
//! so it never opens the lobby's database. In-process ([`MemoryRatingEvents`])
//! or a Redis stream (`P:ratings`, [`crate::redis::RedisRatingEvents`]).
//!
//! The log keeps the newest [`KEPT_RATING_EVENTS`] events; readers follow it
//! with a cursor of their own. Delivery is at least once and in any order
//! across lobby replicas: the read model keeps the highest version per player,
//! so a replayed older event is harmless.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use rally_protocol::bus::{BusEvent, EventDecodeError, RatingEvent};
use tokio::sync::Notify;

use crate::error::BackendError;

/// Events kept in the log. The read model outlives them: a reader that starts
/// after an event was trimmed still finds its rating in the model.
pub const KEPT_RATING_EVENTS: usize = 100_000;

/// One entry read from the log: its cursor, and the event or why it was refused.
pub type RatingEntry = (String, Result<RatingEvent, EventDecodeError>);

/// Where rating events are published and read.
#[tonic::async_trait]
pub trait RatingEvents: Send + Sync + std::fmt::Debug + 'static {
    /// Appends an event.
    async fn publish(&self, event: &RatingEvent) -> Result<(), BackendError>;
    /// Up to `max` entries after `cursor` (`None`: from the oldest kept),
    /// each with the cursor to continue from; waits up to `wait` for the
    /// first. An entry this build cannot read comes back as its refusal, so
    /// the reader counts it and moves past it.
    async fn read_after(
        &self,
        cursor: Option<&str>,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<RatingEntry>, BackendError>;
}

#[derive(Debug, Default)]
struct MemoryLog {
    /// Sequence number of `entries[0]`.
    first: u64,
    /// Encoded events, decoded on reading as from Redis.
    entries: VecDeque<Vec<u8>>,
}

/// The in-process log (cursors are decimal sequence numbers). It holds the
/// encoded events, so readers decode them exactly as from Redis.
#[derive(Debug, Default)]
pub struct MemoryRatingEvents {
    log: Mutex<MemoryLog>,
    published: Notify,
}

impl MemoryRatingEvents {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry as raw bytes, as a producer of another version (or
    /// corruption) would.
    pub fn publish_bytes(&self, bytes: Vec<u8>) {
        {
            let mut log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            log.entries.push_back(bytes);
            while log.entries.len() > KEPT_RATING_EVENTS {
                log.entries.pop_front();
                log.first += 1;
            }
        }
        self.published.notify_waiters();
    }
}

#[tonic::async_trait]
impl RatingEvents for MemoryRatingEvents {
    async fn publish(&self, event: &RatingEvent) -> Result<(), BackendError> {
        self.publish_bytes(event.encode());
        Ok(())
    }

    async fn read_after(
        &self,
        cursor: Option<&str>,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<RatingEntry>, BackendError> {
        let after: Option<u64> = match cursor {
            None => None,
            Some(text) => Some(
                text.parse().map_err(|_| BackendError::Corrupt(format!("{text:?} is not a rating-events cursor")))?,
            ),
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let published = self.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            {
                // Critical sections are a few infallible deque operations.
                let log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let from = after.map_or(log.first, |seq| (seq + 1).max(log.first));
                let skip = (from - log.first) as usize;
                let entries: Vec<RatingEntry> = log
                    .entries
                    .iter()
                    .skip(skip)
                    .take(max.max(1))
                    .enumerate()
                    .map(|(idx, bytes)| ((from + idx as u64).to_string(), RatingEvent::decode(bytes)))
                    .collect();
                if !entries.is_empty() {
                    return Ok(entries);
                }
            }
            if tokio::time::timeout_at(deadline, published).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}
