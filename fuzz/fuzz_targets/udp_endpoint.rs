//! The shard's raw UDP endpoint, `rally_transport::udp::ServerEndpoint`, driven
//! through its whole sans-IO surface: packets from five source addresses (raw
//! bytes; padded requests; connects with a cookie learned from an earlier
//! challenge, possibly another address's or with its bucket changed, or a
//! forged one; datagrams and disconnects; the control stream of a client-side
//! `ReliableChannel` per connection, fed the endpoint's transmits back with
//! losses), interleaved with `handle_timeout` at advancing virtual time and
//! `send_frame`/`close` on any address.
//!
//! # The properties
//!
//! Nothing panics, and after every call:
//!
//! - `n_peers()` never exceeds `max_peers`, and `is_connected` agrees with the
//!   connections the events opened and closed.
//! - A `Connected` event is for an address that was sent a challenge before.
//!   The cookie binds the IP as IPv4-mapped IPv6 (PROTOCOL.md section 13), so
//!   `10.0.0.1:1000` and `[::ffff:10.0.0.1]:1000` count as one address here.
//! - A connect with a learned cookie connects exactly when it should: the
//!   cookie was made for this address in this or the previous 10-second
//!   bucket (counted from the endpoint's creation) and is sent with that
//!   bucket, the hello frame is complete, a slot is free and the address is
//!   not connected already; its hello payload is the event's.
//! - `Connected` never repeats for an open connection and `Closed` comes at
//!   most once per connection (only for an open one); `Frame` and `Datagram`
//!   come only from open connections, `Datagram` not after `close`.
//! - No amplification: a packet to an address without a connection is a
//!   challenge, sent only in answer to that address's own packet, and the
//!   bytes sent to it in one call never exceed the bytes received. The
//!   handshake counters in `stats()` match what was seen.
//! - The control stream is neither reordered nor invented: the frames the
//!   endpoint reports from a connection are a prefix of what it was given (the
//!   bytes after the hello frame in the connect packet, then the client
//!   channel's stream), unless a raw packet from that address parsed as a
//!   segment (raw UDP has no authentication: such a segment may legitimately
//!   add bytes). What a client channel receives is a prefix of what
//!   `send_frame` was given for its connection.
//! - After `handle_timeout(now)`, `poll_timeout()` is `None` or later than `now`
//!   (a closing connection too: its flush deadline, not its silence, ends it).
//!
//! At the end every connection is closed and time passes the close flush:
//! every one must then be gone, each with one `Closed`.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rally_protocol::codec::MAX_CONTROL_FRAME;
use rally_transport::udp::wire::{self, Cookie, Packet};
use rally_transport::udp::{EndpointConfig, EndpointEvent, ReliableChannel, ServerEndpoint};

const SECRET: [u8; 32] = [7; 32];
/// Seconds per cookie bucket (PROTOCOL.md section 13).
const BUCKET_SECS: u64 = 10;
/// Challenges remembered for later connects.
const MAX_LEARNED: usize = 32;
/// Endpoint packets a client holds before it pumps (older ones are lost).
const MAX_INBOX: usize = 1024;

fn addrs() -> [SocketAddr; 5] {
    [
        "10.0.0.1:1000".parse().expect("literal"),
        "10.0.0.1:1001".parse().expect("literal"),
        "10.0.0.2:1000".parse().expect("literal"),
        // The first address as a dual-stack socket reports it.
        "[::ffff:10.0.0.1]:1000".parse().expect("literal"),
        "[2001:db8::1]:1000".parse().expect("literal"),
    ]
}

/// The address as the cookie binds it.
fn canonical(remote: SocketAddr) -> (Ipv6Addr, u16) {
    let ip = match remote {
        SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
        SocketAddr::V6(v6) => *v6.ip(),
    };
    (ip, remote.port())
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut framed = u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes().to_vec();
    framed.extend_from_slice(payload);
    framed
}

