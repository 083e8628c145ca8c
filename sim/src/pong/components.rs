//! The components of a match entity and the world's resources.
//!
//! A match is one entity. Its paddles and seats are fixed-size arrays inside it rather
//! than entities of their own: a match never has more than four, the systems always
//! need all of them together, and arrays keep the hot loop free of entity lookups and
//! allocations. Components are split by what each system touches, so the schedule's
//! access declarations (and its ambiguity check) say something real.
//!
//! None of these is `Serialize`: the wire sees them only through the view.

use bevy_ecs::component::Component;
use bevy_ecs::resource::Resource;
use rally_protocol::{Input, MatchId, Seat, Tick};

use super::geometry::{FIELD_HEIGHT, MAX_SEATS, N_SIDES, side_of};
use crate::game::{EndReason, LifecycleConfig, MatchOutcome, Phase, SimEvent};
use crate::rng::SplitMix64;

/// Names the match an entity is. Only events read it; the state never depends on it.
#[derive(Component, Clone, Copy, Debug)]
pub(crate) struct MatchKey(pub(crate) MatchId);

/// The validated spec of a match.
#[derive(Component, Clone, Copy, Debug)]
pub(crate) struct Rules {
    pub(crate) n_seats: u8,
    pub(crate) points_to_win: u8,
    pub(crate) time_limit_ticks: u32,
    /// Regulation plus sudden death: a level match ends as a draw here.
    pub(crate) max_play_ticks: u32,
}

/// How a finished match ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ending {
    pub(crate) reason: EndReason,
    pub(crate) winner: Option<u8>,
    /// Bit `seat` is set for each seat that forfeited.
    pub(crate) forfeited: u8,
}

/// Where a match is in its lifecycle, counted in its own ticks.
#[derive(Component, Clone, Copy, Debug)]
pub(crate) struct Progress {
    pub(crate) phase: Phase,
    /// Ticks left before the serve, while in `Countdown`.
    pub(crate) countdown: u32,
    /// Steps taken since creation (frozen once finished). Matches count their own
    /// time so that a match replays identically in a world of any age.
    pub(crate) age: u32,
    /// Ticks of countdown and play since every seat was first filled: the match clock
    /// the time limit is judged on.
    pub(crate) clock: u32,
    pub(crate) ending: Option<Ending>,
}

/// Who sits where and what they want.
#[derive(Component, Clone, Copy, Debug)]
pub(crate) struct Seats {
    /// Bit `seat` set while the seat is connected.
    pub(crate) connected: u8,
    /// Bit `seat` set once the seat has connected at least once.
    pub(crate) ever_connected: u8,
    /// Bit `seat` set once the seat's player left for good.
    pub(crate) left: u8,
    /// Consecutive ticks each seat has been empty while the match was under way.
    pub(crate) empty_ticks: [u32; MAX_SEATS],
    /// The paddle intent each seat holds until it sends another.
    pub(crate) intent: [Input; MAX_SEATS],
}

impl Seats {
    pub(crate) const EMPTY: Self =
        Self { connected: 0, ever_connected: 0, left: 0, empty_ticks: [0; MAX_SEATS], intent: [0; MAX_SEATS] };
}

/// The paddles' centres (y only: a paddle's x is fixed by its seat) and their motion
/// during the last tick.
#[derive(Component, Clone, Copy, Debug)]
pub(crate) struct Paddles {
    pub(crate) y: [i32; MAX_SEATS],
    pub(crate) vy: [i32; MAX_SEATS],
}

impl Paddles {
    pub(crate) const CENTRED: Self = Self { y: [FIELD_HEIGHT / 2; MAX_SEATS], vy: [0; MAX_SEATS] };
}

/// Points per side.
#[derive(Component, Clone, Copy, Debug)]
pub(crate) struct Score(pub(crate) [u32; N_SIDES]);

/// The match's own generator, seeded at creation; it draws serve directions only.
#[derive(Component, Clone, Copy, Debug)]
pub(crate) struct MatchRng(pub(crate) SplitMix64);

/// The lifecycle timings every match of the world follows.
#[derive(Resource, Clone, Copy, Debug)]
pub(crate) struct Timing(pub(crate) LifecycleConfig);

/// The world tick of the step being run; it only stamps events.
#[derive(Resource, Clone, Copy, Debug, Default)]
pub(crate) struct WorldTick(pub(crate) Tick);

/// Events raised by the systems during one step, in system order; the world sorts
/// them by match id once the step is over.
#[derive(Resource, Debug, Default)]
pub(crate) struct EventQueue(pub(crate) Vec<SimEvent>);

/// Builds the outcome of a match that just ended.
pub(crate) fn outcome(rules: &Rules, progress: &Progress, score: &Score, ending: Ending) -> MatchOutcome {
    let n_seats = rules.n_seats;
    MatchOutcome {
        scores: score.0.to_vec(),
        seat_sides: (0..n_seats).map(side_of).collect(),
        winner: ending.winner,
        reason: ending.reason,
        forfeited: (0..n_seats).filter(|&seat: &Seat| ending.forfeited & (1 << seat) != 0).collect(),
        duration_ticks: progress.age,
    }
}
