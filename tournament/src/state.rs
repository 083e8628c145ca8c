//! The tournament's derived state: stages, series, withdrawals, and how they progress.

use std::collections::{BTreeMap, BTreeSet};

use crate::bracket::{self, Bracket, NodeState, Resolved};
use crate::error::ApplyError;
use crate::round_robin::{self, ScheduledRound};
use crate::series::{GameRecord, MAX_GAMES, Series, SeriesResult};
use crate::swiss;
use crate::types::{Format, GameKey, GameOutcome, Rules, Side};

/// A series' place: (stage, round, table).
pub(crate) type SeriesKey = (u8, u16, u16);

/// The part of a stage's state that depends on its format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StageKind {
    Bracket(Bracket),
    Swiss(SwissState),
    RoundRobin(RoundRobinState),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SwissState {
    pub(crate) rounds: u16,
    /// The bye of every round paired so far.
    pub(crate) byes: Vec<Option<usize>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RoundRobinState {
    /// Schedule in stage positions (indices into the stage's players).
    pub(crate) schedule: Vec<ScheduledRound>,
    /// Rounds whose series exist.
    pub(crate) created: usize,
}

/// A started stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StageState {
    pub(crate) index: u8,
    /// Entrants (indices in seed order) in stage seed order.
    pub(crate) players: Vec<usize>,
    pub(crate) kind: StageKind,
    pub(crate) done: bool,
}

impl StageState {
    /// The round byes of a Swiss stage.
    pub(crate) fn swiss_byes(&self) -> &[Option<usize>] {
        match &self.kind {
            StageKind::Swiss(swiss) => &swiss.byes,
            _ => &[],
        }
    }
}

/// Everything that follows from the rules, the seeds and the inputs so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) n_entrants: usize,
    pub(crate) stages: Vec<StageState>,
    pub(crate) series: BTreeMap<SeriesKey, Series>,
    /// Withdrawn (false) or disqualified (true) entrants.
    pub(crate) out: BTreeMap<usize, bool>,
    pub(crate) finished: bool,
}

/// Per-entrant figures over a set of series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    pub(crate) wins: u32,
    pub(crate) losses: u32,
    pub(crate) draws: u32,
    pub(crate) points: u32,
    pub(crate) point_difference: i64,
    pub(crate) opponents: Vec<usize>,
    pub(crate) buchholz: u32,
}

impl State {
    /// The state before any input: the first stage started.
    pub(crate) fn new(rules: &Rules, n_entrants: usize) -> Self {
        let mut state =
            State { n_entrants, stages: Vec::new(), series: BTreeMap::new(), out: BTreeMap::new(), finished: false };
        state.start_stage(rules, 0, (0..n_entrants).collect());
        state.progress(rules);
        state
    }

    fn start_stage(&mut self, rules: &Rules, index: usize, players: Vec<usize>) {
        let stage = &rules.stages[index];
        let kind = match stage.format {
            Format::SingleElimination { third_place } => StageKind::Bracket(bracket::single(&players, third_place)),
            Format::DoubleElimination { grand_final_reset } => {
                StageKind::Bracket(bracket::double(&players, grand_final_reset))
            }
            Format::Swiss { rounds } => StageKind::Swiss(SwissState { rounds, byes: Vec::new() }),
            Format::RoundRobin => {
                StageKind::RoundRobin(RoundRobinState { schedule: round_robin::berger(players.len()), created: 0 })
            }
        };
        self.stages.push(StageState { index: u8::try_from(index).unwrap_or(u8::MAX), players, kind, done: false });
    }

