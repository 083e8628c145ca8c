//! Cost of one match-tick with many matches in one world (target: ≤ 1 µs at 10,000).
//!
//! Throughput is counted in matches, so criterion's "thrpt" line reads as match-ticks
//! per second and its time divided by the match count is the cost per match-tick.
//! Inputs come from a cheap deterministic pattern (not the autopilot), so the figures
//! measure the simulation rather than a player. `held_inputs` only steps (inputs repeat);
//! `new_inputs` also calls `set_input` for every seat every tick, as a shard whose every
//! player sent a datagram would.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rally_protocol::{MatchId, Snapshot};
use rally_sim::{Game, LifecycleConfig, MatchSpec, PongWorld};

const SIZES: [u64; 2] = [1_000, 10_000];

/// A world of `n_matches` two-seat matches, all connected and past their first
/// countdown. Points still happen (the pattern misses the ball), each followed by a
/// one-tick countdown, as in real play.
fn playing_world(n_matches: u64) -> PongWorld {
    let lifecycle = LifecycleConfig { countdown_ticks: 1, forfeit_after_ticks: u32::MAX, fill_timeout_ticks: u32::MAX };
    let mut world = PongWorld::new(lifecycle);
    for id in 0..n_matches {
        let match_id = MatchId(id);
        world
            .create_match(match_id, MatchSpec { n_seats: 2, points_to_win: 99, time_limit_ticks: u32::MAX }, id)
            .expect("valid spec");
        for seat in 0..2 {
            world.set_seat_connected(match_id, seat, true).expect("valid seat");
        }
    }
    // Waiting → countdown → serve.
    world.step();
    world.step();
    // Held inputs are the pattern's first values, so paddles move (until a wall).
    for id in 0..n_matches {
        for seat in 0..2 {
            world.set_input(MatchId(id), seat, scripted_input(0, id, seat)).expect("valid seat");
        }
    }
    world
}

/// Up, down or still for 16 ticks at a time, staggered across matches and seats.
fn scripted_input(tick: u32, match_idx: u64, seat: u8) -> u8 {
    ((tick / 16).wrapping_add(match_idx as u32).wrapping_add(u32::from(seat)) % 3) as u8
}

fn drain(world: &mut PongWorld) {
    while let Some(event) = world.poll_event() {
        black_box(event);
    }
}

/// Steps a world of `n_matches` for criterion's `iters` ticks and returns the time spent
/// stepping (and setting inputs when `new_inputs`). Every `REBUILD_AFTER` ticks the world is
/// rebuilt outside the timed region, so every match is always still in play: none can reach
/// 99 points that fast, and a frozen finished match would make the figure look cheaper.
#[expect(clippy::disallowed_methods, reason = "a benchmark times itself; the simulation does not")]
fn time_steps(world: &mut PongWorld, n_matches: u64, iters: u64, new_inputs: bool) -> Duration {
    const REBUILD_AFTER: u32 = 2_000;
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        if world.tick() >= REBUILD_AFTER {
            *world = playing_world(n_matches);
        }
        let start = Instant::now();
        if new_inputs {
            let tick = world.tick();
            for match_idx in 0..n_matches {
                for seat in 0..2 {
                    let input = scripted_input(tick, match_idx, seat);
                    world.set_input(MatchId(match_idx), seat, input).expect("known match");
                }
            }
        }
        world.step();
        drain(world);
        total += start.elapsed();
    }
    total
}

fn step(c: &mut Criterion) {
    let mut group = c.benchmark_group("step");
    for n_matches in SIZES {
        group.throughput(Throughput::Elements(n_matches));
        let mut world = playing_world(n_matches);
        group.bench_function(BenchmarkId::new("held_inputs", n_matches), |b| {
            b.iter_custom(|iters| time_steps(&mut world, n_matches, iters, false));
        });
        group.bench_function(BenchmarkId::new("new_inputs", n_matches), |b| {
            b.iter_custom(|iters| time_steps(&mut world, n_matches, iters, true));
        });
    }
    group.finish();
}

fn views(c: &mut Criterion) {
    let mut group = c.benchmark_group("views");
    for n_matches in SIZES {
        group.throughput(Throughput::Elements(n_matches));
        let world = playing_world(n_matches);
        let mut view = Snapshot::default();
        group.bench_function(BenchmarkId::new("both_seats", n_matches), |b| {
            b.iter(|| {
                for match_idx in 0..n_matches {
                    for seat in 0..2 {
                        world.write_view(MatchId(match_idx), seat, &mut view).expect("known match");
                        black_box(&view);
                    }
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, step, views);
criterion_main!(benches);
