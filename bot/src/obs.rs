//! The observation/action spec: what a policy sees of a Pong view and what it answers.
//!
//! **Observation spec v1** ([`OBS_SPEC_VERSION`]), [`OBS_DIM`] = 6 `f32`s, always from
//! the bot's own point of view: the frame is mirrored so that the bot defends the
//! left goal (`x = 0`) whichever seat it holds. Positions are in wire units (the field
//! is 8192 × 6144) scaled to `[-1, 1]`, velocities in wire units per tick divided by
//! the top ball speed (256):
//!
//! | index | feature | formula (mirrored frame) |
//! | --- | --- | --- |
//! | 0 | ball x | `2 x / 8192 - 1` |
//! | 1 | ball y | `2 y / 6144 - 1` |
//! | 2 | ball vx | `vx / 256` (negative: coming at the bot) |
//! | 3 | ball vy | `vy / 256` |
//! | 4 | own paddle y | `2 y / 6144 - 1` |
//! | 5 | opponent paddle y | `2 y / 6144 - 1` |
//!
//! **Action spec v1**: [`N_ACTIONS`] = 3 scores (logits), one per [`Action`] in the
//! order stop, up, down; the bot plays the arg-max. A model carries its spec version
//! in its ONNX metadata (`rally.obs_spec = "1"`), takes one input of shape
//! `[batch, 6]` (`f32`) and gives one output of shape `[batch, 3]` (`f32`); a model
//! that differs is refused (see [`crate::onnx`]).
//!
//! Only two-seat matches are observed in v1 (a doubles view has four paddles).

use rally_protocol::{Input, Schema, Seat, Snapshot};
use rally_sim::pong::geometry::{
    BALL_HALF, BALL_MAX_Y, BALL_MIN_Y, FIELD_HEIGHT, FIELD_WIDTH, MAX_SPEED, PADDLE_HALF_HEIGHT, PADDLE_HALF_WIDTH,
    PADDLE_MAX_Y, PADDLE_MIN_Y, PADDLE_SPEED, WIRE_SHIFT, paddle_x,
};
use rally_sim::pong::{INPUT_DOWN, INPUT_STOP, INPUT_UP};

use crate::error::BotError;

/// The version of the observation/action spec this build speaks.
pub const OBS_SPEC_VERSION: u32 = 1;
/// The metadata key under which a model states its spec version.
pub const OBS_SPEC_KEY: &str = "rally.obs_spec";
/// Floats per observation.
pub const OBS_DIM: usize = 6;
/// Scores per decision.
pub const N_ACTIONS: usize = 3;

/// One bot's observation, laid out as in the module docs.
pub type Observation = [f32; OBS_DIM];

/// Field width in wire units.
pub const WIDTH_WIRE: f32 = (FIELD_WIDTH >> WIRE_SHIFT) as f32;
/// Field height in wire units.
pub const HEIGHT_WIRE: f32 = (FIELD_HEIGHT >> WIRE_SHIFT) as f32;
/// Top ball speed in wire units per tick: the velocity scale.
pub const SPEED_WIRE: f32 = (MAX_SPEED >> WIRE_SHIFT) as f32;

/// Geometry of the mirrored frame in wire units, for the scripted policies.
pub mod wire {
    use super::*;

    /// The ball's centre x when it touches the bot's paddle face.
    pub const CONTACT_X: f32 = ((paddle_x(0) + PADDLE_HALF_WIDTH + BALL_HALF) >> WIRE_SHIFT) as f32;
    /// The ball's centre x when it touches the opponent's paddle face.
    pub const OPP_CONTACT_X: f32 = WIDTH_WIRE - CONTACT_X;
    /// Vertical distance between paddle and ball centres at which they still touch.
    pub const REACH: f32 = ((PADDLE_HALF_HEIGHT + BALL_HALF) >> WIRE_SHIFT) as f32;
    /// Lowest and highest ball centre y.
    pub const BALL_Y: (f32, f32) = ((BALL_MIN_Y >> WIRE_SHIFT) as f32, (BALL_MAX_Y >> WIRE_SHIFT) as f32);
    /// Lowest and highest paddle centre y.
    pub const PADDLE_Y: (f32, f32) = ((PADDLE_MIN_Y >> WIRE_SHIFT) as f32, (PADDLE_MAX_Y >> WIRE_SHIFT) as f32);
    /// Paddle speed per tick.
    pub const PADDLE_STEP: f32 = (PADDLE_SPEED >> WIRE_SHIFT) as f32;
}

/// A decision: what the paddle does until the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Action {
    /// Hold still.
    #[default]
    Stop = 0,
    /// Move toward y = 0.
    Up = 1,
    /// Move toward larger y.
    Down = 2,
}

impl Action {
    /// Every action, in score order.
    pub const ALL: [Action; N_ACTIONS] = [Action::Stop, Action::Up, Action::Down];

    /// The action of score index `idx` (out-of-range indices hold still).
    pub fn from_index(idx: usize) -> Self {
        Self::ALL.get(idx).copied().unwrap_or(Self::Stop)
    }

    /// The arg-max of `scores` (first on ties; NaN never wins).
    pub fn argmax(scores: &[f32]) -> Self {
        let mut best = (0, f32::NEG_INFINITY);
        for (idx, &score) in scores.iter().enumerate().take(N_ACTIONS) {
            if score > best.1 {
                best = (idx, score);
            }
        }
        Self::from_index(best.0)
    }

    /// The input byte the shard expects.
    pub fn input(self) -> Input {
        match self {
            Self::Stop => INPUT_STOP,
            Self::Up => INPUT_UP,
            Self::Down => INPUT_DOWN,
        }
    }
}

