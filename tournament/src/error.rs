//! The engine's errors: bad rules, refused inputs, failed replays.

use crate::types::{EntrantId, GameKey};

/// Rules or entrants that cannot make a tournament.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// The rules name no stage.
    #[error("the rules have no stage: give at least one")]
    NoStages,
    /// More stages than the engine supports.
    #[error("the rules have {count} stages; at most {max} are supported")]
    TooManyStages {
        /// Stages given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Fewer than 2 or more than 1,024 entrants.
    #[error("a tournament needs 2 to 1024 entrants, got {count}")]
    EntrantCount {
        /// Entrants given.
        count: usize,
    },
    /// Two entrants share an id.
    #[error("entrant id {id} appears more than once")]
    DuplicateEntrant {
        /// The repeated id.
        id: EntrantId,
    },
    /// A best-of that is not 1, 3, 5 or 7.
    #[error("stage {stage}: best_of must be 1, 3, 5 or 7, got {best_of}")]
    BestOf {
        /// The stage, 1-based.
        stage: usize,
        /// The value given.
        best_of: u8,
    },
    /// A stage other than the last has no `advance`, or the last one has one.
    #[error("stage {stage}: every stage but the last needs `advance: Some(k)` and the last needs `None`")]
    AdvanceMissing {
        /// The stage, 1-based.
        stage: usize,
    },
    /// `advance` is below 2 or above the stage's entrant count.
    #[error("stage {stage}: advance must be 2 to {entrants} (the entrants of the stage), got {advance}")]
    AdvanceOutOfRange {
        /// The stage, 1-based.
        stage: usize,
        /// The value given.
        advance: u16,
        /// Entrants in the stage.
        entrants: usize,
    },
    /// Swiss rounds of 0 or more than the stage's entrants.
    #[error("stage {stage}: a Swiss stage needs 1 to {entrants} rounds (its entrant count), got {rounds}")]
    SwissRounds {
        /// The stage, 1-based.
        stage: usize,
        /// The value given.
        rounds: u16,
        /// Entrants in the stage.
        entrants: usize,
    },
}

/// An input the engine refused; the tournament is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// No such game has been created (yet): its players are not known or the key is wrong.
    #[error("game {key} is not ready: no such game has been paired yet (see ready_games)")]
    NotReady {
        /// The key given.
        key: GameKey,
    },
    /// The game already has a result.
    #[error("game {key} already has a result; send a correction to change it")]
    AlreadyHasResult {
        /// The key given.
        key: GameKey,
    },
    /// The series of this game was decided before it; the game will never be played.
    #[error("game {key} belongs to a series that is already decided; it will not be played")]
    SeriesFinished {
        /// The key given.
        key: GameKey,
    },
    /// A correction for a game that has no result.
    #[error("game {key} has no result to correct; send it as a result")]
    NoResultToCorrect {
        /// The key given.
        key: GameKey,
    },
    /// A correction identical to the recorded result.
    #[error("game {key} already has exactly this outcome; nothing to correct")]
    CorrectionUnchanged {
        /// The key given.
        key: GameKey,
    },
    /// A correction of a game whose result came from a withdrawal or disqualification.
    #[error("game {key} was forfeited by a withdrawal or disqualification; that cannot be corrected")]
    CorrectionOfWithdrawal {
        /// The key given.
        key: GameKey,
    },
    /// A correction after a game that depends on the result already has one.
    #[error("game {key} can no longer be corrected: game {dependent} depends on it and already has a result")]
    CorrectionTooLate {
        /// The game to correct.
        key: GameKey,
        /// A game that depends on it and has a result.
        dependent: GameKey,
    },
    /// An elimination series drew so often that its game index ran out.
    #[error("game {key}: too many drawn games in one series (at most 256 games)")]
    TooManyGames {
        /// The last game of the series.
        key: GameKey,
    },
    /// The entrant is not in this tournament.
    #[error("entrant {entrant} is not in this tournament")]
    UnknownEntrant {
        /// The id given.
        entrant: EntrantId,
    },
    /// The entrant already withdrew or was disqualified.
    #[error("entrant {entrant} already withdrew or was disqualified")]
    AlreadyOut {
        /// The id given.
        entrant: EntrantId,
    },
    /// The tournament is finished; only corrections are accepted.
    #[error("the tournament is finished; only corrections are accepted")]
    Finished,
}

/// A replay that could not rebuild a tournament.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The rules or entrants are invalid.
    #[error("invalid rules: {0}")]
    Rules(#[from] RulesError),
    /// An input was refused.
    #[error("input {index} (0-based) was refused: {source}")]
    Input {
        /// Index of the refused input.
        index: usize,
        /// Why.
        source: ApplyError,
    },
}