    /// Records the result of a ready game.
    pub(crate) fn record(&mut self, key: GameKey, outcome: &GameOutcome) -> Result<(), ApplyError> {
        let series = self.series.get_mut(&(key.stage, key.round, key.table)).ok_or(ApplyError::NotReady { key })?;
        let index = usize::from(key.game);
        match series.games.get(index) {
            Some(GameRecord { outcome: Some(_), .. }) => return Err(ApplyError::AlreadyHasResult { key }),
            Some(GameRecord { outcome: None, .. }) => {}
            None if series.result().is_some() => return Err(ApplyError::SeriesFinished { key }),
            None => return Err(ApplyError::NotReady { key }),
        }
        series.games[index].outcome = Some(outcome.clone());
        if series.result().is_none() {
            if series.games.len() >= MAX_GAMES {
                return Err(ApplyError::TooManyGames { key });
            }
            series.games.push(GameRecord { outcome: None, forced: false });
        }
        Ok(())
    }

    /// Runs everything that follows from the current results until nothing changes.
    pub(crate) fn progress(&mut self, rules: &Rules) {
        loop {
            let mut changed = self.forfeit_absent();
            changed |= self.progress_stage(rules);
            let Some(stage) = self.stages.last() else { break };
            if !self.finished && !stage.done && self.stage_is_done(stage) {
                let index = usize::from(stage.index);
                let last = self.stages.len() - 1;
                self.stages[last].done = true;
                match rules.stages[index].advance {
                    Some(k) if index + 1 < rules.stages.len() => {
                        let advancing: Vec<usize> = self
                            .stage_ranking(last)
                            .into_iter()
                            .filter(|entrant| !self.out.contains_key(entrant))
                            .take(usize::from(k))
                            .collect();
                        self.start_stage(rules, index + 1, advancing);
                    }
                    _ => self.finished = true,
                }
                changed = true;
            }
            if !changed {
                break;
            }
        }
    }

    /// Forfeits every pending game of an entrant who is out.
    fn forfeit_absent(&mut self) -> bool {
        let mut changed = false;
        for series in self.series.values_mut() {
            if !series.pending() {
                continue;
            }
            let home_out = self.out.contains_key(&series.home);
            let away_out = self.out.contains_key(&series.away);
            let outcome = match (home_out, away_out) {
                (true, true) => GameOutcome::DoubleForfeit,
                (true, false) => GameOutcome::Forfeit { winner: Side::Away },
                (false, true) => GameOutcome::Forfeit { winner: Side::Home },
                (false, false) => continue,
            };
            if let Some(last) = series.games.last_mut() {
                *last = GameRecord { outcome: Some(outcome), forced: true };
                changed = true;
            }
        }
        changed
    }

    fn stage_is_done(&self, stage: &StageState) -> bool {
        match &stage.kind {
            StageKind::Bracket(bracket) => bracket.is_done(),
            StageKind::Swiss(swiss) => {
                swiss.byes.len() >= usize::from(swiss.rounds) && self.round_is_done(stage.index, swiss.byes.len())
            }
            StageKind::RoundRobin(rr) => rr.created >= rr.schedule.len() && self.round_is_done(stage.index, rr.created),
        }
    }

    /// Whether every series of rounds `..rounds` of a stage is decided.
    fn round_is_done(&self, stage: u8, rounds: usize) -> bool {
        if rounds == 0 {
            return true;
        }
        let last = u16::try_from(rounds - 1).unwrap_or(u16::MAX);
        self.series.range((stage, last, 0)..=(stage, last, u16::MAX)).all(|(_, series)| series.result().is_some())
    }

