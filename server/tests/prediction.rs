//! Client-side prediction of the own paddle against the real shard, in the stepper.
//!
//! Every client predicts its paddle from the inputs it sends and reconciles on every
//! snapshot. The Pong predictor mirrors the server rule exactly, so a prediction can
//! only be wrong where the shard did not apply an input on its tick (it arrived late or
//! not at all, and the shard repeated the previous one), and each snapshot restarts the
//! prediction from the truth, so one such miss costs at most the snapshots whose
//! prediction covered it.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;

use std::time::Duration;

use common::stepper::{EPOCH_MS, StepClient, Stepper};
use rally_protocol::control::{ClientHello, EndReason};
use rally_server::ShardConfig;
use rally_transport::conditioner::LinkConditions;

fn config() -> ShardConfig {
    ShardConfig { name: "step".into(), rng_seed: 17, ..ShardConfig::default() }
}

/// A stepper with `n_matches` two-seat matches between predicting autopilots.
fn predicting_matches(conditions: LinkConditions, seed: u64, n_matches: u64) -> Stepper {
    let mut stepper = Stepper::new(config(), conditions, seed);
    for match_id in 1..=n_matches {
        for seat in 0..2 {
            let token = common::token("step", match_id, seat, match_id * 10 + u64::from(seat), EPOCH_MS);
            let idx = stepper.add_client(&ClientHello::Connect { token }, true);
            stepper.predict(idx);
        }
    }
    stepper
}

fn play_to_the_end(stepper: &mut Stepper, n_matches: usize) {
    assert!(stepper.run_until(Duration::from_secs(900), |s| s.results.len() == n_matches), "every match finishes");
    assert!(stepper.results.iter().all(|result| result.reason == EndReason::Score), "{:?}", stepper.results);
}

/// Checks made and mispredictions seen by a client, over all its sessions.
fn tally(client: &StepClient) -> (usize, usize) {
    let checks = client.reconciliations.iter().filter(|r| r.checked).count();
    (checks, client.reconciliations.iter().filter(|r| r.mispredicted).count())
}

#[test]
fn on_a_perfect_link_the_own_paddle_is_never_mispredicted() {
    let mut stepper = predicting_matches(LinkConditions::perfect(), 21, 1);
    play_to_the_end(&mut stepper, 1);
    let stats = stepper.shard.stats();
    assert_eq!(stats.inputs_missing, 0, "{stats:?}");
    for client in &stepper.clients {
        let (checks, mispredictions) = tally(client);
        assert_eq!(mispredictions, 0, "{:?}", client.reconciliations.iter().find(|r| r.mispredicted));
        // Every snapshot but the first checks a prediction...
        let received = client.session.stats().snapshots as usize;
        assert!(checks + 1 == received && received > 200, "{checks} checks of {received} snapshots");
        // ...that ran ahead of it: inputs reach the shard a few ticks early, so the
        // prediction really predicted.
        for reconciliation in client.reconciliations.iter().skip(1) {
            assert!(reconciliation.predicted_tick.unwrap() >= reconciliation.tick + 2, "{reconciliation:?}");
        }
    }
}

#[test]
fn under_loss_mispredictions_are_bounded_by_missed_inputs_and_heal() {
    let n_matches = 4;
    let mut stepper = predicting_matches(LinkConditions::lossy(), 22, n_matches);
    play_to_the_end(&mut stepper, n_matches as usize);
    let stats = stepper.shard.stats();
    let missed_rate = stats.inputs_missing as f64 / (stats.inputs_on_time + stats.inputs_missing) as f64;
    let (mut checks, mut mispredictions) = (0, 0);
    for client in &stepper.clients {
        let (client_checks, client_mispredictions) = tally(client);
        let received = client.session.stats().snapshots as usize;
        assert!(client_checks * 100 >= received * 99, "{client_checks} checks of {received} snapshots");
        checks += client_checks;
        mispredictions += client_mispredictions;
        // No persistent desync: every misprediction is explained by an input the shard
        // missed on a tick between the snapshot the prediction started from and the one
        // it was checked against. A prediction that drifted from the server's rule, or
        // a reconciliation that did not restart from the truth, would mispredict where
        // nothing was missed.
        for check in client.reconciliations.iter().filter(|r| r.mispredicted) {
            let since = check.since.unwrap();
            assert!(
                stepper.missing_input_ticks.iter().any(|&tick| since < tick && tick <= check.tick),
                "{check:?} with inputs missed only on ticks {:?}",
                stepper.missing_input_ticks
            );
        }
    }
    let rate = mispredictions as f64 / checks as f64;
    assert!(checks > 1000, "{checks} checks");
    assert!(
        rate <= missed_rate + 0.002,
        "{mispredictions} of {checks} checks mispredicted ({rate:.4}), inputs missed {missed_rate:.4}: {stats:?}"
    );
}

#[test]
fn a_resumed_session_predicts_afresh() {
    let mut stepper = predicting_matches(LinkConditions::perfect(), 23, 1);
    assert!(stepper.run_until(Duration::from_secs(10), |s| s.clients[0].reconciliations.len() > 60));
    let welcome = stepper.clients[0].session.welcome().unwrap().clone();
    stepper.drop_client(0);
    // Away for two seconds: the shard stops the paddle, the client predicts nothing.
    stepper.run_until(Duration::from_secs(2), |_| false);
    let resume = ClientHello::Resume { match_id: welcome.match_id, seat: welcome.seat, secret: welcome.resume_secret };
    stepper.reconnect_client(0, &resume);
    play_to_the_end(&mut stepper, 1);
    let predictions_started = stepper.clients[0].reconciliations.iter().filter(|r| r.since.is_none()).count();
    assert_eq!(predictions_started, 2, "the resumed session started a new prediction");
    for client in &stepper.clients {
        assert_eq!(tally(client).1, 0, "{:?}", client.reconciliations.iter().find(|r| r.mispredicted));
    }
}
