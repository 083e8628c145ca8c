//! Netcode tests in the stepper: shard and clients in one process, manual time.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;

use std::time::Duration;

use common::stepper::{EPOCH_MS, Stepper};
use rally_client::conditioner::LinkConditions;
use rally_client::session::{ClientEvent, ClientSession};
use rally_protocol::control::{ClientHello, EndReason, RefuseReason};
use rally_server::ShardConfig;

fn config() -> ShardConfig {
    ShardConfig { name: "step".into(), rng_seed: 7, ..ShardConfig::default() }
}

fn add_pair(stepper: &mut Stepper, match_id: u64) -> (usize, usize) {
    let a = stepper
        .add_client(&ClientHello::Connect { token: common::token("step", match_id, 0, match_id * 10, EPOCH_MS) }, true);
    let b = stepper.add_client(
        &ClientHello::Connect { token: common::token("step", match_id, 1, match_id * 10 + 1, EPOCH_MS) },
        true,
    );
    (a, b)
}

#[test]
fn a_full_match_ends_with_one_result_that_both_clients_see() {
    let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 1);
    let (a, b) = add_pair(&mut stepper, 1);
    assert!(stepper.run_until(Duration::from_secs(600), |s| s.clients.iter().all(|c| c.ended.is_some())));
    assert_eq!(stepper.results.len(), 1);
    let result = &stepper.results[0];
    assert_eq!(result.reason, EndReason::Score);
    assert_eq!(result.scores.iter().max(), Some(&3));
    for idx in [a, b] {
        let end = stepper.clients[idx].ended.as_ref().unwrap();
        assert_eq!(end.scores, result.scores);
        assert_eq!(end.winner, result.winner);
    }
    let stats = stepper.shard.stats();
    assert_eq!(stats.inputs_missing, 0, "a perfect link delivers every input on time: {stats:?}");
    assert!(stats.snapshots_sent > 100 && stats.snapshots_full < 10, "deltas after the first ack: {stats:?}");
    // The result is emitted once and the match is forgotten.
    stepper.run_until(Duration::from_secs(1), |_| false);
    assert_eq!(stepper.results.len(), 1);
    assert_eq!(stepper.shard.n_matches(), 0);
}

#[test]
fn under_loss_and_jitter_inputs_land_on_their_tick_and_matches_finish() {
    let mut stepper = Stepper::new(config(), LinkConditions::lossy(), 2);
    for match_id in 1..=4 {
        add_pair(&mut stepper, match_id);
    }
    assert!(stepper.run_until(Duration::from_secs(900), |s| s.results.len() == 4), "all matches finish");
    let stats = stepper.shard.stats();
    let on_time = stats.inputs_on_time as f64 / (stats.inputs_on_time + stats.inputs_missing) as f64;
    assert!(on_time >= 0.995, "{:.4} of inputs applied on their tick: {stats:?}", on_time);
    assert!(stepper.results.iter().all(|result| result.reason == EndReason::Score));
}

#[test]
fn a_player_who_leaves_forfeits_at_once_and_the_opponent_is_told() {
    let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 4);
    let (a, b) = add_pair(&mut stepper, 11);
    assert!(stepper.run_until(Duration::from_secs(10), |s| s.clients.iter().all(|c| c.session.latest().is_some())));
    let now = stepper.now;
    stepper.clients[a].control_up.push(now, ClientSession::leave());
    // Far inside the resume window a dropped connection would be given.
    let grace = config().resume_grace_ticks / u32::from(config().tick_rate_hz);
    let within = Duration::from_secs(u64::from(grace / 4).max(1));
    assert!(stepper.run_until(within, |s| s.results.len() == 1 && s.clients[b].ended.is_some()), "ended at once");
    let result = &stepper.results[0];
    assert_eq!((result.reason, result.winner), (EndReason::Forfeit, Some(1)), "{result:?}");
    let end = stepper.clients[b].ended.as_ref().unwrap();
    assert_eq!((end.reason, end.winner, end.forfeited.clone()), (EndReason::Forfeit, Some(1), vec![0]));
}

#[test]
fn a_dropped_client_resumes_its_seat_within_the_grace_window() {
    let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 3);
    let (a, _) = add_pair(&mut stepper, 9);
    assert!(stepper.run_until(Duration::from_secs(10), |s| s.clients[a].session.latest().is_some()));
    let welcome = stepper.clients[a].session.welcome().unwrap().clone();
    stepper.drop_client(a);
    stepper.run_until(Duration::from_secs(5), |_| false);
    let resume = ClientHello::Resume { match_id: welcome.match_id, seat: welcome.seat, secret: welcome.resume_secret };
    stepper.reconnect_client(a, &resume);
    assert!(stepper.run_until(Duration::from_secs(600), |s| s.results.len() == 1));
    assert_eq!(stepper.results[0].reason, EndReason::Score, "not forfeited: {:?}", stepper.results[0]);
    assert!(stepper.clients[a].events.iter().any(|e| matches!(e, ClientEvent::Welcomed(w) if w.seat == welcome.seat)));
}

#[test]
fn a_seat_left_empty_past_the_grace_window_forfeits() {
    let mut stepper = Stepper::new(ShardConfig { resume_grace_ticks: 120, ..config() }, LinkConditions::perfect(), 4);
    let (a, b) = add_pair(&mut stepper, 5);
    assert!(stepper.run_until(Duration::from_secs(10), |s| s.clients[a].session.latest().is_some()));
    let welcome = stepper.clients[a].session.welcome().unwrap().clone();
    stepper.drop_client(a);
    assert!(stepper.run_until(Duration::from_secs(10), |s| s.results.len() == 1));
    let result = &stepper.results[0];
    assert_eq!(result.reason, EndReason::Forfeit);
    assert_eq!(result.winner, Some(result.seats[1].side));
    assert!(stepper.clients[b].ended.is_some());
    // Too late to come back: the match is over.
    let resume = ClientHello::Resume { match_id: welcome.match_id, seat: welcome.seat, secret: welcome.resume_secret };
    stepper.reconnect_client(a, &resume);
    stepper.run_until(Duration::from_secs(1), |s| s.clients[a].session.is_over());
    let refused = stepper.clients[a].events.iter().rev().find_map(|e| match e {
        ClientEvent::Refused(refusal) => Some(refusal.reason),
        _ => None,
    });
    assert_eq!(refused, Some(RefuseReason::MatchFinished));
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = || {
        let mut stepper = Stepper::new(config(), LinkConditions::lossy(), 11);
        add_pair(&mut stepper, 3);
        stepper.run_until(Duration::from_secs(600), |s| s.results.len() == 1);
        let result = stepper.results[0].clone();
        (result.scores, result.duration_ticks, result.input_log_digest, stepper.shard.stats().clone())
    };
    assert_eq!(run(), run());
}
