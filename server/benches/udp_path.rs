//! The shard's raw UDP datagram path under a steady load, with a counting
//! allocator: allocations, CPU time and system calls per game datagram (in
//! and out) on the shard's own thread, in steady state.
//!
//! The shard runs on a dedicated thread with its own current-thread tokio
//! runtime, so its loop, its raw UDP driver and its sender task all run
//! there, and only allocations made on that thread are counted. Clients
//! (`rally_client` over raw UDP, each seat played by the autopilot) run on
//! the other threads. After every client is playing and a warm-up, the
//! bench reads the counters twice, a measuring window apart, and prints the
//! difference per datagram.
//!
//! Run: `cargo bench -p rally-server --bench udp_path`. Environment:
//! `UDP_PATH_CLIENTS` (default 200: 100 two-player matches), `UDP_PATH_SECS`
//! (the measuring window, default 5). Figures depend on how busy the machine
//! is (CPU time) but not the allocation counts.

#![expect(clippy::unwrap_used, clippy::print_stdout, reason = "a benchmark: it fails loudly and prints its figures")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rally_client::session::ClientEvent;
use rally_client::{ConnectConfig, Connection, Transport};
use rally_protocol::control::ClientHello;
use rally_protocol::token::TokenClaims;
use rally_protocol::{MatchId, PROTOCOL_VERSION, PlayerId};
use rally_server::udp::UdpStats;
use rally_server::{ServeConfig, ShardLive, start};
use rally_sim::autopilot::{Autopilot, AutopilotConfig};
use rally_sim::pong::PongWorld;
use tokio::sync::{mpsc, oneshot};

#[expect(unsafe_code, reason = "a global allocator is an unsafe trait; this one forwards every call to System")]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Counts allocations (and reallocations) made on threads that opted in.
    struct Counting;

    pub(crate) static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
    pub(crate) static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        static COUNTED: Cell<bool> = const { Cell::new(false) };
    }

    /// Counts (or stops counting) the calling thread's allocations.
    pub(crate) fn count_this_thread(counted: bool) {
        COUNTED.with(|flag| flag.set(counted));
    }

    fn count(bytes: usize) {
        if COUNTED.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            ALLOCATED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    // SAFETY: every call is forwarded to the system allocator unchanged; the
    // counting touches only atomics and a const-initialised thread local.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count(layout.size());
            // SAFETY: the caller's contract, forwarded.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count(layout.size());
            // SAFETY: as above.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count(new_size);
            // SAFETY: as above.
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;
}

use counting::{ALLOCATED_BYTES, ALLOCATIONS, count_this_thread};

const SHARD: &str = "shard-udp-bench";

fn issuer() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn hello(match_id: u64, seat: u8) -> ClientHello {
    let now_ms = rally_transport::unix_ms();
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&match_id.to_le_bytes());
    nonce[8] = seat;
    let claims = TokenClaims {
        protocol_version: PROTOCOL_VERSION,
        key_id: 1,
        player_id: PlayerId(match_id * 2 + u64::from(seat)),
        match_id: MatchId(match_id),
        seat,
        n_seats: 2,
        // Long enough that no match ends while the bench measures.
        points_to_win: 99,
        time_limit_s: u16::MAX,
        issued_at_ms: now_ms,
        expires_at_ms: now_ms + 600_000,
        nonce,
        shard: SHARD.to_owned(),
    };
    ClientHello::Connect { token: claims.sign(&issuer()).unwrap() }
}

/// One reading of the shard thread's counters.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    allocations: u64,
    allocated_bytes: u64,
    cpu_ns: u64,
    ticks: u64,
    packets_in: u64,
    datagrams_out: u64,
    recv_calls: u64,
    send_calls: u64,
}

/// CPU time of the calling thread, in ns (`/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    text.split_whitespace().next().and_then(|ns| ns.parse().ok()).unwrap_or(0)
}

struct Shard {
    udp_addr: SocketAddr,
    probe: mpsc::UnboundedSender<oneshot::Sender<Reading>>,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Starts the shard on its own thread and current-thread runtime, counting its allocations.
fn start_shard(dir: std::path::PathBuf) -> Shard {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("shard".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let mut config = ServeConfig::local(dir, vec![(1, issuer().verifying_key())]);
                config.shard.name = SHARD.into();
                config.udp_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
                let (results_tx, _results) = mpsc::unbounded_channel();
                let handle = start::<PongWorld>(config, results_tx).await.unwrap();
                let (probe_tx, mut probe_rx) = mpsc::unbounded_channel::<oneshot::Sender<Reading>>();
                let (stop_tx, mut stop_rx) = oneshot::channel();
                ready_tx.send((handle.udp_addr.unwrap(), probe_tx, stop_tx)).unwrap();
                let (live, udp): (Arc<ShardLive>, Arc<UdpStats>) = (handle.live.clone(), handle.udp_stats.clone());
                count_this_thread(true);
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        Some(reply) = probe_rx.recv() => {
                            // The probe's own work is not the shard's: not counted.
                            count_this_thread(false);
                            let reading = Reading {
                                at: Instant::now(),
                                allocations: ALLOCATIONS.load(Ordering::Relaxed),
                                allocated_bytes: ALLOCATED_BYTES.load(Ordering::Relaxed),
                                cpu_ns: thread_cpu_ns(),
                                ticks: live.ticks(),
                                packets_in: udp.packets_received(),
                                datagrams_out: udp.datagrams_sent(),
                                recv_calls: udp.recv_calls(),
                                send_calls: udp.send_calls(),
                            };
                            let _ = reply.send(reading);
                            count_this_thread(true);
                        }
                    }
                }
                count_this_thread(false);
                drop(handle);
            });
        })
        .unwrap();
    let (udp_addr, probe, stop) = ready_rx.recv().unwrap();
    Shard { udp_addr, probe, stop, thread }
}

