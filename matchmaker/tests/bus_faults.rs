//! The results consumer across Redis losing its data: a `redis-server` of the
//! test's own (never the shared one) is flushed under a running consumer, and
//! results published afterwards are still handled, because the consumer
//! makes its group again. Also the consumer group's lag as the bus reports it.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, eventually};
use rally_matchmaker::RedisConnection;
use rally_matchmaker::bus::{ConsumerConfig, ConsumerLag, ResultHandler, ResultsBus, run_consumer};
use rally_matchmaker::redis::RedisBus;
use rally_protocol::control::EndReason;
use rally_protocol::results::{MatchResult, SeatResult};
use rally_protocol::{MatchId, PlayerId};

on_both_backends!(the_bus_reports_a_groups_lag);

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

async fn the_bus_reports_a_groups_lag(backend: &Backend) {
    let bus = backend.backends().bus;
    bus.ensure_group("g").await.unwrap();
    for match_id in 1..=3 {
        bus.publish(&result(match_id)).await.unwrap();
    }
    assert_eq!(bus.lag("g").await.unwrap(), Some(ConsumerLag { pending: 0, undelivered: 3 }));
    let read = bus.read_new("g", "c", 1, Duration::from_millis(50)).await.unwrap();
    assert_eq!(bus.lag("g").await.unwrap(), Some(ConsumerLag { pending: 1, undelivered: 2 }));
    bus.ack("g", &[read[0].id.clone()]).await.unwrap();
    assert_eq!(bus.lag("g").await.unwrap().map(|lag| lag.backlog()), Some(2));
}

/// A `redis-server` of this test's own on a free port, with no persistence;
/// killed when dropped.
struct OwnRedis {
    child: Child,
    url: String,
}

impl OwnRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for this test (apt-get install redis-server)");
        Self { child, url: format!("redis://127.0.0.1:{port}") }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Recorder {
    seen: Mutex<Vec<u64>>,
}

#[tonic::async_trait]
impl ResultHandler for Recorder {
    async fn handle(&self, result: &MatchResult) -> Result<(), String> {
        self.seen.lock().unwrap().push(result.match_id.0);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_makes_its_group_again_after_redis_loses_its_data() {
    let redis_server = OwnRedis::start();
    let redis = RedisConnection::connect_lazy(&redis_server.url, "faults").unwrap().with_role("the lobby");
    eventually("the test's own redis-server answers", || async { redis.delete_all().await.is_ok() }).await;
    let bus: Arc<dyn ResultsBus> = Arc::new(RedisBus::new(redis.clone()));
    let recorder = Arc::new(Recorder { seen: Mutex::new(Vec::new()) });
    let config = ConsumerConfig { wait: Duration::from_millis(20), ..ConsumerConfig::new("lobby-ratings", "lobby-1") };
    let consumer = run_consumer(bus.clone(), config, recorder.clone());
    bus.publish(&result(1)).await.unwrap();
    eventually("the first result is handled", || async { recorder.seen.lock().unwrap().contains(&1) }).await;

    // Redis loses everything: the stream and the consumer group with it.
    let client = ::redis::Client::open(redis_server.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    ::redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.unwrap();
    bus.publish(&result(2)).await.unwrap();
    eventually("a result published after the flush is handled", || async {
        recorder.seen.lock().unwrap().contains(&2)
    })
    .await;
    let stats = consumer.stop().await;
    assert_eq!(stats.handled, 2, "{stats:?}");
    assert_eq!(bus.lag("lobby-ratings").await.unwrap(), Some(ConsumerLag { pending: 0, undelivered: 0 }));
}
