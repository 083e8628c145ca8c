//! The shard registry: which shards exist, where, how full, and which matches
//! each one holds. Shards register and heartbeat with their load; an entry
//! whose heartbeat lapses past its TTL is reaped, and its unfinished matches
//! come back to the matchmaker to be reported aborted. Draining shards are
//! never chosen. In memory by default; on Redis ([`crate::redis::RedisRegistry`])
//! for several matchmaker replicas and shard processes.
//!
//! Each shard process has an **incarnation**, a random id chosen when it starts
//! ([`ShardInfo::incarnation`]). A registration by a new incarnation of a name
//! proves the old process dead: its matches are taken off the shard in the same
//! atomic step (the slots are free at once) and handed to the next
//! [`ShardRegistry::reap_expired`], which returns them as
//! [`ShardLoss::Restarted`] so the matchmaker reports them aborted. A heartbeat
//! or deregistration from an incarnation that no longer holds the name changes
//! nothing.
//!
//! A lapsed entry that has not been reaped yet is taken back by its own
//! incarnation's next heartbeat, matches and all. On Redis, leases are judged on
//! Redis's own clock (`TIME` inside each script, never the caller's `now_ms`),
//! and a matchmaker that has just (re)connected reaps a lapsed shard only once
//! it has been connected for that shard's whole TTL, so a Redis outage cannot
//! reap shards that were alive all along.
//!
//! Capacity is counted in matches: [`ShardRegistry::reserve`] atomically
//! checks that the shard is alive, not draining and below its capacity, and
//! records the match; [`ShardRegistry::release`] frees the slot when the
//! match's result is published.
//!
//! **Tentative reservations.** The matchmaker reserves a slot *before* it
//! claims the match's tickets ([`ShardRegistry::reserve_tentative`]), and a
//! replica may die between the two. Such a reservation carries a deadline (on
//! the registry's clock) and is [`ShardRegistry::confirm`]ed once the claim
//! succeeded. One still unconfirmed past its deadline is
//! [`ShardRegistry::overdue`]: any replica's round then looks at its tickets
//! and confirms it (they were claimed into the match: the claim is the commit
//! point) or drops it ([`ShardRegistry::drop_unconfirmed`]; the tickets were
//! never claimed, they stay queued for any replica to match). The ticket store
//! refuses a claim made after the reservation's deadline
//! ([`crate::store::TicketStore::claim_by`]), so a replica that was merely
//! slow cannot claim tickets for a reservation another replica dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use rally_protocol::{MatchId, PlayerId, Seat};
use serde::{Deserialize, Serialize};

use crate::error::BackendError;
use crate::ticket::TicketId;

/// What a shard tells the registry about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Its name, as connect tokens carry it; unique in the deployment.
    pub name: String,
    /// Where players reach it over QUIC, `host:port`.
    pub address: String,
    /// Its region, e.g. `eu-west`.
    pub region: String,
    /// Most matches it takes at once.
    pub capacity: u32,
    /// Its build version.
    pub version: String,
    /// SHA-256 of its TLS certificate (hex), for clients to pin.
    pub certificate_sha256: String,
    /// This shard process's incarnation: chosen at random when the process
    /// starts ([`ShardInfo::new_incarnation`]) and kept for its whole life. A
    /// registration with another incarnation of the same name means the old
    /// process is gone, and its matches are reported aborted.
    #[serde(default)]
    pub incarnation: u64,
}

impl ShardInfo {
    /// A fresh incarnation id for a shard process that is starting.
    pub fn new_incarnation() -> u64 {
        rand::random::<u64>().max(1)
    }
}

/// A shard's load, sent with each heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLoad {
    /// Matches running.
    pub matches: u32,
    /// Players connected.
    pub players: u32,
}

/// A live shard as the registry sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardEntry {
    /// What it registered.
    pub info: ShardInfo,
    /// Whether it is draining (never chosen for new matches).
    pub draining: bool,
    /// Matches reserved on it and not yet released.
    pub reserved: u32,
    /// Its last reported load.
    pub load: ShardLoad,
    /// When its entry expires without another heartbeat, Unix ms.
    pub expires_at_ms: u64,
}

impl ShardEntry {
    /// Matches it can still take.
    pub fn free(&self) -> u32 {
        self.info.capacity.saturating_sub(self.reserved)
    }
}

/// One seat of a reserved match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatRecord {
    /// The seat.
    pub seat: Seat,
    /// Its side.
    pub side: u8,
    /// The player (bots included).
    pub player_id: PlayerId,
    /// Whether a bot holds it.
    pub bot: bool,
}

