//! The matchmaker's ratings without the lobby's database: the lobby's results
//! consumer publishes each new rating as a versioned `RatingChanged` event
//! after its commit, and the matchmaker's read model (in memory, or a Redis
//! hash shared by replicas) follows them. An older event never rolls a newer
//! rating back, an event of an unknown version is refused and counted, a
//! deleted account is refused, and a player never rated is new.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Backend;
use prost::Message as _;
use rally_matchmaker::bus::ResultHandler as _;
use rally_matchmaker::lobby_results::ProfileResults;
use rally_matchmaker::ratings::RatingFollower;
use rally_matchmaker::redis::{RedisRatingEvents, RedisRatingModel};
use rally_matchmaker::{
    BusRatings, MatchmakerError, MemoryRatingEvents, MemoryRatingModel, RatingEvents, RatingModel, RatingSource,
    RedisConnection, follow_ratings,
};
use rally_protocol::bus::{RatingChanged, RatingEvent, pb};
use rally_protocol::control::EndReason;
use rally_protocol::results::{MatchResult, SeatResult};
use rally_protocol::{MatchId, PlayerId};

on_both_backends!(
    a_lobby_applying_a_result_publishes_ratings_the_read_model_sees,
    an_older_event_replayed_after_a_newer_one_does_not_roll_back,
    an_event_of_an_unknown_version_is_skipped_and_counted_not_misread,
    a_deleted_account_is_refused_and_a_player_never_rated_is_new,
);

const WAIT: Duration = Duration::from_secs(30);

/// The rating events and read model of one backend, as a separate process
/// each (on Redis: a connection of its own, the same keys).
enum Events {
    Memory(Arc<MemoryRatingEvents>),
    Redis(RedisRatingEvents),
}

impl Events {
    fn of(backend: &Backend) -> Self {
        match backend {
            Backend::Memory => Self::Memory(Arc::new(MemoryRatingEvents::new())),
            Backend::Redis(redis) => Self::Redis(RedisRatingEvents::new(own_connection(redis))),
        }
    }

    fn shared(&self) -> Arc<dyn RatingEvents> {
        match self {
            Self::Memory(events) => events.clone(),
            Self::Redis(events) => Arc::new(events.clone()),
        }
    }

    async fn publish_bytes(&self, bytes: &[u8]) {
        match self {
            Self::Memory(events) => events.publish_bytes(bytes.to_vec()),
            Self::Redis(events) => events.publish_bytes(bytes).await.unwrap(),
        }
    }
}

fn own_connection(redis: &RedisConnection) -> RedisConnection {
    let url = std::env::var("RALLY_TEST_REDIS_URL").expect("RALLY_TEST_REDIS_URL");
    RedisConnection::connect_lazy(&url, redis.prefix()).expect("redis url")
}

/// A matchmaker replica's read model: shared by replicas on Redis, its own in memory.
fn model(backend: &Backend) -> Arc<dyn RatingModel> {
    match backend {
        Backend::Memory => Arc::new(MemoryRatingModel::new()),
        Backend::Redis(redis) => Arc::new(RedisRatingModel::new(own_connection(redis))),
    }
}

/// A matchmaker replica: its read model, following `events`.
fn replica(backend: &Backend, events: &Events) -> (BusRatings, RatingFollower) {
    let model = model(backend);
    let follower = follow_ratings(events.shared(), model.clone());
    (BusRatings::new(model), follower)
}

fn changed(player: u64, rated_games: u64, rating: f64) -> RatingEvent {
    RatingEvent::Changed(RatingChanged {
        player_id: PlayerId(player),
        rating,
        deviation: 90.0,
        volatility: 0.06,
        rated_games,
        match_id: None,
    })
}

async fn wait_handled(follower: &RatingFollower, n: u64) {
    assert!(follower.wait_until(WAIT, |stats| stats.handled() >= n).await, "handled {:?}, not {n}", follower.stats());
}

