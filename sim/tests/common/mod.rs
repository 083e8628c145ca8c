//! Helpers shared by the integration tests: specs, connection, event draining and
//! autopilot-driven play.

#![allow(dead_code, reason = "each test binary uses a different part of the helpers")]

use rally_protocol::{MatchId, Snapshot};
use rally_sim::autopilot::{Autopilot, AutopilotConfig};
use rally_sim::{Game, LifecycleConfig, MatchOutcome, MatchSpec, SimEvent};

/// Short timings so tests reach every phase in a few hundred ticks.
pub(crate) const QUICK: LifecycleConfig =
    LifecycleConfig { countdown_ticks: 5, forfeit_after_ticks: 40, fill_timeout_ticks: 100 };

pub(crate) fn spec(n_seats: u8, points_to_win: u8) -> MatchSpec {
    MatchSpec { n_seats, points_to_win, time_limit_ticks: 60 * 60 * 60 }
}

pub(crate) fn connect_all<G: Game>(game: &mut G, match_id: MatchId, n_seats: u8) {
    for seat in 0..n_seats {
        game.set_seat_connected(match_id, seat, true).unwrap();
    }
}

pub(crate) fn drain<G: Game>(game: &mut G) -> Vec<SimEvent> {
    std::iter::from_fn(|| game.poll_event()).collect()
}

pub(crate) fn finished(events: &[SimEvent]) -> Option<MatchOutcome> {
    events.iter().find_map(|event| match event {
        SimEvent::MatchFinished { outcome, .. } => Some(outcome.clone()),
        _ => None,
    })
}

/// One autopilot per seat of a match, playing through the views like clients.
#[derive(Debug)]
pub(crate) struct Pilots {
    pilots: Vec<Autopilot>,
    view: Snapshot,
}

impl Pilots {
    pub(crate) fn new<G: Game>(n_seats: u8, seed: u64, config: AutopilotConfig) -> Self {
        let schema = G::schema(n_seats);
        let pilots = (0..n_seats)
            .map(|seat| Autopilot::new(&schema, seat, config, seed.wrapping_add(u64::from(seat))).unwrap())
            .collect();
        Self { pilots, view: Snapshot::default() }
    }

    /// Imperfect players, so points get scored.
    pub(crate) fn sloppy<G: Game>(n_seats: u8, seed: u64) -> Self {
        let config = AutopilotConfig { dead_zone: 32, reaction_ticks: 5, aim_error: 700, anticipate: false };
        Self::new::<G>(n_seats, seed, config)
    }

    /// Reads each seat's view and sets its input for the next step.
    pub(crate) fn play<G: Game>(&mut self, game: &mut G, match_id: MatchId) {
        for (seat, pilot) in self.pilots.iter_mut().enumerate() {
            let seat = seat as u8;
            game.write_view(match_id, seat, &mut self.view).unwrap();
            let input = pilot.decide(&self.view);
            game.set_input(match_id, seat, input).unwrap();
        }
    }
}
