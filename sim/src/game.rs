//! The game-agnostic face of a simulation: what the shard may know.
//!
//! A [`Game`] is one ECS world holding many matches of one game. The shard feeds
//! it seat connections and inputs, steps it once per tick, reads per-seat views
//! as protocol [`Snapshot`]s and drains [`SimEvent`]s. It never names Pong.
//!
//! Call order per tick, for every tick:
//! 1. [`Game::set_seat_connected`] for connection changes since the last tick;
//! 2. [`Game::set_input`] for each seat whose input for this tick is known
//!    (a seat with no input this tick repeats its last one);
//! 3. [`Game::step`] once: every match advances one tick;
//! 4. [`Game::poll_event`] until `None`;
//! 5. [`Game::write_view`] for the seats due a snapshot.

use rally_protocol::{Input, MatchId, Schema, Seat, Snapshot, Tick};
use serde::{Deserialize, Serialize};

/// What the matchmaker decides about a match; carried in the connect token.
///
/// Every match ends: a side reaches `points_to_win`, or the clock runs out. The clock
/// counts the ticks of countdown and play since every seat was first filled. When it
/// reaches `time_limit_ticks`, a side that leads wins at once; if the scores are level,
/// the match goes to sudden death (the next point wins), and if they are still level
/// [`MatchSpec::sudden_death_ticks`] later it ends as a draw. So no match plays longer
/// than [`MatchSpec::max_play_ticks`], however well both sides defend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MatchSpec {
    /// Number of seats (Pong: 2, or 4 for doubles).
    pub n_seats: u8,
    /// Points a side needs to win.
    pub points_to_win: u8,
    /// Regulation time in ticks, at least 1 (Pong refuses 0).
    pub time_limit_ticks: u32,
}

impl MatchSpec {
    /// How long sudden death lasts before a level match is a draw: half the regulation time.
    pub const fn sudden_death_ticks(&self) -> u32 {
        self.time_limit_ticks / 2
    }

    /// The most ticks of countdown and play a match can last: regulation plus sudden death.
    pub const fn max_play_ticks(&self) -> u32 {
        self.time_limit_ticks.saturating_add(self.sudden_death_ticks())
    }
}

/// Timing rules shared by every match of a world, in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleConfig {
    /// Ticks of countdown once every seat is filled, and again after each point.
    pub countdown_ticks: u32,
    /// A seat empty for this many consecutive ticks forfeits the match for its side.
    pub forfeit_after_ticks: u32,
    /// A match whose seats were never all filled ends as abandoned after this many ticks.
    pub fill_timeout_ticks: u32,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        // At 60 Hz: 1 s countdown, 10 s to come back, 30 s for everyone to show up.
        Self { countdown_ticks: 60, forfeit_after_ticks: 600, fill_timeout_ticks: 1800 }
    }
}

/// Lifecycle of one match. Transitions only go forward except
/// `Playing → Countdown` after a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Phase {
    /// Waiting for every seat to connect for the first time.
    Waiting = 0,
    /// Every seat is in; the ball is served when the countdown ends.
    Countdown = 1,
    /// The ball is in play.
    Playing = 2,
    /// The match is over; it emits no further events.
    Finished = 3,
}

/// Why a match ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EndReason {
    /// A side reached the points to win.
    Score,
    /// A seat stayed empty past the forfeit timeout, or its player left; its side lost.
    Forfeit,
    /// Seats were never all filled, or every seat left: no winner.
    Abandoned,
    /// The clock ran out ([`MatchSpec`]): the side leading at the time limit or
    /// scoring first in sudden death won, or, level at the end of sudden death, nobody did.
    TimeLimit,
}

/// The outcome of one match, emitted exactly once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MatchOutcome {
    /// Points per side (team), indexed by side.
    pub scores: Vec<u32>,
    /// The side (team) of each seat, indexed by seat.
    pub seat_sides: Vec<u8>,
    /// The winning side, `None` when abandoned.
    pub winner: Option<u8>,
    /// Why it ended.
    pub reason: EndReason,
    /// Seats that forfeited (empty past the timeout, or left).
    pub forfeited: Vec<Seat>,
    /// Ticks from creation to the end.
    pub duration_ticks: u32,
}

