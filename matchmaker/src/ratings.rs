//! Where player ratings come from: for a matchmaker apart from the lobby, a
//! read model fed by the lobby's rating events ([`BusRatings`],
//! [`follow_ratings`]); the lobby's `ProfileStore` when both run in one
//! process (`rally up`); a fixed table in tests and benchmarks.
//!
//! **Architecture Invariant:** the matchmaker never opens the lobby's
//! database. It learns ratings only from `RatingChanged` events on the bus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rally_lobby::{LobbyError, ProfileStore};
use rally_protocol::PlayerId;
use rally_protocol::bus::RatingEvent;
use tokio::sync::watch;

use crate::bus::count_refused;
use crate::error::{BackendError, MatchmakerError};
use crate::rating_events::RatingEvents;

/// Reads a player's Glicko-2 rating.
#[tonic::async_trait]
pub trait RatingSource: Send + Sync + std::fmt::Debug + 'static {
    /// The player's rating, `None` when they have no profile. A source that
    /// knows the accounts refuses a player whose account no longer exists
    /// with [`MatchmakerError::Unauthenticated`]: their access token outlived
    /// the account, and Enqueue must not queue it.
    async fn rating(&self, player: PlayerId) -> Result<Option<f64>, MatchmakerError>;
}

/// The refusal for a token whose account is gone.
fn account_gone(player: PlayerId) -> MatchmakerError {
    MatchmakerError::Unauthenticated(format!("account {} no longer exists; log in again", player.0))
}

/// Ratings from a table; players not in it have none.
#[derive(Debug, Clone, Default)]
pub struct FixedRatings {
    ratings: HashMap<PlayerId, f64>,
}

impl FixedRatings {
    /// A table of ratings.
    pub fn new(ratings: impl IntoIterator<Item = (PlayerId, f64)>) -> Self {
        Self { ratings: ratings.into_iter().collect() }
    }
}

#[tonic::async_trait]
impl RatingSource for FixedRatings {
    async fn rating(&self, player: PlayerId) -> Result<Option<f64>, MatchmakerError> {
        Ok(self.ratings.get(&player).copied())
    }
}

/// The lobby's profile store: the rating the last applied result left. Every
/// account gets its profile when it registers, so a player without one has
/// no account (any more).
#[tonic::async_trait]
impl RatingSource for ProfileStore {
    async fn rating(&self, player: PlayerId) -> Result<Option<f64>, MatchmakerError> {
        match self.profile(player.0).await {
            Ok(profile) => Ok(Some(profile.rating)),
            Err(LobbyError::NotFound(_)) => Err(account_gone(player)),
            Err(err) => Err(MatchmakerError::Ratings(err.to_string())),
        }
    }
}

/// What the read model knows of one player.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ModelRating {
    /// The newest rating seen, with its version (the player's rated games).
    Rated {
        /// Glicko-2 rating.
        rating: f64,
        /// Rated matches applied to the player when it was published.
        rated_games: u64,
    },
    /// The account is gone: refuse the player.
    Deleted,
}

/// Whether `event` replaces `current` in a read model: a deletion is final;
/// otherwise only a rating of a higher version (more rated games) wins, so an
/// older event, replayed or reordered, never rolls a newer rating back. The
/// Redis model's script ([`crate::redis::RedisRatingModel`]) applies the same rule.
pub fn supersedes(current: Option<&ModelRating>, event: &RatingEvent) -> bool {
    match (current, event) {
        (Some(ModelRating::Deleted), _) => false,
        (_, RatingEvent::AccountDeleted { .. }) => true,
        (Some(ModelRating::Rated { rated_games, .. }), RatingEvent::Changed(changed)) => {
            changed.rated_games > *rated_games
        }
        (None, RatingEvent::Changed(_)) => true,
    }
}

/// The matchmaker's read model of ratings: per player, the newest rating
/// event seen. Shared by matchmaker replicas when on Redis.
#[tonic::async_trait]
pub trait RatingModel: Send + Sync + std::fmt::Debug + 'static {
    /// Applies `event` if it [`supersedes`] what the model holds, atomically;
    /// true if it changed the model.
    async fn apply(&self, event: &RatingEvent) -> Result<bool, BackendError>;
    /// What the model holds for `player`; `None` for a player never rated.
    async fn get(&self, player: PlayerId) -> Result<Option<ModelRating>, BackendError>;
}

/// The in-process read model.
#[derive(Debug, Default)]
pub struct MemoryRatingModel {
    players: Mutex<HashMap<PlayerId, ModelRating>>,
}

