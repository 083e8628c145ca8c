//! Input logs: record a match's inputs while it is played, store them, replay them.
//!
//! A match is a pure function of its spec, seed, lifecycle timings and the sequence of
//! seat inputs and connection changes, so that sequence is all a replay needs. The
//! [`Recording`] wrapper records it for every match of any [`Game`] without the game's
//! help; [`replay`] runs an [`InputLog`] in a fresh world and returns the hash of the
//! match after every tick, which must equal the original run's.
//!
//! Ticks in a log are match-relative: entry tick `t` was set before the match's step
//! `t` (the first step after creation is step 0). A log is run-length coded: an input
//! is recorded only when it differs from the seat's previous recorded input, since a
//! seat without a new input repeats its last one.

use std::collections::BTreeMap;

use rally_protocol::{Input, MatchId, Schema, Seat, Snapshot, Tick};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::game::{Game, LifecycleConfig, MatchOutcome, MatchSpec, SimError, SimEvent};

/// Largest encoded log accepted, so a hostile file cannot make the decoder allocate
/// without bound. 32 MiB holds millions of entries: hours of play that change input
/// every tick.
pub const MAX_LOG_BYTES: usize = 32 << 20;

/// Longest log [`replay`] runs: one day at 60 Hz. It bounds the work and the hash
/// vector an untrusted log can ask for.
pub const MAX_REPLAY_TICKS: u32 = 60 * 60 * 60 * 24;

/// Version of the encoded log, written before it. Bumped on any change to the layout
/// or to the meaning of a field.
pub const LOG_FORMAT_VERSION: u16 = 2;

/// The id a replayed match gets in its fresh world. Match hashes do not cover the id,
/// so it does not matter which.
pub const REPLAY_MATCH_ID: MatchId = MatchId(0);

/// What happened to a seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeatAction {
    /// The seat's input changed to this one.
    Input(Input),
    /// The seat connected.
    Connect,
    /// The seat disconnected.
    Disconnect,
    /// The seat's player left for good (added after format 1's first release:
    /// logs without it decode unchanged).
    Leave,
}

/// One recorded change, applied before the match's step `tick`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Match-relative tick.
    pub tick: u32,
    /// The seat it concerns.
    pub seat: Seat,
    /// The change.
    pub action: SeatAction,
}

/// Everything needed to replay one match, bit for bit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputLog {
    /// [`Game::NAME`] of the game that played it.
    pub game: String,
    /// The match's spec.
    pub spec: MatchSpec,
    /// The match's seed.
    pub seed: u64,
    /// The world's lifecycle timings.
    pub lifecycle: LifecycleConfig,
    /// Changes in tick order (order within a tick is the order they were made).
    pub entries: Vec<LogEntry>,
    /// Steps the match took while recorded.
    pub end_tick: u32,
}

/// Why an input log could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The encoding is larger than [`MAX_LOG_BYTES`].
    #[error("input log of {len} bytes exceeds the {MAX_LOG_BYTES}-byte limit")]
    TooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// The bytes are not a log of [`LOG_FORMAT_VERSION`].
    #[error("input log format {found}, expected {LOG_FORMAT_VERSION}")]
    Version {
        /// The version found.
        found: u16,
    },
    /// The bytes are not a well-formed log (or hit the size limit while decoding).
    #[error("malformed input log: {0}")]
    Malformed(String),
    /// A well-formed log is followed by more bytes.
    #[error("{extra} bytes after the input log")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_LOG_BYTES>()
}

impl InputLog {
    fn encode_unchecked(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec((LOG_FORMAT_VERSION, self), bincode::config::standard())
            .expect("an input log holds only integers, strings and vectors, which always encode")
    }

    /// Encodes the log with bincode 2 (standard configuration), preceded by
    /// [`LOG_FORMAT_VERSION`].
    pub fn encode(&self) -> Result<Vec<u8>, LogError> {
        let bytes = self.encode_unchecked();
        if bytes.len() > MAX_LOG_BYTES {
            return Err(LogError::TooLarge { len: bytes.len() });
        }
        Ok(bytes)
    }

