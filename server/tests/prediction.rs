//! Client-side prediction of the own paddle against the real shard, in the stepper.
//!
//! Every client predicts its paddle from the inputs it sends and reconciles on every
//! snapshot. The Pong predictor mirrors the server rule exactly, so a prediction can
//! only be wrong where the shard did not apply an input on its tick (it arrived late or
//! not at all, and the shard repeated the previous one); each snapshot then restarts the
//! prediction from the truth.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;

use std::time::Duration;

use common::stepper::{EPOCH_MS, Reconciliation, Stepper};
use rally_client::conditioner::LinkConditions;
use rally_protocol::control::{ClientHello, EndReason};
use rally_server::ShardConfig;

fn config() -> ShardConfig {
    ShardConfig { name: "step".into(), rng_seed: 17, ..ShardConfig::default() }
}

/// Plays `n_matches` two-seat matches between predicting autopilots to the end.
fn play(conditions: LinkConditions, seed: u64, n_matches: u64) -> Stepper {
    let mut stepper = Stepper::new(config(), conditions, seed);
    for match_id in 1..=n_matches {
        for seat in 0..2 {
            let token = common::token("step", match_id, seat, match_id * 10 + u64::from(seat), EPOCH_MS);
            let idx = stepper.add_client(&ClientHello::Connect { token }, true);
            stepper.predict(idx);
        }
    }
    assert!(
        stepper.run_until(Duration::from_secs(900), |s| s.results.len() == n_matches as usize),
        "every match finishes"
    );
    assert!(stepper.results.iter().all(|result| result.reason == EndReason::Score), "{:?}", stepper.results);
    stepper
}

/// Whether the shard missed an input on a tick the checked prediction covered.
fn explained(stepper: &Stepper, check: &Reconciliation) -> bool {
    let since = check.since.unwrap_or(0);
    stepper.missing_input_ticks.iter().any(|&tick| since < tick && tick <= check.tick)
}

#[test]
fn on_a_perfect_link_the_own_paddle_is_never_mispredicted() {
    let stepper = play(LinkConditions::perfect(), 21, 2);
    let stats = stepper.shard.stats();
    assert_eq!(stats.inputs_missing, 0, "{stats:?}");
    for client in &stepper.clients {
        let prediction = client.prediction.as_ref().unwrap();
        let received = client.session.stats().snapshots;
        assert_eq!(prediction.mispredictions(), 0, "{:?}", client.reconciliations.iter().find(|r| r.mispredicted));
        // Every snapshot but the first checks a prediction, and the prediction ran ahead
        // of the snapshot it started from: it really predicted.
        assert!(prediction.checks() + 1 >= received && received > 500, "{} of {received}", prediction.checks());
        let ahead: Vec<i64> = client
            .reconciliations
            .iter()
            .filter_map(|r| Some(i64::from(r.predicted_tick?) - i64::from(r.tick)))
            .collect();
        eprintln!("ahead {:?} {:?}", ahead.iter().min(), ahead.iter().max());
    }
}

#[test]
fn under_loss_mispredictions_are_bounded_by_missed_inputs_and_heal() {
    let stepper = play(LinkConditions::lossy(), 22, 4);
    let stats = stepper.shard.stats();
    let missed_rate = stats.inputs_missing as f64 / (stats.inputs_on_time + stats.inputs_missing) as f64;
    let (mut checks, mut mispredictions) = (0, 0);
    for (idx, client) in stepper.clients.iter().enumerate() {
        let prediction = client.prediction.as_ref().unwrap();
        checks += prediction.checks();
        mispredictions += prediction.mispredictions();
        eprintln!(
            "client {idx}: {} checks, {} mispredicted, {} snapshots",
            prediction.checks(),
            prediction.mispredictions(),
            client.session.stats().snapshots
        );
        for check in client.reconciliations.iter().filter(|r| r.mispredicted) {
            eprintln!("  {check:?} explained {}", explained(&stepper, check));
        }
    }
    let rate = mispredictions as f64 / checks as f64;
    eprintln!("rate {rate:.4} missed {missed_rate:.4} {stats:?} missing ticks {:?}", stepper.missing_input_ticks);
}
