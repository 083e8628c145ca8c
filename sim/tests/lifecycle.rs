//! The life of a match through the game-agnostic API: waiting, countdown, play, points,
//! the end (by score, forfeit or abandonment), doubles, views and refused calls.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{Pilots, QUICK, connect_all, drain, finished, spec};
use rally_protocol::{MatchId, Snapshot};
use rally_sim::pong::geometry::{BALL_HALF, BALL_MAX_X, BALL_MIN_X, PADDLE_HALF_WIDTH, WIRE_SHIFT};
use rally_sim::pong::{INPUT_DOWN, INPUT_UP};
use rally_sim::{EndReason, Game, LifecycleConfig, MatchOutcome, Phase, PongWorld, SimError, SimEvent};

const M: MatchId = MatchId(7);

fn world_with_match(n_seats: u8, points_to_win: u8) -> PongWorld {
    let mut world = PongWorld::new(QUICK);
    world.create_match(M, spec(n_seats, points_to_win), 1234).unwrap();
    world
}

fn step_n(world: &mut PongWorld, ticks: u32) -> Vec<SimEvent> {
    let mut events = Vec::new();
    for _ in 0..ticks {
        world.step();
        events.extend(drain(world));
    }
    events
}

fn view(world: &PongWorld, seat: u8) -> (Snapshot, rally_protocol::Schema) {
    let mut out = Snapshot::default();
    world.write_view(M, seat, &mut out).unwrap();
    (out, PongWorld::schema(2))
}

fn field(view: &Snapshot, schema: &rally_protocol::Schema, name: &str) -> i32 {
    view.values[schema.index_of(name).unwrap()]
}

/// Plays a match with sloppy autopilots until it finishes; returns every event.
fn play_out(world: &mut PongWorld, n_seats: u8, max_ticks: u32) -> Vec<SimEvent> {
    let mut pilots = Pilots::sloppy::<PongWorld>(n_seats, 11);
    let mut events = Vec::new();
    for _ in 0..max_ticks {
        pilots.play(world, M);
        world.step();
        events.extend(drain(world));
        if finished(&events).is_some() {
            break;
        }
    }
    events
}

#[test]
fn waits_for_every_seat_then_counts_down_then_plays() {
    let mut world = world_with_match(2, 5);
    world.set_seat_connected(M, 0, true).unwrap();
    assert!(step_n(&mut world, 5).is_empty());
    assert_eq!(world.phase(M).unwrap(), Phase::Waiting);
    // A seat that connected once counts as filled even if it left again.
    world.set_seat_connected(M, 0, false).unwrap();
    world.set_seat_connected(M, 1, true).unwrap();
    let events = step_n(&mut world, 1);
    assert_eq!(events, [SimEvent::PhaseChanged { match_id: M, tick: 6, phase: Phase::Countdown }]);
    world.set_seat_connected(M, 0, true).unwrap();

    let (start, schema) = view(&world, 1);
    assert_eq!(field(&start, &schema, "phase"), Phase::Countdown as i32);
    assert_eq!(field(&start, &schema, "countdown"), QUICK.countdown_ticks as i32);
    assert_eq!(field(&start, &schema, "ball_vx"), 0, "the ball rests during the countdown");
    assert!(step_n(&mut world, QUICK.countdown_ticks - 1).is_empty());
    assert_eq!(field(&view(&world, 1).0, &schema, "countdown"), 1);
    let events = step_n(&mut world, 1);
    assert_eq!(
        events,
        [SimEvent::PhaseChanged { match_id: M, tick: 6 + QUICK.countdown_ticks, phase: Phase::Playing }]
    );
    let (playing, schema) = view(&world, 1);
    assert_ne!(field(&playing, &schema, "ball_vx"), 0, "served");
    assert_eq!(field(&playing, &schema, "seat"), 1);
    assert_eq!(playing.tick, world.tick());
}

