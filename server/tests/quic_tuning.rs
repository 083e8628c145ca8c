//! The shard's and the SDK's QUIC tuning: what they ask of quinn, and UDP
//! packets per game datagram each way in short matches.
//!
//! The packet count is tested through a 30 ms one-way link and on bare
//! loopback: quinn 0.11 caps the `max_ack_delay` it asks a peer for at
//! `max(RTT, 25 ms)`, so below 25 ms of RTT an ACK rides on the next game
//! datagram only when that is due within 25 ms. The SDK's session sends its
//! inputs half a snapshot interval after each snapshot arrives, so on loopback
//! both directions' next datagram is about 17 ms away (before it did, about
//! half the connections sent an ACK-only packet per datagram one way). At a
//! WAN's RTT the requested 50 ms applies and every ACK rides anyway.

#![expect(clippy::unwrap_used, reason = "tests unwrap what must be there")]

mod common;

use std::time::Duration;

use rally_client::conditioner::LinkConditions;
use rally_client::proxy::UdpProxy;
use rally_client::quic::endpoint;
use rally_client::tls::{ServerTrust, client_config};
use rally_client::{ClientEvent, ConnectConfig, Connection, Transport};
use rally_protocol::control::ClientHello;
use rally_server::{ServeConfig, ShardConfig, start};
use rally_sim::pong::{INPUT_DOWN, INPUT_UP, PongWorld};
use tokio::sync::mpsc;

const SHARD: &str = "shard-test";

/// Counts of one connection's quinn stats between two reads.
#[derive(Debug, Default, Clone, Copy)]
struct Packets {
    udp_out: u64,
    udp_in: u64,
    datagrams_out: u64,
    datagrams_in: u64,
}

impl Packets {
    fn between(before: &quinn::ConnectionStats, after: &quinn::ConnectionStats) -> Self {
        Self {
            udp_out: after.udp_tx.datagrams - before.udp_tx.datagrams,
            udp_in: after.udp_rx.datagrams - before.udp_rx.datagrams,
            datagrams_out: after.frame_tx.datagram - before.frame_tx.datagram,
            datagrams_in: after.frame_rx.datagram - before.frame_rx.datagram,
        }
    }

    fn add(&mut self, other: Self) {
        self.udp_out += other.udp_out;
        self.udp_in += other.udp_in;
        self.datagrams_out += other.datagrams_out;
        self.datagrams_in += other.datagrams_in;
    }
}

/// Plays `n_matches` two-seat matches over QUIC through the SDK, across a
/// link of `conditions` both ways, and returns the clients' packet counts over
/// `window` from the first snapshot on.
async fn play(n_matches: u64, window: Duration, conditions: LinkConditions) -> Vec<Packets> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::local(dir.path().to_owned(), vec![(1, common::issuer().verifying_key())]);
    config.shard.name = SHARD.into();
    let (results_tx, _results) = mpsc::unbounded_channel();
    let shard = start::<PongWorld>(config, results_tx).await.unwrap();
    let client = endpoint(client_config(&ServerTrust::Fingerprint(shard.fingerprint.clone())).unwrap()).unwrap();
    let transport = Transport::Quic(client);
    let proxy = UdpProxy::start(shard.local_addr, conditions, 7).await.unwrap();
    let connect = ConnectConfig { server_name: "localhost".into(), ..ConnectConfig::new(proxy.local_addr()) };
    let mut players = Vec::new();
    for match_id in 1..=n_matches {
        for seat in 0..2 {
            let player = match_id * 2 + u64::from(seat);
            let mut claims = common::claims(SHARD, match_id, seat, player, rally_transport::unix_ms());
            // Long enough that no match ends inside the window.
            claims.points_to_win = 99;
            let token = claims.sign(&common::issuer()).unwrap();
            let connection = Connection::connect(&transport, &connect, &ClientHello::Connect { token }).await.unwrap();
            players.push(tokio::spawn(measure(connection, seat, window)));
        }
    }
    let mut counts = Vec::new();
    for player in players {
        counts.push(player.await.unwrap());
    }
    counts
}

/// Waits for play to start, then counts packets over `window` while it goes on.
async fn measure(mut connection: Connection, seat: u8, window: Duration) -> Packets {
    connection.set_input(if seat == 0 { INPUT_UP } else { INPUT_DOWN });
    loop {
        match connection.next_event().await.unwrap() {
            ClientEvent::Snapshot(_) => break,
            ClientEvent::Ended(_) | ClientEvent::Disconnected { .. } => panic!("the match ended before it began"),
            _ => {}
        }
    }
    let quic = connection.quic_connection().unwrap().clone();
    let before = quic.stats();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(event) = tokio::time::timeout_at(deadline, connection.next_event()).await {
        match event.unwrap() {
            ClientEvent::Ended(_) | ClientEvent::Disconnected { .. } => panic!("the match ended inside the window"),
            _ => {}
        }
    }
    let counts = Packets::between(&before, &quic.stats());
    connection.leave();
    counts
}

#[test]
fn acks_may_wait_for_the_next_datagram_and_mtu_probes_are_off() {
    let shard = ShardConfig::default();
    let datagram_interval = Duration::from_secs(1) / u32::from(shard.snapshot_rate_hz);
    // Inputs go at the snapshot rate too (the session's send interval).
    for max_ack_delay in [rally_server::quic::ACK_MAX_DELAY, rally_client::quic::ACK_MAX_DELAY] {
        assert!(max_ack_delay > datagram_interval, "{max_ack_delay:?} ≤ {datagram_interval:?}");
    }
    // Below quinn's packet threshold (3): a gap about to be declared lost is acked at once.
    assert_eq!(rally_server::quic::ACK_REORDERING_THRESHOLD, 2);
    assert_eq!(rally_client::quic::ACK_REORDERING_THRESHOLD, 2);
    for config in [
        format!("{:?}", rally_server::quic::transport_config(Duration::from_secs(10)).unwrap()),
        format!("{:?}", rally_client::quic::transport_config().unwrap()),
    ] {
        assert!(config.contains("mtu_discovery_config: None"), "{config}");
        assert!(config.contains("ack_frequency_config: Some("), "{config}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_a_wan_link_acks_ride_on_game_datagrams() {
    // 60 ms of RTT: quinn asks each peer for the full 50 ms of ACK delay.
    let conditions = LinkConditions { latency: Duration::from_millis(30), ..LinkConditions::perfect() };
    let counts = play(4, Duration::from_secs(4), conditions).await;
    assert_acks_ride(&counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loopback_inputs_sent_between_snapshots_carry_the_acks() {
    let counts = play(4, Duration::from_secs(4), LinkConditions::perfect()).await;
    assert_acks_ride(&counts);
}

/// At most 1.05 UDP packets per game datagram each way over 4 matches' clients
/// (8 of them, each at least 60 datagrams each way).
fn assert_acks_ride(counts: &[Packets]) {
    let mut total = Packets::default();
    for count in counts {
        total.add(*count);
    }
    assert!(total.datagrams_out >= 8 * 60 && total.datagrams_in >= 8 * 60, "{total:?}");
    let up = total.udp_out as f64 / total.datagrams_out as f64;
    let down = total.udp_in as f64 / total.datagrams_in as f64;
    assert!(up <= 1.05 && down <= 1.05, "up {up:.3}, down {down:.3}: {total:?}\nper client {counts:?}");
}
