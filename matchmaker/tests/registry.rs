//! The shard registry, in memory and on Redis: registration, heartbeats and
//! expiry, incarnations, draining, and atomic capacity reservation under
//! concurrency.
//!
//! Leases run on the caller's `now_ms` in memory and on Redis's own clock on
//! Redis, so a scenario lets a lease lapse with [`lapse`]: the virtual clock
//! jumps in memory, and on Redis the test waits (bounded) until Redis no
//! longer lists the shard. Every other time is virtual on both backends.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{Backend, eventually, shard};
use rally_matchmaker::registry::{
    Confirmation, Heartbeat, MatchRecord, Registration, Reservation, SeatRecord, ShardInfo, ShardLoad, ShardLoss,
    ShardRegistry,
};
use rally_matchmaker::ticket::TicketId;
use rally_protocol::{MatchId, PlayerId};

on_both_backends!(
    shards_register_heartbeat_and_expire,
    draining_and_full_shards_refuse_reservations,
    concurrent_reservations_never_exceed_capacity,
    an_expired_shard_is_reaped_once_with_its_matches,
    a_new_incarnation_frees_the_old_ones_slots_and_hands_its_matches_to_one_reaper,
    a_lapsed_shard_that_heartbeats_before_the_reaper_keeps_its_matches,
    tentative_reservations_are_confirmed_or_dropped_once,
);

/// The TTL of entries a scenario lets lapse.
const LEASE_MS: u64 = 1_000;

/// Lets `name`'s lease (registered for [`LEASE_MS`] at or after `now_ms`)
/// lapse; returns the virtual time afterwards.
async fn lapse(backend: &Backend, registry: &dyn ShardRegistry, name: &str, now_ms: u64) -> u64 {
    let later = now_ms + LEASE_MS + 1;
    if let Backend::Redis(_) = backend {
        eventually("the lease lapses on Redis's clock", || async {
            registry.shards(later).await.unwrap().iter().all(|entry| entry.info.name != name)
        })
        .await;
    }
    later
}

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
    registry.register(&shard("b", "eu", 10), LEASE_MS, 1_000).await.unwrap();
    registry.register(&shard("a", "us", 20), 600_000, 1_000).await.unwrap();
    let live = registry.shards(1_000).await.unwrap();
    assert_eq!(live.iter().map(|entry| entry.info.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!((live[0].info.capacity, live[0].reserved, live[0].draining), (20, 0, false));
    assert_eq!(live[0].info, shard("a", "us", 20));

    let load = ShardLoad { matches: 3, players: 6 };
    assert_eq!(registry.heartbeat("a", 1, load, 600_000, 1_500).await.unwrap(), Heartbeat::Alive);
    let now = lapse(backend, &*registry, "b", 1_500).await;
    let live = registry.shards(now).await.unwrap();
    assert_eq!(live.len(), 1, "b's entry lapsed: {live:?}");
    assert_eq!((live[0].info.name.as_str(), live[0].load), ("a", load));

    assert_eq!(registry.heartbeat("nobody", 1, ShardLoad::default(), 5_000, now).await.unwrap(), Heartbeat::Unknown);
    registry.register(&shard("b", "eu", 10), 600_000, now).await.unwrap();
    assert_eq!(registry.shards(now).await.unwrap().len(), 2);

    assert!(registry.deregister("a", 1).await.unwrap().is_empty());
    assert_eq!(registry.shards(now).await.unwrap().len(), 1);
    registry.deregister("b", 2).await.unwrap();
    assert_eq!(registry.shards(now).await.unwrap().len(), 1, "another incarnation cannot deregister b");
}

async fn draining_and_full_shards_refuse_reservations(backend: &Backend) {
    let registry = backend.backends().registry;
    registry.register(&shard("s", "eu", 2), 600_000, 0).await.unwrap();
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
    assert!(!registry.set_draining("nope", true).await.unwrap());

    registry.register(&shard("brief", "eu", 2), LEASE_MS, 10).await.unwrap();
    let now = lapse(backend, &*registry, "brief", 10).await;
    assert_eq!(registry.reserve("brief", &record(6, "brief"), now).await.unwrap(), Reservation::Gone, "lapsed");
}

async fn concurrent_reservations_never_exceed_capacity(backend: &Backend) {
    let registry: Arc<dyn ShardRegistry> = backend.backends().registry;
    registry.register(&shard("s", "eu", 50), 600_000, 0).await.unwrap();
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
    let held: HashSet<u64> =
        registry.deregister("s", 1).await.unwrap().iter().map(|record| record.match_id.0).collect();
    assert_eq!(held, reserved.into_iter().collect());
}

async fn an_expired_shard_is_reaped_once_with_its_matches(backend: &Backend) {
    let registry: Arc<dyn ShardRegistry> = backend.backends().registry;
    registry.register(&shard("dies", "eu", 10), LEASE_MS, 0).await.unwrap();
    registry.register(&shard("lives", "eu", 10), 600_000, 0).await.unwrap();
    for match_id in [7, 8] {
        registry.reserve("dies", &record(match_id, "dies"), 10).await.unwrap();
    }
    registry.release("dies", MatchId(8)).await.unwrap();
    assert!(registry.reap_expired(10).await.unwrap().is_empty(), "not expired yet");
    let now = lapse(backend, &*registry, "dies", 10).await;
    // Eight reapers at once: exactly one gets the shard.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let registry = registry.clone();
        tasks.spawn(async move { registry.reap_expired(now).await.unwrap() });
    }
    let reaped: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
    assert_eq!(reaped.len(), 1);
    assert_eq!((reaped[0].name.as_str(), reaped[0].loss), ("dies", ShardLoss::Lapsed));
    assert_eq!(reaped[0].matches, [record(7, "dies")]);
    let live = registry.shards(now).await.unwrap();
    assert_eq!(live.iter().map(|entry| entry.info.name.as_str()).collect::<Vec<_>>(), ["lives"]);
    assert_eq!(registry.reserve("dies", &record(9, "dies"), now).await.unwrap(), Reservation::Gone);
    // Its process, still alive after all, learns it was forgotten and registers again.
    let beat = registry.heartbeat("dies", 1, ShardLoad::default(), 600_000, now).await.unwrap();
    assert_eq!(beat, Heartbeat::Unknown);
}