fn result(match_id: u64) -> MatchResult {
    MatchResult {
        match_id: MatchId(match_id),
        game: "pong".into(),
        shard: "s".into(),
        seats: vec![
            SeatResult { seat: 0, player_id: Some(PlayerId(1)), side: 0, forfeited: false },
            SeatResult { seat: 1, player_id: Some(PlayerId(2)), side: 1, forfeited: false },
        ],
        scores: vec![5, 1],
        winner: Some(0),
        reason: EndReason::Score,
        duration_ticks: 100,
        tick_rate_hz: 60,
        started_at_ms: 1,
        ended_at_ms: 2,
        input_log_digest: "00".repeat(32),
    }
}

async fn a_lobby_applying_a_result_publishes_ratings_the_read_model_sees(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lobby.db").display());
    let config =
        rally_lobby::LobbyConfig::new(([127, 0, 0, 1], 0).into(), url, rally_lobby::AccessSigningKeys::generate());
    let lobby = rally_lobby::serve(config).await.unwrap();
    let store = lobby.profiles().clone();
    for player in [1, 2] {
        store.create_profile(player, &format!("p{player}"), 0).await.unwrap();
    }
    let lobby_events = Events::of(backend);
    // In memory the matchmaker reads the lobby's log; on Redis the stream, over a connection of its own.
    let events: Arc<dyn RatingEvents> = match &lobby_events {
        Events::Memory(log) => log.clone(),
        Events::Redis(_) => Events::of(backend).shared(),
    };
    let (ratings, follower) = {
        let model = model(backend);
        (BusRatings::new(model.clone()), follow_ratings(events, model))
    };
    assert_eq!(ratings.rating(PlayerId(1)).await.unwrap(), None, "not rated before the match");

    let consumer = ProfileResults::new(store.clone()).publishing_ratings(lobby_events.shared());
    consumer.handle(&result(1)).await.unwrap();
    assert_eq!(consumer.stats().ratings_published, 2);
    wait_handled(&follower, 2).await;
    let winner = store.rating_state(1).await.unwrap().unwrap();
    let loser = store.rating_state(2).await.unwrap().unwrap();
    assert_eq!(winner.rated_games, 1);
    assert!(winner.rating > 1500.0 && loser.rating < 1500.0, "{winner:?} {loser:?}");
    assert_eq!(ratings.rating(PlayerId(1)).await.unwrap(), Some(winner.rating));
    assert_eq!(ratings.rating(PlayerId(2)).await.unwrap(), Some(loser.rating));

    // A redelivery changes no rating but publishes again (the publish may
    // have been what failed): the read model sees a replay and keeps its value.
    consumer.handle(&result(1)).await.unwrap();
    assert_eq!(consumer.stats().duplicates, 1);
    wait_handled(&follower, 4).await;
    assert_eq!(follower.stats().stale, 2);
    assert_eq!(ratings.rating(PlayerId(1)).await.unwrap(), Some(winner.rating));

    // The next match's ratings replace the first's.
    consumer.handle(&result(2)).await.unwrap();
    wait_handled(&follower, 6).await;
    let again = store.rating_state(1).await.unwrap().unwrap();
    assert_eq!(again.rated_games, 2);
    assert_eq!(ratings.rating(PlayerId(1)).await.unwrap(), Some(again.rating));
    follower.stop().await;
    lobby.shutdown().await.unwrap();
}

