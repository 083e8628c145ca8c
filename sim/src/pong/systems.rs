//! The three systems of a Pong step, run in this order by the world's schedule:
//!
//! 1. [`advance_lifecycle`]: counts the match's own tick and its clock, tracks empty
//!    seats, moves through waiting, countdown and serve, and ends matches by forfeit,
//!    abandonment or the time limit;
//! 2. [`move_paddles`]: applies each seat's held intent at the fixed paddle speed;
//! 3. [`fly_ball`]: flies the ball through the tick against the moved paddles and
//!    scores goals; a goal in sudden death ends the match.
//!
//! Each iterates every match of the world at once. None allocates except to build the
//! rare event (a point, a phase change), and none reads anything outside its match but
//! the world-wide timings, so a match behaves the same next to any number of others.

use bevy_ecs::prelude::{Query, Res, ResMut};

use super::components::{
    Ending, EventQueue, MatchKey, MatchRng, Paddles, Progress, Rules, Score, Seats, Timing, WorldTick, outcome,
};
use super::geometry::{
    MAX_SERVE_VY_WIRE, N_SIDES, PADDLE_MAX_Y, PADDLE_MIN_Y, PADDLE_SPEED, SERVE_SPEED, WIRE_SHIFT, side_of,
};
use super::physics::{Ball, Flight, fly};
use crate::game::{EndReason, LifecycleConfig, Phase, SimEvent};
use crate::rng::SplitMix64;

/// Moves the paddle toward y = 0 (see [`PongWorld`](super::PongWorld) for why Pong's
/// input is an intent).
pub(crate) const INTENT_UP: u8 = 1;
/// Moves the paddle toward larger y.
pub(crate) const INTENT_DOWN: u8 = 2;

fn all_seats(n_seats: u8) -> u8 {
    ((1u16 << n_seats) - 1) as u8
}

fn enter_countdown(progress: &mut Progress, timing: &LifecycleConfig) {
    progress.phase = Phase::Countdown;
    progress.countdown = timing.countdown_ticks;
}

/// Puts the ball on the centre spot and sends it toward a side chosen by the match's
/// generator, at a vertical speed it also draws. Two draws per serve, always.
fn serve(ball: &mut Ball, rng: &mut SplitMix64) {
    let toward_right = rng.below(2) == 1;
    let vy_wire = rng.range_inclusive(-MAX_SERVE_VY_WIRE, MAX_SERVE_VY_WIRE);
    *ball =
        Ball { vx: if toward_right { SERVE_SPEED } else { -SERVE_SPEED }, vy: vy_wire << WIRE_SHIFT, ..Ball::CENTRE };
}

/// Freezes a match and raises its last two events.
fn finish(
    key: &MatchKey,
    rules: &Rules,
    progress: &mut Progress,
    score: &Score,
    ending: Ending,
    tick: u32,
    events: &mut Vec<SimEvent>,
) {
    progress.phase = Phase::Finished;
    progress.ending = Some(ending);
    events.push(SimEvent::PhaseChanged { match_id: key.0, tick, phase: Phase::Finished });
    events.push(SimEvent::MatchFinished { match_id: key.0, tick, outcome: outcome(rules, progress, score, ending) });
}

