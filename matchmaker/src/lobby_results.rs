//! The results consumer that keeps lobby ratings: each `MatchResult` from the
//! bus goes to `ProfileStore::apply_match_result`, which applies a match id
//! once however often it is delivered. Aborted matches (lost shard, nobody
//! played) change no rating and are skipped. With a [`ChatStore`], every
//! result (aborted ones too) also makes the match's chat channel read-only.
//! [`follow_matches`] opens each match's channel when the matchmaker
//! announces it formed. It lives here, not in the lobby, so the lobby does
//! not depend on the matchmaker.
//!
//! With [`RatingEvents`] ([`ProfileResults::publishing_ratings`]), after each
//! result's ratings are committed (or found committed: a redelivery), the
//! consumer publishes every rated player's rating as a `RatingChanged`
//! event, versioned by the player's rated games, for the matchmaker's read
//! model. A failed publish leaves the result unacknowledged, so it is
//! delivered again and the ratings published again: at least once, and
//! replays are harmless.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use rally_lobby::{ApplyOutcome, ChatStore, ProfileStore};
use rally_protocol::bus::{RatingChanged, RatingEvent};
use rally_protocol::results::MatchResult;

use crate::bus::{ConsumerConfig, ConsumerHandle, ResultHandler, ResultsBus, run_consumer};
use crate::engine::is_aborted;
use crate::match_events::MatchEvents;
use crate::rating_events::RatingEvents;

/// The consumer group the lobby's rating consumers share.
pub const LOBBY_GROUP: &str = "lobby-ratings";

/// The counter of results handled, by `outcome` ([`APPLIED`], [`DUPLICATE`], [`ABORTED`]).
pub const RESULTS_TOTAL: &str = "rally_lobby_match_results_total";
/// `outcome` of a result that changed ratings.
pub const APPLIED: &str = "applied";
/// `outcome` of a result delivered again (applied before; no change).
pub const DUPLICATE: &str = "duplicate";
/// `outcome` of an aborted match (no rating changes).
pub const ABORTED: &str = "aborted";

/// Counters of [`ProfileResults`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProfileResultsStats {
    /// Results that changed ratings.
    pub applied: u64,
    /// Deliveries of results applied before (no change).
    pub duplicates: u64,
    /// Aborted matches skipped.
    pub aborted: u64,
    /// `RatingChanged` events published.
    pub ratings_published: u64,
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
    /// Match channels to close as results arrive.
    chat: Option<ChatStore>,
    /// Where new ratings are published for the matchmaker's read model.
    ratings: Option<Arc<dyn RatingEvents>>,
    /// The counters, watched by [`Self::wait_until`].
    stats: watch::Sender<ProfileResultsStats>,
}

impl ProfileResults {
    /// A handler writing to `store`.
    pub fn new(store: ProfileStore) -> Self {
        metrics::describe_counter!(
            RESULTS_TOTAL,
            "Match results the lobby's consumer handled, by outcome: applied (ratings changed), duplicate, aborted"
        );
        // Every outcome shows from the start, at an honest 0.
        for outcome in [APPLIED, DUPLICATE, ABORTED] {
            metrics::counter!(RESULTS_TOTAL, "outcome" => outcome).increment(0);
        }
        Self { store, chat: None, ratings: None, stats: watch::channel(ProfileResultsStats::default()).0 }
    }

    /// Also publishes each rated player's new rating to `events`, after the
    /// result's ratings are committed.
    #[must_use]
    pub fn publishing_ratings(mut self, events: Arc<dyn RatingEvents>) -> Self {
        self.ratings = Some(events);
        self
    }

    /// Publishes the committed rating of every player of `result` (a player
    /// not rated yet, or without a profile, has none to publish).
    async fn publish_ratings(&self, events: &dyn RatingEvents, result: &MatchResult) -> Result<u64, String> {
        let mut published = 0;
        for player_id in result.seats.iter().filter_map(|seat| seat.player_id) {
            let state = self.store.rating_state(player_id.0).await.map_err(|err| err.to_string())?;
            let Some(state) = state.filter(|state| state.rated_games > 0) else { continue };
            let event = RatingEvent::Changed(RatingChanged {
                player_id,
                rating: state.rating,
                deviation: state.deviation,
                volatility: state.volatility,
                rated_games: state.rated_games,
                match_id: Some(result.match_id),
            });
            events.publish(&event).await.map_err(|err| format!("publishing player {}'s rating: {err}", player_id.0))?;
            published += 1;
        }
        Ok(published)
    }

