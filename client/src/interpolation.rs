//! Rendering remote state in the recent past, between two received snapshots.
//!
//! Fields with a prediction link in the schema (positions with a velocity) are
//! continuous and are interpolated linearly; every other field (phase, scores,
//! velocities) steps: it takes the older snapshot's value until the newer one
//! is reached. This rule comes from the schema alone, so it works for any game.
//!
//! For Pong the ball is interpolated, not extrapolated: it turns at every
//! paddle hit, and a paddle hit depends on the remote player's input, which the
//! client cannot know. Extrapolation would draw the ball through the opponent's
//! paddle and snap it back; interpolation is always right, about two snapshot
//! intervals late. The player's own paddle is predicted instead (see
//! [`crate::prediction`]), so their controls feel immediate.

use std::collections::VecDeque;

use rally_protocol::{Schema, Snapshot, Tick};

/// Snapshots kept for interpolation.
const CAPACITY: usize = 64;

/// A buffer of received snapshots sampled at a fractional render tick.
#[derive(Debug, Clone)]
pub struct Interpolator {
    continuous: Vec<bool>,
    snapshots: VecDeque<Snapshot>,
}

impl Interpolator {
    /// An empty buffer for views of `schema`.
    pub fn new(schema: &Schema) -> Self {
        Self {
            continuous: schema.fields().iter().map(|field| field.predict.is_some()).collect(),
            snapshots: VecDeque::new(),
        }
    }

    /// Adds a snapshot; out-of-order or duplicate ticks are ignored.
    pub fn push(&mut self, snapshot: &Snapshot) {
        if self.snapshots.back().is_some_and(|newest| newest.tick >= snapshot.tick) {
            return;
        }
        if self.snapshots.len() == CAPACITY {
            self.snapshots.pop_front();
        }
        self.snapshots.push_back(snapshot.clone());
    }

    /// Newest tick held.
    pub fn newest_tick(&self) -> Option<Tick> {
        self.snapshots.back().map(|snapshot| snapshot.tick)
    }

    /// The view at `render_tick`, clamped to the oldest and newest snapshots held.
    pub fn sample(&self, render_tick: f64, out: &mut Vec<f64>) -> bool {
        let (Some(oldest), Some(newest)) = (self.snapshots.front(), self.snapshots.back()) else { return false };
        out.clear();
        if render_tick <= f64::from(oldest.tick) {
            out.extend(oldest.values.iter().map(|&value| f64::from(value)));
            return true;
        }
        if render_tick >= f64::from(newest.tick) {
            out.extend(newest.values.iter().map(|&value| f64::from(value)));
            return true;
        }
        let after = self.snapshots.partition_point(|snapshot| f64::from(snapshot.tick) <= render_tick);
        let (from, to) = (&self.snapshots[after - 1], &self.snapshots[after]);
        let t = (render_tick - f64::from(from.tick)) / f64::from(to.tick - from.tick);
        for (idx, (&a, &b)) in from.values.iter().zip(&to.values).enumerate() {
            let value =
                if self.continuous[idx] { f64::from(a) + (f64::from(b) - f64::from(a)) * t } else { f64::from(a) };
            out.push(value);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rally_protocol::FieldSpec;

    #[test]
    fn continuous_fields_blend_and_discrete_fields_step() {
        let schema =
            Schema::new(vec![FieldSpec::signed("vx", 8), FieldSpec::unsigned("x", 13).predicted_by(0, 0)]).unwrap();
        let mut interpolator = Interpolator::new(&schema);
        interpolator.push(&Snapshot { tick: 10, values: vec![5, 100] });
        interpolator.push(&Snapshot { tick: 12, values: vec![7, 110] });
        interpolator.push(&Snapshot { tick: 11, values: vec![0, 0] });
        let mut out = Vec::new();
        assert!(interpolator.sample(11.0, &mut out));
        assert_eq!(out, [5.0, 105.0]);
        assert!(interpolator.sample(50.0, &mut out));
        assert_eq!(out, [7.0, 110.0]);
        assert!(interpolator.sample(0.0, &mut out));
        assert_eq!(out, [5.0, 100.0]);
    }
}