    fn progress_stage(&mut self, rules: &Rules) -> bool {
        let Some(position) = self.stages.len().checked_sub(1) else { return false };
        if self.stages[position].done {
            return false;
        }
        let stage_index = self.stages[position].index;
        let best_of = rules.stages[usize::from(stage_index)].best_of;
        let mut stage_kind = self.stages[position].kind.clone();
        let changed = match &mut stage_kind {
            StageKind::Bracket(bracket) => self.progress_bracket(stage_index, best_of, bracket),
            StageKind::Swiss(swiss) => {
                if swiss.byes.len() < usize::from(swiss.rounds) && self.round_is_done(stage_index, swiss.byes.len()) {
                    self.pair_swiss_round(position, swiss, best_of);
                    true
                } else {
                    false
                }
            }
            StageKind::RoundRobin(rr) => {
                if rr.created < rr.schedule.len() && self.round_is_done(stage_index, rr.created) {
                    let round = u16::try_from(rr.created).unwrap_or(u16::MAX);
                    let players = &self.stages[position].players;
                    for (table, &(home, away)) in rr.schedule[rr.created].pairs.iter().enumerate() {
                        let table = u16::try_from(table).unwrap_or(u16::MAX);
                        self.series.insert(
                            (stage_index, round, table),
                            Series::new(players[home], players[away], best_of, false),
                        );
                    }
                    rr.created += 1;
                    true
                } else {
                    false
                }
            }
        };
        self.stages[position].kind = stage_kind;
        changed
    }

    fn progress_bracket(&mut self, stage: u8, best_of: u8, bracket: &mut Bracket) -> bool {
        let mut changed = false;
        for index in 0..bracket.nodes.len() {
            let node = &bracket.nodes[index];
            let key = (stage, node.round, node.table);
            match node.state {
                NodeState::Done(_) => {}
                NodeState::Playing => {
                    let Some(series) = self.series.get(&key) else { continue };
                    let resolved = match series.result() {
                        None => continue,
                        Some(SeriesResult::Won(side)) => Resolved {
                            winner: Some(series.entrant(side)),
                            loser: Some(series.entrant(side.other())),
                            double_loss: None,
                            played: true,
                            away_won: side == Side::Away,
                            skipped: false,
                        },
                        // Elimination series never draw (drawn games are replayed); treat a
                        // draw like a double loss so the bracket still moves on.
                        Some(SeriesResult::DoubleLoss | SeriesResult::Draw) => Resolved {
                            winner: None,
                            loser: None,
                            double_loss: Some((series.home, series.away)),
                            played: true,
                            away_won: false,
                            skipped: false,
                        },
                    };
                    bracket.nodes[index].state = NodeState::Done(resolved);
                    changed = true;
                }
                NodeState::Waiting => {
                    if let Some(grand_final) = node.reset_of {
                        let NodeState::Done(final_result) = bracket.nodes[grand_final].state else { continue };
                        if !(final_result.played && final_result.away_won) {
                            bracket.nodes[index].state = NodeState::Done(Resolved { skipped: true, ..final_result });
                            changed = true;
                            continue;
                        }
                    }
                    let (Some(home), Some(away)) = (bracket.resolve(node.home), bracket.resolve(node.away)) else {
                        continue;
                    };
                    let state = match (home, away) {
                        (Some(home), Some(away)) => {
                            self.series.insert(key, Series::new(home, away, best_of, true));
                            NodeState::Playing
                        }
                        (Some(alone), None) | (None, Some(alone)) => NodeState::Done(Resolved {
                            winner: Some(alone),
                            loser: None,
                            double_loss: None,
                            played: false,
                            away_won: false,
                            skipped: false,
                        }),
                        (None, None) => NodeState::Done(Resolved {
                            winner: None,
                            loser: None,
                            double_loss: None,
                            played: false,
                            away_won: false,
                            skipped: false,
                        }),
                    };
                    bracket.nodes[index].state = state;
                    changed = true;
                }
            }
        }
        changed
    }

