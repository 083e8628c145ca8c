//! What `rally play` draws of a Pong match: the fields of a view, named through
//! the match's schema, scaled onto a grid of terminal cells.

use rally_client::prediction::Predictor;
use rally_protocol::{Input, Schema, Seat};
use rally_sim::pong::geometry::{FIELD_HEIGHT, FIELD_WIDTH, PADDLE_HALF_HEIGHT, WIRE_SHIFT, paddle_x, side_of};
use rally_sim::pong::prediction::PaddlePredictor;

/// Field width and height in wire units (what snapshots carry).
const WIRE_W: f64 = (FIELD_WIDTH >> WIRE_SHIFT) as f64;
const WIRE_H: f64 = (FIELD_HEIGHT >> WIRE_SHIFT) as f64;

/// Where each drawn quantity sits in a view, found by name in the schema.
#[derive(Clone, Debug)]
pub struct CourtLayout {
    phase: usize,
    countdown: usize,
    ball_x: usize,
    ball_y: usize,
    paddles: Vec<(Seat, usize)>,
    scores: [usize; 2],
}

impl CourtLayout {
    /// The layout of a Pong schema; `None` for a schema that is not Pong's.
    pub fn new(schema: &Schema, n_seats: u8) -> Option<Self> {
        let paddles = (0..n_seats)
            .map(|seat| schema.index_of(&format!("paddle_y_{seat}")).map(|idx| (seat, idx)))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            phase: schema.index_of("phase")?,
            countdown: schema.index_of("countdown")?,
            ball_x: schema.index_of("ball_x")?,
            ball_y: schema.index_of("ball_y")?,
            paddles,
            scores: [schema.index_of("score_0")?, schema.index_of("score_1")?],
        })
    }

    /// The court at one moment. `values` is a whole view (interpolated or
    /// snapshot); `own` optionally overrides the local paddle with its predicted y.
    pub fn court(&self, values: &[f64], own: Option<(Seat, f64)>) -> Court {
        let get = |idx: usize| values.get(idx).copied().unwrap_or(0.0);
        let paddles = self
            .paddles
            .iter()
            .map(|&(seat, idx)| {
                let y = match own {
                    Some((own_seat, y)) if own_seat == seat => y,
                    _ => get(idx),
                };
                Paddle { seat, x: f64::from(paddle_x(seat) >> WIRE_SHIFT), y }
            })
            .collect();
        Court {
            phase: get(self.phase).round() as u8,
            countdown: get(self.countdown).round().max(0.0) as u32,
            ball: (get(self.ball_x), get(self.ball_y)),
            paddles,
            score: [get(self.scores[0]).round() as u32, get(self.scores[1]).round() as u32],
        }
    }

    /// Index of `seat`'s paddle y in the view.
    pub fn paddle_index(&self, seat: Seat) -> Option<usize> {
        self.paddles.iter().find(|(s, _)| *s == seat).map(|&(_, idx)| idx)
    }
}

/// One paddle, in wire units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Paddle {
    /// The seat holding it.
    pub seat: Seat,
    /// Centre x.
    pub x: f64,
    /// Centre y.
    pub y: f64,
}

/// Everything drawn for one frame, in wire units.
#[derive(Clone, Debug, PartialEq)]
pub struct Court {
    /// 0 waiting, 1 countdown, 2 playing, 3 ended (the view's `phase` field).
    pub phase: u8,
    /// Ticks until the serve during the countdown.
    pub countdown: u32,
    /// Ball centre.
    pub ball: (f64, f64),
    /// Every paddle.
    pub paddles: Vec<Paddle>,
    /// Points per side (left, right).
    pub score: [u32; 2],
}

/// A cell of the drawn court.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// Nothing.
    Empty,
    /// The centre line.
    Net,
    /// Part of the local player's paddle.
    OwnPaddle,
    /// Part of another paddle.
    Paddle,
    /// The ball.
    Ball,
}

