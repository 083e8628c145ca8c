//! The shard's driver: one loop that owns the [`Shard`] and runs the fixed
//! tick, fed by every transport through one channel.
//!
//! Each transport ([`crate::quic`], [`crate::udp`], [`crate::memory`]) runs
//! its own connection tasks: they reassemble frames, enforce
//! [`ConnectionLimits`], and forward an [`Inbound`] per hello, frame,
//! datagram and disconnect, so a flooding client is throttled in its own task
//! and never delays other matches' ticks. The loop answers each connection
//! through the [`ConnLink`] its hello brought, and knows nothing else of the
//! transport.
//!
//! The loop is receive → handle → tick → transmit → wait for the next tick.
//! After each tick it reads [`Shard::stats`] and exports the change
//! ([`crate::export`]): the core reports, the driver exports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use rally_protocol::control::DisconnectReason;
use rally_protocol::results::MatchResult;
use rally_protocol::token::TokenVerifier;
use rally_sim::game::Game;
use rally_transport::memory::{MemoryDial, MemoryTransport};
use rally_transport::unix_ms;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::export::{Exporter, InboundCounters};
use crate::limits::ConnectionLimits;
use crate::memory::MemoryDialer;
use crate::ops::Readiness;
use crate::quic::QuicListener;
use crate::shard::{ConnId, Shard, ShardConfig, ShardEvent, ShardStats, Transmit};
use crate::tls::{TlsIdentity, TlsSource};
use crate::udp::{DatagramBatch, UdpListener, UdpOutbox, UdpStats};

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

    fn update<G: Game>(&self, shard: &Shard<G>) {
        self.matches.store(u32::try_from(shard.n_matches()).unwrap_or(u32::MAX), Ordering::Relaxed);
        self.connections.store(u32::try_from(shard.n_connections()).unwrap_or(u32::MAX), Ordering::Relaxed);
        self.matches_ended.store(shard.stats().matches_ended, Ordering::Relaxed);
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
    quic: QuicListener,
    udp: Option<UdpListener>,
}

/// How long [`ShardHandle::wait`] gives each transport to flush its last
/// frames (match ends) and close its connections before it cuts them.
const FINAL_FLUSH: Duration = Duration::from_secs(3);

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

    /// Waits until the shard has drained, every result was handed to the
    /// sink, and every transport has closed its connections.
    pub async fn wait(self) -> anyhow::Result<ShardReport> {
        let report = self.task.await.context("shard loop panicked")??;
        let (quic, udp) = (self.quic, self.udp);
        let udp_closed = async {
            if let Some(udp) = udp {
                udp.closed(FINAL_FLUSH).await;
            }
        };
        tokio::join!(quic.close(FINAL_FLUSH), udp_closed);
        Ok(report)
    }
}

/// What a transport's connection task tells the loop.
pub(crate) enum Inbound {
    /// A new connection's first control frame, and how to answer it.
    Hello { conn: ConnId, payload: Vec<u8>, link: Box<dyn ConnLink> },
    /// A later control frame's payload.
    Message { conn: ConnId, payload: Vec<u8> },
    /// A game datagram that passed the connection's limits.
    Datagram { conn: ConnId, bytes: Bytes },
    /// Game datagrams of one raw UDP receive batch that passed their
    /// connections' limits, in arrival order; dropping it recycles its buffers.
    Datagrams(DatagramBatch),
    /// The connection is gone (sent once per connection that said hello).
    Disconnect { conn: ConnId },
}

/// What the loop sends on a connection's control stream.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Framed bytes.
    Frame(Vec<u8>),
    /// Flush, then close, for this reason (none for a normal end).
    Close(Option<DisconnectReason>),
}

/// How the loop reaches one connection, whichever transport carries it.
pub(crate) trait ConnLink: Send {
    /// Sends a game datagram; false if the transport refused it.
    fn send_datagram(&self, bytes: Vec<u8>) -> bool;
    /// Whether [`Self::send_datagram_slice`] copies the bytes (so the loop
    /// keeps its buffer for the next datagram) rather than taking a `Vec`.
    fn copies_datagrams(&self) -> bool {
        false
    }
    /// Sends a game datagram from borrowed bytes; false if the transport refused it.
    fn send_datagram_slice(&self, bytes: &[u8]) -> bool {
        self.send_datagram(bytes.to_vec())
    }
    /// Queues a control frame or the close.
    fn send_control(&self, outbound: Outbound);
    /// The transport's RTT estimate, where it keeps one.
    fn rtt(&self) -> Option<Duration> {
        None
    }
}

