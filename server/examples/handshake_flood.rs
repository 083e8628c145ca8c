//! What a flood of raw UDP handshake traffic costs a shard, and whether real
//! players still get in while it lasts.
//!
//! ```text
//! cargo run --release -p rally-server --example handshake_flood [-- --seconds 10 --sources 64 --players 20]
//! ```
//!
//! A shard with raw UDP on loopback is flooded from `--sources` sockets (distinct
//! source addresses, as a botnet or spoofed sources would be) by one generator
//! thread sending as fast as the machine lets it, round robin:
//! - padded requests (256 bytes), the only packet a stranger gets an answer to;
//! - connects with forged cookies;
//! - connects replaying one real cookie from every other address;
//! - garbage of random lengths.
//!
//! The real players connect first (`--players` clients with valid tokens, one
//! after the other) and keep playing to the end. Then, on the same shard and
//! with the same matches, three phases of `--seconds` each:
//! 1. real players only;
//! 2. the flood on top of them;
//! 3. the flood going on while `--players` more real players connect.
//!
//! The tick durations of phases 1 and 2 come from the shard's own exact
//! histogram (`ShardLive::take_tick_durations`, 1 µs resolution to 2
//! significant digits), so the flood's cost to the tick is a difference within
//! one run and one set of matches, not between runs on a machine whose load
//! changes.
//!
//! It prints the tick p50/p99/max and late ticks of both phases, what the
//! shard received and sent during the flood, the amplification factor (bytes
//! answered per byte received from unproven addresses), the connection state
//! held (must stay at the real players), the process's resident memory before
//! and after the flood, and the real players' connect times without and with
//! the flood.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rally_client::ConnectConfig;
use rally_client::{Connection, Transport};
use rally_protocol::control::ClientHello;
use rally_server::ServeConfig;
use rally_server::start;
use rally_server::udp::UdpStats;
use rally_sim::pong::PongWorld;
use rally_transport::udp::wire;

/// How long the matches of the setup get to leave their countdown before phase 1.
const SETTLE: Duration = Duration::from_secs(2);

struct Args {
    seconds: u64,
    sources: usize,
    players: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { seconds: 10, sources: 64, players: 20 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => args.seconds = value.parse().context("--seconds")?,
            "--sources" => args.sources = value.parse().context("--sources")?,
            "--players" => args.players = value.parse().context("--players")?,
            other => bail!("unknown flag {other}: use --seconds, --sources, --players"),
        }
    }
    if args.sources < 2 {
        bail!("--sources must be at least 2 (one cookie is replayed from the others)");
    }
    Ok(args)
}

/// The process's resident set size in KiB (Linux), or 0 where unknown.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:").and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct Sent {
    packets: AtomicU64,
    bytes: AtomicU64,
    send_errors: AtomicU64,
}

/// Gets one real cookie for `socket` by the book.
fn real_cookie(socket: &StdUdpSocket) -> anyhow::Result<(u64, [u8; wire::COOKIE_LEN])> {
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = [0u8; 2048];
    for _ in 0..25 {
        socket.send(&wire::request())?;
        if let Ok(n) = socket.recv(&mut buf)
            && let Some(challenge) = wire::parse_challenge(&buf[..n])
        {
            return Ok(challenge);
        }
    }
    bail!("the shard never answered a request")
}

