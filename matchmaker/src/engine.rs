//! The matchmaker engine: enqueue, cancel and watch tickets, and the matching
//! round that turns queued tickets into reserved, token-carrying assignments.
//!
//! A round: reap shards whose heartbeat lapsed or that restarted (their
//! matches are reported aborted, one outcome per match id, and their tickets
//! told), read the live shards, then per mode read the queue, expire old tickets, [`propose`] matches, and commit each one:
//! reserve a slot on the chosen shard tentatively (atomic in the registry,
//! with a confirm-by deadline), mint one connect token per seat, claim the
//! tickets (atomic in the ticket store, refused past the deadline), then
//! confirm the reservation. If another replica claimed a ticket first, the
//! reservation is dropped. Replicas may run rounds at the same time on the
//! same Redis: the two atomic steps are what keep a ticket from being
//! assigned twice and a shard from being over-reserved.
//!
//! **A replica killed mid-commit** leaves at most a tentative reservation.
//! Each round also settles the reservations left unconfirmed past their
//! deadline ([`crate::registry::ShardRegistry::overdue`]): claimed (the dead
//! replica got as far as the claim) → confirmed, the match stands and its
//! players learn of it through any replica's WatchTicket; not claimed →
//! dropped, and its tickets, still queued, are matched by whichever replica
//! runs the next round. A shard lost while holding a reservation that was
//! never claimed reports nothing for it and leaves its tickets queued.
//! [`Matchmaker::set_commit_fault`] halts commits at those points, for tests.
//!
//! Watchers subscribe to a ticket's state; the engine tells local watchers at
//! once, and a poller re-reads watched tickets from the store so changes made
//! by other replicas arrive too: a client whose WatchTicket stream broke with
//! its replica opens it again on any other and sees the same ticket.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rally_protocol::control::EndReason;
use rally_protocol::results::{MatchResult, SeatResult};
use rally_protocol::{MatchId, PlayerId};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument as _;

use crate::bots::{BotFill, BotSeat};
use crate::bus::{ConsumerConfig, ConsumerHandle, MemoryBus, ResultHandler, ResultsBus, Settlement, run_consumer};
use crate::config::{MatchmakerConfig, ModeConfig};
use crate::error::{BackendError, MatchmakerError};
use crate::match_events::{MATCH_FORMED_VERSION, MatchEvents, MatchFormed, MemoryMatchEvents};
use crate::matching::{Occupant, Proposal, ProposedSeat, propose};
use crate::ratings::RatingSource;
use crate::redis::{RedisBus, RedisConnection, RedisMatchEvents, RedisRegistry, RedisTickets};
use crate::registry::{
    Confirmation, ExpiredShard, MatchRecord, MemoryRegistry, Reservation, SeatRecord, ShardEntry, ShardInfo, ShardLoss,
    ShardRegistry,
};
use crate::store::{IdempotencyKey, Insertion, MemoryTickets, TicketStore};
use crate::ticket::{Assignment, PartyMember, RosterSeat, SeatAssignment, Ticket, TicketId, TicketState};
use crate::token::{SeatGrant, TokenMinter};

/// How long an Enqueue that finds a player seated waits for the seat to be
/// freed (the match's result on its way) before answering `AlreadyExists`.
pub const SEAT_RELEASE_GRACE: Duration = Duration::from_secs(2);

/// Most commits of one round in flight at once.
const MAX_COMMITS_IN_FLIGHT: usize = 256;

/// The platform's one wall clock, re-exported where the engine's callers look for it.
pub use rally_transport::unix_ms;

/// Whether a result records a match that never properly finished (shard
/// failure or nobody played): such results change no rating.
pub fn is_aborted(result: &MatchResult) -> bool {
    result.winner.is_none() && matches!(result.reason, EndReason::ShardShutdown | EndReason::Abandoned)
}

/// The shared backends.
#[derive(Clone, Debug)]
pub struct Backends {
    /// Tickets and their states.
    pub tickets: Arc<dyn TicketStore>,
    /// Shards and reservations.
    pub registry: Arc<dyn ShardRegistry>,
    /// Match results.
    pub bus: Arc<dyn ResultsBus>,
    /// Matches formed (the lobby opens their chat channels).
    pub events: Arc<dyn MatchEvents>,
}

impl Backends {
    /// All in this process (the embedded default).
    pub fn in_memory(ticket_retention: Duration) -> Self {
        Self {
            tickets: Arc::new(MemoryTickets::new(ticket_retention)),
            registry: Arc::new(MemoryRegistry::new()),
            bus: Arc::new(MemoryBus::new()),
            events: Arc::new(MemoryMatchEvents::new()),
        }
    }

    /// All on one Redis, under `redis`'s key prefix.
    pub fn redis(redis: &RedisConnection, ticket_retention: Duration) -> Self {
        Self {
            tickets: Arc::new(RedisTickets::new(redis.clone(), ticket_retention.as_millis() as u64)),
            registry: Arc::new(RedisRegistry::new(redis.clone())),
            bus: Arc::new(RedisBus::new(redis.clone())),
            events: Arc::new(RedisMatchEvents::new(redis.clone())),
        }
    }
}

/// What a player asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnqueueRequest {
    /// The game mode.
    pub mode: String,
    /// The other party members (already authenticated by the caller of [`Matchmaker::enqueue`]).
    pub party: Vec<PlayerId>,
    /// Preferred region.
    pub region: Option<String>,
    /// Measured latencies per region, ms; the lowest is the preference when `region` is empty.
    pub latencies_ms: Vec<(String, u32)>,
    /// Display names of the leader and party members (from their access
    /// tokens); a player not listed is shown as `player-<id>`.
    pub display_names: Vec<(PlayerId, String)>,
    /// The client's key for this request: a retry with the same key returns
    /// the ticket the first one made, on any replica (see [`crate::store`]).
    pub idempotency_key: Option<IdempotencyKey>,
}

/// A step of committing a match after which [`CommitFault`] may halt it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitStep {
    /// The shard slot is reserved (tentatively); no ticket is claimed yet.
    Reserved,
    /// The tickets are claimed; the reservation is not confirmed, no watcher
    /// told, the match not announced.
    Claimed,
}

