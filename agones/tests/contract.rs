//! The bridge against the Agones SDK's gRPC contract: the official `agones` crate client talks
//! to a fake sidecar served from the SDK's `.proto` files (`common`), while a real shard
//! (`rally_server::start` with Pong) plays real matches over the in-memory transport. No
//! cluster and no real sidecar run here. Every wait is on a condition, with a deadline.

#![expect(clippy::unwrap_used, reason = "test")]

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rally_agones::fake_sidecar::{Call, FakeSidecar};
use rally_agones::{Bridge, BridgeConfig, BridgeStats, LiveProbe, Sdk};
use rally_client::session::ClientEvent;
use rally_client::{ConnectConfig, Connection, Transport};
use rally_protocol::control::ClientHello;
use rally_protocol::results::MatchResult;
use rally_protocol::token::TokenClaims;
use rally_protocol::{MatchId, PROTOCOL_VERSION, PlayerId};
use rally_server::{ServeConfig, ShardHandle, start};
use rally_sim::pong::PongWorld;
use tokio::sync::{mpsc, oneshot};

const SHARD: &str = "shard-agones";
const MAX_MATCHES: usize = 8;

fn issuer() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn serve_config(dir: &std::path::Path) -> ServeConfig {
    let mut config = ServeConfig::local(dir.to_owned(), vec![(1, issuer().verifying_key())]);
    config.shard.name = SHARD.into();
    config.shard.max_matches = MAX_MATCHES;
    config
}

/// The test cadence: pings every 100 ms, matches read every 20 ms.
fn bridge_config() -> BridgeConfig {
    BridgeConfig {
        health_every: Duration::from_millis(100),
        poll_every: Duration::from_millis(20),
        ..BridgeConfig::new(MAX_MATCHES, "0.1.0", "eu-test")
    }
}

async fn connect_sdk(sidecar: &FakeSidecar) -> Sdk {
    let port = sidecar.serve().await.unwrap();
    Sdk::new(Some(port), None).await.unwrap()
}

/// Two players seated in one match, kept connected until the match is ended.
struct Match {
    leave: oneshot::Sender<()>,
    players: Vec<tokio::task::JoinHandle<()>>,
}

