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
//!
//! **Idempotency keys.** An insert may carry the client's key for the request
//! ([`IdempotencyKey`], scoped per leader). The key is stored with the ticket,
//! in the same atomic step, and kept as long as the ticket (its queue life
//! plus the retention); an insert whose key is already stored changes nothing
//! and answers [`Insertion::Replayed`] with the ticket it made first, so a
//! retried Enqueue whose answer was lost finds its ticket on any replica.
//!
//! **Claims are fenced by the reservation's deadline.** The engine reserves a
//! shard slot tentatively before claiming ([`crate::registry`]);
//! [`TicketStore::claim_by`] refuses a claim made after the reservation's
//! confirm-by time, judged on the same clock (Redis's own on Redis), so a
//! reservation another replica dropped as overdue can never get tickets.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rally_protocol::{MatchId, PlayerId};

use crate::error::BackendError;
use crate::ticket::{Ticket, TicketId, TicketState};

/// A client's idempotency key for an Enqueue: 1 to 64 printable ASCII
/// characters, U+0021 to U+007E (no spaces). Scoped per leader: two players'
/// equal keys are unrelated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Most characters in a key.
    pub const MAX_LEN: usize = 64;

    /// Checks `key`; the error says what is wrong with it.
    pub fn new(key: &str) -> Result<Self, String> {
        if key.is_empty() || key.len() > Self::MAX_LEN {
            return Err(format!("an idempotency key has 1 to {} characters, not {}", Self::MAX_LEN, key.len()));
        }
        if let Some(bad) = key.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "an idempotency key is printable ASCII without spaces (U+0021 to U+007E); it holds {bad:?}"
            ));
        }
        Ok(Self(key.to_owned()))
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What [`TicketStore::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insertion {
    /// The ticket is queued and now holds each of its players.
    Inserted,
    /// The leader already made ticket `ticket` with this idempotency key
    /// (whatever its state now); nothing changed.
    Replayed {
        /// The ticket first made with the key.
        ticket: TicketId,
    },
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
    /// players' ticket (and, with `key`, the leader's ticket for that key),
    /// unless the leader already used `key` ([`Insertion::Replayed`]) or one
    /// of the players holds another live ticket ([`Insertion::Held`]); then
    /// nothing changed. The leader is the ticket's first player.
    async fn insert(&self, ticket: &Ticket, key: Option<&IdempotencyKey>) -> Result<Insertion, BackendError>;
    /// The ids of `mode`'s queued tickets, oldest first (by enqueue time, then id).
    async fn queued(&self, mode: &str) -> Result<Vec<TicketId>, BackendError>;
    /// The tickets with these ids, `None` where unknown or forgotten.
    async fn tickets(&self, ids: &[TicketId]) -> Result<Vec<Option<Ticket>>, BackendError>;
    /// The states of these tickets, `None` where unknown or forgotten.
    async fn states(&self, ids: &[TicketId]) -> Result<Vec<Option<TicketState>>, BackendError>;
    /// Atomically: if every ticket is still queued, sets each to its new state
    /// and takes it out of `mode`'s queue, and returns `true`; otherwise changes
    /// nothing and returns `false`.
    async fn claim(&self, mode: &str, claims: &[(TicketId, TicketState)]) -> Result<bool, BackendError> {
        self.claim_by(mode, claims, u64::MAX, 0).await
    }
    /// [`TicketStore::claim`], refused (`false`, nothing changed) once the
    /// clock passes `by_ms`: a tentative reservation's confirm-by time. The
    /// clock is the registry's: Redis's own on Redis (`now_ms` is ignored
    /// there), `now_ms` in memory.
    async fn claim_by(
        &self,
        mode: &str,
        claims: &[(TicketId, TicketState)],
        by_ms: u64,
        now_ms: u64,
    ) -> Result<bool, BackendError>;
    /// Atomically ends a queued ticket with `state` (cancelled or expired).
    /// Returns the ticket's state afterwards: `state`, or the state it had
    /// already reached; `None` if the ticket is unknown.
    async fn finish(&self, mode: &str, id: TicketId, state: TicketState) -> Result<Option<TicketState>, BackendError>;
    /// Overwrites the states of tickets that are out of the queue.
    async fn set_states(&self, updates: &[(TicketId, TicketState)]) -> Result<(), BackendError>;
    /// Atomically sets `state` on those of `ids` that are matched into
    /// `match_id` (an aborted match), leaving any other ticket alone (still
    /// queued: the match was never claimed; or in another match); returns
    /// the ids changed.
    async fn abort_matched(
        &self,
        match_id: MatchId,
        ids: &[TicketId],
        state: &TicketState,
    ) -> Result<Vec<TicketId>, BackendError>;
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
    /// Idempotency keys: (leader, key) → the ticket made with it.
    keys: HashMap<(PlayerId, IdempotencyKey), TicketId>,
    /// The key each keyed ticket was made with, to forget it with the ticket.
    key_of: HashMap<TicketId, (PlayerId, IdempotencyKey)>,
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
                if let Some(keyed) = self.key_of.remove(&id) {
                    self.keys.remove(&keyed);
                }
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
    async fn insert(&self, ticket: &Ticket, key: Option<&IdempotencyKey>) -> Result<Insertion, BackendError> {
        let mut state = self.lock();
        state.forget_older_than(self.retention);
        let keyed = key.zip(ticket.players.first()).map(|(key, leader)| (leader.player_id, key.clone()));
        if let Some(&made) = keyed.as_ref().and_then(|keyed| state.keys.get(keyed)) {
            return Ok(Insertion::Replayed { ticket: made });
        }
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
        if let Some(keyed) = keyed {
            state.keys.insert(keyed.clone(), ticket.id);
            state.key_of.insert(ticket.id, keyed);
        }
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

    async fn claim_by(
        &self,
        _mode: &str,
        claims: &[(TicketId, TicketState)],
        by_ms: u64,
        now_ms: u64,
    ) -> Result<bool, BackendError> {
        let mut state = self.lock();
        if now_ms > by_ms {
            return Ok(false);
        }
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

    async fn abort_matched(
        &self,
        match_id: MatchId,
        ids: &[TicketId],
        new_state: &TicketState,
    ) -> Result<Vec<TicketId>, BackendError> {
        let mut state = self.lock();
        let mut changed = Vec::new();
        for &id in ids {
            if matches!(state.states.get(&id), Some(TicketState::Matched(assignment)) if assignment.match_id == match_id)
            {
                state.end(id, new_state.clone());
                changed.push(id);
            }
        }
        Ok(changed)
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
