//! rally's bracket engine: single elimination, double elimination, Swiss and round robin,
//! in one or more stages, with best-of-N series.
//!
//! It does no IO, reads no clock and draws no random numbers: a [`Tournament`] is a pure
//! function of its [`Rules`], its entrants and the [`Input`]s applied to it, so anyone holding
//! those (the ledger does) rebuilds it with [`replay`]. It does not schedule matches, talk to
//! shards, deduplicate deliveries or persist anything; the tournaments service does. Collections
//! are ordered (`BTreeMap`), so no result depends on hashing.
//!
//! # Using it
//! [`Tournament::new`] checks the rules, seeds the entrants and makes the first games ready.
//! [`Tournament::ready_games`] lists the games to play now; each result goes in with
//! [`Tournament::apply`], which either applies it whole or returns an [`ApplyError`] and
//! changes nothing. After each input, compare `ready_games()` with the previous list to find
//! the games that just became ready.
//!
//! # Seeding and keys
//! [`Seeding::Rating`] orders entrants by rating, highest first, equal ratings by id, lowest
//! first; [`Seeding::Given`] keeps the order given. A game is named by a [`GameKey`] (stage,
//! round, table, game in series; 0-based, shown 1-based as `s1-r2-t3-g1`). Tables are
//! numbered over the real series of a round; byes are never games.
//!
//! # Series
//! Each stage plays best-of-`best_of` series (1, 3, 5 or 7). Only one game of a series is
//! ready at a time: the next one is created when the previous one has a result, until one side
//! has a majority. In elimination a drawn game does not count and another game follows (at
//! most 256 games). In Swiss and round robin a draw counts, and after `best_of` games without
//! a majority the side with more game wins takes the series, or it is drawn. A
//! [`GameOutcome::Forfeit`] gives the whole series to its winner; a
//! [`GameOutcome::DoubleForfeit`] is a lost series for both.
//!
//! # Formats
//! - **Single elimination.** The bracket has the next power of two of positions (at least 2);
//!   standard seed placement (for 8: 1–8, 4–5, 2–7, 3–6) makes seed 1 meet the last seed and
//!   seeds 1 and 2 meet only in the final. Empty positions are byes, so only the top seeds
//!   get byes, and a bye is a walkover (no game). Round `r` of the bracket is round `r` of the
//!   keys; the third-place match (between the semi-final losers, when `third_place`) is table 2
//!   of the final's round.
//! - **Double elimination.** A winners bracket as above (rounds `0..k` for `2^k` positions); its
//!   losers drop into a losers bracket (rounds `k..3k-2`): losers round 1 pairs the losers of
//!   winners round 1, then rounds alternate between taking in the losers of the next winners
//!   round (in reverse table order every other time, against early rematches) and pairing the
//!   survivors. The grand final (round `3k-2`) is the winners-bracket champion (home) against
//!   the losers-bracket champion (away). With `grand_final_reset`, if the away side wins a
//!   played grand final, a reset (round `3k-1`) decides; otherwise the reset never appears.
//!   Without forfeits every entrant but the champion goes out on their second lost series,
//!   except that without a reset the winners-bracket champion goes out on its first when it
//!   loses the grand final; a full bracket plays `2n-2` series, `2n-1` with a played reset.
//! - **Swiss.** `rounds` rounds; round `r+1` is paired when every series of round `r` is
//!   decided. With an odd number of players still in, the bye goes to the lowest-ranked player
//!   who has not had one (the lowest-ranked when all have); a bye counts as a won series
//!   (2 points, no opponent, point difference 0) from the moment the round is paired. The others are paired by a minimum-cost
//!   perfect matching (the blossom algorithm of `integer-blossom`, a maximum-weight matching
//!   underneath), where a pair costs, in strict priority: being a rematch (so rematches happen
//!   only when no pairing avoids them); the square of the pair's point difference (so players
//!   meet their own score group); and, inside a score group, both being in the same half of
//!   it (so its top half meets its bottom half, as in round 1 where seeds 1..n/2 meet seeds
//!   n/2+1..n). Among equally good pairings the matching's own deterministic choice stands.
//!   Tables go by the better player's rank; home is whoever has been home less often in the
//!   stage, the better-ranked on equal counts.
//! - **Round robin.** Berger tables: with `m` = the player count rounded up to even, `m-1`
//!   rounds; round 1 is `1–m, 2–(m-1), …`, and each next round adds `m/2` to every number but
//!   `m` (modulo `m-1`) while `m` changes side (for 6, round 2 is `6–4, 5–3, 1–2`). With an odd
//!   count `m` is a dummy: whoever meets it sits the round out, which scores nothing (everyone
//!   sits out exactly once). Rounds are made ready one at a time.
//!
//! # Stages
//! Stages play one after another. When a stage with `advance: Some(k)` is over, its top `k`
//! by that stage's own standings (skipping anyone withdrawn or disqualified) enter the next
//! stage, seeded by that rank: a five-round Swiss with `advance: Some(8)` then a single
//! elimination pairs Swiss rank 1 with rank 8.
//!
//! # Standings
//! [`Tournament::standings`] ranks everyone 1..=n, no shared ranks. Entrants who reached a
//! later stage rank above those who went out earlier; inside a stage:
//! - Swiss and round robin: anyone withdrawn or disqualified below everyone still in; then
//!   points (2 per won series, 1 per draw), then Buchholz (the sum of
//!   the points of every opponent met in the stage), then head-to-head, used only when exactly
//!   two players are level on points and Buchholz (more series won against the other), then
//!   point difference (game scores for minus against), then stage seed.
//! - Elimination: the champion; then those still in (most series won, fewest lost, seed); then
//!   those out, later round of going out first (the winner of the third-place match above its
//!   loser), then seed. In double elimination "later" follows the key round numbers, so
//!   losers-bracket rounds count above winners-bracket ones.
//!
//! The figures in a [`Standing`] (wins, losses, draws, points, Buchholz, point difference)
//! count the whole tournament; byes count as wins, walkovers count as nothing, forfeits as a
//! won or lost series with no score. `eliminated` is true for anyone withdrawn, disqualified,
//! knocked out (or finished third/fourth) in elimination, or not advanced from a stage.
//! [`Tournament::champion`] is the final's winner, or the first of the last stage's ranking
//! still in; none when the final was a double forfeit.
//!
//! # Withdrawals, forfeits, corrections
//! - [`Input::Withdraw`] and [`Input::Disqualify`]: the entrant's pending game, and every game
//!   later created for them, is at once a [`GameOutcome::Forfeit`] for the opponent (a
//!   [`GameOutcome::DoubleForfeit`] when both are out); such games appear in
//!   [`Tournament::games`] but never in `ready_games`. In Swiss they are no longer paired.
//!   Refused once the tournament is finished.
//! - A double forfeit in elimination advances nobody: the next opponent gets a walkover (no
//!   game), and in double elimination both sides are out at once.
//! - [`Input::Correct`] replaces a recorded result (not one made by a withdrawal) and rebuilds
//!   the tournament from the corrected history. It is refused with
//!   [`ApplyError::CorrectionTooLate`] when a game that already has a result would change
//!   players, outcome or vanish because of it, when a later round of the same Swiss stage has a
//!   result (its pairing used the old standings), or when a later stage has a result. Games
//!   made ready by the old result and not yet played are re-paired.
//! - A second result for the same game is refused ([`ApplyError::AlreadyHasResult`]):
//!   deduplicating deliveries by match id is the service's job.
//!
//! # Cost and memory
//! Every input is applied to a copy of the state, which replaces it only on success. Pairing
//! a Swiss round of `n` players is an `O(n³)` matching over an `n × n` cost matrix; its cost
//! depends on the score structure (for 1,024 players about 50 ms in round 5 and 35 ms in
//! round 2 on the development machine, see `benches/swiss.rs`). `integer-blossom` keeps its `O(n²)`
//! working buffers in a thread-local pool for reuse: a thread that paired 1,024 players holds
//! about 75 MB until it exits (about 1 MB for 128). Callers with large Swiss fields should
//! apply results from one thread (or a few), not from every thread of a pool. A correction
//! replays the whole corrected history.

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
