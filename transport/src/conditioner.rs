//! A link conditioner: loss, latency, jitter, duplication and reordering, with
//! a seeded generator so a test's network is as reproducible as its simulation.
//!
//! [`Link`] is sans-IO: push packets in with the current time, poll them out
//! when their delivery time has come. The stepper harness puts one in each
//! direction of every in-memory connection; the load harness wraps sockets with it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What the network does to packets.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct LinkConditions {
    /// Probability a packet is dropped.
    pub loss: f64,
    /// Base one-way delay.
    pub latency: Duration,
    /// Delay varies uniformly within ± this around `latency`.
    pub jitter: Duration,
    /// Probability a packet is delivered twice.
    pub duplicate: f64,
    /// Probability a packet is held back an extra `2 × jitter + 1 ms`, so later ones overtake it.
    pub reorder: f64,
}

impl LinkConditions {
    /// A perfect link: no loss, no delay.
    pub fn perfect() -> Self {
        Self::default()
    }

    /// The conformance profile: 10% loss, 50 ± 20 ms, 1% duplicated, 1% reordered.
    pub fn lossy() -> Self {
        Self {
            loss: 0.10,
            latency: Duration::from_millis(50),
            jitter: Duration::from_millis(20),
            duplicate: 0.01,
            reorder: 0.01,
        }
    }
}

/// Counters of what the link did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets offered.
    pub sent: u64,
    /// Dropped.
    pub dropped: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Held back to be overtaken.
    pub reordered: u64,
}

/// One direction of a conditioned link.
#[derive(Debug)]
pub struct Link<T> {
    conditions: LinkConditions,
    rng: StdRng,
    queue: BinaryHeap<(Reverse<Instant>, Reverse<u64>, Packet<T>)>,
    seq: u64,
    stats: LinkStats,
}

/// A packet in flight; ordering is by delivery time, then by send order.
#[derive(Debug)]
struct Packet<T>(T);

impl<T> PartialEq for Packet<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Packet<T> {}
impl<T> PartialOrd for Packet<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Packet<T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<T: Clone> Link<T> {
    /// A link with `conditions`, its randomness seeded by `seed`.
    pub fn new(conditions: LinkConditions, seed: u64) -> Self {
        Self {
            conditions,
            rng: StdRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            stats: LinkStats::default(),
        }
    }

    /// Offers a packet sent at `now`.
    pub fn push(&mut self, now: Instant, packet: T) {
        self.stats.sent += 1;
        if self.rng.gen_bool(self.conditions.loss.clamp(0.0, 1.0)) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.gen_bool(self.conditions.duplicate.clamp(0.0, 1.0)) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.delay();
            self.seq += 1;
            self.queue.push((Reverse(now + delay), Reverse(self.seq), Packet(packet.clone())));
        }
    }

    fn delay(&mut self) -> Duration {
        let LinkConditions { latency, jitter, reorder, .. } = self.conditions;
        let jitter_s = jitter.as_secs_f64();
        let offset = if jitter_s > 0.0 { self.rng.gen_range(-jitter_s..=jitter_s) } else { 0.0 };
        let mut delay = (latency.as_secs_f64() + offset).max(0.0);
        if self.rng.gen_bool(reorder.clamp(0.0, 1.0)) {
            self.stats.reordered += 1;
            delay += 2.0 * jitter_s + 0.001;
        }
        Duration::from_secs_f64(delay)
    }

    /// The next packet due by `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<T> {
        let (Reverse(due), _, _) = self.queue.peek()?;
        if *due > now {
            return None;
        }
        self.queue.pop().map(|(_, _, Packet(packet))| packet)
    }

    /// When the next packet is due.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|(Reverse(due), _, _)| *due)
    }

    /// What the link did so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_link_delivers_everything_in_order_at_once() {
        let now = Instant::now();
        let mut link = Link::new(LinkConditions::perfect(), 1);
        for packet in 0..100 {
            link.push(now, packet);
        }
        let delivered: Vec<i32> = std::iter::from_fn(|| link.poll(now)).collect();
        assert_eq!(delivered, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_lossy_link_drops_delays_and_duplicates_about_as_configured() {
        let start = Instant::now();
        let mut link = Link::new(LinkConditions::lossy(), 7);
        for packet in 0..10_000 {
            link.push(start, packet);
        }
        assert!(link.poll(start + Duration::from_millis(29)).is_none(), "nothing arrives before 30 ms");
        let delivered: Vec<i32> = std::iter::from_fn(|| link.poll(start + Duration::from_secs(1))).collect();
        let stats = link.stats();
        assert!((800..1200).contains(&stats.dropped), "about 10% lost: {stats:?}");
        assert!(stats.duplicated > 50 && stats.reordered > 50, "{stats:?}");
        assert_eq!(delivered.len() as u64, stats.sent - stats.dropped + stats.duplicated);
        assert!(delivered.windows(2).any(|pair| pair[0] > pair[1]), "jitter reorders packets");
    }
}
