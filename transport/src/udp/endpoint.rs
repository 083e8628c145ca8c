//! The shard's raw UDP endpoint as a sans-IO state machine, in the manner of
//! quinn-proto's `Endpoint`: the stateless cookie handshake, the table of
//! proven peers and each peer's [`ReliableChannel`]. A driver feeds it
//! received packets and the time, and sends what it queues; it opens no
//! socket and reads no clock, so the shard's stepper runs it in virtual time.
//!
//! # Call order
//!
//! 1. As packets arrive: [`ServerEndpoint::handle`]; as the shard answers:
//!    [`ServerEndpoint::send_frame`] and [`ServerEndpoint::close`].
//!    A driver may first offer each packet to [`ServerEndpoint::accept_datagram`]:
//!    a game datagram from a connected peer is then taken without an event or
//!    an allocation, and everything else goes to `handle` as before.
//! 2. Whenever [`ServerEndpoint::poll_timeout`] has passed (calling early is
//!    harmless): [`ServerEndpoint::handle_timeout`] (or
//!    [`ServerEndpoint::handle_timeout_with`], to count game datagrams the
//!    driver sent as traffic).
//! 3. After any call: [`ServerEndpoint::poll_transmit`] (send each) and
//!    [`ServerEndpoint::poll_event`] until `None`.
//!
//! Game datagrams to a peer need no state: a driver frames them with
//! [`wire::datagram`] and sends them itself, off the endpoint's path.
//!
//! # Timers
//!
//! Each peer has one entry in a timer queue at (or before) its next deadline:
//! keepalive, idle timeout, close deadline or control-stream resend.
//! `handle_timeout` visits only the peers whose entry is due, so a shard with
//! 10,000 quiet peers does not walk all of them every few milliseconds. An
//! entry that fell due only because the deadline moved later (the peer was
//! heard from, something was sent) is re-armed at the new deadline.
//!
//! # Handshake (netcode.io style)
//!
//! A request must be padded to [`wire::REQUEST_LEN`] bytes; the answer (a
//! challenge) is smaller, so a spoofed source cannot amplify traffic. The
//! cookie is SHA-256 over the endpoint's secret, the source address and a
//! 10-second time bucket, truncated to 16 bytes; the endpoint keeps nothing
//! per request. A connect packet must echo a cookie valid for its source
//! address (this bucket or the previous one) and carry a complete hello
//! frame; only then is a peer allocated (at most
//! [`EndpointConfig::max_peers`]). A cookie replayed from another address
//! fails; replayed from the same address it can only re-offer a connect
//! token, which the shard's token checks refuse when used twice.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rally_protocol::codec::FrameReader;
use rally_protocol::control::DisconnectReason;
use sha2::{Digest, Sha256};

use super::ReliableChannel;
use super::wire::{self, Cookie, Packet, WireError};

/// Seconds per cookie time bucket.
pub const BUCKET_SECS: u64 = 10;

/// Settings of a [`ServerEndpoint`].
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Peers held at most; connect packets beyond are dropped.
    pub max_peers: usize,
    /// A peer silent this long is dropped.
    pub idle_timeout: Duration,
    /// A keepalive goes out when nothing else was sent to a peer for this long.
    pub keepalive_after: Duration,
    /// How long a closing peer may take to flush its control stream.
    pub close_flush: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            max_peers: 65_536,
            idle_timeout: Duration::from_secs(10),
            keepalive_after: Duration::from_millis(500),
            close_flush: Duration::from_secs(2),
        }
    }
}

/// What the endpoint tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A client proved its address and said hello: a connection exists from now on.
    Connected {
        /// The client's address, which names the connection from now on.
        remote: SocketAddr,
        /// The hello frame's payload.
        hello: Vec<u8>,
    },
    /// A control frame's payload from a connected peer.
    Frame {
        /// From whom.
        remote: SocketAddr,
        /// The payload.
        payload: Vec<u8>,
    },
    /// A game datagram from a connected peer (not rate-limited here: the driver's policy).
    Datagram {
        /// From whom.
        remote: SocketAddr,
        /// The datagram, without the kind byte.
        payload: Vec<u8>,
    },
    /// The connection is gone: the client said goodbye, fell silent, broke
    /// its control stream, or a [`ServerEndpoint::close`] finished. Emitted
    /// once per connection.
    Closed {
        /// Whose.
        remote: SocketAddr,
        /// The code sent to the client (a `DisconnectReason` code, 0 for a normal end).
        reason: u16,
    },
}

