//! A best-of series between two entrants: its games and whether it is decided.

use crate::types::{GameOutcome, Side};

/// The most games one series can hold (the game index is a `u8`).
pub(crate) const MAX_GAMES: usize = 256;

/// One game of a series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GameRecord {
    /// `None` while the game is ready and waiting for its result.
    pub(crate) outcome: Option<GameOutcome>,
    /// The outcome was set by the engine because a side withdrew or was disqualified.
    pub(crate) forced: bool,
}

/// How a decided series ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SeriesResult {
    /// One side won.
    Won(Side),
    /// Neither side reached a majority in all the games (Swiss and round robin only).
    Draw,
    /// A double forfeit: both sides lose.
    DoubleLoss,
}

/// A series of games between two entrants (indices in seed order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Series {
    pub(crate) home: usize,
    pub(crate) away: usize,
    pub(crate) best_of: u8,
    /// Elimination: a drawn game does not count and another game follows.
    pub(crate) replay_draws: bool,
    /// The games created so far; the last one is pending while the series is undecided.
    pub(crate) games: Vec<GameRecord>,
}

impl Series {
    /// A new series whose first game is ready.
    pub(crate) fn new(home: usize, away: usize, best_of: u8, replay_draws: bool) -> Self {
        Series { home, away, best_of, replay_draws, games: vec![GameRecord { outcome: None, forced: false }] }
    }

    /// Games won by home, games won by away, drawn games (played games only).
    pub(crate) fn tally(&self) -> (u32, u32, u32) {
        let (mut home, mut away, mut draws) = (0, 0, 0);
        for game in &self.games {
            if let Some(GameOutcome::Played { home_score, away_score }) = &game.outcome {
                match home_score.cmp(away_score) {
                    std::cmp::Ordering::Greater => home += 1,
                    std::cmp::Ordering::Less => away += 1,
                    std::cmp::Ordering::Equal => draws += 1,
                }
            }
        }
        (home, away, draws)
    }

    /// The series result, once decided.
    pub(crate) fn result(&self) -> Option<SeriesResult> {
        for game in &self.games {
            match &game.outcome {
                Some(GameOutcome::Forfeit { winner }) => return Some(SeriesResult::Won(*winner)),
                Some(GameOutcome::DoubleForfeit) => return Some(SeriesResult::DoubleLoss),
                _ => {}
            }
        }
        let (home, away, draws) = self.tally();
        let majority = u32::from(self.best_of) / 2 + 1;
        if home >= majority {
            return Some(SeriesResult::Won(Side::Home));
        }
        if away >= majority {
            return Some(SeriesResult::Won(Side::Away));
        }
        if !self.replay_draws && home + away + draws >= u32::from(self.best_of) {
            return Some(match home.cmp(&away) {
                std::cmp::Ordering::Greater => SeriesResult::Won(Side::Home),
                std::cmp::Ordering::Less => SeriesResult::Won(Side::Away),
                std::cmp::Ordering::Equal => SeriesResult::Draw,
            });
        }
        None
    }

    /// Whether the last game waits for a result.
    pub(crate) fn pending(&self) -> bool {
        self.games.last().is_some_and(|game| game.outcome.is_none())
    }

    /// Home's game scores minus away's, over played games.
    pub(crate) fn point_difference(&self) -> i64 {
        self.games
            .iter()
            .map(|game| match &game.outcome {
                Some(GameOutcome::Played { home_score, away_score }) => i64::from(*home_score) - i64::from(*away_score),
                _ => 0,
            })
            .sum()
    }

    /// The entrant on `side`.
    pub(crate) fn entrant(&self, side: Side) -> usize {
        match side {
            Side::Home => self.home,
            Side::Away => self.away,
        }
    }
}
