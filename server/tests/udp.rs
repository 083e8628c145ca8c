//! Raw-UDP-specific checks of the shard over a real socket: a handshake that
//! allocates nothing and amplifies nothing before the client proves its
//! address, and garbage from a connected peer. The handshake's refusals, the
//! reliable channel under loss, closes and idle timeouts are tested in virtual
//! time in `udp_endpoint.rs`; the behaviours every transport shares are in
//! `conformance.rs` and, in virtual time, `stepper.rs`.

#![expect(clippy::unwrap_used, reason = "tests unwrap what must be there")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use rally_client::ConnectConfig;
use rally_client::session::ClientEvent;
use rally_client::{Connection, Transport};
use rally_protocol::control::{ClientHello, MatchEnd};
use rally_protocol::results::MatchResult;
use rally_protocol::token::TokenClaims;
use rally_server::ServeConfig;
use rally_server::ShardHandle;
use rally_server::start;
use rally_sim::autopilot::{Autopilot, AutopilotConfig};
use rally_sim::pong::PongWorld;
use rally_transport::udp::wire;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const SHARD: &str = "shard-udp-test";

/// Fails the test rather than hanging CI when something never happens.
async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), future).await.expect("timed out after 120 s")
}

struct TestShard {
    handle: ShardHandle,
    results: mpsc::UnboundedReceiver<MatchResult>,
    _dir: tempfile::TempDir,
}

impl TestShard {
    fn udp_addr(&self) -> SocketAddr {
        self.handle.udp_addr.expect("raw UDP enabled")
    }
}

async fn start_shard() -> TestShard {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::local(dir.path().to_owned(), vec![(1, common::issuer().verifying_key())]);
    config.shard.name = SHARD.into();
    config.udp_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let (results_tx, results) = mpsc::unbounded_channel();
    let handle = start::<PongWorld>(config, results_tx).await.unwrap();
    TestShard { handle, results, _dir: dir }
}

fn claims(match_id: u64, seat: u8, points_to_win: u8) -> TokenClaims {
    TokenClaims {
        points_to_win,
        ..common::claims(SHARD, match_id, seat, match_id * 10 + u64::from(seat), rally_transport::unix_ms())
    }
}

fn connect_hello(match_id: u64, seat: u8) -> ClientHello {
    ClientHello::Connect { token: claims(match_id, seat, 1).sign(&common::issuer()).unwrap() }
}

fn player_config(seat: u8) -> AutopilotConfig {
    if seat == 0 {
        AutopilotConfig { anticipate: true, aim_error: 200, ..AutopilotConfig::default() }
    } else {
        AutopilotConfig { aim_error: 2000, reaction_ticks: 20, ..AutopilotConfig::default() }
    }
}

async fn play_udp(addr: SocketAddr, match_id: u64, seat: u8) -> anyhow::Result<MatchEnd> {
    let connection =
        Connection::connect(&Transport::Udp, &ConnectConfig::new(addr), &connect_hello(match_id, seat)).await?;
    play_on_udp(connection, seat).await
}

async fn play_on_udp(mut connection: Connection, seat: u8) -> anyhow::Result<MatchEnd> {
    let welcome = connection.welcome().clone();
    let mut autopilot = Autopilot::new(&welcome.schema, welcome.seat, player_config(seat), 1)?;
    while let Some(event) = connection.next_event().await {
        match event {
            ClientEvent::Snapshot(view) => connection.set_input(autopilot.decide(&view)),
            ClientEvent::Ended(end) => return Ok(end),
            ClientEvent::Disconnected { reason, message } => bail!("disconnected: {reason:?} {message}"),
            _ => {}
        }
    }
    bail!("the connection closed before the match ended")
}

