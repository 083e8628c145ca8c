//! The raw UDP transport of the shard: a thin socket driver around the
//! sans-IO [`ServerEndpoint`] (`rally_transport::udp`: cookie handshake, peer
//! table, reliable control stream). One task owns the socket, feeds the
//! endpoint what arrives with the time, sends what it queues, gates each
//! peer's game datagrams with the same [`ConnectionLimits`] as QUIC, and feeds
//! the same shard loop, so one match can hold players of every transport.
//!
//! Game datagrams the loop sends go through a queue to a sender task, so the
//! tick makes no system call, as with quinn.
//!
//! # Threat model
//!
//! Raw UDP is unencrypted: anyone on the path reads connect tokens, resume
//! secrets and game traffic, and can forge packets for a peer it observes.
//! Use it on a LAN, for bot farms and load tests; it is off unless
//! `ServeConfig::udp_listen` (`rally shard --udp-addr`) is set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rally_protocol::codec::encode_frame;
use rally_protocol::control::{DisconnectReason, ServerMessage};
use rally_transport::udp::{DropReason, EndpointConfig, EndpointEvent, EndpointStats, ServerEndpoint, wire};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::driver::{ConnIds, ConnLink, Inbound, Outbound};
use crate::export::InboundCounters;
use crate::limits::{Admit, ConnectionLimits, DatagramGate};
use crate::shard::ConnId;

/// How often the endpoint's timers (resends, keepalives, closes, idle peers) are served.
const SERVICE_EVERY: Duration = Duration::from_millis(10);

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
        let socket = Arc::new(UdpSocket::from_std(socket).context("registering the raw UDP socket")?);
        let local_addr = socket.local_addr()?;
        tracing::warn!(addr = %local_addr, "serving raw UDP: unencrypted, for LAN, bot farms and load tests");
        let (control, control_rx) = mpsc::unbounded_channel();
        let (datagrams, datagrams_rx) = mpsc::unbounded_channel();
        tokio::spawn(send_datagrams(socket.clone(), datagrams_rx));
        let config = EndpointConfig { idle_timeout: limits.idle_timeout, ..EndpointConfig::default() };
        let driver = Driver {
            endpoint: ServerEndpoint::new(config, rand::random(), Instant::now().into_std()),
            socket,
            datagrams,
            control,
            inbound,
            limits,
            ids,
            peers: HashMap::new(),
            by_conn: HashMap::new(),
            metrics,
            stats,
            drops: DropReporter::default(),
        };
        let task = tokio::spawn(driver.run(control_rx).instrument(span));
        Ok(Self { local_addr, task })
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

/// Sends the shard loop's game datagrams. The loop only queues them, as it
/// does over QUIC, where quinn's endpoint driver sends: a system call per
/// datagram inside the tick made the raw UDP tick twice as long as the QUIC
/// one at the same load (BENCHMARKS.md, "Raw UDP vs QUIC"). A full socket
/// buffer is waited out rather than dropping what the shard sent.
async fn send_datagrams(socket: Arc<UdpSocket>, mut queue: mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>) {
    let mut batch = Vec::with_capacity(256);
    while queue.recv_many(&mut batch, 256).await > 0 {
        for (addr, packet) in batch.drain(..) {
            if socket.try_send_to(&packet, addr).is_err() {
                let _ = socket.send_to(&packet, addr).await;
            }
        }
    }
}

/// How the loop reaches one raw UDP connection.
struct UdpLink {
    conn: ConnId,
    remote: SocketAddr,
    datagrams: mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>,
    control: mpsc::UnboundedSender<(ConnId, Outbound)>,
}

impl ConnLink for UdpLink {
    fn send_datagram(&self, bytes: Vec<u8>) -> bool {
        self.datagrams.send((self.remote, wire::datagram(&bytes))).is_ok()
    }

    fn send_control(&self, outbound: Outbound) {
        let _ = self.control.send((self.conn, outbound));
    }
}

/// What the driver keeps per connection beside the endpoint's peer.
struct PeerState {
    conn: ConnId,
    gate: DatagramGate,
    /// The loop was told this connection is gone (once, as QUIC's tasks do).
    reported_gone: bool,
}

struct Driver {
    endpoint: ServerEndpoint,
    socket: Arc<UdpSocket>,
    datagrams: mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>,
    control: mpsc::UnboundedSender<(ConnId, Outbound)>,
    inbound: mpsc::Sender<Inbound>,
    limits: ConnectionLimits,
    ids: ConnIds,
    peers: HashMap<SocketAddr, PeerState>,
    by_conn: HashMap<ConnId, SocketAddr>,
    metrics: Arc<InboundCounters>,
    stats: Arc<UdpStats>,
    drops: DropReporter,
}