/// Something that happened in a match during the last step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SimEvent {
    /// A match changed phase.
    PhaseChanged {
        /// The match.
        match_id: MatchId,
        /// The world tick of the change.
        tick: Tick,
        /// The new phase.
        phase: Phase,
    },
    /// A side scored.
    PointScored {
        /// The match.
        match_id: MatchId,
        /// The world tick of the point.
        tick: Tick,
        /// The side that scored.
        side: u8,
        /// Points per side after this one.
        scores: Vec<u32>,
    },
    /// A match finished; its outcome is final.
    MatchFinished {
        /// The match.
        match_id: MatchId,
        /// The world tick it ended.
        tick: Tick,
        /// Result.
        outcome: MatchOutcome,
    },
}

impl SimEvent {
    /// The match the event belongs to; the world orders each step's events by it.
    pub fn match_id(&self) -> MatchId {
        match self {
            Self::PhaseChanged { match_id, .. }
            | Self::PointScored { match_id, .. }
            | Self::MatchFinished { match_id, .. } => *match_id,
        }
    }

    /// The world tick the event happened on.
    pub fn tick(&self) -> Tick {
        match self {
            Self::PhaseChanged { tick, .. } | Self::PointScored { tick, .. } | Self::MatchFinished { tick, .. } => {
                *tick
            }
        }
    }
}

/// Errors from the game-agnostic API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// No match with this id exists in the world.
    #[error("no match {0}")]
    UnknownMatch(MatchId),
    /// A match with this id already exists.
    #[error("match {0} already exists")]
    DuplicateMatch(MatchId),
    /// The seat index is not below the match's seat count.
    #[error("seat {seat} out of range for a {n_seats}-seat match")]
    BadSeat {
        /// The seat given.
        seat: Seat,
        /// The match's seat count.
        n_seats: u8,
    },
    /// The game does not support this spec (e.g. 3 seats in Pong).
    #[error("unsupported match spec: {0}")]
    BadSpec(String),
}

/// One ECS world running many matches of one game, deterministically.
pub trait Game: Send + 'static {
    /// Name of the game on the wire (sent in `Welcome`).
    const NAME: &'static str;

    /// Sides (teams) of every match: a result lists one score per side, even
    /// for a match cut before anyone scored.
    const SIDES: u8;

    /// Creates an empty world whose matches all follow `lifecycle`.
    fn new(lifecycle: LifecycleConfig) -> Self
    where
        Self: Sized;

    /// The schema of the per-seat view for a match with `n_seats` seats.
    fn schema(n_seats: u8) -> Schema;

    /// Creates a match. `seed` drives every random choice in it (serve directions).
    fn create_match(&mut self, match_id: MatchId, spec: MatchSpec, seed: u64) -> Result<(), SimError>;

    /// Forgets a match (finished or not). Unknown ids are ignored.
    fn remove_match(&mut self, match_id: MatchId);

    /// Marks a seat connected or disconnected; empty seats count toward forfeit.
    fn set_seat_connected(&mut self, match_id: MatchId, seat: Seat, connected: bool) -> Result<(), SimError>;

    /// The seat's player left for good: from the next step the seat counts as
    /// past the forfeit timeout (its side forfeits a match under way; a match
    /// still waiting for players is abandoned) and it cannot connect again.
    fn leave_seat(&mut self, match_id: MatchId, seat: Seat) -> Result<(), SimError>;

    /// Sets a seat's input for the next step. Without a call, the last input repeats.
    fn set_input(&mut self, match_id: MatchId, seat: Seat, input: Input) -> Result<(), SimError>;

    /// Advances every match by one tick.
    fn step(&mut self);

    /// The world tick: number of steps taken.
    fn tick(&self) -> Tick;

    /// Takes the next event of the last step, in a deterministic order.
    fn poll_event(&mut self) -> Option<SimEvent>;

    /// Writes `seat`'s view of a match, quantized to [`Game::schema`], into `out`.
    fn write_view(&self, match_id: MatchId, seat: Seat, out: &mut Snapshot) -> Result<(), SimError>;

    /// A hash of the match's full state (not just the view) at the current tick.
    fn match_hash(&self, match_id: MatchId) -> Result<u64, SimError>;

    /// Number of matches in the world.
    fn n_matches(&self) -> usize;
}
