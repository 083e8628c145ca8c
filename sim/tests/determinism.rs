//! Determinism: a match is a pure function of its spec, seed and inputs, whatever else
//! the world holds, and a recorded log replays it bit for bit.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{Pilots, QUICK, connect_all, drain, finished, spec};
use rally_protocol::MatchId;
use rally_sim::pong::INPUT_DOWN;
use rally_sim::replay::{InputLog, LOG_FORMAT_VERSION, LogEntry, LogError, Recording, ReplayError, SeatAction, replay};
use rally_sim::{Game, LifecycleConfig, PongWorld, SimError, SimEvent};

const M: MatchId = MatchId(1_000);

/// Plays match `M` with seeded autopilots for `ticks` ticks, stepping `others` (other
/// matches with their own autopilots) alongside, and returns M's hash after each tick
/// and M's events with world ticks made match-relative.
fn play_alongside(world: &mut PongWorld, others: &mut [(MatchId, Pilots)], ticks: u32) -> (Vec<u64>, Vec<SimEvent>) {
    world.create_match(M, spec(2, 5), 42).unwrap();
    let start = world.tick();
    connect_all(world, M, 2);
    let mut pilots = Pilots::sloppy::<PongWorld>(2, 7);
    let mut hashes = Vec::new();
    let mut events = Vec::new();
    for _ in 0..ticks {
        pilots.play(world, M);
        for (id, other) in others.iter_mut() {
            other.play(world, *id);
        }
        world.step();
        hashes.push(world.match_hash(M).unwrap());
        events
            .extend(drain(world).into_iter().filter(|event| event.match_id() == M).map(|event| relative(event, start)));
    }
    (hashes, events)
}

fn relative(event: SimEvent, start: u32) -> SimEvent {
    match event {
        SimEvent::PhaseChanged { match_id, tick, phase } => {
            SimEvent::PhaseChanged { match_id, tick: tick - start, phase }
        }
        SimEvent::PointScored { match_id, tick, side, scores } => {
            SimEvent::PointScored { match_id, tick: tick - start, side, scores }
        }
        SimEvent::MatchFinished { match_id, tick, outcome } => {
            SimEvent::MatchFinished { match_id, tick: tick - start, outcome }
        }
        other => other,
    }
}

#[test]
fn same_seed_and_inputs_give_equal_hashes_every_tick() {
    let mut a = PongWorld::new(QUICK);
    let mut b = PongWorld::new(QUICK);
    let (hashes_a, events_a) = play_alongside(&mut a, &mut [], 3_000);
    let (hashes_b, events_b) = play_alongside(&mut b, &mut [], 3_000);
    assert_eq!(hashes_a, hashes_b);
    assert_eq!(events_a, events_b);
    let points = events_a.iter().filter(|event| matches!(event, SimEvent::PointScored { .. })).count();
    assert!(points >= 3, "the match got somewhere ({points} points)");
    // The hash follows the state: it is not constant while the ball flies.
    let distinct: std::collections::BTreeSet<u64> = hashes_a.iter().copied().collect();
    assert!(distinct.len() > 1_000);
}

#[test]
fn other_matches_do_not_change_a_match() {
    let mut alone = PongWorld::new(QUICK);
    let (hashes_alone, events_alone) = play_alongside(&mut alone, &mut [], 800);

    let mut crowded = PongWorld::new(QUICK);
    // An older world: a different world tick at creation and 500 other matches, with ids
    // on both sides of M, some never filled, some removed before M exists.
    for _ in 0..37 {
        crowded.step();
    }
    let mut others = Vec::new();
    for idx in 0..500u64 {
        let id = MatchId(idx * 4 + 1);
        let n_seats = if idx % 5 == 0 { 4 } else { 2 };
        crowded.create_match(id, spec(n_seats, 3), idx).unwrap();
        if idx % 7 != 0 {
            connect_all(&mut crowded, id, n_seats);
        }
        others.push((id, Pilots::sloppy::<PongWorld>(n_seats, idx)));
    }
    for (id, _) in others.iter().filter(|(id, _)| id.0 % 3 == 0) {
        crowded.remove_match(*id);
    }
    others.retain(|(id, _)| id.0 % 3 != 0);
    let (hashes_crowded, events_crowded) = play_alongside(&mut crowded, &mut others, 800);
    assert_eq!(hashes_alone, hashes_crowded);
    assert_eq!(events_alone, events_crowded);
    assert!(crowded.n_matches() > 300);
}

#[test]
fn events_come_sorted_by_match_id() {
    let mut world = PongWorld::new(LifecycleConfig { countdown_ticks: 3, ..QUICK });
    // Created in descending id order, so entity order and id order disagree.
    for id in (0..20).rev() {
        world.create_match(MatchId(id), spec(2, 1), id).unwrap();
        connect_all(&mut world, MatchId(id), 2);
    }
    world.step();
    let events = drain(&mut world);
    assert_eq!(events.len(), 20);
    let ids: Vec<u64> = events.iter().map(|event| event.match_id().0).collect();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
}