async fn an_older_event_replayed_after_a_newer_one_does_not_roll_back(backend: &Backend) {
    let events = Events::of(backend);
    let publisher = events.shared();
    publisher.publish(&changed(3, 2, 1600.0)).await.unwrap();
    publisher.publish(&changed(3, 1, 1500.0)).await.unwrap();
    publisher.publish(&changed(3, 2, 1700.0)).await.unwrap();
    // Two replicas (sharing the model on Redis), each following on its own.
    let (first, first_follower) = replica(backend, &events);
    let (second, second_follower) = replica(backend, &events);
    wait_handled(&first_follower, 3).await;
    wait_handled(&second_follower, 3).await;
    for ratings in [&first, &second] {
        assert_eq!(ratings.rating(PlayerId(3)).await.unwrap(), Some(1600.0), "the older and the replayed lost");
    }
    let applied = first_follower.stats().applied + second_follower.stats().applied;
    let expected = if matches!(backend, Backend::Redis(_)) { 1 } else { 2 };
    assert_eq!(applied, expected, "one apply per model: {:?} {:?}", first_follower.stats(), second_follower.stats());
    publisher.publish(&changed(3, 3, 1650.0)).await.unwrap();
    wait_handled(&first_follower, 4).await;
    wait_handled(&second_follower, 4).await;
    assert_eq!(first.rating(PlayerId(3)).await.unwrap(), Some(1650.0));
    first_follower.stop().await;
    second_follower.stop().await;
}

async fn an_event_of_an_unknown_version_is_skipped_and_counted_not_misread(backend: &Backend) {
    let events = Events::of(backend);
    // A newer producer's event for player 5, then bytes that are no event, then a good one for player 6.
    let newer = pb::RatingEvent {
        version: 2,
        event: Some(pb::rating_event::Event::RatingChanged(pb::RatingChanged {
            player_id: 5,
            rating: 9999.0,
            rated_games: 1,
            ..pb::RatingChanged::default()
        })),
    };
    events.publish_bytes(&newer.encode_to_vec()).await;
    events.publish_bytes(b"\xff\xfe not protobuf").await;
    events.shared().publish(&changed(6, 1, 1555.0)).await.unwrap();
    let (ratings, follower) = replica(backend, &events);
    wait_handled(&follower, 3).await;
    let stats = follower.stats();
    assert_eq!((stats.refused, stats.applied), (2, 1), "{stats:?}");
    assert_eq!(ratings.rating(PlayerId(5)).await.unwrap(), None, "the unknown version was not read");
    assert_eq!(ratings.rating(PlayerId(6)).await.unwrap(), Some(1555.0), "the entries after it were");
    follower.stop().await;
}

async fn a_deleted_account_is_refused_and_a_player_never_rated_is_new(backend: &Backend) {
    let events = Events::of(backend);
    let publisher = events.shared();
    publisher.publish(&changed(7, 1, 1520.0)).await.unwrap();
    publisher.publish(&RatingEvent::AccountDeleted { player_id: PlayerId(7) }).await.unwrap();
    publisher.publish(&changed(7, 5, 1800.0)).await.unwrap();
    let (ratings, follower) = replica(backend, &events);
    wait_handled(&follower, 3).await;
    assert_eq!(follower.stats().stale, 1, "a rating after the deletion is ignored");
    match ratings.rating(PlayerId(7)).await {
        Err(err @ MatchmakerError::Unauthenticated(_)) => {
            assert_eq!(err.to_string(), "account 7 no longer exists; log in again");
        }
        other => panic!("a deleted account was rated: {other:?}"),
    }
    assert_eq!(ratings.rating(PlayerId(8)).await.unwrap(), None, "a new player gets the default rating");
    follower.stop().await;
}

#[tokio::test]
async fn the_in_process_profile_store_refuses_a_player_without_an_account() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lobby.db").display());
    let config =
        rally_lobby::LobbyConfig::new(([127, 0, 0, 1], 0).into(), url, rally_lobby::AccessSigningKeys::generate());
    let lobby = rally_lobby::serve(config).await.unwrap();
    match lobby.profiles().rating(PlayerId(999)).await {
        Err(err @ MatchmakerError::Unauthenticated(_)) => {
            assert_eq!(err.to_string(), "account 999 no longer exists; log in again");
        }
        other => panic!("a player without an account was rated: {other:?}"),
    }
    lobby.shutdown().await.unwrap();
}