/// The one allocator of connection ids, shared by every transport of a shard.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnIds(Arc<AtomicU64>);

impl ConnIds {
    pub(crate) fn next(&self) -> ConnId {
        ConnId(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// Binds every transport and starts the shard loop. Results go to `results`.
pub async fn start<G: Game>(
    config: ServeConfig,
    results: mpsc::UnboundedSender<MatchResult>,
) -> anyhow::Result<ShardHandle> {
    config.shard.validate().map_err(anyhow::Error::msg).context("invalid shard settings")?;
    let identity = TlsIdentity::load(&config.tls)?;
    let verifier = TokenVerifier::new(config.shard.name.clone(), config.token_keys.clone());
    let shard = Shard::<G>::new(config.shard.clone(), verifier);
    let (inbound_tx, inbound_rx) = mpsc::channel(64 * 1024);
    let (drain_tx, drain_rx) = watch::channel(false);
    let ids = ConnIds::default();
    let counters = Arc::new(InboundCounters::default());
    let name = config.shard.name.clone();
    let shard_span = tracing::info_span!("shard", name = %name);

    let quic =
        QuicListener::bind(&config, &identity, inbound_tx.clone(), ids.clone(), counters.clone(), shard_span.clone())?;
    let local_addr = quic.local_addr()?;
    let udp_stats = Arc::new(UdpStats::default());
    let (udp, udp_addr, udp_outbox) = match config.udp_listen {
        Some(addr) => {
            let listener = UdpListener::bind(
                addr,
                inbound_tx.clone(),
                config.limits.clone(),
                ids.clone(),
                udp_stats.clone(),
                counters.clone(),
                shard_span.clone(),
            )?;
            let bound = listener.local_addr;
            let outbox = listener.outbox();
            (Some(listener), Some(bound), Some(outbox))
        }
        None => (None, None, None),
    };
    let memory =
        Arc::new(MemoryDialer::new(inbound_tx, config.limits.clone(), ids, counters.clone(), shard_span.clone()));
    let readiness = Readiness::default();
    let live = Arc::new(ShardLive::default());
    tracing::info!(parent: &shard_span, %local_addr, fingerprint = %identity.fingerprint(), "shard listening");
    let task = tokio::spawn(
        shard_loop(shard, config, inbound_rx, drain_rx, results, live.clone(), counters, udp_outbox)
            .instrument(shard_span),
    );
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
        quic,
        udp,
    })
}

/// How often the loop samples transport RTTs into the metrics.
const RTT_SAMPLE_EVERY: Duration = Duration::from_secs(1);

#[expect(clippy::too_many_arguments, reason = "the loop's inputs and outputs, each passed on once from `start`")]
async fn shard_loop<G: Game>(
    mut shard: Shard<G>,
    config: ServeConfig,
    mut inbound: mpsc::Receiver<Inbound>,
    mut drain: watch::Receiver<bool>,
    results: mpsc::UnboundedSender<MatchResult>,
    live: Arc<ShardLive>,
    counters: Arc<InboundCounters>,
    udp_outbox: Option<Arc<UdpOutbox>>,
) -> anyhow::Result<ShardReport> {
    let sink = Sink { config: &config, results: &results, outbox: udp_outbox.as_deref() };
    let dt = Duration::from_secs_f64(1.0 / f64::from(config.shard.tick_rate_hz));
    let start = Instant::now();
    let mut ticks_scheduled: u64 = 0;
    let mut conns: HashMap<ConnId, Box<dyn ConnLink>> = HashMap::new();
    let mut report = ShardReport::default();
    let mut drain_deadline: Option<Instant> = None;
    let mut last_rtt_sample = Instant::now();
    let mut exporter = Exporter::default();

    loop {
        let next_tick = start + dt * (ticks_scheduled + 1) as u32;
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(next_tick) => {
                let now = Instant::now();
                // Ticks are scheduled at absolute instants: tick N at start + N·dt,
                // so the loop never drifts however long each tick takes.
                let due = ((now - start).as_secs_f64() / dt.as_secs_f64()) as u64;
                let behind = due.saturating_sub(ticks_scheduled);
                if behind > 1 {
                    report.late_ticks += 1;
                    live.late_ticks.fetch_add(1, Ordering::Relaxed);
                }
                let to_run = behind.min(u64::from(config.max_catchup_ticks.max(1)));
                report.skipped_ticks += behind - to_run;
                ticks_scheduled = due;
                for _ in 0..to_run {
                    let started = std::time::Instant::now();
                    shard.tick(unix_ms());
                    flush(&mut shard, &mut conns, &sink, &mut report, &mut exporter);
                    let elapsed = started.elapsed();
                    exporter.tick(elapsed);
                    live.record_tick(elapsed);
                    report.ticks += 1;
                }
                live.update(&shard);
                let rtts = if last_rtt_sample.elapsed() >= RTT_SAMPLE_EVERY {
                    last_rtt_sample = Instant::now();
                    conns.values().filter_map(|link| link.rtt()).collect()
                } else {
                    Vec::new()
                };
                exporter.publish(&shard, &report, &counters, &rtts);
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
                flush(&mut shard, &mut conns, &sink, &mut report, &mut exporter);
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
                flush(&mut shard, &mut conns, &sink, &mut report, &mut exporter);
                break;
            }
        }
    }
    exporter.publish(&shard, &report, &counters, &[]);
    // Close every connection still open; their final frames were queued by flush.
    for link in conns.values() {
        link.send_control(Outbound::Close(Some(DisconnectReason::ShuttingDown)));
    }
    report.stats = shard.stats().clone();
    tracing::info!(?report, "shard stopped");
    Ok(report)
}

