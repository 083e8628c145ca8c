//! The raw UDP transport's shard end, sans IO, in virtual time: the
//! `rally_transport::udp::ServerEndpoint` and a client speaking the wire by
//! hand with its own `ReliableChannel`, over conditioned in-memory links with
//! a fixed seed and a manual clock. The cookie handshake, its refusals, the
//! reliable control stream under loss, duplication and reordering, closes and
//! idle timeouts are tested here; `udp.rs` keeps a smoke test over a socket.

#![expect(clippy::unwrap_used, reason = "tests unwrap what must be there")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rally_protocol::control::DisconnectReason;
use rally_transport::conditioner::{Link, LinkConditions};
use rally_transport::udp::wire::{self, Packet};
use rally_transport::udp::{BUCKET_SECS, EndpointConfig, EndpointEvent, ReliableChannel, ServerEndpoint};

const STEP: Duration = Duration::from_millis(1);
const SECRET: [u8; 32] = [9; 32];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

/// A length-prefixed frame, as a hello travels in a connect packet.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// The endpoint and one client at `client` over conditioned links, in virtual time.
struct Pair {
    now: Instant,
    endpoint: ServerEndpoint,
    client: SocketAddr,
    channel: ReliableChannel,
    up: Link<Vec<u8>>,
    down: Link<Vec<u8>>,
    /// Control stream bytes the client received, in order.
    received: Vec<u8>,
    /// Challenges the client received.
    challenges: Vec<(u64, wire::Cookie)>,
    /// The goodbye codes the client received.
    goodbyes: Vec<u16>,
    keepalives: u64,
    events: Vec<EndpointEvent>,
    /// Whether the client runs its channel (after it connected).
    connected: bool,
}

impl Pair {
    fn new(conditions: LinkConditions, seed: u64) -> Self {
        let now = Instant::now();
        Self {
            now,
            endpoint: ServerEndpoint::new(EndpointConfig::default(), SECRET, now),
            client: addr(4000),
            channel: ReliableChannel::new(),
            up: Link::new(conditions, seed),
            down: Link::new(conditions, seed + 1),
            received: Vec::new(),
            challenges: Vec::new(),
            goodbyes: Vec::new(),
            keepalives: 0,
            events: Vec::new(),
            connected: false,
        }
    }