/// Receives the next packet on `socket`.
async fn next_packet(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = within(socket.recv(&mut buf)).await.unwrap();
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn the_handshake_allocates_nothing_and_amplifies_nothing_before_the_address_is_proven() {
    let shard = start_shard().await;
    let addr = shard.udp_addr();
    let stats = shard.handle.udp_stats.clone();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(addr).await.unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other.connect(addr).await.unwrap();

    // Garbage, truncated and unpadded packets, and a flood of bad connects.
    let mut short_request = wire::request();
    short_request.truncate(wire::CHALLENGE_LEN);
    let mut sent_bytes = 0usize;
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 1500],
        short_request,
        vec![wire::CONNECT],
        wire::connect(0, &[0; wire::COOKIE_LEN], b"not a hello"),
        vec![wire::SEGMENT, 0, 0, 0, 0, 1, 2, 3],
        vec![wire::ACK; 13],
        vec![wire::DATAGRAM; 40],
        wire::disconnect(0),
    ];
    for i in 0..500u32 {
        junk.push(wire::connect(u64::from(i), &[i as u8; wire::COOKIE_LEN], &i.to_le_bytes().repeat(20)));
    }
    for packet in &junk {
        sent_bytes += packet.len();
        socket.send(packet).await.unwrap();
    }
    // A well-formed request gets the first answer: nothing above got any.
    let request = wire::request();
    socket.send(&request).await.unwrap();
    sent_bytes += request.len();
    let challenge = next_packet(&socket).await;
    let (bucket, cookie) = wire::parse_challenge(&challenge).expect("a challenge");
    assert!(challenge.len() < request.len(), "the challenge is smaller than the request");
    assert_eq!(stats.peers(), 0, "no state before a valid cookie");
    assert_eq!(stats.challenges_sent(), 1);
    assert!(stats.bytes_out_handshake() as usize <= sent_bytes / 10);

    // The cookie replayed from another address is refused and allocates nothing;
    // then a request from that address is the first thing it gets an answer to.
    let mut hello = Vec::new();
    rally_protocol::codec::encode_hello_frame(&connect_hello(3, 0), &mut hello);
    other.send(&wire::connect(bucket, &cookie, &hello)).await.unwrap();
    other.send(&wire::request()).await.unwrap();
    let answer = next_packet(&other).await;
    assert!(wire::parse_challenge(&answer).is_some(), "the replayed cookie got no answer: {answer:?}");
    assert_eq!(stats.peers(), 0, "a replayed cookie allocated a connection");

    // The same cookie from its own address with a valid hello is let in.
    socket.send(&wire::connect(bucket, &cookie, &hello)).await.unwrap();
    let reply = next_packet(&socket).await;
    assert!(matches!(reply.first(), Some(&wire::SEGMENT)), "the welcome comes on the reliable stream: {reply:?}");
    assert_eq!(stats.peers(), 1);
    assert!(stats.packets_dropped() >= junk.len() as u64 - 1);
}

#[tokio::test]
async fn garbage_from_a_connected_peer_never_takes_the_shard_down() {
    use rand::{Rng, SeedableRng};
    let shard = start_shard().await;
    let addr = shard.udp_addr();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(addr).await.unwrap();
    socket.send(&wire::request()).await.unwrap();
    let (bucket, cookie) = wire::parse_challenge(&next_packet(&socket).await).unwrap();
    let mut hello = Vec::new();
    rally_protocol::codec::encode_hello_frame(&connect_hello(5, 0), &mut hello);
    socket.send(&wire::connect(bucket, &cookie, &hello)).await.unwrap();
    assert_eq!(next_packet(&socket).await.first(), Some(&wire::SEGMENT));
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for _ in 0..2_000 {
        let len = rng.gen_range(0..1400);
        let mut packet: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        if let Some(kind) = packet.first_mut() {
            *kind = rng.gen_range(0..10);
        }
        socket.send(&packet).await.unwrap();
    }
    // The endpoint still answers: a fresh client plays a whole match.
    let mut shard = shard;
    let (a, b) = within(async { tokio::join!(play_udp(addr, 6, 0), play_udp(addr, 6, 1)) }).await;
    a.unwrap();
    b.unwrap();
    let result = within(shard.results.recv()).await.unwrap();
    assert_eq!(result.match_id, rally_protocol::MatchId(6));
}

#[tokio::test]
async fn a_client_that_gets_snapshots_is_sent_no_keepalives() {
    // Snapshots are traffic: the keepalive timer (500 ms) counts them, so a
    // seat that gets 30 a second hears nothing else but its control stream.
    let shard = start_shard().await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(shard.udp_addr()).await.unwrap();
    socket.send(&wire::request()).await.unwrap();
    let (bucket, cookie) = wire::parse_challenge(&next_packet(&socket).await).unwrap();
    let mut hello = Vec::new();
    rally_protocol::codec::encode_hello_frame(&connect_hello(7, 0), &mut hello);
    socket.send(&wire::connect(bucket, &cookie, &hello)).await.unwrap();
    // The control stream is acknowledged, so no resend stands in for a keepalive.
    let mut channel = rally_transport::udp::ReliableChannel::new();
    // 60 snapshots: 2 s at 30 Hz, four keepalive intervals.
    let (mut datagrams, mut keepalives) = (0, 0);
    while datagrams < 60 {
        let packet = next_packet(&socket).await;
        match packet.first() {
            Some(&wire::DATAGRAM) => datagrams += 1,
            Some(&wire::KEEPALIVE) => keepalives += 1,
            Some(&wire::SEGMENT) => {
                channel.handle(std::time::Instant::now(), &packet);
                while let Some(ack) = channel.poll_transmit(std::time::Instant::now()) {
                    socket.send(&ack).await.unwrap();
                }
            }
            _ => {}
        }
    }
    assert_eq!(keepalives, 0, "keepalives sent alongside {datagrams} snapshots");
    assert_eq!(shard.handle.udp_stats.peers(), 1);
}