fn handle_inbound<G: Game>(shard: &mut Shard<G>, conns: &mut HashMap<ConnId, Box<dyn ConnLink>>, message: Inbound) {
    match message {
        Inbound::Hello { conn, payload, link } => {
            conns.insert(conn, link);
            shard.handle_hello(conn, &payload, unix_ms());
        }
        Inbound::Message { conn, payload } => shard.handle_message(conn, &payload),
        Inbound::Datagram { conn, bytes } => shard.handle_datagram(conn, &bytes),
        Inbound::Datagrams(batch) => {
            for (conn, bytes) in batch.iter() {
                shard.handle_datagram(conn, bytes);
            }
        }
        Inbound::Disconnect { conn } => {
            conns.remove(&conn);
            shard.handle_disconnect(conn);
        }
    }
}

/// Where [`flush`] puts what is not for one connection.
struct Sink<'a> {
    config: &'a ServeConfig,
    results: &'a mpsc::UnboundedSender<MatchResult>,
    /// The raw UDP links' shared send queue, woken once per flush.
    outbox: Option<&'a UdpOutbox>,
}

fn flush<G: Game>(
    shard: &mut Shard<G>,
    conns: &mut HashMap<ConnId, Box<dyn ConnLink>>,
    sink: &Sink<'_>,
    report: &mut ShardReport,
    exporter: &mut Exporter,
) {
    let Sink { config, results, outbox } = *sink;
    // Counted locally and added once per flush: a snapshot tick sends thousands.
    let (mut sent, mut sent_bytes, mut refused) = (0u64, 0u64, 0u64);
    while let Some(transmit) = shard.poll_transmit() {
        match transmit {
            Transmit::Datagram { conn, bytes } => {
                let Some(link) = conns.get(&conn) else {
                    shard.recycle_datagram(bytes);
                    continue;
                };
                let len = bytes.len() as u64;
                // A link that copies leaves the buffer to the shard's next snapshot.
                let accepted = if link.copies_datagrams() {
                    let accepted = link.send_datagram_slice(&bytes);
                    shard.recycle_datagram(bytes);
                    accepted
                } else {
                    link.send_datagram(bytes)
                };
                if accepted {
                    sent += 1;
                    sent_bytes += len;
                } else {
                    refused += 1;
                }
            }
            Transmit::Control { conn, bytes } => {
                if let Some(link) = conns.get(&conn) {
                    link.send_control(Outbound::Frame(bytes));
                }
            }
            Transmit::Close { conn, reason } => {
                if let Some(link) = conns.remove(&conn) {
                    link.send_control(Outbound::Close(reason));
                }
            }
        }
    }
    exporter.sent(sent, sent_bytes, refused);
    if let Some(outbox) = outbox {
        outbox.commit();
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
