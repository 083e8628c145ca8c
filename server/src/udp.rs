//! The raw UDP driver: one task owns the shard's raw UDP socket, proves each
//! client's address with a stateless cookie, runs the reliable control stream
//! of every connection, and feeds the same shard loop as QUIC connections, so
//! one match can hold players of both transports.
//!
//! The wire format and the reliable channel are `rally_client::udp` (one
//! definition for both ends). laminar was not used: it has no resend timer,
//! so a loss among the last 32 packets of a reliable burst is never repaired
//! (the analysis is in `rally_client::udp`'s docs).
//!
//! # Handshake (netcode.io style)
//!
//! A request must be padded to [`wire::REQUEST_LEN`] bytes; the answer (a
//! challenge) is smaller, so a spoofed source cannot amplify traffic. The
//! cookie is SHA-256 over a per-process secret, the source address and a
//! 10-second time bucket, truncated to 16 bytes; the shard keeps nothing per
//! request. A connect packet must echo a cookie valid for its source address
//! (this bucket or the previous one) and carry a complete hello frame; only then
//! is a connection allocated (at most [`MAX_PEERS`]). A cookie replayed from
//! another address fails; replayed from the same address it can only re-offer a
//! connect token, which the shard's token checks refuse when used twice.
//!
//! # Threat model
//!
//! Raw UDP is unencrypted: anyone on the path reads connect tokens, resume
//! secrets and game traffic, and can forge packets for a peer it observes.
//! Use it on a LAN, for bot farms and load tests; it is off unless
//! `ServeConfig::udp_listen` (`rally shard --udp-addr`) is set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rally_client::udp::{ReliableChannel, wire};
use rally_protocol::MAX_DATAGRAM;
use rally_protocol::codec::{FrameReader, encode_frame};
use rally_protocol::control::{DisconnectReason, ServerMessage};
use sha2::{Digest, Sha256};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::quic::{ConnectionLimits, Inbound, Outbound};
use crate::shard::ConnId;

/// Raw UDP connections held at most; connect packets beyond are dropped.
pub const MAX_PEERS: usize = 65_536;
/// Seconds per cookie time bucket.
const BUCKET_SECS: u64 = 10;
/// Sent when nothing else went out for this long.
const KEEPALIVE_AFTER: Duration = Duration::from_millis(500);
/// How long a closing connection may take to flush its control stream.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);
/// Raw UDP connection ids carry this bit, so they never collide with QUIC's.
const UDP_CONN_BIT: u64 = 1 << 63;

/// Counters of the raw UDP endpoint, for tests and capacity runs.
#[derive(Debug, Default)]
pub struct UdpStats {
    peers: AtomicU64,
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

    /// Packets dropped: malformed, unpadded, from unknown sources, bad cookies.
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
}

/// The shard loop's way to reach one raw UDP connection.
#[derive(Debug, Clone)]
pub(crate) struct UdpLink {
    pub(crate) datagrams: mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>,
    pub(crate) addr: SocketAddr,
    pub(crate) control: mpsc::UnboundedSender<(ConnId, Outbound)>,
}

impl UdpLink {
    /// Queues a game datagram for the sender task; false once the endpoint is gone.
    pub(crate) fn send_datagram(&self, bytes: &[u8]) -> bool {
        self.datagrams.send((self.addr, wire::datagram(bytes))).is_ok()
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

struct Peer {
    conn: ConnId,
    channel: ReliableChannel,
    reader: FrameReader,
    limiter: DefaultDirectRateLimiter,
    violations: u32,
    last_heard: Instant,
    last_sent: Instant,
    /// Set once the shard or the limiter closed it: flush, then say goodbye.
    closing: Option<(Instant, Option<DisconnectReason>)>,
    /// The shard was told this connection is gone (sent once, as QUIC's tasks do).
    reported_gone: bool,
}

struct Endpoint {
    socket: Arc<UdpSocket>,
    /// The sender task's queue, handed to every link.
    datagrams: mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>,
    inbound: mpsc::Sender<Inbound>,
    control: mpsc::UnboundedSender<(ConnId, Outbound)>,
    limits: ConnectionLimits,
    secret: [u8; 32],
    peers: HashMap<SocketAddr, Peer>,
    by_conn: HashMap<ConnId, SocketAddr>,
    next_id: u64,
    stats: Arc<UdpStats>,
    /// The shard's datagram counters, shared with QUIC's connection tasks;
    /// registered once, as `counter!` looks the key up on every call.
    datagrams_in: metrics::Counter,
    datagram_bytes_in: metrics::Counter,
}

/// Starts the raw UDP endpoint on `socket`, feeding `inbound`.
pub(crate) fn spawn(
    socket: UdpSocket,
    inbound: mpsc::Sender<Inbound>,
    limits: ConnectionLimits,
    stats: Arc<UdpStats>,
) -> tokio::task::JoinHandle<()> {
    let (control, control_rx) = mpsc::unbounded_channel();
    let (datagrams, datagrams_rx) = mpsc::unbounded_channel();
    let socket = Arc::new(socket);
    tokio::spawn(send_datagrams(socket.clone(), datagrams_rx));
    let endpoint = Endpoint {
        socket,
        datagrams,
        inbound,
        control,
        limits,
        secret: rand::random(),
        peers: HashMap::new(),
        by_conn: HashMap::new(),
        next_id: 1,
        stats,
        datagrams_in: metrics::counter!("rally_shard_datagrams_in_total"),
        datagram_bytes_in: metrics::counter!("rally_shard_bytes_in_total"),
    };
    tokio::spawn(endpoint.run(control_rx))
}

fn bucket_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs()) / BUCKET_SECS
}