    /// Decodes a log from untrusted bytes: never panics, allocates at most about
    /// [`MAX_LOG_BYTES`], and refuses trailing bytes so each log has one encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, LogError> {
        if bytes.len() > MAX_LOG_BYTES {
            return Err(LogError::TooLarge { len: bytes.len() });
        }
        // The version first, alone, so a log of another format is named as such rather
        // than reported as garbage.
        let (version, _): (u16, usize) = bincode::serde::decode_from_slice(bytes, config())
            .map_err(|error| LogError::Malformed(error.to_string()))?;
        if version != LOG_FORMAT_VERSION {
            return Err(LogError::Version { found: version });
        }
        let ((_, log), used): ((u16, Self), usize) = bincode::serde::decode_from_slice(bytes, config())
            .map_err(|error| LogError::Malformed(error.to_string()))?;
        if used != bytes.len() {
            return Err(LogError::TrailingBytes { extra: bytes.len() - used });
        }
        Ok(log)
    }

    /// SHA-256 of the encoding: the log's identity, e.g. for a tournament ledger.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.encode_unchecked()).into()
    }
}

/// Why a log could not be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The log was recorded by another game.
    #[error("log of game {found:?} cannot replay in {expected:?}")]
    WrongGame {
        /// The game replaying.
        expected: &'static str,
        /// The game named in the log.
        found: String,
    },
    /// The log is longer than [`MAX_REPLAY_TICKS`].
    #[error("log of {end_tick} ticks exceeds the replay limit of {MAX_REPLAY_TICKS}")]
    TooLong {
        /// The log's length in ticks.
        end_tick: u32,
    },
    /// An entry's tick goes backwards or lies past the end of the log.
    #[error("entry {index} is out of tick order")]
    OutOfOrder {
        /// Index of the entry.
        index: usize,
    },
    /// The game refused the match spec.
    #[error("the game refused the match: {0}")]
    Create(SimError),
    /// The game refused an entry (a seat out of range).
    #[error("the game refused entry {index}: {error}")]
    Entry {
        /// Index of the entry.
        index: usize,
        /// The game's error.
        error: SimError,
    },
}

/// What a replay produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayReport {
    /// The match hash after each step, `end_tick` of them.
    pub hashes: Vec<u64>,
    /// Every event in order; their ticks are match-relative, as the replay world starts
    /// with the match.
    pub events: Vec<SimEvent>,
    /// The outcome, if the match finished within the log.
    pub outcome: Option<MatchOutcome>,
}

fn apply<G: Game>(game: &mut G, entry: &LogEntry) -> Result<(), SimError> {
    match entry.action {
        SeatAction::Input(input) => game.set_input(REPLAY_MATCH_ID, entry.seat, input),
        SeatAction::Connect => game.set_seat_connected(REPLAY_MATCH_ID, entry.seat, true),
        SeatAction::Disconnect => game.set_seat_connected(REPLAY_MATCH_ID, entry.seat, false),
        SeatAction::Leave => game.leave_seat(REPLAY_MATCH_ID, entry.seat),
    }
}