/// A test seam: decides whether a commit stops dead after a step, leaving
/// exactly what a replica killed at that point leaves in the shared backends
/// (nothing is undone, no one is told). Production engines have none; tests
/// install one with [`Matchmaker::set_commit_fault`] to show that the other
/// replicas heal what is left.
pub trait CommitFault: Send + Sync + 'static {
    /// Whether the commit of `match_id` halts after `step`.
    fn halts_after(&self, step: CommitStep, match_id: MatchId) -> bool;
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// Tickets queued at the start of the round, all modes.
    pub queued: usize,
    /// Tickets matched.
    pub matched_tickets: usize,
    /// Matches made.
    pub matches: usize,
    /// Tickets that expired.
    pub expired: usize,
    /// Proposed matches that found no shard with room (they stay queued).
    pub no_capacity: usize,
    /// Proposed matches lost to another replica (a ticket was already claimed).
    pub conflicts: usize,
    /// Matches reported aborted because their shard's heartbeat lapsed or
    /// it restarted (matches that already had a result are not counted).
    pub aborted_matches: usize,
    /// Overdue tentative reservations whose tickets had been claimed: confirmed.
    pub confirmed_overdue: usize,
    /// Overdue tentative reservations whose tickets were never claimed
    /// (their replica died mid-commit): dropped, the tickets stay queued.
    pub dropped_overdue: usize,
}

enum Commit {
    Matched {
        tickets: usize,
        waits_ms: Vec<u64>,
    },
    Conflict,
    NoCapacity,
    NoBots,
    /// Stopped by the [`CommitFault`] seam.
    Halted,
    /// Claimed, but its shard was lost before the reservation was confirmed: reported aborted.
    Lost,
}

type Watchers = HashMap<TicketId, watch::Sender<Option<TicketState>>>;

struct Inner {
    config: MatchmakerConfig,
    modes: Vec<Arc<ModeConfig>>,
    backends: Backends,
    ratings: Arc<dyn RatingSource>,
    minter: TokenMinter,
    bots: RwLock<Option<Arc<dyn BotFill>>>,
    fault: RwLock<Option<Arc<dyn CommitFault>>>,
    watchers: Mutex<Watchers>,
    /// Per mode: queued tickets already read, so a round only fetches new ones.
    cache: tokio::sync::Mutex<HashMap<String, HashMap<TicketId, Arc<Ticket>>>>,
}

/// The matchmaker. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Matchmaker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Matchmaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matchmaker")
            .field("modes", &self.inner.modes.iter().map(|mode| mode.name.as_str()).collect::<Vec<_>>())
            .field("backends", &self.inner.backends)
            .finish_non_exhaustive()
    }
}

/// How a ticket's state ranks: watchers only ever move forward.
fn rank(state: &TicketState) -> u8 {
    match state {
        TicketState::Queued => 0,
        TicketState::Matched(_) => 1,
        _ => 2,
    }
}

impl Matchmaker {
    /// A matchmaker over `backends`, rating players with `ratings`, signing
    /// connect tokens with `minter`.
    pub fn new(
        config: MatchmakerConfig,
        backends: Backends,
        ratings: Arc<dyn RatingSource>,
        minter: TokenMinter,
    ) -> Result<Self, MatchmakerError> {
        config.validate()?;
        let modes = config.modes.iter().cloned().map(Arc::new).collect();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                modes,
                backends,
                ratings,
                minter,
                bots: RwLock::new(None),
                fault: RwLock::new(None),
                watchers: Mutex::new(HashMap::new()),
                cache: tokio::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The embedded form: in-memory ticket store, registry and bus. Their
    /// handles are in [`Matchmaker::backends`], for in-process shards
    /// ([`crate::shard_agent`]) and results consumers.
    pub fn embedded(
        config: MatchmakerConfig,
        ratings: Arc<dyn RatingSource>,
        minter: TokenMinter,
    ) -> Result<Self, MatchmakerError> {
        let backends = Backends::in_memory(Duration::from_millis(config.ticket_retention_ms));
        Self::new(config, backends, ratings, minter)
    }

    /// The shared backends.
    pub fn backends(&self) -> &Backends {
        &self.inner.backends
    }

    /// The settings.
    pub fn config(&self) -> &MatchmakerConfig {
        &self.inner.config
    }

    /// The token minter (its public key goes to shards).
    pub fn minter(&self) -> &TokenMinter {
        &self.inner.minter
    }

    /// Installs the hook that fills empty seats with bots.
    pub fn set_bot_fill(&self, bots: Arc<dyn BotFill>) {
        *self.inner.bots.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(bots);
    }

    /// Installs the test seam that halts commits ([`CommitFault`]).
    pub fn set_commit_fault(&self, fault: Arc<dyn CommitFault>) {
        *self.inner.fault.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fault);
    }

    fn halts_after(&self, step: CommitStep, match_id: MatchId) -> bool {
        let fault = self.inner.fault.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        fault.as_ref().is_some_and(|fault| fault.halts_after(step, match_id))
    }

