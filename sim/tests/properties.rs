//! Property tests: whatever the players do, the state stays in the field, scores only
//! grow, views fit their schema, and the recorded log replays the same match.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{QUICK, drain, spec};
use proptest::prelude::*;
use rally_protocol::{MatchId, Snapshot};
use rally_sim::pong::geometry::{
    BALL_MAX_X, BALL_MAX_Y, BALL_MIN_X, BALL_MIN_Y, PADDLE_MAX_Y, PADDLE_MIN_Y, WIRE_SHIFT,
};
use rally_sim::replay::{InputLog, Recording, replay};
use rally_sim::{Game, PongWorld, SimEvent};

const M: MatchId = MatchId(3);

/// One tick of what the players do: an input byte per seat (any byte, not just the three
/// intents) and, rarely, a seat that flips its connection.
#[derive(Clone, Debug)]
struct TickPlan {
    inputs: [u8; 4],
    flip: Option<u8>,
}

fn tick_plan() -> impl Strategy<Value = TickPlan> {
    let input = prop_oneof![8 => 0u8..3, 1 => any::<u8>()];
    let flip = prop_oneof![40 => Just(None), 1 => (0u8..4).prop_map(Some)];
    (proptest::array::uniform4(input), flip).prop_map(|(inputs, flip)| TickPlan { inputs, flip })
}

/// Long runs of held inputs, as real players produce.
fn plans() -> impl Strategy<Value = Vec<TickPlan>> {
    proptest::collection::vec((tick_plan(), 1usize..40), 1..60)
        .prop_map(|runs| runs.into_iter().flat_map(|(plan, len)| std::iter::repeat_n(plan, len)).collect())
}

fn range(low: i32, high: i32) -> std::ops::RangeInclusive<i32> {
    (low >> WIRE_SHIFT)..=(high >> WIRE_SHIFT)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_play_keeps_every_invariant(plans in plans(), four in any::<bool>(), seed in any::<u64>()) {
        let n_seats = if four { 4 } else { 2 };
        let schema = PongWorld::schema(n_seats);
        let mut world = Recording::<PongWorld>::new(QUICK);
        world.create_match(M, spec(n_seats, 3), seed).unwrap();
        let mut connected = [false; 4];
        for seat in 0..n_seats {
            world.set_seat_connected(M, seat, true).unwrap();
            connected[usize::from(seat)] = true;
        }
        let mut hashes = Vec::new();
        let mut scores = [0u32; 2];
        let mut n_finished = 0;
        let mut view = Snapshot::default();
        for plan in &plans {
            if let Some(seat) = plan.flip.filter(|&seat| seat < n_seats) {
                let idx = usize::from(seat);
                connected[idx] = !connected[idx];
                world.set_seat_connected(M, seat, connected[idx]).unwrap();
            }
            for seat in 0..n_seats {
                world.set_input(M, seat, plan.inputs[usize::from(seat)]).unwrap();
            }
            world.step();
            hashes.push(world.match_hash(M).unwrap());
            for event in drain(&mut world) {
                match event {
                    SimEvent::PointScored { scores: now, .. } => {
                        prop_assert!(now.iter().zip(scores).all(|(&now, before)| now >= before));
                        prop_assert_eq!(now.iter().sum::<u32>(), scores.iter().sum::<u32>() + 1);
                        scores = [now[0], now[1]];
                    }
                    SimEvent::MatchFinished { outcome, .. } => {
                        n_finished += 1;
                        prop_assert_eq!(outcome.scores, scores.to_vec());
                    }
                    _ => {}
                }
            }
            prop_assert!(n_finished <= 1);
            for seat in 0..n_seats {
                world.write_view(M, seat, &mut view).unwrap();
                prop_assert_eq!(view.values.len(), schema.len());
                let mut clamped = view.values.clone();
                schema.clamp(&mut clamped);
                prop_assert_eq!(&clamped, &view.values, "the view fits its schema");
                let value = |name: &str| view.values[schema.index_of(name).unwrap()];
                // The ball's and paddles' own bounds are stricter than the wire fields.
                prop_assert!(range(BALL_MIN_X, BALL_MAX_X).contains(&value("ball_x")));
                prop_assert!(range(BALL_MIN_Y, BALL_MAX_Y).contains(&value("ball_y")));
                for paddle in 0..n_seats {
                    let paddle_y = value(&format!("paddle_y_{paddle}"));
                    prop_assert!(range(PADDLE_MIN_Y, PADDLE_MAX_Y).contains(&paddle_y));
                }
                prop_assert_eq!(value("seat"), i32::from(seat));
                prop_assert_eq!([value("score_0") as u32, value("score_1") as u32], scores);
            }
        }

        let log = world.take_log(M).unwrap();
        let decoded = InputLog::decode(&log.encode().unwrap()).unwrap();
        let report = replay::<PongWorld>(&decoded).unwrap();
        prop_assert_eq!(report.hashes, hashes);
    }

    #[test]
    fn garbage_logs_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(log) = InputLog::decode(&bytes) {
            // Whatever decodes must replay or be refused, never panic (and stay short:
            // garbage rarely asks for many ticks, and the limit caps those that do).
            if log.end_tick < 10_000 {
                let _ = replay::<PongWorld>(&log);
            }
        }
    }

    #[test]
    fn mutated_logs_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let log = InputLog {
            game: "pong".into(),
            spec: spec(2, 3),
            seed: 9,
            lifecycle: QUICK,
            entries: vec![
                rally_sim::replay::LogEntry { tick: 0, seat: 0, action: rally_sim::replay::SeatAction::Connect },
                rally_sim::replay::LogEntry { tick: 2, seat: 1, action: rally_sim::replay::SeatAction::Input(2) },
            ],
            end_tick: 50,
        };
        let mut bytes = log.encode().unwrap();
        for (at, value) in flips {
            let idx = at.index(bytes.len());
            bytes[idx] = value;
        }
        if let Ok(log) = InputLog::decode(&bytes)
            && log.end_tick < 10_000
        {
            let _ = replay::<PongWorld>(&log);
        }
    }
}