/// Seats both players of match `id` (no time limit, a score no one reaches).
async fn open_match(shard: &ShardHandle, id: u64) -> Match {
    let transport = Transport::Memory(shard.memory_transport());
    let now = rally_transport::unix_ms();
    let (leave, leave_rx) = oneshot::channel();
    let mut leave_rx = Some(leave_rx);
    let mut players = Vec::new();
    for seat in 0..2u8 {
        let claims = TokenClaims {
            protocol_version: PROTOCOL_VERSION,
            key_id: 1,
            player_id: PlayerId(id * 10 + u64::from(seat)),
            match_id: MatchId(id),
            seat,
            n_seats: 2,
            points_to_win: 99,
            time_limit_s: u16::MAX,
            issued_at_ms: now,
            expires_at_ms: now + 600_000,
            nonce: [id as u8, seat, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            shard: SHARD.to_owned(),
        };
        let hello = ClientHello::Connect { token: claims.sign(&issuer()).unwrap() };
        let mut connection =
            Connection::connect(&transport, &ConnectConfig::new(shard.local_addr), &hello).await.unwrap();
        // Seat 0 leaves when told (a forfeit ends the match); both read events until the end.
        let mut leave_rx = if seat == 0 { leave_rx.take() } else { None };
        players.push(tokio::spawn(async move {
            loop {
                let leave = async {
                    match leave_rx.as_mut() {
                        Some(rx) => {
                            let _ = rx.await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = leave => {
                        connection.leave();
                        leave_rx = None;
                    }
                    event = connection.next_event() => match event {
                        Some(ClientEvent::Ended(_)) | None => break,
                        Some(_) => {}
                    },
                }
            }
        }));
    }
    Match { leave, players }
}

impl Match {
    /// One player leaves; the match ends by forfeit.
    async fn end(self) {
        let _ = self.leave.send(());
        for player in self.players {
            tokio::time::timeout(Duration::from_secs(30), player).await.unwrap().unwrap();
        }
    }
}

/// The counts the Counter was set to, in order.
fn counts(sidecar: &FakeSidecar) -> Vec<i64> {
    sidecar
        .lifecycle_calls()
        .into_iter()
        .filter_map(|call| match call {
            Call::UpdateCounter { count, .. } => count,
            _ => None,
        })
        .collect()
}

fn states(sidecar: &FakeSidecar) -> Vec<Call> {
    sidecar.lifecycle_calls().into_iter().filter(Call::is_state).collect()
}

/// Waits until the bridge has made `n` more health decisions (each `health_every`).
async fn health_decisions(stats: &BridgeStats, n: u64) {
    let decisions = || stats.pings_sent() + stats.pings_withheld();
    let target = decisions() + n;
    tokio::time::timeout(Duration::from_secs(30), async {
        while decisions() < target {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_shard_life_start_matches_drain_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = FakeSidecar::shard_ports();
    let sdk = connect_sdk(&sidecar).await;
    let (results_tx, mut results) = mpsc::unbounded_channel::<MatchResult>();
    let shard = start::<PongWorld>(serve_config(dir.path()), results_tx).await.unwrap();

    // Start: once the shard listens, labels, the Counter's capacity and count, then Ready.
    let bridge = Bridge::start(sdk, LiveProbe::new(&shard), bridge_config()).await.unwrap();
    let stats = bridge.stats();
    assert_eq!(
        sidecar.lifecycle_calls(),
        vec![
            Call::SetLabel("rally-version".into(), "0.1.0".into()),
            Call::SetLabel("rally-region".into(), "eu-test".into()),
            Call::UpdateCounter { name: "matches".into(), count: None, capacity: Some(MAX_MATCHES as i64), diff: 0 },
            Call::UpdateCounter { name: "matches".into(), count: Some(0), capacity: None, diff: 0 },
            Call::Ready,
        ]
    );
    assert_eq!(sidecar.counter(), (0, MAX_MATCHES as i64));
    assert_eq!(sidecar.state(), "Ready");
    assert_eq!(sidecar.labels()["agones.dev/sdk-rally-region"], "eu-test");
    sidecar.wait_until("the ticking shard pings", |s| s.pings() >= 3).await;

    // Matches: the count follows them; Allocated while any runs, Ready again once none does.
    let first = open_match(&shard, 1).await;
    sidecar.wait_until("one match counted", |s| s.counter().0 == 1 && s.state() == "Allocated").await;
    let second = open_match(&shard, 2).await;
    sidecar.wait_until("two matches counted", |s| s.counter().0 == 2).await;
    first.end().await;
    sidecar.wait_until("one match left", |s| s.counter().0 == 1).await;
    assert_eq!(sidecar.state(), "Allocated", "still Allocated while a match runs");
    second.end().await;
    sidecar.wait_until("empty again", |s| s.counter().0 == 0 && s.state() == "Ready").await;
    assert_eq!(counts(&sidecar), vec![0, 1, 2, 1, 0]);
    assert_eq!(states(&sidecar), vec![Call::Ready, Call::Allocate, Call::Ready]);

    // Drain: the running match finishes, the GameServer is never Ready again, and Shutdown
    // waits for the caller (who flushes the results first).
    let third = open_match(&shard, 3).await;
    sidecar.wait_until("the third match counted", |s| s.counter().0 == 1 && s.state() == "Allocated").await;
    shard.drain();
    third.end().await;
    sidecar.wait_until("the drained shard empty", |s| s.counter().0 == 0).await;
    let report = shard.wait().await.unwrap();
    assert_eq!(report.stats.matches_ended, 3);
    let mut flushed = 0;
    while results.try_recv().is_ok() {
        flushed += 1;
    }
    assert_eq!(flushed, 3, "every result reached the sink");
    health_decisions(&stats, 3).await;
    assert_eq!(sidecar.state(), "Allocated", "a draining shard is never made Ready again");
    assert!(!sidecar.calls().contains(&Call::Shutdown), "no Shutdown before the caller asks");
    assert!(stats.pings_withheld() > 0, "the stopped shard no longer ticks, so pings stopped");

    bridge.shutdown().await.unwrap();
    let lifecycle = sidecar.lifecycle_calls();
    assert_eq!(lifecycle.last(), Some(&Call::Shutdown), "{lifecycle:?}");
    assert_eq!(states(&sidecar), vec![Call::Ready, Call::Allocate, Call::Ready, Call::Allocate, Call::Shutdown]);
    assert_eq!(counts(&sidecar), vec![0, 1, 2, 1, 0, 1, 0]);
    // Pings travel on their own stream: wait for the ones sent to land, then check no more come.
    let sent = stats.pings_sent() as usize;
    sidecar.wait_until("every ping sent arrived", |s| s.pings() == sent).await;
    assert_eq!(stats.sdk_errors(), 0);
}

#[tokio::test]
async fn a_stuck_tick_loop_stops_the_health_pings() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = FakeSidecar::shard_ports();
    let sdk = connect_sdk(&sidecar).await;
    // The shard on a runtime of its own, one worker thread, as `rally shard` runs it, so a task
    // that blocks that thread freezes its tick loop while the bridge runs on.
    let shard_runtime =
        Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap());
    let (results_tx, _results) = mpsc::unbounded_channel();
    let config = serve_config(dir.path());
    let shard = shard_runtime.spawn(start::<PongWorld>(config, results_tx)).await.unwrap().unwrap();
    let bridge = Bridge::start(sdk, LiveProbe::new(&shard), bridge_config()).await.unwrap();
    let stats = bridge.stats();
    sidecar.wait_until("the ticking shard pings", |s| s.pings() >= 3).await;
    assert_eq!(stats.pings_withheld(), 0, "a shard that ticks is pinged for at every period");

    // Freeze the tick loop: block the shard's only worker thread.
    let (blocked_tx, blocked_rx) = oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    shard_runtime.spawn(async move {
        let _ = blocked_tx.send(());
        let _ = release_rx.recv();
    });
    blocked_rx.await.unwrap();
    let ticks_frozen = shard.live.ticks();
    let sent_at_block = stats.pings_sent();
    let withheld_at_block = stats.pings_withheld();
    health_decisions(&stats, 5).await;
    assert_eq!(shard.live.ticks(), ticks_frozen, "the tick loop is stuck");
    // One decision may have seen ticks made just before the block; none after it pings.
    assert!(
        stats.pings_sent() <= sent_at_block + 1,
        "{} pings sent after the block",
        stats.pings_sent() - sent_at_block
    );
    assert!(stats.pings_withheld() >= withheld_at_block + 4);
    let sent = stats.pings_sent() as usize;
    sidecar.wait_until("the pings sent before the stall arrived", |s| s.pings() == sent).await;
    assert_eq!(sidecar.state(), "Ready", "a stall changes no state: Agones judges health from the missing pings");

    // Unstuck, it pings again.
    release_tx.send(()).unwrap();
    sidecar.wait_until("pings resume", |s| s.pings() >= sent + 2).await;

    shard.drain();
    shard_runtime.spawn(shard.wait()).await.unwrap().unwrap();
    bridge.shutdown().await.unwrap();
    assert_eq!(sidecar.lifecycle_calls().last(), Some(&Call::Shutdown));
    Arc::try_unwrap(shard_runtime).unwrap().shutdown_background();
}

#[tokio::test]
async fn the_public_address_is_the_node_address_and_the_quic_host_port() {
    let sidecar = FakeSidecar::shard_ports();
    let mut sdk = connect_sdk(&sidecar).await;
    let game_server = sdk.get_gameserver().await.unwrap();
    assert_eq!(rally_agones::public_addr(&game_server).unwrap(), "203.0.113.7:27102");

    let unnamed = FakeSidecar::new(&[("default", 27102)]);
    let mut sdk = connect_sdk(&unnamed).await;
    let err = rally_agones::public_addr(&sdk.get_gameserver().await.unwrap()).unwrap_err();
    assert!(err.to_string().contains("no port named `quic`"), "{err}");
    assert!(err.to_string().contains("--public-addr"), "the error says what to do: {err}");
}