    fn bots(&self) -> Option<Arc<dyn BotFill>> {
        self.inner.bots.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn mode(&self, name: &str) -> Result<Arc<ModeConfig>, MatchmakerError> {
        self.inner.modes.iter().find(|mode| mode.name == name).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.inner.modes.iter().map(|mode| mode.name.as_str()).collect();
            MatchmakerError::invalid("mode", format!("unknown game mode {name:?}; this matchmaker serves {known:?}"))
        })
    }

    /// Queues `leader` (and `request.party`) for a mode.
    pub async fn enqueue(
        &self,
        leader: PlayerId,
        request: EnqueueRequest,
        now_ms: u64,
    ) -> Result<Ticket, MatchmakerError> {
        let mode = self.mode(&request.mode)?;
        let mut players = vec![leader];
        for member in request.party {
            if players.contains(&member) {
                return Err(MatchmakerError::invalid("party", format!("player {} is listed twice", member.0)));
            }
            players.push(member);
        }
        if players.len() > usize::from(mode.max_party) {
            return Err(MatchmakerError::invalid(
                "party",
                format!("{} players; mode {:?} takes parties of at most {}", players.len(), mode.name, mode.max_party),
            ));
        }
        let region = match request.region.filter(|region| !region.is_empty()) {
            Some(region) => Some(region),
            None => {
                request.latencies_ms.iter().min_by_key(|(name, ms)| (*ms, name.clone())).map(|(name, _)| name.clone())
            }
        };
        if region.as_ref().is_some_and(|region| region.len() > 64) {
            return Err(MatchmakerError::invalid("region", "at most 64 bytes"));
        }
        if mode.house_bots && self.bots().is_none() {
            return Err(MatchmakerError::FailedPrecondition(format!(
                "mode {} needs house bots, and this matchmaker has none; queue for another mode",
                mode.name
            )));
        }
        let mut members = Vec::with_capacity(players.len());
        for player_id in players {
            let rating = self.inner.ratings.rating(player_id).await?.unwrap_or(self.inner.config.default_rating);
            let display_name = request
                .display_names
                .iter()
                .find(|(id, _)| *id == player_id)
                .map_or_else(|| format!("player-{}", player_id.0), |(_, name)| name.clone());
            members.push(PartyMember { player_id, rating, display_name });
        }
        let ticket = Ticket {
            id: TicketId::random(),
            mode: mode.name.clone(),
            players: members,
            region,
            enqueued_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(mode.ticket_ttl_ms),
        };
        // A player whose match just ended may ask again before the match's
        // result has freed the seat (the shard tells players first, then
        // publishes): a seat conflict is retried for a short grace.
        let grace = tokio::time::Instant::now() + SEAT_RELEASE_GRACE;
        let key = request.idempotency_key.as_ref();
        loop {
            match self.inner.backends.tickets.insert(&ticket, key).await? {
                Insertion::Inserted => break,
                Insertion::Replayed { ticket: made } => return self.replayed(&ticket, key, made).await,
                Insertion::Held { player_id, ticket: held } => {
                    match self.held(leader, &ticket, player_id, held).await {
                        Err(MatchmakerError::AlreadyExists(_))
                            if tokio::time::Instant::now() < grace && self.seated(held).await? =>
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        answer => return answer,
                    }
                }
            }
        }
        metrics::counter!("rally_matchmaker_tickets_enqueued_total").increment(1);
        Ok(ticket)
    }

    /// The answer to an Enqueue whose idempotency key already made ticket
    /// `made`: that ticket (whatever its state) when the request is the same
    /// (mode and players), else `FailedPrecondition`.
    async fn replayed(
        &self,
        wanted: &Ticket,
        key: Option<&IdempotencyKey>,
        made: TicketId,
    ) -> Result<Ticket, MatchmakerError> {
        let key = key.map_or("", IdempotencyKey::as_str);
        let existing = self.inner.backends.tickets.tickets(&[made]).await?.pop().flatten().ok_or_else(|| {
            MatchmakerError::FailedPrecondition(format!(
                "idempotency key {key:?} was used for ticket {made}, which is forgotten; enqueue with a new key"
            ))
        })?;
        let ids = |ticket: &Ticket| {
            let mut ids: Vec<u64> = ticket.players.iter().map(|member| member.player_id.0).collect();
            ids.sort_unstable();
            ids
        };
        if existing.mode != wanted.mode || ids(&existing) != ids(wanted) {
            return Err(MatchmakerError::FailedPrecondition(format!(
                "idempotency key {key:?} was used for a different Enqueue (ticket {made}: mode {:?}, players {:?}); \
                 use a new key for a new request",
                existing.mode,
                ids(&existing)
            )));
        }
        metrics::counter!("rally_matchmaker_enqueues_replayed_total").increment(1);
        Ok(existing)
    }

    /// Whether ticket `id` is matched (its players hold seats).
    async fn seated(&self, id: TicketId) -> Result<bool, MatchmakerError> {
        let state = self.inner.backends.tickets.states(&[id]).await?.pop().flatten();
        Ok(matches!(state, Some(TicketState::Matched(_))))
    }

    /// The answer to an Enqueue one of whose players (`player`) already holds
    /// live ticket `held`: that ticket again when it is the same request
    /// repeated (the leader's queued ticket, same mode, same players), else
    /// `AlreadyExists` naming it, so the client can watch it.
    async fn held(
        &self,
        leader: PlayerId,
        wanted: &Ticket,
        player: PlayerId,
        held: TicketId,
    ) -> Result<Ticket, MatchmakerError> {
        let tickets = &self.inner.backends.tickets;
        let existing = tickets.tickets(&[held]).await?.pop().flatten();
        let state = tickets.states(&[held]).await?.pop().flatten();
        let same_players = |ticket: &Ticket| {
            let mut a: Vec<PlayerId> = ticket.players.iter().map(|member| member.player_id).collect();
            let mut b: Vec<PlayerId> = wanted.players.iter().map(|member| member.player_id).collect();
            a.sort_unstable();
            b.sort_unstable();
            a == b
        };
        let who =
            if player == leader { format!("player {} (you)", player.0) } else { format!("party member {}", player.0) };
        match (existing, state) {
            (Some(existing), Some(TicketState::Queued))
                if existing.mode == wanted.mode && same_players(&existing) && existing.has_player(leader) =>
            {
                Ok(existing)
            }
            (Some(existing), Some(TicketState::Queued)) => Err(MatchmakerError::AlreadyExists(format!(
                "{who} is already queued with ticket {held} for mode {}; Cancel it first, or WatchTicket it",
                existing.mode
            ))),
            (_, Some(TicketState::Matched(assignment))) => Err(MatchmakerError::AlreadyExists(format!(
                "{who} still holds a seat in match {} (ticket {held}); WatchTicket {held} for its assignment, and \
                 enqueue again once it has ended",
                assignment.match_id
            ))),
            // It ended between the insert and this read: trying again will find the player free.
            _ => Err(MatchmakerError::Backend(BackendError::Unavailable(format!(
                "ticket {held} of player {} ended while this one was made; retry",
                player.0
            )))),
        }
    }

    async fn ticket_for(&self, player: PlayerId, id: TicketId) -> Result<Ticket, MatchmakerError> {
        let ticket = self.inner.backends.tickets.tickets(&[id]).await?.pop().flatten().ok_or_else(|| {
            MatchmakerError::NotFound(format!("no ticket {id}: unknown, or finished long enough ago to be forgotten"))
        })?;
        if !ticket.has_player(player) {
            return Err(MatchmakerError::PermissionDenied(format!("ticket {id} belongs to other players")));
        }
        Ok(ticket)
    }

    /// Cancels a queued ticket on behalf of one of its players; returns its
    /// state afterwards (a ticket already matched stays matched).
    pub async fn cancel(&self, player: PlayerId, id: TicketId) -> Result<TicketState, MatchmakerError> {
        let ticket = self.ticket_for(player, id).await?;
        let state = self
            .inner
            .backends
            .tickets
            .finish(&ticket.mode, id, TicketState::Cancelled)
            .await?
            .ok_or_else(|| MatchmakerError::NotFound(format!("no ticket {id}")))?;
        self.notify(id, &state);
        Ok(state)
    }

    /// Subscribes to a ticket's state on behalf of one of its players.
    pub async fn watch(
        &self,
        player: PlayerId,
        id: TicketId,
    ) -> Result<(Ticket, watch::Receiver<Option<TicketState>>), MatchmakerError> {
        let ticket = self.ticket_for(player, id).await?;
        let receiver = self.lock_watchers().entry(id).or_insert_with(|| watch::channel(None).0).subscribe();
        // Read after subscribing: a change made after this read still arrives.
        if let Some(state) = self.inner.backends.tickets.states(&[id]).await?.pop().flatten() {
            self.notify(id, &state);
        }
        Ok((ticket, receiver))
    }

    fn lock_watchers(&self) -> std::sync::MutexGuard<'_, Watchers> {
        // Critical sections are single map operations.
        self.inner.watchers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells local watchers of `id` its new state (never moving backwards).
    fn notify(&self, id: TicketId, state: &TicketState) {
        let watchers = self.lock_watchers();
        if let Some(sender) = watchers.get(&id) {
            sender.send_if_modified(|current| {
                let forward = current.as_ref().is_none_or(|old| old != state && rank(state) >= rank(old));
                if forward {
                    *current = Some(state.clone());
                }
                forward
            });
        }
    }

    /// Re-reads the states of watched, unfinished tickets (changes made by
    /// other replicas) and forgets tickets nobody watches any more.
    pub async fn poll_watched(&self) -> Result<(), MatchmakerError> {
        let ids: Vec<TicketId> = {
            let mut watchers = self.lock_watchers();
            watchers.retain(|_, sender| sender.receiver_count() > 0);
            watchers
                .iter()
                .filter(|(_, sender)| !sender.borrow().as_ref().is_some_and(TicketState::is_final))
                .map(|(&id, _)| id)
                .collect()
        };
        for chunk in ids.chunks(1000) {
            let states = self.inner.backends.tickets.states(chunk).await?;
            for (&id, state) in chunk.iter().zip(states) {
                if let Some(state) = state {
                    self.notify(id, &state);
                }
            }
        }
        Ok(())
    }

    /// Runs one matching round at `now_ms` (see the module docs).
    pub async fn run_round(&self, now_ms: u64) -> Result<RoundStats, MatchmakerError> {
        let started = Instant::now();
        let mut stats = RoundStats::default();
        let backends = &self.inner.backends;
        for lost in backends.registry.reap_expired(now_ms).await? {
            let why = match lost.loss {
                ShardLoss::Lapsed => "shard heartbeat lapsed",
                ShardLoss::Restarted => "shard restarted",
            };
            tracing::warn!(shard = %lost.name, matches = lost.matches.len(), "{why}; its matches are aborted");
            stats.aborted_matches += self.abort_matches(lost, now_ms).await?;
        }
        self.settle_overdue(now_ms, &mut stats).await?;
        let mut shards: Vec<(ShardEntry, u32)> = backends
            .registry
            .shards(now_ms)
            .await?
            .into_iter()
            .filter(|shard| !shard.draining)
            .map(|shard| {
                let free = shard.free();
                (shard, free)
            })
            .collect();
        let bots = self.bots();
        let mut cache = self.inner.cache.lock().await;
        for mode in &self.inner.modes {
            let ids = backends.tickets.queued(&mode.name).await?;
            stats.queued += ids.len();
            let known = cache.entry(mode.name.clone()).or_default();
            let present: HashSet<TicketId> = ids.iter().copied().collect();
            known.retain(|id, _| present.contains(id));
            let missing: Vec<TicketId> = ids.iter().copied().filter(|id| !known.contains_key(id)).collect();
            for chunk in missing.chunks(1000) {
                for (&id, ticket) in chunk.iter().zip(backends.tickets.tickets(chunk).await?) {
                    match ticket {
                        Some(ticket) => {
                            known.insert(id, Arc::new(ticket));
                        }
                        // Its keys outlived nobody's round: drop it from the queue.
                        None => drop(backends.tickets.finish(&mode.name, id, TicketState::Expired).await?),
                    }
                }
            }
            let mut queue: Vec<Arc<Ticket>> = ids.iter().filter_map(|id| known.get(id).cloned()).collect();
            let (expired, live): (Vec<_>, Vec<_>) = queue.drain(..).partition(|ticket| ticket.expires_at_ms <= now_ms);
            for ticket in expired {
                let state = backends.tickets.finish(&mode.name, ticket.id, TicketState::Expired).await?;
                if let Some(state) = state {
                    if state == TicketState::Expired {
                        stats.expired += 1;
                        metrics::counter!("rally_matchmaker_tickets_expired_total").increment(1);
                    }
                    self.notify(ticket.id, &state);
                }
                known.remove(&ticket.id);
            }
            metrics::gauge!("rally_matchmaker_queued", "mode" => mode.name.clone()).set(live.len() as f64);
            let refs: Vec<&Ticket> = live.iter().map(|ticket| &**ticket).collect();
            let proposals = propose(mode, &refs, now_ms, bots.is_some());
            let mut in_flight: JoinSet<Result<Commit, MatchmakerError>> = JoinSet::new();
            for proposal in proposals {
                let (tickets, seats) = match seats_by_ticket(&proposal, &live) {
                    Ok(seated) => seated,
                    Err(err) => {
                        tracing::error!(%err, "refusing a proposed match; its tickets stay queued");
                        continue;
                    }
                };
                let Some(shard_idx) = choose_shard(&shards, proposal.region.as_deref(), proposal.any_region) else {
                    stats.no_capacity += 1;
                    continue;
                };
                shards[shard_idx].1 -= 1;
                let shard = shards[shard_idx].0.info.clone();
                let this = self.clone();
                let mode = mode.clone();
                let bots = bots.clone();
                let commit = async move { this.commit(&mode, tickets, seats, shard, bots, now_ms).await };
                in_flight.spawn(commit.instrument(tracing::Span::current()));
                while in_flight.len() >= MAX_COMMITS_IN_FLIGHT {
                    if let Some(done) = in_flight.join_next().await {
                        tally(&mut stats, done);
                    }
                }
            }
            while let Some(done) = in_flight.join_next().await {
                tally(&mut stats, done);
            }
        }
        metrics::histogram!("rally_matchmaker_round_seconds").record(started.elapsed().as_secs_f64());
        if stats.no_capacity > 0 {
            metrics::counter!("rally_matchmaker_no_capacity_total").increment(stats.no_capacity as u64);
            tracing::debug!(
                waiting = stats.no_capacity,
                "no shard has room for some matches; their tickets stay queued"
            );
        }
        metrics::gauge!("rally_matchmaker_waiting_for_capacity").set(stats.no_capacity as f64);
        Ok(stats)
    }

    /// Decides the fate of tentative reservations left unconfirmed past their
    /// deadline (see the module docs). Claims made after a deadline are
    /// refused, so the states read here are final for the match.
    async fn settle_overdue(&self, now_ms: u64, stats: &mut RoundStats) -> Result<(), MatchmakerError> {
        let backends = &self.inner.backends;
        for record in backends.registry.overdue(now_ms).await? {
            let states = backends.tickets.states(&record.tickets).await?;
            if states.iter().any(|state| matched_into(state.as_ref(), record.match_id)) {
                tracing::info!(match_id = %record.match_id, shard = %record.shard,
                    "a match claimed but not confirmed (its replica stopped mid-commit); confirmed");
                if backends.registry.confirm(&record.shard, record.match_id).await? == Confirmation::Gone {
                    let lost =
                        ExpiredShard { name: record.shard.clone(), loss: ShardLoss::Lapsed, matches: vec![record] };
                    stats.aborted_matches += self.abort_matches(lost, now_ms).await?;
                }
                stats.confirmed_overdue += 1;
            } else if backends.registry.drop_unconfirmed(&record.shard, record.match_id).await? {
                tracing::info!(match_id = %record.match_id, shard = %record.shard,
                    "a reservation never claimed (its replica stopped mid-commit); dropped, its tickets stay queued");
                stats.dropped_overdue += 1;
                metrics::counter!("rally_matchmaker_reservations_dropped_total").increment(1);
            }
        }
        Ok(())
    }

    async fn commit(
        &self,
        mode: &ModeConfig,
        tickets: Vec<Arc<Ticket>>,
        seats: Vec<ProposedSeat>,
        shard: ShardInfo,
        bots: Option<Arc<dyn BotFill>>,
        now_ms: u64,
    ) -> Result<Commit, MatchmakerError> {
        let match_id = MatchId(rand::random::<u64>().max(1));
        let n_bots = seats.iter().filter(|seat| seat.occupant == Occupant::Bot).count();
        let mut bot_ids = Vec::new();
        if n_bots > 0 {
            let rating = tickets.iter().map(|ticket| ticket.rating()).sum::<f64>() / tickets.len().max(1) as f64;
            match bots.as_ref().and_then(|bots| bots.bot_players(&mode.name, n_bots, rating)) {
                Some(ids) if ids.len() == n_bots => bot_ids = ids,
                _ => return Ok(Commit::NoBots),
            }
        }
        let mut next_bot = bot_ids.iter();
        let seat_records: Vec<SeatRecord> = seats
            .iter()
            .map(|seat| match seat.occupant {
                Occupant::Player { ticket, member } => SeatRecord {
                    seat: seat.seat,
                    side: seat.side,
                    player_id: tickets[ticket].players[member].player_id,
                    bot: false,
                },
                Occupant::Bot => SeatRecord {
                    seat: seat.seat,
                    side: seat.side,
                    player_id: next_bot.next().copied().unwrap_or(PlayerId(0)),
                    bot: true,
                },
            })
            .collect();
        let record = MatchRecord {
            match_id,
            mode: mode.name.clone(),
            shard: shard.name.clone(),
            tickets: tickets.iter().map(|ticket| ticket.id).collect(),
            seats: seat_records.clone(),
            n_sides: mode.n_sides,
            reserved_at_ms: now_ms,
        };
        let registry = &self.inner.backends.registry;
        let confirm_within_ms = self.inner.config.reservation_confirm_ms;
        let tentative = registry.reserve_tentative(&shard.name, &record, confirm_within_ms, now_ms).await?;
        match tentative.reservation {
            Reservation::Reserved => {}
            Reservation::Full | Reservation::Draining | Reservation::Gone => return Ok(Commit::NoCapacity),
        }
        if self.halts_after(CommitStep::Reserved, match_id) {
            return Ok(Commit::Halted);
        }
        let granted = self.grant_seats(mode, match_id, &shard, &seats, &seat_records, now_ms);
        let granted = match granted {
            Ok(granted) => granted,
            Err(err) => {
                let _ = registry.drop_unconfirmed(&shard.name, match_id).await;
                return Err(err);
            }
        };
        let roster: Vec<RosterSeat> = seats
            .iter()
            .zip(&seat_records)
            .map(|(seat, record)| RosterSeat {
                player_id: record.player_id,
                display_name: match seat.occupant {
                    Occupant::Player { ticket, member } => tickets[ticket].players[member].display_name.clone(),
                    Occupant::Bot => {
                        bots.as_ref().map_or_else(|| "bot".to_owned(), |bots| bots.display_name(record.player_id))
                    }
                },
                seat: seat.seat,
                side: seat.side,
                bot: record.bot,
            })
            .collect();
        let mut claims = Vec::with_capacity(tickets.len());
        for (ticket_idx, ticket) in tickets.iter().enumerate() {
            let seats = seats
                .iter()
                .zip(&granted)
                .filter(|(seat, _)| matches!(seat.occupant, Occupant::Player { ticket, .. } if ticket == ticket_idx))
                .map(|(_, grant)| grant.clone())
                .collect();
            let assignment = Assignment {
                match_id,
                mode: mode.name.clone(),
                shard_name: shard.name.clone(),
                shard_address: shard.address.clone(),
                certificate_sha256: shard.certificate_sha256.clone(),
                seats,
                roster: roster.clone(),
                matched_at_ms: now_ms,
            };
            claims.push((ticket.id, TicketState::Matched(assignment)));
        }
        let claim = self.inner.backends.tickets.claim_by(&mode.name, &claims, tentative.confirm_by_ms, now_ms).await;
        let claimed = match claim {
            Ok(claimed) => claimed,
            // Whether the claim happened is unknown: the reservation is left
            // for the overdue check, which reads the tickets and decides.
            Err(err) => return Err(err.into()),
        };
        if !claimed {
            registry.drop_unconfirmed(&shard.name, match_id).await?;
            return Ok(Commit::Conflict);
        }
        if self.halts_after(CommitStep::Claimed, match_id) {
            return Ok(Commit::Halted);
        }
        match registry.confirm(&shard.name, match_id).await {
            Ok(Confirmation::Confirmed) => {}
            Ok(Confirmation::Gone) => {
                tracing::warn!(%match_id, shard = %shard.name, "the shard was lost while the match was being made");
                let lost = ExpiredShard { name: shard.name.clone(), loss: ShardLoss::Lapsed, matches: vec![record] };
                self.abort_matches(lost, now_ms).await?;
                return Ok(Commit::Lost);
            }
            // The match is made (the claim is the commit point); the overdue
            // check confirms the reservation.
            Err(err) => tracing::warn!(%err, %match_id, "confirming a reservation failed; a later round confirms it"),
        }
        for (id, state) in &claims {
            self.notify(*id, state);
        }
        let formed = MatchFormed {
            v: MATCH_FORMED_VERSION,
            match_id,
            mode: mode.name.clone(),
            shard: shard.name.clone(),
            players: seat_records.iter().filter(|record| !record.bot).map(|record| record.player_id).collect(),
            formed_at_ms: now_ms,
        };
        if let Err(err) = self.inner.backends.events.announce(&formed).await {
            // The match plays on; its chat channel opens when its result arrives instead.
            tracing::warn!(%err, %match_id, "announcing a formed match failed");
        }
        if let Some(bots) = bots {
            for ((seat, record), grant) in seats.iter().zip(&seat_records).zip(&granted) {
                if seat.occupant == Occupant::Bot {
                    bots.seat_assigned(BotSeat {
                        match_id,
                        mode: mode.name.clone(),
                        player_id: record.player_id,
                        seat: seat.seat,
                        side: seat.side,
                        shard_name: shard.name.clone(),
                        shard_address: shard.address.clone(),
                        certificate_sha256: shard.certificate_sha256.clone(),
                        connect_token: grant.connect_token.clone(),
                        token_expires_at_ms: grant.token_expires_at_ms,
                    });
                }
            }
        }
        Ok(Commit::Matched {
            tickets: tickets.len(),
            waits_ms: tickets.iter().map(|ticket| ticket.waited_ms(now_ms)).collect(),
        })
    }

    fn grant_seats(
        &self,
        mode: &ModeConfig,
        match_id: MatchId,
        shard: &ShardInfo,
        seats: &[ProposedSeat],
        records: &[SeatRecord],
        now_ms: u64,
    ) -> Result<Vec<SeatAssignment>, MatchmakerError> {
        seats
            .iter()
            .zip(records)
            .map(|(seat, record)| {
                let grant = SeatGrant {
                    player_id: record.player_id,
                    match_id,
                    seat: seat.seat,
                    n_seats: mode.n_seats(),
                    points_to_win: mode.points_to_win,
                    shard: shard.name.clone(),
                };
                let (connect_token, token_expires_at_ms) = self.inner.minter.mint(&grant, now_ms)?;
                Ok(SeatAssignment {
                    player_id: record.player_id,
                    seat: seat.seat,
                    side: seat.side,
                    connect_token,
                    token_expires_at_ms,
                })
            })
            .collect()
    }

    /// Reports a lost shard's matches aborted: an aborted `MatchResult` (no
    /// winner, `ShardShutdown`) is settled on the bus and their tickets are
    /// told. A match whose real result was settled first keeps it: its
    /// tickets are left alone. Returns the matches aborted.
    async fn abort_matches(&self, lost: ExpiredShard, now_ms: u64) -> Result<usize, MatchmakerError> {
        let shard = &lost.name;
        let mut aborted = 0;
        for record in lost.matches {
            // A reservation whose tickets were never claimed (its replica died
            // mid-commit, or lost the claim) is no match: nothing to report,
            // and its tickets stay as they are, queued or in another match.
            let states = self.inner.backends.tickets.states(&record.tickets).await?;
            let known = states.iter().any(Option::is_some);
            if known && !states.iter().any(|state| matched_into(state.as_ref(), record.match_id)) {
                tracing::info!(match_id = %record.match_id, %shard, "the lost shard's reservation was never claimed; dropped");
                continue;
            }
            if self.inner.backends.bus.settle(&aborted_result(&record, now_ms)).await? == Settlement::AlreadySettled {
                tracing::info!(match_id = %record.match_id, %shard, "the lost shard's match already has a result; kept");
                continue;
            }
            let reason = match lost.loss {
                ShardLoss::Lapsed => format!(
                    "shard {shard} stopped sending heartbeats, so match {} was lost; enqueue again",
                    record.match_id
                ),
                ShardLoss::Restarted => {
                    format!("shard {shard} restarted, so match {} was lost; enqueue again", record.match_id)
                }
            };
            let state = TicketState::Aborted { match_id: record.match_id, reason };
            for id in self.inner.backends.tickets.abort_matched(record.match_id, &record.tickets, &state).await? {
                self.notify(id, &state);
            }
            aborted += 1;
            metrics::counter!("rally_matchmaker_matches_aborted_total").increment(1);
        }
        Ok(aborted)
    }

    /// Runs rounds every `round_interval` and polls watched tickets every
    /// `watch_poll_interval`, until the handle is stopped. Errors (Redis down)
    /// are logged and the loops carry on.
    pub fn start(&self) -> EngineHandle {
        describe_metrics();
        let (stop_tx, stop_rx) = watch::channel(false);
        let rounds = {
            let this = self.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(
                async move {
                    let mut ticker = tokio::time::interval(this.inner.config.round_interval);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut failing = false;
                    loop {
                        tokio::select! {
                            _ = ticker.tick() => {}
                            _ = stop.changed() => return,
                        }
                        match this.run_round(unix_ms()).await {
                            Ok(_) if failing => {
                                failing = false;
                                tracing::info!("matching rounds recovered");
                            }
                            Ok(_) => {}
                            Err(err) => {
                                if !failing {
                                    tracing::warn!(%err, "matching round failed; retrying every round");
                                }
                                failing = true;
                            }
                        }
                    }
                }
                .instrument(tracing::info_span!("matching_rounds")),
            )
        };
        let poller = {
            let this = self.clone();
            let mut stop = stop_rx;
            tokio::spawn(
                async move {
                    let mut ticker = tokio::time::interval(this.inner.config.watch_poll_interval);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = ticker.tick() => {}
                            _ = stop.changed() => return,
                        }
                        if let Err(err) = this.poll_watched().await {
                            tracing::debug!(%err, "polling watched tickets failed");
                        }
                    }
                }
                .instrument(tracing::info_span!("watch_poller")),
            )
        };
        let seats = run_consumer(
            self.inner.backends.bus.clone(),
            ConsumerConfig::new(SEATS_GROUP, format!("matchmaker-{:016x}", rand::random::<u64>())),
            Arc::new(SeatReleaser { tickets: self.inner.backends.tickets.clone() }),
        );
        EngineHandle { stop: stop_tx, tasks: vec![rounds, poller], seats: Some(seats) }
    }

    /// Frees the seats of a match that ended (its result is on the bus), so
    /// its players may enqueue again. [`Matchmaker::start`] runs a consumer
    /// that calls this for every result; idempotent.
    pub async fn match_ended(&self, result: &MatchResult) -> Result<(), MatchmakerError> {
        release_seats(&*self.inner.backends.tickets, result).await.map_err(Into::into)
    }
}