/// The first frame of `bytes` and what follows it, if complete (PROTOCOL.md 5.1).
fn first_frame(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let prefix: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_CONTROL_FRAME {
        return None;
    }
    let payload = bytes.get(4..4 + len)?;
    Some((payload, &bytes[4 + len..]))
}

#[derive(Arbitrary, Debug)]
struct Setup {
    max_peers: u8,
    idle_ms: u16,
    keepalive_ms: u16,
    close_flush_ms: u16,
}

#[derive(Arbitrary, Debug)]
enum CookieChoice {
    /// A cookie from the endpoint's challenges, sent with its bucket moved by `bucket_delta`.
    Learned { idx: u8, bucket_delta: i8 },
    /// A guess.
    Forged { bucket: u64, cookie: Cookie },
}

#[derive(Arbitrary, Debug)]
enum Hello {
    /// A frame of `payload`, then `trailing` stream bytes.
    Framed { payload: Vec<u8>, trailing: Vec<u8> },
    /// Raw bytes where the hello frame goes.
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Attacker bytes from an address.
    Raw {
        from: u8,
        bytes: Vec<u8>,
    },
    /// A cookie request, its padding filled with `padding`.
    Request {
        from: u8,
        padding: u8,
    },
    /// A connect packet: a cookie and what goes where the hello frame does.
    Connect {
        from: u8,
        cookie: CookieChoice,
        hello: Hello,
    },
    /// A game datagram.
    Datagram {
        from: u8,
        payload: Vec<u8>,
    },
    /// A goodbye.
    Disconnect {
        from: u8,
        reason: u16,
    },
    /// A keepalive.
    Keepalive {
        from: u8,
    },
    /// The connection's client queues bytes on its control stream: a frame of
    /// `payload`, or `payload` itself when `raw`.
    ClientSend {
        at: u8,
        payload: Vec<u8>,
        raw: bool,
    },
    /// The client handles what the endpoint sent it (packet `i` lost when bit
    /// `i % 32` of `lose` is set), then sends what its channel has.
    ClientPump {
        at: u8,
        lose: u32,
    },
    /// The shard sends a frame of `payload`.
    SendFrame {
        to: u8,
        payload: Vec<u8>,
    },
    Close {
        to: u8,
        reason: u16,
    },
    /// Time moves on, then `handle_timeout`.
    Advance {
        ms: u16,
    },
    /// Time moves to `poll_timeout` (if later), then `handle_timeout`.
    Timeout,
}

#[derive(Arbitrary, Debug)]
struct Case {
    setup: Setup,
    ops: Vec<Op>,
}

/// The client end of one connection.
struct Conn {
    channel: ReliableChannel,
    /// Endpoint packets for this connection not yet handled.
    inbox: Vec<Vec<u8>>,
    /// The stream the endpoint should read: the connect's bytes after the hello, then the channel's.
    upstream: Vec<u8>,
    /// The frames the endpoint reported, framed again.
    upstream_seen: Vec<u8>,
    /// A raw packet from this address parsed as a segment.
    upstream_forged: bool,
    /// What `send_frame` was given.
    downstream: Vec<u8>,
    /// What the client channel delivered.
    downstream_seen: Vec<u8>,
    closing: bool,
}

/// What one call to the endpoint is expected to do, beyond the invariants.
#[derive(Default)]
struct Call {
    /// `handle` from this address with a packet of this many bytes.
    from: Option<(SocketAddr, usize)>,
    /// A connect that must (`Some(hello)`) or must not (`None`) connect.
    connect: Option<Option<Vec<u8>>>,
    /// The connect's bytes after the hello frame.
    trailing: Vec<u8>,
    /// A datagram that must (`Some(payload)`) or must not (`None`) be reported.
    datagram: Option<Option<Vec<u8>>>,
}

struct Harness {
    endpoint: ServerEndpoint,
    config: EndpointConfig,
    start: Instant,
    now: Instant,
    addrs: [SocketAddr; 5],
    challenged: HashSet<(Ipv6Addr, u16)>,
    /// `(to, bucket, cookie)` of challenges seen, newest last.
    learned: Vec<(SocketAddr, u64, Cookie)>,
    conns: HashMap<SocketAddr, Conn>,
    challenges_sent: u64,
    handshake_bytes: u64,
}

