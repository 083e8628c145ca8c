//! The raw UDP transport of the shard: a thin socket driver around the
//! sans-IO [`ServerEndpoint`] (`rally_transport::udp`: cookie handshake, peer
//! table, reliable control stream). One task owns the socket, feeds the
//! endpoint what arrives with the time, sends what it queues, gates each
//! peer's game datagrams with the same [`ConnectionLimits`] as QUIC, and feeds
//! the same shard loop, so one match can hold players of every transport.
//!
//! # The datagram path
//!
//! Game datagrams are the traffic (30 snapshots and 60 inputs a second per
//! player), so they take a path with no allocation and no system call of
//! their own:
//!
//! - **In**: the driver receives up to [`RECV_SLOTS`] packets per `recvmmsg`
//!   into buffers allocated once ([`batch::RecvBatch`]). A game datagram from a
//!   connected peer is taken by [`ServerEndpoint::accept_datagram`] (no event,
//!   no copy), passes the peer's [`DatagramGate`], and is copied into one
//!   [`DatagramBatch`] for the whole receive batch: one message to the loop per
//!   `recvmmsg`, not per datagram. Batches come from a bounded pool and go back
//!   to it when the loop drops them; when all are out, datagrams are dropped
//!   and counted as `rally_shard_inbound_dropped_total`, as a full queue was.
//!   Everything else (handshake, control stream, keepalives, junk) goes
//!   through [`ServerEndpoint::handle`] in arrival order.
//! - **Out**: the loop's [`UdpLink`] copies each datagram, kind byte first,
//!   into the shared [`UdpOutbox`] (a [`batch::SendBatch`] arena); once per
//!   flush the loop wakes the sender task, which swaps that arena with its own
//!   empty one and sends it with `sendmmsg`, waiting on writability when the
//!   kernel's buffer is full (never dropping what the shard sent). Both arenas
//!   keep their allocations, so a steady load allocates nothing. The tick makes
//!   no system call, as with quinn.
//! - **Keepalives**: the link bumps a per-connection counter as it queues a
//!   datagram; the endpoint's keepalive timer asks the driver about it
//!   ([`ServerEndpoint::handle_timeout_with`]), so a peer that gets snapshots is
//!   sent no keepalives.
//!
//! # Threat model
//!
//! Raw UDP is unencrypted: anyone on the path reads connect tokens, resume
//! secrets and game traffic, and can forge packets for a peer it observes.
//! Use it on a LAN, for bot farms and load tests; it is off unless
//! `ServeConfig::udp_listen` (`rally shard --udp-addr`) is set.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use rally_protocol::codec::encode_frame;
use rally_protocol::control::{DisconnectReason, ServerMessage};
use rally_transport::udp::batch::{self, RecvBatch, SendBatch};
use rally_transport::udp::{DropReason, EndpointConfig, EndpointEvent, EndpointStats, ServerEndpoint, wire};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::Instrument;

use crate::driver::{ConnIds, ConnLink, Inbound, Outbound};
use crate::export::{InboundCounters, InboundTally};
use crate::limits::{Admit, ConnectionLimits, DatagramGate};
use crate::shard::ConnId;

/// How often the endpoint's timers (resends, keepalives, closes, idle peers) are served.
const SERVICE_EVERY: Duration = Duration::from_millis(10);

/// Packets one `recvmmsg` receives at most.
pub(crate) const RECV_SLOTS: usize = 64;

/// Receive batches read per wake-up before control commands and timers get a turn.
const RECV_BATCHES_PER_WAKE: usize = 16;

/// [`DatagramBatch`]es out at once (in the loop's queue or being handled): as
/// many datagrams as [`RECV_SLOTS`] times this, the 64 Ki messages the loop's
/// queue held when each datagram was one message.
const MAX_BATCHES_OUT: usize = 1024;

/// Spare datagram buffers of the loop are capped at this size: a buffer grown
/// by a rare large datagram is not kept.
const MAX_KEPT_BYTES: usize = 64 * 1024;

/// At most one debug line per drop reason in this long, so a flood of junk cannot
/// flood the log too.
const DROP_LOG_EVERY: Duration = Duration::from_secs(1);

