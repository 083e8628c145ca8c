//! The core reports, the driver exports: a shard started before any metrics
//! recorder exists still puts every figure of its `ShardStats` on
//! `/metrics` once a recorder is installed, the per-seat input series
//! included.

#![expect(clippy::unwrap_used, reason = "test")]

mod common;

use std::time::Duration;

use rally_client::session::ClientEvent;
use rally_client::{ConnectConfig, Connection, Transport};
use rally_protocol::control::ClientHello;
use rally_server::{ServeConfig, start};
use rally_sim::autopilot::{Autopilot, AutopilotConfig};
use rally_sim::pong::PongWorld;
use tokio::sync::mpsc;

const SHARD: &str = "shard-metrics";

async fn play(mut connection: Connection) {
    let welcome = connection.welcome().clone();
    // One sharp player and one slow one, so the single point is scored soon.
    let config = if welcome.seat == 0 {
        AutopilotConfig { anticipate: true, aim_error: 200, ..AutopilotConfig::default() }
    } else {
        AutopilotConfig { aim_error: 2000, reaction_ticks: 20, ..AutopilotConfig::default() }
    };
    let mut autopilot = Autopilot::new(&welcome.schema, welcome.seat, config, 1).unwrap();
    while let Some(event) = connection.next_event().await {
        match event {
            ClientEvent::Snapshot(view) => connection.set_input(autopilot.decide(&view)),
            ClientEvent::Ended(_) => break,
            _ => {}
        }
    }
}

fn value_of(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse::<f64>().ok()))
        .unwrap_or_else(|| panic!("{series} is not on /metrics:\n{text}"))
}

#[tokio::test]
async fn a_shard_started_before_the_recorder_exports_every_core_figure() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::local(dir.path().to_owned(), vec![(1, common::issuer().verifying_key())]);
    config.shard.name = SHARD.into();
    let (results_tx, mut results) = mpsc::unbounded_channel();
    let shard = start::<PongWorld>(config, results_tx).await.unwrap();
    // Installed only now, after the shard loop and its transports started.
    let recorder = rally_server::ops::prometheus();

    let transport = Transport::Memory(shard.memory_transport());
    let now = rally_transport::unix_ms();
    let mut players = Vec::new();
    for seat in 0..2u8 {
        let claims = rally_protocol::token::TokenClaims {
            points_to_win: 1,
            ..common::claims(SHARD, 7, seat, 70 + u64::from(seat), now)
        };
        let hello = ClientHello::Connect { token: claims.sign(&common::issuer()).unwrap() };
        let connection = Connection::connect(&transport, &ConnectConfig::new(shard.local_addr), &hello).await.unwrap();
        players.push(tokio::spawn(play(connection)));
    }
    // A refused hello, so the refusal series has a reason to show.
    let reused = ClientHello::Connect { token: common::token(SHARD, 7, 0, 70, now) };
    let refused = Connection::connect(&transport, &ConnectConfig::new(shard.local_addr), &reused).await;
    assert!(refused.is_err(), "a second token for a taken seat is refused");
    for player in players {
        tokio::time::timeout(Duration::from_secs(60), player).await.unwrap().unwrap();
    }
    let result = tokio::time::timeout(Duration::from_secs(10), results.recv()).await.unwrap().unwrap();
    shard.drain();
    let report = shard.wait().await.unwrap();
    assert_eq!(result.scores.len(), 2);

    let text = recorder.render();
    let stats = &report.stats;
    assert!(stats.inputs_on_time > 0, "{stats:?}");
    let on_time = value_of(&text, "rally_shard_inputs_on_time_total{seat=\"0\"}")
        + value_of(&text, "rally_shard_inputs_on_time_total{seat=\"1\"}");
    assert_eq!(on_time, stats.inputs_on_time as f64, "the exported inputs are the core's");
    value_of(&text, "rally_shard_inputs_missing_total{seat=\"0\"}");
    value_of(&text, "rally_shard_inputs_late_total{seat=\"1\"}");
    assert_eq!(value_of(&text, "rally_shard_matches_created_total"), 1.0);
    assert!(text.contains("rally_shard_matches_ended_total{reason=\"score\"} 1"), "{text}");
    // Every refusal reason shows from the start, at 0; the one refused hello counts once.
    let refusals: Vec<(&str, f64)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("rally_shard_refused_total{reason=\""))
        .filter_map(|rest| rest.split_once("\"} "))
        .map(|(reason, value)| (reason, value.parse().unwrap()))
        .collect();
    assert!(refusals.iter().any(|(reason, count)| *reason == "draining" && *count == 0.0), "{text}");
    assert_eq!(refusals.iter().map(|(_, count)| count).sum::<f64>(), 1.0, "{text}");
    assert_eq!(value_of(&text, "rally_shard_matches_ended_total{reason=\"forfeit\"}"), 0.0);
    assert_eq!(value_of(&text, "rally_shard_snapshots_total"), stats.snapshots_sent as f64);
    assert_eq!(
        value_of(&text, "rally_shard_snapshot_payload_bytes_count"),
        stats.snapshot_payload_bytes.total() as f64
    );
    assert!(value_of(&text, "rally_shard_input_reflect_ticks_count") > 0.0);
    assert!(value_of(&text, "rally_shard_datagrams_in_total") > 0.0, "the transports' counters are exported too");
    assert!(value_of(&text, "rally_shard_tick_seconds_count") > 0.0);
}