impl Harness {
    fn new(setup: &Setup) -> Self {
        let config = EndpointConfig {
            max_peers: usize::from(setup.max_peers % 4) + 1,
            idle_timeout: Duration::from_millis(1 + u64::from(setup.idle_ms % 20_000)),
            keepalive_after: Duration::from_millis(1 + u64::from(setup.keepalive_ms % 1_000)),
            close_flush: Duration::from_millis(u64::from(setup.close_flush_ms % 3_000)),
        };
        let start = Instant::now();
        Self {
            endpoint: ServerEndpoint::new(config.clone(), SECRET, start),
            config,
            start,
            now: start,
            addrs: addrs(),
            challenged: HashSet::new(),
            learned: Vec::new(),
            conns: HashMap::new(),
            challenges_sent: 0,
            handshake_bytes: 0,
        }
    }

    fn addr(&self, idx: u8) -> SocketAddr {
        self.addrs[usize::from(idx) % self.addrs.len()]
    }

    fn bucket(&self) -> u64 {
        self.now.duration_since(self.start).as_secs() / BUCKET_SECS
    }

    /// `handle`, then the checks.
    fn handle(&mut self, remote: SocketAddr, packet: &[u8], mut call: Call) {
        if let Some(conn) = self.conns.get_mut(&remote)
            && call.connect.is_none()
            && matches!(Packet::parse(packet), Ok(Packet::Segment { .. }))
        {
            conn.upstream_forged = true;
        }
        call.from = Some((remote, packet.len()));
        let open_before: HashSet<SocketAddr> = self.conns.keys().copied().collect();
        self.endpoint.handle(self.now, remote, packet);
        self.check(&open_before, call);
    }

