//! The shard registry, in memory and on Redis: registration, heartbeats and
//! expiry, draining, and atomic capacity reservation under concurrency.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{Backend, shard};
use rally_matchmaker::registry::{MatchRecord, Reservation, SeatRecord, ShardLoad, ShardRegistry};
use rally_matchmaker::ticket::TicketId;
use rally_protocol::{MatchId, PlayerId};

on_both_backends!(
    shards_register_heartbeat_and_expire,
    draining_and_full_shards_refuse_reservations,
    concurrent_reservations_never_exceed_capacity,
    an_expired_shard_is_reaped_once_with_its_matches,
);

fn record(match_id: u64, shard: &str) -> MatchRecord {
    MatchRecord {
        match_id: MatchId(match_id),
        mode: "pong".into(),
        shard: shard.into(),
        tickets: vec![TicketId(match_id * 2), TicketId(match_id * 2 + 1)],
        seats: vec![
            SeatRecord { seat: 0, side: 0, player_id: PlayerId(match_id * 10), bot: false },
            SeatRecord { seat: 1, side: 1, player_id: PlayerId(match_id * 10 + 1), bot: false },
        ],
        n_sides: 2,
        reserved_at_ms: 1_000,
    }
}

async fn shards_register_heartbeat_and_expire(backend: &Backend) {
    let registry = backend.backends().registry;
    registry.register(&shard("b", "eu", 10), 5_000, 1_000).await.unwrap();
    registry.register(&shard("a", "us", 20), 5_000, 1_000).await.unwrap();
    let live = registry.shards(2_000).await.unwrap();
    assert_eq!(live.iter().map(|entry| entry.info.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!((live[0].info.capacity, live[0].reserved, live[0].draining), (20, 0, false));
    assert_eq!(live[0].info, shard("a", "us", 20));

    let load = ShardLoad { matches: 3, players: 6 };
    assert!(registry.heartbeat("a", load, 5_000, 5_500).await.unwrap());
    let live = registry.shards(7_000).await.unwrap();
    assert_eq!(live.len(), 1, "b's entry lapsed at 6 000: {live:?}");
    assert_eq!((live[0].info.name.as_str(), live[0].load, live[0].expires_at_ms), ("a", load, 10_500));

    // A lapsed shard's heartbeat is refused, so it knows to register again.
    assert!(!registry.heartbeat("b", ShardLoad::default(), 5_000, 7_000).await.unwrap());
    assert!(!registry.heartbeat("nobody", ShardLoad::default(), 5_000, 7_000).await.unwrap());
    registry.register(&shard("b", "eu", 10), 5_000, 7_000).await.unwrap();
    assert_eq!(registry.shards(7_000).await.unwrap().len(), 2);

    assert!(registry.deregister("a").await.unwrap().is_empty());
    assert_eq!(registry.shards(7_000).await.unwrap().len(), 1);
}

async fn draining_and_full_shards_refuse_reservations(backend: &Backend) {
    let registry = backend.backends().registry;
    registry.register(&shard("s", "eu", 2), 60_000, 0).await.unwrap();
    assert_eq!(registry.reserve("s", &record(1, "s"), 10).await.unwrap(), Reservation::Reserved);
    // The same match twice holds one slot.
    assert_eq!(registry.reserve("s", &record(1, "s"), 10).await.unwrap(), Reservation::Reserved);
    assert_eq!(registry.reserve("s", &record(2, "s"), 10).await.unwrap(), Reservation::Reserved);
    assert_eq!(registry.reserve("s", &record(3, "s"), 10).await.unwrap(), Reservation::Full);
    assert_eq!(registry.shards(10).await.unwrap()[0].reserved, 2);

    assert!(registry.release("s", MatchId(1)).await.unwrap());
    assert!(!registry.release("s", MatchId(1)).await.unwrap(), "released twice");
    assert_eq!(registry.shards(10).await.unwrap()[0].free(), 1);

    assert!(registry.set_draining("s", true).await.unwrap());
    assert_eq!(registry.reserve("s", &record(4, "s"), 10).await.unwrap(), Reservation::Draining);
    assert!(registry.shards(10).await.unwrap()[0].draining);
    assert_eq!(registry.reserve("nope", &record(5, "nope"), 10).await.unwrap(), Reservation::Gone);
    assert_eq!(registry.reserve("s", &record(6, "s"), 70_000).await.unwrap(), Reservation::Gone, "lapsed");
    assert!(!registry.set_draining("nope", true).await.unwrap());
}

async fn concurrent_reservations_never_exceed_capacity(backend: &Backend) {
    let registry: Arc<dyn ShardRegistry> = backend.backends().registry;
    registry.register(&shard("s", "eu", 50), 60_000, 0).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for match_id in 1..=400u64 {
        let registry = registry.clone();
        tasks.spawn(async move { (match_id, registry.reserve("s", &record(match_id, "s"), 10).await.unwrap()) });
    }
    let outcomes = tasks.join_all().await;
    let reserved: Vec<u64> =
        outcomes.iter().filter(|(_, outcome)| *outcome == Reservation::Reserved).map(|(id, _)| *id).collect();
    assert_eq!(reserved.len(), 50);
    assert!(outcomes.iter().all(|(_, outcome)| matches!(outcome, Reservation::Reserved | Reservation::Full)));
    assert_eq!(registry.shards(10).await.unwrap()[0].reserved, 50);
    let held: HashSet<u64> = registry.deregister("s").await.unwrap().iter().map(|record| record.match_id.0).collect();
    assert_eq!(held, reserved.into_iter().collect());
}

async fn an_expired_shard_is_reaped_once_with_its_matches(backend: &Backend) {
    let registry: Arc<dyn ShardRegistry> = backend.backends().registry;
    registry.register(&shard("dies", "eu", 10), 1_000, 0).await.unwrap();
    registry.register(&shard("lives", "eu", 10), 100_000, 0).await.unwrap();
    for match_id in [7, 8] {
        registry.reserve("dies", &record(match_id, "dies"), 10).await.unwrap();
    }
    registry.release("dies", MatchId(8)).await.unwrap();
    assert!(registry.reap_expired(500).await.unwrap().is_empty(), "not expired yet");
    // Eight reapers at once: exactly one gets the shard.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let registry = registry.clone();
        tasks.spawn(async move { registry.reap_expired(2_000).await.unwrap() });
    }
    let reaped: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].name, "dies");
    assert_eq!(reaped[0].matches, [record(7, "dies")]);
    let live = registry.shards(2_000).await.unwrap();
    assert_eq!(live.iter().map(|entry| entry.info.name.as_str()).collect::<Vec<_>>(), ["lives"]);
    assert_eq!(registry.reserve("dies", &record(9, "dies"), 2_000).await.unwrap(), Reservation::Gone);
}