/// A match reserved on a shard, kept until its result releases it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchRecord {
    /// The match.
    pub match_id: MatchId,
    /// The game mode.
    pub mode: String,
    /// The shard.
    pub shard: String,
    /// The tickets in it.
    pub tickets: Vec<TicketId>,
    /// Its seats.
    pub seats: Vec<SeatRecord>,
    /// Sides in the match.
    pub n_sides: u8,
    /// When it was reserved, Unix ms.
    pub reserved_at_ms: u64,
}

/// What a reservation attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// A slot is now held for the match.
    Reserved,
    /// The shard is at capacity.
    Full,
    /// The shard is draining.
    Draining,
    /// The shard is not registered (or its heartbeat lapsed).
    Gone,
}

/// What [`ShardRegistry::reserve_tentative`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tentative {
    /// Whether a slot is held.
    pub reservation: Reservation,
    /// When [`Reservation::Reserved`]: the time on the registry's clock (Unix
    /// ms; Redis's own clock on Redis) after which the reservation is overdue
    /// unless confirmed, and after which the ticket store refuses to claim
    /// tickets for it ([`crate::store::TicketStore::claim_by`]).
    pub confirm_by_ms: u64,
}

/// What [`ShardRegistry::confirm`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// The match holds its slot for good (until released or its shard is lost).
    Confirmed,
    /// The match is no longer on its shard: the shard was reaped, or
    /// restarted, while the reservation was tentative. The caller reports the
    /// match aborted.
    Gone,
}

/// What a registration found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// Matches an earlier incarnation of this shard still held: taken off the
    /// shard, to be reported aborted by the next [`ShardRegistry::reap_expired`].
    pub orphaned: usize,
}

/// What a heartbeat found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// The entry is this incarnation's and now lives another TTL (a lapsed
    /// entry not yet reaped is taken back, with its matches).
    Alive,
    /// No entry (never registered, deregistered or reaped): register again.
    Unknown,
    /// Another incarnation holds the name: a newer process took it over.
    Superseded,
}

/// Why a shard's matches came back from [`ShardRegistry::reap_expired`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShardLoss {
    /// Its heartbeat lapsed past its TTL.
    Lapsed,
    /// A new incarnation of it registered: the old process is gone.
    Restarted,
}

/// A lost shard's unfinished matches, taken out of the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredShard {
    /// The shard's name.
    pub name: String,
    /// Why its matches are lost.
    pub loss: ShardLoss,
    /// Its unfinished matches.
    pub matches: Vec<MatchRecord>,
}

/// Groups matches orphaned by restarts by shard, ordered by match id.
pub(crate) fn restarted_shards(mut records: Vec<MatchRecord>) -> Vec<ExpiredShard> {
    records.sort_by(|a, b| a.shard.cmp(&b.shard).then(a.match_id.cmp(&b.match_id)));
    let mut lost: Vec<ExpiredShard> = Vec::new();
    for record in records {
        match lost.last_mut() {
            Some(shard) if shard.name == record.shard => shard.matches.push(record),
            _ => lost.push(ExpiredShard {
                name: record.shard.clone(),
                loss: ShardLoss::Restarted,
                matches: vec![record],
            }),
        }
    }
    lost
}

