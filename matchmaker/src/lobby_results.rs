//! The results consumer that keeps lobby ratings: each `MatchResult` from the
//! bus goes to `ProfileStore::apply_match_result`, which applies a match id
//! once however often it is delivered. Aborted matches (lost shard, nobody
//! played) change no rating and are skipped. It lives here, not in the lobby,
//! so the lobby does not depend on the matchmaker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

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

impl ProfileResultsStats {
    /// Results handled in any way: applied, duplicate or skipped.
    pub fn handled(&self) -> u64 {
        self.applied + self.duplicates + self.aborted
    }
}

/// Applies results to lobby profiles.
#[derive(Debug)]
pub struct ProfileResults {
    store: ProfileStore,
    /// The counters, watched by [`Self::wait_until`].
    stats: watch::Sender<ProfileResultsStats>,
}

impl ProfileResults {
    /// A handler writing to `store`.
    pub fn new(store: ProfileStore) -> Self {
        Self { store, stats: watch::channel(ProfileResultsStats::default()).0 }
    }

    /// Waits, up to `timeout`, until the counters satisfy `done` (woken by
    /// each result, never polling); false if the time ran out first.
    pub async fn wait_until(&self, timeout: Duration, done: impl FnMut(&ProfileResultsStats) -> bool) -> bool {
        let mut stats = self.stats.subscribe();
        tokio::time::timeout(timeout, stats.wait_for(done)).await.is_ok_and(|seen| seen.is_ok())
    }

    /// What it did so far.
    pub fn stats(&self) -> ProfileResultsStats {
        *self.stats.borrow()
    }
}

#[tonic::async_trait]
impl ResultHandler for ProfileResults {
    async fn handle(&self, result: &MatchResult) -> Result<(), String> {
        if is_aborted(result) {
            self.stats.send_modify(|stats| stats.aborted += 1);
            return Ok(());
        }
        let outcome = self.store.apply_match_result(result).await.map_err(|err| err.to_string())?;
        self.stats.send_modify(|stats| match outcome {
            ApplyOutcome::Applied => stats.applied += 1,
            ApplyOutcome::AlreadyApplied => stats.duplicates += 1,
        });
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