impl MemoryRatingModel {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PlayerId, ModelRating>> {
        // Critical sections are one infallible map operation.
        self.players.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl RatingModel for MemoryRatingModel {
    async fn apply(&self, event: &RatingEvent) -> Result<bool, BackendError> {
        let mut players = self.lock();
        let player = event.player_id();
        if !supersedes(players.get(&player), event) {
            return Ok(false);
        }
        let entry = match event {
            RatingEvent::Changed(changed) => {
                ModelRating::Rated { rating: changed.rating, rated_games: changed.rated_games }
            }
            RatingEvent::AccountDeleted { .. } => ModelRating::Deleted,
        };
        players.insert(player, entry);
        Ok(true)
    }

    async fn get(&self, player: PlayerId) -> Result<Option<ModelRating>, BackendError> {
        Ok(self.lock().get(&player).copied())
    }
}

/// Ratings from the read model: a player it never saw rated is new (`None`,
/// so the engine gives the default rating); a deleted account is refused.
#[derive(Debug, Clone)]
pub struct BusRatings {
    model: Arc<dyn RatingModel>,
}

impl BusRatings {
    /// Ratings read from `model` (fed by [`follow_ratings`]).
    pub fn new(model: Arc<dyn RatingModel>) -> Self {
        Self { model }
    }
}

#[tonic::async_trait]
impl RatingSource for BusRatings {
    async fn rating(&self, player: PlayerId) -> Result<Option<f64>, MatchmakerError> {
        match self.model.get(player).await {
            Ok(None) => Ok(None),
            Ok(Some(ModelRating::Rated { rating, .. })) => Ok(Some(rating)),
            Ok(Some(ModelRating::Deleted)) => Err(account_gone(player)),
            Err(err) => Err(MatchmakerError::Ratings(err.to_string())),
        }
    }
}

/// The counter of rating events the follower handled, by `outcome`
/// (`applied`, `stale`: older than the model's, `refused`: unreadable).
pub const RATING_EVENTS_TOTAL: &str = "rally_matchmaker_rating_events_total";

/// Counters of a [`RatingFollower`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RatingFollowerStats {
    /// Events that changed the model.
    pub applied: u64,
    /// Events the model already had something newer for (replays, reordering).
    pub stale: u64,
    /// Entries refused: a version this build does not read, or malformed.
    pub refused: u64,
}

impl RatingFollowerStats {
    /// Entries handled in any way.
    pub fn handled(&self) -> u64 {
        self.applied + self.stale + self.refused
    }
}

/// The running follower of [`follow_ratings`].
#[derive(Debug)]
pub struct RatingFollower {
    stop: watch::Sender<bool>,
    stats: watch::Receiver<RatingFollowerStats>,
    task: tokio::task::JoinHandle<()>,
}

impl RatingFollower {
    /// The counters so far.
    pub fn stats(&self) -> RatingFollowerStats {
        *self.stats.borrow()
    }

    /// Waits, up to `timeout`, until the counters satisfy `done` (woken by
    /// each entry, never polling); false if the time ran out first.
    pub async fn wait_until(&self, timeout: Duration, done: impl FnMut(&RatingFollowerStats) -> bool) -> bool {
        let mut stats = self.stats.clone();
        tokio::time::timeout(timeout, stats.wait_for(done)).await.is_ok_and(|seen| seen.is_ok())
    }

    /// Stops following.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Follows `events` from the oldest kept and applies each to `model`. Every
/// matchmaker replica follows on its own; applying is idempotent and ordered
/// by version, so replicas sharing a Redis model agree. An entry it cannot
/// read is refused: logged, counted (`rally_bus_events_refused_total`) and
/// skipped, never misread. Errors (Redis down) are logged and retried with
/// backoff from the same entry.
pub fn follow_ratings(events: Arc<dyn RatingEvents>, model: Arc<dyn RatingModel>) -> RatingFollower {
    metrics::describe_counter!(
        RATING_EVENTS_TOTAL,
        "Rating events the matchmaker's read model handled, by outcome: applied, stale (older than the model's), refused"
    );
    for outcome in ["applied", "stale", "refused"] {
        metrics::counter!(RATING_EVENTS_TOTAL, "outcome" => outcome).increment(0);
    }
    let (stop_tx, mut stop) = watch::channel(false);
    let (stats_tx, stats) = watch::channel(RatingFollowerStats::default());
    let task = tokio::spawn(async move {
        let mut cursor: Option<String> = None;
        let mut backoff = Duration::from_millis(50);
        while !*stop.borrow() {
            let read = tokio::select! {
                read = events.read_after(cursor.as_deref(), 256, Duration::from_millis(200)) => read,
                _ = stop.changed() => return,
            };
            let step: Result<(), BackendError> = async {
                for (next, entry) in read? {
                    let outcome = match entry {
                        Ok(event) => {
                            if model.apply(&event).await? {
                                "applied"
                            } else {
                                "stale"
                            }
                        }
                        Err(err) => {
                            tracing::warn!(entry = %next, %err, "rating event refused; skipped");
                            count_refused("ratings", err.reason());
                            "refused"
                        }
                    };
                    metrics::counter!(RATING_EVENTS_TOTAL, "outcome" => outcome).increment(1);
                    stats_tx.send_modify(|stats| match outcome {
                        "applied" => stats.applied += 1,
                        "stale" => stats.stale += 1,
                        _ => stats.refused += 1,
                    });
                    cursor = Some(next);
                }
                Ok(())
            }
            .await;
            match step {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(err) => {
                    tracing::warn!(%err, retry_in = ?backoff, "following rating events failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
    RatingFollower { stop: stop_tx, stats, task }
}

#[cfg(test)]
mod tests {
    use rally_protocol::bus::RatingChanged;

    use super::*;

    fn changed(rated_games: u64, rating: f64) -> RatingEvent {
        RatingEvent::Changed(RatingChanged {
            player_id: PlayerId(1),
            rating,
            deviation: 100.0,
            volatility: 0.06,
            rated_games,
            match_id: None,
        })
    }

    #[test]
    fn only_a_newer_rating_or_a_deletion_supersedes() {
        let rated = ModelRating::Rated { rating: 1600.0, rated_games: 2 };
        assert!(supersedes(None, &changed(1, 1500.0)));
        assert!(supersedes(Some(&rated), &changed(3, 1500.0)));
        assert!(!supersedes(Some(&rated), &changed(2, 1700.0)), "the same version is a replay");
        assert!(!supersedes(Some(&rated), &changed(1, 1700.0)), "an older one never rolls back");
        let deleted = RatingEvent::AccountDeleted { player_id: PlayerId(1) };
        assert!(supersedes(Some(&rated), &deleted));
        assert!(!supersedes(Some(&ModelRating::Deleted), &changed(9, 1500.0)), "a deletion is final");
    }
}
