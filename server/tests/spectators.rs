//! Spectator tokens (PROTOCOL.md section 15, issue #20) in the stepper.
//!
//! This shard does not serve spectators yet: a spectator token (seat
//! `SPECTATOR_SEAT`) is refused cleanly, creates no match and takes no seat,
//! whether or not its match is running.

mod common;

use std::time::Duration;

use common::stepper::{EPOCH_MS, Stepper};
use rally_protocol::control::{ClientHello, RefuseReason};
use rally_protocol::token::SPECTATOR_SEAT;
use rally_server::ShardConfig;
use rally_transport::conditioner::LinkConditions;

const SHARD: &str = "step";

fn connect(match_id: u64, seat: u8, player: u64) -> ClientHello {
    ClientHello::Connect { token: common::token(SHARD, match_id, seat, player, EPOCH_MS) }
}

#[test]
fn a_spectator_token_is_refused_and_takes_nothing() {
    let config = ShardConfig { name: SHARD.into(), rng_seed: 7, ..ShardConfig::default() };
    let mut stepper = Stepper::new(config, LinkConditions::perfect(), 3);
    let player = stepper.add_client(&connect(1, 0, 10), false);
    // One for the running match, one for a match the shard has never seen.
    let running = stepper.add_client(&connect(1, SPECTATOR_SEAT, 99), false);
    let unknown = stepper.add_client(&connect(2, SPECTATOR_SEAT, 98), false);
    let settled = stepper.run_until(Duration::from_secs(2), |stepper| {
        stepper.clients[player].welcomes() == 1
            && stepper.clients[running].refusal().is_some()
            && stepper.clients[unknown].refusal().is_some()
    });
    assert!(settled, "{:?} / {:?}", stepper.clients[running].events, stepper.clients[unknown].events);
    for idx in [running, unknown] {
        assert_eq!(stepper.clients[idx].refusal(), Some(RefuseReason::BadMatchSpec));
        assert!(stepper.clients[idx].session.welcome().is_none());
    }
    assert_eq!(stepper.shard.n_matches(), 1, "a spectator token creates no match");
    assert_eq!(stepper.shard.n_connections(), 1, "and holds no seat");
    assert_eq!(stepper.clients[player].session.welcome().unwrap().seat, 0);
}
