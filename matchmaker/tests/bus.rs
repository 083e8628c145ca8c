//! The results bus, in memory and on Redis Streams: consumer groups,
//! at-least-once delivery, a restarted consumer finishing its pending
//! entries, and a dead consumer's entries taken over.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, eventually};
use rally_matchmaker::bus::{ConsumerConfig, ResultHandler, ResultsBus, run_consumer};
use rally_protocol::control::EndReason;
use rally_protocol::results::{MatchResult, SeatResult};
use rally_protocol::{MatchId, PlayerId};

on_both_backends!(
    every_group_sees_every_result_once_acknowledged,
    a_restarted_consumer_finishes_its_pending_entries,
    a_dead_consumers_entries_are_claimed,
    the_consumer_loop_delivers_everything_across_a_crash,
);

fn result(match_id: u64) -> MatchResult {
    MatchResult {
        match_id: MatchId(match_id),
        game: "pong".into(),
        shard: "s".into(),
        seats: vec![
            SeatResult { seat: 0, player_id: Some(PlayerId(1)), side: 0, forfeited: false },
            SeatResult { seat: 1, player_id: Some(PlayerId(2)), side: 1, forfeited: false },
        ],
        scores: vec![3, 1],
        winner: Some(0),
        reason: EndReason::Score,
        duration_ticks: 100,
        tick_rate_hz: 60,
        started_at_ms: 1,
        ended_at_ms: 2,
        input_log_digest: "00".repeat(32),
    }
}

fn ids(deliveries: &[rally_matchmaker::Delivery]) -> Vec<u64> {
    deliveries.iter().map(|delivery| delivery.result.match_id.0).collect()
}

async fn every_group_sees_every_result_once_acknowledged(backend: &Backend) {
    let bus = backend.backends().bus;
    bus.ensure_group("ratings").await.unwrap();
    bus.ensure_group("ratings").await.unwrap(); // idempotent
    for match_id in 1..=3 {
        bus.publish(&result(match_id)).await.unwrap();
    }
    // A group made after the publishes still starts at the oldest entry.
    bus.ensure_group("tournaments").await.unwrap();
    let wait = Duration::from_millis(50);
    let first = bus.read_new("ratings", "c1", 2, wait).await.unwrap();
    assert_eq!(ids(&first), [1, 2]);
    assert_eq!(first[0].result, result(1));
    let second = bus.read_new("ratings", "c2", 10, wait).await.unwrap();
    assert_eq!(ids(&second), [3], "within a group each entry goes to one consumer");
    assert!(bus.read_new("ratings", "c1", 10, wait).await.unwrap().is_empty());
    assert_eq!(ids(&bus.read_new("tournaments", "t", 10, wait).await.unwrap()), [1, 2, 3]);

    bus.ack("ratings", &[first[0].id.clone()]).await.unwrap();
    assert_eq!(ids(&bus.read_pending("ratings", "c1", 10).await.unwrap()), [2]);
    bus.ack("ratings", &[first[1].id.clone(), second[0].id.clone()]).await.unwrap();
    assert!(bus.read_pending("ratings", "c1", 10).await.unwrap().is_empty());
    assert!(bus.read_pending("ratings", "c2", 10).await.unwrap().is_empty());

    // A read waiting on an empty stream wakes for a publish.
    let reader = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.read_new("ratings", "c1", 10, Duration::from_secs(20)).await.unwrap() })
    };
    bus.publish(&result(4)).await.unwrap();
    assert_eq!(ids(&common::within(reader).await.unwrap()), [4]);
}

async fn a_restarted_consumer_finishes_its_pending_entries(backend: &Backend) {
    let bus = backend.backends().bus;
    bus.ensure_group("g").await.unwrap();
    for match_id in 1..=5 {
        bus.publish(&result(match_id)).await.unwrap();
    }
    let taken = bus.read_new("g", "worker-1", 5, Duration::from_millis(50)).await.unwrap();
    bus.ack("g", &[taken[0].id.clone()]).await.unwrap();
    // "worker-1" crashes here. Its replacement with the same name resumes.
    let pending = bus.read_pending("g", "worker-1", 10).await.unwrap();
    assert_eq!(ids(&pending), [2, 3, 4, 5]);
    assert!(bus.read_pending("g", "worker-2", 10).await.unwrap().is_empty());
}