/// Where shards are registered. `now_ms` is the caller's clock (Unix ms); the
/// in-memory registry judges leases on it, the Redis registry on Redis's own
/// clock (it uses `now_ms` only to time its reaping grace).
#[tonic::async_trait]
pub trait ShardRegistry: Send + Sync + std::fmt::Debug + 'static {
    /// Registers (or re-registers) a shard, alive for `ttl_ms`. The same
    /// incarnation keeps the reservations of its entry; a new incarnation
    /// replaces the entry, and the old incarnation's matches are handed to the
    /// next [`ShardRegistry::reap_expired`] (atomically: their slots are free
    /// at once and they are reported exactly once).
    async fn register(&self, info: &ShardInfo, ttl_ms: u64, now_ms: u64) -> Result<Registration, BackendError>;
    /// Extends the entry of `name` held by `incarnation` (even a lapsed one
    /// not yet reaped) and records its load.
    async fn heartbeat(
        &self,
        name: &str,
        incarnation: u64,
        load: ShardLoad,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<Heartbeat, BackendError>;
    /// Marks a shard draining (or not); `false` when unknown.
    async fn set_draining(&self, name: &str, draining: bool) -> Result<bool, BackendError>;
    /// Removes a shard if `incarnation` still holds it; returns the matches it still held.
    async fn deregister(&self, name: &str, incarnation: u64) -> Result<Vec<MatchRecord>, BackendError>;
    /// Every live shard (draining ones included), by name.
    async fn shards(&self, now_ms: u64) -> Result<Vec<ShardEntry>, BackendError>;
    /// Atomically reserves one match slot on `shard` for `record`, for good.
    async fn reserve(&self, shard: &str, record: &MatchRecord, now_ms: u64) -> Result<Reservation, BackendError>;
    /// Atomically reserves one match slot on `shard` for `record`, to be
    /// [`ShardRegistry::confirm`]ed within `confirm_within_ms` (on the
    /// registry's clock) or become [`ShardRegistry::overdue`].
    async fn reserve_tentative(
        &self,
        shard: &str,
        record: &MatchRecord,
        confirm_within_ms: u64,
        now_ms: u64,
    ) -> Result<Tentative, BackendError>;
    /// Makes a tentative reservation permanent (its tickets are claimed).
    /// Idempotent; a reservation that was never tentative is confirmed too.
    async fn confirm(&self, shard: &str, match_id: MatchId) -> Result<Confirmation, BackendError>;
    /// Tentative reservations past their deadline and still held, oldest
    /// first, at most 256. They stay held until confirmed or dropped.
    async fn overdue(&self, now_ms: u64) -> Result<Vec<MatchRecord>, BackendError>;
    /// Frees the slot of a reservation that is still tentative; `false` (and
    /// nothing changed) if it was confirmed or released meanwhile. Of several
    /// replicas dropping one reservation at once, one gets `true`.
    async fn drop_unconfirmed(&self, shard: &str, match_id: MatchId) -> Result<bool, BackendError>;
    /// Frees a match's slot; `false` if it was not held (released before, or its shard was reaped).
    async fn release(&self, shard: &str, match_id: MatchId) -> Result<bool, BackendError>;
    /// Removes every shard whose entry expired and returns them with their
    /// unfinished matches ([`ShardLoss::Lapsed`]), together with the matches
    /// of restarted shards ([`ShardLoss::Restarted`]). Each is returned to
    /// exactly one caller, however many replicas reap at once. On Redis a
    /// lapsed shard is reaped only once this registry has been connected to
    /// Redis for that shard's TTL (a grace after every outage).
    async fn reap_expired(&self, now_ms: u64) -> Result<Vec<ExpiredShard>, BackendError>;
}

#[derive(Debug)]
struct MemoryShard {
    info: ShardInfo,
    draining: bool,
    load: ShardLoad,
    expires_at_ms: u64,
    matches: BTreeMap<MatchId, MatchRecord>,
}

#[derive(Debug, Default)]
struct MemoryState {
    shards: HashMap<String, MemoryShard>,
    /// Matches of replaced incarnations, waiting for the next reap.
    orphans: Vec<MatchRecord>,
    /// Tentative reservations: match → (shard, confirm-by ms).
    tentative: BTreeMap<MatchId, (String, u64)>,
}

