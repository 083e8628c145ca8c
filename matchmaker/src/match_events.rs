//! Match-formed events: the matchmaker announces each match it forms, and the
//! lobby's follower ([`crate::lobby_results::follow_matches`]) opens the
//! match's chat channel for its players. In-process by default
//! ([`MemoryMatchEvents`]); a Redis stream (`P:matches`, see
//! [`crate::redis::RedisMatchEvents`]) when the lobby and the matchmaker run
//! apart, each entry the versioned protobuf `MatchFormed` of `bus.proto`.
//!
//! The log keeps the newest [`KEPT_EVENTS`] events and readers follow it with
//! a cursor of their own; handling must be idempotent (creating a channel
//! twice is harmless). A reader that falls further behind than the log keeps
//! misses events; the match's result still closes (and, if need be, creates)
//! its channel.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::BackendError;

/// Events kept in the log.
pub const KEPT_EVENTS: usize = 10_000;

/// The event and its version live with the other bus events in
/// `rally_protocol::bus` (`bus.proto`), which also converts them to bytes.
pub use rally_protocol::bus::{MATCH_FORMED_VERSION, MatchFormed};

/// Where match-formed events are announced and read.
#[tonic::async_trait]
pub trait MatchEvents: Send + Sync + std::fmt::Debug + 'static {
    /// Appends an event.
    async fn announce(&self, formed: &MatchFormed) -> Result<(), BackendError>;
    /// Up to `max` events after `cursor` (`None`: from the oldest kept), each
    /// with the cursor to continue from; waits up to `wait` for the first.
    async fn read_after(
        &self,
        cursor: Option<&str>,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<(String, MatchFormed)>, BackendError>;
}

#[derive(Debug, Default)]
struct MemoryLog {
    /// Sequence number of `events[0]`.
    first: u64,
    events: VecDeque<MatchFormed>,
}

/// The in-process log (cursors are decimal sequence numbers).
#[derive(Debug, Default)]
pub struct MemoryMatchEvents {
    log: Mutex<MemoryLog>,
    announced: Notify,
}

impl MemoryMatchEvents {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryLog> {
        // Critical sections are a few infallible deque operations.
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl MatchEvents for MemoryMatchEvents {
    async fn announce(&self, formed: &MatchFormed) -> Result<(), BackendError> {
        {
            let mut log = self.lock();
            log.events.push_back(formed.clone());
            while log.events.len() > KEPT_EVENTS {
                log.events.pop_front();
                log.first += 1;
            }
        }
        self.announced.notify_waiters();
        Ok(())
    }

    async fn read_after(
        &self,
        cursor: Option<&str>,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<(String, MatchFormed)>, BackendError> {
        let after: Option<u64> = match cursor {
            None => None,
            Some(text) => Some(
                text.parse().map_err(|_| BackendError::Corrupt(format!("{text:?} is not a match-events cursor")))?,
            ),
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let announced = self.announced.notified();
            tokio::pin!(announced);
            announced.as_mut().enable();
            {
                let log = self.lock();
                let from = after.map_or(log.first, |seq| (seq + 1).max(log.first));
                let skip = (from - log.first) as usize;
                let events: Vec<(String, MatchFormed)> = log
                    .events
                    .iter()
                    .skip(skip)
                    .take(max.max(1))
                    .enumerate()
                    .map(|(idx, event)| ((from + idx as u64).to_string(), event.clone()))
                    .collect();
                if !events.is_empty() {
                    return Ok(events);
                }
            }
            if tokio::time::timeout_at(deadline, announced).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}