/// A packet for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub remote: SocketAddr,
    /// The whole packet.
    pub packet: Vec<u8>,
}

/// Why the endpoint dropped a packet without answering it. Drops are silent on the
/// wire (an answer would let a spoofed source amplify traffic), so these counts, and
/// the driver's rate-limited log of them, are how an operator finds out why a client
/// never connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Empty, or the wrong length for its kind (a request not padded to 256 bytes).
    BadSize,
    /// A request without the `RLY1` magic.
    BadMagic,
    /// A request whose padding is not all zeros.
    BadPadding,
    /// A kind byte that names no packet.
    UnknownKind,
    /// A connect whose cookie's time bucket is neither the current nor the previous one.
    StaleCookie,
    /// A connect whose cookie was not made for its source address (another address
    /// or port, as after a NAT rebinding, or forged).
    WrongAddress,
    /// A connect with a valid cookie but no complete hello frame in it.
    NoHello,
    /// A connect refused because the endpoint holds `max_peers` connections.
    OverCapacity,
    /// A packet other than a request or connect from an address with no connection
    /// (a peer the endpoint already forgot, or a challenge sent to the shard).
    NotConnected,
    /// A request or challenge from an address that holds a connection.
    Unexpected,
}

impl DropReason {
    /// Every reason, in the order of [`EndpointStats::drops`].
    pub const ALL: [Self; 10] = [
        Self::BadSize,
        Self::BadMagic,
        Self::BadPadding,
        Self::UnknownKind,
        Self::StaleCookie,
        Self::WrongAddress,
        Self::NoHello,
        Self::OverCapacity,
        Self::NotConnected,
        Self::Unexpected,
    ];

    /// The metric label (`rally_udp_handshake_drops_total{reason=...}`).
    pub fn label(self) -> &'static str {
        match self {
            Self::BadSize => "bad_size",
            Self::BadMagic => "bad_magic",
            Self::BadPadding => "bad_padding",
            Self::UnknownKind => "unknown_kind",
            Self::StaleCookie => "stale_cookie",
            Self::WrongAddress => "wrong_address",
            Self::NoHello => "no_hello",
            Self::OverCapacity => "over_capacity",
            Self::NotConnected => "not_connected",
            Self::Unexpected => "unexpected",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|&reason| reason == self).unwrap_or(0)
    }

    fn of(error: WireError) -> Self {
        match error {
            WireError::UnknownKind(_) => Self::UnknownKind,
            WireError::BadMagic => Self::BadMagic,
            WireError::BadPadding => Self::BadPadding,
            _ => Self::BadSize,
        }
    }
}

/// Counters of the endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Challenges answered.
    pub challenges_sent: u64,
    /// Packets dropped, for every reason together.
    pub packets_dropped: u64,
    /// Packets dropped per reason, indexed as [`DropReason::ALL`].
    pub drops: [u64; DropReason::ALL.len()],
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent in answer to packets from unproven addresses.
    pub bytes_out_handshake: u64,
    /// Control-stream segments sent again after a timeout.
    pub segments_resent: u64,
}

/// Codes a peer closed by the endpoint itself is sent.
const PROTOCOL_VIOLATION: u16 = DisconnectReason::ProtocolViolation as u16;
const IDLE: u16 = DisconnectReason::Idle as u16;

#[derive(Debug)]
struct Peer {
    channel: ReliableChannel,
    reader: FrameReader,
    last_heard: Instant,
    last_sent: Instant,
    /// Set once [`ServerEndpoint::close`] was called: flush until the deadline, then say goodbye.
    closing: Option<(Instant, u16)>,
    /// The time of this peer's live entry in the timer queue (never later
    /// than its next deadline); `None` only while it is being visited.
    timer: Option<Instant>,
}