impl Driver {
    async fn run(mut self, mut control_rx: mpsc::UnboundedReceiver<(ConnId, Outbound)>) {
        let mut buf = vec![0u8; 2048];
        let mut service = tokio::time::interval(SERVICE_EVERY);
        service.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let inbound = self.inbound.clone();
        let mut stopping = false;
        loop {
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = received else { continue };
                    self.endpoint.handle(Instant::now().into_std(), from, &buf[..n]);
                }
                command = control_rx.recv() => {
                    let Some((conn, outbound)) = command else { break };
                    self.handle_outbound(conn, outbound);
                }
                _ = service.tick() => self.endpoint.handle_timeout(Instant::now().into_std()),
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
    }

    fn handle_outbound(&mut self, conn: ConnId, outbound: Outbound) {
        let Some(&remote) = self.by_conn.get(&conn) else { return };
        let now = Instant::now().into_std();
        match outbound {
            Outbound::Frame(frame) => self.endpoint.send_frame(now, remote, &frame),
            Outbound::Close(reason) => self.endpoint.close(now, remote, reason.map_or(0, u16::from)),
        }
    }

    /// Sends what the endpoint queued and acts on its events, until it has neither.
    async fn process(&mut self) {
        loop {
            while let Some(transmit) = self.endpoint.poll_transmit() {
                let _ = self.socket.try_send_to(&transmit.packet, transmit.remote);
            }
            let Some(event) = self.endpoint.poll_event() else { break };
            self.handle_event(event).await;
        }
        self.stats.store(self.endpoint.n_peers(), self.endpoint.stats());
        self.drops.report(Instant::now(), &self.endpoint);
    }

    async fn handle_event(&mut self, event: EndpointEvent) {
        match event {
            EndpointEvent::Connected { remote, hello } => {
                let conn = self.ids.next();
                tracing::debug!(id = conn.0, transport = "udp", %remote, "raw UDP connection");
                let gate = DatagramGate::new(&self.limits, Instant::now().into_std());
                self.peers.insert(remote, PeerState { conn, gate, reported_gone: false });
                self.by_conn.insert(conn, remote);
                let link = Box::new(UdpLink {
                    conn,
                    remote,
                    datagrams: self.datagrams.clone(),
                    control: self.control.clone(),
                });
                let _ = self.inbound.send(Inbound::Hello { conn, payload: hello, link }).await;
            }
            EndpointEvent::Frame { remote, payload } => {
                let Some(peer) = self.peers.get(&remote) else { return };
                let _ = self.inbound.send(Inbound::Message { conn: peer.conn, payload }).await;
            }
            EndpointEvent::Datagram { remote, payload } => {
                let Some(peer) = self.peers.get_mut(&remote) else { return };
                let verdict = peer.gate.admit(Instant::now().into_std(), payload.len());
                self.metrics.datagram(payload.len(), verdict);
                let conn = peer.conn;
                match verdict {
                    Admit::Pass => {
                        if self.inbound.try_send(Inbound::Datagram { conn, bytes: Bytes::from(payload) }).is_err() {
                            self.metrics.inbound_dropped();
                        }
                    }
                    Admit::Oversized | Admit::Throttled => {}
                    Admit::Disconnect => {
                        tracing::info!(id = conn.0, "disconnecting a raw UDP client that floods datagrams");
                        peer.reported_gone = true;
                        let mut frame = Vec::new();
                        let message = self.limits.flood_message();
                        encode_frame(
                            &ServerMessage::Disconnect { reason: DisconnectReason::RateLimited, message },
                            &mut frame,
                        );
                        let now = Instant::now().into_std();
                        self.endpoint.send_frame(now, remote, &frame);
                        self.endpoint.close(now, remote, DisconnectReason::RateLimited.into());
                        let _ = self.inbound.send(Inbound::Disconnect { conn }).await;
                    }
                }
            }
            EndpointEvent::Closed { remote, .. } => {
                let Some(peer) = self.peers.remove(&remote) else { return };
                self.by_conn.remove(&peer.conn);
                if !peer.reported_gone {
                    let _ = self.inbound.send(Inbound::Disconnect { conn: peer.conn }).await;
                }
            }
        }
    }
}
