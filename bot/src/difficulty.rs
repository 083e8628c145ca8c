//! The difficulty knob: human-like weaknesses in front of any policy.
//!
//! A [`Handicap`] sits between a bot's views and its policy. It delays what the
//! policy sees by [`Difficulty::reaction_views`] snapshots (a reaction time), and it
//! misjudges where its own paddle is by an aim error drawn afresh for every incoming
//! ball, up to [`Difficulty::aim_error`] of the paddle's reach (so the ball meets the
//! paddle off-centre, or misses it). Both act on observations only, so the same knob
//! weakens the tracker, the predictor and the ONNX model alike. Its randomness comes
//! from a seeded generator: a handicapped bot is as reproducible as its inputs.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::obs::{HEIGHT_WIRE, Observation, wire};

/// How weak a bot plays on purpose.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Difficulty {
    /// Snapshots of delay between a view arriving and the policy seeing it (at 30
    /// snapshots per second, 1 is 33 ms).
    pub reaction_views: u32,
    /// Largest aim error, as a fraction of the paddle's reach (paddle half-height plus
    /// ball half-size); above 1 the bot sometimes misses a ball it reached.
    pub aim_error: f32,
}

impl Difficulty {
    /// No handicap: the policy sees every view at once and knows where its paddle is.
    pub const PERFECT: Self = Self { reaction_views: 0, aim_error: 0.0 };
    /// Hard: one snapshot (33 ms) late, small aim error.
    pub const HARD: Self = Self { reaction_views: 1, aim_error: 0.3 };
    /// Medium, the default: two snapshots (67 ms) late, aim error up to half the reach.
    pub const MEDIUM: Self = Self { reaction_views: 2, aim_error: 0.5 };
    /// Easy: 133 ms late, aim error up to the whole reach (it misses now and then).
    pub const EASY: Self = Self { reaction_views: 4, aim_error: 1.0 };

    /// A preset by name (`perfect`, `hard`, `medium`, `easy`).
    pub fn preset(name: &str) -> Option<Self> {
        Some(match name {
            "perfect" => Self::PERFECT,
            "hard" => Self::HARD,
            "medium" => Self::MEDIUM,
            "easy" => Self::EASY,
            _ => return None,
        })
    }
}

impl Default for Difficulty {
    fn default() -> Self {
        Self::MEDIUM
    }
}

/// One bot's handicap state.
#[derive(Debug, Clone)]
pub struct Handicap {
    difficulty: Difficulty,
    delayed: VecDeque<Observation>,
    rng: StdRng,
    /// The current aim error in observation units (normalized y).
    offset: f32,
    /// Whether the ball was coming at the bot in the last observation.
    incoming: bool,
}

impl Handicap {
    /// A handicap at `difficulty`, its aim errors drawn from `seed`.
    pub fn new(difficulty: Difficulty, seed: u64) -> Self {
        Self {
            difficulty,
            delayed: VecDeque::with_capacity(difficulty.reaction_views as usize + 1),
            rng: StdRng::seed_from_u64(seed),
            offset: 0.0,
            incoming: false,
        }
    }

    /// Takes the newest observation and returns what the policy should see now.
    pub fn observe(&mut self, obs: Observation) -> Observation {
        self.delayed.push_back(obs);
        let mut seen = if self.delayed.len() > self.difficulty.reaction_views as usize {
            self.delayed.pop_front().unwrap_or(obs)
        } else {
            // Before the first view has aged enough, the policy sees the oldest one.
            self.delayed.front().copied().unwrap_or(obs)
        };
        let incoming = seen[2] < 0.0;
        if incoming && !self.incoming && self.difficulty.aim_error > 0.0 {
            let max = self.difficulty.aim_error * wire::REACH;
            self.offset = 2.0 * self.rng.gen_range(-max..=max) / HEIGHT_WIRE;
        }
        self.incoming = incoming;
        seen[4] += self.offset;
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(tag: f32, vx: f32) -> Observation {
        [tag, 0.0, vx, 0.0, 0.0, 0.0]
    }

    #[test]
    fn views_arrive_late_by_the_reaction_time() {
        let mut handicap = Handicap::new(Difficulty { reaction_views: 2, aim_error: 0.0 }, 1);
        let seen: Vec<f32> = (0..5).map(|tag| handicap.observe(obs(tag as f32, 0.1))[0]).collect();
        assert_eq!(seen, vec![0.0, 0.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn the_aim_error_is_fixed_per_incoming_ball_and_bounded() {
        let mut handicap = Handicap::new(Difficulty { reaction_views: 0, aim_error: 1.0 }, 7);
        let bound = 2.0 * wire::REACH / HEIGHT_WIRE + 1e-6;
        let mut offsets = Vec::new();
        for _ in 0..20 {
            let first = handicap.observe(obs(0.0, -0.2))[4];
            assert_eq!(handicap.observe(obs(0.0, -0.2))[4], first, "one error per ball");
            assert!(first.abs() <= bound);
            offsets.push(first);
            handicap.observe(obs(0.0, 0.2));
        }
        offsets.dedup();
        assert!(offsets.len() > 10, "a fresh error for each ball: {offsets:?}");
        let mut perfect = Handicap::new(Difficulty::PERFECT, 7);
        assert_eq!(perfect.observe(obs(3.0, -0.2)), obs(3.0, -0.2));
    }
}