/// Raw UDP handshake drops stay silent on the wire, but each is counted by its
/// reason on `/metrics`, so an operator can tell why a client never connects.
#[tokio::test]
async fn raw_udp_handshake_drops_are_counted_by_reason() {
    use rally_transport::udp::wire;
    use std::net::SocketAddr;

    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::local(dir.path().to_owned(), vec![(1, common::issuer().verifying_key())]);
    config.shard.name = SHARD.into();
    config.udp_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let (results_tx, _results) = mpsc::unbounded_channel();
    let shard = start::<PongWorld>(config, results_tx).await.unwrap();
    let recorder = rally_server::ops::prometheus();
    let udp_addr = shard.udp_addr.unwrap();
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(udp_addr).await.unwrap();
    let other = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other.connect(udp_addr).await.unwrap();

    let mut buf = [0u8; 64];
    let request = wire::request();
    // A cookie made for the other socket's address.
    other.send(&request).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), other.recv(&mut buf)).await.unwrap().unwrap();
    let (bucket, cookie) = wire::parse_challenge(&buf[..n]).unwrap();
    let hello = [2, 0, 0, 0, 1, 2];

    let mut short = wire::request();
    short.truncate(10);
    let mut dirty = wire::request();
    dirty[100] = 1;
    let mut unmagic = wire::request();
    unmagic[2] = 0;
    let junk: [(&str, Vec<u8>); 7] = [
        ("bad_size", short),
        ("bad_padding", dirty),
        ("bad_magic", unmagic),
        ("unknown_kind", vec![200, 1, 2]),
        ("wrong_address", wire::connect(bucket, &cookie, &hello)),
        ("stale_cookie", wire::connect(bucket + 7, &cookie, &hello)),
        ("not_connected", wire::keepalive()),
    ];
    for (_, packet) in &junk {
        client.send(packet).await.unwrap();
    }
    // Two requests answered in turn: the driver handles one socket's packets in
    // order, and the second answer comes after the first was reported.
    for _ in 0..2 {
        client.send(&request).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(10), client.recv(&mut buf)).await.unwrap().unwrap();
        assert!(wire::parse_challenge(&buf[..n]).is_some(), "only challenges come back");
    }
    let text = recorder.render();
    for (reason, _) in &junk {
        let series = format!("rally_udp_handshake_drops_total{{reason=\"{reason}\"}}");
        assert!(value_of(&text, &series) >= 1.0, "{series}");
    }
    shard.drain();
    shard.wait().await.unwrap();
}