/// Exports the endpoint's silent handshake drops as
/// `rally_udp_handshake_drops_total{reason}` and logs them at debug level, at most
/// once per [`DROP_LOG_EVERY`] per reason, with the latest source address: the
/// wire says nothing to a client whose packets are dropped, so this is where an
/// operator learns why it never connects.
#[derive(Debug, Default)]
struct DropReporter {
    exported: [u64; DropReason::ALL.len()],
    logged: [u64; DropReason::ALL.len()],
    logged_at: [Option<Instant>; DropReason::ALL.len()],
}

impl DropReporter {
    fn report(&mut self, now: Instant, endpoint: &ServerEndpoint) {
        let drops = endpoint.stats().drops;
        for (idx, reason) in DropReason::ALL.into_iter().enumerate() {
            let count = drops[idx];
            if count == self.exported[idx] {
                continue;
            }
            metrics::counter!("rally_udp_handshake_drops_total", "reason" => reason.label())
                .increment(count - self.exported[idx]);
            self.exported[idx] = count;
            if self.logged_at[idx].is_none_or(|at| now >= at + DROP_LOG_EVERY) {
                tracing::debug!(
                    reason = reason.label(),
                    dropped = count - self.logged[idx],
                    latest_from = ?endpoint.last_drop_source(reason),
                    "raw UDP packets dropped without an answer"
                );
                self.logged[idx] = count;
                self.logged_at[idx] = Some(now);
            }
        }
    }
}

/// Counters of the raw UDP endpoint, for tests and capacity runs.
#[derive(Debug, Default)]
pub struct UdpStats {
    peers: AtomicU64,
    /// Signalled whenever the number of peers changes.
    peers_changed: tokio::sync::Notify,
    challenges_sent: AtomicU64,
    packets_dropped: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out_handshake: AtomicU64,
    recv_calls: AtomicU64,
    packets_received: AtomicU64,
    send_calls: AtomicU64,
    datagrams_sent: AtomicU64,
}

impl UdpStats {
    /// Connections held now (state allocated only after a valid cookie and hello).
    pub fn peers(&self) -> u64 {
        self.peers.load(Ordering::Relaxed)
    }

    /// Challenges answered.
    pub fn challenges_sent(&self) -> u64 {
        self.challenges_sent.load(Ordering::Relaxed)
    }

    /// Packets dropped without an answer, every reason together (by reason:
    /// `rally_udp_handshake_drops_total`).
    pub fn packets_dropped(&self) -> u64 {
        self.packets_dropped.load(Ordering::Relaxed)
    }

    /// Bytes received on the socket.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Bytes sent in answer to handshake packets from unproven addresses.
    pub fn bytes_out_handshake(&self) -> u64 {
        self.bytes_out_handshake.load(Ordering::Relaxed)
    }

    /// Receive system calls (`recvmmsg`, each up to 64 packets), with those
    /// that found nothing (the last of each wake-up).
    pub fn recv_calls(&self) -> u64 {
        self.recv_calls.load(Ordering::Relaxed)
    }

    /// Packets received on the socket, every kind.
    pub fn packets_received(&self) -> u64 {
        self.packets_received.load(Ordering::Relaxed)
    }

    /// Send system calls (`sendmmsg`) made for game datagrams, with those that
    /// found the socket's buffer full.
    pub fn send_calls(&self) -> u64 {
        self.send_calls.load(Ordering::Relaxed)
    }

    /// Game datagrams the kernel took.
    pub fn datagrams_sent(&self) -> u64 {
        self.datagrams_sent.load(Ordering::Relaxed)
    }

    /// Waits until at most `count` connections are held.
    pub async fn wait_for_peers_at_most(&self, count: u64) {
        loop {
            // Registered before looking, so a change in between is not missed.
            let changed = self.peers_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.peers() <= count {
                return;
            }
            changed.await;
        }
    }

    fn store(&self, peers: usize, stats: EndpointStats) {
        if self.peers.swap(peers as u64, Ordering::Relaxed) != peers as u64 {
            self.peers_changed.notify_waiters();
        }
        self.challenges_sent.store(stats.challenges_sent, Ordering::Relaxed);
        self.packets_dropped.store(stats.packets_dropped, Ordering::Relaxed);
        self.bytes_in.store(stats.bytes_in, Ordering::Relaxed);
        self.bytes_out_handshake.store(stats.bytes_out_handshake, Ordering::Relaxed);
    }
}