    /// Drains events and transmits of the last call and checks them.
    fn check(&mut self, open_before: &HashSet<SocketAddr>, call: Call) {
        let mut connected = None;
        let mut datagram = None;
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                EndpointEvent::Connected { remote, hello } => {
                    assert!(self.challenged.contains(&canonical(remote)), "{remote} connected unchallenged");
                    assert!(!self.conns.contains_key(&remote), "{remote} connected twice");
                    assert!(connected.is_none(), "one call connected twice");
                    assert_eq!(call.from.map(|(from, _)| from), Some(remote), "connected by another's packet");
                    connected = Some(hello);
                    self.conns.insert(
                        remote,
                        Conn {
                            channel: ReliableChannel::new(),
                            inbox: Vec::new(),
                            upstream: call.trailing.clone(),
                            upstream_seen: Vec::new(),
                            upstream_forged: false,
                            downstream: Vec::new(),
                            downstream_seen: Vec::new(),
                            closing: false,
                        },
                    );
                }
                EndpointEvent::Frame { remote, payload } => {
                    let conn = self.conns.get_mut(&remote).expect("a frame from a connection that is not open");
                    conn.upstream_seen.extend_from_slice(&frame(&payload));
                    if !conn.upstream_forged {
                        assert!(conn.upstream.starts_with(&conn.upstream_seen), "{remote}'s frames were invented");
                    }
                }
                EndpointEvent::Datagram { remote, payload } => {
                    let conn = self.conns.get(&remote).expect("a datagram from a connection that is not open");
                    assert!(!conn.closing, "a datagram reported after close");
                    assert!(datagram.is_none(), "one packet, two datagrams");
                    datagram = Some(payload);
                }
                EndpointEvent::Closed { remote, .. } => {
                    assert!(self.conns.remove(&remote).is_some(), "{remote} closed twice or never connected");
                }
            }
        }
        if let Some(expected) = call.connect {
            assert_eq!(connected, expected, "the connect's outcome");
        }
        if let Some(expected) = call.datagram {
            assert_eq!(datagram, expected, "the datagram's outcome");
        }

        let mut handshake_bytes = 0usize;
        while let Some(transmit) = self.endpoint.poll_transmit() {
            let remote = transmit.remote;
            if open_before.contains(&remote) || self.conns.contains_key(&remote) {
                if let Some(conn) = self.conns.get_mut(&remote) {
                    if conn.inbox.len() == MAX_INBOX {
                        conn.inbox.remove(0);
                    }
                    conn.inbox.push(transmit.packet);
                }
                continue;
            }
            let Some((from, received)) = call.from else {
                panic!("{remote} was sent {} bytes unasked", transmit.packet.len());
            };
            assert_eq!(from, remote, "an unproven address was sent a packet for another's");
            let Ok(Packet::Challenge { bucket, cookie }) = Packet::parse(&transmit.packet) else {
                panic!("an unproven address was sent a non-challenge: {:?}", transmit.packet);
            };
            assert_eq!(bucket, self.bucket());
            handshake_bytes += transmit.packet.len();
            assert!(handshake_bytes <= received, "{received} bytes in, {handshake_bytes} out: amplification");
            self.challenges_sent += 1;
            self.handshake_bytes += transmit.packet.len() as u64;
            self.challenged.insert(canonical(remote));
            if self.learned.len() == MAX_LEARNED {
                self.learned.remove(0);
            }
            self.learned.push((remote, bucket, cookie));
        }

        assert!(self.endpoint.n_peers() <= self.config.max_peers);
        assert_eq!(self.endpoint.n_peers(), self.conns.len());
        for &remote in &self.addrs {
            assert_eq!(self.endpoint.is_connected(remote), self.conns.contains_key(&remote), "{remote}");
        }
        let stats = self.endpoint.stats();
        assert_eq!(stats.challenges_sent, self.challenges_sent);
        assert_eq!(stats.bytes_out_handshake, self.handshake_bytes);
    }

    /// A call that is not `handle`: no packet may go to an unproven address.
    fn other(&mut self, call: impl FnOnce(&mut ServerEndpoint, Instant)) {
        let open_before: HashSet<SocketAddr> = self.conns.keys().copied().collect();
        call(&mut self.endpoint, self.now);
        self.check(&open_before, Call::default());
    }

    fn handle_timeout(&mut self) {
        self.other(|endpoint, now| endpoint.handle_timeout(now));
        let now = self.now;
        assert!(self.endpoint.poll_timeout().is_none_or(|due| due > now), "handle_timeout left work due now");
    }

    fn connect(&mut self, from: SocketAddr, cookie: &CookieChoice, hello: &Hello) {
        let (bucket, cookie, genuine) = match *cookie {
            CookieChoice::Learned { idx, bucket_delta } if !self.learned.is_empty() => {
                let (to, bucket, cookie) = self.learned[usize::from(idx) % self.learned.len()];
                let sent_bucket = bucket.wrapping_add_signed(i64::from(bucket_delta));
                (sent_bucket, cookie, canonical(to) == canonical(from) && bucket_delta == 0)
            }
            CookieChoice::Learned { .. } => (self.bucket(), [0; wire::COOKIE_LEN], false),
            // A guess never matches (a 128-bit SHA-256 prefix); the target asserts it.
            CookieChoice::Forged { bucket, cookie } => (bucket, cookie, false),
        };
        let hello_bytes = match hello {
            Hello::Framed { payload, trailing } => [frame(payload), trailing.clone()].concat(),
            Hello::Raw(bytes) => bytes.clone(),
        };
        let current = self.bucket();
        let in_time = bucket == current || bucket.checked_add(1) == Some(current);
        let admitted =
            genuine && in_time && !self.conns.contains_key(&from) && self.conns.len() < self.config.max_peers;
        let parsed = first_frame(&hello_bytes);
        let expected = parsed.filter(|_| admitted).map(|(payload, _)| payload.to_vec());
        let trailing = parsed.map(|(_, rest)| rest.to_vec()).unwrap_or_default();
        let packet = wire::connect(bucket, &cookie, &hello_bytes);
        self.handle(from, &packet, Call { connect: Some(expected), trailing, ..Call::default() });
    }

    fn client_pump(&mut self, at: SocketAddr, lose: u32) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&at) else { return };
        for (idx, packet) in std::mem::take(&mut conn.inbox).into_iter().enumerate() {
            if lose & (1 << (idx % 32)) != 0 {
                continue;
            }
            let delivered = conn.channel.handle(now, &packet);
            conn.downstream_seen.extend_from_slice(&delivered);
            assert!(conn.downstream.starts_with(&conn.downstream_seen), "the client got bytes the shard never sent");
        }
        let mut outgoing = Vec::new();
        while let Some(packet) = conn.channel.poll_transmit(now) {
            outgoing.push(packet);
        }
        for packet in outgoing {
            // Genuine: not an attacker's segment, so `handle` must not taint the stream.
            let open_before: HashSet<SocketAddr> = self.conns.keys().copied().collect();
            self.endpoint.handle(now, at, &packet);
            self.check(&open_before, Call { from: Some((at, packet.len())), ..Call::default() });
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Raw { from, bytes } => self.handle(self.addr(*from), bytes, Call::default()),
            Op::Request { from, padding } => {
                let mut packet = wire::request();
                packet[5..].fill(*padding);
                self.handle(self.addr(*from), &packet, Call::default());
            }
            Op::Connect { from, cookie, hello } => self.connect(self.addr(*from), cookie, hello),
            Op::Datagram { from, payload } => {
                let from = self.addr(*from);
                let reported = self.conns.get(&from).is_some_and(|conn| !conn.closing);
                let call = Call { datagram: Some(reported.then(|| payload.clone())), ..Call::default() };
                self.handle(from, &wire::datagram(payload), call);
            }
            Op::Disconnect { from, reason } => {
                self.handle(self.addr(*from), &wire::disconnect(*reason), Call::default())
            }
            Op::Keepalive { from } => self.handle(self.addr(*from), &wire::keepalive(), Call::default()),
            Op::ClientSend { at, payload, raw } => {
                let at = self.addr(*at);
                if let Some(conn) = self.conns.get_mut(&at) {
                    let bytes = if *raw { payload.clone() } else { frame(payload) };
                    conn.channel.send(&bytes);
                    conn.upstream.extend_from_slice(&bytes);
                }
            }
            Op::ClientPump { at, lose } => self.client_pump(self.addr(*at), *lose),
            Op::SendFrame { to, payload } => {
                let to = self.addr(*to);
                let framed = frame(payload);
                if let Some(conn) = self.conns.get_mut(&to) {
                    conn.downstream.extend_from_slice(&framed);
                }
                self.other(|endpoint, now| endpoint.send_frame(now, to, &framed));
            }
            Op::Close { to, reason } => self.close(self.addr(*to), *reason),
            Op::Advance { ms } => {
                self.now += Duration::from_millis(u64::from(*ms));
                self.handle_timeout();
            }
            Op::Timeout => {
                if let Some(due) = self.endpoint.poll_timeout() {
                    self.now = self.now.max(due);
                }
                self.handle_timeout();
            }
        }
    }

    /// Closes every connection and lets the close flush run out.
    fn finish(&mut self) {
        let remotes: Vec<SocketAddr> = self.conns.keys().copied().collect();
        for remote in remotes {
            self.close(remote, 0);
        }
        self.now += self.config.close_flush + Duration::from_millis(1);
        self.handle_timeout();
        assert!(self.conns.is_empty(), "closed connections outlived their flush: {:?}", self.conns.keys());
        assert_eq!(self.endpoint.n_peers(), 0);
    }

    fn close(&mut self, remote: SocketAddr, reason: u16) {
        if let Some(conn) = self.conns.get_mut(&remote) {
            conn.closing = true;
        }
        self.other(|endpoint, now| endpoint.close(now, remote, reason));
    }
}

fuzz_target!(|case: Case| {
    let mut harness = Harness::new(&case.setup);
    for op in &case.ops {
        harness.apply(op);
    }
    harness.finish();
});