/// Runs a log in a fresh world of `G` and reports the match hash after every step.
///
/// Entries at `end_tick` (made after the last recorded step) are applied without a
/// further step, so the final state equals the recorded one.
pub fn replay<G: Game>(log: &InputLog) -> Result<ReplayReport, ReplayError> {
    if log.game != G::NAME {
        return Err(ReplayError::WrongGame { expected: G::NAME, found: log.game.clone() });
    }
    if log.end_tick > MAX_REPLAY_TICKS {
        return Err(ReplayError::TooLong { end_tick: log.end_tick });
    }
    let mut previous = 0;
    for (index, entry) in log.entries.iter().enumerate() {
        if entry.tick < previous || entry.tick > log.end_tick {
            return Err(ReplayError::OutOfOrder { index });
        }
        previous = entry.tick;
    }

    let mut game = G::new(log.lifecycle);
    game.create_match(REPLAY_MATCH_ID, log.spec, log.seed).map_err(ReplayError::Create)?;
    // Grows as it goes rather than trusting `end_tick` for one big allocation.
    let mut hashes = Vec::with_capacity(log.end_tick.min(1 << 16) as usize);
    let mut events = Vec::new();
    let mut outcome = None;
    let mut next = 0;
    for tick in 0..=log.end_tick {
        while let Some(entry) = log.entries.get(next).filter(|entry| entry.tick == tick) {
            apply(&mut game, entry).map_err(|error| ReplayError::Entry { index: next, error })?;
            next += 1;
        }
        if tick == log.end_tick {
            break;
        }
        game.step();
        hashes.push(game.match_hash(REPLAY_MATCH_ID).map_err(ReplayError::Create)?);
        while let Some(event) = game.poll_event() {
            if let SimEvent::MatchFinished { outcome: finished, .. } = &event {
                outcome = Some(finished.clone());
            }
            events.push(event);
        }
    }
    Ok(ReplayReport { hashes, events, outcome })
}

/// The recording state of one match.
#[derive(Debug)]
struct Recorder {
    /// World tick at creation: entry ticks are counted from it.
    created_at: Tick,
    /// Steps taken when the match was removed, if it was.
    removed_after: Option<u32>,
    /// Last recorded input per seat; `None` when the game's idea of it is unknown (at
    /// creation, and after a disconnect, which a game may use to reset the input).
    inputs: Vec<Option<Input>>,
    /// Last recorded connection per seat (seats start empty).
    connected: Vec<bool>,
    /// Seats whose leave is recorded.
    left: Vec<bool>,
    log: InputLog,
}

/// A [`Game`] that records an [`InputLog`] for each of its matches.
///
/// It forwards every call to the wrapped game and records what the game accepted. Logs
/// are kept until [`Recording::take_log`], even after the match is removed, so a driver
/// can remove a finished match first and store its log later.
///
/// Only changes are recorded, which assumes what the [`Game`] contract implies: setting
/// a seat's connection to the state it already has changes nothing, and a seat without
/// a new input keeps its last one. A game may reset a seat's input when it disconnects
/// (Pong stops the paddle), so the first input after a disconnect is always recorded.
pub struct Recording<G: Game> {
    inner: G,
    lifecycle: LifecycleConfig,
    recorders: BTreeMap<MatchId, Recorder>,
}

impl<G: Game> std::fmt::Debug for Recording<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("game", &G::NAME)
            .field("tick", &self.inner.tick())
            .field("n_logs", &self.recorders.len())
            .finish_non_exhaustive()
    }
}

impl<G: Game> Recording<G> {
    /// The wrapped game, for reading (writes must go through the recorder).
    pub fn inner(&self) -> &G {
        &self.inner
    }

    /// Takes the log of a match, ending its recording; `None` if no log is held. A
    /// match still running goes on unrecorded.
    pub fn take_log(&mut self, match_id: MatchId) -> Option<InputLog> {
        let recorder = self.recorders.remove(&match_id)?;
        let mut log = recorder.log;
        log.end_tick = recorder.removed_after.unwrap_or_else(|| self.inner.tick().wrapping_sub(recorder.created_at));
        Some(log)
    }