/// The shard's raw UDP socket and its driver task.
#[derive(Debug)]
pub(crate) struct UdpListener {
    pub(crate) local_addr: SocketAddr,
    outbox: Arc<UdpOutbox>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpListener {
    /// Binds `addr` and starts the driver for the loop behind `inbound`.
    pub(crate) fn bind(
        addr: SocketAddr,
        inbound: mpsc::Sender<Inbound>,
        limits: ConnectionLimits,
        ids: ConnIds,
        stats: Arc<UdpStats>,
        metrics: Arc<InboundCounters>,
        span: tracing::Span,
    ) -> anyhow::Result<Self> {
        let socket = crate::quic::bind_udp(addr).with_context(|| format!("binding the raw UDP socket on {addr}"))?;
        socket.set_nonblocking(true)?;
        // DF set: the kernel then skips numbering each datagram from its shared,
        // hashed IP id counter (`batch::set_dont_fragment`); rally's are far below any MTU.
        if let Err(err) = batch::set_dont_fragment(&socket) {
            tracing::debug!(%err, "could not set the don't-fragment bit on the raw UDP socket");
        }
        // A second descriptor of the same socket for the batched calls, which take
        // a std socket: it shares the open file, so the readiness tokio tracks
        // for the registered one is this one's too, and `try_io` clears it when
        // a batched call finds nothing to do.
        let batched = socket.try_clone().context("duplicating the raw UDP socket")?;
        let socket = Arc::new(UdpSocket::from_std(socket).context("registering the raw UDP socket")?);
        let local_addr = socket.local_addr()?;
        tracing::warn!(addr = %local_addr, "serving raw UDP: unencrypted, for LAN, bot farms and load tests");
        let (control, control_rx) = mpsc::unbounded_channel();
        let outbox = Arc::new(UdpOutbox::default());
        let sender_socket = batched.try_clone().context("duplicating the raw UDP socket")?;
        tokio::spawn(send_datagrams(socket.clone(), sender_socket, outbox.clone(), stats.clone()));
        let config = EndpointConfig { idle_timeout: limits.idle_timeout, ..EndpointConfig::default() };
        let driver = Driver {
            endpoint: ServerEndpoint::new(config, rand::random(), Instant::now().into_std()),
            socket,
            batched,
            outbox: outbox.clone(),
            control,
            inbound,
            limits,
            ids,
            peers: HashMap::new(),
            by_conn: HashMap::new(),
            pool: Arc::new(BatchPool::default()),
            pending: None,
            tally: InboundTally::default(),
            metrics,
            stats,
            drops: DropReporter::default(),
        };
        let task = tokio::spawn(driver.run(control_rx).instrument(span));
        Ok(Self { local_addr, outbox, task })
    }

    /// Where the loop's raw UDP links queue game datagrams; the loop
    /// [commits](UdpOutbox::commit) it once per flush.
    pub(crate) fn outbox(&self) -> Arc<UdpOutbox> {
        self.outbox.clone()
    }

    /// Waits, up to `grace`, for the driver to close its last connection
    /// after the shard loop stopped.
    pub(crate) async fn closed(self, grace: Duration) {
        let abort = self.task.abort_handle();
        if tokio::time::timeout(grace, self.task).await.is_err() {
            abort.abort();
        }
    }
}

/// Game datagrams the loop queued for the sender task: one arena for every
/// destination, swapped with the sender's own (empty) one at each send, so
/// neither is reallocated once both have grown to a flush's size.
#[derive(Debug, Default)]
pub(crate) struct UdpOutbox {
    front: Mutex<SendBatch>,
    /// Something was queued since the last [`Self::commit`].
    dirty: AtomicBool,
    ready: Notify,
    closed: AtomicBool,
}

impl UdpOutbox {
    /// Queues one game datagram (the kind byte and `payload`, copied) for `remote`.
    fn push(&self, remote: SocketAddr, payload: &[u8]) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        self.front.lock().unwrap_or_else(PoisonError::into_inner).push(remote, None, &[&[wire::DATAGRAM], payload]);
        self.dirty.store(true, Ordering::Relaxed);
        true
    }

