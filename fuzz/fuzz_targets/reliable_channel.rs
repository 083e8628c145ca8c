//! Two `rally_transport::udp::ReliableChannel`s, `a` and `b`, joined by a link
//! the fuzz input drives: it sends bytes, polls either side, delivers, drops,
//! duplicates or corrupts queued packets in any order, injects attacker bytes
//! (raw, or well-formed segments and acks) into either side's `handle`, and
//! advances virtual time.
//!
//! # The properties
//!
//! Nothing panics. After a side drains `poll_transmit(now)`, its
//! `poll_timeout()` is `None` or later than `now` (a driver that sleeps until
//! it never spins), and an idle channel has no timeout.
//!
//! **Safety:** the bytes `b` has delivered are always a prefix of the bytes
//! `a` was given to send, and the other way round: in order, nothing lost
//! from the middle, nothing invented. The channel has no authentication, so
//! an attacker's well-formed segment whose sequence number lies in the
//! receiver's window (PROTOCOL.md section 13: 1,024 segments from the next
//! expected one) legitimately delivers the attacker's bytes. The target
//! models the receiver's next expected sequence number from the genuine
//! segments it has handled inside that window (the contiguous run from 0; a
//! genuine segment is beyond the window only after forged acks, since a
//! sender keeps its segments within 257 of the oldest unacknowledged one). A
//! forged packet (injected, or a queued one corrupted) that parses as a
//! segment in that window taints the direction, and the prefix property is
//! checked only for untainted directions. A forged segment outside the window
//! must be ignored, so it taints nothing and the property still holds;
//! garbage that does not parse as a segment taints nothing either. Forged
//! acks cannot add bytes, so they never taint safety.
//!
//! **Liveness:** at the end, a direction with no forged in-window segment
//! into its receiver and no forged ack into its sender (a forged ack can make
//! the sender forget a segment the receiver never got) must finish over a
//! perfect link: every byte sent arrives, and the sender goes idle.

#![no_main]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rally_transport::udp::ReliableChannel;
use rally_transport::udp::wire::{self, Packet};

/// The receive window PROTOCOL.md section 13 documents, in segments.
const RECV_WINDOW: u32 = 1024;
/// Rounds of the perfect link at the end beyond one per 256 segments sent;
/// each round advances past any resend timer.
const FINISH_ROUNDS: usize = 64;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Side {
    A,
    B,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// The side queues these bytes.
    Send { side: Side, bytes: Vec<u8> },
    /// The side queues `count % 320` two-byte messages, one segment each, so
    /// one op passes the 257-segment flight limit and the ack bitfield's end
    /// (more would spend the fuzzer's time in the sender's scan of its flight).
    SendMany { side: Side, count: u16 },
    /// The side drains `poll_transmit` onto its outgoing queue.
    Poll { side: Side },
    /// A packet from the side's outgoing queue arrives at the other side.
    Deliver { side: Side, idx: u16 },
    /// A packet of the side's outgoing queue is lost.
    Lose { side: Side, idx: u16 },
    /// A packet of the side's outgoing queue is duplicated.
    Duplicate { side: Side, idx: u16 },
    /// A byte of a queued packet is altered; the packet counts as forged.
    Corrupt { side: Side, idx: u16, at: u16, xor: u8 },
    /// Attacker bytes into the side's `handle`.
    InjectRaw { side: Side, bytes: Vec<u8> },
    /// A well-formed segment into the side's `handle`, near its window.
    InjectSegment { side: Side, seq_offset: i16, bytes: Vec<u8> },
    /// A well-formed ack into the side's `handle`.
    InjectAck { side: Side, next_offset: i16, bits: [u8; wire::ACK_BITS / 8] },
    /// Virtual time moves on.
    Advance { ms: u16 },
}

/// One queued packet and whether the attacker made it.
#[derive(Clone)]
struct Queued {
    packet: Vec<u8>,
    forged: bool,
}

