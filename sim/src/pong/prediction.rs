//! Client-side prediction of a seat's own paddle, in wire units.
//!
//! A client knows its own input a round trip before the shard's snapshot shows what it
//! did. [`PaddlePredictor`] applies one tick of that input to a view exactly as
//! `move_paddles` applies it to the world, so a client can draw its paddle where the
//! shard will put it. Exact, not approximate, because every paddle quantity is a whole
//! number of wire units (see [`geometry`](super::geometry)): `y >> WIRE_SHIFT` moves by
//! exactly `PADDLE_SPEED >> WIRE_SHIFT` and clamps at exactly the shifted limits.
//!
//! The predictor reads the view's `phase` because paddles move in every phase but
//! `Finished`. Two things it cannot know, and that the snapshot after them corrects:
//! - the shard repeats a seat's previous input for a tick whose input arrived late or
//!   not at all, while the client predicted the input it sent;
//! - a match that ends by forfeit or abandonment freezes its paddles on the tick it
//!   ends, which depends on other seats' connections.
//!
//! It depends on nothing of the client: the client SDK's `Predictor` trait is
//! game-agnostic, and a game client adapts this type to it in a few lines.

use rally_protocol::{Input, Schema, Seat};

use super::geometry::{PADDLE_MAX_Y, PADDLE_MIN_Y, PADDLE_SPEED, WIRE_SHIFT};
use super::{INPUT_DOWN, INPUT_UP};
use crate::game::Phase;

/// The paddle's speed in wire units per tick.
const SPEED_WIRE: i32 = PADDLE_SPEED >> WIRE_SHIFT;
/// The paddle centre's lowest wire y.
const MIN_Y_WIRE: i32 = PADDLE_MIN_Y >> WIRE_SHIFT;
/// The paddle centre's highest wire y.
const MAX_Y_WIRE: i32 = PADDLE_MAX_Y >> WIRE_SHIFT;

/// Why a predictor could not be built for a schema and seat.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PredictorError {
    /// The schema has no field of this name (not a Pong schema, or no such seat in it).
    #[error("the view has no field {0:?}")]
    MissingField(String),
}

/// Predicts one seat's paddle (`paddle_y_<seat>` and `paddle_vy_<seat>`) from its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaddlePredictor {
    phase: usize,
    paddle_y: usize,
    paddle_vy: usize,
}

impl PaddlePredictor {
    /// A predictor for `seat`'s paddle in views of `schema`.
    pub fn new(schema: &Schema, seat: Seat) -> Result<Self, PredictorError> {
        let find = |name: &str| schema.index_of(name).ok_or_else(|| PredictorError::MissingField(name.to_owned()));
        Ok(Self {
            phase: find("phase")?,
            paddle_y: find(&format!("paddle_y_{seat}"))?,
            paddle_vy: find(&format!("paddle_vy_{seat}"))?,
        })
    }

    /// Applies one tick of the seat's `input` to `values`, a view in schema order taken
    /// after the previous tick. Only the two paddle fields change. A view too short for
    /// the schema (which a decoded snapshot never is) is left alone.
    pub fn step(&self, values: &mut [i32], input: Input) {
        let (Some(&phase), Some(&old), true) =
            (values.get(self.phase), values.get(self.paddle_y), self.paddle_vy < values.len())
        else {
            return;
        };
        // A finished match is frozen: `move_paddles` skips it and the velocity keeps
        // its last value.
        if phase == Phase::Finished as i32 {
            return;
        }
        let direction = match input {
            INPUT_UP => -1,
            INPUT_DOWN => 1,
            _ => 0,
        };
        let new = (old + direction * SPEED_WIRE).clamp(MIN_Y_WIRE, MAX_Y_WIRE);
        values[self.paddle_y] = new;
        values[self.paddle_vy] = new - old;
    }

