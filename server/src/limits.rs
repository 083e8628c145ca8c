//! Per-connection limits, the same on every transport: what a client may
//! send before it is throttled and then disconnected.
//!
//! [`DatagramGate`] is governor's GCRA limiter on a clock the caller sets,
//! so the check takes `now` like every other sans-IO piece and runs the same
//! under tokio's paused clock, the stepper and real time.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use rally_protocol::MAX_DATAGRAM;

/// Per-connection limits enforced in each transport's connection task.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Sustained input datagrams per second allowed.
    pub datagrams_per_second: u32,
    /// Datagrams allowed in a burst above the sustained rate.
    pub datagram_burst: u32,
    /// Datagrams refused by the rate limit before the client is disconnected.
    pub max_rate_violations: u32,
    /// A connection silent this long is closed.
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

impl ConnectionLimits {
    /// The message a client disconnected for flooding is sent.
    pub(crate) fn flood_message(&self) -> String {
        format!("over {} datagrams per second", self.datagrams_per_second)
    }
}

/// What to do with one received game datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Hand it to the shard.
    Pass,
    /// Larger than any datagram of the protocol: drop it.
    Oversized,
    /// Over the rate: drop it.
    Throttled,
    /// Over the rate too often: drop it and disconnect the client.
    Disconnect,
}

/// One connection's datagram limits.
#[derive(Debug)]
pub(crate) struct DatagramGate {
    limiter: RateLimiter<NotKeyed, InMemoryState, FakeRelativeClock, NoOpMiddleware<Nanos>>,
    clock: FakeRelativeClock,
    origin: Instant,
    elapsed: Duration,
    violations: u32,
    max_violations: u32,
}

impl DatagramGate {
    pub(crate) fn new(limits: &ConnectionLimits, now: Instant) -> Self {
        let per_second = NonZeroU32::new(limits.datagrams_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.datagram_burst).unwrap_or(NonZeroU32::MIN);
        let clock = FakeRelativeClock::default();
        Self {
            limiter: RateLimiter::direct_with_clock(Quota::per_second(per_second).allow_burst(burst), clock.clone()),
            clock,
            origin: now,
            elapsed: Duration::ZERO,
            violations: 0,
            max_violations: limits.max_rate_violations,
        }
    }

    /// Checks a datagram of `len` bytes received at `now`.
    pub(crate) fn admit(&mut self, now: Instant, len: usize) -> Admit {
        if len > MAX_DATAGRAM {
            return Admit::Oversized;
        }
        let elapsed = now.saturating_duration_since(self.origin);
        if elapsed > self.elapsed {
            self.clock.advance(elapsed - self.elapsed);
            self.elapsed = elapsed;
        }
        if self.limiter.check().is_ok() {
            return Admit::Pass;
        }
        self.violations += 1;
        if self.violations > self.max_violations { Admit::Disconnect } else { Admit::Throttled }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_client_passes_and_a_flood_is_throttled_then_cut() {
        let limits = ConnectionLimits {
            datagrams_per_second: 100,
            datagram_burst: 10,
            max_rate_violations: 5,
            ..Default::default()
        };
        let start = Instant::now();
        let mut gate = DatagramGate::new(&limits, start);
        for idx in 0..1_000u32 {
            let now = start + Duration::from_millis(u64::from(idx) * 10);
            assert_eq!(gate.admit(now, 20), Admit::Pass, "datagram {idx} at the allowed rate");
        }
        assert_eq!(gate.admit(start, MAX_DATAGRAM + 1), Admit::Oversized);
        let flood = start + Duration::from_secs(20);
        let verdicts: Vec<Admit> = (0..20).map(|_| gate.admit(flood, 20)).collect();
        assert_eq!(verdicts.iter().filter(|verdict| **verdict == Admit::Pass).count(), 10, "the burst: {verdicts:?}");
        assert_eq!(verdicts.iter().filter(|verdict| **verdict == Admit::Throttled).count(), 5, "{verdicts:?}");
        assert_eq!(verdicts.last(), Some(&Admit::Disconnect));
    }
}