#[test]
fn first_to_n_wins_and_finishes_exactly_once() {
    let mut world = world_with_match(2, 3);
    connect_all(&mut world, M, 2);
    let events = play_out(&mut world, 2, 50_000);
    let outcome = finished(&events).expect("the match ends");
    assert_eq!(outcome.reason, EndReason::Score);
    let winner = usize::from(outcome.winner.unwrap());
    assert_eq!(outcome.scores[winner], 3);
    assert!(outcome.scores[1 - winner] < 3);
    assert_eq!(outcome.seat_sides, [0, 1]);
    assert!(outcome.forfeited.is_empty());
    assert_eq!(world.scores(M).unwrap().to_vec(), outcome.scores);

    // Every point was announced, with running scores, then a new countdown or the end.
    let points: Vec<&SimEvent> = events.iter().filter(|event| matches!(event, SimEvent::PointScored { .. })).collect();
    assert_eq!(points.len() as u32, outcome.scores.iter().sum::<u32>());
    if let SimEvent::PointScored { scores, .. } = points.last().unwrap() {
        assert_eq!(*scores, outcome.scores);
    }
    let phases: Vec<Phase> = events
        .iter()
        .filter_map(|event| match event {
            SimEvent::PhaseChanged { phase, .. } => Some(*phase),
            _ => None,
        })
        .collect();
    assert_eq!(phases.first(), Some(&Phase::Countdown));
    assert_eq!(phases.last(), Some(&Phase::Finished));
    assert_eq!(phases.iter().filter(|&&phase| phase == Phase::Countdown).count(), points.len());
    let finish_tick = events.last().unwrap().tick();
    assert_eq!(outcome.duration_ticks, finish_tick, "created at world tick 0");

    // Frozen: no more events, no more change, inputs and connections ignored.
    let hash = world.match_hash(M).unwrap();
    world.set_input(M, 0, INPUT_UP).unwrap();
    world.set_seat_connected(M, 1, false).unwrap();
    assert!(step_n(&mut world, 2 * QUICK.forfeit_after_ticks).is_empty());
    assert_eq!(world.match_hash(M).unwrap(), hash);
    assert_eq!(world.phase(M).unwrap(), Phase::Finished);
    world.remove_match(M);
    assert_eq!(world.n_matches(), 0);
    assert_eq!(world.match_hash(M), Err(SimError::UnknownMatch(M)));
}

fn start_playing(world: &mut PongWorld, n_seats: u8) {
    connect_all(world, M, n_seats);
    step_n(world, 1 + QUICK.countdown_ticks);
    assert_eq!(world.phase(M).unwrap(), Phase::Playing);
}

#[test]
fn an_empty_seat_forfeits_after_the_timeout() {
    let mut world = world_with_match(2, 99);
    start_playing(&mut world, 2);
    world.set_seat_connected(M, 1, false).unwrap();
    let left_at = world.tick();
    assert!(
        step_n(&mut world, QUICK.forfeit_after_ticks - 1)
            .iter()
            .all(|event| !matches!(event, SimEvent::MatchFinished { .. }))
    );
    let events = step_n(&mut world, 1);
    let outcome = finished(&events).expect("forfeited");
    assert_eq!(events.last().unwrap().tick(), left_at + QUICK.forfeit_after_ticks);
    assert_eq!(outcome.reason, EndReason::Forfeit);
    assert_eq!(outcome.winner, Some(0));
    assert_eq!(outcome.forfeited, [1]);
}

#[test]
fn returning_before_the_timeout_prevents_the_forfeit() {
    let mut world = world_with_match(2, 99);
    start_playing(&mut world, 2);
    for _ in 0..3 {
        world.set_seat_connected(M, 0, false).unwrap();
        step_n(&mut world, QUICK.forfeit_after_ticks - 1);
        world.set_seat_connected(M, 0, true).unwrap();
        step_n(&mut world, 1);
    }
    let events = step_n(&mut world, 3 * QUICK.forfeit_after_ticks);
    assert!(finished(&events).is_none());
    assert_ne!(world.phase(M).unwrap(), Phase::Finished);
}

#[test]
fn a_match_never_filled_is_abandoned() {
    let mut world = world_with_match(2, 5);
    world.set_seat_connected(M, 0, true).unwrap();
    assert!(step_n(&mut world, QUICK.fill_timeout_ticks - 1).is_empty());
    let events = step_n(&mut world, 1);
    let outcome = finished(&events).expect("abandoned");
    assert_eq!(outcome.reason, EndReason::Abandoned);
    assert_eq!(outcome.winner, None);
    assert_eq!(outcome.duration_ticks, QUICK.fill_timeout_ticks);
    assert_eq!(events.iter().filter(|event| matches!(event, SimEvent::MatchFinished { .. })).count(), 1);
}

#[test]
fn everyone_leaving_abandons_the_match() {
    let mut world = world_with_match(2, 5);
    start_playing(&mut world, 2);
    world.set_seat_connected(M, 0, false).unwrap();
    world.set_seat_connected(M, 1, false).unwrap();
    let outcome = finished(&step_n(&mut world, QUICK.forfeit_after_ticks)).expect("abandoned");
    assert_eq!(outcome.reason, EndReason::Abandoned);
    assert_eq!(outcome.winner, None);
    assert_eq!(outcome.forfeited, [0, 1]);
}

#[test]
fn the_first_to_leave_forfeits() {
    let mut world = world_with_match(2, 5);
    start_playing(&mut world, 2);
    world.set_seat_connected(M, 0, false).unwrap();
    step_n(&mut world, 1);
    world.set_seat_connected(M, 1, false).unwrap();
    let outcome = finished(&step_n(&mut world, QUICK.forfeit_after_ticks)).expect("forfeited");
    assert_eq!(outcome.reason, EndReason::Forfeit);
    assert_eq!(outcome.winner, Some(1));
}