    /// The fields this predictor writes: `[paddle_y_<seat>, paddle_vy_<seat>]`.
    pub fn fields(&self) -> [usize; 2] {
        [self.paddle_y, self.paddle_vy]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use rally_protocol::{MatchId, Snapshot};

    use super::*;
    use crate::game::{Game, LifecycleConfig, MatchSpec};
    use crate::pong::{INPUT_STOP, PongWorld};

    /// A short countdown and no forfeits, so that random play reaches every phase
    /// (waiting, countdown, play, finished) within a few hundred ticks.
    const TIMING: LifecycleConfig =
        LifecycleConfig { countdown_ticks: 8, forfeit_after_ticks: u32::MAX, fill_timeout_ticks: u32::MAX };

    /// How one seat plays: connects at `connect_at`, then holds each input of `runs`
    /// for its count of ticks, cycling through them.
    #[derive(Clone, Debug)]
    struct SeatPlay {
        connect_at: u32,
        runs: Vec<(Input, u32)>,
    }

    impl SeatPlay {
        fn input_at(&self, tick: u32) -> Input {
            let cycle: u32 = self.runs.iter().map(|&(_, count)| count).sum();
            let mut offset = tick % cycle.max(1);
            for &(input, count) in &self.runs {
                if offset < count {
                    return input;
                }
                offset -= count;
            }
            INPUT_STOP
        }
    }

    /// What a checked match went through.
    #[derive(Debug, Default)]
    struct Coverage {
        /// The phases the check stepped from.
        phases: BTreeSet<i32>,
        /// The wire heights the paddle took.
        heights: BTreeSet<i32>,
    }

    /// Plays a match of `plays.len()` seats for `ticks` steps and checks, every tick,
    /// that stepping `seat`'s predictor from the previous view gives exactly the
    /// paddle fields of the next one and leaves every other field alone.
    #[expect(clippy::unwrap_used, reason = "a test helper; the match and seats are valid by construction")]
    fn check_match(seat: Seat, seed: u64, points_to_win: u8, ticks: u32, plays: &[SeatPlay]) -> Coverage {
        let n_seats = plays.len() as u8;
        let match_id = MatchId(1);
        let mut world = PongWorld::new(TIMING);
        world.create_match(match_id, MatchSpec { n_seats, points_to_win, time_limit_ticks: 3600 }, seed).unwrap();
        let predictor = PaddlePredictor::new(&PongWorld::schema(n_seats), seat).unwrap();
        let [y_field, vy_field] = predictor.fields();
        let mut view = Snapshot::default();
        world.write_view(match_id, seat, &mut view).unwrap();
        let mut coverage = Coverage::default();
        for tick in 0..ticks {
            for (idx, play) in plays.iter().enumerate() {
                let idx = idx as Seat;
                if tick == play.connect_at {
                    world.set_seat_connected(match_id, idx, true).unwrap();
                }
                // Before connecting a seat has no client, but the world takes its input
                // anyway: that only makes the check stricter.
                world.set_input(match_id, idx, play.input_at(tick)).unwrap();
            }
            let mut predicted = view.values.clone();
            predictor.step(&mut predicted, plays[usize::from(seat)].input_at(tick));
            for (idx, (&after, &before)) in predicted.iter().zip(&view.values).enumerate() {
                if idx != y_field && idx != vy_field {
                    assert_eq!(after, before, "the predictor changed field {idx}");
                }
            }
            coverage.phases.insert(view.values[predictor.phase]);
            world.step();
            world.write_view(match_id, seat, &mut view).unwrap();
            assert_eq!(
                [predicted[y_field], predicted[vy_field]],
                [view.values[y_field], view.values[vy_field]],
                "paddle after tick {tick}, from phase {}",
                predicted[predictor.phase]
            );
            coverage.heights.insert(view.values[y_field]);
        }
        coverage
    }

    fn arb_play(max_connect: u32) -> impl Strategy<Value = SeatPlay> {
        // Mostly the three intents, sometimes a byte the game reads as stop; runs long
        // enough to pin the paddle against a wall.
        let input = prop_oneof![8 => 0u8..=2, 1 => any::<u8>()];
        (0..=max_connect, proptest::collection::vec((input, 1u32..=80), 1..12))
            .prop_map(|(connect_at, runs)| SeatPlay { connect_at, runs })
    }

    fn arb_match() -> impl Strategy<Value = (Seat, u64, u8, Vec<SeatPlay>)> {
        (any::<bool>(), any::<u64>(), 1u8..=3).prop_flat_map(|(four, seed, points)| {
            let n_seats: u8 = if four { 4 } else { 2 };
            (0..n_seats, Just(seed), Just(points), proptest::collection::vec(arb_play(30), usize::from(n_seats)))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn the_predicted_paddle_is_the_worlds((seat, seed, points, plays) in arb_match()) {
            check_match(seat, seed, points, 1500, &plays);
        }
    }

    #[test]
    fn the_check_covers_every_phase_and_both_walls() {
        let plays = [
            SeatPlay { connect_at: 12, runs: vec![(INPUT_UP, 35), (INPUT_STOP, 5), (INPUT_DOWN, 60), (7, 3)] },
            SeatPlay { connect_at: 3, runs: vec![(INPUT_DOWN, 40), (INPUT_UP, 25)] },
        ];
        let coverage = check_match(0, 5, 3, 2000, &plays);
        let all = [Phase::Waiting, Phase::Countdown, Phase::Playing, Phase::Finished];
        assert_eq!(coverage.phases, all.iter().map(|&phase| phase as i32).collect());
        assert_eq!(coverage.heights.first(), Some(&MIN_Y_WIRE));
        assert_eq!(coverage.heights.last(), Some(&MAX_Y_WIRE));
    }

    #[test]
    fn a_view_of_another_game_is_refused() {
        let schema = PongWorld::schema(2);
        assert_eq!(PaddlePredictor::new(&schema, 2), Err(PredictorError::MissingField("paddle_y_2".into())));
    }
}
