//! The IO driver: a quinn endpoint, one task per connection, and one shard loop
//! that owns the [`Shard`] and runs the fixed tick.
//!
//! Connection tasks decode nothing but frames: they enforce per-connection
//! limits (datagram rate via governor, datagram size, handshake and idle
//! timeouts) and forward bytes to the shard loop over one bounded channel, so a
//! flooding client is throttled in its own task and never delays other matches'
//! ticks. The shard loop sends datagrams directly through each connection's
//! handle and control frames through the connection task.
//!
//! When [`ServeConfig::udp_listen`] is set, [`crate::udp`] feeds raw UDP
//! connections into the same loop; `ConnHandle` says which transport a
//! connection uses, and nothing above it knows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use governor::{Quota, RateLimiter};
use rally_client::memory::{MemoryDial, MemoryTransport};
use rally_protocol::MAX_DATAGRAM;
use rally_protocol::codec::{FrameReader, encode_frame};
use rally_protocol::control::{DisconnectReason, ServerMessage};
use rally_protocol::results::MatchResult;
use rally_protocol::token::TokenVerifier;
use rally_sim::game::Game;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::memory::{MemoryDialer, MemoryLink};
use crate::ops::Readiness;
use crate::shard::{ConnId, Shard, ShardConfig, ShardEvent, ShardStats, Transmit};
use crate::tls::{TlsIdentity, TlsSource};
use crate::udp::{UdpLink, UdpStats};

/// QUIC application close code for a broken protocol. Close codes are the
/// [`DisconnectReason`] codes; 0 is a normal end.
const PROTOCOL_VIOLATION: u32 = DisconnectReason::ProtocolViolation as u32;

/// Per-connection limits enforced in the connection task.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Sustained input datagrams per second allowed.
    pub datagrams_per_second: u32,
    /// Datagrams allowed in a burst above the sustained rate.
    pub datagram_burst: u32,
    /// Datagrams refused by the rate limit before the client is disconnected.
    pub max_rate_violations: u32,
    /// A connection silent this long is closed (QUIC idle timeout).
    pub idle_timeout: Duration,
    /// Time allowed from the first packet to a complete hello.
    pub handshake_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            datagrams_per_second: 120,
            datagram_burst: 60,
            max_rate_violations: 240,
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything `rally shard` needs to serve.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// UDP address of the QUIC endpoint.
    pub listen: SocketAddr,
    /// The TLS identity.
    pub tls: TlsSource,
    /// The sans-IO shard's settings.
    pub shard: ShardConfig,
    /// Public keys of the token issuers, by key id.
    pub token_keys: Vec<(u8, VerifyingKey)>,
    /// Per-connection limits.
    pub limits: ConnectionLimits,
    /// Write each finished match's input log here as `<match id>.replay`.
    pub replay_dir: Option<PathBuf>,
    /// How long running matches may play on after a drain starts.
    pub drain_timeout: Duration,
    /// Most ticks run back to back to catch up after a stall; beyond it ticks are skipped.
    pub max_catchup_ticks: u32,
    /// Also serve raw UDP (unencrypted; LAN, bot farms, load tests) on this
    /// address; off when `None`. See [`crate::udp`].
    pub udp_listen: Option<SocketAddr>,
}

impl ServeConfig {
    /// A loopback development config with a self-signed certificate in `data_dir`.
    pub fn local(data_dir: PathBuf, token_keys: Vec<(u8, VerifyingKey)>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: TlsSource::SelfSigned { dir: data_dir, names: vec!["localhost".into(), "127.0.0.1".into()] },
            shard: ShardConfig::default(),
            token_keys,
            limits: ConnectionLimits::default(),
            replay_dir: None,
            drain_timeout: Duration::from_secs(30),
            max_catchup_ticks: 5,
            udp_listen: None,
        }
    }
}

/// Final counters of a shard run.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    /// The sans-IO shard's counters.
    pub stats: ShardStats,
    /// Ticks that started more than one tick interval late.
    pub late_ticks: u64,
    /// Ticks skipped because catch-up was bounded.
    pub skipped_ticks: u64,
    /// Ticks run.
    pub ticks: u64,
    /// Results handed to the sink.
    pub results_delivered: u64,
    /// Matches cut short by the drain deadline.
    pub aborted_matches: u64,
}

/// Live figures of a running shard, updated every tick, for an embedding
/// process (`rally up`'s status line, the registry heartbeat) that should not
/// scrape its own metrics endpoint.
#[derive(Debug)]
pub struct ShardLive {
    matches: AtomicU32,
    connections: AtomicU32,
    matches_ended: AtomicU64,
    ticks: AtomicU64,
    late_ticks: AtomicU64,
    tick_us: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
}