/// Floods from `sockets` until `stop`; packets are built once, so the loop allocates nothing.
fn flood(sockets: &[StdUdpSocket], stop: &AtomicBool, sent: &Sent) -> anyhow::Result<()> {
    let (bucket, cookie) = real_cookie(&sockets[0])?;
    let mut forged_hello = Vec::new();
    rally_protocol::codec::encode_hello_frame(&ClientHello::Connect { token: vec![0xAB; 120] }, &mut forged_hello);
    let mut packets = vec![
        wire::request(),
        wire::connect(bucket, &[0x5A; wire::COOKIE_LEN], &forged_hello),
        wire::connect(bucket, &cookie, &forged_hello),
    ];
    for len in [1usize, 7, 64, 300, 1200] {
        packets.push((0..len).map(|i| (i * 31 + len) as u8).collect());
    }
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        for (source_idx, socket) in sockets.iter().enumerate() {
            // The replayed cookie is only ever sent from addresses it was not made for.
            let packet_idx = (round + source_idx) % packets.len();
            if packet_idx == 2 && source_idx == 0 {
                continue;
            }
            let packet = &packets[packet_idx];
            match socket.send(packet) {
                Ok(n) => {
                    sent.packets.fetch_add(1, Ordering::Relaxed);
                    sent.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    sent.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        round += 1;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let mut config = ServeConfig::local(dir.path().to_owned(), vec![(1, common::issuer().verifying_key())]);
    config.shard.name = "flood".into();
    config.udp_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let (results_tx, _results) = tokio::sync::mpsc::unbounded_channel();
    let handle = start::<PongWorld>(config, results_tx).await?;
    let udp_addr = handle.udp_addr.context("raw UDP is on")?;
    let stats = handle.udp_stats.clone();

    let sockets = (0..args.sources)
        .map(|_| {
            let socket = StdUdpSocket::bind("127.0.0.1:0")?;
            socket.connect(udp_addr)?;
            Ok(socket)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let phase = Duration::from_secs(args.seconds);
    let mut held = Vec::new();

    // Setup: the real players connect one after the other and their matches
    // start; the countdown (one second) is over before anything is measured.
    let resident = connect_players(&args, 0, udp_addr, &stats, None, &mut held).await;
    tokio::time::sleep(SETTLE).await;

    // Phase 1: those players and their matches, nothing else.
    let _ = handle.live.take_tick_durations();
    let late_before = handle.live.late_ticks();
    tokio::time::sleep(phase).await;
    let quiet_ticks = handle.live.take_tick_durations();
    let quiet_late = handle.live.late_ticks() - late_before;
    let quiet_matches = handle.live.matches();

    // Phase 2: the flood on top of the same players and matches.
    let rss_before = rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Sent::default());
    let bytes_in_before = stats.bytes_in();
    let started = Instant::now();
    let generator = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || flood(&sockets, &stop, &sent))
    };
    let late_before = handle.live.late_ticks();
    tokio::time::sleep(phase).await;
    let flood_ticks = handle.live.take_tick_durations();
    let flood_late = handle.live.late_ticks() - late_before;
    let flood_matches = handle.live.matches();

    // Phase 3: while the flood goes on, as many players again connect.
    let flooded = connect_players(&args, args.players, udp_addr, &stats, Some(phase), &mut held).await;
    stop.store(true, Ordering::Relaxed);
    generator.join().map_err(|_| anyhow::anyhow!("the generator panicked"))??;
    let elapsed = started.elapsed().as_secs_f64();
    // Let the shard read what is still queued in its socket.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let max_peers = flooded.max_peers.max(stats.peers());
    let rss_after = rss_kib();

    let packets = sent.packets.load(Ordering::Relaxed);
    let bytes = sent.bytes.load(Ordering::Relaxed);
    let received = stats.bytes_in() - bytes_in_before;
    let answered = stats.bytes_out_handshake();
    println!("ticks (exact histogram, µs resolution to 2 significant digits):");
    println!("  real players only   {}", tick_line(&quiet_ticks, quiet_late, quiet_matches));
    println!("  with the flood      {}", tick_line(&flood_ticks, flood_late, flood_matches));
    if let (Some(quiet_p99), Some(flood_p99)) = (quantile_ms(&quiet_ticks, 0.99), quantile_ms(&flood_ticks, 0.99)) {
        println!("  tick p99 with/without the flood: {:.2}", flood_p99 / quiet_p99.max(1e-9));
    }
    println!("flood: {:.1} s from {} sources", elapsed, args.sources);
    println!(
        "  sent                {packets} packets, {bytes} bytes ({:.0} packets/s, {:.1} MB/s)",
        packets as f64 / elapsed,
        bytes as f64 / elapsed / 1e6
    );
    println!("  send errors         {} (socket buffer full)", sent.send_errors.load(Ordering::Relaxed));
    println!(
        "  shard received      {received} bytes ({:.1}% of sent, real players' packets included)",
        100.0 * received as f64 / bytes.max(1) as f64
    );
    println!("  packets dropped     {}", stats.packets_dropped());
    println!("  challenges sent     {} ({answered} bytes)", stats.challenges_sent());
    println!("  amplification       {:.4} bytes out per byte in", answered as f64 / received.max(1) as f64);
    println!("  connections held    max {max_peers} (real players connected: {})", held.len());
    println!(
        "  resident memory     {rss_before} KiB before, {rss_after} KiB after ({:+} KiB)",
        rss_after as i64 - rss_before as i64
    );
    for (name, players) in [("real players alone  ", &resident), ("real players, flood ", &flooded)] {
        println!("  {name}{}", players.line(args.players));
        for error in &players.failed {
            println!("  failed: {error}");
        }
    }
    drop(held);
    handle.drain();
    Ok(())
}

/// How the real players of one phase fared.
#[derive(Default)]
struct Players {
    connect_ms: Vec<f64>,
    failed: Vec<String>,
    max_peers: u64,
}

impl Players {
    fn line(&self, asked: u64) -> String {
        let mut sorted = self.connect_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let pct = |q: f64| sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied();
        format!(
            "{}/{asked} connected; connect p50 {:.1} ms, max {:.1} ms",
            sorted.len(),
            pct(0.5).unwrap_or(f64::NAN),
            pct(1.0).unwrap_or(f64::NAN)
        )
    }
}

/// `args.players` real players (ids from `first + 1`) connect one after the
/// other, each trying for up to 5 s; connections go to `held`. Over `phase`
/// they are spread evenly and it returns when `phase` has passed; without one
/// they connect back to back.
async fn connect_players(
    args: &Args,
    first: u64,
    udp_addr: SocketAddr,
    stats: &UdpStats,
    phase: Option<Duration>,
    held: &mut Vec<Connection>,
) -> Players {
    let deadline = Instant::now() + phase.unwrap_or_default();
    let pause = phase.unwrap_or_default() / (args.players.max(1) as u32 + 1);
    let mut players = Players::default();
    for player_idx in first..first + args.players {
        tokio::time::sleep(pause).await;
        // Matches to 99 points outlast the run, so every real player is held to the end.
        let claims = rally_protocol::token::TokenClaims {
            points_to_win: 99,
            ..common::claims(
                "flood",
                1_000 + player_idx / 2,
                (player_idx % 2) as u8,
                player_idx + 1,
                rally_transport::unix_ms(),
            )
        };
        let hello = match claims.sign(&common::issuer()) {
            Ok(token) => ClientHello::Connect { token },
            Err(error) => {
                players.failed.push(format!("signing a token: {error}"));
                continue;
            }
        };
        let mut connect = ConnectConfig::new(udp_addr);
        connect.connect_timeout = Duration::from_secs(5);
        let attempt = Instant::now();
        match Connection::connect(&Transport::Udp, &connect, &hello).await {
            Ok(connection) => {
                players.connect_ms.push(attempt.elapsed().as_secs_f64() * 1e3);
                held.push(connection);
            }
            Err(error) => players.failed.push(format!("{error:#}")),
        }
        players.max_peers = players.max_peers.max(stats.peers());
    }
    tokio::time::sleep_until(deadline.into()).await;
    players
}

fn quantile_ms(ticks: &hdrhistogram::Histogram<u64>, quantile: f64) -> Option<f64> {
    (!ticks.is_empty()).then(|| ticks.value_at_quantile(quantile) as f64 / 1e3)
}

fn tick_line(ticks: &hdrhistogram::Histogram<u64>, late: u64, matches: u32) -> String {
    let ms = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |value| format!("{value:.3} ms"));
    format!(
        "{} ticks, p50 {}, p99 {}, max {}, {late} late; {matches} matches at the end",
        ticks.len(),
        ms(quantile_ms(ticks, 0.5)),
        ms(quantile_ms(ticks, 0.99)),
        ms((!ticks.is_empty()).then(|| ticks.max() as f64 / 1e3))
    )
}