/// One direction: a sender, its receiver, and what the target knows of both.
#[derive(Default)]
struct Direction {
    /// Everything given to the sender's `send`.
    sent: Vec<u8>,
    /// Everything the receiver's `handle` returned.
    received: Vec<u8>,
    /// Sequence numbers of genuine segments the receiver has handled.
    genuine_seqs: BTreeSet<u32>,
    /// The receiver's next expected sequence number, from the genuine
    /// segments alone: the first one not in `genuine_seqs`.
    model_next: u32,
    /// A forged in-window segment reached the receiver: it may deliver bytes nobody sent.
    stream_forged: bool,
    /// A forged ack reached the sender: it may have dropped an unreceived segment.
    acks_forged: bool,
    /// Packets the sender has put on the link and not yet delivered or lost.
    queue: Vec<Queued>,
    /// Messages sent by `SendMany`, so each carries a distinct counter.
    n_many: u16,
    /// Segments the sender's `send` calls cut their bytes into.
    n_segments: usize,
}

impl Direction {
    /// A genuine segment reached the receiver. One beyond the window is
    /// dropped there, so it is not counted here either (a sender that forged
    /// acks made forget its flight can run past the window).
    fn genuine(&mut self, seq: u32) {
        if seq < self.model_next || seq - self.model_next >= RECV_WINDOW {
            return;
        }
        self.genuine_seqs.insert(seq);
        while self.genuine_seqs.contains(&self.model_next) {
            self.model_next += 1;
        }
    }

    /// Whether the direction is finished (or its end cannot be promised).
    fn done(&self, sender: &ReliableChannel) -> bool {
        self.stream_forged || self.acks_forged || (sender.is_idle() && self.received.len() == self.sent.len())
    }

    fn send(&mut self, channel: &mut ReliableChannel, bytes: &[u8]) {
        channel.send(bytes);
        self.sent.extend_from_slice(bytes);
        self.n_segments += bytes.len().div_ceil(wire::SEGMENT_MAX);
    }

    fn check_prefix(&self) {
        if !self.stream_forged {
            assert!(
                self.sent.starts_with(&self.received),
                "delivered {} bytes that are not a prefix of the {} sent",
                self.received.len(),
                self.sent.len()
            );
        }
    }
}

struct Link {
    now: Instant,
    channels: [ReliableChannel; 2],
    /// `dirs[0]`: a to b; `dirs[1]`: b to a.
    dirs: [Direction; 2],
}

impl Link {
    fn new() -> Self {
        Self {
            now: Instant::now(),
            channels: [ReliableChannel::new(), ReliableChannel::new()],
            dirs: [Direction::default(), Direction::default()],
        }
    }

    /// The side's index as a sender (and the index of the direction it sends on).
    fn idx(side: Side) -> usize {
        match side {
            Side::A => 0,
            Side::B => 1,
        }
    }

    fn poll(&mut self, sender: usize) {
        let now = self.now;
        while let Some(packet) = self.channels[sender].poll_transmit(now) {
            self.dirs[sender].queue.push(Queued { packet, forged: false });
        }
        let channel = &self.channels[sender];
        assert!(channel.poll_timeout().is_none_or(|due| due > now), "a drained channel is due now or before");
        if channel.is_idle() {
            assert_eq!(channel.poll_timeout(), None, "an idle channel has a timer");
        }
    }