impl Default for ShardLive {
    fn default() -> Self {
        Self {
            matches: AtomicU32::new(0),
            connections: AtomicU32::new(0),
            matches_ended: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            late_ticks: AtomicU64::new(0),
            // 1 µs to 10 s at 2 significant digits: bounds are constants, so this cannot fail.
            tick_us: std::sync::Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 10_000_000, 2).expect("valid histogram bounds"),
            ),
        }
    }
}

impl ShardLive {
    /// Matches held (any phase).
    pub fn matches(&self) -> u32 {
        self.matches.load(Ordering::Relaxed)
    }

    /// Player connections.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Matches that ended since the start.
    pub fn matches_ended(&self) -> u64 {
        self.matches_ended.load(Ordering::Relaxed)
    }

    /// Ticks run since the start.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Ticks that started more than one tick interval late.
    pub fn late_ticks(&self) -> u64 {
        self.late_ticks.load(Ordering::Relaxed)
    }

    /// Tick durations (µs) recorded since the last call, and a fresh start.
    pub fn take_tick_durations(&self) -> hdrhistogram::Histogram<u64> {
        let mut histogram = self.tick_us.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let taken = histogram.clone();
        histogram.reset();
        taken
    }

    fn record_tick(&self, elapsed: Duration) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).clamp(1, 10_000_000);
        self.tick_us.lock().unwrap_or_else(std::sync::PoisonError::into_inner).saturating_record(micros);
    }
}

/// A running shard.
#[derive(Debug)]
pub struct ShardHandle {
    /// The bound QUIC address.
    pub local_addr: SocketAddr,
    /// SHA-256 of the shard's certificate, for clients to pin.
    pub fingerprint: String,
    /// The shard's name, as tokens must carry it.
    pub name: String,
    /// Readiness shared with the ops endpoint.
    pub readiness: Readiness,
    /// Live figures, updated every tick.
    pub live: Arc<ShardLive>,
    /// The bound raw UDP address, when raw UDP is served.
    pub udp_addr: Option<SocketAddr>,
    /// Counters of the raw UDP endpoint (zero when it is off).
    pub udp_stats: Arc<UdpStats>,
    memory: Arc<MemoryDialer>,
    drain: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<ShardReport>>,
    endpoint: quinn::Endpoint,
}

impl ShardHandle {
    /// Opens in-memory connections to this shard (no sockets), for clients in
    /// the same process: `rally_client::Transport::Memory` over it.
    pub fn memory_dialer(&self) -> Arc<dyn MemoryDial> {
        self.memory.clone()
    }

    /// A perfect in-memory transport to this shard.
    pub fn memory_transport(&self) -> MemoryTransport {
        MemoryTransport::new(self.memory_dialer())
    }

    /// Stops accepting new matches and lets running ones finish (up to the drain timeout).
    pub fn drain(&self) {
        self.readiness.set_draining();
        let _ = self.drain.send(true);
    }

    /// Waits until the shard has drained and every result was handed to the sink.
    pub async fn wait(self) -> anyhow::Result<ShardReport> {
        let report = self.task.await.context("shard loop panicked")??;
        // Connection tasks flush their last frames (match ends) and close on their
        // own; give them that time before closing whatever is left.
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
        let udp_deadline = Instant::now() + Duration::from_secs(3);
        while self.udp_stats.peers() > 0 && Instant::now() < udp_deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.endpoint.close(0u32.into(), b"shard stopped");
        self.endpoint.wait_idle().await;
        Ok(report)
    }
}

pub(crate) enum Inbound {
    Hello { conn: ConnId, payload: Vec<u8>, connection: quinn::Connection, control: mpsc::UnboundedSender<Outbound> },
    UdpHello { conn: ConnId, payload: Vec<u8>, link: UdpLink },
    MemoryHello { conn: ConnId, payload: Vec<u8>, link: MemoryLink },
    Message { conn: ConnId, payload: Vec<u8> },
    Datagram { conn: ConnId, bytes: Bytes },
    Disconnect { conn: ConnId },
}

pub(crate) enum Outbound {
    Frame(Vec<u8>),
    Close(Option<DisconnectReason>),
}

/// How the shard loop reaches one connection, whichever transport it uses.
enum ConnHandle {
    Quic { connection: quinn::Connection, control: mpsc::UnboundedSender<Outbound> },
    Udp(UdpLink),
    Memory(MemoryLink),
}

