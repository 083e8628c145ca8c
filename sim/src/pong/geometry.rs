//! The Pong field in fixed-point units, and the speeds of everything on it.
//!
//! All state is integer. The field is 2^20 units wide so that the wire quantization
//! (`>> WIRE_SHIFT`) is a plain shift, and every speed is a multiple of
//! `1 << WIRE_SHIFT` so that a quantized position advances by exactly its quantized
//! velocity each tick: a client's linear prediction is then exact between bounces and
//! a ball in straight flight costs no bits in a delta snapshot.
//!
//! Coordinates grow rightwards (x) and downwards (y), as on a screen. Side 0 defends
//! the goal line `x = 0`, side 1 the goal line `x = FIELD_WIDTH`.

use rally_protocol::Seat;

/// Width of the field in units.
pub const FIELD_WIDTH: i32 = 1 << 20;
/// Height of the field in units (a 4:3 field).
pub const FIELD_HEIGHT: i32 = 786_432;
/// Right shift from field units to wire units: 8192 × 6144 on the wire, 13 bits each.
pub const WIRE_SHIFT: u32 = 7;

/// Half the side of the square ball: the ball is 1/64 of the field wide.
pub const BALL_HALF: i32 = FIELD_WIDTH / 128;
/// Half a paddle's height: a paddle is 1/6 of the field high.
pub const PADDLE_HALF_HEIGHT: i32 = FIELD_HEIGHT / 12;
/// Half a paddle's thickness.
pub const PADDLE_HALF_WIDTH: i32 = FIELD_WIDTH / 256;
/// Distance from a side's goal line to the centre of its back paddle (seats 0 and 1).
pub const BACK_PADDLE_DEPTH: i32 = FIELD_WIDTH / 32;
/// Distance from a side's goal line to the centre of its front paddle (seats 2 and 3).
pub const FRONT_PADDLE_DEPTH: i32 = FIELD_WIDTH / 4;

/// How far a paddle moves per tick when its intent is up or down (about one field
/// height per second at 60 Hz).
pub const PADDLE_SPEED: i32 = 96 << WIRE_SHIFT;
/// Horizontal speed of a served ball: two seconds across the field at 60 Hz.
pub const SERVE_SPEED: i32 = 64 << WIRE_SHIFT;
/// Largest vertical wire speed of a serve, drawn uniformly in `-MAX..=MAX`.
pub const MAX_SERVE_VY_WIRE: i32 = 48;
/// Horizontal speed added by every paddle hit.
pub const SPEEDUP: i32 = 4 << WIRE_SHIFT;
/// Largest horizontal speed, reached after 48 hits. It is larger than a paddle plus
/// the ball, so only the swept collision keeps the ball from tunnelling.
pub const MAX_SPEED: i32 = 256 << WIRE_SHIFT;
/// After a hit, `|vy|` is at most `MAX_ANGLE_NUM / MAX_ANGLE_DEN` of `|vx|`, reached
/// when the ball meets the very end of the paddle.
pub const MAX_ANGLE_NUM: i32 = 3;
/// See [`MAX_ANGLE_NUM`].
pub const MAX_ANGLE_DEN: i32 = 4;

/// Lowest y of the ball's centre: its top edge touches the top wall.
pub const BALL_MIN_Y: i32 = BALL_HALF;
/// Highest y of the ball's centre: its bottom edge touches the bottom wall.
pub const BALL_MAX_Y: i32 = FIELD_HEIGHT - BALL_HALF;
/// Lowest x of the ball's centre: its edge is on side 0's goal line, a point for side 1.
pub const BALL_MIN_X: i32 = BALL_HALF;
/// Highest x of the ball's centre: its edge is on side 1's goal line, a point for side 0.
pub const BALL_MAX_X: i32 = FIELD_WIDTH - BALL_HALF;
/// Lowest y of a paddle's centre.
pub const PADDLE_MIN_Y: i32 = PADDLE_HALF_HEIGHT;
/// Highest y of a paddle's centre.
pub const PADDLE_MAX_Y: i32 = FIELD_HEIGHT - PADDLE_HALF_HEIGHT;

/// Most seats a Pong match can have.
pub const MAX_SEATS: usize = 4;
/// Number of sides (teams); scores are per side.
pub const N_SIDES: usize = 2;

/// The side a seat plays for: `seat % 2`, so seats 0 and 2 defend the left goal and
/// seats 1 and 3 the right one. With two seats this is simply seat = side; with four,
/// seats 0/1 hold the back paddles and seats 2/3 the front ones, so a two-seat match
/// is exactly the first half of a four-seat one.
pub const fn side_of(seat: Seat) -> u8 {
    seat % 2
}

/// The x of a seat's paddle centre.
pub const fn paddle_x(seat: Seat) -> i32 {
    let depth = if seat / 2 == 0 { BACK_PADDLE_DEPTH } else { FRONT_PADDLE_DEPTH };
    if side_of(seat) == 0 { depth } else { FIELD_WIDTH - depth }
}

// Every speed is a whole number of wire units, so quantized motion is exact.
const _: () = assert!(PADDLE_SPEED % (1 << WIRE_SHIFT) == 0 && SERVE_SPEED % (1 << WIRE_SHIFT) == 0);
const _: () = assert!(SPEEDUP % (1 << WIRE_SHIFT) == 0 && MAX_SPEED % (1 << WIRE_SHIFT) == 0);
const _: () = assert!(FIELD_WIDTH / 2 % (1 << WIRE_SHIFT) == 0 && FIELD_HEIGHT / 2 % (1 << WIRE_SHIFT) == 0);
const _: () = assert!(PADDLE_MIN_Y % (1 << WIRE_SHIFT) == 0 && PADDLE_MAX_Y % (1 << WIRE_SHIFT) == 0);
// A ball that just bounced off one side's paddles cannot reach the other side's paddles or
// goal within the same tick; the flight code relies on this to consider one side per tick.
const _: () = assert!(2 * MAX_SPEED < FIELD_WIDTH - 2 * FRONT_PADDLE_DEPTH - 2 * (PADDLE_HALF_WIDTH + BALL_HALF));
// The tunnelling case is real: a top-speed ball moves further than a paddle plus the ball.
const _: () = assert!(MAX_SPEED > 2 * (PADDLE_HALF_WIDTH + BALL_HALF));