#[test]
fn the_seed_chooses_the_serve() {
    let mut directions = std::collections::BTreeSet::new();
    for seed in 0..32 {
        let mut world = PongWorld::new(LifecycleConfig { countdown_ticks: 1, ..QUICK });
        world.create_match(M, spec(2, 1), seed).unwrap();
        connect_all(&mut world, M, 2);
        world.step();
        world.step();
        let mut view = rally_protocol::Snapshot::default();
        world.write_view(M, 0, &mut view).unwrap();
        let schema = PongWorld::schema(2);
        let vx = view.values[schema.index_of("ball_vx").unwrap()];
        let vy = view.values[schema.index_of("ball_vy").unwrap()];
        assert_ne!(vx, 0, "served");
        directions.insert((vx, vy));
    }
    assert!(directions.iter().any(|&(vx, _)| vx > 0) && directions.iter().any(|&(vx, _)| vx < 0));
    assert!(directions.len() > 16, "serves vary with the seed: {directions:?}");
}

/// Plays two matches in a recording world (M created late, so its ticks are relative),
/// with a disconnect and return in the middle, and returns M's log, hashes and outcome.
fn record_a_match() -> (InputLog, Vec<u64>, Option<rally_sim::MatchOutcome>) {
    let mut world = Recording::<PongWorld>::new(QUICK);
    world.create_match(MatchId(1), spec(2, 3), 5).unwrap();
    connect_all(&mut world, MatchId(1), 2);
    for _ in 0..23 {
        world.step();
    }
    world.create_match(M, spec(2, 3), 99).unwrap();
    let mut pilots = Pilots::sloppy::<PongWorld>(2, 3);
    let mut hashes = Vec::new();
    let mut outcome = None;
    for tick in 0..20_000 {
        match tick {
            3 => world.set_seat_connected(M, 1, true).unwrap(),
            10 => world.set_seat_connected(M, 0, true).unwrap(),
            400 => world.set_seat_connected(M, 0, false).unwrap(),
            420 => world.set_seat_connected(M, 0, true).unwrap(),
            _ => {}
        }
        pilots.play(&mut world, M);
        world.step();
        hashes.push(world.match_hash(M).unwrap());
        let events: Vec<SimEvent> = drain(&mut world).into_iter().filter(|event| event.match_id() == M).collect();
        if let Some(done) = finished(&events) {
            outcome = Some(done);
            break;
        }
    }
    // Inputs after the last step are kept too (their tick is end_tick).
    world.set_input(M, 1, INPUT_DOWN).unwrap();
    world.remove_match(M);
    world.step();
    (world.take_log(M).unwrap(), hashes, outcome)
}

#[test]
fn replay_reproduces_every_hash_and_the_outcome() {
    let (log, hashes, outcome) = record_a_match();
    assert!(outcome.is_some(), "the recorded match finished");
    assert_eq!(log.end_tick as usize, hashes.len());
    assert_eq!(log.game, "pong");
    assert!(log.entries.iter().any(|entry| entry.action == SeatAction::Disconnect));
    assert_eq!(log.entries.first().map(|entry| entry.tick), Some(0), "ticks are match-relative");
    // Run-length: no seat records the same input twice in a row without a disconnect between.
    let inputs = log.entries.iter().filter(|entry| matches!(entry.action, SeatAction::Input(_))).count();
    assert!(inputs < log.end_tick as usize, "{inputs} inputs over {} ticks", log.end_tick);

    let report = replay::<PongWorld>(&log).unwrap();
    assert_eq!(report.hashes, hashes);
    assert_eq!(report.outcome, outcome);
    assert_eq!(finished(&report.events), outcome);

    // Through bytes and back: the same log, the same digest, the same replay.
    let bytes = log.encode().unwrap();
    let decoded = InputLog::decode(&bytes).unwrap();
    assert_eq!(decoded, log);
    assert_eq!(decoded.digest(), log.digest());
    assert_eq!(replay::<PongWorld>(&decoded).unwrap(), report);
}

