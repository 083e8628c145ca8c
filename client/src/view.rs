//! What a game draws, built from the session's events: the local player's
//! predicted state and everyone else's state interpolated in the recent past.
//!
//! Feed every [`ClientEvent`] to [`GameView::handle_event`] (the session
//! reports the local inputs it stamped as [`ClientEvent::InputRecorded`]), then
//! read [`GameView::predicted`] for the local seat's fields and
//! [`GameView::interpolated`] for the rest, once per rendered frame.

use std::time::Instant;

use rally_protocol::control::Welcome;
use rally_protocol::{Input, Seat, Snapshot, Tick};

use crate::interpolation::Interpolator;
use crate::prediction::{Prediction, Predictor};
use crate::session::ClientEvent;

/// Default interpolation delay, in snapshot intervals: one lost snapshot still
/// leaves a pair to interpolate between.
pub const DEFAULT_DELAY_SNAPSHOTS: f64 = 2.0;

impl<P: Predictor + ?Sized> Predictor for Box<P> {
    fn step(&self, values: &mut [i32], seat: Seat, input: Input) {
        (**self).step(values, seat, input);
    }

    fn predicted_fields(&self) -> &[usize] {
        (**self).predicted_fields()
    }
}

/// Prediction, interpolation and a render clock for one seat.
pub struct GameView {
    prediction: Option<Prediction<Box<dyn Predictor>>>,
    interpolator: Interpolator,
    tick_seconds: f64,
    delay_ticks: f64,
    /// The newest snapshot's tick and when it arrived: the anchor of the render clock.
    anchor: Option<(Tick, Instant)>,
}

impl std::fmt::Debug for GameView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GameView")
            .field("predicting", &self.prediction.is_some())
            .field("delay_ticks", &self.delay_ticks)
            .field("anchor", &self.anchor)
            .finish_non_exhaustive()
    }
}

impl GameView {
    /// A view of the match `welcome` describes. Without a predictor the local
    /// seat is shown from snapshots like everyone else.
    pub fn new(welcome: &Welcome, predictor: Option<Box<dyn Predictor>>, delay_snapshots: f64) -> Self {
        let ticks_per_snapshot = f64::from(welcome.tick_rate_hz) / f64::from(welcome.snapshot_rate_hz.max(1));
        Self {
            prediction: predictor.map(|predictor| Prediction::new(predictor, welcome.seat)),
            interpolator: Interpolator::new(&welcome.schema),
            tick_seconds: 1.0 / f64::from(welcome.tick_rate_hz.max(1)),
            delay_ticks: delay_snapshots * ticks_per_snapshot,
            anchor: None,
        }
    }

    /// Takes one session event; events other than snapshots and inputs are ignored.
    pub fn handle_event(&mut self, now: Instant, event: &ClientEvent) {
        match event {
            ClientEvent::Snapshot(snapshot) => {
                self.interpolator.push(snapshot);
                if let Some(prediction) = &mut self.prediction {
                    prediction.reconcile(snapshot);
                }
                // Keep the render clock on the earliest-arriving estimate: a late
                // snapshot must not drag the timeline back.
                let estimate_now = |(tick, at): (Tick, Instant)| {
                    f64::from(tick) + now.saturating_duration_since(at).as_secs_f64() / self.tick_seconds
                };
                let stale = self.anchor.is_none_or(|anchor| f64::from(snapshot.tick) >= estimate_now(anchor));
                if stale {
                    self.anchor = Some((snapshot.tick, now));
                }
            }
            ClientEvent::InputRecorded { tick, input } => {
                if let Some(prediction) = &mut self.prediction {
                    prediction.push_input(*tick, *input);
                }
            }
            _ => {}
        }
    }

    /// The local seat's predicted view at the newest input tick.
    pub fn predicted(&self) -> Option<&Snapshot> {
        self.prediction.as_ref().and_then(Prediction::predicted)
    }

    /// The server tick being rendered at `now`: the estimated current server
    /// tick minus the interpolation delay.
    pub fn render_tick(&self, now: Instant) -> Option<f64> {
        let (tick, at) = self.anchor?;
        let server_tick = f64::from(tick) + now.saturating_duration_since(at).as_secs_f64() / self.tick_seconds;
        Some(server_tick - self.delay_ticks)
    }

    /// Every field interpolated at the render tick; false before the first snapshot.
    pub fn interpolated(&self, now: Instant, out: &mut Vec<f64>) -> bool {
        match self.render_tick(now) {
            Some(render_tick) => self.interpolator.sample(render_tick, out),
            None => false,
        }
    }

    /// Snapshots that disagreed with what had been predicted for their tick, and snapshots checked.
    pub fn mispredictions(&self) -> (u64, u64) {
        self.prediction.as_ref().map_or((0, 0), |prediction| (prediction.mispredictions(), prediction.checks()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rally_protocol::{FieldSpec, MatchId, PlayerId, Schema};
    use std::time::Duration;

    struct Mover;

    impl Predictor for Mover {
        fn step(&self, values: &mut [i32], _seat: Seat, input: Input) {
            values[1] += i32::from(input);
        }

        fn predicted_fields(&self) -> &[usize] {
            &[1]
        }
    }

    fn welcome() -> Welcome {
        Welcome {
            game: "test".into(),
            match_id: MatchId(1),
            player_id: PlayerId(1),
            seat: 0,
            n_seats: 2,
            points_to_win: 1,
            tick_rate_hz: 60,
            snapshot_rate_hz: 30,
            server_tick: 0,
            schema: Schema::new(vec![
                FieldSpec::unsigned("x", 13).predicted_by(2, 0),
                FieldSpec::unsigned("me", 13),
                FieldSpec::signed("vx", 8),
            ])
            .unwrap(),
            resume_secret: [0; 32],
            resume_grace_ms: 0,
        }
    }

    #[test]
    fn remote_state_is_drawn_in_the_past_and_local_state_ahead() {
        let start = Instant::now();
        let mut view = GameView::new(&welcome(), Some(Box::new(Mover)), DEFAULT_DELAY_SNAPSHOTS);
        for tick in 1..=4 {
            view.handle_event(start, &ClientEvent::InputRecorded { tick, input: 1 });
        }
        view.handle_event(start, &ClientEvent::Snapshot(Snapshot { tick: 10, values: vec![100, 50, 5] }));
        let later = start + Duration::from_millis(1000 / 30);
        view.handle_event(later, &ClientEvent::Snapshot(Snapshot { tick: 12, values: vec![110, 50, 5] }));
        view.handle_event(later, &ClientEvent::InputRecorded { tick: 14, input: 2 });
        // Predicted: the authoritative 50 at tick 12, then inputs for 13 (repeat of 1) and 14 (2).
        assert_eq!(view.predicted().unwrap().values[1], 53);
        // Rendered 4 ticks (two snapshot intervals) behind the newest snapshot: clamped to the oldest.
        let mut out = Vec::new();
        assert!(view.interpolated(later, &mut out));
        assert_eq!(out[0], 100.0);
        // One tick later the render tick is 9 → still the oldest; three ticks later it is 11 → halfway.
        let three_ticks = later + Duration::from_secs_f64(3.0 / 60.0);
        assert!((view.render_tick(three_ticks).unwrap() - 11.0).abs() < 1e-6);
        assert!(view.interpolated(three_ticks, &mut out));
        assert!((out[0] - 105.0).abs() < 1e-6);
    }
}