/// Turns one seat's views into observations.
#[derive(Clone, Copy, Debug)]
pub struct ObsEncoder {
    ball_x: usize,
    ball_y: usize,
    ball_vx: usize,
    ball_vy: usize,
    own_y: usize,
    opp_y: usize,
    mirrored: bool,
}

impl ObsEncoder {
    /// An encoder for `seat` of a two-seat match whose views follow `schema`.
    pub fn new(schema: &Schema, seat: Seat, n_seats: u8) -> Result<Self, BotError> {
        if n_seats != 2 || seat > 1 {
            return Err(BotError::Schema(format!(
                "observation spec v{OBS_SPEC_VERSION} covers seat 0 or 1 of two-seat matches, not seat {seat} of {n_seats}"
            )));
        }
        let find = |name: &str| {
            schema.index_of(name).ok_or_else(|| BotError::Schema(format!("the view has no field {name:?}")))
        };
        Ok(Self {
            ball_x: find("ball_x")?,
            ball_y: find("ball_y")?,
            ball_vx: find("ball_vx")?,
            ball_vy: find("ball_vy")?,
            own_y: find(&format!("paddle_y_{seat}"))?,
            opp_y: find(&format!("paddle_y_{}", 1 - seat))?,
            mirrored: seat == 1,
        })
    }

    /// The observation of `view`; `None` if the view is shorter than its schema.
    pub fn encode(&self, view: &Snapshot) -> Option<Observation> {
        let get = |idx: usize| view.values.get(idx).map(|&value| value as f32);
        let (mut x, y) = (get(self.ball_x)?, get(self.ball_y)?);
        let (mut vx, vy) = (get(self.ball_vx)?, get(self.ball_vy)?);
        if self.mirrored {
            x = WIDTH_WIRE - x;
            vx = -vx;
        }
        Some(normalize(x, y, vx, vy, get(self.own_y)?, get(self.opp_y)?))
    }
}

/// Builds an observation from mirrored-frame wire quantities.
pub fn normalize(x: f32, y: f32, vx: f32, vy: f32, own_y: f32, opp_y: f32) -> Observation {
    [
        2.0 * x / WIDTH_WIRE - 1.0,
        2.0 * y / HEIGHT_WIRE - 1.0,
        vx / SPEED_WIRE,
        vy / SPEED_WIRE,
        2.0 * own_y / HEIGHT_WIRE - 1.0,
        2.0 * opp_y / HEIGHT_WIRE - 1.0,
    ]
}

/// The mirrored-frame wire quantities of an observation: the inverse of [`normalize`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WireState {
    /// Ball centre x.
    pub x: f32,
    /// Ball centre y.
    pub y: f32,
    /// Ball x velocity (negative: incoming).
    pub vx: f32,
    /// Ball y velocity.
    pub vy: f32,
    /// Own paddle centre y.
    pub own_y: f32,
    /// Opponent paddle centre y.
    pub opp_y: f32,
}

impl WireState {
    /// Decodes an observation.
    pub fn of(obs: &Observation) -> Self {
        let pos = |v: f32, size: f32| (v + 1.0) * size / 2.0;
        Self {
            x: pos(obs[0], WIDTH_WIRE),
            y: pos(obs[1], HEIGHT_WIRE),
            vx: obs[2] * SPEED_WIRE,
            vy: obs[3] * SPEED_WIRE,
            own_y: pos(obs[4], HEIGHT_WIRE),
            opp_y: pos(obs[5], HEIGHT_WIRE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rally_sim::{Game, PongWorld};

    #[test]
    fn both_seats_see_the_same_situation_mirrored() {
        let schema = PongWorld::schema(2);
        let mut values = vec![0; schema.len()];
        let set = |values: &mut Vec<i32>, name: &str, value: i32| values[schema.index_of(name).unwrap()] = value;
        set(&mut values, "ball_x", 2000);
        set(&mut values, "ball_y", 1000);
        set(&mut values, "ball_vx", -64);
        set(&mut values, "ball_vy", 12);
        set(&mut values, "paddle_y_0", 3072);
        set(&mut values, "paddle_y_1", 500);
        let view = Snapshot { tick: 1, values };
        let left = ObsEncoder::new(&schema, 0, 2).unwrap().encode(&view).unwrap();
        let right = ObsEncoder::new(&schema, 1, 2).unwrap().encode(&view).unwrap();
        assert!(left[2] < 0.0, "the ball flies at seat 0");
        assert!(right[2] > 0.0, "and away from seat 1");
        assert!((left[0] + right[0]).abs() < 1e-6, "x is mirrored");
        assert_eq!((left[1], left[3]), (right[1], right[3]), "y is not");
        assert_eq!((left[4], left[5]), (right[5], right[4]), "own and opponent swap");
        let state = WireState::of(&left);
        assert!((state.x - 2000.0).abs() < 1e-3 && (state.opp_y - 500.0).abs() < 1e-3);
    }

    #[test]
    fn doubles_and_missing_fields_are_refused() {
        assert!(ObsEncoder::new(&PongWorld::schema(4), 0, 4).is_err());
        let schema = Schema::new(vec![rally_protocol::FieldSpec::unsigned("ball_x", 13)]).unwrap();
        let err = ObsEncoder::new(&schema, 0, 2).unwrap_err();
        assert!(err.to_string().contains("ball_y"), "{err}");
    }

    #[test]
    fn argmax_ignores_nan_and_picks_the_first_best() {
        assert_eq!(Action::argmax(&[0.0, 2.0, 2.0]), Action::Up);
        assert_eq!(Action::argmax(&[f32::NAN, f32::NAN, 1.0]), Action::Down);
        assert_eq!(Action::argmax(&[f32::NAN; 3]), Action::Stop);
    }
}