    /// The client sends `packet` now.
    fn send(&mut self, packet: Vec<u8>) {
        self.up.push(self.now, packet);
    }

    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        while let Some(packet) = self.up.poll(now) {
            self.endpoint.handle(now, self.client, &packet);
        }
        if self.endpoint.poll_timeout().is_some_and(|due| due <= now) {
            self.endpoint.handle_timeout(now);
        }
        while let Some(transmit) = self.endpoint.poll_transmit() {
            assert_eq!(transmit.remote, self.client, "the endpoint answers the address it heard from");
            self.down.push(now, transmit.packet);
        }
        while let Some(event) = self.endpoint.poll_event() {
            self.events.push(event);
        }
        while let Some(packet) = self.down.poll(now) {
            match Packet::parse(&packet) {
                Ok(Packet::Challenge { bucket, cookie }) => self.challenges.push((bucket, cookie)),
                Ok(Packet::Segment { .. } | Packet::Ack { .. }) => {
                    let bytes = self.channel.handle(now, &packet);
                    self.received.extend(bytes);
                }
                Ok(Packet::Disconnect { reason }) => self.goodbyes.push(reason),
                Ok(Packet::Keepalive) => self.keepalives += 1,
                other => panic!("the endpoint sent {other:?}"),
            }
        }
        if self.connected {
            while let Some(packet) = self.channel.poll_transmit(now) {
                self.up.push(now, packet);
            }
        }
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) -> bool {
        let deadline = self.now + limit;
        while self.now < deadline {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Requests a cookie until one arrives (requests can be lost too).
    fn challenge(&mut self) -> (u64, wire::Cookie) {
        let before = self.challenges.len();
        for _ in 0..50 {
            self.send(wire::request());
            if self.run_until(Duration::from_millis(200), |pair| pair.challenges.len() > before) {
                return *self.challenges.last().unwrap();
            }
        }
        panic!("no challenge in 50 requests");
    }

    /// The handshake, resent until the endpoint reports the connection.
    fn connect(&mut self, hello: &[u8]) {
        let (bucket, cookie) = self.challenge();
        for _ in 0..50 {
            self.send(wire::connect(bucket, &cookie, &frame(hello)));
            if self.run_until(Duration::from_millis(200), |pair| pair.connected_events() > 0) {
                self.connected = true;
                return;
            }
        }
        panic!("never connected");
    }

    fn connected_events(&self) -> usize {
        self.events.iter().filter(|event| matches!(event, EndpointEvent::Connected { .. })).count()
    }

    /// Control frame payloads the endpoint received, in order, joined.
    fn frames_in(&self) -> Vec<u8> {
        self.events
            .iter()
            .filter_map(|event| match event {
                EndpointEvent::Frame { payload, .. } => Some(payload.as_slice()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat()
    }

    fn frame_events(&self) -> usize {
        self.events.iter().filter(|event| matches!(event, EndpointEvent::Frame { .. })).count()
    }

    fn closed(&self) -> Vec<u16> {
        self.events
            .iter()
            .filter_map(|event| match event {
                EndpointEvent::Closed { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }
}

mod handshake {
    use super::*;

    #[test]
    fn request_challenge_connect_allocates_one_peer_only_once_the_address_is_proven() {
        let mut pair = Pair::new(LinkConditions::perfect(), 1);
        let (bucket, cookie) = pair.challenge();
        assert_eq!(pair.endpoint.n_peers(), 0, "a request allocates nothing");
        let stats = pair.endpoint.stats();
        assert_eq!(stats.challenges_sent, 1);
        assert!(stats.bytes_out_handshake < wire::REQUEST_LEN as u64, "the answer is smaller than the request");
        pair.send(wire::connect(bucket, &cookie, &frame(b"hello")));
        assert!(pair.run_until(Duration::from_millis(10), |pair| pair.connected_events() == 1));
        assert_eq!(pair.events[0], EndpointEvent::Connected { remote: pair.client, hello: b"hello".to_vec() });
        assert!(pair.endpoint.is_connected(pair.client));
        // A resent connect (its answer was lost, say) is not a second connection.
        pair.send(wire::connect(bucket, &cookie, &frame(b"hello")));
        pair.run_until(Duration::from_millis(10), |_| false);
        assert_eq!((pair.connected_events(), pair.endpoint.n_peers()), (1, 1));
    }

    #[test]
    fn bad_cookies_unpadded_requests_and_expired_buckets_are_dropped_without_an_answer() {
        let mut pair = Pair::new(LinkConditions::perfect(), 2);
        let (bucket, cookie) = pair.challenge();
        let mut unpadded = wire::request();
        unpadded.truncate(wire::REQUEST_LEN - 1);
        let mut forged = cookie;
        forged[0] ^= 1;
        let cases = [
            ("an unpadded request", unpadded),
            ("a connect with a forged cookie", wire::connect(bucket, &forged, &frame(b"hi"))),
            ("a connect naming another bucket", wire::connect(bucket + 1, &cookie, &frame(b"hi"))),
            ("a connect with a truncated hello frame", wire::connect(bucket, &cookie, &frame(b"hi")[..5])),
            ("garbage", vec![0xff; 40]),
            ("an empty packet", Vec::new()),
        ];
        for (what, packet) in cases {
            let dropped = pair.endpoint.stats().packets_dropped;
            pair.send(packet);
            pair.run_until(Duration::from_millis(5), |_| false);
            assert_eq!(pair.endpoint.stats().packets_dropped, dropped + 1, "{what}");
            assert_eq!((pair.challenges.len(), pair.endpoint.n_peers()), (1, 0), "{what}: answered or allocated");
        }
        // Two buckets later the cookie has expired; the previous bucket's was still good.
        pair.run_until(Duration::from_secs(2 * BUCKET_SECS), |_| false);
        let dropped = pair.endpoint.stats().packets_dropped;
        pair.send(wire::connect(bucket, &cookie, &frame(b"hi")));
        pair.run_until(Duration::from_millis(5), |_| false);
        assert_eq!((pair.endpoint.stats().packets_dropped, pair.endpoint.n_peers()), (dropped + 1, 0), "expired");
        assert_eq!(pair.events, []);
    }

    #[test]
    fn a_cookie_is_good_for_its_bucket_and_the_next_one() {
        let mut pair = Pair::new(LinkConditions::perfect(), 3);
        let (bucket, cookie) = pair.challenge();
        pair.run_until(Duration::from_secs(BUCKET_SECS), |_| false);
        assert_eq!(pair.endpoint.bucket(pair.now), bucket + 1);
        pair.send(wire::connect(bucket, &cookie, &frame(b"hi")));
        assert!(pair.run_until(Duration::from_millis(5), |pair| pair.connected_events() == 1));
    }

    #[test]
    fn a_cookie_replayed_from_another_address_allocates_nothing() {
        let mut pair = Pair::new(LinkConditions::perfect(), 4);
        let (bucket, cookie) = pair.challenge();
        let thief = addr(5000);
        pair.endpoint.handle(pair.now, thief, &wire::connect(bucket, &cookie, &frame(b"hi")));
        assert_eq!((pair.endpoint.poll_event(), pair.endpoint.poll_transmit()), (None, None));
        assert_eq!((pair.endpoint.n_peers(), pair.endpoint.stats().packets_dropped), (0, 1));
        // The same address asking for itself gets its own cookie, which differs.
        pair.endpoint.handle(pair.now, thief, &wire::request());
        let answer = pair.endpoint.poll_transmit().unwrap();
        match Packet::parse(&answer.packet) {
            Ok(Packet::Challenge { cookie: theirs, .. }) => assert_ne!(theirs, cookie),
            other => panic!("not a challenge: {other:?}"),
        }
    }

    #[test]
    fn the_handshake_completes_through_a_lossy_link() {
        let mut pair = Pair::new(LinkConditions { loss: 0.3, ..LinkConditions::lossy() }, 5);
        pair.connect(b"hello");
        assert_eq!((pair.connected_events(), pair.endpoint.n_peers()), (1, 1));
    }
}

mod channel {
    use super::*;

    /// A thousand messages each way over `conditions`: both streams arrive
    /// complete and in order. Returns the segments the endpoint resent.
    fn burst(conditions: LinkConditions, seed: u64) -> (Pair, u64) {
        let mut pair = Pair::new(conditions, seed);
        pair.connect(b"hello");
        let messages: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_le_bytes().repeat(1 + (i % 100) as usize)).collect();
        for message in &messages {
            pair.endpoint.send_frame(pair.now, pair.client, &frame(message));
            pair.channel.send(&frame(message));
        }
        let down: Vec<u8> = messages.iter().flat_map(|message| frame(message)).collect();
        let up = messages.concat();
        let done = pair.run_until(Duration::from_secs(120), |pair| {
            pair.received.len() >= down.len() && pair.frame_events() >= messages.len()
        });
        assert!(
            done,
            "{} of {} bytes down, {} of {} frames up",
            pair.received.len(),
            down.len(),
            pair.frame_events(),
            messages.len()
        );
        assert_eq!(pair.received, down, "the shard's stream arrived complete and in order");
        assert_eq!(pair.frames_in(), up, "the client's frames arrived complete and in order");
        let resent = pair.endpoint.stats().segments_resent;
        (pair, resent)
    }

    #[test]
    fn a_burst_arrives_complete_and_in_order_through_loss_duplication_and_reordering() {
        let conditions = LinkConditions { loss: 0.10, duplicate: 0.05, reorder: 0.05, ..LinkConditions::lossy() };
        let (pair, resent) = burst(conditions, 10);
        let (up, down) = (pair.up.stats(), pair.down.stats());
        assert!(down.dropped > 0 && down.duplicated > 0 && down.reordered > 0, "{down:?}");
        assert!(up.dropped > 0 && up.duplicated > 0 && up.reordered > 0, "{up:?}");
        assert!(resent > 0 && pair.channel.resends() > 0, "losses were repaired by resends");
        assert!(pair.closed().is_empty(), "{:?}", pair.events);
    }

    #[test]
    fn on_a_perfect_link_nothing_is_resent() {
        let (pair, resent) = burst(LinkConditions::perfect(), 11);
        assert_eq!((resent, pair.channel.resends()), (0, 0));
    }

    #[test]
    fn the_same_seed_gives_the_same_resends() {
        let run = || burst(LinkConditions::lossy(), 12).1;
        assert_eq!(run(), run());
    }
}

mod lifetime {
    use super::*;

    #[test]
    fn a_close_flushes_the_stream_then_says_goodbye_with_its_reason() {
        let mut pair = Pair::new(LinkConditions::lossy(), 20);
        pair.connect(b"hello");
        let last_words = frame(b"the match is over");
        pair.endpoint.send_frame(pair.now, pair.client, &last_words);
        let reason = DisconnectReason::ShuttingDown as u16;
        pair.endpoint.close(pair.now, pair.client, reason);
        assert!(pair.run_until(Duration::from_secs(5), |pair| !pair.goodbyes.is_empty()));
        assert_eq!(pair.received, last_words, "the stream was flushed before the goodbye");
        assert!(pair.goodbyes.iter().all(|&code| code == reason), "{:?}", pair.goodbyes);
        assert_eq!(pair.closed(), [reason]);
        assert_eq!(pair.endpoint.n_peers(), 0);
    }

    #[test]
    fn a_silent_peer_is_kept_alive_then_dropped_as_idle() {
        let mut pair = Pair::new(LinkConditions::perfect(), 21);
        pair.connect(b"hello");
        // The client stops sending anything.
        pair.connected = false;
        let idle = EndpointConfig::default().idle_timeout;
        assert!(!pair.run_until(idle - Duration::from_millis(100), |pair| !pair.closed().is_empty()));
        assert!(pair.keepalives >= 10, "{} keepalives in {idle:?}", pair.keepalives);
        assert!(pair.run_until(Duration::from_millis(200), |pair| !pair.closed().is_empty()));
        let code = DisconnectReason::Idle as u16;
        assert_eq!((pair.closed(), pair.goodbyes.last().copied()), (vec![code], Some(code)));
    }

    #[test]
    fn a_client_goodbye_closes_the_connection_and_a_broken_stream_is_a_protocol_violation() {
        let mut pair = Pair::new(LinkConditions::perfect(), 22);
        pair.connect(b"hello");
        pair.send(wire::disconnect(0));
        assert!(pair.run_until(Duration::from_millis(10), |pair| pair.closed() == [0]));
        // A new connection whose control stream announces an oversized frame.
        pair.channel = ReliableChannel::new();
        pair.events.clear();
        pair.connect(b"again");
        pair.channel.send(&u32::MAX.to_le_bytes());
        let code = DisconnectReason::ProtocolViolation as u16;
        assert!(pair.run_until(Duration::from_millis(100), |pair| pair.closed() == [code]));
        assert_eq!(pair.goodbyes.last(), Some(&code));
    }
}