    /// Wakes the sender for what was queued since the last call (nothing if nothing was).
    pub(crate) fn commit(&self) {
        if self.dirty.swap(false, Ordering::AcqRel) {
            self.ready.notify_one();
        }
    }

    /// Refuses datagrams from now on; the sender sends what is queued and ends.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.ready.notify_one();
    }
}

/// Sends the shard loop's game datagrams, a `sendmmsg` batch per flush. The
/// loop only queues them, as it does over QUIC, where quinn's endpoint driver
/// sends: a system call per datagram inside the tick made the raw UDP tick
/// twice as long as the QUIC one at the same load (BENCHMARKS.md, "Raw UDP vs
/// QUIC"). A full socket buffer is waited out rather than dropping what the
/// shard sent.
async fn send_datagrams(
    socket: Arc<UdpSocket>,
    batched: std::net::UdpSocket,
    outbox: Arc<UdpOutbox>,
    stats: Arc<UdpStats>,
) {
    let mut back = SendBatch::default();
    loop {
        outbox.ready.notified().await;
        std::mem::swap(&mut *outbox.front.lock().unwrap_or_else(PoisonError::into_inner), &mut back);
        while !back.is_empty() {
            match socket.try_io(Interest::WRITABLE, || batch::send_batch(&batched, &mut back)) {
                Ok(sent) => {
                    stats.send_calls.fetch_add(sent.calls as u64, Ordering::Relaxed);
                    stats.datagrams_sent.fetch_add(sent.datagrams as u64, Ordering::Relaxed);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    stats.send_calls.fetch_add(1, Ordering::Relaxed);
                    if socket.writable().await.is_err() {
                        // The socket is gone: links refuse datagrams from now on.
                        outbox.close();
                        return;
                    }
                }
                // `send_batch` skips a datagram the kernel refuses on its own
                // merits; any other error means the socket itself is unusable.
                Err(_) => back.clear(),
            }
        }
        if outbox.closed.load(Ordering::Relaxed)
            && outbox.front.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
        {
            return;
        }
    }
}

/// How the loop reaches one raw UDP connection.
struct UdpLink {
    conn: ConnId,
    remote: SocketAddr,
    outbox: Arc<UdpOutbox>,
    /// Datagrams queued to this peer; read by the driver's keepalive timer.
    traffic: Arc<AtomicU64>,
    control: mpsc::UnboundedSender<(ConnId, Outbound)>,
}

impl ConnLink for UdpLink {
    fn send_datagram(&self, bytes: Vec<u8>) -> bool {
        self.send_datagram_slice(&bytes)
    }

    fn copies_datagrams(&self) -> bool {
        true
    }

    fn send_datagram_slice(&self, bytes: &[u8]) -> bool {
        if !self.outbox.push(self.remote, bytes) {
            return false;
        }
        // Only the loop writes it: a plain increment, not a read-modify-write.
        self.traffic.store(self.traffic.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        true
    }

    fn send_control(&self, outbound: Outbound) {
        let _ = self.control.send((self.conn, outbound));
    }
}

/// Where one [`DatagramBatch`] entry lies: its connection and its bytes in the arena.
#[derive(Debug, Clone, Copy)]
struct BatchEntry {
    conn: ConnId,
    start: u32,
    len: u32,
}

/// The game datagrams of one receive batch that passed their gates, for the
/// loop, in one arena. Dropping it (the loop does, once handled) returns its
/// buffers to the driver's pool.
#[derive(Debug)]
pub(crate) struct DatagramBatch {
    bytes: Vec<u8>,
    entries: Vec<BatchEntry>,
    pool: Arc<BatchPool>,
}

impl DatagramBatch {
    fn push(&mut self, conn: ConnId, payload: &[u8]) {
        // A payload fits a receive slot (2 KiB), so offsets fit u32 for any batch.
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(payload);
        self.entries.push(BatchEntry { conn, start, len: payload.len() as u32 });
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every datagram, in arrival order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnId, &[u8])> {
        self.entries.iter().map(|entry| {
            let start = entry.start as usize;
            (entry.conn, &self.bytes[start..start + entry.len as usize])
        })
    }
}

impl Drop for DatagramBatch {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.bytes), std::mem::take(&mut self.entries));
    }
}

