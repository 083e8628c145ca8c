//! Typed settings: game modes (seats, sides, parties, the rating window curve,
//! region relaxing, bot fill) and the engine's timings. Binaries parse flags
//! into these; the library never reads the environment.

use std::time::Duration;

use crate::error::MatchmakerError;

/// How far apart in rating two tickets may be, as a function of how long the
/// older one has waited: piecewise linear through `points`, flat after the last.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowCurve {
    points: Vec<(u64, f64)>,
}

impl WindowCurve {
    /// A curve through `(wait_ms, window)` points. Waits must increase
    /// strictly and windows must not shrink; there must be at least one point.
    pub fn new(points: Vec<(u64, f64)>) -> Result<Self, MatchmakerError> {
        if points.is_empty() {
            return Err(MatchmakerError::invalid("rating window", "needs at least one (wait, window) point"));
        }
        for pair in points.windows(2) {
            if pair[1].0 <= pair[0].0 || pair[1].1 < pair[0].1 {
                return Err(MatchmakerError::invalid(
                    "rating window",
                    "waits must increase and windows must not shrink from one point to the next",
                ));
            }
        }
        if points.iter().any(|(_, window)| !window.is_finite() || *window < 0.0) {
            return Err(MatchmakerError::invalid("rating window", "windows must be finite and non-negative"));
        }
        Ok(Self { points })
    }

    /// Parses `WAIT_S:WINDOW,WAIT_S:WINDOW,…`, e.g. `0:100,10:300,30:1000`.
    pub fn parse(spec: &str) -> Result<Self, MatchmakerError> {
        let points =
            spec.split(',')
                .map(|point| {
                    let (wait, window) = point.split_once(':').ok_or_else(|| {
                        MatchmakerError::invalid("rating window", format!("{point:?} is not WAIT_SECONDS:WINDOW"))
                    })?;
                    let wait: f64 = wait.trim().parse().map_err(|_| {
                        MatchmakerError::invalid("rating window", format!("wait {wait:?} is not a number"))
                    })?;
                    let window: f64 = window.trim().parse().map_err(|_| {
                        MatchmakerError::invalid("rating window", format!("window {window:?} is not a number"))
                    })?;
                    Ok(((wait.max(0.0) * 1000.0) as u64, window))
                })
                .collect::<Result<Vec<_>, MatchmakerError>>()?;
        Self::new(points)
    }

    /// The window after waiting `wait_ms`.
    pub fn window(&self, wait_ms: u64) -> f64 {
        let mut previous = self.points[0];
        if wait_ms <= previous.0 {
            return previous.1;
        }
        for &point in &self.points[1..] {
            if wait_ms <= point.0 {
                let fraction = (wait_ms - previous.0) as f64 / (point.0 - previous.0) as f64;
                return previous.1 + fraction * (point.1 - previous.1);
            }
            previous = point;
        }
        previous.1
    }
}

impl Default for WindowCurve {
    /// ±100 at once, ±300 after 10 s, ±1000 after 30 s.
    fn default() -> Self {
        Self { points: vec![(0, 100.0), (10_000, 300.0), (30_000, 1000.0)] }
    }
}

/// One game mode's matching rules.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeConfig {
    /// The name clients enqueue for.
    pub name: String,
    /// Sides (teams) per match.
    pub n_sides: u8,
    /// Seats on each side; a party may fill at most one side.
    pub seats_per_side: u8,
    /// Points a side needs to win (goes into the connect token).
    pub points_to_win: u8,
    /// Largest party accepted (at most `seats_per_side`).
    pub max_party: u8,
    /// Rating window by wait time.
    pub window: WindowCurve,
    /// A ticket with a region preference only meets tickets of that region
    /// until it has waited this long; after that, any region.
    pub region_relax_after_ms: u64,
    /// After this wait, empty seats may be filled by bots (when a bot hook is installed).
    pub bot_fill_after_ms: Option<u64>,
    /// A house-bot mode: a ticket never meets another ticket; every seat not
    /// on it is a bot's, at once. Enqueue is refused (`FailedPrecondition`)
    /// when no bot hook is installed.
    pub house_bots: bool,
    /// A queued ticket expires after this long.
    pub ticket_ttl_ms: u64,
}

