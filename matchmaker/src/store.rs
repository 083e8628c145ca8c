//! The ticket store: every queued ticket and the state of every ticket, shared
//! by all matchmaker replicas. In memory by default; on Redis
//! ([`crate::redis::RedisTickets`]) when replicas run side by side.
//!
//! Two operations must be atomic. [`TicketStore::claim`]: a match takes its
//! tickets out of the queue only if every one of them is still queued, so no
//! ticket is ever assigned twice, whichever replica gets there first. And
//! [`TicketStore::insert`]: a ticket is stored only if none of its players
//! holds another live ticket, so a player never sits in two matches.
//!
//! **One seat per player.** Each player points to their newest ticket. The
//! ticket is *live*, and the player may not be put on another, while it is
//! queued, or matched into a match that has not ended. A match ends when its
//! result is on the results bus (the engine's seat consumer then calls
//! [`TicketStore::release_seats`]), or when it is aborted (its tickets become
//! `Aborted`). A ticket forgotten after the retention is not live either.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rally_protocol::{MatchId, PlayerId};

use crate::error::BackendError;
use crate::ticket::{Ticket, TicketId, TicketState};

/// What [`TicketStore::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insertion {
    /// The ticket is queued and now holds each of its players.
    Inserted,
    /// `player_id` already holds live ticket `ticket` (queued, or matched into
    /// a match that has not ended); nothing changed.
    Held {
        /// The first player of the new ticket found holding a live ticket.
        player_id: PlayerId,
        /// That player's live ticket.
        ticket: TicketId,
    },
}

/// Whether a ticket in `state` still holds its players.
pub(crate) fn holds_players(state: Option<&TicketState>) -> bool {
    matches!(state, Some(TicketState::Queued | TicketState::Matched(_)))
}

/// Where tickets and their states live.
#[tonic::async_trait]
pub trait TicketStore: Send + Sync + std::fmt::Debug + 'static {
    /// Atomically: stores a new ticket as queued and makes it each of its
    /// players' ticket, unless one of them holds another live ticket
    /// ([`Insertion::Held`], nothing changed).
    async fn insert(&self, ticket: &Ticket) -> Result<Insertion, BackendError>;
    /// The ids of `mode`'s queued tickets, oldest first (by enqueue time, then id).
    async fn queued(&self, mode: &str) -> Result<Vec<TicketId>, BackendError>;
    /// The tickets with these ids, `None` where unknown or forgotten.
    async fn tickets(&self, ids: &[TicketId]) -> Result<Vec<Option<Ticket>>, BackendError>;
    /// The states of these tickets, `None` where unknown or forgotten.
    async fn states(&self, ids: &[TicketId]) -> Result<Vec<Option<TicketState>>, BackendError>;
    /// Atomically: if every ticket is still queued, sets each to its new state
    /// and takes it out of `mode`'s queue, and returns `true`; otherwise changes
    /// nothing and returns `false`.
    async fn claim(&self, mode: &str, claims: &[(TicketId, TicketState)]) -> Result<bool, BackendError>;
    /// Atomically ends a queued ticket with `state` (cancelled or expired).
    /// Returns the ticket's state afterwards: `state`, or the state it had
    /// already reached; `None` if the ticket is unknown.
    async fn finish(&self, mode: &str, id: TicketId, state: TicketState) -> Result<Option<TicketState>, BackendError>;
    /// Overwrites the states of tickets that are out of the queue (aborted matches).
    async fn set_states(&self, updates: &[(TicketId, TicketState)]) -> Result<(), BackendError>;
    /// Match `match_id` ended: each of `players` whose ticket is matched into
    /// it holds no ticket any more (it may enqueue again). Players holding
    /// another ticket, or none, are left alone; calling twice is harmless.
    async fn release_seats(&self, match_id: MatchId, players: &[PlayerId]) -> Result<(), BackendError>;
}

#[derive(Debug, Default)]
struct MemoryState {
    tickets: HashMap<TicketId, Ticket>,
    states: HashMap<TicketId, TicketState>,
    queues: HashMap<String, BTreeSet<(u64, TicketId)>>,
    /// Each player's newest ticket, while it may still be live.
    players: HashMap<PlayerId, TicketId>,
    /// Finished tickets in the order they finished, to forget them after the retention.
    finished: VecDeque<(Instant, TicketId)>,
}

impl MemoryState {
    fn end(&mut self, id: TicketId, state: TicketState) {
        if let Some(ticket) = self.tickets.get(&id)
            && let Some(queue) = self.queues.get_mut(&ticket.mode)
        {
            queue.remove(&(ticket.enqueued_at_ms, id));
        }
        self.states.insert(id, state);
        self.finished.push_back((Instant::now(), id));
    }