    /// A handler writing to `store` that also makes each ended match's chat
    /// channel in `chat` read-only.
    pub fn with_chat(store: ProfileStore, chat: ChatStore) -> Self {
        Self { chat: Some(chat), ..Self::new(store) }
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
        if let Some(chat) = &self.chat {
            let players: Vec<u64> = result.seats.iter().filter_map(|seat| seat.player_id).map(|id| id.0).collect();
            chat.end_match_channel(result.match_id.0, &players).await.map_err(|err| err.to_string())?;
        }
        if is_aborted(result) {
            self.stats.send_modify(|stats| stats.aborted += 1);
            metrics::counter!(RESULTS_TOTAL, "outcome" => ABORTED).increment(1);
            return Ok(());
        }
        let outcome = self.store.apply_match_result(result).await.map_err(|err| err.to_string())?;
        // After the commit, and on a redelivery too (the publish may be what failed before).
        let published = match &self.ratings {
            Some(events) => self.publish_ratings(&**events, result).await?,
            None => 0,
        };
        self.stats.send_modify(|stats| {
            stats.ratings_published += published;
            match outcome {
                ApplyOutcome::Applied => stats.applied += 1,
                ApplyOutcome::AlreadyApplied => stats.duplicates += 1,
            }
        });
        let label = match outcome {
            ApplyOutcome::Applied => APPLIED,
            ApplyOutcome::AlreadyApplied => DUPLICATE,
        };
        metrics::counter!(RESULTS_TOTAL, "outcome" => label).increment(1);
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

/// Starts a consumer like [`consume_into_profiles`] that also closes each
/// ended match's chat channel in `chat`, and a follower of `events` that opens
/// each formed match's channel ([`follow_matches`]).
pub fn consume_into_lobby(
    bus: Arc<dyn ResultsBus>,
    events: Arc<dyn MatchEvents>,
    store: ProfileStore,
    chat: ChatStore,
    consumer: &str,
) -> (ConsumerHandle, Arc<ProfileResults>, MatchChannels) {
    start_lobby_consumer(bus, events, ProfileResults::with_chat(store, chat.clone()), chat, consumer)
}

/// Starts a consumer like [`consume_into_lobby`] that also publishes each
/// rated player's new rating to `ratings` (a lobby apart from the matchmaker:
/// its read model is fed by these).
pub fn consume_into_lobby_publishing_ratings(
    bus: Arc<dyn ResultsBus>,
    events: Arc<dyn MatchEvents>,
    ratings: Arc<dyn RatingEvents>,
    store: ProfileStore,
    chat: ChatStore,
    consumer: &str,
) -> (ConsumerHandle, Arc<ProfileResults>, MatchChannels) {
    let handler = ProfileResults::with_chat(store, chat.clone()).publishing_ratings(ratings);
    start_lobby_consumer(bus, events, handler, chat, consumer)
}

fn start_lobby_consumer(
    bus: Arc<dyn ResultsBus>,
    events: Arc<dyn MatchEvents>,
    handler: ProfileResults,
    chat: ChatStore,
    consumer: &str,
) -> (ConsumerHandle, Arc<ProfileResults>, MatchChannels) {
    let handler = Arc::new(handler);
    let handle = run_consumer(bus, ConsumerConfig::new(LOBBY_GROUP, consumer), handler.clone());
    (handle, handler, follow_matches(events, chat))
}

/// The running follower of [`follow_matches`].
#[derive(Debug)]
pub struct MatchChannels {
    stop: watch::Sender<bool>,
    opened: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl MatchChannels {
    /// Match channels opened (or found open) so far.
    pub fn opened(&self) -> u64 {
        *self.opened.borrow()
    }

    /// Waits, up to `timeout`, until at least `n` channels were opened; false if the time ran out.
    pub async fn wait_opened(&self, n: u64, timeout: Duration) -> bool {
        let mut opened = self.opened.clone();
        tokio::time::timeout(timeout, opened.wait_for(|count| *count >= n)).await.is_ok_and(|seen| seen.is_ok())
    }

    /// Stops following.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Follows `events` from the oldest kept and opens each formed match's chat
/// channel for its players. Errors (Redis or the database down) are logged
/// and retried with backoff from the same event, so none is skipped.
pub fn follow_matches(events: Arc<dyn MatchEvents>, chat: ChatStore) -> MatchChannels {
    let (stop_tx, mut stop) = watch::channel(false);
    let (opened_tx, opened) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        let mut cursor: Option<String> = None;
        let mut backoff = Duration::from_millis(50);
        while !*stop.borrow() {
            let read = tokio::select! {
                read = events.read_after(cursor.as_deref(), 64, Duration::from_millis(200)) => read,
                _ = stop.changed() => return,
            };
            let step: Result<(), String> = async {
                for (next, formed) in read.map_err(|err| err.to_string())? {
                    if !formed.players.is_empty() {
                        let players: Vec<u64> = formed.players.iter().map(|player| player.0).collect();
                        chat.create_match_channel(formed.match_id.0, &players).await.map_err(|err| err.to_string())?;
                        opened_tx.send_modify(|count| *count += 1);
                    }
                    cursor = Some(next);
                }
                Ok(())
            }
            .await;
            match step {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(err) => {
                    tracing::warn!(%err, retry_in = ?backoff, "opening match chat channels failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
    MatchChannels { stop: stop_tx, opened, task }
}
