//! A scripted Pong player: reads a seat's view like a client would and returns an input.
//!
//! It only knows the view's schema by field names, so it plays through exactly the data
//! a remote client receives. It is the opponent of the ONNX bot's benchmark, the player
//! of the headless `rally sim` demo and the tests' stand-in for people. Its weaknesses
//! are knobs, and the only randomness in them comes from its own seeded generator, so a
//! match between autopilots is as reproducible as the simulation.

use rally_protocol::{Input, Schema, Seat, Snapshot};

use crate::pong::geometry::{BALL_MAX_Y, BALL_MIN_Y, FIELD_HEIGHT, PADDLE_HALF_WIDTH, WIRE_SHIFT, paddle_x, side_of};
use crate::pong::{INPUT_DOWN, INPUT_STOP, INPUT_UP};
use crate::rng::SplitMix64;

/// How well the autopilot plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutopilotConfig {
    /// The paddle holds still while the target is within this many wire units of its
    /// centre; a larger dead zone leaves more edge hits (and more misses).
    pub dead_zone: i32,
    /// It re-decides only every this many views (1 = every view), holding its input
    /// in between, like a player's reaction time.
    pub reaction_ticks: u32,
    /// Each decision aims off the target by a random amount in `-aim_error..=aim_error`
    /// wire units.
    pub aim_error: i32,
    /// Aim where the ball will cross the paddle's line (reflecting off the walls)
    /// rather than at the ball's current height.
    pub anticipate: bool,
}

impl Default for AutopilotConfig {
    /// A tracker that follows the ball's height every tick with a small dead zone.
    fn default() -> Self {
        Self { dead_zone: 16, reaction_ticks: 1, aim_error: 0, anticipate: false }
    }
}

/// The view fields the autopilot needs are missing from the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AutopilotError {
    /// The schema has no field of this name.
    #[error("the view has no field {0:?}")]
    MissingField(String),
}

#[derive(Clone, Copy, Debug)]
struct Fields {
    ball_x: usize,
    ball_y: usize,
    ball_vx: usize,
    ball_vy: usize,
    paddle_y: usize,
}

/// A scripted player for one seat.
#[derive(Clone, Debug)]
pub struct Autopilot {
    fields: Fields,
    config: AutopilotConfig,
    /// The side whose goal this seat defends: 0 wants the ball moving right.
    side: u8,
    /// The x of the paddle's face in wire units, where the ball is met.
    face_x: i64,
    rng: SplitMix64,
    held: Input,
    views_until_decision: u32,
}

impl Autopilot {
    /// An autopilot for `seat`, reading views of `schema`; `seed` drives its aim error.
    pub fn new(schema: &Schema, seat: Seat, config: AutopilotConfig, seed: u64) -> Result<Self, AutopilotError> {
        let find = |name: &str| schema.index_of(name).ok_or_else(|| AutopilotError::MissingField(name.to_owned()));
        let fields = Fields {
            ball_x: find("ball_x")?,
            ball_y: find("ball_y")?,
            ball_vx: find("ball_vx")?,
            ball_vy: find("ball_vy")?,
            paddle_y: find(&format!("paddle_y_{seat}"))?,
        };
        let side = side_of(seat);
        let face = if side == 0 { paddle_x(seat) + PADDLE_HALF_WIDTH } else { paddle_x(seat) - PADDLE_HALF_WIDTH };
        Ok(Self {
            fields,
            config,
            side,
            face_x: i64::from(face >> WIRE_SHIFT),
            rng: SplitMix64::new(seed),
            held: INPUT_STOP,
            views_until_decision: 0,
        })
    }

    /// The input for the tick after `view`. A view too short for the schema (which a
    /// decoded snapshot never is) makes it hold still.
    pub fn decide(&mut self, view: &Snapshot) -> Input {
        if self.views_until_decision > 0 {
            self.views_until_decision -= 1;
            return self.held;
        }
        self.views_until_decision = self.config.reaction_ticks.saturating_sub(1);
        let aim = self.rng.range_inclusive(-self.config.aim_error.abs(), self.config.aim_error.abs());
        self.held = self.choose(view, i64::from(aim)).unwrap_or(INPUT_STOP);
        self.held
    }

    fn choose(&self, view: &Snapshot, aim: i64) -> Option<Input> {
        let value = |idx: usize| view.values.get(idx).map(|&value| i64::from(value));
        let (ball_x, ball_y) = (value(self.fields.ball_x)?, value(self.fields.ball_y)?);
        let (ball_vx, ball_vy) = (value(self.fields.ball_vx)?, value(self.fields.ball_vy)?);
        let paddle_y = value(self.fields.paddle_y)?;
        let incoming = if self.side == 0 { ball_vx < 0 } else { ball_vx > 0 };
        let target = if !incoming {
            // Nothing to do yet: wait in the middle, where every return is reachable.
            i64::from(FIELD_HEIGHT >> (WIRE_SHIFT + 1))
        } else if self.config.anticipate {
            let ticks = (self.face_x - ball_x) / ball_vx;
            fold(ball_y + ball_vy * ticks, i64::from(BALL_MIN_Y >> WIRE_SHIFT), i64::from(BALL_MAX_Y >> WIRE_SHIFT))
        } else {
            ball_y
        } + aim;
        let gap = target - paddle_y;
        Some(if gap.abs() <= i64::from(self.config.dead_zone) {
            INPUT_STOP
        } else if gap < 0 {
            INPUT_UP
        } else {
            INPUT_DOWN
        })
    }
}

