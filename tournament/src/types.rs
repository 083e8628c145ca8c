//! The public data types of the engine: rules, entrants, game keys, outcomes, inputs and
//! standings. Their serde shapes are a contract: the ledger hashes their JSON, so a change
//! here is a change of the ledger format.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An entrant's identity; the same number as rally's `PlayerId.0`.
pub type EntrantId = u64;

/// One entrant of a tournament.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entrant {
    /// The entrant's id, unique within a tournament.
    pub id: EntrantId,
    /// The name shown in brackets and tables.
    pub name: String,
    /// Integer rating (Glicko-2 rating rounded by the caller); used by [`Seeding::Rating`].
    pub rating: i32,
}

/// The format of one stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Format {
    /// Knock-out: one series lost and you are out.
    SingleElimination {
        /// Whether the two semi-final losers play for third place.
        third_place: bool,
    },
    /// Winners and losers brackets: two series lost and you are out.
    DoubleElimination {
        /// Whether a second grand final is played when the losers-bracket finalist wins the first.
        grand_final_reset: bool,
    },
    /// A fixed number of rounds, each pairing players with equal scores.
    Swiss {
        /// Rounds to play, 1 up to the number of entrants in the stage.
        rounds: u16,
    },
    /// Everyone plays everyone once (Berger tables).
    RoundRobin,
}

/// One stage of a tournament.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// How the stage is played.
    pub format: Format,
    /// Games per series: 1, 3, 5 or 7. A series ends as soon as one side has a majority.
    pub best_of: u8,
    /// `Some(k)`: the top `k` of this stage's standings go on to the next stage, seeded by
    /// their rank. `None` for the last stage.
    pub advance: Option<u16>,
}

/// How entrants are put in seed order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seeding {
    /// By rating, highest first; equal ratings by id, lowest first.
    Rating,
    /// In the order the entrants were given.
    Given,
}

/// The rules of a tournament: its stages, in order, and its seeding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// The stages, played one after another (1 to 16).
    pub stages: Vec<Stage>,
    /// How the entrants are seeded into the first stage.
    pub seeding: Seeding,
}

/// Names one game: stage, round and table of its series, and its index in the series.
///
/// All fields are 0-based; [`fmt::Display`] writes them 1-based as `s1-r2-t3-g1`. Keys order
/// by stage, then round, then table, then game.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GameKey {
    /// Stage index in [`Rules::stages`].
    pub stage: u8,
    /// Round within the stage (see the crate docs for how elimination brackets number them).
    pub round: u16,
    /// Table (series) within the round.
    pub table: u16,
    /// Index of the game within its best-of series.
    pub game: u8,
}

impl fmt::Display for GameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "s{}-r{}-t{}-g{}",
            u32::from(self.stage) + 1,
            u32::from(self.round) + 1,
            u32::from(self.table) + 1,
            u32::from(self.game) + 1
        )
    }
}

/// A string that is not a game key of the form `s1-r2-t3-g1`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a game key: expected the form s1-r2-t3-g1 (1-based stage, round, table, game)")]
pub struct ParseGameKeyError(pub String);

impl FromStr for GameKey {
    type Err = ParseGameKeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ParseGameKeyError(text.to_owned());
        let mut parts = text.split('-');
        let mut field = |prefix: char| -> Result<u32, ParseGameKeyError> {
            let part = parts.next().ok_or_else(bad)?;
            let digits = part.strip_prefix(prefix).ok_or_else(bad)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let value: u32 = digits.parse().map_err(|_| bad())?;
            value.checked_sub(1).ok_or_else(bad)
        };
        let stage = field('s')?;
        let round = field('r')?;
        let table = field('t')?;
        let game = field('g')?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(GameKey {
            stage: u8::try_from(stage).map_err(|_| bad())?,
            round: u16::try_from(round).map_err(|_| bad())?,
            table: u16::try_from(table).map_err(|_| bad())?,
            game: u8::try_from(game).map_err(|_| bad())?,
        })
    }
}

/// One side of a game. In a replay, home is side 0 and away is side 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The first-named entrant of a game.
    Home,
    /// The second-named entrant of a game.
    Away,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Home => Side::Away,
            Side::Away => Side::Home,
        }
    }
}

/// How one game ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GameOutcome {
    /// The game was played. Equal scores are a draw: a draw counts in Swiss and round
    /// robin; in elimination it is followed by another game of the series.
    Played {
        /// The home side's score.
        home_score: u32,
        /// The away side's score.
        away_score: u32,
    },
    /// One side did not show or was disqualified: the winner takes the whole series.
    Forfeit {
        /// The side that wins.
        winner: Side,
    },
    /// Neither side showed: both lose the series; in elimination nobody advances from it and
    /// the next opponent gets a walkover.
    DoubleForfeit,
}

/// Something that happens to a tournament; the state is a function of the inputs applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    /// The result of a ready game.
    Result {
        /// The game.
        key: GameKey,
        /// How it ended.
        outcome: GameOutcome,
    },
    /// Replaces the result of a game, while nothing that depends on it has a result.
    Correct {
        /// The game.
        key: GameKey,
        /// The outcome that replaces the recorded one.
        outcome: GameOutcome,
        /// Why, for the record.
        reason: String,
    },
    /// An entrant leaves: their pending and future games are forfeits for the opponent.
    Withdraw {
        /// Who leaves.
        entrant: EntrantId,
    },
    /// An entrant is disqualified: as a withdrawal, with a reason for the record.
    Disqualify {
        /// Who is disqualified.
        entrant: EntrantId,
        /// Why, for the record.
        reason: String,
    },
}

/// A game between two entrants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Game {
    /// Which game.
    pub key: GameKey,
    /// The home entrant (side 0).
    pub home: EntrantId,
    /// The away entrant (side 1).
    pub away: EntrantId,
}

/// One row of the standings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// Position, 1 first; every entrant has a distinct rank.
    pub rank: u32,
    /// Who.
    pub entrant: EntrantId,
    /// Series won, over the whole tournament (a Swiss bye counts as a win).
    pub wins: u32,
    /// Series lost, over the whole tournament.
    pub losses: u32,
    /// Series drawn, over the whole tournament.
    pub draws: u32,
    /// 2 per win, 1 per draw.
    pub points: u32,
    /// The sum of the points of every opponent met.
    pub buchholz: u32,
    /// Game scores for minus against, over every played game.
    pub point_difference: i64,
    /// Out of the running: knocked out, not advanced from a stage, withdrawn or disqualified.
    pub eliminated: bool,
}