impl ConnHandle {
    fn send_datagram(&self, bytes: Vec<u8>) -> bool {
        match self {
            Self::Quic { connection, .. } => connection.send_datagram(Bytes::from(bytes)).is_ok(),
            Self::Udp(link) => link.send_datagram(&bytes),
            Self::Memory(link) => link.send_datagram(bytes),
        }
    }

    fn send_control(&self, conn: ConnId, outbound: Outbound) {
        match self {
            Self::Quic { control, .. } => {
                let _ = control.send(outbound);
            }
            Self::Udp(link) => {
                let _ = link.control.send((conn, outbound));
            }
            Self::Memory(link) => link.send_control(outbound),
        }
    }
}

/// Binds the endpoint and starts the shard loop. Results go to `results`.
pub async fn start<G: Game>(
    config: ServeConfig,
    results: mpsc::UnboundedSender<MatchResult>,
) -> anyhow::Result<ShardHandle> {
    config.shard.validate().map_err(anyhow::Error::msg).context("invalid shard settings")?;
    let identity = TlsIdentity::load(&config.tls)?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(config.limits.idle_timeout.try_into().context("idle timeout out of range")?))
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(Some(64 * 1024))
        .datagram_send_buffer_size(64 * 1024);
    let server_config = identity.server_config(transport)?;
    let socket = bind_udp(config.listen).with_context(|| format!("binding the QUIC endpoint on {}", config.listen))?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .context("starting the QUIC endpoint")?;
    let local_addr = endpoint.local_addr()?;
    let verifier = TokenVerifier::new(config.shard.name.clone(), config.token_keys.clone());
    let shard = Shard::<G>::new(config.shard.clone(), verifier);
    let (inbound_tx, inbound_rx) = mpsc::channel(64 * 1024);
    let (drain_tx, drain_rx) = watch::channel(false);
    let readiness = Readiness::default();
    let live = Arc::new(ShardLive::default());

    let udp_stats = Arc::new(UdpStats::default());
    let udp_addr = match config.udp_listen {
        Some(addr) => {
            let socket = bind_udp(addr).with_context(|| format!("binding the raw UDP socket on {addr}"))?;
            socket.set_nonblocking(true)?;
            let socket = tokio::net::UdpSocket::from_std(socket).context("registering the raw UDP socket")?;
            let bound = socket.local_addr()?;
            tracing::warn!(addr = %bound, "serving raw UDP: unencrypted, for LAN, bot farms and load tests");
            crate::udp::spawn(socket, inbound_tx.clone(), config.limits.clone(), udp_stats.clone());
            Some(bound)
        }
        None => None,
    };
    let memory = crate::memory::shared(inbound_tx.clone(), config.limits.clone());
    tokio::spawn(accept_loop(endpoint.clone(), inbound_tx, config.limits.clone()));
    let name = config.shard.name.clone();
    tracing::info!(%local_addr, shard = %name, fingerprint = %identity.fingerprint(), "shard listening");
    let task = tokio::spawn(shard_loop(shard, config, inbound_rx, drain_rx, results, live.clone()));
    Ok(ShardHandle {
        local_addr,
        fingerprint: identity.fingerprint(),
        name,
        readiness,
        live,
        udp_addr,
        udp_stats,
        memory,
        drain: drain_tx,
        task,
        endpoint,
    })
}

/// Kernel socket buffer asked for on the shard's UDP socket (Linux caps it at
/// `net.core.rmem_max`/`wmem_max`). The default ~208 KiB holds ~2,000 small
/// packets: a few milliseconds of traffic at a thousand matches, so any stall of
/// the shard's thread (a long tick, the scheduler) overflowed it and lost inputs.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(err) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::warn!(%err, "could not enlarge the UDP receive buffer");
    }
    if let Err(err) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::warn!(%err, "could not enlarge the UDP send buffer");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

async fn accept_loop(endpoint: quinn::Endpoint, inbound: mpsc::Sender<Inbound>, limits: ConnectionLimits) {
    let next_id = Arc::new(AtomicU64::new(1));
    while let Some(incoming) = endpoint.accept().await {
        let conn = ConnId(next_id.fetch_add(1, Ordering::Relaxed));
        tokio::spawn(run_connection(incoming, conn, inbound.clone(), limits.clone()));
    }
}