    fn forget_older_than(&mut self, retention: Duration) {
        while let Some(&(at, id)) = self.finished.front() {
            if at.elapsed() < retention {
                break;
            }
            self.finished.pop_front();
            // A ticket may be in the list twice (matched, then aborted): only
            // forget it once its latest change is old too.
            if self.finished.iter().any(|&(_, other)| other == id) {
                continue;
            }
            if let Some(ticket) = self.tickets.remove(&id) {
                for member in &ticket.players {
                    if self.players.get(&member.player_id) == Some(&id) {
                        self.players.remove(&member.player_id);
                    }
                }
            }
            self.states.remove(&id);
        }
    }
}

/// The embedded ticket store: one process, one mutex.
#[derive(Debug)]
pub struct MemoryTickets {
    state: Mutex<MemoryState>,
    retention: Duration,
}

impl MemoryTickets {
    /// A store that forgets finished tickets after `retention`.
    pub fn new(retention: Duration) -> Self {
        Self { state: Mutex::new(MemoryState::default()), retention }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding the lock cannot leave a half-made change: every
        // critical section below is a handful of infallible map operations.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for MemoryTickets {
    fn default() -> Self {
        Self::new(Duration::from_secs(600))
    }
}

#[tonic::async_trait]
impl TicketStore for MemoryTickets {
    async fn insert(&self, ticket: &Ticket) -> Result<Insertion, BackendError> {
        let mut state = self.lock();
        state.forget_older_than(self.retention);
        for member in &ticket.players {
            if let Some(&held) = state.players.get(&member.player_id)
                && held != ticket.id
                && holds_players(state.states.get(&held))
            {
                return Ok(Insertion::Held { player_id: member.player_id, ticket: held });
            }
        }
        for member in &ticket.players {
            state.players.insert(member.player_id, ticket.id);
        }
        state.queues.entry(ticket.mode.clone()).or_default().insert((ticket.enqueued_at_ms, ticket.id));
        state.states.insert(ticket.id, TicketState::Queued);
        state.tickets.insert(ticket.id, ticket.clone());
        Ok(Insertion::Inserted)
    }

    async fn queued(&self, mode: &str) -> Result<Vec<TicketId>, BackendError> {
        let state = self.lock();
        Ok(state.queues.get(mode).map(|queue| queue.iter().map(|&(_, id)| id).collect()).unwrap_or_default())
    }

    async fn tickets(&self, ids: &[TicketId]) -> Result<Vec<Option<Ticket>>, BackendError> {
        let state = self.lock();
        Ok(ids.iter().map(|id| state.tickets.get(id).cloned()).collect())
    }

    async fn states(&self, ids: &[TicketId]) -> Result<Vec<Option<TicketState>>, BackendError> {
        let state = self.lock();
        Ok(ids.iter().map(|id| state.states.get(id).cloned()).collect())
    }

    async fn claim(&self, _mode: &str, claims: &[(TicketId, TicketState)]) -> Result<bool, BackendError> {
        let mut state = self.lock();
        if !claims.iter().all(|(id, _)| state.states.get(id) == Some(&TicketState::Queued)) {
            return Ok(false);
        }
        for (id, new_state) in claims {
            state.end(*id, new_state.clone());
        }
        Ok(true)
    }

    async fn finish(
        &self,
        _mode: &str,
        id: TicketId,
        new_state: TicketState,
    ) -> Result<Option<TicketState>, BackendError> {
        let mut state = self.lock();
        match state.states.get(&id) {
            None => Ok(None),
            Some(TicketState::Queued) => {
                state.end(id, new_state.clone());
                Ok(Some(new_state))
            }
            Some(other) => Ok(Some(other.clone())),
        }
    }

    async fn set_states(&self, updates: &[(TicketId, TicketState)]) -> Result<(), BackendError> {
        let mut state = self.lock();
        for (id, new_state) in updates {
            state.end(*id, new_state.clone());
        }
        Ok(())
    }

    async fn release_seats(&self, match_id: MatchId, players: &[PlayerId]) -> Result<(), BackendError> {
        let mut state = self.lock();
        for player in players {
            let Some(&held) = state.players.get(player) else { continue };
            if matches!(state.states.get(&held), Some(TicketState::Matched(assignment)) if assignment.match_id == match_id)
            {
                state.players.remove(player);
            }
        }
        Ok(())
    }
}