/// The driver's [`DatagramBatch`] buffers: at most [`MAX_BATCHES_OUT`] ever
/// made, reused as the loop drops them.
#[derive(Debug, Default)]
struct BatchPool {
    state: Mutex<PoolState>,
}

/// The buffers of one [`DatagramBatch`].
type BatchBuffers = (Vec<u8>, Vec<BatchEntry>);

#[derive(Debug, Default)]
struct PoolState {
    free: Vec<BatchBuffers>,
    /// Batches made so far (free or out).
    made: usize,
}

impl BatchPool {
    /// An empty batch, or `None` when every batch is out (the loop is behind).
    fn take(self: &Arc<Self>) -> Option<DatagramBatch> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (bytes, entries) = match state.free.pop() {
            Some(buffers) => buffers,
            None if state.made < MAX_BATCHES_OUT => {
                state.made += 1;
                (Vec::with_capacity(RECV_SLOTS * 64), Vec::with_capacity(RECV_SLOTS))
            }
            None => return None,
        };
        Some(DatagramBatch { bytes, entries, pool: self.clone() })
    }

    fn put(&self, mut bytes: Vec<u8>, mut entries: Vec<BatchEntry>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if bytes.capacity() > MAX_KEPT_BYTES {
            bytes = Vec::with_capacity(RECV_SLOTS * 64);
        }
        bytes.clear();
        entries.clear();
        state.free.push((bytes, entries));
    }
}

/// What the driver keeps per connection beside the endpoint's peer.
struct PeerState {
    conn: ConnId,
    gate: DatagramGate,
    /// The loop was told this connection is gone (once, as QUIC's tasks do).
    reported_gone: bool,
    /// The link's count of datagrams queued to this peer, and its value when
    /// the endpoint last asked.
    traffic: Arc<AtomicU64>,
    traffic_seen: u64,
}

impl PeerState {
    /// Whether the loop queued a datagram to this peer since the last call.
    fn sent_since_asked(&mut self) -> bool {
        let count = self.traffic.load(Ordering::Relaxed);
        let sent = count != self.traffic_seen;
        self.traffic_seen = count;
        sent
    }
}

struct Driver {
    endpoint: ServerEndpoint,
    socket: Arc<UdpSocket>,
    /// The same socket as `socket`, for the batched system calls.
    batched: std::net::UdpSocket,
    outbox: Arc<UdpOutbox>,
    control: mpsc::UnboundedSender<(ConnId, Outbound)>,
    inbound: mpsc::Sender<Inbound>,
    limits: ConnectionLimits,
    ids: ConnIds,
    peers: HashMap<SocketAddr, PeerState>,
    by_conn: HashMap<ConnId, SocketAddr>,
    pool: Arc<BatchPool>,
    /// Datagrams gathered for the loop and not yet sent to it.
    pending: Option<DatagramBatch>,
    /// Counts of the current receive batch, added to `metrics` once per batch.
    tally: InboundTally,
    metrics: Arc<InboundCounters>,
    stats: Arc<UdpStats>,
    drops: DropReporter,
}