async fn a_dead_consumers_entries_are_claimed(backend: &Backend) {
    let bus = backend.backends().bus;
    bus.ensure_group("g").await.unwrap();
    for match_id in 1..=3 {
        bus.publish(&result(match_id)).await.unwrap();
    }
    let _lost = bus.read_new("g", "dead", 3, Duration::from_millis(50)).await.unwrap();
    assert!(bus.claim_stale("g", "alive", Duration::from_secs(3600), 10).await.unwrap().is_empty(), "not idle yet");
    let claimed = bus.claim_stale("g", "alive", Duration::ZERO, 10).await.unwrap();
    assert_eq!(ids(&claimed), [1, 2, 3]);
    assert!(bus.read_pending("g", "dead", 10).await.unwrap().is_empty());
    assert_eq!(ids(&bus.read_pending("g", "alive", 10).await.unwrap()), [1, 2, 3]);
}

/// Records every match id it sees; fails the first delivery of `fail_once`.
struct Recorder {
    seen: Mutex<Vec<u64>>,
    fail_once: Mutex<HashSet<u64>>,
}

#[tonic::async_trait]
impl ResultHandler for Recorder {
    async fn handle(&self, result: &MatchResult) -> Result<(), String> {
        if self.fail_once.lock().unwrap().remove(&result.match_id.0) {
            return Err("transient failure".into());
        }
        self.seen.lock().unwrap().push(result.match_id.0);
        Ok(())
    }
}

async fn the_consumer_loop_delivers_everything_across_a_crash(backend: &Backend) {
    let bus: Arc<dyn ResultsBus> = backend.backends().bus;
    let recorder = Arc::new(Recorder { seen: Mutex::new(Vec::new()), fail_once: Mutex::new(HashSet::from([7])) });
    let config = ConsumerConfig {
        claim_idle: Duration::from_millis(200),
        claim_every: Duration::from_millis(50),
        wait: Duration::from_millis(20),
        ..ConsumerConfig::new("g", "c1")
    };
    // Entries read by a consumer that then died, before any live consumer exists.
    bus.ensure_group("g").await.unwrap();
    for match_id in 1..=4 {
        bus.publish(&result(match_id)).await.unwrap();
    }
    let _in_flight_when_it_died = bus.read_new("g", "crashed", 2, Duration::from_millis(50)).await.unwrap();
    let consumer = run_consumer(bus.clone(), config.clone(), recorder.clone());
    for match_id in 5..=10 {
        bus.publish(&result(match_id)).await.unwrap();
    }
    let all: HashSet<u64> = (1..=10).collect();
    eventually("every result is handled, the failed one retried and the dead consumer's claimed", || async {
        recorder.seen.lock().unwrap().iter().copied().collect::<HashSet<_>>() == all
    })
    .await;
    let first = consumer.stats();
    assert!(first.claimed >= 2, "the dead consumer's two entries were claimed: {first:?}");
    assert!(first.failed >= 1, "{first:?}");
    consumer.kill();
    // Published while no consumer runs; a restarted consumer picks them up.
    for match_id in 11..=12 {
        bus.publish(&result(match_id)).await.unwrap();
    }
    let consumer = run_consumer(bus.clone(), config, recorder.clone());
    eventually("results published while the consumer was down arrive", || async {
        let seen = recorder.seen.lock().unwrap();
        seen.contains(&11) && seen.contains(&12)
    })
    .await;
    let stats = consumer.stop().await;
    assert!(stats.handled >= 2, "{stats:?}");
    // At least once: each result was seen, none lost.
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), (1..=12).collect());
}