/// The shard side of the raw UDP transport, sans IO.
#[derive(Debug)]
pub struct ServerEndpoint {
    config: EndpointConfig,
    secret: [u8; 32],
    epoch: Instant,
    peers: HashMap<SocketAddr, Peer>,
    events: VecDeque<EndpointEvent>,
    transmits: VecDeque<Transmit>,
    stats: EndpointStats,
    /// The source of the latest drop per reason, for the driver's log.
    drop_sources: [Option<SocketAddr>; DropReason::ALL.len()],
    /// Timer entries, earliest first; an entry whose time is not its peer's
    /// `timer` (or whose peer is gone) is stale and skipped when it comes up.
    timers: BinaryHeap<Reverse<(Instant, SocketAddr)>>,
    /// Entries due in the current [`Self::handle_timeout`], kept for its allocation.
    due_scratch: Vec<(Instant, SocketAddr)>,
}

impl ServerEndpoint {
    /// An endpoint whose cookies are keyed by `secret` (the driver passes
    /// OS entropy; tests a constant). Cookie time buckets count from `now`.
    pub fn new(config: EndpointConfig, secret: [u8; 32], now: Instant) -> Self {
        Self {
            config,
            secret,
            epoch: now,
            peers: HashMap::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            stats: EndpointStats::default(),
            drop_sources: [None; DropReason::ALL.len()],
            timers: BinaryHeap::new(),
            due_scratch: Vec::new(),
        }
    }

    /// Where the latest packet dropped for `reason` came from.
    pub fn last_drop_source(&self, reason: DropReason) -> Option<SocketAddr> {
        self.drop_sources[reason.index()]
    }

    /// Connections held now.
    pub fn n_peers(&self) -> usize {
        self.peers.len()
    }

    /// Whether `remote` has a connection (open or closing).
    pub fn is_connected(&self, remote: SocketAddr) -> bool {
        self.peers.contains_key(&remote)
    }

    /// Counters since the start.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// The cookie time bucket at `now`.
    pub fn bucket(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / BUCKET_SECS
    }

    fn cookie(&self, remote: SocketAddr, bucket: u64) -> Cookie {
        let mut hasher = Sha256::new();
        hasher.update(self.secret);
        let ip = match remote.ip() {
            IpAddr::V4(ip) => ip.to_ipv6_mapped(),
            IpAddr::V6(ip) => ip,
        };
        hasher.update(ip.octets());
        hasher.update(remote.port().to_le_bytes());
        hasher.update(bucket.to_le_bytes());
        let digest = hasher.finalize();
        let mut cookie = [0u8; wire::COOKIE_LEN];
        cookie.copy_from_slice(&digest[..wire::COOKIE_LEN]);
        cookie
    }

    fn cookie_check(&self, now: Instant, remote: SocketAddr, bucket: u64, cookie: &Cookie) -> Result<(), DropReason> {
        let current = self.bucket(now);
        if bucket != current && bucket.checked_add(1) != Some(current) {
            return Err(DropReason::StaleCookie);
        }
        // Compared in constant time: the cookie is a secret of the address's owner.
        let expected = self.cookie(remote, bucket);
        if expected.iter().zip(cookie).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0 {
            Ok(())
        } else {
            Err(DropReason::WrongAddress)
        }
    }

    fn drop_packet(&mut self, remote: SocketAddr, reason: DropReason) {
        self.stats.packets_dropped += 1;
        self.stats.drops[reason.index()] += 1;
        self.drop_sources[reason.index()] = Some(remote);
    }