impl Court {
    /// The court on a `cols` × `rows` grid, row-major from the top-left.
    pub fn rasterize(&self, cols: u16, rows: u16, own_seat: Option<Seat>) -> Vec<Cell> {
        let (cols, rows) = (usize::from(cols.max(1)), usize::from(rows.max(1)));
        let mut cells = vec![Cell::Empty; cols * rows];
        let col_of = |x: f64| ((x / WIRE_W) * cols as f64).floor().clamp(0.0, (cols - 1) as f64) as usize;
        let row_of = |y: f64| ((y / WIRE_H) * rows as f64).floor().clamp(0.0, (rows - 1) as f64) as usize;
        let net = cols / 2;
        for row in (0..rows).step_by(2) {
            cells[row * cols + net] = Cell::Net;
        }
        let half = f64::from(PADDLE_HALF_HEIGHT >> WIRE_SHIFT);
        for paddle in &self.paddles {
            let col = col_of(paddle.x);
            let kind = if Some(paddle.seat) == own_seat { Cell::OwnPaddle } else { Cell::Paddle };
            // Inclusive of both ends so a paddle is never thinner than one cell.
            for row in row_of(paddle.y - half)..=row_of(paddle.y + half - 1.0) {
                cells[row * cols + col] = kind;
            }
        }
        cells[row_of(self.ball.1) * cols + col_of(self.ball.0)] = Cell::Ball;
        cells
    }
}

/// Which side of the court `seat` defends, as a word for the status line.
pub fn side_name(seat: Seat) -> &'static str {
    if side_of(seat) == 0 { "left" } else { "right" }
}

/// Pong's paddle predictor behind the client SDK's game-agnostic predictor
/// trait: the few lines a Pong client writes, since the SDK knows no game.
#[derive(Clone, Debug)]
pub struct PongPaddle {
    predictor: PaddlePredictor,
    fields: [usize; 2],
}

impl PongPaddle {
    /// A predictor for `seat`'s paddle, or `None` for a schema that is not Pong's.
    pub fn new(schema: &Schema, seat: Seat) -> Option<Self> {
        let predictor = PaddlePredictor::new(schema, seat).ok()?;
        Some(Self { predictor, fields: predictor.fields() })
    }
}

impl Predictor for PongPaddle {
    fn step(&self, values: &mut [i32], _seat: Seat, input: Input) {
        self.predictor.step(values, input);
    }

    fn predicted_fields(&self) -> &[usize] {
        &self.fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rally_sim::{Game, PongWorld};

    fn layout() -> CourtLayout {
        let schema = PongWorld::schema(2);
        CourtLayout::new(&schema, 2).expect("pong schema")
    }

    #[test]
    fn a_non_pong_schema_has_no_layout() {
        let schema = Schema::new(vec![rally_protocol::FieldSpec::unsigned("x", 4)]).expect("valid");
        assert!(CourtLayout::new(&schema, 2).is_none());
    }

    #[test]
    fn the_ball_and_paddles_land_where_the_field_says() {
        let layout = layout();
        let schema = PongWorld::schema(2);
        let mut values = vec![0.0; schema.len()];
        values[schema.index_of("ball_x").expect("x")] = WIRE_W * 0.75;
        values[schema.index_of("ball_y").expect("y")] = WIRE_H * 0.25;
        values[schema.index_of("paddle_y_0").expect("p0")] = WIRE_H / 2.0;
        values[schema.index_of("paddle_y_1").expect("p1")] = WIRE_H / 2.0;
        values[schema.index_of("score_1").expect("s1")] = 3.0;
        let court = layout.court(&values, Some((0, WIRE_H * 0.9)));
        assert_eq!(court.score, [0, 3]);
        let cells = court.rasterize(40, 12, Some(0));
        assert_eq!(cells[3 * 40 + 30], Cell::Ball);
        // The local paddle follows the predicted y (bottom), not the view's (middle).
        let own_rows: Vec<usize> = (0..12).filter(|row| cells[row * 40 + 1] == Cell::OwnPaddle).collect();
        assert!(own_rows.contains(&11) && !own_rows.contains(&5), "{own_rows:?}");
        let other_rows: Vec<usize> = (0..12).filter(|row| cells[row * 40 + 38] == Cell::Paddle).collect();
        assert!(other_rows.contains(&5) || other_rows.contains(&6), "{other_rows:?}");
    }

    #[test]
    fn out_of_range_values_stay_on_the_grid() {
        let layout = layout();
        let values = vec![f64::MAX, -1e9, f64::NAN, 1e12, -5.0, 1e30, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0];
        let court = layout.court(&values, None);
        let cells = court.rasterize(3, 2, None);
        assert_eq!(cells.len(), 6);
        assert_eq!(cells.iter().filter(|c| **c == Cell::Ball).count(), 1);
    }
}