/// Counts the match's own tick, tracks empty seats and drives the phase machine.
///
/// Forfeit: a seat empty for `forfeit_after_ticks` consecutive ticks of countdown or
/// play, or whose player left for good, loses the match for its side. If seats of
/// both sides pass the timeout on the same tick (every seat gone, in particular)
/// nobody is blamed more: the match is abandoned. A waiting match that is not full
/// `fill_timeout_ticks` after creation, or that a player left, is abandoned too.
///
/// Time limit: the clock counts countdown and play. Once it reaches the limit, a side
/// that leads wins; level scores play on in sudden death ([`fly_ball`] ends the match
/// at the next point) until `max_play_ticks`, where the match is a draw. Forfeits are
/// judged first, so a seat that is gone loses even when the clock runs out with it.
pub(crate) fn advance_lifecycle(
    mut matches: Query<(&MatchKey, &Rules, &mut Progress, &mut Seats, &mut Ball, &mut MatchRng, &Score)>,
    timing: Res<Timing>,
    tick: Res<WorldTick>,
    mut events: ResMut<EventQueue>,
) {
    let timing = &timing.0;
    let tick = tick.0;
    let events = &mut events.0;
    for (key, rules, progress, seats, ball, rng, score) in &mut matches {
        if progress.phase == Phase::Finished {
            continue;
        }
        let (progress, seats) = (progress.into_inner(), seats.into_inner());
        progress.age = progress.age.saturating_add(1);
        seats.ever_connected |= seats.connected;
        let all = all_seats(rules.n_seats);
        match progress.phase {
            Phase::Waiting => {
                if seats.ever_connected & all == all {
                    enter_countdown(progress, timing);
                    events.push(SimEvent::PhaseChanged { match_id: key.0, tick, phase: Phase::Countdown });
                } else if progress.age >= timing.fill_timeout_ticks || seats.left != 0 {
                    let ending = Ending { reason: EndReason::Abandoned, winner: None, forfeited: 0 };
                    finish(key, rules, progress, score, ending, tick, events);
                }
            }
            Phase::Countdown | Phase::Playing => {
                let mut late_seats = 0u8;
                let mut late_sides = 0u8;
                for seat in 0..rules.n_seats {
                    let idx = usize::from(seat);
                    if seats.connected & (1 << seat) != 0 {
                        seats.empty_ticks[idx] = 0;
                    } else {
                        seats.empty_ticks[idx] = seats.empty_ticks[idx].saturating_add(1);
                        if seats.empty_ticks[idx] >= timing.forfeit_after_ticks || seats.left & (1 << seat) != 0 {
                            late_seats |= 1 << seat;
                            late_sides |= 1 << side_of(seat);
                        }
                    }
                }
                if late_seats != 0 {
                    let ending = match late_sides {
                        0b01 => Ending { reason: EndReason::Forfeit, winner: Some(1), forfeited: late_seats },
                        0b10 => Ending { reason: EndReason::Forfeit, winner: Some(0), forfeited: late_seats },
                        _ => Ending { reason: EndReason::Abandoned, winner: None, forfeited: late_seats },
                    };
                    finish(key, rules, progress, score, ending, tick, events);
                    continue;
                }
                progress.clock = progress.clock.saturating_add(1);
                if progress.clock >= rules.time_limit_ticks {
                    let [left, right] = score.0;
                    let winner = match left.cmp(&right) {
                        std::cmp::Ordering::Greater => Some(0),
                        std::cmp::Ordering::Less => Some(1),
                        std::cmp::Ordering::Equal => None,
                    };
                    if winner.is_some() || progress.clock >= rules.max_play_ticks {
                        let ending = Ending { reason: EndReason::TimeLimit, winner, forfeited: 0 };
                        finish(key, rules, progress, score, ending, tick, events);
                        continue;
                    }
                }
                if progress.phase == Phase::Countdown {
                    progress.countdown = progress.countdown.saturating_sub(1);
                    if progress.countdown == 0 {
                        serve(ball.into_inner(), &mut rng.into_inner().0);
                        progress.phase = Phase::Playing;
                        events.push(SimEvent::PhaseChanged { match_id: key.0, tick, phase: Phase::Playing });
                    }
                }
            }
            Phase::Finished => {}
        }
    }
}

/// Moves each paddle by its seat's held intent, clamped inside the field, and records
/// the motion so the view can carry a velocity that predicts it. Paddles move in every
/// phase but `Finished`, so players can warm up while waiting.
pub(crate) fn move_paddles(mut matches: Query<(&Rules, &Progress, &Seats, &mut Paddles)>) {
    for (rules, progress, seats, paddles) in &mut matches {
        if progress.phase == Phase::Finished {
            continue;
        }
        let paddles = paddles.into_inner();
        for idx in 0..usize::from(rules.n_seats) {
            let direction = match seats.intent[idx] {
                INTENT_UP => -1,
                INTENT_DOWN => 1,
                _ => 0,
            };
            let old = paddles.y[idx];
            let new = (old + direction * PADDLE_SPEED).clamp(PADDLE_MIN_Y, PADDLE_MAX_Y);
            paddles.y[idx] = new;
            paddles.vy[idx] = new - old;
        }
    }
}

/// Flies the ball of every playing match and scores goals. After a point the ball
/// rests on the centre spot and the match counts down again, or ends if the scorer
/// reached the points to win or the point came in sudden death (past the time limit,
/// where the scores were level, so the scorer now leads).
pub(crate) fn fly_ball(
    mut matches: Query<(&MatchKey, &Rules, &mut Progress, &Paddles, &mut Ball, &mut Score)>,
    timing: Res<Timing>,
    tick: Res<WorldTick>,
    mut events: ResMut<EventQueue>,
) {
    let timing = &timing.0;
    let tick = tick.0;
    let events = &mut events.0;
    for (key, rules, progress, paddles, ball, score) in &mut matches {
        if progress.phase != Phase::Playing {
            continue;
        }
        let ball = ball.into_inner();
        let Flight::Goal { scorer } = fly(ball, rules.n_seats, &paddles.y) else {
            continue;
        };
        let (progress, score) = (progress.into_inner(), score.into_inner());
        let side = usize::from(scorer) % N_SIDES;
        score.0[side] = score.0[side].saturating_add(1);
        *ball = Ball::CENTRE;
        events.push(SimEvent::PointScored { match_id: key.0, tick, side: scorer, scores: score.0.to_vec() });
        if score.0[side] >= u32::from(rules.points_to_win) {
            let ending = Ending { reason: EndReason::Score, winner: Some(scorer), forfeited: 0 };
            finish(key, rules, progress, score, ending, tick, events);
        } else if progress.clock >= rules.time_limit_ticks {
            let ending = Ending { reason: EndReason::TimeLimit, winner: Some(scorer), forfeited: 0 };
            finish(key, rules, progress, score, ending, tick, events);
        } else {
            enter_countdown(progress, timing);
            events.push(SimEvent::PhaseChanged { match_id: key.0, tick, phase: Phase::Countdown });
        }
    }
}
