//! rally's bracket engine: single elimination, double elimination, Swiss and round robin,
//! in one or more stages, with best-of-N series. (Full rules: see below once filled in.)
//!
//! It does no IO, reads no clock and draws no random numbers: a [`Tournament`] is a pure
//! function of its [`Rules`], its entrants and the [`Input`]s applied to it, so anyone holding
//! those (the ledger does) can rebuild it with [`replay`]. It does not schedule matches, talk
//! to shards or persist anything; the tournaments service does.

mod bracket;
mod error;
mod render;
mod round_robin;
mod series;
mod state;
mod swiss;
mod types;

pub use error::{ApplyError, ReplayError, RulesError};
pub use types::{
    Entrant, EntrantId, Format, Game, GameKey, GameOutcome, Input, ParseGameKeyError, Rules, Seeding, Side, Stage,
    Standing,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::state::State;

/// The most stages a tournament can have.
const MAX_STAGES: usize = 16;
/// The fewest and most entrants a tournament can have.
const ENTRANTS: std::ops::RangeInclusive<usize> = 2..=1024;

/// A tournament in progress (or finished).
///
/// It serializes as `{"rules": .., "entrants": [seed order], "inputs": [every accepted input]}`
/// and deserializes by replaying those inputs, so a stored tournament cannot hold a state
/// the engine would not reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "TournamentRecord", try_from = "TournamentRecord")]
pub struct Tournament {
    rules: Rules,
    seeds: Vec<Entrant>,
    /// Every accepted input, as given.
    inputs: Vec<Input>,
    /// The accepted results, withdrawals and disqualifications in order, each result
    /// carrying its latest (corrected) outcome: what a rebuild replays.
    effective: Vec<Input>,
    index_of: BTreeMap<EntrantId, usize>,
    state: State,
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

fn validate(rules: &Rules, entrants: &[Entrant]) -> Result<(), RulesError> {
    if rules.stages.is_empty() {
        return Err(RulesError::NoStages);
    }
    if rules.stages.len() > MAX_STAGES {
        return Err(RulesError::TooManyStages { count: rules.stages.len(), max: MAX_STAGES });
    }
    if !ENTRANTS.contains(&entrants.len()) {
        return Err(RulesError::EntrantCount { count: entrants.len() });
    }
    let mut ids = std::collections::BTreeSet::new();
    for entrant in entrants {
        if !ids.insert(entrant.id) {
            return Err(RulesError::DuplicateEntrant { id: entrant.id });
        }
    }
    let mut in_stage = entrants.len();
    for (index, stage) in rules.stages.iter().enumerate() {
        let number = index + 1;
        if ![1, 3, 5, 7].contains(&stage.best_of) {
            return Err(RulesError::BestOf { stage: number, best_of: stage.best_of });
        }
        if let Format::Swiss { rounds } = stage.format
            && (rounds == 0 || usize::from(rounds) > in_stage)
        {
            return Err(RulesError::SwissRounds { stage: number, rounds, entrants: in_stage });
        }
        let last = number == rules.stages.len();
        match stage.advance {
            None if last => {}
            Some(advance) if !last => {
                if advance < 2 || usize::from(advance) > in_stage {
                    return Err(RulesError::AdvanceOutOfRange { stage: number, advance, entrants: in_stage });
                }
                in_stage = usize::from(advance);
            }
            _ => return Err(RulesError::AdvanceMissing { stage: number }),
        }
    }
    Ok(())
}

impl Tournament {
    /// Checks the rules, seeds the entrants and pairs the first round.
    pub fn new(rules: Rules, mut entrants: Vec<Entrant>) -> Result<Self, RulesError> {
        validate(&rules, &entrants)?;
        if rules.seeding == Seeding::Rating {
            entrants.sort_by(|a, b| b.rating.cmp(&a.rating).then(a.id.cmp(&b.id)));
        }
        let index_of = entrants.iter().enumerate().map(|(index, entrant)| (entrant.id, index)).collect();
        let state = State::new(&rules, entrants.len());
        Ok(Tournament { rules, seeds: entrants, inputs: Vec::new(), effective: Vec::new(), index_of, state })
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
            Input::Correct { key, outcome, .. } => {
                let (state, effective) = self.corrected(*key, outcome)?;
                self.state = state;
                self.effective = effective;
            }
            _ => {
                let mut state = self.state.clone();
                apply_effective(&self.rules, &self.index_of, &mut state, input)?;
                self.state = state;
                self.effective.push(input.clone());
            }
        }
        self.inputs.push(input.clone());
        Ok(())
    }

    /// The state and effective inputs after correcting `key` to `outcome`.
    fn corrected(&self, key: GameKey, outcome: &GameOutcome) -> Result<(State, Vec<Input>), ApplyError> {
        let series = self.state.series.get(&(key.stage, key.round, key.table)).ok_or(ApplyError::NotReady { key })?;
        let record = series.games.get(usize::from(key.game)).ok_or(ApplyError::NotReady { key })?;
        let Some(current) = &record.outcome else { return Err(ApplyError::NoResultToCorrect { key }) };
        if record.forced {
            return Err(ApplyError::CorrectionOfWithdrawal { key });
        }
        if current == outcome {
            return Err(ApplyError::CorrectionUnchanged { key });
        }
        // Later stages were seeded from this stage's standings, and later Swiss rounds were
        // paired from them: a result there means it is too late.
        let swiss = matches!(self.rules.stages[usize::from(key.stage)].format, Format::Swiss { .. });
        for (series_key, later) in &self.state.series {
            let depends = series_key.0 > key.stage || (swiss && series_key.0 == key.stage && series_key.1 > key.round);
            if !depends {
                continue;
            }
            if let Some(game) = later.games.iter().position(|g| g.outcome.is_some()) {
                let dependent = GameKey {
                    stage: series_key.0,
                    round: series_key.1,
                    table: series_key.2,
                    game: u8::try_from(game).unwrap_or(u8::MAX),
                };
                return Err(ApplyError::CorrectionTooLate { key, dependent });
            }
        }
        let mut effective = self.effective.clone();
        let slot = effective
            .iter_mut()
            .find_map(|input| match input {
                Input::Result { key: logged, outcome } if *logged == key => Some(outcome),
                _ => None,
            })
            .ok_or(ApplyError::CorrectionOfWithdrawal { key })?;
        *slot = outcome.clone();
        let mut state = State::new(&self.rules, self.seeds.len());
        for input in &effective {
            if let Err(error) = apply_effective(&self.rules, &self.index_of, &mut state, input) {
                return Err(match input {
                    // The corrected outcome itself is refused (say, one draw too many).
                    Input::Result { key: logged, .. } if *logged == key => error,
                    Input::Result { key: dependent, .. } => {
                        ApplyError::CorrectionTooLate { key, dependent: *dependent }
                    }
                    _ => ApplyError::CorrectionTooLate { key, dependent: key },
                });
            }
        }
        // Every other game with a result must still exist between the same players with the
        // same outcome; otherwise something depended on the corrected result.
        for (series_key, old) in &self.state.series {
            for (game, record) in old.games.iter().enumerate() {
                let game_key = GameKey {
                    stage: series_key.0,
                    round: series_key.1,
                    table: series_key.2,
                    game: u8::try_from(game).unwrap_or(u8::MAX),
                };
                if game_key == key || record.outcome.is_none() {
                    continue;
                }
                let same = state.series.get(series_key).is_some_and(|new| {
                    new.home == old.home && new.away == old.away && new.games.get(game) == Some(record)
                });
                if !same {
                    return Err(ApplyError::CorrectionTooLate { key, dependent: game_key });
                }
            }
        }
        Ok((state, effective))
    }

    fn game(&self, key: (u8, u16, u16), game: usize, series: &series::Series) -> Game {
        Game {
            key: GameKey { stage: key.0, round: key.1, table: key.2, game: u8::try_from(game).unwrap_or(u8::MAX) },
            home: self.seeds[series.home].id,
            away: self.seeds[series.away].id,
        }
    }

    /// Every game playable now that has no result yet, in key order. Byes never appear.
    pub fn ready_games(&self) -> Vec<Game> {
        self.state
            .series
            .iter()
            .filter(|(_, series)| series.pending())
            .map(|(key, series)| self.game(*key, series.games.len() - 1, series))
            .collect()
    }

    /// Every game created so far with its outcome, in key order.
    pub fn games(&self) -> Vec<(Game, Option<GameOutcome>)> {
        let mut games = Vec::new();
        for (key, series) in &self.state.series {
            for (index, record) in series.games.iter().enumerate() {
                games.push((self.game(*key, index, series), record.outcome.clone()));
            }
        }
        games
    }

    /// Every entrant, ranked (see the crate docs for the order).
    pub fn standings(&self) -> Vec<Standing> {
        let stats = self.state.stats(None);
        let mut order: Vec<usize> = Vec::with_capacity(self.seeds.len());
        let mut placed = vec![false; self.seeds.len()];
        for position in (0..self.state.stages.len()).rev() {
            for entrant in self.state.stage_ranking(position) {
                if !placed[entrant] {
                    placed[entrant] = true;
                    order.push(entrant);
                }
            }
        }
        order.extend((0..self.seeds.len()).filter(|entrant| !placed[*entrant]));
        order
            .into_iter()
            .enumerate()
            .map(|(rank, entrant)| {
                let s = stats.get(&entrant).cloned().unwrap_or_default();
                Standing {
                    rank: u32::try_from(rank + 1).unwrap_or(u32::MAX),
                    entrant: self.seeds[entrant].id,
                    wins: s.wins,
                    losses: s.losses,
                    draws: s.draws,
                    points: s.points,
                    buchholz: s.buchholz,
                    point_difference: s.point_difference,
                    eliminated: self.state.eliminated(entrant),
                }
            })
            .collect()
    }

    /// Whether the last stage is over.
    pub fn is_finished(&self) -> bool {
        self.state.finished
    }

    /// The winner, once finished (none when the final was a double forfeit).
    pub fn champion(&self) -> Option<EntrantId> {
        self.state.champion().map(|entrant| self.seeds[entrant].id)
    }

    /// The bracket or table as plain text for a terminal: names, series scores, no ANSI.
    pub fn render(&self) -> String {
        render::render(&self.rules, &self.seeds, &self.state)
    }
}

/// Applies a result, withdrawal or disqualification to `state` (which may be left half
/// changed on error: callers work on a copy).
fn apply_effective(
    rules: &Rules,
    index_of: &BTreeMap<EntrantId, usize>,
    state: &mut State,
    input: &Input,
) -> Result<(), ApplyError> {
    match input {
        Input::Result { key, outcome } => state.record(*key, outcome)?,
        Input::Withdraw { entrant } | Input::Disqualify { entrant, .. } => {
            let index = *index_of.get(entrant).ok_or(ApplyError::UnknownEntrant { entrant: *entrant })?;
            if state.finished {
                return Err(ApplyError::Finished);
            }
            if state.out.contains_key(&index) {
                return Err(ApplyError::AlreadyOut { entrant: *entrant });
            }
            state.out.insert(index, matches!(input, Input::Disqualify { .. }));
        }
        Input::Correct { key, .. } => return Err(ApplyError::NoResultToCorrect { key: *key }),
    }
    state.progress(rules);
    Ok(())
}

/// Rebuilds a tournament from its rules, entrants and inputs.
pub fn replay(rules: Rules, entrants: Vec<Entrant>, inputs: &[Input]) -> Result<Tournament, ReplayError> {
    let mut tournament = Tournament::new(rules, entrants)?;
    for (index, input) in inputs.iter().enumerate() {
        tournament.apply(input).map_err(|source| ReplayError::Input { index, source })?;
    }
    Ok(tournament)
}