/// Reflects an unbounded straight-line height into `low..=high`, as the walls would.
fn fold(y: i64, low: i64, high: i64) -> i64 {
    let span = high - low;
    if span <= 0 {
        return low;
    }
    let phase = (y - low).rem_euclid(2 * span);
    if phase <= span { low + phase } else { low + 2 * span - phase }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::Game;
    use crate::pong::PongWorld;

    fn view_with(schema: &Schema, values: &[(&str, i32)]) -> Snapshot {
        let mut view = Snapshot { tick: 1, values: vec![0; schema.len()] };
        for (name, value) in values {
            view.values[schema.index_of(name).expect("field exists")] = *value;
        }
        view
    }

    #[test]
    fn tracks_an_incoming_ball() {
        let schema = PongWorld::schema(2);
        let mut pilot = Autopilot::new(&schema, 0, AutopilotConfig::default(), 1).expect("pong schema");
        let above = view_with(&schema, &[("ball_y", 1000), ("ball_vx", -64), ("ball_x", 4000), ("paddle_y_0", 3072)]);
        assert_eq!(pilot.decide(&above), INPUT_UP);
        let below = view_with(&schema, &[("ball_y", 5000), ("ball_vx", -64), ("ball_x", 4000), ("paddle_y_0", 3072)]);
        assert_eq!(pilot.decide(&below), INPUT_DOWN);
        let level = view_with(&schema, &[("ball_y", 3080), ("ball_vx", -64), ("ball_x", 4000), ("paddle_y_0", 3072)]);
        assert_eq!(pilot.decide(&level), INPUT_STOP);
    }

    #[test]
    fn returns_to_the_middle_when_the_ball_goes_away() {
        let schema = PongWorld::schema(2);
        let mut pilot = Autopilot::new(&schema, 1, AutopilotConfig::default(), 1).expect("pong schema");
        let away = view_with(&schema, &[("ball_y", 100), ("ball_vx", -64), ("paddle_y_1", 500)]);
        assert_eq!(pilot.decide(&away), INPUT_DOWN);
    }

    #[test]
    fn reaction_time_holds_the_input() {
        let schema = PongWorld::schema(2);
        let config = AutopilotConfig { reaction_ticks: 3, ..AutopilotConfig::default() };
        let mut pilot = Autopilot::new(&schema, 0, config, 1).expect("pong schema");
        let above = view_with(&schema, &[("ball_y", 1000), ("ball_vx", -64), ("paddle_y_0", 3072)]);
        let below = view_with(&schema, &[("ball_y", 5000), ("ball_vx", -64), ("paddle_y_0", 3072)]);
        assert_eq!(pilot.decide(&above), INPUT_UP);
        assert_eq!(pilot.decide(&below), INPUT_UP);
        assert_eq!(pilot.decide(&below), INPUT_UP);
        assert_eq!(pilot.decide(&below), INPUT_DOWN);
    }

    #[test]
    fn anticipation_reflects_off_the_wall() {
        let schema = PongWorld::schema(2);
        let config = AutopilotConfig { anticipate: true, ..AutopilotConfig::default() };
        let mut pilot = Autopilot::new(&schema, 0, config, 1).expect("pong schema");
        // Flying up-left from near the top: it will bounce and arrive low.
        let view = view_with(
            &schema,
            &[("ball_x", 4000), ("ball_y", 400), ("ball_vx", -100), ("ball_vy", -100), ("paddle_y_0", 2000)],
        );
        assert_eq!(pilot.decide(&view), INPUT_DOWN);
        assert_eq!(fold(-10, 0, 100), 10);
        assert_eq!(fold(210, 0, 100), 10);
        assert_eq!(fold(50, 0, 100), 50);
    }

    #[test]
    fn missing_fields_and_short_views_are_harmless() {
        let schema = Schema::new(vec![rally_protocol::FieldSpec::unsigned("x", 3)]).expect("valid");
        assert!(matches!(
            Autopilot::new(&schema, 0, AutopilotConfig::default(), 1),
            Err(AutopilotError::MissingField(_))
        ));
        let mut pilot = Autopilot::new(&PongWorld::schema(2), 0, AutopilotConfig::default(), 1).expect("pong schema");
        assert_eq!(pilot.decide(&Snapshot::default()), INPUT_STOP);
    }
}
