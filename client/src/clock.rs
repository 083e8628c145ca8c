//! The client's tick timeline: which server tick an input sent now should be
//! stamped with so that it arrives just before the shard simulates that tick.
//!
//! The shard reports in every snapshot how far ahead of its simulation the
//! client's newest input arrived (`input_lead`). What matters is the *worst*
//! recent lead: every input must arrive before its tick, whatever the jitter
//! and wherever it falls in the send interval. So the clock keeps the leads of
//! the last second and steers their minimum to a small target: far enough
//! ahead to absorb jitter, close enough to add little latency. When it moves
//! its offset it shifts the remembered leads by the same amount, so a
//! correction is not applied again while old reports drain out of the window.
//! Large errors (a stall, a route change) are corrected in one jump.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Correction applied per snapshot, as a fraction of the lead error.
const GAIN: f64 = 0.1;
/// Lead reports remembered (one second at 30 snapshots per second).
const WINDOW: usize = 30;
/// Errors larger than this many ticks are corrected at once.
const JUMP_TICKS: f64 = 8.0;

/// Maps wall-clock instants to (fractional) input ticks.
#[derive(Debug, Clone)]
pub struct TickClock {
    tick: Duration,
    anchor_time: Instant,
    anchor_tick: f64,
    target_lead: f64,
    leads: VecDeque<f64>,
}

impl TickClock {
    /// A clock that, at `now`, stands `initial_lead` ticks ahead of `server_tick`.
    pub fn new(now: Instant, server_tick: u32, tick_rate_hz: u16, initial_lead: f64, target_lead: f64) -> Self {
        Self {
            tick: Duration::from_secs_f64(1.0 / f64::from(tick_rate_hz.max(1))),
            anchor_time: now,
            anchor_tick: f64::from(server_tick) + initial_lead,
            target_lead,
            leads: VecDeque::with_capacity(WINDOW),
        }
    }

    /// Duration of one tick.
    pub fn tick_duration(&self) -> Duration {
        self.tick
    }

    /// The fractional input tick at `now`.
    pub fn input_tick_f(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.anchor_time).as_secs_f64();
        self.anchor_tick + elapsed / self.tick.as_secs_f64()
    }

    /// The input tick at `now` (the tick an input made now is for).
    pub fn input_tick(&self, now: Instant) -> u32 {
        self.input_tick_f(now).max(0.0) as u32
    }

    /// The instant the input tick becomes `tick`.
    pub fn instant_of(&self, tick: u32) -> Instant {
        let ahead = f64::from(tick) - self.anchor_tick;
        if ahead <= 0.0 { self.anchor_time } else { self.anchor_time + self.tick.mul_f64(ahead) }
    }

    /// Feeds the shard's measured input lead (ticks) from a snapshot; steers
    /// the smallest lead of the last second toward the target.
    pub fn observe_lead(&mut self, now: Instant, input_lead: i32) {
        if self.leads.len() == WINDOW {
            self.leads.pop_front();
        }
        self.leads.push_back(f64::from(input_lead));
        let worst = self.leads.iter().copied().fold(f64::INFINITY, f64::min);
        let error = self.target_lead - worst;
        let correction = if error.abs() > JUMP_TICKS { error } else { error * GAIN };
        self.anchor_tick = self.input_tick_f(now) + correction;
        self.anchor_time = now;
        for lead in &mut self.leads {
            *lead += correction;
        }
    }

    /// Changes the lead the clock steers toward (see [`loss_margin`]).
    pub fn set_target_lead(&mut self, target_lead: f64) {
        self.target_lead = target_lead;
    }

    /// The lead the clock steers toward.
    pub fn target_lead(&self) -> f64 {
        self.target_lead
    }

    /// The smallest input lead of the last second, after corrections.
    pub fn worst_lead(&self) -> Option<f64> {
        self.leads.iter().copied().reduce(f64::min)
    }
}

/// Extra lead, in send intervals, that keeps inputs on time under `loss`.
///
/// A lost input datagram's inputs arrive again in the next one, one send
/// interval later (every datagram repeats the last inputs). With `k` spare
/// intervals of lead an input misses its tick only if `k + 1` datagrams in a
/// row are lost, probability `loss^(k+1)`; this picks the smallest `k` (at most
/// 3) that makes it at most 1 in 1,000.
pub fn loss_margin(loss: f64) -> u32 {
    // The epsilon keeps exactly 10% loss (0.1³ = 0.001 in decimal) at 2, not 3.
    (0..3).find(|&k| loss.powi(k as i32 + 1) <= 0.001 + 1e-12).unwrap_or(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_advance_with_time_and_leads_steer_the_offset() {
        let start = Instant::now();
        let mut clock = TickClock::new(start, 100, 60, 3.0, 3.0);
        assert_eq!(clock.input_tick(start), 103);
        assert!((clock.input_tick_f(start + Duration::from_millis(500)) - 133.0).abs() < 1e-6);
        // Inputs arrive 1 tick ahead where 3 are wanted: move ahead, gently.
        clock.observe_lead(start, 1);
        assert!((clock.input_tick_f(start) - 103.2).abs() < 1e-9);
        // The window remembers the corrected lead, 1.2: the next report of 1
        // (sent before the correction took effect) moves the clock by 0.2 again.
        assert!((clock.worst_lead().unwrap() - 1.2).abs() < 1e-9);
        // Inputs arriving 30 ticks early once do not move the worst lead.
        clock.observe_lead(start, 33);
        assert!((clock.input_tick_f(start) - 103.38).abs() < 1e-9);
        assert_eq!(clock.instant_of(80), start, "past ticks map to the anchor");
        let later = clock.instant_of(110) - start;
        assert!((later.as_secs_f64() - (110.0 - 103.38) / 60.0).abs() < 1e-6);
    }

    #[test]
    fn loss_margins_grow_with_loss() {
        assert_eq!(loss_margin(0.0), 0);
        assert_eq!(loss_margin(0.001), 0);
        assert_eq!(loss_margin(0.02), 1);
        assert_eq!(loss_margin(0.10), 2);
        assert_eq!(loss_margin(0.5), 3);
    }
}