/// The consumer group whose consumers (one per running engine) free the seats
/// of ended matches.
pub const SEATS_GROUP: &str = "matchmaker-seats";

async fn release_seats(tickets: &dyn TicketStore, result: &MatchResult) -> Result<(), BackendError> {
    let players: Vec<PlayerId> = result.seats.iter().filter_map(|seat| seat.player_id).collect();
    tickets.release_seats(result.match_id, &players).await
}

/// Hands each result on the bus to [`TicketStore::release_seats`].
struct SeatReleaser {
    tickets: Arc<dyn TicketStore>,
}

#[tonic::async_trait]
impl ResultHandler for SeatReleaser {
    async fn handle(&self, result: &MatchResult) -> Result<(), String> {
        release_seats(&*self.tickets, result).await.map_err(|err| err.to_string())
    }
}

fn tally(stats: &mut RoundStats, done: Result<Result<Commit, MatchmakerError>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(Commit::Matched { tickets, waits_ms })) => {
            stats.matches += 1;
            stats.matched_tickets += tickets;
            metrics::counter!("rally_matchmaker_matches_total").increment(1);
            metrics::counter!("rally_matchmaker_tickets_matched_total").increment(tickets as u64);
            for wait in waits_ms {
                metrics::histogram!("rally_matchmaker_wait_seconds").record(wait as f64 / 1000.0);
            }
        }
        Ok(Ok(Commit::Conflict)) => stats.conflicts += 1,
        Ok(Ok(Commit::NoCapacity)) => stats.no_capacity += 1,
        Ok(Ok(Commit::NoBots | Commit::Halted)) => {}
        Ok(Ok(Commit::Lost)) => stats.aborted_matches += 1,
        Ok(Err(err)) => tracing::warn!(%err, "committing a match failed; its tickets stay queued"),
        Err(err) => tracing::error!(%err, "a commit task panicked"),
    }
}