/// The embedded registry: one process, one mutex.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    state: Mutex<MemoryState>,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // Every critical section is a few infallible map operations.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl ShardRegistry for MemoryRegistry {
    async fn register(&self, info: &ShardInfo, ttl_ms: u64, now_ms: u64) -> Result<Registration, BackendError> {
        let mut state = self.lock();
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        let mut orphaned = Vec::new();
        let matches = match state.shards.remove(&info.name) {
            Some(old) if old.info.incarnation == info.incarnation => old.matches,
            Some(old) => {
                orphaned.extend(old.matches.into_values());
                BTreeMap::new()
            }
            None => BTreeMap::new(),
        };
        let load = ShardLoad::default();
        state.shards.insert(
            info.name.clone(),
            MemoryShard { info: info.clone(), draining: false, load, expires_at_ms, matches },
        );
        let registration = Registration { orphaned: orphaned.len() };
        state.orphans.extend(orphaned);
        Ok(registration)
    }

    async fn heartbeat(
        &self,
        name: &str,
        incarnation: u64,
        load: ShardLoad,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<Heartbeat, BackendError> {
        let mut state = self.lock();
        Ok(match state.shards.get_mut(name) {
            Some(shard) if shard.info.incarnation == incarnation => {
                shard.load = load;
                shard.expires_at_ms = now_ms.saturating_add(ttl_ms);
                Heartbeat::Alive
            }
            Some(_) => Heartbeat::Superseded,
            None => Heartbeat::Unknown,
        })
    }

    async fn set_draining(&self, name: &str, draining: bool) -> Result<bool, BackendError> {
        Ok(self.lock().shards.get_mut(name).map(|shard| shard.draining = draining).is_some())
    }

    async fn deregister(&self, name: &str, incarnation: u64) -> Result<Vec<MatchRecord>, BackendError> {
        let mut state = self.lock();
        if state.shards.get(name).is_none_or(|shard| shard.info.incarnation != incarnation) {
            return Ok(Vec::new());
        }
        Ok(state.shards.remove(name).map(|shard| shard.matches.into_values().collect()).unwrap_or_default())
    }

    async fn shards(&self, now_ms: u64) -> Result<Vec<ShardEntry>, BackendError> {
        let state = self.lock();
        let mut live: Vec<ShardEntry> = state
            .shards
            .values()
            .filter(|shard| shard.expires_at_ms >= now_ms)
            .map(|shard| ShardEntry {
                info: shard.info.clone(),
                draining: shard.draining,
                reserved: shard.matches.len() as u32,
                load: shard.load,
                expires_at_ms: shard.expires_at_ms,
            })
            .collect();
        live.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        Ok(live)
    }

    async fn reserve(&self, shard: &str, record: &MatchRecord, now_ms: u64) -> Result<Reservation, BackendError> {
        let mut state = self.lock();
        let Some(entry) = state.shards.get_mut(shard).filter(|entry| entry.expires_at_ms >= now_ms) else {
            return Ok(Reservation::Gone);
        };
        if entry.draining {
            return Ok(Reservation::Draining);
        }
        if entry.matches.len() as u64 >= u64::from(entry.info.capacity) {
            return Ok(Reservation::Full);
        }
        entry.matches.insert(record.match_id, record.clone());
        Ok(Reservation::Reserved)
    }

    async fn reserve_tentative(
        &self,
        shard: &str,
        record: &MatchRecord,
        confirm_within_ms: u64,
        now_ms: u64,
    ) -> Result<Tentative, BackendError> {
        let reservation = self.reserve(shard, record, now_ms).await?;
        let confirm_by_ms = now_ms.saturating_add(confirm_within_ms);
        if reservation == Reservation::Reserved {
            self.lock().tentative.insert(record.match_id, (shard.to_owned(), confirm_by_ms));
        }
        Ok(Tentative { reservation, confirm_by_ms })
    }

    async fn confirm(&self, shard: &str, match_id: MatchId) -> Result<Confirmation, BackendError> {
        let mut state = self.lock();
        state.tentative.remove(&match_id);
        let held = state.shards.get(shard).is_some_and(|entry| entry.matches.contains_key(&match_id));
        Ok(if held { Confirmation::Confirmed } else { Confirmation::Gone })
    }

    async fn overdue(&self, now_ms: u64) -> Result<Vec<MatchRecord>, BackendError> {
        let mut state = self.lock();
        let late: Vec<(MatchId, String, u64)> = state
            .tentative
            .iter()
            .filter(|(_, (_, by_ms))| *by_ms < now_ms)
            .map(|(&id, (shard, by_ms))| (id, shard.clone(), *by_ms))
            .collect();
        let mut records = Vec::new();
        for (match_id, shard, by_ms) in late {
            match state.shards.get(&shard).and_then(|entry| entry.matches.get(&match_id)) {
                Some(record) => records.push((by_ms, record.clone())),
                // Its shard was lost or released it: nothing left to decide.
                None => drop(state.tentative.remove(&match_id)),
            }
        }
        records.sort_by_key(|(by_ms, record)| (*by_ms, record.match_id));
        Ok(records.into_iter().take(256).map(|(_, record)| record).collect())
    }

    async fn drop_unconfirmed(&self, shard: &str, match_id: MatchId) -> Result<bool, BackendError> {
        let mut state = self.lock();
        if state.tentative.remove(&match_id).is_none() {
            return Ok(false);
        }
        Ok(state.shards.get_mut(shard).is_some_and(|entry| entry.matches.remove(&match_id).is_some()))
    }

    async fn release(&self, shard: &str, match_id: MatchId) -> Result<bool, BackendError> {
        let mut state = self.lock();
        state.tentative.remove(&match_id);
        Ok(state.shards.get_mut(shard).is_some_and(|entry| entry.matches.remove(&match_id).is_some()))
    }

    async fn reap_expired(&self, now_ms: u64) -> Result<Vec<ExpiredShard>, BackendError> {
        let mut state = self.lock();
        let expired: Vec<String> = state
            .shards
            .iter()
            .filter(|(_, shard)| shard.expires_at_ms < now_ms)
            .map(|(name, _)| name.clone())
            .collect();
        let mut reaped: Vec<ExpiredShard> = expired
            .into_iter()
            .filter_map(|name| state.shards.remove(&name))
            .map(|shard| ExpiredShard {
                name: shard.info.name,
                loss: ShardLoss::Lapsed,
                matches: shard.matches.into_values().collect(),
            })
            .collect();
        reaped.extend(restarted_shards(std::mem::take(&mut state.orphans)));
        reaped.sort_by(|a, b| a.name.cmp(&b.name).then(a.loss.cmp(&b.loss)));
        Ok(reaped)
    }
}