/// Issue #14: a shard restarted inside the TTL kept the dead process's
/// reservations (6 of 10 slots held by matches that no longer existed), and
/// those matches were never reported aborted.
async fn a_new_incarnation_frees_the_old_ones_slots_and_hands_its_matches_to_one_reaper(backend: &Backend) {
    let registry: Arc<dyn ShardRegistry> = backend.backends().registry;
    let first = shard("s", "eu", 10);
    registry.register(&first, 600_000, 0).await.unwrap();
    for match_id in 1..=6 {
        assert_eq!(registry.reserve("s", &record(match_id, "s"), 10).await.unwrap(), Reservation::Reserved);
    }
    // The same process registering again (after a lapse) keeps its matches.
    assert_eq!(registry.register(&first, 600_000, 20).await.unwrap(), Registration { orphaned: 0 });
    assert_eq!(registry.shards(20).await.unwrap()[0].reserved, 6);

    // The process restarts: a new incarnation registers the same name.
    let second = ShardInfo { incarnation: 2, ..first.clone() };
    assert_eq!(registry.register(&second, 600_000, 30).await.unwrap(), Registration { orphaned: 6 });
    let live = registry.shards(30).await.unwrap();
    assert_eq!((live.len(), live[0].reserved, live[0].free(), live[0].info.incarnation), (1, 0, 10, 2));
    // The old incarnation can neither heartbeat nor deregister the new one's entry.
    let beat = registry.heartbeat("s", 1, ShardLoad::default(), 600_000, 40).await.unwrap();
    assert_eq!(beat, Heartbeat::Superseded);
    assert!(registry.deregister("s", 1).await.unwrap().is_empty());
    assert_eq!(registry.shards(40).await.unwrap().len(), 1);

    // Eight reapers at once: exactly one gets the lost matches, to report them aborted.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let registry = registry.clone();
        tasks.spawn(async move { registry.reap_expired(50).await.unwrap() });
    }
    let reaped: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    assert_eq!((reaped[0].name.as_str(), reaped[0].loss), ("s", ShardLoss::Restarted));
    assert_eq!(reaped[0].matches, (1..=6).map(|match_id| record(match_id, "s")).collect::<Vec<_>>());
    assert!(registry.reap_expired(60).await.unwrap().is_empty());
    // The new incarnation is untouched and takes matches.
    assert_eq!(registry.heartbeat("s", 2, ShardLoad::default(), 600_000, 70).await.unwrap(), Heartbeat::Alive);
    assert_eq!(registry.reserve("s", &record(7, "s"), 70).await.unwrap(), Reservation::Reserved);
}