#[test]
fn a_leave_is_recorded_once_and_replays_to_the_same_forfeit() {
    let mut world = Recording::<PongWorld>::new(QUICK);
    world.create_match(M, spec(2, 5), 17).unwrap();
    connect_all(&mut world, M, 2);
    let mut pilots = Pilots::sloppy::<PongWorld>(2, 4);
    let mut hashes = Vec::new();
    let mut outcome = None;
    for tick in 0..2_000 {
        if tick == 150 {
            world.set_seat_connected(M, 0, false).unwrap();
            world.leave_seat(M, 0).unwrap();
            world.leave_seat(M, 0).unwrap();
        }
        pilots.play(&mut world, M);
        world.step();
        hashes.push(world.match_hash(M).unwrap());
        if let Some(done) = finished(&drain(&mut world)) {
            outcome = Some(done);
            break;
        }
    }
    let outcome = outcome.expect("the leave ended the match");
    assert_eq!((outcome.reason, outcome.winner), (rally_sim::EndReason::Forfeit, Some(1)));
    assert_eq!(hashes.len(), 151, "it ended on the step after the leave");
    world.remove_match(M);
    let log = world.take_log(M).unwrap();
    assert_eq!(log.entries.iter().filter(|entry| entry.action == SeatAction::Leave).count(), 1);
    let decoded = InputLog::decode(&log.encode().unwrap()).unwrap();
    let report = replay::<PongWorld>(&decoded).unwrap();
    assert_eq!(report.hashes, hashes);
    assert_eq!(report.outcome, Some(outcome));
}

#[test]
fn a_changed_log_replays_differently() {
    let (mut log, hashes, _) = record_a_match();
    let digest = log.digest();
    let entry = log.entries.iter_mut().rev().find(|entry| matches!(entry.action, SeatAction::Input(_))).unwrap();
    assert!(entry.tick > 100, "late in the match");
    // The input now comes one tick early; everything before that tick is unchanged.
    entry.tick -= 1;
    let moved_to = entry.tick as usize;
    log.entries.sort_by_key(|entry| entry.tick);
    assert_ne!(log.digest(), digest);
    let report = replay::<PongWorld>(&log).unwrap();
    assert_eq!(report.hashes[..moved_to], hashes[..moved_to]);
    assert_ne!(report.hashes[moved_to], hashes[moved_to]);
}

#[test]
fn invalid_logs_are_refused() {
    let (log, _, _) = record_a_match();

    let wrong_game = InputLog { game: "chess".into(), ..log.clone() };
    assert!(matches!(replay::<PongWorld>(&wrong_game), Err(ReplayError::WrongGame { .. })));

    let mut unordered = log.clone();
    let last = unordered.entries.len() - 1;
    unordered.entries.swap(0, last);
    assert_eq!(replay::<PongWorld>(&unordered), Err(ReplayError::OutOfOrder { index: 1 }));

    let mut late = log.clone();
    late.entries.push(LogEntry { tick: log.end_tick + 1, seat: 0, action: SeatAction::Connect });
    assert!(matches!(replay::<PongWorld>(&late), Err(ReplayError::OutOfOrder { .. })));

    let mut bad_seat = log.clone();
    bad_seat.entries.insert(0, LogEntry { tick: 0, seat: 2, action: SeatAction::Input(1) });
    assert_eq!(
        replay::<PongWorld>(&bad_seat),
        Err(ReplayError::Entry { index: 0, error: SimError::BadSeat { seat: 2, n_seats: 2 } })
    );

    let bad_spec = InputLog { spec: spec(3, 5), ..log.clone() };
    assert!(matches!(replay::<PongWorld>(&bad_spec), Err(ReplayError::Create(SimError::BadSpec(_)))));

    let too_long = InputLog { end_tick: u32::MAX, ..log.clone() };
    assert!(matches!(replay::<PongWorld>(&too_long), Err(ReplayError::TooLong { .. })));

    let mut bytes = log.encode().unwrap();
    bytes.push(0);
    assert_eq!(InputLog::decode(&bytes), Err(LogError::TrailingBytes { extra: 1 }));
    bytes.pop();
    bytes.truncate(bytes.len() - 1);
    assert!(matches!(InputLog::decode(&bytes), Err(LogError::Malformed(_))));
    let mut other_version = log.encode().unwrap();
    other_version[0] = (LOG_FORMAT_VERSION + 1) as u8;
    assert_eq!(InputLog::decode(&other_version), Err(LogError::Version { found: LOG_FORMAT_VERSION + 1 }));
}

#[test]
fn a_huge_length_prefix_is_refused_without_allocating_it() {
    // Version 1, then a game name claiming u64::MAX bytes (253 announces a u64 varint).
    let mut bytes = vec![LOG_FORMAT_VERSION as u8, 253];
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(InputLog::decode(&bytes), Err(LogError::Malformed(_))));
    // A plausible header, then an entry count of 2^60.
    let log =
        InputLog { game: "pong".into(), spec: spec(2, 5), seed: 1, lifecycle: QUICK, entries: Vec::new(), end_tick: 0 };
    let mut bytes = log.encode().unwrap();
    // The empty entries vector is the byte before end_tick (one byte: 0).
    let count_at = bytes.len() - 2;
    assert_eq!(bytes[count_at], 0);
    bytes.splice(count_at..=count_at, [253].into_iter().chain((1u64 << 60).to_le_bytes()));
    assert!(matches!(InputLog::decode(&bytes), Err(LogError::Malformed(_))));
}