impl Shard {
    async fn read(&self) -> Reading {
        let (reply, reading) = oneshot::channel();
        self.probe.send(reply).unwrap();
        reading.await.unwrap()
    }
}

/// Plays one seat until `stop`; counts the snapshots it receives.
async fn play(addr: SocketAddr, match_id: u64, seat: u8, snapshots: Arc<AtomicU64>) {
    let mut connection =
        Connection::connect(&Transport::Udp, &ConnectConfig::new(addr), &hello(match_id, seat)).await.unwrap();
    let welcome = connection.welcome().clone();
    let config = AutopilotConfig { aim_error: 500, ..AutopilotConfig::default() };
    let mut autopilot = Autopilot::new(&welcome.schema, welcome.seat, config, match_id).unwrap();
    while let Some(event) = connection.next_event().await {
        match event {
            ClientEvent::Snapshot(view) => {
                snapshots.fetch_add(1, Ordering::Relaxed);
                connection.set_input(autopilot.decide(&view));
            }
            ClientEvent::Ended(_) | ClientEvent::Disconnected { .. } => break,
            _ => {}
        }
    }
}

fn per(count: u64, datagrams: u64) -> f64 {
    count as f64 / datagrams.max(1) as f64
}

fn main() {
    let clients: u64 = std::env::var("UDP_PATH_CLIENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(200);
    let secs: u64 = std::env::var("UDP_PATH_SECS").ok().and_then(|n| n.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let shard = start_shard(dir.path().to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let snapshots = Arc::new(AtomicU64::new(0));
        let ramp = Instant::now();
        let mut players = Vec::new();
        for idx in 0..clients {
            players.push(tokio::spawn(play(shard.udp_addr, idx / 2 + 1, (idx % 2) as u8, snapshots.clone())));
        }
        // Playing: every client has had snapshots for a while.
        while snapshots.load(Ordering::Relaxed) < clients * 30 {
            assert!(!players.iter().any(tokio::task::JoinHandle::is_finished), "a client stopped before playing");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("udp_path: {clients} raw UDP clients ({} matches) playing after {:?}", clients / 2, ramp.elapsed());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (before, delivered_before) = (shard.read().await, snapshots.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (after, delivered_after) = (shard.read().await, snapshots.load(Ordering::Relaxed));
        // Counted by the clients, so comparable with builds whose shard counts nothing.
        let delivered = delivered_after - delivered_before;
        let window = after.at - before.at;
        let (packets_in, datagrams_out) =
            (after.packets_in - before.packets_in, after.datagrams_out - before.datagrams_out);
        let datagrams = packets_in + datagrams_out;
        let allocations = after.allocations - before.allocations;
        let ticks = after.ticks - before.ticks;
        let recv_calls = after.recv_calls - before.recv_calls;
        let send_calls = after.send_calls - before.send_calls;
        let cpu_us = (after.cpu_ns - before.cpu_ns) as f64 / 1000.0;
        println!("udp_path: steady state over {window:.2?}, shard thread only:");
        println!(
            "  packets in {packets_in} ({:.0}/s), game datagrams out {datagrams_out} ({:.0}/s), ticks {ticks}",
            packets_in as f64 / window.as_secs_f64(),
            datagrams_out as f64 / window.as_secs_f64()
        );
        println!(
            "  allocations {allocations} ({} bytes): {:.4} per datagram (in+out), {:.2} per tick",
            after.allocated_bytes - before.allocated_bytes,
            per(allocations, datagrams),
            per(allocations, ticks)
        );
        println!(
            "  CPU {:.0} ms ({:.1}% of a core): {:.2} µs per datagram (in+out)",
            cpu_us / 1000.0,
            cpu_us / 1e4 / window.as_secs_f64(),
            cpu_us / datagrams.max(1) as f64
        );
        println!(
            "  per snapshot delivered to a client ({delivered}): {:.3} allocations, {:.2} µs CPU",
            per(allocations, delivered),
            cpu_us / delivered.max(1) as f64
        );
        println!(
            "  system calls: {recv_calls} recvmmsg ({:.1} packets each), {send_calls} sendmmsg ({:.1} datagrams each); \
             {} calls instead of {datagrams} (one per datagram)",
            per(packets_in, recv_calls),
            per(datagrams_out, send_calls),
            recv_calls + send_calls
        );
        for player in &players {
            player.abort();
        }
    });
    let _ = shard.stop.send(());
    shard.thread.join().unwrap();
}
