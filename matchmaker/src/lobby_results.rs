//! The results consumer that keeps lobby ratings: each `MatchResult` from the
//! bus goes to `ProfileStore::apply_match_result`, which applies a match id
//! once however often it is delivered. Aborted matches (lost shard, nobody
//! played) change no rating and are skipped. It lives here, not in the lobby,
//! so the lobby does not depend on the matchmaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rally_lobby::{ApplyOutcome, ProfileStore};
use rally_protocol::results::MatchResult;

use crate::bus::{ConsumerConfig, ConsumerHandle, ResultHandler, ResultsBus, run_consumer};
use crate::engine::is_aborted;

/// The consumer group the lobby's rating consumers share.
pub const LOBBY_GROUP: &str = "lobby-ratings";

/// Counters of [`ProfileResults`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProfileResultsStats {
    /// Results that changed ratings.
    pub applied: u64,
    /// Deliveries of results applied before (no change).
    pub duplicates: u64,
    /// Aborted matches skipped.
    pub aborted: u64,
}

/// Applies results to lobby profiles.
#[derive(Debug)]
pub struct ProfileResults {
    store: ProfileStore,
    applied: AtomicU64,
    duplicates: AtomicU64,
    aborted: AtomicU64,
}

impl ProfileResults {
    /// A handler writing to `store`.
    pub fn new(store: ProfileStore) -> Self {
        Self { store, applied: AtomicU64::new(0), duplicates: AtomicU64::new(0), aborted: AtomicU64::new(0) }
    }

    /// What it did so far.
    pub fn stats(&self) -> ProfileResultsStats {
        ProfileResultsStats {
            applied: self.applied.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
        }
    }
}

#[tonic::async_trait]
impl ResultHandler for ProfileResults {
    async fn handle(&self, result: &MatchResult) -> Result<(), String> {
        if is_aborted(result) {
            self.aborted.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        match self.store.apply_match_result(result).await.map_err(|err| err.to_string())? {
            ApplyOutcome::Applied => self.applied.fetch_add(1, Ordering::Relaxed),
            ApplyOutcome::AlreadyApplied => self.duplicates.fetch_add(1, Ordering::Relaxed),
        };
        Ok(())
    }
}

/// Starts a consumer named `consumer` in [`LOBBY_GROUP`] that applies every
/// result on `bus` to `store`; returns it with its handler (for its counters).
pub fn consume_into_profiles(
    bus: Arc<dyn ResultsBus>,
    store: ProfileStore,
    consumer: &str,
) -> (ConsumerHandle, Arc<ProfileResults>) {
    let handler = Arc::new(ProfileResults::new(store));
    let handle = run_consumer(bus, ConsumerConfig::new(LOBBY_GROUP, consumer), handler.clone());
    (handle, handler)
}
