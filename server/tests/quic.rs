//! The shard over real QUIC on loopback: whole matches, many at once,
//! reconnects, refusals and a flooding client.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use bytes::Bytes;
use rally_client::quic::{ConnectConfig, GameConnection, Refused, endpoint};
use rally_client::session::ClientEvent;
use rally_client::tls::{ServerTrust, client_config};
use rally_protocol::codec::{FrameReader, Hello, encode_hello_frame_with_version};
use rally_protocol::control::{ClientHello, DisconnectReason, EndReason, MatchEnd, RefuseReason, ServerHello};
use rally_protocol::datagram::InputDatagram;
use rally_protocol::results::MatchResult;
use rally_protocol::token::TokenClaims;
use rally_server::quic::{ServeConfig, ShardHandle, start};
use rally_sim::autopilot::{Autopilot, AutopilotConfig};
use rally_sim::pong::PongWorld;
use tokio::sync::mpsc;

const SHARD: &str = "shard-test";

/// Fails the test rather than hanging CI when something never happens.
async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), future).await.expect("timed out after 120 s")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

struct TestShard {
    handle: ShardHandle,
    results: mpsc::UnboundedReceiver<MatchResult>,
    client: quinn::Endpoint,
    _dir: tempfile::TempDir,
}

async fn start_shard(tweak: impl FnOnce(&mut ServeConfig)) -> TestShard {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::local(dir.path().to_owned(), vec![(1, common::issuer().verifying_key())]);
    config.shard.name = SHARD.into();
    tweak(&mut config);
    let (results_tx, results) = mpsc::unbounded_channel();
    let handle = start::<PongWorld>(config, results_tx).await.unwrap();
    let client = endpoint(client_config(&ServerTrust::Fingerprint(handle.fingerprint.clone())).unwrap()).unwrap();
    TestShard { handle, results, client, _dir: dir }
}

fn claims(match_id: u64, seat: u8, points_to_win: u8) -> TokenClaims {
    TokenClaims { points_to_win, ..common::claims(SHARD, match_id, seat, match_id * 10 + u64::from(seat), now_ms()) }
}

fn connect_hello(claims: &TokenClaims) -> ClientHello {
    ClientHello::Connect { token: claims.sign(&common::issuer()).unwrap() }
}

/// A scripted player: decent on seat 0, wild on seat 1 (slow to react, aiming
/// far off), so points come quickly and no rally can repeat forever.
fn player_config(seat: u8) -> AutopilotConfig {
    if seat == 0 {
        AutopilotConfig { anticipate: true, aim_error: 200, ..AutopilotConfig::default() }
    } else {
        AutopilotConfig { aim_error: 2000, reaction_ticks: 20, ..AutopilotConfig::default() }
    }
}

async fn play_on(mut connection: GameConnection, config: AutopilotConfig) -> anyhow::Result<MatchEnd> {
    let welcome = connection.welcome().clone();
    let mut autopilot = Autopilot::new(&welcome.schema, welcome.seat, config, 1)?;
    while let Some(event) = connection.next_event().await {
        match event {
            ClientEvent::Snapshot(view) => connection.set_input(autopilot.decide(&view)),
            ClientEvent::Ended(end) => return Ok(end),
            ClientEvent::Disconnected { reason, message } => bail!("disconnected: {reason:?} {message}"),
            _ => {}
        }
    }
    bail!("the connection closed before the match ended: {:?}", connection.connection().close_reason())
}

async fn play(shard: &TestShard, hello: ClientHello, config: AutopilotConfig) -> anyhow::Result<MatchEnd> {
    play_at(shard.client.clone(), shard.handle.local_addr, hello, config).await
}

async fn play_at(
    client: quinn::Endpoint,
    addr: std::net::SocketAddr,
    hello: ClientHello,
    config: AutopilotConfig,
) -> anyhow::Result<MatchEnd> {
    // A handshake that waits on a busy CI core is not what these tests check.
    let mut connect = ConnectConfig::new(addr);
    connect.connect_timeout = Duration::from_secs(30);
    let connection = GameConnection::connect(&client, &connect, &hello).await?;
    play_on(connection, config).await
}

