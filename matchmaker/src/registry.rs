//! The shard registry: which shards exist, where, how full, and which matches
//! each one holds. Shards register and heartbeat with their load; an entry
//! whose heartbeat lapses past its TTL is reaped, and its unfinished matches
//! come back to the matchmaker to be reported aborted. Draining shards are
//! never chosen. In memory by default; on Redis ([`crate::redis::RedisRegistry`])
//! for several matchmaker replicas and shard processes.
//!
//! Capacity is counted in matches: [`ShardRegistry::reserve`] atomically
//! checks that the shard is alive, not draining and below its capacity, and
//! records the match; [`ShardRegistry::release`] frees the slot when the
//! match's result is published.

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

/// A shard whose heartbeat lapsed, removed from the registry, with the
/// matches it had not finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredShard {
    /// The shard's name.
    pub name: String,
    /// Its unfinished matches.
    pub matches: Vec<MatchRecord>,
}

/// Where shards are registered.
#[tonic::async_trait]
pub trait ShardRegistry: Send + Sync + std::fmt::Debug + 'static {
    /// Registers (or re-registers) a shard, alive for `ttl_ms` from `now_ms`.
    /// Reservations of an entry that is still alive are kept.
    async fn register(&self, info: &ShardInfo, ttl_ms: u64, now_ms: u64) -> Result<(), BackendError>;
    /// Extends a live shard's entry and records its load. `false` when the
    /// shard is unknown or lapsed: register again.
    async fn heartbeat(&self, name: &str, load: ShardLoad, ttl_ms: u64, now_ms: u64) -> Result<bool, BackendError>;
    /// Marks a shard draining (or not); `false` when unknown.
    async fn set_draining(&self, name: &str, draining: bool) -> Result<bool, BackendError>;
    /// Removes a shard; returns the matches it still held.
    async fn deregister(&self, name: &str) -> Result<Vec<MatchRecord>, BackendError>;
    /// Every live shard (draining ones included), by name.
    async fn shards(&self, now_ms: u64) -> Result<Vec<ShardEntry>, BackendError>;
    /// Atomically reserves one match slot on `shard` for `record`.
    async fn reserve(&self, shard: &str, record: &MatchRecord, now_ms: u64) -> Result<Reservation, BackendError>;
    /// Frees a match's slot; `false` if it was not held (released before, or its shard was reaped).
    async fn release(&self, shard: &str, match_id: MatchId) -> Result<bool, BackendError>;
    /// Removes every shard whose entry expired before `now_ms` and returns
    /// them with their unfinished matches. Each expired shard is returned to
    /// exactly one caller, however many replicas reap at once.
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

/// The embedded registry: one process, one mutex.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    shards: Mutex<HashMap<String, MemoryShard>>,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MemoryShard>> {
        // Every critical section is a few infallible map operations.
        self.shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl ShardRegistry for MemoryRegistry {
    async fn register(&self, info: &ShardInfo, ttl_ms: u64, now_ms: u64) -> Result<(), BackendError> {
        let mut shards = self.lock();
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        match shards.get_mut(&info.name) {
            Some(shard) => {
                shard.info = info.clone();
                shard.draining = false;
                shard.expires_at_ms = expires_at_ms;
            }
            None => {
                shards.insert(
                    info.name.clone(),
                    MemoryShard {
                        info: info.clone(),
                        draining: false,
                        load: ShardLoad::default(),
                        expires_at_ms,
                        matches: BTreeMap::new(),
                    },
                );
            }
        }
        Ok(())
    }

    async fn heartbeat(&self, name: &str, load: ShardLoad, ttl_ms: u64, now_ms: u64) -> Result<bool, BackendError> {
        let mut shards = self.lock();
        match shards.get_mut(name) {
            Some(shard) if shard.expires_at_ms >= now_ms => {
                shard.load = load;
                shard.expires_at_ms = now_ms.saturating_add(ttl_ms);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set_draining(&self, name: &str, draining: bool) -> Result<bool, BackendError> {
        Ok(self.lock().get_mut(name).map(|shard| shard.draining = draining).is_some())
    }

    async fn deregister(&self, name: &str) -> Result<Vec<MatchRecord>, BackendError> {
        Ok(self.lock().remove(name).map(|shard| shard.matches.into_values().collect()).unwrap_or_default())
    }

    async fn shards(&self, now_ms: u64) -> Result<Vec<ShardEntry>, BackendError> {
        let shards = self.lock();
        let mut live: Vec<ShardEntry> = shards
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
        let mut shards = self.lock();
        let Some(entry) = shards.get_mut(shard).filter(|entry| entry.expires_at_ms >= now_ms) else {
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

    async fn release(&self, shard: &str, match_id: MatchId) -> Result<bool, BackendError> {
        Ok(self.lock().get_mut(shard).is_some_and(|entry| entry.matches.remove(&match_id).is_some()))
    }

    async fn reap_expired(&self, now_ms: u64) -> Result<Vec<ExpiredShard>, BackendError> {
        let mut shards = self.lock();
        let expired: Vec<String> =
            shards.iter().filter(|(_, shard)| shard.expires_at_ms < now_ms).map(|(name, _)| name.clone()).collect();
        let mut reaped: Vec<ExpiredShard> = expired
            .into_iter()
            .filter_map(|name| shards.remove(&name))
            .map(|shard| ExpiredShard { name: shard.info.name, matches: shard.matches.into_values().collect() })
            .collect();
        reaped.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(reaped)
    }
}
