//! rally's bracket engine: single elimination, double elimination, Swiss and round robin,
//! in one or more stages, with best-of-N series. (Full rules: see below once filled in.)
//!
//! It does no IO, reads no clock and draws no random numbers: a [`Tournament`] is a pure
//! function of its [`Rules`], its entrants and the [`Input`]s applied to it, so anyone holding
//! those (the ledger does) can rebuild it with [`replay`]. It does not schedule matches, talk
//! to shards or persist anything; the tournaments service does.

mod error;
mod types;

pub use error::{ApplyError, ReplayError, RulesError};
pub use types::{
    Entrant, EntrantId, Format, Game, GameKey, GameOutcome, Input, ParseGameKeyError, Rules, Seeding, Side, Stage,
    Standing,
};

use serde::{Deserialize, Serialize};

/// A tournament in progress (or finished).
///
/// It serializes as `{"rules": .., "entrants": [seed order], "inputs": [every accepted input]}`
/// and deserializes by replaying those inputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "TournamentRecord", try_from = "TournamentRecord")]
pub struct Tournament {
    rules: Rules,
    seeds: Vec<Entrant>,
    inputs: Vec<Input>,
}

/// The serialized form of a [`Tournament`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TournamentRecord {
    rules: Rules,
    entrants: Vec<Entrant>,
    inputs: Vec<Input>,
}

impl From<Tournament> for TournamentRecord {
    fn from(tournament: Tournament) -> Self {
        TournamentRecord { rules: tournament.rules, entrants: tournament.seeds, inputs: tournament.inputs }
    }
}

impl TryFrom<TournamentRecord> for Tournament {
    type Error = ReplayError;

    fn try_from(record: TournamentRecord) -> Result<Self, Self::Error> {
        replay(record.rules, record.entrants, &record.inputs)
    }
}

impl Tournament {
    /// Checks the rules, seeds the entrants and pairs the first round.
    pub fn new(rules: Rules, entrants: Vec<Entrant>) -> Result<Self, RulesError> {
        if rules.stages.is_empty() {
            return Err(RulesError::NoStages);
        }
        Ok(Tournament { rules, seeds: entrants, inputs: Vec::new() })
    }

    /// The rules it was created with.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The entrants in seed order, seed 1 first.
    pub fn seeds(&self) -> &[Entrant] {
        &self.seeds
    }

    /// Applies one input. On error nothing changes.
    pub fn apply(&mut self, input: &Input) -> Result<(), ApplyError> {
        match input {
            Input::Result { key, .. } | Input::Correct { key, .. } => Err(ApplyError::NotReady { key: *key }),
            Input::Withdraw { entrant } | Input::Disqualify { entrant, .. } => {
                Err(ApplyError::UnknownEntrant { entrant: *entrant })
            }
        }
    }

    /// Every game playable now that has no result yet, in key order. Byes never appear.
    pub fn ready_games(&self) -> Vec<Game> {
        Vec::new()
    }

    /// Every game created so far with its outcome, in key order.
    pub fn games(&self) -> Vec<(Game, Option<GameOutcome>)> {
        Vec::new()
    }

    /// Every entrant, ranked.
    pub fn standings(&self) -> Vec<Standing> {
        Vec::new()
    }

    /// Whether the last stage is over.
    pub fn is_finished(&self) -> bool {
        false
    }

    /// The winner, once finished (none when the final was a double forfeit).
    pub fn champion(&self) -> Option<EntrantId> {
        None
    }

    /// The bracket or table as plain text for a terminal.
    pub fn render(&self) -> String {
        String::new()
    }
}

/// Rebuilds a tournament from its rules, entrants and inputs.
pub fn replay(rules: Rules, entrants: Vec<Entrant>, inputs: &[Input]) -> Result<Tournament, ReplayError> {
    let mut tournament = Tournament::new(rules, entrants)?;
    for (index, input) in inputs.iter().enumerate() {
        tournament.apply(input).map_err(|source| ReplayError::Input { index, source })?;
    }
    Ok(tournament)
}