impl ModeConfig {
    /// Two seats, one per side: `pong`.
    pub fn one_vs_one(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            n_sides: 2,
            seats_per_side: 1,
            points_to_win: 5,
            max_party: 1,
            window: WindowCurve::default(),
            region_relax_after_ms: 10_000,
            bot_fill_after_ms: None,
            house_bots: false,
            ticket_ttl_ms: 120_000,
        }
    }

    /// One player against one house bot, seated at once: `pong-bot`.
    pub fn against_house_bot(name: impl Into<String>) -> Self {
        Self { house_bots: true, bot_fill_after_ms: Some(0), ..Self::one_vs_one(name) }
    }

    /// Four seats, two per side, parties of two: `pong-doubles`.
    pub fn two_vs_two(name: impl Into<String>) -> Self {
        Self { seats_per_side: 2, max_party: 2, ..Self::one_vs_one(name) }
    }

    /// Seats per match.
    pub fn n_seats(&self) -> u8 {
        self.n_sides.saturating_mul(self.seats_per_side)
    }

    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<(), MatchmakerError> {
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(MatchmakerError::invalid("mode name", "must be 1 to 64 bytes"));
        }
        if self.n_sides == 0
            || self.seats_per_side == 0
            || u16::from(self.n_sides) * u16::from(self.seats_per_side) > 16
        {
            return Err(MatchmakerError::invalid("mode seats", "needs 1 to 16 seats in all"));
        }
        if self.max_party == 0 || self.max_party > self.seats_per_side {
            return Err(MatchmakerError::invalid("max party", "must be 1 to the seats on one side"));
        }
        if self.ticket_ttl_ms == 0 {
            return Err(MatchmakerError::invalid("ticket ttl", "must be positive"));
        }
        Ok(())
    }
}

/// The matchmaker engine's settings.
#[derive(Debug, Clone)]
pub struct MatchmakerConfig {
    /// The modes served.
    pub modes: Vec<ModeConfig>,
    /// How often a matching round runs.
    pub round_interval: Duration,
    /// How often watched tickets are re-read from the store (changes made by other replicas).
    pub watch_poll_interval: Duration,
    /// How long a finished ticket's state stays readable (for WatchTicket).
    pub ticket_retention_ms: u64,
    /// Rating of a player with no profile.
    pub default_rating: f64,
    /// How long a shard slot reserved for a match may stay unconfirmed by the
    /// claim of its tickets before any replica's round decides its fate (a
    /// replica killed mid-commit; see [`crate::registry`]), ms. A claim later
    /// than this is refused and the match's tickets stay queued, so it must
    /// comfortably exceed one commit (a few Redis round trips).
    pub reservation_confirm_ms: u64,
}

impl Default for MatchmakerConfig {
    fn default() -> Self {
        Self {
            modes: vec![ModeConfig::one_vs_one("pong"), ModeConfig::two_vs_two("pong-doubles")],
            round_interval: Duration::from_millis(50),
            watch_poll_interval: Duration::from_millis(100),
            ticket_retention_ms: 10 * 60 * 1000,
            default_rating: 1500.0,
            reservation_confirm_ms: 5_000,
        }
    }
}

impl MatchmakerConfig {
    /// The mode called `name`.
    pub fn mode(&self, name: &str) -> Option<&ModeConfig> {
        self.modes.iter().find(|mode| mode.name == name)
    }

    /// Checks every mode.
    pub fn validate(&self) -> Result<(), MatchmakerError> {
        if self.modes.is_empty() {
            return Err(MatchmakerError::invalid("modes", "at least one game mode is needed"));
        }
        for mode in &self.modes {
            mode.validate()?;
        }
        if self.reservation_confirm_ms == 0 {
            return Err(MatchmakerError::invalid("reservation_confirm_ms", "must be above 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_widens_linearly_between_points_and_stays_flat_after() {
        let curve = WindowCurve::parse("0:100, 10:300, 30:1000").unwrap();
        assert_eq!(curve.window(0), 100.0);
        assert_eq!(curve.window(5_000), 200.0);
        assert_eq!(curve.window(10_000), 300.0);
        assert_eq!(curve.window(20_000), 650.0);
        assert_eq!(curve.window(3_600_000), 1000.0);
    }

    #[test]
    fn bad_curves_are_refused_with_a_reason() {
        assert!(WindowCurve::parse("").is_err());
        assert!(WindowCurve::parse("10:100,5:200").is_err());
        assert!(WindowCurve::parse("0:300,10:100").is_err());
        assert!(WindowCurve::parse("0:abc").is_err());
        assert!(WindowCurve::new(vec![]).is_err());
    }

    #[test]
    fn modes_validate() {
        assert!(ModeConfig::one_vs_one("pong").validate().is_ok());
        assert!(ModeConfig::two_vs_two("d").validate().is_ok());
        let party_too_big = ModeConfig { max_party: 2, ..ModeConfig::one_vs_one("pong") };
        assert!(party_too_big.validate().is_err());
    }
}