#[tokio::test]
async fn two_clients_play_a_match_to_a_result() {
    let mut shard = start_shard(|_| {}).await;
    let (a, b) = within(async {
        tokio::join!(
            play(&shard, connect_hello(&claims(1, 0, 1)), player_config(0)),
            play(&shard, connect_hello(&claims(1, 1, 1)), player_config(1)),
        )
    })
    .await;
    let (a, b) = (a.unwrap(), b.unwrap());
    let result = within(shard.results.recv()).await.unwrap();
    assert_eq!(result.reason, EndReason::Score);
    assert_eq!(result.scores.iter().sum::<u32>(), 1);
    assert_eq!((a.scores.clone(), a.winner), (result.scores.clone(), result.winner));
    assert_eq!((b.scores, b.winner), (result.scores.clone(), result.winner));
    assert_eq!(result.seats[0].player_id, Some(rally_protocol::PlayerId(10)));
    assert_eq!(result.input_log_digest.len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_matches_at_once() {
    let mut shard = start_shard(|_| {}).await;
    let n_matches = 200u64;
    let mut players = tokio::task::JoinSet::new();
    // Players arrive over about two seconds, as they would from a matchmaker,
    // rather than 400 handshakes in one burst overflowing the socket buffer.
    let mut arrivals = tokio::time::interval(Duration::from_millis(5));
    for match_id in 1..=n_matches {
        for seat in 0..2u8 {
            arrivals.tick().await;
            let hello = connect_hello(&claims(match_id, seat, 1));
            players.spawn(play_at(shard.client.clone(), shard.handle.local_addr, hello, player_config(seat)));
        }
    }
    let ends = within(players.join_all()).await;
    assert_eq!(
        ends.iter().filter(|end| end.is_ok()).count() as u64,
        2 * n_matches,
        "{:?}",
        ends.iter().find(|end| end.is_err())
    );
    let mut ids = Vec::new();
    for _ in 0..n_matches {
        let result = within(shard.results.recv()).await.unwrap();
        assert_eq!(result.reason, EndReason::Score);
        ids.push(result.match_id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, n_matches, "one result per match");
}

#[tokio::test]
async fn a_dropped_client_resumes_its_seat() {
    let mut shard = start_shard(|_| {}).await;
    let config = ConnectConfig::new(shard.handle.local_addr);
    let mut first = GameConnection::connect(&shard.client, &config, &connect_hello(&claims(7, 0, 2))).await.unwrap();
    let opponent = tokio::spawn({
        let client = shard.client.clone();
        let config = config.clone();
        async move {
            let connection = GameConnection::connect(&client, &config, &connect_hello(&claims(7, 1, 2))).await?;
            play_on(connection, player_config(1)).await
        }
    });
    // Play until the ball is in, then lose the network.
    while let Some(event) = first.next_event().await {
        if matches!(event, ClientEvent::Snapshot(ref view) if view.values[0] == 2) {
            break;
        }
    }
    let credential = first.resume_credential();
    let seat = first.welcome().seat;
    first.abort();
    let resumed = GameConnection::connect(&shard.client, &config, &credential).await.unwrap();
    assert_eq!(resumed.welcome().seat, seat);
    let end = within(play_on(resumed, player_config(0))).await.unwrap();
    assert_eq!(end.reason, EndReason::Score, "the seat was not forfeited");
    opponent.await.unwrap().unwrap();
    let result = within(shard.results.recv()).await.unwrap();
    assert_eq!(result.reason, EndReason::Score);
}

async fn refusal_of(shard: &TestShard, hello: &ClientHello) -> RefuseReason {
    let config = ConnectConfig::new(shard.handle.local_addr);
    match GameConnection::connect(&shard.client, &config, hello).await {
        Ok(_) => panic!("expected a refusal"),
        Err(err) => err.downcast::<Refused>().expect("a refusal, not another error").0.reason,
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_their_reason() {
    let shard = start_shard(|_| {}).await;
    let now = now_ms();
    let good = claims(3, 0, 1);
    let cases = [
        (
            TokenClaims { expires_at_ms: now - 1, issued_at_ms: now - 60_000, ..good.clone() },
            RefuseReason::TokenExpired,
        ),
        (
            TokenClaims { issued_at_ms: now + 60_000, expires_at_ms: now + 120_000, ..good.clone() },
            RefuseReason::TokenNotYetValid,
        ),
        (TokenClaims { shard: "elsewhere".into(), ..good.clone() }, RefuseReason::WrongShard),
        (TokenClaims { protocol_version: 0, ..good.clone() }, RefuseReason::VersionMismatch),
        (TokenClaims { key_id: 9, ..good.clone() }, RefuseReason::UnknownKey),
    ];
    for (claims, reason) in cases {
        assert_eq!(refusal_of(&shard, &connect_hello(&claims)).await, reason, "{claims:?}");
    }
    let forged = ClientHello::Connect { token: good.sign(&ed25519_dalek::SigningKey::from_bytes(&[1; 32])).unwrap() };
    assert_eq!(refusal_of(&shard, &forged).await, RefuseReason::TokenForged);
    let garbage = ClientHello::Connect { token: vec![0; 10] };
    assert_eq!(refusal_of(&shard, &garbage).await, RefuseReason::TokenMalformed);
    // The first use is welcomed; the same token again is refused.
    let config = ConnectConfig::new(shard.handle.local_addr);
    let token = connect_hello(&good);
    let _seated = GameConnection::connect(&shard.client, &config, &token).await.unwrap();
    assert_eq!(refusal_of(&shard, &token).await, RefuseReason::TokenReused);
    let wrong_secret = ClientHello::Resume { match_id: good.match_id, seat: 0, secret: [0; 32] };
    assert_eq!(refusal_of(&shard, &wrong_secret).await, RefuseReason::ResumeRefused);
}

#[tokio::test]
async fn an_old_client_is_told_its_version_is_wrong() {
    let shard = start_shard(|_| {}).await;
    let connection = shard.client.connect(shard.handle.local_addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let mut hello = Vec::new();
    encode_hello_frame_with_version(0, &ClientHello::Connect { token: vec![] }, &mut hello);
    send.write_all(&hello).await.unwrap();
    let mut reader = FrameReader::new();
    let frame = loop {
        if let Some(frame) = reader.poll_frame().unwrap() {
            break frame;
        }
        let chunk = recv.read_chunk(4096, true).await.unwrap().expect("an answer before the stream ends");
        reader.push(&chunk.bytes);
    };
    let hello = Hello::parse(&frame).unwrap();
    assert_eq!(hello.version, rally_protocol::PROTOCOL_VERSION);
    match hello.decode::<ServerHello>().unwrap() {
        ServerHello::Refused(refusal) => {
            assert_eq!(refusal.reason, RefuseReason::VersionMismatch);
            assert!(refusal.message.contains("version 0"), "{}", refusal.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_disconnected_and_other_matches_play_on() {
    let mut shard = start_shard(|config| config.limits.max_rate_violations = 100).await;
    // A well-behaved match.
    let honest = within(async {
        tokio::join!(
            play(&shard, connect_hello(&claims(20, 0, 1)), player_config(0)),
            async {
                // The flooder holds seat 1 of another match and sends as fast as it can.
                let config = ConnectConfig::new(shard.handle.local_addr);
                let mut flooder =
                    GameConnection::connect(&shard.client, &config, &connect_hello(&claims(21, 0, 1))).await.unwrap();
                let connection = flooder.connection().clone();
                let mut datagram = Vec::new();
                InputDatagram { newest_tick: 1, ack: None, inputs: vec![1; 8] }.encode(&mut datagram);
                let datagram = Bytes::from(datagram);
                let mut sent = 0u64;
                while connection.send_datagram_wait(datagram.clone()).await.is_ok() {
                    sent += 1;
                    assert!(sent < 1_000_000, "the flooder was never disconnected");
                }
                let mut reason = None;
                while let Some(event) = flooder.next_event().await {
                    if let ClientEvent::Disconnected { reason: why, .. } = event {
                        reason = Some(why);
                    }
                }
                (reason, sent)
            },
            play(&shard, connect_hello(&claims(20, 1, 1)), player_config(1)),
        )
    })
    .await;
    let (end_a, (reason, sent), end_b) = honest;
    assert_eq!(reason, Some(DisconnectReason::RateLimited), "after {sent} datagrams");
    assert_eq!(end_a.unwrap().reason, EndReason::Score);
    assert_eq!(end_b.unwrap().reason, EndReason::Score);
    let result = within(shard.results.recv()).await.unwrap();
    assert_eq!(result.match_id, rally_protocol::MatchId(20));
}

#[tokio::test]
async fn a_drain_lets_running_matches_finish_and_refuses_new_ones() {
    let mut shard = start_shard(|config| config.drain_timeout = Duration::from_secs(60)).await;
    let config = ConnectConfig::new(shard.handle.local_addr);
    let a = GameConnection::connect(&shard.client, &config, &connect_hello(&claims(30, 0, 1))).await.unwrap();
    let b = GameConnection::connect(&shard.client, &config, &connect_hello(&claims(30, 1, 1))).await.unwrap();
    shard.handle.drain();
    assert!(!shard.handle.readiness.is_ready());
    assert_eq!(refusal_of(&shard, &connect_hello(&claims(31, 0, 1))).await, RefuseReason::Draining);
    let (end_a, end_b) =
        within(async { tokio::join!(play_on(a, player_config(0)), play_on(b, player_config(1))) }).await;
    assert_eq!(end_a.unwrap().reason, EndReason::Score);
    assert_eq!(end_b.unwrap().reason, EndReason::Score);
    let result = within(shard.results.recv()).await.unwrap();
    assert_eq!(result.match_id, rally_protocol::MatchId(30));
    let report = shard.handle.wait().await.unwrap();
    assert_eq!(report.results_delivered, 1);
    assert_eq!(report.aborted_matches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_finishes_through_a_lossy_jittery_network() {
    let shard = start_shard(|_| {}).await;
    let proxy = rally_client::proxy::UdpProxy::start(
        shard.handle.local_addr,
        rally_client::conditioner::LinkConditions::lossy(),
        9,
    )
    .await
    .unwrap();
    let config = ConnectConfig { connect_timeout: Duration::from_secs(20), ..ConnectConfig::new(proxy.local_addr()) };
    let connect = |seat| {
        let (client, config) = (shard.client.clone(), config.clone());
        async move {
            let connection = GameConnection::connect(&client, &config, &connect_hello(&claims(40, seat, 2))).await?;
            play_on(connection, player_config(seat)).await
        }
    };
    let (a, b) = within(async { tokio::join!(connect(0), connect(1)) }).await;
    assert_eq!(a.unwrap().reason, EndReason::Score);
    assert_eq!(b.unwrap().reason, EndReason::Score);
    let stats = proxy.stats().await;
    assert!(stats.upstream.dropped > 0 && stats.downstream.dropped > 0, "the network did lose packets: {stats:?}");
    shard.handle.drain();
    let report = within(shard.handle.wait()).await.unwrap();
    let inputs = report.stats.inputs_on_time + report.stats.inputs_missing;
    let on_time = report.stats.inputs_on_time as f64 / inputs as f64;
    eprintln!("through the proxy: {:.4} of {inputs} inputs on their tick; {stats:?}", on_time);
    assert!(on_time >= 0.995, "{on_time:.4} of inputs on their tick: {:?}", report.stats);
}
