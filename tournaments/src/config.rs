//! Typed settings of the tournament service. Binaries parse flags into these;
//! the library never reads the environment.

use std::path::PathBuf;
use std::time::Duration;

/// The consumer group the service reads results in (its own: every group
/// sees every result).
pub const RESULTS_GROUP: &str = "tournaments";

/// A game mode tournaments may be played in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TournamentMode {
    /// Its name, as the shards know it (`pong`).
    pub name: String,
    /// Points a side needs to win a match.
    pub points_to_win: u8,
}

/// Settings of the tournament service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TournamentsConfig {
    /// Modes tournaments may use; the first is the default.
    pub modes: Vec<TournamentMode>,
    /// Rating of a player the rating source knows nothing about.
    pub default_rating: i32,
    /// How long a player has to connect to a scheduled match: the connect
    /// tokens' lifetime. A seat still empty once the other is in is
    /// forfeited by the shard.
    pub no_show: Duration,
    /// How long the shard waits for a match to fill before abandoning it
    /// (its lifecycle's fill timeout).
    pub fill_timeout: Duration,
    /// The match time limit the shard plays to (regulation).
    pub time_limit: Duration,
    /// Added to the deadline for delivery delays.
    pub deadline_slack: Duration,
    /// Player ids of the deployment's operators: they may Correct and
    /// Disqualify in every tournament (organisers only in their own).
    pub operators: Vec<u64>,
    /// Where shards write `<match id>.replay` files; each counted match's
    /// replay is copied into the ledger from here. `None`: results are
    /// logged without replays.
    pub replay_dir: Option<PathBuf>,
    /// How often [`crate::TournamentDirector::start`] advances lifecycles.
    pub tick_interval: Duration,
    /// This process's consumer name in the [`RESULTS_GROUP`] group. Keep it
    /// stable across restarts of one process slot, so a restarted process
    /// finishes its own pending results at once; the random default's are
    /// taken over by another consumer after the bus's idle limit (30 s).
    pub consumer: String,
}

impl Default for TournamentsConfig {
    /// Pong to 5 points; 60 s to show up, 30 s to fill, 5 minutes of play,
    /// 30 s of slack; ticks every 250 ms.
    fn default() -> Self {
        Self {
            modes: vec![TournamentMode { name: "pong".into(), points_to_win: 5 }],
            default_rating: 1500,
            no_show: Duration::from_secs(60),
            fill_timeout: Duration::from_secs(30),
            time_limit: Duration::from_secs(u64::from(rally_protocol::token::DEFAULT_TIME_LIMIT_S)),
            deadline_slack: Duration::from_secs(30),
            operators: Vec::new(),
            replay_dir: None,
            tick_interval: Duration::from_millis(250),
            consumer: format!("tournaments-{:08x}", rand::random::<u32>()),
        }
    }
}

impl TournamentsConfig {
    /// How long after its tokens are minted a match without a result counts
    /// as a double forfeit (its shard never created it, or lost its result):
    /// the no-show window + the fill timeout + the time limit × 1.5 (sudden
    /// death and pauses) + the slack.
    pub fn match_deadline(&self) -> Duration {
        self.no_show + self.fill_timeout + self.time_limit * 3 / 2 + self.deadline_slack
    }

    /// The mode named `name` (the default for an empty name).
    pub fn mode(&self, name: &str) -> Option<&TournamentMode> {
        if name.is_empty() {
            return self.modes.first();
        }
        self.modes.iter().find(|mode| mode.name == name)
    }
}
