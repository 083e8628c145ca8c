//! The ticket store: every queued ticket and the state of every ticket, shared
//! by all matchmaker replicas. In memory by default; on Redis
//! ([`crate::redis::RedisTickets`]) when replicas run side by side.
//!
//! The one operation that must be atomic is [`TicketStore::claim`]: a match
//! takes its tickets out of the queue only if every one of them is still
//! queued, so no ticket is ever assigned twice, whichever replica gets there first.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::BackendError;
use crate::ticket::{Ticket, TicketId, TicketState};

/// Where tickets and their states live.
#[tonic::async_trait]
pub trait TicketStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new ticket as queued.
    async fn insert(&self, ticket: &Ticket) -> Result<(), BackendError>;
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
}

#[derive(Debug, Default)]
struct MemoryState {
    tickets: HashMap<TicketId, Ticket>,
    states: HashMap<TicketId, TicketState>,
    queues: HashMap<String, BTreeSet<(u64, TicketId)>>,
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
            self.tickets.remove(&id);
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
    async fn insert(&self, ticket: &Ticket) -> Result<(), BackendError> {
        let mut state = self.lock();
        state.forget_older_than(self.retention);
        state.queues.entry(ticket.mode.clone()).or_default().insert((ticket.enqueued_at_ms, ticket.id));
        state.states.insert(ticket.id, TicketState::Queued);
        state.tickets.insert(ticket.id, ticket.clone());
        Ok(())
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
}
