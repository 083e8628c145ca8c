//! The shard agent on each backend: registration with load, draining,
//! results published in order and reservations released, results kept and
//! retried while the bus is down, deregistration at the end; one outcome per
//! match id, registering again when forgotten, and a restarted shard's
//! predecessor's matches reported aborted; results published again when
//! Redis comes back without its data.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Backend, eventually, matchmaker, shard, within};
use rally_matchmaker::bus::{Delivery, ResultsBus, Settlement};
use rally_matchmaker::config::{MatchmakerConfig, ModeConfig};
use rally_matchmaker::engine::{aborted_result, unix_ms};
use rally_matchmaker::registry::{MatchRecord, Reservation, SeatRecord, ShardInfo, ShardLoad};
use rally_matchmaker::shard_agent::{self, ShardAgentConfig};
use rally_matchmaker::{BackendError, EnqueueRequest, TicketId, TicketState};
use rally_protocol::control::EndReason;
use rally_protocol::results::MatchResult;
use rally_protocol::{MatchId, PlayerId};
use tokio::sync::{mpsc, watch};

on_both_backends!(
    the_agent_registers_drains_and_publishes_through_an_outage,
    a_late_result_for_a_match_already_reported_aborted_is_dropped,
    a_forgotten_shard_that_is_alive_registers_again,
    a_restarted_shards_predecessors_matches_are_reported_aborted_and_free_their_slots,
    a_restarted_shard_settles_what_its_predecessor_recorded_before_the_aborts,
);

/// A bus that refuses the first `failures` publishes, as Redis being down would.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn ResultsBus>,
    failures: AtomicU32,
}

#[tonic::async_trait]
impl ResultsBus for Flaky {
    async fn publish(&self, result: &MatchResult) -> Result<String, BackendError> {
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(BackendError::Unavailable("Redis is down (test)".into()));
        }
        self.inner.publish(result).await
    }
    async fn settle(&self, result: &MatchResult) -> Result<Settlement, BackendError> {
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(BackendError::Unavailable("Redis is down (test)".into()));
        }
        self.inner.settle(result).await
    }
    async fn ensure_group(&self, group: &str) -> Result<(), BackendError> {
        self.inner.ensure_group(group).await
    }
    async fn read_new(&self, g: &str, c: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>, BackendError> {
        self.inner.read_new(g, c, max, wait).await
    }
    async fn read_pending(&self, g: &str, c: &str, max: usize) -> Result<Vec<Delivery>, BackendError> {
        self.inner.read_pending(g, c, max).await
    }
    async fn claim_stale(&self, g: &str, c: &str, idle: Duration, max: usize) -> Result<Vec<Delivery>, BackendError> {
        self.inner.claim_stale(g, c, idle, max).await
    }
    async fn ack(&self, g: &str, ids: &[String]) -> Result<(), BackendError> {
        self.inner.ack(g, ids).await
    }
}

/// Issue #17's fleet test: Redis restarted without its data lost a result
/// the shard had published just before, which no consumer had read yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_lost_with_redis_data_are_published_again_once() {
    let backend = common::Backend::redis().await;
    let common::Backend::Redis(redis) = &backend else { unreachable!("a Redis backend") };
    let backends = backend.backends();
    let registry = backends.registry.clone();
    let (results_tx, results_rx) = mpsc::unbounded_channel();
    let (_drain_tx, drain_rx) = watch::channel(false);
    let info = shard("agent-shard", "eu", 5);
    let agent = tokio::spawn(shard_agent::run(
        registry.clone(),
        backends.bus.clone(),
        agent_config(info.clone()),
        results_rx,
        no_load(),
        drain_rx,
    ));
    eventually("the shard registers", || async { !registry.shards(unix_ms()).await.unwrap().is_empty() }).await;
    for match_id in [1, 2] {
        assert_eq!(registry.reserve("agent-shard", &record(match_id), unix_ms()).await.unwrap(), Reservation::Reserved);
        results_tx.send(aborted_result(&record(match_id), 1)).unwrap();
    }
    eventually("both results are published", || async { registry.shards(unix_ms()).await.unwrap()[0].reserved == 0 })
        .await;
    // Redis comes back empty before any consumer read them: every key of the
    // prefix goes in one script, atomically as a restart would (a SCAN-and-DEL
    // could delete half of the entry the agent re-registers meanwhile).
    let client = ::redis::Client::open(std::env::var("RALLY_TEST_REDIS_URL").unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let wipe = ::redis::Script::new(
        "for _, key in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', key) end return 1",
    );
    let _: i64 = wipe.arg(format!("{}:*", redis.prefix())).invoke_async(&mut conn).await.unwrap();
    eventually("the shard registers again", || async { !registry.shards(unix_ms()).await.unwrap().is_empty() }).await;
    backends.bus.ensure_group("audit").await.unwrap();
    let again = backends.bus.read_new("audit", "t", 10, Duration::from_millis(500)).await.unwrap();
    let ids: Vec<u64> = again.iter().map(|delivery| delivery.result.match_id.0).collect();
    assert_eq!(ids, [1, 2], "the lost results are back, in order, once each");
    // Forgotten again with the data intact (reaped while alive): the match ids
    // are settled, so nothing is appended a second time.
    registry.deregister(&info.name, info.incarnation).await.unwrap();
    eventually("the shard registers once more", || async { !registry.shards(unix_ms()).await.unwrap().is_empty() })
        .await;
    drop(results_tx);
    let report = within(agent).await.unwrap();
    assert_eq!((report.published, report.republished), (2, 2), "{report:?}");
    let more = backends.bus.read_new("audit", "t", 10, Duration::from_millis(100)).await.unwrap();
    assert!(more.is_empty(), "one outcome per match id: {more:?}");
    backend.cleanup().await;
}