impl Driver {
    async fn run(mut self, mut control_rx: mpsc::UnboundedReceiver<(ConnId, Outbound)>) {
        let mut recv = RecvBatch::new(RECV_SLOTS, batch::DEFAULT_SLOT);
        let mut service = tokio::time::interval(SERVICE_EVERY);
        service.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let inbound = self.inbound.clone();
        let mut stopping = false;
        loop {
            tokio::select! {
                readable = self.socket.readable() => {
                    if readable.is_ok() {
                        self.receive(&mut recv).await;
                    }
                }
                command = control_rx.recv() => {
                    let Some((conn, outbound)) = command else { break };
                    self.handle_outbound(conn, outbound);
                }
                _ = service.tick() => {
                    let peers = &mut self.peers;
                    self.endpoint.handle_timeout_with(Instant::now().into_std(), |remote| {
                        peers.get_mut(&remote).is_some_and(PeerState::sent_since_asked)
                    });
                }
                () = inbound.closed(), if !stopping => {
                    // The loop has stopped: everything it sent is queued. Send it,
                    // then close what is still open, and end once all have closed.
                    stopping = true;
                    while let Ok((conn, outbound)) = control_rx.try_recv() {
                        self.handle_outbound(conn, outbound);
                    }
                    let now = Instant::now().into_std();
                    for remote in self.peers.keys().copied().collect::<Vec<_>>() {
                        self.endpoint.close(now, remote, DisconnectReason::ShuttingDown.into());
                    }
                }
            }
            self.process().await;
            if stopping && self.endpoint.n_peers() == 0 {
                break;
            }
        }
        self.outbox.close();
    }

    /// Receives what is waiting, a batch per system call, up to
    /// [`RECV_BATCHES_PER_WAKE`] batches.
    async fn receive(&mut self, recv: &mut RecvBatch) {
        for _ in 0..RECV_BATCHES_PER_WAKE {
            let (socket, batched, stats) = (&self.socket, &self.batched, &self.stats);
            // WouldBlock (nothing left) clears the readiness; another error is
            // a datagram's, not the socket's, and the next wake-up tries again.
            let received = socket.try_io(Interest::READABLE, || {
                stats.recv_calls.fetch_add(1, Ordering::Relaxed);
                batch::recv_batch(batched, recv)
            });
            if received.is_err() {
                break;
            }
            self.stats.packets_received.fetch_add(recv.len() as u64, Ordering::Relaxed);
            self.handle_received(recv).await;
            if recv.len() < recv.capacity() {
                break;
            }
        }
    }

    /// Handles one receive batch in arrival order: game datagrams of connected
    /// peers through the fast path, the rest through the endpoint.
    async fn handle_received(&mut self, recv: &RecvBatch) {
        let now = Instant::now().into_std();
        for received in recv.iter() {
            // A packet cut short by its slot is handled as the bytes that fit, as
            // a single-datagram receive into a buffer of that size did.
            if let Some(payload) = self.endpoint.accept_datagram(now, received.from, received.bytes) {
                self.gate_datagram(now, received.from, payload).await;
            } else {
                self.endpoint.handle(now, received.from, received.bytes);
                self.process_events().await;
            }
        }
        self.flush_datagrams();
        self.tally.flush_into(&self.metrics);
    }

    /// A game datagram from `remote`: through its gate, then into the batch for the loop.
    async fn gate_datagram(&mut self, now: std::time::Instant, remote: SocketAddr, payload: &[u8]) {
        let Some(peer) = self.peers.get_mut(&remote) else { return };
        let verdict = peer.gate.admit(now, payload.len());
        self.tally.datagram(payload.len(), verdict);
        let conn = peer.conn;
        match verdict {
            Admit::Pass => {
                if self.pending.is_none() {
                    self.pending = self.pool.take();
                }
                match &mut self.pending {
                    Some(batch) => batch.push(conn, payload),
                    None => self.tally.inbound_dropped(1),
                }
            }
            Admit::Oversized | Admit::Throttled => {}
            Admit::Disconnect => {
                tracing::info!(id = conn.0, "disconnecting a raw UDP client that floods datagrams");
                peer.reported_gone = true;
                let mut frame = Vec::new();
                let message = self.limits.flood_message();
                encode_frame(&ServerMessage::Disconnect { reason: DisconnectReason::RateLimited, message }, &mut frame);
                self.endpoint.send_frame(now, remote, &frame);
                self.endpoint.close(now, remote, DisconnectReason::RateLimited.into());
                self.send_inbound(Inbound::Disconnect { conn }).await;
            }
        }
    }

    /// Hands the gathered datagrams to the loop, or drops and counts them if its queue is full.
    fn flush_datagrams(&mut self) {
        let Some(batch) = self.pending.take() else { return };
        if batch.len() == 0 {
            self.pending = Some(batch);
            return;
        }
        let count = batch.len() as u64;
        if self.inbound.try_send(Inbound::Datagrams(batch)).is_err() {
            self.tally.inbound_dropped(count);
        }
    }

