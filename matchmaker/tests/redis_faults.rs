//! The shard registry and the results bus through Redis faults, on a
//! `redis-server` of the test's own (a free port, a temporary directory, no
//! automatic snapshots) that it stops and restarts; the machine's shared Redis
//! is never touched. Needs `redis-server` on `PATH`.
//!
//! An outage longer than the shards' TTL must not reap live shards: the
//! matchmaker waits a TTL after Redis answers again before it reaps, leases run
//! on Redis's clock, and every match keeps exactly one outcome on the stream.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, matchmaker, shard, within};
use rally_matchmaker::config::{MatchmakerConfig, ModeConfig};
use rally_matchmaker::engine::{aborted_result, unix_ms};
use rally_matchmaker::registry::{MatchRecord, Reservation, SeatRecord, ShardLoad, ShardLoss};
use rally_matchmaker::shard_agent::{self, ShardAgentConfig};
use rally_matchmaker::ticket::TicketId;
use rally_matchmaker::{Backends, EnqueueRequest, RedisConnection, TicketState};
use rally_protocol::control::EndReason;
use rally_protocol::results::MatchResult;
use rally_protocol::{MatchId, PlayerId};
use tokio::sync::{mpsc, watch};

/// A `redis-server` owned by one test, stopped when dropped.
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Self { port, dir: tempfile::tempdir().unwrap(), child: None };
        redis.spawn().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server on its port and directory (loading the snapshot a
    /// [`OwnRedis::stop`] left there) and waits until it answers.
    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (the Redis fault tests start their own)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        eventually("the test's own redis-server answers", || async {
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return false };
            redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
        })
        .await;
    }

    /// Shuts the server down, saving its data to the directory for the restart.
    async fn stop(&mut self) {
        let status = Command::new("redis-cli").args(["-p", &self.port.to_string(), "SHUTDOWN", "SAVE"]).status();
        assert!(status.is_ok(), "redis-cli: {status:?}");
        let mut child = self.child.take().unwrap();
        tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    }

    fn connection(&self, prefix: &str) -> RedisConnection {
        RedisConnection::connect_lazy(&self.url(), prefix).unwrap()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn record(match_id: u64, shard: &str) -> MatchRecord {
    MatchRecord {
        match_id: MatchId(match_id),
        mode: "pong".into(),
        shard: shard.into(),
        tickets: vec![TicketId(match_id)],
        seats: vec![SeatRecord { seat: 0, side: 0, player_id: PlayerId(match_id), bot: false }],
        n_sides: 2,
        reserved_at_ms: 0,
    }
}

/// Leases run on Redis's clock: a matchmaker whose clock is an hour ahead
/// reaps nothing, and a caller's `now_ms` far behind keeps nothing alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_run_on_redis_time_not_the_callers_clock() {
    let redis = OwnRedis::start().await;
    let registry = Backends::redis(&redis.connection("t"), Duration::from_secs(600)).registry;
    // A shard whose clock is far behind registers for ten minutes.
    registry.register(&shard("s", "eu", 10), 600_000, 0).await.unwrap();
    assert_eq!(registry.reserve("s", &record(1, "s"), 0).await.unwrap(), Reservation::Reserved);
    let an_hour_ahead = unix_ms() + 3_600_000;
    assert_eq!(registry.shards(an_hour_ahead).await.unwrap().len(), 1);
    assert!(registry.reap_expired(an_hour_ahead).await.unwrap().is_empty());
    assert!(registry.reap_expired(an_hour_ahead + 3_600_000).await.unwrap().is_empty());
    assert_eq!(registry.shards(0).await.unwrap()[0].reserved, 1);
}

/// After Redis comes back, a lapsed shard is reaped only once the matchmaker
/// has been connected for the shard's TTL (times here are the matchmaker's
/// injected `now_ms`; the lapse itself is on Redis's clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaping_waits_a_ttl_after_redis_returns() {
    const TTL_MS: u64 = 300;
    let mut redis = OwnRedis::start().await;
    let matchmaker_side = Backends::redis(&redis.connection("t"), Duration::from_secs(600)).registry;
    let shard_side = Backends::redis(&redis.connection("t"), Duration::from_secs(600)).registry;
    shard_side.register(&shard("s", "eu", 10), TTL_MS, 0).await.unwrap();
    shard_side.reserve("s", &record(1, "s"), 0).await.unwrap();
    assert!(matchmaker_side.reap_expired(1_000).await.unwrap().is_empty());

    redis.stop().await;
    assert!(matchmaker_side.reap_expired(2_000).await.is_err(), "Redis is down");
    redis.spawn().await;
    // Back with its data; the shard (not heartbeating) lapses on Redis's clock.
    let lapsed = || async {
        matchmaker_side.shards(10_000).await.is_ok_and(|live| live.is_empty())
            && shard_side.shards(0).await.is_ok_and(|live| live.is_empty())
    };
    eventually("the lease lapses on Redis's clock", lapsed).await;
    // Connected again since 10 000 (the first answer after the outage).
    assert!(matchmaker_side.reap_expired(10_000 + TTL_MS - 1).await.unwrap().is_empty(), "within the grace");
    let reaped = matchmaker_side.reap_expired(10_000 + TTL_MS).await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!((reaped[0].name.as_str(), reaped[0].loss, reaped[0].matches.len()), ("s", ShardLoss::Lapsed, 1));
}