fn record(match_id: u64) -> MatchRecord {
    MatchRecord {
        match_id: MatchId(match_id),
        mode: "pong".into(),
        shard: "agent-shard".into(),
        tickets: vec![TicketId(match_id)],
        seats: vec![SeatRecord { seat: 0, side: 0, player_id: PlayerId(1), bot: false }],
        n_sides: 2,
        reserved_at_ms: 0,
    }
}

async fn the_agent_registers_drains_and_publishes_through_an_outage(backend: &Backend) {
    let backends = backend.backends();
    backends.bus.ensure_group("audit").await.unwrap();
    let bus = Arc::new(Flaky { inner: backends.bus.clone(), failures: AtomicU32::new(3) });
    let (results_tx, results_rx) = mpsc::unbounded_channel();
    let (drain_tx, drain_rx) = watch::channel(false);
    let config = ShardAgentConfig {
        heartbeat_interval: Duration::from_millis(20),
        ..ShardAgentConfig::new(shard("agent-shard", "eu", 5))
    };
    let load = Arc::new(|| ShardLoad { matches: 2, players: 4 });
    let agent = tokio::spawn(shard_agent::run(backends.registry.clone(), bus, config, results_rx, load, drain_rx));
    let registry = backends.registry.clone();
    eventually("the shard registers and reports its load", || async {
        registry.shards(unix_ms()).await.unwrap().first().is_some_and(|entry| entry.load.matches == 2)
    })
    .await;
    for match_id in 1..=3 {
        assert_eq!(registry.reserve("agent-shard", &record(match_id), unix_ms()).await.unwrap(), Reservation::Reserved);
    }
    // Three results while the bus refuses the first three publishes.
    for match_id in 1..=3 {
        results_tx.send(aborted_result(&record(match_id), 1)).unwrap();
    }
    eventually("every result is published once the bus is back", || async {
        registry.shards(unix_ms()).await.unwrap()[0].reserved == 0
    })
    .await;
    let published = backends.bus.read_new("audit", "t", 10, Duration::from_millis(100)).await.unwrap();
    let ids: Vec<u64> = published.iter().map(|delivery| delivery.result.match_id.0).collect();
    assert_eq!(ids, [1, 2, 3], "in order, none lost");

    drain_tx.send(true).unwrap();
    eventually("the shard is marked draining", || async { registry.shards(unix_ms()).await.unwrap()[0].draining })
        .await;
    drop(results_tx); // the shard stopped
    let report = within(agent).await.unwrap();
    assert_eq!((report.published, report.released, report.unpublished), (3, 3, 0));
    assert!(report.heartbeats >= 1 && report.registrations >= 1, "{report:?}");
    assert!(registry.shards(unix_ms()).await.unwrap().is_empty(), "deregistered");
}

fn agent_config(info: ShardInfo) -> ShardAgentConfig {
    ShardAgentConfig { heartbeat_interval: Duration::from_millis(20), ..ShardAgentConfig::new(info) }
}

fn no_load() -> shard_agent::LoadProbe {
    Arc::new(ShardLoad::default)
}

