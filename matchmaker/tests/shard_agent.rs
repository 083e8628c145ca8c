//! The shard agent on each backend: registration with load, draining,
//! results published in order and reservations released, results kept and
//! retried while the bus is down, deregistration at the end.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Backend, eventually, shard, within};
use rally_matchmaker::bus::{Delivery, ResultsBus};
use rally_matchmaker::engine::{aborted_result, unix_ms};
use rally_matchmaker::registry::{MatchRecord, Reservation, SeatRecord, ShardLoad};
use rally_matchmaker::shard_agent::{self, ShardAgentConfig};
use rally_matchmaker::{BackendError, TicketId};
use rally_protocol::results::MatchResult;
use rally_protocol::{MatchId, PlayerId};
use tokio::sync::{mpsc, watch};

on_both_backends!(the_agent_registers_drains_and_publishes_through_an_outage);

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