/// Whether `state` is matched into `match_id`.
fn matched_into(state: Option<&TicketState>, match_id: MatchId) -> bool {
    matches!(state, Some(TicketState::Matched(assignment)) if assignment.match_id == match_id)
}

/// `proposal`'s tickets, and its seats with each player's ticket given by
/// its index among those tickets (`propose` gives indices into `queue`). A
/// seat naming a ticket that is not in the proposal, or a member that ticket
/// does not have, is a bug in `propose`: the match is refused rather than
/// seating another ticket's player.
fn seats_by_ticket(
    proposal: &Proposal,
    queue: &[Arc<Ticket>],
) -> Result<(Vec<Arc<Ticket>>, Vec<ProposedSeat>), MatchmakerError> {
    let tickets = proposal
        .tickets
        .iter()
        .map(|&idx| {
            queue.get(idx).cloned().ok_or_else(|| {
                MatchmakerError::Internal(format!("a proposal names ticket #{idx} of a queue of {}", queue.len()))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let seats = proposal
        .seats
        .iter()
        .map(|seat| match seat.occupant {
            Occupant::Player { ticket, member } => {
                let ticket_idx = proposal.tickets.iter().position(|&idx| idx == ticket).ok_or_else(|| {
                    MatchmakerError::Internal(format!(
                        "seat {} names ticket #{ticket}, which is not one of the proposal's tickets {:?}",
                        seat.seat, proposal.tickets
                    ))
                })?;
                if member >= tickets[ticket_idx].players.len() {
                    return Err(MatchmakerError::Internal(format!(
                        "seat {} names player #{member} of ticket {}, which has {}",
                        seat.seat,
                        tickets[ticket_idx].id,
                        tickets[ticket_idx].players.len()
                    )));
                }
                Ok(ProposedSeat { occupant: Occupant::Player { ticket: ticket_idx, member }, ..*seat })
            }
            Occupant::Bot => Ok(*seat),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((tickets, seats))
}

/// The live shard with the most free capacity in `region` (ties: by name),
/// or anywhere when `any_region` (or no region) and none there has room.
fn choose_shard(shards: &[(ShardEntry, u32)], region: Option<&str>, any_region: bool) -> Option<usize> {
    let best = |in_region: &dyn Fn(&ShardEntry) -> bool| {
        shards
            .iter()
            .enumerate()
            .filter(|(_, (entry, free))| *free > 0 && in_region(entry))
            .max_by(|(_, (a, free_a)), (_, (b, free_b))| free_a.cmp(free_b).then_with(|| b.info.name.cmp(&a.info.name)))
            .map(|(idx, _)| idx)
    };
    if let Some(region) = region {
        if let Some(idx) = best(&|entry: &ShardEntry| entry.info.region == region) {
            return Some(idx);
        }
        if !any_region {
            return None;
        }
    }
    best(&|_: &ShardEntry| true)
}

/// The result reported for a match whose shard was lost.
pub fn aborted_result(record: &MatchRecord, now_ms: u64) -> MatchResult {
    MatchResult {
        match_id: record.match_id,
        game: record.mode.clone(),
        shard: record.shard.clone(),
        seats: record
            .seats
            .iter()
            .map(|seat| SeatResult {
                seat: seat.seat,
                player_id: Some(seat.player_id),
                side: seat.side,
                forfeited: false,
            })
            .collect(),
        scores: vec![0; usize::from(record.n_sides)],
        winner: None,
        reason: EndReason::ShardShutdown,
        duration_ticks: 0,
        tick_rate_hz: 0,
        started_at_ms: record.reserved_at_ms,
        ended_at_ms: now_ms,
        input_log_digest: String::new(),
    }
}

/// The engine's background loops.
#[derive(Debug)]
pub struct EngineHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The consumer that frees the seats of ended matches.
    seats: Option<ConsumerHandle>,
}

impl EngineHandle {
    /// Stops the loops and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(seats) = self.seats {
            seats.stop().await;
        }
    }
}

impl From<BackendError> for tonic::Status {
    fn from(err: BackendError) -> Self {
        MatchmakerError::from(err).into()
    }
}

/// Describes the engine's series to the installed recorder.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("rally_matchmaker_queued", "Tickets waiting in the queue, by mode (queue depth)");
    describe_histogram!(
        "rally_matchmaker_wait_seconds",
        Unit::Seconds,
        "Time from enqueue to assignment of each matched ticket (time to match)"
    );
    describe_histogram!("rally_matchmaker_round_seconds", Unit::Seconds, "Time to run one matching round");
    describe_counter!("rally_matchmaker_tickets_enqueued_total", "Tickets enqueued");
    describe_counter!("rally_matchmaker_tickets_matched_total", "Tickets matched into a match");
    describe_counter!("rally_matchmaker_tickets_expired_total", "Tickets that expired unmatched");
    describe_counter!("rally_matchmaker_matches_total", "Matches formed and placed on a shard");
    describe_counter!("rally_matchmaker_matches_aborted_total", "Matches formed but not placed");
    describe_counter!(
        "rally_matchmaker_reservations_dropped_total",
        "Shard slots reserved by a replica that stopped before claiming the tickets, dropped by another"
    );
    describe_counter!(
        "rally_matchmaker_enqueues_replayed_total",
        "Enqueues answered with the ticket an earlier Enqueue with the same idempotency key made"
    );
    describe_counter!("rally_matchmaker_no_capacity_total", "Matches that found no shard with room, per round");
    describe_gauge!("rally_matchmaker_waiting_for_capacity", "Matches waiting for a shard with room");
}

#[cfg(test)]
mod tests {
    use rally_protocol::Seat;

    use super::*;
    use crate::ticket::PartyMember;

    fn ticket(player: u64) -> Arc<Ticket> {
        Arc::new(Ticket {
            id: TicketId::random(),
            mode: "pong".into(),
            players: vec![PartyMember { player_id: PlayerId(player), rating: 1500.0, display_name: String::new() }],
            region: None,
            enqueued_at_ms: 0,
            expires_at_ms: 60_000,
        })
    }

    fn player_seat(seat: Seat, ticket: usize, member: usize) -> ProposedSeat {
        ProposedSeat { seat, side: seat % 2, occupant: Occupant::Player { ticket, member } }
    }

    fn proposal(tickets: Vec<usize>, seats: Vec<ProposedSeat>) -> Proposal {
        Proposal { tickets, seats, region: None, any_region: true }
    }

    #[test]
    fn seats_refer_to_the_proposals_own_tickets() {
        let queue = [ticket(1), ticket(2), ticket(3)];
        let (tickets, seats) =
            seats_by_ticket(&proposal(vec![2, 0], vec![player_seat(0, 2, 0), player_seat(1, 0, 0)]), &queue)
                .expect("a consistent proposal");
        assert_eq!(
            tickets.iter().map(|ticket| ticket.players[0].player_id).collect::<Vec<_>>(),
            [PlayerId(3), PlayerId(1)]
        );
        assert_eq!(seats, [player_seat(0, 0, 0), player_seat(1, 1, 0)]);
    }

    #[test]
    fn a_seat_outside_the_proposal_is_an_error_not_ticket_zero() {
        let queue = [ticket(1), ticket(2), ticket(3)];
        let stray = proposal(vec![2, 0], vec![player_seat(0, 2, 0), player_seat(1, 1, 0)]);
        let err = seats_by_ticket(&stray, &queue).expect_err("ticket #1 is not in the proposal");
        assert!(err.to_string().contains("not one of the proposal's tickets"), "{err}");
        let no_such_member = proposal(vec![0, 1], vec![player_seat(0, 0, 0), player_seat(1, 1, 1)]);
        assert!(seats_by_ticket(&no_such_member, &queue).is_err());
        let past_the_queue = proposal(vec![0, 7], vec![player_seat(0, 0, 0), player_seat(1, 7, 0)]);
        assert!(seats_by_ticket(&past_the_queue, &queue).is_err());
    }
}