#[test]
fn a_seat_that_leaves_forfeits_on_the_next_tick_and_cannot_return() {
    let mut world = world_with_match(2, 99);
    start_playing(&mut world, 2);
    let left_at = world.tick();
    world.leave_seat(M, 1).unwrap();
    world.set_seat_connected(M, 1, true).unwrap();
    let events = step_n(&mut world, 1);
    let outcome = finished(&events).expect("forfeited at once, not after the timeout");
    assert_eq!(events.last().unwrap().tick(), left_at + 1);
    assert_eq!(outcome.reason, EndReason::Forfeit);
    assert_eq!(outcome.winner, Some(0));
    assert_eq!(outcome.forfeited, [1]);
}

#[test]
fn leaving_a_match_still_waiting_abandons_it() {
    let mut world = world_with_match(2, 5);
    world.set_seat_connected(M, 0, true).unwrap();
    step_n(&mut world, 3);
    world.leave_seat(M, 0).unwrap();
    let outcome = finished(&step_n(&mut world, 1)).expect("abandoned");
    assert_eq!(outcome.reason, EndReason::Abandoned);
    assert_eq!(outcome.winner, None);
    assert_eq!(world.leave_seat(M, 2), Err(SimError::BadSeat { seat: 2, n_seats: 2 }));
}

#[test]
fn doubles_play_to_a_result() {
    let mut world = world_with_match(4, 3);
    connect_all(&mut world, M, 4);
    let events = play_out(&mut world, 4, 50_000);
    let outcome = finished(&events).expect("the match ends");
    assert_eq!(outcome.reason, EndReason::Score);
    assert_eq!(outcome.seat_sides, [0, 1, 0, 1]);
    assert_eq!(outcome.scores.len(), 2);
    assert_eq!(outcome.scores[usize::from(outcome.winner.unwrap())], 3);
    let schema = PongWorld::schema(4);
    let mut out = Snapshot::default();
    world.write_view(M, 3, &mut out).unwrap();
    assert_eq!(out.values.len(), schema.len());
}

#[test]
fn doubles_forfeit_goes_against_the_seat_side() {
    let mut world = world_with_match(4, 3);
    start_playing(&mut world, 4);
    world.set_seat_connected(M, 2, false).unwrap();
    let outcome: MatchOutcome = finished(&step_n(&mut world, QUICK.forfeit_after_ticks)).expect("forfeited");
    assert_eq!(outcome.reason, EndReason::Forfeit);
    assert_eq!(outcome.winner, Some(1));
    assert_eq!(outcome.forfeited, [2]);
}

#[test]
fn paddles_move_at_a_fixed_speed_and_stay_in_the_field() {
    let mut world = world_with_match(2, 5);
    start_playing(&mut world, 2);
    let schema = PongWorld::schema(2);
    let y0 = field(&view(&world, 0).0, &schema, "paddle_y_0");
    world.set_input(M, 0, INPUT_UP).unwrap();
    world.step();
    let (after, _) = view(&world, 0);
    let vy = field(&after, &schema, "paddle_vy_0");
    assert!(vy < 0);
    assert_eq!(field(&after, &schema, "paddle_y_0"), y0 + vy, "the velocity predicts the move exactly");
    // Unknown intents stop, and the last input repeats without new calls.
    world.set_input(M, 0, 77).unwrap();
    world.step();
    assert_eq!(field(&view(&world, 0).0, &schema, "paddle_vy_0"), 0);
    world.set_input(M, 0, INPUT_DOWN).unwrap();
    for _ in 0..200 {
        world.step();
    }
    let (bottom, _) = view(&world, 0);
    assert_eq!(field(&bottom, &schema, "paddle_vy_0"), 0, "stopped by the wall");
    let max_y = rally_sim::pong::geometry::PADDLE_MAX_Y >> WIRE_SHIFT;
    assert_eq!(field(&bottom, &schema, "paddle_y_0"), max_y);
}