    /// Takes `packet` if it is a game datagram from a connected (not closing)
    /// peer: notes that the peer was heard from and returns the datagram
    /// without its kind byte, with no event and no allocation. Anything else
    /// (`None`) is left for [`Self::handle`], which counts and answers it as
    /// before, so a driver offers every packet here first and hands on what
    /// this refuses.
    pub fn accept_datagram<'a>(&mut self, now: Instant, remote: SocketAddr, packet: &'a [u8]) -> Option<&'a [u8]> {
        let Some((&wire::DATAGRAM, payload)) = packet.split_first() else { return None };
        let peer = self.peers.get_mut(&remote)?;
        if peer.closing.is_some() {
            return None;
        }
        peer.last_heard = now;
        self.stats.bytes_in += packet.len() as u64;
        Some(payload)
    }

    /// Handles one received packet.
    pub fn handle(&mut self, now: Instant, remote: SocketAddr, packet: &[u8]) {
        self.stats.bytes_in += packet.len() as u64;
        let parsed = match Packet::parse(packet) {
            Ok(parsed) => parsed,
            Err(error) => return self.drop_packet(remote, DropReason::of(error)),
        };
        if let Some(peer) = self.peers.get_mut(&remote) {
            peer.last_heard = now;
            match parsed {
                // A resent connect: the hello was taken already.
                Packet::Connect { .. } | Packet::Keepalive => {}
                Packet::Datagram(payload) => {
                    if peer.closing.is_none() {
                        self.events.push_back(EndpointEvent::Datagram { remote, payload: payload.to_vec() });
                    }
                }
                Packet::Segment { .. } | Packet::Ack { .. } => {
                    let bytes = peer.channel.handle(now, packet);
                    if peer.closing.is_some() {
                        // Only the flush matters now: acks of what the shard sent last.
                        self.flush_peer(now, remote);
                        return;
                    }
                    peer.reader.push(&bytes);
                    let mut broken = false;
                    loop {
                        match peer.reader.poll_frame() {
                            Ok(Some(payload)) => self.events.push_back(EndpointEvent::Frame { remote, payload }),
                            Ok(None) => break,
                            Err(_) => {
                                broken = true;
                                break;
                            }
                        }
                    }
                    self.flush_peer(now, remote);
                    if broken {
                        self.remove(remote, PROTOCOL_VIOLATION);
                    }
                }
                Packet::Disconnect { .. } => self.remove(remote, 0),
                Packet::Request | Packet::Challenge { .. } => self.drop_packet(remote, DropReason::Unexpected),
            }
            return;
        }
        match parsed {
            Packet::Request => {
                let bucket = self.bucket(now);
                let challenge = wire::challenge(bucket, &self.cookie(remote, bucket));
                self.stats.challenges_sent += 1;
                self.stats.bytes_out_handshake += challenge.len() as u64;
                self.transmits.push_back(Transmit { remote, packet: challenge });
            }
            Packet::Connect { bucket, cookie, hello } => {
                if let Err(reason) = self.cookie_check(now, remote, bucket, &cookie) {
                    return self.drop_packet(remote, reason);
                }
                if self.peers.len() >= self.config.max_peers {
                    return self.drop_packet(remote, DropReason::OverCapacity);
                }
                let mut reader = FrameReader::new();
                reader.push(hello);
                let Ok(Some(hello)) = reader.poll_frame() else { return self.drop_packet(remote, DropReason::NoHello) };
                // Frames the client pipelined behind the hello in the same packet
                // are delivered now, not when the next segment arrives.
                let mut pipelined = Vec::new();
                while let Ok(Some(payload)) = reader.poll_frame() {
                    pipelined.push(payload);
                }
                let peer = Peer {
                    channel: ReliableChannel::new(),
                    reader,
                    last_heard: now,
                    last_sent: now,
                    closing: None,
                    timer: None,
                };
                self.peers.insert(remote, peer);
                self.reschedule(remote);
                self.events.push_back(EndpointEvent::Connected { remote, hello });
                self.events.extend(pipelined.into_iter().map(|payload| EndpointEvent::Frame { remote, payload }));
            }
            _ => self.drop_packet(remote, DropReason::NotConnected),
        }
    }

    /// Queues framed bytes on `remote`'s control stream (ignored for an unknown peer).
    pub fn send_frame(&mut self, now: Instant, remote: SocketAddr, frame: &[u8]) {
        let Some(peer) = self.peers.get_mut(&remote) else { return };
        peer.channel.send(frame);
        self.flush_peer(now, remote);
    }

    /// Closes `remote`'s connection once its control stream is flushed (or
    /// [`EndpointConfig::close_flush`] has passed), sending `reason`. Game
    /// datagrams from it are ignored from now on.
    pub fn close(&mut self, now: Instant, remote: SocketAddr, reason: u16) {
        let Some(peer) = self.peers.get_mut(&remote) else { return };
        if peer.closing.is_none() {
            peer.closing = Some((now + self.config.close_flush, reason));
        }
        self.flush_peer(now, remote);
        self.finish_if_flushed(now, remote);
    }

    /// Resends, keepalives, finished closes and idle timeouts due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handle_timeout_with(now, |_| false);
    }

    /// [`Self::handle_timeout`], where the driver also sends game datagrams
    /// itself (off the endpoint's path): before a keepalive goes to a peer,
    /// `sent_since_asked(remote)` says whether the driver sent it anything since
    /// it was last asked about that peer; if so that counts as traffic and no
    /// keepalive is sent. A peer that gets snapshots is therefore asked about
    /// once per [`EndpointConfig::keepalive_after`] and sent no keepalive, and
    /// the longest it hears nothing is under twice that (the datagram may
    /// have gone out just after the previous question).
    pub fn handle_timeout_with(&mut self, now: Instant, mut sent_since_asked: impl FnMut(SocketAddr) -> bool) {
        let mut due = std::mem::take(&mut self.due_scratch);
        while let Some(&Reverse((at, remote))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            due.push((at, remote));
        }
        for &(at, remote) in &due {
            let Some(peer) = self.peers.get_mut(&remote) else { continue };
            if peer.timer != Some(at) {
                continue;
            }
            peer.timer = None;
            if now >= peer.last_sent + self.config.keepalive_after && sent_since_asked(remote) {
                peer.last_sent = now;
            }
            // Re-arms the peer's entry (it has none now) at its next deadline.
            self.flush_peer(now, remote);
            if !self.finish_if_flushed(now, remote)
                && let Some(peer) = self.peers.get(&remote)
                && peer.closing.is_none()
                && now >= peer.last_heard + self.config.idle_timeout
            {
                self.remove(remote, IDLE);
            }
        }
        due.clear();
        self.due_scratch = due;
    }

    /// The earliest time [`Self::handle_timeout`] has something to do (or a
    /// little earlier: calling early is harmless).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.peers.is_empty() {
            return None;
        }
        self.timers.peek().map(|&Reverse((at, _))| at)
    }

    /// `remote`'s next deadline: keepalive, idle timeout or close deadline, resend.
    fn deadline(&self, peer: &Peer) -> Instant {
        let mut due = peer.last_sent + self.config.keepalive_after;
        due = match peer.closing {
            // A closing peer is not dropped for silence: its flush deadline ends it.
            Some((deadline, _)) => due.min(deadline),
            None => due.min(peer.last_heard + self.config.idle_timeout),
        };
        if let Some(resend) = peer.channel.poll_timeout() {
            due = due.min(resend);
        }
        due
    }

    /// Puts `remote` in the timer queue at its deadline, if that is earlier
    /// than its entry there (or it has none). Deadlines that moved later need
    /// nothing: the early entry re-arms when it comes up.
    fn reschedule(&mut self, remote: SocketAddr) {
        let Some(peer) = self.peers.get(&remote) else { return };
        let due = self.deadline(peer);
        if peer.timer.is_none_or(|at| due < at) {
            self.timers.push(Reverse((due, remote)));
            if let Some(peer) = self.peers.get_mut(&remote) {
                peer.timer = Some(due);
            }
        }
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    fn flush_peer(&mut self, now: Instant, remote: SocketAddr) {
        let Some(peer) = self.peers.get_mut(&remote) else { return };
        let resent_before = peer.channel.resends();
        while let Some(packet) = peer.channel.poll_transmit(now) {
            self.transmits.push_back(Transmit { remote, packet });
            peer.last_sent = now;
        }
        self.stats.segments_resent += peer.channel.resends() - resent_before;
        if now >= peer.last_sent + self.config.keepalive_after {
            self.transmits.push_back(Transmit { remote, packet: wire::keepalive() });
            peer.last_sent = now;
        }
        self.reschedule(remote);
    }

    /// Ends a closing peer whose stream is flushed or whose deadline passed; true if it did.
    fn finish_if_flushed(&mut self, now: Instant, remote: SocketAddr) -> bool {
        let Some(peer) = self.peers.get(&remote) else { return false };
        let Some((deadline, reason)) = peer.closing else { return false };
        if !peer.channel.is_idle() && now < deadline {
            return false;
        }
        // Sent twice (here and in `remove`): a lost goodbye only costs the client its idle timeout.
        self.transmits.push_back(Transmit { remote, packet: wire::disconnect(reason) });
        self.remove(remote, reason);
        true
    }

    /// Forgets a peer, says goodbye with `reason`, and reports it closed.
    fn remove(&mut self, remote: SocketAddr, reason: u16) {
        if self.peers.remove(&remote).is_none() {
            return;
        }
        self.transmits.push_back(Transmit { remote, packet: wire::disconnect(reason) });
        self.events.push_back(EndpointEvent::Closed { remote, reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [3; 32];

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn hello_frame(payload: &[u8]) -> Vec<u8> {
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(payload);
        frame
    }

    fn challenge_for(endpoint: &mut ServerEndpoint, now: Instant, remote: SocketAddr) -> (u64, Cookie) {
        endpoint.handle(now, remote, &wire::request());
        let transmit = endpoint.poll_transmit().expect("a challenge");
        assert_eq!(transmit.remote, remote);
        match Packet::parse(&transmit.packet) {
            Ok(Packet::Challenge { bucket, cookie }) => (bucket, cookie),
            other => panic!("not a challenge: {other:?}"),
        }
    }

    #[test]
    fn a_proven_address_connects_and_nothing_is_kept_before() {
        let now = Instant::now();
        let mut endpoint = ServerEndpoint::new(EndpointConfig::default(), SECRET, now);
        let (bucket, cookie) = challenge_for(&mut endpoint, now, addr(1));
        assert_eq!(endpoint.n_peers(), 0, "a request allocates nothing");
        endpoint.handle(now, addr(1), &wire::connect(bucket, &cookie, &hello_frame(b"hi")));
        assert_eq!(endpoint.poll_event(), Some(EndpointEvent::Connected { remote: addr(1), hello: b"hi".to_vec() }));
        assert_eq!(endpoint.n_peers(), 1);
    }

    #[test]
    fn frames_pipelined_behind_the_hello_are_delivered_at_once() {
        let now = Instant::now();
        let mut endpoint = ServerEndpoint::new(EndpointConfig::default(), SECRET, now);
        let (bucket, cookie) = challenge_for(&mut endpoint, now, addr(1));
        let mut frames = hello_frame(b"hi");
        frames.extend(hello_frame(b"ping"));
        endpoint.handle(now, addr(1), &wire::connect(bucket, &cookie, &frames));
        assert!(matches!(endpoint.poll_event(), Some(EndpointEvent::Connected { .. })));
        assert_eq!(endpoint.poll_event(), Some(EndpointEvent::Frame { remote: addr(1), payload: b"ping".to_vec() }));
    }

    #[test]
    fn a_closing_peer_never_has_a_deadline_in_the_past() {
        let now = Instant::now();
        let config = EndpointConfig::default();
        let mut endpoint = ServerEndpoint::new(config.clone(), SECRET, now);
        let (bucket, cookie) = challenge_for(&mut endpoint, now, addr(1));
        endpoint.handle(now, addr(1), &wire::connect(bucket, &cookie, &hello_frame(b"hi")));
        // A frame nobody acknowledges keeps the close flushing until its deadline,
        // past the peer's idle timeout.
        endpoint.send_frame(now, addr(1), b"unacknowledged");
        let late = now + config.idle_timeout;
        endpoint.close(late - Duration::from_millis(1), addr(1), 0);
        endpoint.handle_timeout(late);
        assert!(endpoint.is_connected(addr(1)), "still flushing");
        let due = endpoint.poll_timeout().expect("the flush deadline");
        assert!(due > late, "a deadline at or before now would spin a driver: {due:?} vs {late:?}");
    }

    #[test]
    fn every_silent_drop_is_counted_by_its_reason_with_its_source() {
        let now = Instant::now();
        let config = EndpointConfig { max_peers: 1, ..EndpointConfig::default() };
        let mut endpoint = ServerEndpoint::new(config, SECRET, now);
        let (bucket, cookie) = challenge_for(&mut endpoint, now, addr(1));
        let mut unpadded = wire::request();
        unpadded.truncate(100);
        let mut dirty = wire::request();
        dirty[200] = 7;
        let mut unmagic = wire::request();
        unmagic[1] = b'X';
        let later = now + Duration::from_secs(2 * BUCKET_SECS);
        let cases: [(Instant, SocketAddr, Vec<u8>, DropReason); 10] = [
            (now, addr(9), unpadded, DropReason::BadSize),
            (now, addr(9), unmagic, DropReason::BadMagic),
            (now, addr(9), dirty, DropReason::BadPadding),
            (now, addr(9), vec![99, 0, 0], DropReason::UnknownKind),
            (later, addr(1), wire::connect(bucket, &cookie, &hello_frame(b"hi")), DropReason::StaleCookie),
            (now, addr(2), wire::connect(bucket, &cookie, &hello_frame(b"hi")), DropReason::WrongAddress),
            (now, addr(1), wire::connect(bucket, &cookie, &[5, 0]), DropReason::NoHello),
            (now, addr(3), wire::keepalive(), DropReason::NotConnected),
            (now, addr(1), wire::connect(bucket, &cookie, &hello_frame(b"hi")), DropReason::Unexpected),
            (now, addr(4), Vec::new(), DropReason::OverCapacity),
        ];
        for (at, remote, packet, reason) in cases {
            let packet = if reason == DropReason::Unexpected {
                // A connection first (the one the endpoint has room for), then a request from it.
                endpoint.handle(at, remote, &packet);
                wire::request()
            } else if reason == DropReason::OverCapacity {
                let (bucket, cookie) = challenge_for(&mut endpoint, at, remote);
                wire::connect(bucket, &cookie, &hello_frame(b"hi"))
            } else {
                packet
            };
            let before = endpoint.stats();
            endpoint.handle(at, remote, &packet);
            let after = endpoint.stats();
            let idx = DropReason::ALL.iter().position(|&r| r == reason).unwrap();
            assert_eq!(after.drops[idx], before.drops[idx] + 1, "{reason:?} counted");
            assert_eq!(after.packets_dropped, before.packets_dropped + 1, "{reason:?} counted once");
            assert_eq!(endpoint.last_drop_source(reason), Some(remote), "{reason:?}");
        }
        assert!(endpoint.stats().drops.iter().all(|&count| count == 1), "{:?}", endpoint.stats().drops);
        // Silent: nothing but the challenges asked for went out.
        while let Some(transmit) = endpoint.poll_transmit() {
            assert!(matches!(Packet::parse(&transmit.packet), Ok(Packet::Challenge { .. })), "{transmit:?}");
        }
    }

    #[test]
    fn a_cookie_from_another_address_or_an_old_bucket_is_refused() {
        let now = Instant::now();
        let mut endpoint = ServerEndpoint::new(EndpointConfig::default(), SECRET, now);
        let (bucket, cookie) = challenge_for(&mut endpoint, now, addr(1));
        endpoint.handle(now, addr(2), &wire::connect(bucket, &cookie, &hello_frame(b"hi")));
        let later = now + Duration::from_secs(2 * BUCKET_SECS);
        endpoint.handle(later, addr(1), &wire::connect(bucket, &cookie, &hello_frame(b"hi")));
        assert_eq!(endpoint.poll_event(), None);
        assert_eq!(endpoint.stats().packets_dropped, 2);
        // The previous bucket is still good.
        let next = now + Duration::from_secs(BUCKET_SECS);
        endpoint.handle(next, addr(1), &wire::connect(bucket, &cookie, &hello_frame(b"hi")));
        assert!(matches!(endpoint.poll_event(), Some(EndpointEvent::Connected { .. })));
    }

    fn connected(endpoint: &mut ServerEndpoint, now: Instant, remote: SocketAddr) {
        let (bucket, cookie) = challenge_for(endpoint, now, remote);
        endpoint.handle(now, remote, &wire::connect(bucket, &cookie, &hello_frame(b"hi")));
        assert!(matches!(endpoint.poll_event(), Some(EndpointEvent::Connected { .. })));
    }

    #[test]
    fn a_game_datagram_from_a_peer_is_taken_without_an_event_and_anything_else_is_refused() {
        let now = Instant::now();
        let mut endpoint = ServerEndpoint::new(EndpointConfig::default(), SECRET, now);
        connected(&mut endpoint, now, addr(1));
        let datagram = wire::datagram(b"input");
        let before = endpoint.stats().bytes_in;
        assert_eq!(endpoint.accept_datagram(now, addr(1), &datagram), Some(&b"input"[..]));
        assert_eq!(endpoint.stats().bytes_in, before + datagram.len() as u64);
        assert_eq!(endpoint.poll_event(), None);
        // Not a datagram, not a peer, or a closing peer: left for `handle`, which counts it.
        assert_eq!(endpoint.accept_datagram(now, addr(1), &wire::keepalive()), None);
        assert_eq!(endpoint.accept_datagram(now, addr(2), &datagram), None);
        assert_eq!(endpoint.accept_datagram(now, addr(1), &[]), None);
        endpoint.send_frame(now, addr(1), b"unacknowledged");
        endpoint.close(now, addr(1), 0);
        assert_eq!(endpoint.accept_datagram(now, addr(1), &datagram), None);
        // The idle timeout counts datagrams taken here as hearing from the peer.
        let config = EndpointConfig::default();
        let mut endpoint = ServerEndpoint::new(config.clone(), SECRET, now);
        connected(&mut endpoint, now, addr(3));
        let later = now + config.idle_timeout - Duration::from_millis(1);
        assert!(endpoint.accept_datagram(later, addr(3), &datagram).is_some());
        endpoint.handle_timeout(now + config.idle_timeout + Duration::from_millis(1));
        assert!(endpoint.is_connected(addr(3)), "heard from 2 ms ago");
    }

    #[test]
    fn timers_visit_only_due_peers_and_driver_traffic_replaces_keepalives() {
        let start = Instant::now();
        let config = EndpointConfig::default();
        let mut endpoint = ServerEndpoint::new(config.clone(), SECRET, start);
        for port in 1..=1000 {
            connected(&mut endpoint, start, addr(port));
        }
        while endpoint.poll_transmit().is_some() {}
        // Nothing is due before the keepalive interval: no peer is visited.
        let mut asked = 0;
        for ms in 1..500 {
            endpoint.handle_timeout_with(start + Duration::from_millis(ms), |_| {
                asked += 1;
                true
            });
        }
        assert_eq!(asked, 0, "peers visited before anything was due");
        assert_eq!(endpoint.poll_timeout(), Some(start + config.keepalive_after));
        // The driver sent game datagrams to even ports: they get no keepalive, odd ports do.
        let mut keepalives = 0;
        for step in 1..=8u32 {
            let now = start + config.keepalive_after * step;
            endpoint.handle_timeout_with(now, |remote| {
                asked += 1;
                remote.port() % 2 == 0
            });
            while let Some(transmit) = endpoint.poll_transmit() {
                assert_eq!(transmit.packet, wire::keepalive());
                assert_eq!(transmit.remote.port() % 2, 1, "a keepalive to a peer the driver sent to");
                keepalives += 1;
            }
            assert!(endpoint.poll_timeout().is_some_and(|due| due > now));
        }
        assert_eq!(keepalives, 500 * 8, "one per quiet peer per interval");
        assert_eq!(asked, 1000 * 8, "each peer asked about once per interval");
    }
}
