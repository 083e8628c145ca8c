//! What leaves a match: the per-seat view (quantized to the schema) and the state hash.

use rally_protocol::{FieldSpec, Schema, Seat, Snapshot, Tick};
use xxhash_rust::xxh3::xxh3_64;

use super::components::{Ending, MatchRng, Paddles, Progress, Rules, Score, Seats};
use super::geometry::{MAX_SEATS, N_SIDES, WIRE_SHIFT};
use super::physics::Ball;
use crate::game::EndReason;

/// Bits of the ball's wire velocity: ±511 wire units per tick covers `MAX_SPEED` (256).
const BALL_V_BITS: u8 = 10;
/// Bits of a paddle's wire velocity: ±127 covers `PADDLE_SPEED` (96).
const PADDLE_V_BITS: u8 = 8;
/// Bits of a wire position: 8192 × 6144 fits 13 bits.
const POS_BITS: u8 = 13;
/// Bits of a score: `points_to_win` is at most 99.
const SCORE_BITS: u8 = 7;
/// Bits of the countdown; longer countdowns show 255 until they get there.
const COUNTDOWN_BITS: u8 = 8;

/// Index of the first per-seat field in the view.
const FIRST_SEAT_FIELD: usize = 6;

/// Seats described by the schema for `n_seats`: Pong plays 2 or 4, larger counts are
/// cut to 4 so the schema stays well-formed even for a spec the game refuses.
fn schema_seats(n_seats: u8) -> u8 {
    n_seats.min(MAX_SEATS as u8)
}

/// The schema of a Pong view for `n_seats`; see the crate docs for the field order.
pub(crate) fn schema(n_seats: u8) -> Schema {
    let mut fields = vec![
        FieldSpec::unsigned("phase", 2),
        FieldSpec::unsigned("countdown", COUNTDOWN_BITS),
        FieldSpec::signed("ball_vx", BALL_V_BITS),
        FieldSpec::signed("ball_vy", BALL_V_BITS),
        FieldSpec::unsigned("ball_x", POS_BITS).predicted_by(2, 0),
        FieldSpec::unsigned("ball_y", POS_BITS).predicted_by(3, 0),
    ];
    for seat in 0..schema_seats(n_seats) {
        let vy_idx = (FIRST_SEAT_FIELD + 2 * usize::from(seat) + 1) as u8;
        fields.push(FieldSpec::unsigned(&format!("paddle_y_{seat}"), POS_BITS).predicted_by(vy_idx, 0));
        fields.push(FieldSpec::signed(&format!("paddle_vy_{seat}"), PADDLE_V_BITS));
    }
    for side in 0..N_SIDES {
        fields.push(FieldSpec::unsigned(&format!("score_{side}"), SCORE_BITS));
    }
    fields.push(FieldSpec::unsigned("seat", 3));
    // At most 6 + 8 + 2 + 1 = 17 fields, every width in 1..=32 and every prediction
    // pointing at an unpredicted velocity: the schema is valid by construction.
    Schema::new(fields).expect("the Pong schema is valid by construction")
}

fn unsigned(value: i64, bits: u8) -> i32 {
    value.clamp(0, (1 << bits) - 1) as i32
}

fn signed(value: i64, bits: u8) -> i32 {
    value.clamp(-(1 << (bits - 1)), (1 << (bits - 1)) - 1) as i32
}

fn wire(value: i32) -> i64 {
    i64::from(value >> WIRE_SHIFT)
}

/// Borrowed state of one match, everything the view and the hash read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatchParts<'a> {
    pub(crate) rules: &'a Rules,
    pub(crate) progress: &'a Progress,
    pub(crate) seats: &'a Seats,
    pub(crate) paddles: &'a Paddles,
    pub(crate) ball: &'a Ball,
    pub(crate) score: &'a Score,
    pub(crate) rng: &'a MatchRng,
}

impl MatchParts<'_> {
    /// Writes `seat`'s view in schema order. Every value is clamped into its field, and
    /// since every speed is a whole number of wire units, `x >> 7` advances by exactly
    /// `vx >> 7` per tick while nothing bounces.
    pub(crate) fn write_view(&self, seat: Seat, tick: Tick, out: &mut Snapshot) {
        out.tick = tick;
        let values = &mut out.values;
        values.clear();
        values.push(self.progress.phase as i32);
        values.push(unsigned(i64::from(self.progress.countdown), COUNTDOWN_BITS));
        values.push(signed(wire(self.ball.vx), BALL_V_BITS));
        values.push(signed(wire(self.ball.vy), BALL_V_BITS));
        values.push(unsigned(wire(self.ball.x), POS_BITS));
        values.push(unsigned(wire(self.ball.y), POS_BITS));
        for idx in 0..usize::from(schema_seats(self.rules.n_seats)) {
            values.push(unsigned(wire(self.paddles.y[idx]), POS_BITS));
            values.push(signed(wire(self.paddles.vy[idx]), PADDLE_V_BITS));
        }
        for side in 0..N_SIDES {
            values.push(unsigned(i64::from(self.score.0[side]), SCORE_BITS));
        }
        values.push(unsigned(i64::from(seat), 3));
    }

    /// xxh3-64 of every state field in a fixed order, little-endian. The match id is
    /// left out on purpose: it names the match, it is not its state, and leaving it out
    /// lets a replay under any id reproduce the original hashes.
    pub(crate) fn hash(&self) -> u64 {
        let mut buf = HashBuf { bytes: [0; 128], len: 0 };
        buf.put(&[self.rules.n_seats, self.rules.points_to_win, self.progress.phase as u8]);
        buf.put(&self.progress.countdown.to_le_bytes());
        buf.put(&self.progress.age.to_le_bytes());
        buf.put(&self.rules.time_limit_ticks.to_le_bytes());
        buf.put(&self.progress.clock.to_le_bytes());
        let (reason, winner, forfeited) = match self.progress.ending {
            None => (0, u8::MAX, 0),
            Some(Ending { reason, winner, forfeited }) => {
                let reason = match reason {
                    EndReason::Score => 1,
                    EndReason::Forfeit => 2,
                    EndReason::Abandoned => 3,
                    EndReason::TimeLimit => 4,
                };
                (reason, winner.unwrap_or(u8::MAX), forfeited)
            }
        };
        buf.put(&[reason, winner, forfeited, self.seats.connected, self.seats.ever_connected, self.seats.left]);
        for idx in 0..usize::from(schema_seats(self.rules.n_seats)) {
            buf.put(&self.seats.empty_ticks[idx].to_le_bytes());
            buf.put(&[self.seats.intent[idx]]);
            buf.put(&self.paddles.y[idx].to_le_bytes());
            buf.put(&self.paddles.vy[idx].to_le_bytes());
        }
        for value in [self.ball.x, self.ball.y, self.ball.vx, self.ball.vy] {
            buf.put(&value.to_le_bytes());
        }
        for points in self.score.0 {
            buf.put(&points.to_le_bytes());
        }
        buf.put(&self.rng.0.state().to_le_bytes());
        xxh3_64(&buf.bytes[..buf.len])
    }
}

/// A stack buffer for the hash input: 115 bytes at most, so hashing never allocates.
struct HashBuf {
    bytes: [u8; 128],
    len: usize,
}

impl HashBuf {
    fn put(&mut self, data: &[u8]) {
        self.bytes[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
    }
}