/// On Redis, entries are the versioned protobuf of `bus.proto`: an entry of a
/// version this build does not read, or garbage, is dead-lettered (kept with
/// the reason in `P:results:dead`) and acknowledged, never misread or left to
/// block the group; a JSON entry of an older release is still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refused_entries_are_dead_lettered_and_older_json_entries_still_read() {
    use prost::Message as _;
    use rally_protocol::bus::{BusEvent as _, pb};

    let backend = Backend::redis().await;
    let Backend::Redis(redis) = &backend else { unreachable!("Backend::redis") };
    let bus = rally_matchmaker::redis::RedisBus::new(redis.clone());
    bus.ensure_group("g").await.unwrap();
    let url = std::env::var("RALLY_TEST_REDIS_URL").unwrap();
    let mut conn = ::redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let stream = format!("{}:results", redis.prefix());
    let add = |field: &'static str, bytes: Vec<u8>| {
        let mut command = ::redis::cmd("XADD");
        command.arg(&stream).arg("*").arg(field).arg(bytes);
        command
    };
    add("result", serde_json::to_vec(&result(1)).unwrap()).query_async::<String>(&mut conn).await.unwrap();
    let newer = pb::MatchResult { version: 2, match_id: 2, ..pb::MatchResult::default() }.encode_to_vec();
    let newer_id: String = add("pb", newer.clone()).query_async(&mut conn).await.unwrap();
    add("pb", b"\xff\xff garbage".to_vec()).query_async::<String>(&mut conn).await.unwrap();
    bus.publish(&result(4)).await.unwrap();
    let entry: ::redis::streams::StreamRangeReply = ::redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(10)
        .query_async(&mut conn)
        .await
        .unwrap();
    let published = entry.ids.last().unwrap();
    let bytes: Vec<u8> = published.get("pb").unwrap();
    assert_eq!(MatchResult::decode(&bytes).unwrap(), result(4), "publish writes the protobuf event");

    let got = bus.read_new("g", "c1", 10, Duration::from_millis(50)).await.unwrap();
    assert_eq!(ids(&got), [1, 4], "the older JSON entry and the current one; the other two refused");
    let dead: ::redis::streams::StreamRangeReply =
        ::redis::cmd("XRANGE").arg(bus.dead_letter_key()).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    assert_eq!(dead.ids.len(), 2, "both refused entries are dead-lettered");
    let first = &dead.ids[0];
    assert_eq!(first.get::<String>("entry").unwrap(), newer_id);
    assert_eq!(first.get::<String>("group").unwrap(), "g");
    let reason: String = first.get("reason").unwrap();
    assert!(reason.contains("MatchResult version 2 is not one this build reads"), "{reason}");
    assert_eq!(first.get::<Vec<u8>>("field:pb").unwrap(), newer, "the entry is kept as it was, to replay");
    assert!(dead.ids[1].get::<String>("reason").unwrap().starts_with("malformed MatchResult"));
    bus.ack("g", &got.iter().map(|delivery| delivery.id.clone()).collect::<Vec<_>>()).await.unwrap();
    let lag = bus.lag("g").await.unwrap().unwrap();
    assert_eq!((lag.pending, lag.undelivered), (0, 0), "refused entries were acknowledged: {lag:?}");
    backend.cleanup().await;
}

/// Match-formed events on Redis are `bus.proto` messages; an older release's
/// JSON entry is still read, and a newer version or garbage is skipped (the
/// reader is handed an empty marker it moves past), never misread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_match_formed_events_are_versioned_protobuf() {
    use prost::Message as _;
    use rally_matchmaker::match_events::{MATCH_FORMED_VERSION, MatchEvents as _, MatchFormed};
    use rally_protocol::bus::pb;

    let backend = Backend::redis().await;
    let Backend::Redis(redis) = &backend else { unreachable!("Backend::redis") };
    let events = rally_matchmaker::redis::RedisMatchEvents::new(redis.clone());
    let formed = |match_id: u64| MatchFormed {
        v: MATCH_FORMED_VERSION,
        match_id: MatchId(match_id),
        mode: "pong".into(),
        shard: "s".into(),
        players: vec![PlayerId(1), PlayerId(2)],
        formed_at_ms: 5,
    };
    let url = std::env::var("RALLY_TEST_REDIS_URL").unwrap();
    let mut conn = ::redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let stream = format!("{}:matches", redis.prefix());
    let mut legacy = ::redis::cmd("XADD");
    legacy.arg(&stream).arg("*").arg("formed").arg(serde_json::to_vec(&formed(1)).unwrap());
    legacy.query_async::<String>(&mut conn).await.unwrap();
    let newer = pb::MatchFormed { version: 2, match_id: 2, players: vec![9], ..pb::MatchFormed::default() };
    let mut add_newer = ::redis::cmd("XADD");
    add_newer.arg(&stream).arg("*").arg("pb").arg(newer.encode_to_vec());
    add_newer.query_async::<String>(&mut conn).await.unwrap();
    events.announce(&formed(3)).await.unwrap();

    let read = events.read_after(None, 10, Duration::from_millis(50)).await.unwrap();
    let read: Vec<MatchFormed> = read.into_iter().map(|(_, formed)| formed).collect();
    assert_eq!(read, [formed(1), MatchFormed::skipped(), formed(3)]);
    backend.cleanup().await;
}