    fn record(&mut self, match_id: MatchId, seat: Seat, action: SeatAction) {
        let now = self.inner.tick();
        let Some(recorder) = self.recorders.get_mut(&match_id) else {
            return;
        };
        if recorder.removed_after.is_some() {
            return;
        }
        let idx = usize::from(seat);
        let changed = match action {
            SeatAction::Input(input) => recorder.inputs.get_mut(idx).is_some_and(|last| {
                let changed = *last != Some(input);
                *last = Some(input);
                changed
            }),
            SeatAction::Connect | SeatAction::Disconnect => {
                let connected = action == SeatAction::Connect;
                let changed = recorder.connected.get_mut(idx).is_some_and(|last| {
                    let changed = *last != connected;
                    *last = connected;
                    changed
                });
                if changed && !connected {
                    recorder.inputs[idx] = None;
                }
                changed
            }
            SeatAction::Leave => {
                let changed = recorder.left.get_mut(idx).is_some_and(|left| !std::mem::replace(left, true));
                if changed {
                    recorder.connected[idx] = false;
                    recorder.inputs[idx] = None;
                }
                changed
            }
        };
        if changed {
            let tick = now.wrapping_sub(recorder.created_at);
            recorder.log.entries.push(LogEntry { tick, seat, action });
        }
    }
}

impl<G: Game> Game for Recording<G> {
    const NAME: &'static str = G::NAME;
    const SIDES: u8 = G::SIDES;

    fn new(lifecycle: LifecycleConfig) -> Self {
        Self { inner: G::new(lifecycle), lifecycle, recorders: BTreeMap::new() }
    }

    fn schema(n_seats: u8) -> Schema {
        G::schema(n_seats)
    }

    fn create_match(&mut self, match_id: MatchId, spec: MatchSpec, seed: u64) -> Result<(), SimError> {
        self.inner.create_match(match_id, spec, seed)?;
        let n_seats = usize::from(spec.n_seats);
        let log = InputLog {
            game: G::NAME.to_owned(),
            spec,
            seed,
            lifecycle: self.lifecycle,
            entries: Vec::new(),
            end_tick: 0,
        };
        let recorder = Recorder {
            created_at: self.inner.tick(),
            removed_after: None,
            inputs: vec![None; n_seats],
            connected: vec![false; n_seats],
            left: vec![false; n_seats],
            log,
        };
        // A log left untaken from an earlier match with this id is replaced.
        self.recorders.insert(match_id, recorder);
        Ok(())
    }

    fn remove_match(&mut self, match_id: MatchId) {
        self.inner.remove_match(match_id);
        let now = self.inner.tick();
        if let Some(recorder) = self.recorders.get_mut(&match_id) {
            recorder.removed_after.get_or_insert(now.wrapping_sub(recorder.created_at));
        }
    }

    fn set_seat_connected(&mut self, match_id: MatchId, seat: Seat, connected: bool) -> Result<(), SimError> {
        self.inner.set_seat_connected(match_id, seat, connected)?;
        let action = if connected { SeatAction::Connect } else { SeatAction::Disconnect };
        self.record(match_id, seat, action);
        Ok(())
    }

    fn leave_seat(&mut self, match_id: MatchId, seat: Seat) -> Result<(), SimError> {
        self.inner.leave_seat(match_id, seat)?;
        self.record(match_id, seat, SeatAction::Leave);
        Ok(())
    }

    fn set_input(&mut self, match_id: MatchId, seat: Seat, input: Input) -> Result<(), SimError> {
        self.inner.set_input(match_id, seat, input)?;
        self.record(match_id, seat, SeatAction::Input(input));
        Ok(())
    }

    fn step(&mut self) {
        self.inner.step();
    }

    fn tick(&self) -> Tick {
        self.inner.tick()
    }

    fn poll_event(&mut self) -> Option<SimEvent> {
        self.inner.poll_event()
    }

    fn write_view(&self, match_id: MatchId, seat: Seat, out: &mut Snapshot) -> Result<(), SimError> {
        self.inner.write_view(match_id, seat, out)
    }

    fn match_hash(&self, match_id: MatchId) -> Result<u64, SimError> {
        self.inner.match_hash(match_id)
    }

    fn n_matches(&self) -> usize {
        self.inner.n_matches()
    }
}