async fn run_connection(
    incoming: quinn::Incoming,
    conn: ConnId,
    inbound: mpsc::Sender<Inbound>,
    limits: ConnectionLimits,
) {
    let deadline = Instant::now() + limits.handshake_timeout;
    let connection = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(err)) => {
            tracing::debug!(?conn, %err, "QUIC handshake failed");
            return;
        }
        Err(_) => return,
    };
    let span = tracing::debug_span!("conn", id = conn.0, remote = %connection.remote_address());
    let _enter = span.enter();
    let Ok(Ok((mut send, mut recv))) = tokio::time::timeout_at(deadline, connection.accept_bi()).await else {
        connection.close(PROTOCOL_VIOLATION.into(), b"no control stream");
        return;
    };
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 4096];
    let hello = loop {
        match reader.poll_frame() {
            Ok(Some(frame)) => break frame,
            Ok(None) => {}
            Err(_) => {
                connection.close(PROTOCOL_VIOLATION.into(), b"oversized control frame");
                return;
            }
        }
        match tokio::time::timeout_at(deadline, recv.read(&mut buf)).await {
            Ok(Ok(Some(n))) => reader.push(&buf[..n]),
            _ => {
                connection.close(PROTOCOL_VIOLATION.into(), b"no hello");
                return;
            }
        }
    };
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let hello = Inbound::Hello { conn, payload: hello, connection: connection.clone(), control: control_tx };
    if inbound.send(hello).await.is_err() {
        return;
    }
    let quota = Quota::per_second(NonZeroU32::new(limits.datagrams_per_second.max(1)).expect("max(1) is non-zero"))
        .allow_burst(NonZeroU32::new(limits.datagram_burst.max(1)).expect("max(1) is non-zero"));
    let limiter = RateLimiter::direct(quota);
    let mut violations = 0u32;
    let mut stream_open = true;
    // Registered once: `counter!` looks the key up in the registry on every call.
    let datagrams_in = metrics::counter!("rally_shard_datagrams_in_total");
    let bytes_in = metrics::counter!("rally_shard_bytes_in_total");
    loop {
        tokio::select! {
            datagram = connection.read_datagram() => {
                let Ok(bytes) = datagram else { break };
                datagrams_in.increment(1);
                bytes_in.increment(bytes.len() as u64);
                if bytes.len() > MAX_DATAGRAM {
                    metrics::counter!("rally_shard_oversized_datagrams_total").increment(1);
                    continue;
                }
                if limiter.check().is_err() {
                    violations += 1;
                    metrics::counter!("rally_shard_rate_limited_datagrams_total").increment(1);
                    if violations > limits.max_rate_violations {
                        metrics::counter!("rally_shard_disconnects_total", "reason" => "rate_limited").increment(1);
                        tracing::info!("disconnecting a client that floods datagrams");
                        let mut frame = Vec::new();
                        let message = format!("over {} datagrams per second", limits.datagrams_per_second);
                        encode_frame(&ServerMessage::Disconnect { reason: DisconnectReason::RateLimited, message }, &mut frame);
                        let _ = send.write_all(&frame).await;
                        close_after_flush(&connection, &mut send, Some(DisconnectReason::RateLimited)).await;
                        break;
                    }
                    continue;
                }
                if inbound.try_send(Inbound::Datagram { conn, bytes }).is_err() {
                    metrics::counter!("rally_shard_inbound_dropped_total").increment(1);
                }
            }
            chunk = recv.read(&mut buf), if stream_open => {
                match chunk {
                    Ok(Some(n)) => {
                        reader.push(&buf[..n]);
                        loop {
                            match reader.poll_frame() {
                                Ok(Some(payload)) => {
                                    if inbound.send(Inbound::Message { conn, payload }).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => break,
                                Err(_) => {
                                    connection.close(PROTOCOL_VIOLATION.into(), b"oversized control frame");
                                    stream_open = false;
                                    break;
                                }
                            }
                        }
                    }
                    Ok(None) => stream_open = false,
                    Err(_) => break,
                }
            }
            outbound = control_rx.recv() => {
                match outbound {
                    Some(Outbound::Frame(frame)) => {
                        if send.write_all(&frame).await.is_err() {
                            break;
                        }
                    }
                    Some(Outbound::Close(reason)) => {
                        close_after_flush(&connection, &mut send, reason).await;
                        break;
                    }
                    None => break,
                }
            }
        }
    }
    let _ = inbound.send(Inbound::Disconnect { conn }).await;
}