/// Issue #14: a match reported aborted (its shard was reaped) had its real
/// result published after it, two outcomes for one match id.
async fn a_late_result_for_a_match_already_reported_aborted_is_dropped(backend: &Backend) {
    let backends = backend.backends();
    backends.bus.ensure_group("audit").await.unwrap();
    let (results_tx, results_rx) = mpsc::unbounded_channel();
    let (_drain_tx, drain_rx) = watch::channel(false);
    let config = agent_config(shard("agent-shard", "eu", 5));
    let agent = tokio::spawn(shard_agent::run(
        backends.registry.clone(),
        backends.bus.clone(),
        config,
        results_rx,
        no_load(),
        drain_rx,
    ));
    // The matchmaker already reported match 1 aborted.
    let aborted = aborted_result(&record(1), 5);
    assert!(matches!(backends.bus.settle(&aborted).await.unwrap(), Settlement::Published(_)));
    assert_eq!(backends.bus.settle(&aborted).await.unwrap(), Settlement::AlreadySettled);
    // The shard, cut off meanwhile, finishes matches 1 and 2 for real.
    for match_id in [1, 2] {
        let real = MatchResult { winner: Some(0), reason: EndReason::Score, ..aborted_result(&record(match_id), 9) };
        results_tx.send(real).unwrap();
    }
    drop(results_tx);
    let report = within(agent).await.unwrap();
    assert_eq!((report.published, report.dropped, report.unpublished), (1, 1, 0), "{report:?}");
    let outcomes = backends.bus.read_new("audit", "t", 10, Duration::from_millis(100)).await.unwrap();
    let outcomes: Vec<(u64, Option<u8>)> =
        outcomes.iter().map(|delivery| (delivery.result.match_id.0, delivery.result.winner)).collect();
    assert_eq!(outcomes, [(1, None), (2, Some(0))], "one outcome per match id, the first one");
}

/// The reaper removed a live shard's entry (say it was cut off from Redis
/// past its TTL): its next heartbeat registers it again.
async fn a_forgotten_shard_that_is_alive_registers_again(backend: &Backend) {
    let backends = backend.backends();
    let (results_tx, results_rx) = mpsc::unbounded_channel::<MatchResult>();
    let (_drain_tx, drain_rx) = watch::channel(false);
    let info = shard("agent-shard", "eu", 5);
    let registry = backends.registry.clone();
    let agent = tokio::spawn(shard_agent::run(
        registry.clone(),
        backends.bus.clone(),
        agent_config(info.clone()),
        results_rx,
        no_load(),
        drain_rx,
    ));
    eventually("the shard registers", || async { !registry.shards(unix_ms()).await.unwrap().is_empty() }).await;
    registry.deregister(&info.name, info.incarnation).await.unwrap();
    eventually("the shard registers again", || async { !registry.shards(unix_ms()).await.unwrap().is_empty() }).await;
    drop(results_tx);
    let report = within(agent).await.unwrap();
    assert!(report.registrations >= 2, "{report:?}");
}

/// Issue #14: a shard restarted inside the registry TTL leaked the dead
/// process's reservations (6 of 10 slots) and its matches were never reported.
async fn a_restarted_shards_predecessors_matches_are_reported_aborted_and_free_their_slots(backend: &Backend) {
    let backends = backend.backends();
    backends.bus.ensure_group("audit").await.unwrap();
    let registry = backends.registry.clone();
    let start = |info: ShardInfo| {
        let (results_tx, results_rx) = mpsc::unbounded_channel::<MatchResult>();
        let (drain_tx, drain_rx) = watch::channel(false);
        let agent = tokio::spawn(shard_agent::run(
            registry.clone(),
            backends.bus.clone(),
            agent_config(info),
            results_rx,
            no_load(),
            drain_rx,
        ));
        (agent, results_tx, drain_tx)
    };
    let first = shard("restarts", "eu", 10);
    let (agent, _results, _drain) = start(first.clone());
    eventually("the shard registers", || async { !registry.shards(unix_ms()).await.unwrap().is_empty() }).await;
    let mode = ModeConfig::one_vs_one("pong");
    let mm = matchmaker(MatchmakerConfig { modes: vec![mode], ..MatchmakerConfig::default() }, backends.clone(), &[]);
    let mut tickets = Vec::new();
    for player in 1..=12 {
        let request = EnqueueRequest { mode: "pong".into(), ..EnqueueRequest::default() };
        tickets.push((player, mm.enqueue(PlayerId(player), request, unix_ms()).await.unwrap().id));
    }
    assert_eq!(mm.run_round(unix_ms()).await.unwrap().matches, 6);
    assert_eq!(registry.shards(unix_ms()).await.unwrap()[0].reserved, 6);

    // kill -9: no deregistration; a new process of the same name starts at once.
    agent.abort();
    let _ = agent.await;
    let second = ShardInfo { incarnation: 2, ..first };
    let (agent, results, _drain) = start(second);
    eventually("the new incarnation registers", || async {
        registry.shards(unix_ms()).await.unwrap().first().is_some_and(|entry| entry.info.incarnation == 2)
    })
    .await;
    assert_eq!(registry.shards(unix_ms()).await.unwrap()[0].free(), 10, "the dead process's slots are free");
    assert_eq!(mm.run_round(unix_ms()).await.unwrap().aborted_matches, 6);
    assert_eq!(mm.run_round(unix_ms()).await.unwrap().aborted_matches, 0, "reported once");
    let reported = backends.bus.read_new("audit", "t", 100, Duration::from_millis(100)).await.unwrap();
    assert_eq!(reported.len(), 6);
    assert!(reported.iter().all(|delivery| rally_matchmaker::engine::is_aborted(&delivery.result)));
    for (player, ticket) in tickets {
        let (_, receiver) = mm.watch(PlayerId(player), ticket).await.unwrap();
        match receiver.borrow().clone() {
            Some(TicketState::Aborted { reason, .. }) => assert!(reason.contains("restarted"), "{reason}"),
            other => panic!("player {player}: {other:?}"),
        }
    }
    drop(results);
    within(agent).await.unwrap();
}