    /// Sends a hello, frame or disconnect to the loop, after the datagrams
    /// received before it, so the loop sees a connection's events in order.
    async fn send_inbound(&mut self, message: Inbound) {
        self.flush_datagrams();
        let _ = self.inbound.send(message).await;
    }

    fn handle_outbound(&mut self, conn: ConnId, outbound: Outbound) {
        let Some(&remote) = self.by_conn.get(&conn) else { return };
        let now = Instant::now().into_std();
        match outbound {
            Outbound::Frame(frame) => self.endpoint.send_frame(now, remote, &frame),
            Outbound::Close(reason) => self.endpoint.close(now, remote, reason.map_or(0, u16::from)),
        }
    }

    /// Sends what the endpoint queued and acts on its events, until it has
    /// neither; then exports its counters.
    async fn process(&mut self) {
        self.process_events().await;
        self.flush_datagrams();
        self.tally.flush_into(&self.metrics);
        self.stats.store(self.endpoint.n_peers(), self.endpoint.stats());
        self.drops.report(Instant::now(), &self.endpoint);
    }

    /// Sends what the endpoint queued and acts on its events, until it has neither.
    async fn process_events(&mut self) {
        loop {
            while let Some(transmit) = self.endpoint.poll_transmit() {
                let _ = self.socket.try_send_to(&transmit.packet, transmit.remote);
            }
            let Some(event) = self.endpoint.poll_event() else { break };
            self.handle_event(event).await;
        }
    }

    async fn handle_event(&mut self, event: EndpointEvent) {
        match event {
            EndpointEvent::Connected { remote, hello } => {
                let conn = self.ids.next();
                tracing::debug!(id = conn.0, transport = "udp", %remote, "raw UDP connection");
                let gate = DatagramGate::new(&self.limits, Instant::now().into_std());
                let traffic = Arc::new(AtomicU64::new(0));
                self.peers.insert(
                    remote,
                    PeerState { conn, gate, reported_gone: false, traffic: traffic.clone(), traffic_seen: 0 },
                );
                self.by_conn.insert(conn, remote);
                let link = Box::new(UdpLink {
                    conn,
                    remote,
                    outbox: self.outbox.clone(),
                    traffic,
                    control: self.control.clone(),
                });
                self.send_inbound(Inbound::Hello { conn, payload: hello, link }).await;
            }
            EndpointEvent::Frame { remote, payload } => {
                let Some(peer) = self.peers.get(&remote) else { return };
                let conn = peer.conn;
                self.send_inbound(Inbound::Message { conn, payload }).await;
            }
            EndpointEvent::Datagram { remote, payload } => {
                // Game datagrams of open peers take `accept_datagram`; this
                // arm keeps one that reaches `handle` on the same policy.
                self.gate_datagram(Instant::now().into_std(), remote, &payload).await;
            }
            EndpointEvent::Closed { remote, .. } => {
                let Some(peer) = self.peers.remove(&remote) else { return };
                self.by_conn.remove(&peer.conn);
                if !peer.reported_gone {
                    self.send_inbound(Inbound::Disconnect { conn: peer.conn }).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_batches_are_bounded_and_come_back_when_dropped() {
        let pool = Arc::new(BatchPool::default());
        let mut out: Vec<DatagramBatch> = (0..MAX_BATCHES_OUT).map(|_| pool.take().expect("a batch")).collect();
        assert!(pool.take().is_none(), "more than {MAX_BATCHES_OUT} batches out at once");
        let mut batch = out.pop().expect("a batch");
        batch.push(ConnId(1), b"one");
        batch.push(ConnId(2), b"two");
        let got: Vec<(ConnId, &[u8])> = batch.iter().collect();
        assert_eq!(got, [(ConnId(1), &b"one"[..]), (ConnId(2), &b"two"[..])]);
        let capacity = batch.bytes.capacity();
        drop(batch);
        let again = pool.take().expect("the dropped batch came back");
        assert_eq!(again.len(), 0, "returned empty");
        assert_eq!(again.bytes.capacity(), capacity, "with its allocation");
        assert!(pool.take().is_none());
    }
}