/// How long the shard waits for a client to close after the control stream
/// ends, before it closes the connection itself.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Finishes the control stream and lets the client close the connection once
/// it has read to the end of it; only a client that does not within
/// [`CLOSE_GRACE`] is closed on with the reason's code. Closing first would
/// race the client's reads: QUIC discards stream data a peer has received
/// but not yet read when the connection closes, so a busy client would lose
/// the final `Ended` or `Disconnect` frame.
async fn close_after_flush(
    connection: &quinn::Connection,
    send: &mut quinn::SendStream,
    reason: Option<DisconnectReason>,
) {
    let _ = send.finish();
    if tokio::time::timeout(CLOSE_GRACE, connection.closed()).await.is_err() {
        let code = reason.map_or(0u32, |reason| u32::from(u16::from(reason)));
        connection.close(code.into(), b"closed by shard");
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

async fn shard_loop<G: Game>(
    mut shard: Shard<G>,
    config: ServeConfig,
    mut inbound: mpsc::Receiver<Inbound>,
    mut drain: watch::Receiver<bool>,
    results: mpsc::UnboundedSender<MatchResult>,
    live: Arc<ShardLive>,
) -> anyhow::Result<ShardReport> {
    let dt = Duration::from_secs_f64(1.0 / f64::from(config.shard.tick_rate_hz));
    let start = Instant::now();
    let mut ticks_scheduled: u64 = 0;
    let mut conns: HashMap<ConnId, ConnHandle> = HashMap::new();
    let mut report = ShardReport::default();
    let mut drain_deadline: Option<Instant> = None;
    let mut last_rtt_sample = Instant::now();

    loop {
        let next_tick = start + dt * (ticks_scheduled + 1) as u32;
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(next_tick) => {
                let now = Instant::now();
                // Ticks are scheduled at absolute instants: tick N at start + N·dt,
                // so the loop never drifts however long each tick takes.
                let due = ((now - start).as_secs_f64() / dt.as_secs_f64()) as u64;
                let behind = due.saturating_sub(ticks_scheduled);
                if behind > 1 {
                    report.late_ticks += 1;
                    live.late_ticks.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("rally_shard_late_ticks_total").increment(1);
                }
                let to_run = behind.min(u64::from(config.max_catchup_ticks.max(1)));
                if behind > to_run {
                    report.skipped_ticks += behind - to_run;
                    metrics::counter!("rally_shard_skipped_ticks_total").increment(behind - to_run);
                }
                ticks_scheduled = due;
                for _ in 0..to_run {
                    let started = std::time::Instant::now();
                    shard.tick(unix_ms());
                    flush(&mut shard, &mut conns, &config, &results, &mut report);
                    let elapsed = started.elapsed();
                    metrics::histogram!("rally_shard_tick_seconds").record(elapsed.as_secs_f64());
                    live.record_tick(elapsed);
                    report.ticks += 1;
                }
                metrics::gauge!("rally_shard_matches").set(shard.n_matches() as f64);
                live.matches.store(u32::try_from(shard.n_matches()).unwrap_or(u32::MAX), Ordering::Relaxed);
                live.connections.store(u32::try_from(shard.n_connections()).unwrap_or(u32::MAX), Ordering::Relaxed);
                live.matches_ended.store(shard.stats().matches_ended, Ordering::Relaxed);
                for (phase, count) in ["waiting", "countdown", "playing", "finished"].iter().zip(shard.matches_by_phase()) {
                    metrics::gauge!("rally_shard_matches_by_phase", "phase" => *phase).set(count as f64);
                }
                metrics::gauge!("rally_shard_connections").set(shard.n_connections() as f64);
                metrics::gauge!("rally_shard_tick").set(f64::from(shard.tick_number()));
                if last_rtt_sample.elapsed() >= Duration::from_secs(1) {
                    last_rtt_sample = Instant::now();
                    for handle in conns.values() {
                        if let ConnHandle::Quic { connection, .. } = handle {
                            metrics::histogram!("rally_shard_client_rtt_seconds").record(connection.rtt().as_secs_f64());
                        }
                    }
                }
            }
            message = inbound.recv() => {
                let Some(message) = message else { break };
                handle_inbound(&mut shard, &mut conns, message);
                // Take whatever else is already queued before flushing once.
                for _ in 0..1024 {
                    match inbound.try_recv() {
                        Ok(message) => handle_inbound(&mut shard, &mut conns, message),
                        Err(_) => break,
                    }
                }
                flush(&mut shard, &mut conns, &config, &results, &mut report);
            }
            changed = drain.changed(), if drain_deadline.is_none() => {
                if changed.is_ok() && *drain.borrow() {
                    tracing::info!(matches = shard.n_matches(), timeout = ?config.drain_timeout, "draining");
                    shard.begin_drain();
                    drain_deadline = Some(Instant::now() + config.drain_timeout);
                }
            }
        }
        if let Some(deadline) = drain_deadline {
            if shard.n_matches() == 0 {
                break;
            }
            if Instant::now() >= deadline {
                report.aborted_matches += shard.n_matches() as u64;
                tracing::warn!(matches = shard.n_matches(), "drain deadline passed; ending the remaining matches");
                shard.abort_all(unix_ms());
                flush(&mut shard, &mut conns, &config, &results, &mut report);
                break;
            }
        }
    }
    // Close every connection still open; their final frames were queued by flush.
    for (conn, handle) in &conns {
        handle.send_control(*conn, Outbound::Close(Some(DisconnectReason::ShuttingDown)));
    }
    report.stats = shard.stats().clone();
    tracing::info!(?report, "shard stopped");
    Ok(report)
}

fn handle_inbound<G: Game>(shard: &mut Shard<G>, conns: &mut HashMap<ConnId, ConnHandle>, message: Inbound) {
    match message {
        Inbound::Hello { conn, payload, connection, control } => {
            conns.insert(conn, ConnHandle::Quic { connection, control });
            shard.handle_hello(conn, &payload, unix_ms());
        }
        Inbound::UdpHello { conn, payload, link } => {
            conns.insert(conn, ConnHandle::Udp(link));
            shard.handle_hello(conn, &payload, unix_ms());
        }
        Inbound::MemoryHello { conn, payload, link } => {
            conns.insert(conn, ConnHandle::Memory(link));
            shard.handle_hello(conn, &payload, unix_ms());
        }
        Inbound::Message { conn, payload } => shard.handle_message(conn, &payload),
        Inbound::Datagram { conn, bytes } => shard.handle_datagram(conn, &bytes),
        Inbound::Disconnect { conn } => {
            conns.remove(&conn);
            shard.handle_disconnect(conn);
        }
    }
}

fn flush<G: Game>(
    shard: &mut Shard<G>,
    conns: &mut HashMap<ConnId, ConnHandle>,
    config: &ServeConfig,
    results: &mpsc::UnboundedSender<MatchResult>,
    report: &mut ShardReport,
) {
    // Counted locally and added once per flush: a snapshot tick sends thousands.
    let (mut sent, mut sent_bytes, mut refused) = (0u64, 0u64, 0u64);
    while let Some(transmit) = shard.poll_transmit() {
        match transmit {
            Transmit::Datagram { conn, bytes } => {
                let Some(handle) = conns.get(&conn) else { continue };
                let len = bytes.len() as u64;
                if handle.send_datagram(bytes) {
                    sent += 1;
                    sent_bytes += len;
                } else {
                    refused += 1;
                }
            }
            Transmit::Control { conn, bytes } => {
                if let Some(handle) = conns.get(&conn) {
                    handle.send_control(conn, Outbound::Frame(bytes));
                }
            }
            Transmit::Close { conn, reason } => {
                if let Some(handle) = conns.remove(&conn) {
                    handle.send_control(conn, Outbound::Close(reason));
                }
            }
        }
    }
    if sent > 0 {
        metrics::counter!("rally_shard_datagrams_out_total").increment(sent);
        metrics::counter!("rally_shard_bytes_out_total").increment(sent_bytes);
    }
    if refused > 0 {
        metrics::counter!("rally_shard_datagrams_dropped_total").increment(refused);
    }
    while let Some(event) = shard.poll_event() {
        match event {
            ShardEvent::MatchCreated(match_id) => tracing::debug!(%match_id, "match created"),
            ShardEvent::MatchEnded { result, log } => {
                tracing::info!(match_id = %result.match_id, scores = ?result.scores, reason = ?result.reason, "match ended");
                if let (Some(dir), Some(log)) = (&config.replay_dir, log) {
                    let path = dir.join(format!("{}.replay", result.match_id));
                    tokio::task::spawn_blocking(move || {
                        let written = log
                            .encode()
                            .map_err(anyhow::Error::from)
                            .and_then(|bytes| std::fs::write(&path, bytes).map_err(anyhow::Error::from));
                        if let Err(err) = written {
                            tracing::warn!(path = %path.display(), %err, "could not write the replay");
                        }
                    });
                }
                if results.send(*result).is_ok() {
                    report.results_delivered += 1;
                }
            }
        }
    }
}