/// Issue #17's fleet test: a shard killed between writing a result to its
/// file and publishing it had the reaper's abort as that match's only
/// outcome. The restarted process settles what its predecessor recorded
/// before it registers (which reports the predecessor's matches aborted).
async fn a_restarted_shard_settles_what_its_predecessor_recorded_before_the_aborts(backend: &Backend) {
    let backends = backend.backends();
    backends.bus.ensure_group("audit").await.unwrap();
    let registry = backends.registry.clone();
    let start = |config: ShardAgentConfig| {
        let (results_tx, results_rx) = mpsc::unbounded_channel::<MatchResult>();
        let (drain_tx, drain_rx) = watch::channel(false);
        let agent = tokio::spawn(shard_agent::run(
            registry.clone(),
            backends.bus.clone(),
            config,
            results_rx,
            no_load(),
            drain_rx,
        ));
        (agent, results_tx, drain_tx)
    };
    let first = shard("restarts", "eu", 10);
    let (agent, _results, _drain) = start(agent_config(first.clone()));
    eventually("the shard registers", || async { !registry.shards(unix_ms()).await.unwrap().is_empty() }).await;
    let mode = ModeConfig::one_vs_one("pong");
    let mm = matchmaker(MatchmakerConfig { modes: vec![mode], ..MatchmakerConfig::default() }, backends.clone(), &[]);
    let mut tickets = Vec::new();
    for player in 1..=6 {
        let request = EnqueueRequest { mode: "pong".into(), ..EnqueueRequest::default() };
        tickets.push((player, mm.enqueue(PlayerId(player), request, unix_ms()).await.unwrap().id));
    }
    assert_eq!(mm.run_round(unix_ms()).await.unwrap().matches, 3);
    let mut match_ids = Vec::new();
    for (player, ticket) in &tickets {
        let (_, receiver) = mm.watch(PlayerId(*player), *ticket).await.unwrap();
        if let Some(TicketState::Matched(assignment)) = receiver.borrow().clone()
            && !match_ids.contains(&assignment.match_id.0)
        {
            match_ids.push(assignment.match_id.0);
        }
    }
    assert_eq!(match_ids.len(), 3);
    // kill -9 after two matches ended and were written to the file, before
    // either was published.
    agent.abort();
    let _ = agent.await;
    let recorded: Vec<MatchResult> = match_ids[..2]
        .iter()
        .map(|&id| MatchResult { winner: Some(1), reason: EndReason::Score, ..aborted_result(&record(id), 9) })
        .collect();
    let second = ShardInfo { incarnation: 2, ..first };
    let (agent, results, _drain) = start(ShardAgentConfig { recovered: recorded, ..agent_config(second) });
    eventually("the new incarnation registers", || async {
        registry.shards(unix_ms()).await.unwrap().first().is_some_and(|entry| entry.info.incarnation == 2)
    })
    .await;
    assert_eq!(mm.run_round(unix_ms()).await.unwrap().aborted_matches, 1, "only the match with no result");
    let outcomes = backends.bus.read_new("audit", "t", 100, Duration::from_millis(100)).await.unwrap();
    let mut outcomes: Vec<(u64, Option<u8>)> =
        outcomes.iter().map(|delivery| (delivery.result.match_id.0, delivery.result.winner)).collect();
    outcomes.sort_unstable();
    let mut expected = vec![(match_ids[0], Some(1)), (match_ids[1], Some(1)), (match_ids[2], None)];
    expected.sort_unstable();
    assert_eq!(outcomes, expected, "the recorded results are the outcomes; the third match is aborted");
    drop(results);
    let report = within(agent).await.unwrap();
    assert_eq!(report.recovered, 2, "{report:?}");
}