impl Endpoint {
    fn cookie(&self, addr: SocketAddr, bucket: u64) -> [u8; wire::COOKIE_LEN] {
        let mut hasher = Sha256::new();
        hasher.update(self.secret);
        let ip = match addr.ip() {
            std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped(),
            std::net::IpAddr::V6(ip) => ip,
        };
        hasher.update(ip.octets());
        hasher.update(addr.port().to_le_bytes());
        hasher.update(bucket.to_le_bytes());
        let digest = hasher.finalize();
        let mut cookie = [0u8; wire::COOKIE_LEN];
        cookie.copy_from_slice(&digest[..wire::COOKIE_LEN]);
        cookie
    }

    fn cookie_valid(&self, addr: SocketAddr, bucket: u64, cookie: &[u8; wire::COOKIE_LEN]) -> bool {
        let now = bucket_now();
        if bucket != now && bucket.checked_add(1) != Some(now) {
            return false;
        }
        let expected = self.cookie(addr, bucket);
        expected.iter().zip(cookie).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }

    async fn run(mut self, mut control_rx: mpsc::UnboundedReceiver<(ConnId, Outbound)>) {
        let mut buf = vec![0u8; 2048];
        let mut service = tokio::time::interval(Duration::from_millis(10));
        service.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = received else { continue };
                    self.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    self.handle_packet(&buf[..n], from).await;
                }
                command = control_rx.recv() => {
                    let Some((conn, outbound)) = command else { break };
                    self.handle_outbound(conn, outbound);
                }
                _ = service.tick() => self.service().await,
            }
        }
    }

    fn drop_packet(&self) {
        self.stats.packets_dropped.fetch_add(1, Ordering::Relaxed);
    }

    async fn handle_packet(&mut self, packet: &[u8], from: SocketAddr) {
        let now = Instant::now();
        match packet.first() {
            Some(&wire::REQUEST) => {
                if packet.len() != wire::REQUEST_LEN || packet[1..5] != wire::MAGIC {
                    return self.drop_packet();
                }
                let bucket = bucket_now();
                let challenge = wire::challenge(bucket, &self.cookie(from, bucket));
                if self.socket.try_send_to(&challenge, from).is_ok() {
                    self.stats.challenges_sent.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes_out_handshake.fetch_add(challenge.len() as u64, Ordering::Relaxed);
                }
            }
            Some(&wire::CONNECT) => {
                if self.peers.contains_key(&from) {
                    // A resent connect: the hello was taken already.
                    return;
                }
                let Some((bucket, cookie, hello)) = wire::parse_connect(packet) else { return self.drop_packet() };
                if self.peers.len() >= MAX_PEERS || !self.cookie_valid(from, bucket, &cookie) {
                    return self.drop_packet();
                }
                let mut reader = FrameReader::new();
                reader.push(hello);
                let Ok(Some(payload)) = reader.poll_frame() else { return self.drop_packet() };
                let conn = ConnId(UDP_CONN_BIT | self.next_id);
                self.next_id += 1;
                let limits = &self.limits;
                let quota =
                    Quota::per_second(NonZeroU32::new(limits.datagrams_per_second.max(1)).unwrap_or(NonZeroU32::MIN))
                        .allow_burst(NonZeroU32::new(limits.datagram_burst.max(1)).unwrap_or(NonZeroU32::MIN));
                self.peers.insert(
                    from,
                    Peer {
                        conn,
                        channel: ReliableChannel::new(),
                        reader,
                        limiter: RateLimiter::direct(quota),
                        violations: 0,
                        last_heard: now,
                        last_sent: now,
                        closing: None,
                        reported_gone: false,
                    },
                );
                self.by_conn.insert(conn, from);
                self.stats.peers.store(self.peers.len() as u64, Ordering::Relaxed);
                let link = UdpLink { datagrams: self.datagrams.clone(), addr: from, control: self.control.clone() };
                let _ = self.inbound.send(Inbound::UdpHello { conn, payload, link }).await;
            }
            Some(_) => {
                let Some(peer) = self.peers.get_mut(&from) else { return self.drop_packet() };
                peer.last_heard = now;
                if peer.closing.is_some() {
                    if matches!(packet[0], wire::SEGMENT | wire::ACK) {
                        peer.channel.handle(now, packet);
                    }
                    return;
                }
                let conn = peer.conn;
                match packet[0] {
                    wire::DATAGRAM => {
                        // Counted as QUIC counts its datagrams: every one, by its payload.
                        self.datagrams_in.increment(1);
                        self.datagram_bytes_in.increment(packet.len() as u64 - 1);
                        if packet.len() - 1 > MAX_DATAGRAM {
                            metrics::counter!("rally_shard_oversized_datagrams_total").increment(1);
                            return;
                        }
                        if peer.limiter.check().is_err() {
                            peer.violations += 1;
                            metrics::counter!("rally_shard_rate_limited_datagrams_total").increment(1);
                            if peer.violations > self.limits.max_rate_violations {
                                metrics::counter!("rally_shard_disconnects_total", "reason" => "rate_limited")
                                    .increment(1);
                                tracing::info!(?conn, "disconnecting a raw UDP client that floods datagrams");
                                let mut frame = Vec::new();
                                let message = format!("over {} datagrams per second", self.limits.datagrams_per_second);
                                encode_frame(
                                    &ServerMessage::Disconnect { reason: DisconnectReason::RateLimited, message },
                                    &mut frame,
                                );
                                peer.channel.send(&frame);
                                peer.closing = Some((now + CLOSE_FLUSH, Some(DisconnectReason::RateLimited)));
                                peer.reported_gone = true;
                                let _ = self.inbound.send(Inbound::Disconnect { conn }).await;
                            }
                            return;
                        }
                        let bytes = bytes::Bytes::copy_from_slice(&packet[1..]);
                        if self.inbound.try_send(Inbound::Datagram { conn, bytes }).is_err() {
                            metrics::counter!("rally_shard_inbound_dropped_total").increment(1);
                        }
                    }
                    wire::SEGMENT | wire::ACK => {
                        let bytes = peer.channel.handle(now, packet);
                        peer.reader.push(&bytes);
                        let mut frames = Vec::new();
                        let mut broken = false;
                        loop {
                            match peer.reader.poll_frame() {
                                Ok(Some(payload)) => frames.push(payload),
                                Ok(None) => break,
                                Err(_) => {
                                    broken = true;
                                    break;
                                }
                            }
                        }
                        self.flush_peer(from, now);
                        for payload in frames {
                            let _ = self.inbound.send(Inbound::Message { conn, payload }).await;
                        }
                        if broken {
                            self.remove(from, DisconnectReason::ProtocolViolation as u16).await;
                        }
                    }
                    wire::DISCONNECT => self.remove(from, 0).await,
                    wire::KEEPALIVE => {}
                    _ => self.drop_packet(),
                }
            }
            None => self.drop_packet(),
        }
    }

    fn handle_outbound(&mut self, conn: ConnId, outbound: Outbound) {
        let Some(&addr) = self.by_conn.get(&conn) else { return };
        let Some(peer) = self.peers.get_mut(&addr) else { return };
        match outbound {
            Outbound::Frame(frame) => peer.channel.send(&frame),
            Outbound::Close(reason) => {
                if peer.closing.is_none() {
                    peer.closing = Some((Instant::now() + CLOSE_FLUSH, reason));
                }
            }
        }
        self.flush_peer(addr, Instant::now());
    }

    fn flush_peer(&mut self, addr: SocketAddr, now: Instant) {
        let Some(peer) = self.peers.get_mut(&addr) else { return };
        while let Some(packet) = peer.channel.poll_transmit(now) {
            let _ = self.socket.try_send_to(&packet, addr);
            peer.last_sent = now;
        }
        if now >= peer.last_sent + KEEPALIVE_AFTER {
            let _ = self.socket.try_send_to(&[wire::KEEPALIVE], addr);
            peer.last_sent = now;
        }
    }

    /// Forgets a connection, tells the client (`reason` code, 0 for a normal
    /// end) and, unless it was told already, tells the shard.
    async fn remove(&mut self, addr: SocketAddr, reason: u16) {
        let Some(peer) = self.peers.remove(&addr) else { return };
        self.by_conn.remove(&peer.conn);
        self.stats.peers.store(self.peers.len() as u64, Ordering::Relaxed);
        let _ = self.socket.try_send_to(&wire::disconnect(reason), addr);
        if !peer.reported_gone {
            let _ = self.inbound.send(Inbound::Disconnect { conn: peer.conn }).await;
        }
    }

    async fn service(&mut self) {
        let now = Instant::now();
        let addrs: Vec<SocketAddr> = self.peers.keys().copied().collect();
        for addr in addrs {
            self.flush_peer(addr, now);
            let Some(peer) = self.peers.get(&addr) else { continue };
            if let Some((deadline, reason)) = peer.closing {
                if peer.channel.is_idle() || now >= deadline {
                    let code = reason.map_or(0, u16::from);
                    // Sent twice: a lost goodbye only costs the client its idle timeout.
                    let _ = self.socket.try_send_to(&wire::disconnect(code), addr);
                    self.remove(addr, code).await;
                }
            } else if now >= peer.last_heard + self.limits.idle_timeout {
                self.remove(addr, DisconnectReason::Idle as u16).await;
            }
        }
    }
}

/// The raw UDP connection ids start here; exposed for tests telling transports apart.
pub fn is_udp_conn(conn: ConnId) -> bool {
    conn.0 & UDP_CONN_BIT != 0
}