/// Issue #14: after an outage a lapsed entry's heartbeat was refused, so the
/// shard registered again with no reservations while its matches played on.
async fn a_lapsed_shard_that_heartbeats_before_the_reaper_keeps_its_matches(backend: &Backend) {
    let registry: Arc<dyn ShardRegistry> = backend.backends().registry;
    registry.register(&shard("s", "eu", 10), LEASE_MS, 0).await.unwrap();
    for match_id in [1, 2] {
        assert_eq!(registry.reserve("s", &record(match_id, "s"), 0).await.unwrap(), Reservation::Reserved);
    }
    let now = lapse(backend, &*registry, "s", 0).await;
    assert_eq!(registry.reserve("s", &record(3, "s"), now).await.unwrap(), Reservation::Gone, "lapsed");
    let beat = registry.heartbeat("s", 1, ShardLoad::default(), 600_000, now).await.unwrap();
    assert_eq!(beat, Heartbeat::Alive);
    let live = registry.shards(now).await.unwrap();
    assert_eq!((live.len(), live[0].reserved), (1, 2));
    assert!(registry.reap_expired(now).await.unwrap().is_empty());
}

/// Tentative reservations hold a slot until confirmed; past their deadline
/// they are overdue, and each is confirmed or dropped by exactly one caller.
async fn tentative_reservations_are_confirmed_or_dropped_once(backend: &Backend) {
    let registry = backend.backends().registry;
    let now = rally_matchmaker::engine::unix_ms();
    registry.register(&shard("s", "eu", 3), 60_000, now).await.unwrap();
    let within = 200;
    for match_id in [1, 2, 3] {
        let tentative = registry.reserve_tentative("s", &record(match_id, "s"), within, now).await.unwrap();
        assert_eq!(tentative.reservation, Reservation::Reserved);
        assert!(tentative.confirm_by_ms >= now + within, "{tentative:?}");
    }
    let full = registry.reserve_tentative("s", &record(4, "s"), within, now).await.unwrap();
    assert_eq!(full.reservation, Reservation::Full, "tentative slots count against capacity");
    assert!(registry.overdue(now).await.unwrap().is_empty(), "not overdue before the deadline");
    assert_eq!(registry.confirm("s", MatchId(1)).await.unwrap(), Confirmation::Confirmed);
    assert!(registry.release("s", MatchId(3)).await.unwrap(), "a tentative slot is released like any other");

    // On Redis the deadline is on Redis's clock: wait (bounded) for it to pass.
    let later = now + within + 1;
    eventually("reservation 2 is overdue", || async {
        registry.overdue(later).await.unwrap().iter().map(|record| record.match_id).collect::<Vec<_>>() == [MatchId(2)]
    })
    .await;
    let (a, b) = tokio::join!(registry.drop_unconfirmed("s", MatchId(2)), registry.drop_unconfirmed("s", MatchId(2)));
    assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|dropped| **dropped).count(), 1, "dropped once");
    assert!(!registry.drop_unconfirmed("s", MatchId(1)).await.unwrap(), "a confirmed one is never dropped");
    assert!(registry.overdue(later).await.unwrap().is_empty());
    assert_eq!(registry.shards(later).await.unwrap()[0].reserved, 1, "only the confirmed match holds a slot");
    assert_eq!(registry.confirm("s", MatchId(2)).await.unwrap(), Confirmation::Gone, "a dropped one is gone");
}