    /// `packet` arrives at `receiver`.
    fn arrive(&mut self, receiver: usize, packet: &[u8], forged: bool) {
        // The direction whose receiver this is, and the one whose sender it is.
        let (incoming, outgoing) = (1 - receiver, receiver);
        match Packet::parse(packet) {
            Ok(Packet::Segment { seq, .. }) => {
                if forged {
                    let next = self.dirs[incoming].model_next;
                    if seq >= next && seq - next < RECV_WINDOW {
                        self.dirs[incoming].stream_forged = true;
                    }
                } else {
                    self.dirs[incoming].genuine(seq);
                }
            }
            Ok(Packet::Ack { .. }) if forged => self.dirs[outgoing].acks_forged = true,
            _ => {}
        }
        let delivered = self.channels[receiver].handle(self.now, packet);
        self.dirs[incoming].received.extend_from_slice(&delivered);
        self.dirs[incoming].check_prefix();
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Send { side, bytes } => {
                let sender = Self::idx(side);
                self.dirs[sender].send(&mut self.channels[sender], &bytes);
            }
            Op::SendMany { side, count } => {
                let sender = Self::idx(side);
                for _ in 0..count % 320 {
                    let dir = &mut self.dirs[sender];
                    let message = dir.n_many.to_le_bytes();
                    dir.n_many = dir.n_many.wrapping_add(1);
                    dir.send(&mut self.channels[sender], &message);
                }
            }
            Op::Poll { side } => self.poll(Self::idx(side)),
            Op::Deliver { side, idx } => {
                let sender = Self::idx(side);
                let queue = &mut self.dirs[sender].queue;
                if !queue.is_empty() {
                    let queued = queue.remove(usize::from(idx) % queue.len());
                    self.arrive(1 - sender, &queued.packet, queued.forged);
                }
            }
            Op::Lose { side, idx } => {
                let queue = &mut self.dirs[Self::idx(side)].queue;
                if !queue.is_empty() {
                    queue.remove(usize::from(idx) % queue.len());
                }
            }
            Op::Duplicate { side, idx } => {
                let queue = &mut self.dirs[Self::idx(side)].queue;
                if !queue.is_empty() {
                    let copy = queue[usize::from(idx) % queue.len()].clone();
                    queue.push(copy);
                }
            }
            Op::Corrupt { side, idx, at, xor } => {
                let queue = &mut self.dirs[Self::idx(side)].queue;
                if !queue.is_empty() && xor != 0 {
                    let queue_idx = usize::from(idx) % queue.len();
                    let queued = &mut queue[queue_idx];
                    let at = usize::from(at) % queued.packet.len();
                    queued.packet[at] ^= xor;
                    queued.forged = true;
                }
            }
            Op::InjectRaw { side, bytes } => self.arrive(Self::idx(side), &bytes, true),
            Op::InjectSegment { side, seq_offset, bytes } => {
                let receiver = Self::idx(side);
                let seq = self.dirs[1 - receiver].model_next.wrapping_add_signed(i32::from(seq_offset));
                let mut packet = vec![wire::SEGMENT];
                packet.extend_from_slice(&seq.to_le_bytes());
                packet.extend_from_slice(&bytes);
                self.arrive(receiver, &packet, true);
            }
            Op::InjectAck { side, next_offset, bits } => {
                let receiver = Self::idx(side);
                // Near the segments the receiver has cut its own stream into.
                let n_segments = u32::try_from(self.dirs[receiver].n_segments).unwrap_or(u32::MAX);
                let next = n_segments.wrapping_add_signed(i32::from(next_offset));
                let mut packet = vec![wire::ACK];
                packet.extend_from_slice(&next.to_le_bytes());
                packet.extend_from_slice(&bits);
                self.arrive(receiver, &packet, true);
            }
            Op::Advance { ms } => self.now += Duration::from_millis(u64::from(ms)),
        }
    }

    /// A perfect link until both directions finish (or the rounds run out).
    fn finish(&mut self) {
        let n_segments: usize = self.dirs.iter().map(|dir| dir.n_segments).sum();
        for _ in 0..n_segments / 256 + FINISH_ROUNDS {
            // Past the longest resend backoff (twice the 1 s ceiling).
            self.now += Duration::from_millis(2_001);
            for sender in 0..2 {
                self.poll(sender);
                for queued in std::mem::take(&mut self.dirs[sender].queue) {
                    self.arrive(1 - sender, &queued.packet, queued.forged);
                }
            }
            if self.dirs.iter().zip(&self.channels).all(|(dir, sender)| dir.done(sender)) {
                break;
            }
        }
        for (sender, dir) in self.dirs.iter().enumerate() {
            if dir.stream_forged || dir.acks_forged {
                continue;
            }
            assert!(self.channels[sender].is_idle(), "direction {sender} never finished");
            assert_eq!(dir.received.len(), dir.sent.len(), "direction {sender} lost bytes");
            assert_eq!(dir.received, dir.sent);
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut link = Link::new();
    for op in ops {
        link.apply(op);
    }
    link.finish();
});