    fn pair_swiss_round(&mut self, position: usize, swiss: &mut SwissState, best_of: u8) {
        let stage = self.stages[position].index;
        let round = u16::try_from(swiss.byes.len()).unwrap_or(u16::MAX);
        let stats = self.stats(Some(stage));
        let ranked: Vec<swiss::Candidate> = self
            .stage_ranking(position)
            .into_iter()
            .filter(|entrant| !self.out.contains_key(entrant))
            .map(|entrant| swiss::Candidate { entrant, points: stats.get(&entrant).map_or(0, |s| s.points) })
            .collect();
        let had_bye: BTreeSet<usize> = swiss.byes.iter().flatten().copied().collect();
        let mut played = BTreeSet::new();
        let mut home_games: BTreeMap<usize, u32> = BTreeMap::new();
        for (_, series) in self.series.range((stage, 0, 0)..=(stage, u16::MAX, u16::MAX)) {
            played.insert((series.home.min(series.away), series.home.max(series.away)));
            *home_games.entry(series.home).or_default() += 1;
        }
        let (pairs, bye) = swiss::pair(&ranked, &had_bye, &played, &home_games);
        for (table, (home, away)) in pairs.into_iter().enumerate() {
            let table = u16::try_from(table).unwrap_or(u16::MAX);
            self.series.insert((stage, round, table), Series::new(home, away, best_of, false));
        }
        swiss.byes.push(bye);
    }

    /// Figures per entrant over one stage (`Some`) or the whole tournament (`None`).
    pub(crate) fn stats(&self, stage: Option<u8>) -> BTreeMap<usize, Stats> {
        let mut stats: BTreeMap<usize, Stats> = BTreeMap::new();
        for stage_state in &self.stages {
            if stage.is_some_and(|s| s != stage_state.index) {
                continue;
            }
            for entrant in &stage_state.players {
                stats.entry(*entrant).or_default();
            }
            for bye in stage_state.swiss_byes().iter().flatten() {
                let entry = stats.entry(*bye).or_default();
                entry.wins += 1;
                entry.points += 2;
            }
        }
        for (key, series) in &self.series {
            if stage.is_some_and(|s| s != key.0) {
                continue;
            }
            let Some(result) = series.result() else { continue };
            let difference = series.point_difference();
            let (home, away) = (series.home, series.away);
            {
                let entry = stats.entry(home).or_default();
                entry.point_difference += difference;
                entry.opponents.push(away);
            }
            {
                let entry = stats.entry(away).or_default();
                entry.point_difference -= difference;
                entry.opponents.push(home);
            }
            match result {
                SeriesResult::Won(side) => {
                    let winner = stats.entry(series.entrant(side)).or_default();
                    winner.wins += 1;
                    winner.points += 2;
                    stats.entry(series.entrant(side.other())).or_default().losses += 1;
                }
                SeriesResult::Draw => {
                    for entrant in [home, away] {
                        let entry = stats.entry(entrant).or_default();
                        entry.draws += 1;
                        entry.points += 1;
                    }
                }
                SeriesResult::DoubleLoss => {
                    for entrant in [home, away] {
                        stats.entry(entrant).or_default().losses += 1;
                    }
                }
            }
        }
        let points: BTreeMap<usize, u32> = stats.iter().map(|(entrant, s)| (*entrant, s.points)).collect();
        for entry in stats.values_mut() {
            entry.buchholz = entry.opponents.iter().map(|o| points.get(o).copied().unwrap_or(0)).sum();
        }
        stats
    }