/// Issue #14: after a Redis outage longer than the TTL the matchmaker reaped
/// every live shard before its next heartbeat; each running match was
/// reported aborted, then its real result followed (two outcomes per match
/// id), and the reservation counts were too low.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_ttl_reaps_no_live_shard_and_each_match_keeps_one_outcome() {
    const TTL: Duration = Duration::from_secs(2);
    let mut redis = OwnRedis::start().await;
    let backends = Backends::redis(&redis.connection("t"), Duration::from_secs(600));
    // The shard is another process: a connection of its own.
    let shard_backends = Backends::redis(&redis.connection("t"), Duration::from_secs(600));
    backends.bus.ensure_group("audit").await.unwrap();
    let (results_tx, results_rx) = mpsc::unbounded_channel::<MatchResult>();
    let (_drain_tx, drain_rx) = watch::channel(false);
    let config = ShardAgentConfig {
        heartbeat_interval: Duration::from_millis(100),
        ttl: TTL,
        ..ShardAgentConfig::new(shard("s", "eu", 10))
    };
    let agent = tokio::spawn(shard_agent::run(
        shard_backends.registry.clone(),
        shard_backends.bus.clone(),
        config,
        results_rx,
        Arc::new(ShardLoad::default),
        drain_rx,
    ));
    let registry = backends.registry.clone();
    eventually("the shard registers", || async { !registry.shards(unix_ms()).await.unwrap().is_empty() }).await;
    let modes = vec![ModeConfig::one_vs_one("pong")];
    let mm = matchmaker(MatchmakerConfig { modes, ..MatchmakerConfig::default() }, backends.clone(), &[]);
    let mut tickets = Vec::new();
    for player in 1..=12 {
        let request = EnqueueRequest { mode: "pong".into(), ..EnqueueRequest::default() };
        tickets.push((player, mm.enqueue(PlayerId(player), request, unix_ms()).await.unwrap().id));
    }
    assert_eq!(mm.run_round(unix_ms()).await.unwrap().matches, 6);
    let mut match_ids = Vec::new();
    for &(player, ticket) in &tickets {
        let (_, receiver) = mm.watch(PlayerId(player), ticket).await.unwrap();
        match receiver.borrow().clone() {
            Some(TicketState::Matched(assignment)) => match_ids.push(assignment.match_id),
            other => panic!("player {player}: {other:?}"),
        }
    }
    match_ids.sort();
    match_ids.dedup();
    assert_eq!(match_ids.len(), 6);

    // Redis goes away for longer than the TTL; the matchmaker keeps running rounds.
    redis.stop().await;
    let down_at = unix_ms();
    let ttl_ms = TTL.as_millis() as u64;
    eventually("the outage outlasts the TTL", || async {
        mm.run_round(unix_ms()).await.is_err() && unix_ms() > down_at + ttl_ms + 500
    })
    .await;
    redis.spawn().await;

    // Rounds go on; the shard's next heartbeat takes its entry back.
    let aborted = std::cell::Cell::new(0);
    eventually("the shard heartbeats again with its six matches", || async {
        if let Ok(stats) = mm.run_round(unix_ms()).await {
            aborted.set(aborted.get() + stats.aborted_matches);
        }
        let Ok(live) = registry.shards(unix_ms()).await else { return false };
        live.first().is_some_and(|entry| entry.reserved == 6 && entry.expires_at_ms > unix_ms() + ttl_ms / 2)
    })
    .await;
    // Past the grace: still nothing to reap.
    let past_grace = unix_ms() + ttl_ms;
    let aborted = aborted.get() + mm.run_round(past_grace).await.unwrap().aborted_matches;

    // The matches end for real on the shard.
    for &match_id in &match_ids {
        let real = MatchResult {
            winner: Some(1),
            reason: EndReason::Score,
            ..aborted_result(&record(match_id.0, "s"), unix_ms())
        };
        results_tx.send(real).unwrap();
    }
    eventually("every result is published and released", || async {
        registry.shards(unix_ms()).await.is_ok_and(|live| live.first().is_some_and(|entry| entry.reserved == 0))
    })
    .await;
    let mut outcomes: HashMap<MatchId, Vec<Option<u8>>> = HashMap::new();
    loop {
        let batch = backends.bus.read_new("audit", "t", 100, Duration::from_millis(50)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for delivery in batch {
            outcomes.entry(delivery.result.match_id).or_default().push(delivery.result.winner);
        }
    }
    let n_outcomes: usize = outcomes.values().map(Vec::len).sum();
    eprintln!(
        "after a {} ms outage (TTL {ttl_ms} ms): {aborted} matches reaped, {} match ids, {n_outcomes} outcomes",
        unix_ms() - down_at,
        outcomes.len()
    );
    assert_eq!(aborted, 0, "no live shard is reaped");
    assert_eq!(outcomes.len(), 6);
    assert!(outcomes.values().all(|winners| winners == &[Some(1)]), "one real outcome per match: {outcomes:?}");
    for (player, ticket) in tickets {
        let (_, receiver) = mm.watch(PlayerId(player), ticket).await.unwrap();
        let state = receiver.borrow().clone();
        assert!(matches!(state, Some(TicketState::Matched(_))), "player {player}: {state:?}");
    }
    drop(results_tx);
    let report = within(agent).await.unwrap();
    assert_eq!((report.published, report.dropped), (6, 0), "{report:?}");
}
