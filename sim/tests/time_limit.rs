//! Every match ends: the time limit with sudden death, and a draw when sudden death
//! ends level, however well both sides defend.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{QUICK, connect_all, drain, finished};
use rally_protocol::{MatchId, Snapshot};
use rally_sim::autopilot::{Autopilot, AutopilotConfig};
use rally_sim::pong::INPUT_UP;
use rally_sim::{EndReason, Game, MatchOutcome, MatchSpec, Phase, PongWorld, SimEvent};

const M: MatchId = MatchId(3);

/// Players that never miss: they aim where the ball will cross their line, react every
/// tick and hold still only within a few wire units of it.
const PERFECT: AutopilotConfig = AutopilotConfig { dead_zone: 4, reaction_ticks: 1, aim_error: 0, anticipate: true };

/// One seat's player: an autopilot, or a paddle pinned to the top wall (it misses
/// everything below it) from a given match clock on.
struct Player {
    pilot: Autopilot,
    gives_up_at: Option<u32>,
}

/// Plays a two-seat match of `spec` until it finishes or `max_ticks` pass, and returns
/// its events, the clock tick (ticks since the first countdown) of each point, and the
/// outcome.
fn play(
    spec: MatchSpec,
    seed: u64,
    give_up: [Option<u32>; 2],
    max_ticks: u32,
) -> (Vec<SimEvent>, Option<MatchOutcome>) {
    let mut world = PongWorld::new(QUICK);
    world.create_match(M, spec, seed).unwrap();
    connect_all(&mut world, M, 2);
    let schema = PongWorld::schema(2);
    let mut players: Vec<Player> = (0..2)
        .map(|seat| Player {
            pilot: Autopilot::new(&schema, seat, PERFECT, u64::from(seat)).unwrap(),
            gives_up_at: give_up[usize::from(seat)],
        })
        .collect();
    let mut view = Snapshot::default();
    let mut events = Vec::new();
    let mut clock_start = None;
    for _ in 0..max_ticks {
        let clock = clock_start.map_or(0, |start| world.tick() - start);
        for (seat, player) in players.iter_mut().enumerate() {
            let seat = seat as u8;
            world.write_view(M, seat, &mut view).unwrap();
            let mut input = player.pilot.decide(&view);
            if player.gives_up_at.is_some_and(|at| clock >= at) {
                input = INPUT_UP;
            }
            world.set_input(M, seat, input).unwrap();
        }
        world.step();
        for event in drain(&mut world) {
            if clock_start.is_none() && matches!(event, SimEvent::PhaseChanged { phase: Phase::Countdown, .. }) {
                // The clock's first tick is the step after the one that entered the countdown.
                clock_start = Some(event.tick());
            }
            events.push(event);
        }
        if let Some(outcome) = finished(&events) {
            return (events, Some(outcome));
        }
    }
    (events, None)
}

fn spec(points_to_win: u8, time_limit_ticks: u32) -> MatchSpec {
    MatchSpec { n_seats: 2, points_to_win, time_limit_ticks }
}

#[test]
fn perfect_players_rally_without_end_but_the_clock_ends_the_match() {
    // Without a clock worth the name (a day), two perfect players are still level,
    // without a single point, after ten minutes of play: the defect this rule fixes.
    let endless = spec(1, 24 * 60 * 60 * 60);
    let (events, outcome) = play(endless, 5, [None, None], 10 * 60 * 60);
    assert_eq!(outcome, None, "perfect players let a point through");
    assert!(!events.iter().any(|event| matches!(event, SimEvent::PointScored { .. })));

    // With a two-minute limit the same players end level after sudden death: a draw,
    // exactly at regulation plus sudden death.
    let limited = spec(1, 2 * 60 * 60);
    let (events, outcome) = play(limited, 5, [None, None], 10 * 60 * 60);
    let outcome = outcome.expect("the match ends within its bound");
    assert_eq!((outcome.reason, outcome.winner, outcome.scores.clone()), (EndReason::TimeLimit, None, vec![0, 0]));
    let first_countdown = events.iter().find(|event| matches!(event, SimEvent::PhaseChanged { .. })).unwrap().tick();
    let finish = events.last().unwrap().tick();
    assert_eq!(finish - first_countdown, limited.max_play_ticks(), "the clock counts from the first countdown");
    assert!(outcome.duration_ticks <= limited.max_play_ticks() + 2, "{} ticks", outcome.duration_ticks);
}

#[test]
fn a_side_leading_at_the_time_limit_wins_then() {
    // Seat 1 gives up at once: side 0 scores, and leads when the clock runs out.
    let limit = 1_200;
    let (events, outcome) = play(spec(99, limit), 8, [None, Some(0)], 10_000);
    let outcome = outcome.expect("the match ends at the time limit");
    assert_eq!((outcome.reason, outcome.winner), (EndReason::TimeLimit, Some(0)));
    assert!(outcome.scores[0] > outcome.scores[1] && outcome.scores[0] < 99, "{:?}", outcome.scores);
    let first_countdown = events.iter().find(|event| matches!(event, SimEvent::PhaseChanged { .. })).unwrap().tick();
    assert_eq!(events.last().unwrap().tick() - first_countdown, limit);
}

#[test]
fn level_at_the_limit_the_next_point_wins() {
    // Perfect play to the limit, level at 0-0; in sudden death seat 0 gives up.
    let limit = 1_200;
    let (events, outcome) = play(spec(5, limit), 8, [Some(limit), None], 10_000);
    let outcome = outcome.expect("the sudden-death point ends the match");
    assert_eq!((outcome.reason, outcome.winner, outcome.scores.clone()), (EndReason::TimeLimit, Some(1), vec![0, 1]));
    let points: Vec<_> = events.iter().filter(|event| matches!(event, SimEvent::PointScored { .. })).collect();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].tick(), events.last().unwrap().tick(), "the match ends on the point, with no new countdown");
}

#[test]
fn reaching_the_points_to_win_before_the_limit_is_an_ordinary_win() {
    let (_, outcome) = play(spec(2, 60 * 60 * 60), 8, [None, Some(0)], 20_000);
    let outcome = outcome.expect("the match ends by score");
    assert_eq!((outcome.reason, outcome.winner, outcome.scores), (EndReason::Score, Some(0), vec![2, 0]));
}

#[test]
fn a_time_limit_of_zero_is_refused() {
    let mut world = PongWorld::new(QUICK);
    assert!(world.create_match(M, spec(5, 0), 1).is_err());
    assert_eq!(spec(5, 7).max_play_ticks(), 10);
    assert_eq!(spec(5, u32::MAX).max_play_ticks(), u32::MAX);
}