    /// The players of the started stage at `position`, best first (see the crate docs).
    pub(crate) fn stage_ranking(&self, position: usize) -> Vec<usize> {
        let stage = &self.stages[position];
        let seed_position: BTreeMap<usize, usize> =
            stage.players.iter().enumerate().map(|(pos, entrant)| (*entrant, pos)).collect();
        let stats = self.stats(Some(stage.index));
        let seed_of = |entrant: &usize| seed_position.get(entrant).copied().unwrap_or(usize::MAX);
        let mut order = stage.players.clone();
        match &stage.kind {
            StageKind::Bracket(bracket) => {
                let values = placement_values(bracket);
                let champion = bracket.champion();
                let stat = |entrant: &usize| stats.get(entrant).cloned().unwrap_or_default();
                order.sort_by_key(|entrant| {
                    let s = stat(entrant);
                    let is_champion = champion == Some(*entrant);
                    let value = values.get(entrant).copied();
                    (
                        !is_champion,
                        value.is_some(),
                        std::cmp::Reverse(value.unwrap_or(0)),
                        std::cmp::Reverse(s.wins),
                        s.losses,
                        seed_of(entrant),
                    )
                });
            }
            StageKind::Swiss(_) | StageKind::RoundRobin(_) => {
                let stat = |entrant: &usize| stats.get(entrant).cloned().unwrap_or_default();
                // Whoever withdrew or was disqualified ranks below everyone still in.
                order.sort_by_key(|entrant| {
                    let s = stat(entrant);
                    (
                        self.out.contains_key(entrant),
                        std::cmp::Reverse(s.points),
                        std::cmp::Reverse(s.buchholz),
                        std::cmp::Reverse(s.point_difference),
                        seed_of(entrant),
                    )
                });
                // Head-to-head decides between exactly two players level on points and
                // Buchholz, before point difference.
                let mut start = 0;
                while start < order.len() {
                    let level = |entrant: &usize| {
                        let s = stat(entrant);
                        (self.out.contains_key(entrant), s.points, s.buchholz)
                    };
                    let mut end = start + 1;
                    while end < order.len() && level(&order[end]) == level(&order[start]) {
                        end += 1;
                    }
                    if end - start == 2 && self.head_to_head(stage.index, order[start + 1], order[start]) {
                        order.swap(start, start + 1);
                    }
                    start = end;
                }
            }
        }
        order
    }

    /// Whether `a` won more series against `b` than `b` against `a` in a stage.
    fn head_to_head(&self, stage: u8, a: usize, b: usize) -> bool {
        let (mut a_wins, mut b_wins) = (0u32, 0u32);
        for (_, series) in self.series.range((stage, 0, 0)..=(stage, u16::MAX, u16::MAX)) {
            if !((series.home == a && series.away == b) || (series.home == b && series.away == a)) {
                continue;
            }
            if let Some(SeriesResult::Won(side)) = series.result() {
                if series.entrant(side) == a {
                    a_wins += 1;
                } else {
                    b_wins += 1;
                }
            }
        }
        a_wins > b_wins
    }

    /// Whether an entrant is out of the running.
    pub(crate) fn eliminated(&self, entrant: usize) -> bool {
        if self.out.contains_key(&entrant) {
            return true;
        }
        let Some(stage) = self.stages.iter().rev().find(|stage| stage.players.contains(&entrant)) else {
            return true;
        };
        if self.stages.last().is_none_or(|last| last.index != stage.index) {
            return true;
        }
        match &stage.kind {
            StageKind::Bracket(bracket) => placement_values(bracket).contains_key(&entrant),
            _ => false,
        }
    }

    /// The champion: the last stage's winner once the tournament is finished.
    pub(crate) fn champion(&self) -> Option<usize> {
        if !self.finished {
            return None;
        }
        let position = self.stages.len().checked_sub(1)?;
        match &self.stages[position].kind {
            StageKind::Bracket(bracket) => bracket.champion(),
            _ => self.stage_ranking(position).into_iter().find(|entrant| !self.out.contains_key(entrant)),
        }
    }
}

/// Placement values of entrants who are done in a bracket (knocked out, or finished third):
/// four times the round they went out in, plus one for winning the third-place match.
pub(crate) fn placement_values(bracket: &Bracket) -> BTreeMap<usize, u32> {
    let mut values = BTreeMap::new();
    for (index, node) in bracket.nodes.iter().enumerate() {
        let NodeState::Done(resolved) = node.state else { continue };
        if resolved.skipped {
            continue;
        }
        if let Some((home, away)) = resolved.double_loss {
            values.insert(home, node.loser_value);
            values.insert(away, node.loser_value);
        }
        if let Some(loser) = resolved.loser
            && bracket.loser_is_out(index)
        {
            values.insert(loser, node.loser_value);
        }
        if let (Some(winner), Some(value)) = (resolved.winner, node.winner_value) {
            values.insert(winner, value);
        }
    }
    values
}