#[test]
fn views_predict_straight_flight_exactly() {
    let mut world = world_with_match(2, 99);
    connect_all(&mut world, M, 2);
    let schema = PongWorld::schema(2);
    let mut pilots = Pilots::sloppy::<PongWorld>(2, 5);
    let (mut straight, mut bent) = (0, 0);
    let mut before = Snapshot::default();
    world.write_view(M, 0, &mut before).unwrap();
    for _ in 0..3_000 {
        pilots.play(&mut world, M);
        world.step();
        drain(&mut world);
        let mut after = Snapshot::default();
        world.write_view(M, 0, &mut after).unwrap();
        let same_velocity =
            ["ball_vx", "ball_vy"].iter().all(|name| field(&before, &schema, name) == field(&after, &schema, name));
        let playing = field(&after, &schema, "phase") == Phase::Playing as i32;
        // Within a tick's flight of a paddle's depth the ball may touch it (a paddle can
        // also move onto a ball behind it); everywhere else nothing may bend its path.
        let near_paddle = (0..2).any(|seat| {
            let paddle_x = rally_sim::pong::geometry::paddle_x(seat) >> WIRE_SHIFT;
            let reach = (PADDLE_HALF_WIDTH + BALL_HALF) >> WIRE_SHIFT;
            (field(&before, &schema, "ball_x") - paddle_x).abs() <= reach + field(&before, &schema, "ball_vx").abs()
        });
        if same_velocity && playing && !near_paddle {
            straight += 1;
            for (pos, vel) in [("ball_x", "ball_vx"), ("ball_y", "ball_vy")] {
                assert_eq!(
                    field(&after, &schema, pos),
                    field(&before, &schema, pos) + field(&before, &schema, vel),
                    "{before:?} -> {after:?}"
                );
            }
        } else {
            bent += 1;
        }
        // Inside the ball's own bounds, which are stricter than the wire field's.
        let x = field(&after, &schema, "ball_x");
        assert!((BALL_MIN_X >> WIRE_SHIFT..=BALL_MAX_X >> WIRE_SHIFT).contains(&x));
        before = after;
    }
    assert!(straight > 1_500 && bent > 20, "{straight} straight ticks, {bent} others");
}

#[test]
fn bad_specs_and_seats_are_refused() {
    let mut world = PongWorld::new(LifecycleConfig::default());
    for n_seats in [0, 1, 3, 5, 8, 255] {
        assert!(matches!(world.create_match(M, spec(n_seats, 5), 0), Err(SimError::BadSpec(_))), "{n_seats} seats");
    }
    for points in [0, 100, 255] {
        assert!(matches!(world.create_match(M, spec(2, points), 0), Err(SimError::BadSpec(_))), "{points} points");
    }
    assert_eq!(world.n_matches(), 0);
    world.create_match(M, spec(2, 99), 0).unwrap();
    world.create_match(MatchId(8), spec(4, 1), 0).unwrap();
    assert_eq!(world.create_match(M, spec(4, 5), 0), Err(SimError::DuplicateMatch(M)));

    let bad_seat = Err(SimError::BadSeat { seat: 2, n_seats: 2 });
    assert_eq!(world.set_input(M, 2, 1), bad_seat);
    assert_eq!(world.set_seat_connected(M, 2, true), bad_seat);
    assert_eq!(world.write_view(M, 2, &mut Snapshot::default()), bad_seat);
    assert_eq!(world.set_input(MatchId(8), 4, 1), Err(SimError::BadSeat { seat: 4, n_seats: 4 }));

    let unknown = MatchId(9);
    assert_eq!(world.set_input(unknown, 0, 1), Err(SimError::UnknownMatch(unknown)));
    assert_eq!(world.set_seat_connected(unknown, 0, true), Err(SimError::UnknownMatch(unknown)));
    assert_eq!(world.write_view(unknown, 0, &mut Snapshot::default()), Err(SimError::UnknownMatch(unknown)));
    assert_eq!(world.match_hash(unknown), Err(SimError::UnknownMatch(unknown)));
    world.remove_match(unknown);
    assert_eq!(world.n_matches(), 2);
    world.remove_match(M);
    assert_eq!(world.n_matches(), 1);
    assert_eq!(world.match_ids().collect::<Vec<_>>(), [MatchId(8)]);
    // The id is free again.
    world.create_match(M, spec(2, 1), 0).unwrap();
}

#[test]
fn the_schema_is_pinned() {
    let names = |n_seats| -> Vec<String> {
        PongWorld::schema(n_seats).fields().iter().map(|field| field.name.clone()).collect()
    };
    let two = [
        "phase",
        "countdown",
        "ball_vx",
        "ball_vy",
        "ball_x",
        "ball_y",
        "paddle_y_0",
        "paddle_vy_0",
        "paddle_y_1",
        "paddle_vy_1",
        "score_0",
        "score_1",
        "seat",
    ];
    assert_eq!(names(2), two);
    assert_eq!(names(4).len(), two.len() + 4);
    let schema = PongWorld::schema(4);
    for (name, velocity) in [("ball_x", "ball_vx"), ("ball_y", "ball_vy"), ("paddle_y_3", "paddle_vy_3")] {
        let predict = schema.fields()[schema.index_of(name).unwrap()].predict.unwrap();
        assert_eq!(usize::from(predict.velocity_field), schema.index_of(velocity).unwrap());
        assert_eq!(predict.shift, 0);
    }
    assert_eq!(schema.fields()[schema.index_of("ball_x").unwrap()].bits, 13);
    assert_eq!(PongWorld::NAME, "pong");
}
