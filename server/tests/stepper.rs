//! Netcode tests in the stepper: shard and clients in one process, manual time.
//!
//! Most of the shard's behaviour is tested here, in virtual time, where a lossy
//! network costs nothing to wait for and a statistic over thousands of inputs is
//! exact and repeatable: whole matches, many at once, the on-tick fraction under
//! loss, every refusal reason, seat takeover, resume, leave, drain and its
//! deadline. The socket suites (`conformance.rs`, `quic.rs`, `udp.rs`) only
//! check that each transport carries these behaviours.

#![expect(clippy::unwrap_used, reason = "tests unwrap what must be there")]

mod common;

use std::time::Duration;

use common::stepper::{EPOCH_MS, StepClient, Stepper};
use rally_client::session::{ClientEvent, ClientSession};
use rally_protocol::control::{ClientHello, DisconnectReason, EndReason, RefuseReason, ServerMessage, Welcome};
use rally_protocol::token::TokenClaims;
use rally_protocol::{MatchId, PlayerId, Seat};
use rally_server::ShardConfig;
use rally_transport::conditioner::LinkConditions;

const SHARD: &str = "step";

fn config() -> ShardConfig {
    ShardConfig { name: SHARD.into(), rng_seed: 7, ..ShardConfig::default() }
}

/// The claims of the player in `seat` of `match_id` (player id `match_id * 10 + seat`), to 3 points.
fn claims(match_id: u64, seat: Seat) -> TokenClaims {
    common::claims(SHARD, match_id, seat, match_id * 10 + u64::from(seat), EPOCH_MS)
}

fn connect(claims: &TokenClaims) -> ClientHello {
    ClientHello::Connect { token: claims.sign(&common::issuer()).unwrap() }
}

fn resume(welcome: &Welcome) -> ClientHello {
    ClientHello::Resume { match_id: welcome.match_id, seat: welcome.seat, secret: welcome.resume_secret }
}

/// Both seats of `match_id`, played by autopilots, to `points_to_win`.
fn add_pair(stepper: &mut Stepper, match_id: u64, points_to_win: u8) -> (usize, usize) {
    let [a, b] =
        [0, 1].map(|seat| stepper.add_client(&connect(&TokenClaims { points_to_win, ..claims(match_id, seat) }), true));
    (a, b)
}

fn welcome(client: &StepClient) -> Welcome {
    client.session.welcome().unwrap().clone()
}

/// Until every client in `clients` has been closed by the shard, at most a second.
fn until_closed(stepper: &mut Stepper, clients: &[usize]) {
    let closed =
        stepper.run_until(Duration::from_secs(1), |s| clients.iter().all(|&idx| s.clients[idx].closed.is_some()));
    assert!(
        closed,
        "not closed: {:?}",
        clients.iter().filter(|&&idx| stepper.clients[idx].closed.is_none()).collect::<Vec<_>>()
    );
}

/// Until the ball is in play for client `idx` (the snapshot's phase field says 2).
fn until_playing(stepper: &mut Stepper, idx: usize) {
    let playing = stepper.run_until(Duration::from_secs(10), |s| {
        s.clients[idx].session.latest().is_some_and(|view| view.values[0] == 2)
    });
    assert!(playing, "the ball never came into play");
}

mod matches {
    use super::*;

    #[test]
    fn a_full_match_ends_with_one_result_that_both_clients_see() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 1);
        let (a, b) = add_pair(&mut stepper, 1, 3);
        assert!(stepper.run_until(Duration::from_secs(600), |s| s.clients.iter().all(|c| c.ended.is_some())));
        assert_eq!(stepper.results.len(), 1);
        let result = &stepper.results[0];
        assert_eq!(result.reason, EndReason::Score, "{result:?}");
        assert_eq!(result.scores.iter().max(), Some(&3));
        assert_eq!(
            result.seats.iter().map(|seat| seat.player_id).collect::<Vec<_>>(),
            [Some(PlayerId(10)), Some(PlayerId(11))]
        );
        for idx in [a, b] {
            let end = stepper.clients[idx].ended.as_ref().unwrap();
            assert_eq!(end.scores, result.scores);
            assert_eq!(end.winner, result.winner);
            // The end closes the connection, with no reason to give.
            assert_eq!(stepper.clients[idx].closed.map(|closed| closed.reason), Some(None));
        }
        let stats = stepper.shard.stats();
        assert_eq!(stats.inputs_missing, 0, "a perfect link delivers every input on time: {stats:?}");
        assert!(stats.snapshots_sent > 100 && stats.snapshots_full < 10, "deltas after the first ack: {stats:?}");
        // The result is emitted once and the match is forgotten.
        stepper.run_for(Duration::from_secs(1));
        assert_eq!(stepper.results.len(), 1);
        assert_eq!((stepper.shard.n_matches(), stepper.shard.n_connections()), (0, 0));
    }

    #[test]
    fn control_streams_cut_into_single_bytes_carry_the_same_match() {
        let run = |control_chunk| {
            let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 5);
            stepper.control_chunk = control_chunk;
            add_pair(&mut stepper, 1, 1);
            assert!(stepper.run_until(Duration::from_secs(300), |s| s.results.len() == 1));
            let result = stepper.results.pop().unwrap();
            (result.scores, result.winner, result.duration_ticks, result.input_log_digest)
        };
        assert_eq!(run(1), run(usize::MAX));
    }

    #[test]
    fn under_loss_and_jitter_inputs_land_on_their_tick_and_matches_finish() {
        let mut stepper = Stepper::new(config(), LinkConditions::lossy(), 2);
        for match_id in 1..=4 {
            add_pair(&mut stepper, match_id, 3);
        }
        assert!(stepper.run_until(Duration::from_secs(900), |s| s.results.len() == 4), "all matches finish");
        assert!(stepper.results.iter().all(|result| result.reason == EndReason::Score), "{:?}", stepper.results);
        for client in &stepper.clients {
            let (up, down) = (client.up.stats(), client.down.stats());
            assert!(
                up.dropped * 20 > up.sent && down.dropped * 20 > down.sent,
                "the link lost little: {up:?} {down:?}"
            );
        }
        let stats = stepper.shard.stats();
        let inputs = stats.inputs_on_time + stats.inputs_missing;
        assert!(inputs > 5_000, "{inputs} inputs is too few for a per-mille threshold");
        let on_time = stats.inputs_on_time as f64 / inputs as f64;
        assert!(on_time >= 0.995, "{on_time:.4} of {inputs} inputs applied on their tick: {stats:?}");
    }

    #[test]
    fn many_matches_at_once_each_end_once_with_their_own_result() {
        let n_matches = 50;
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 6);
        for match_id in 1..=n_matches {
            add_pair(&mut stepper, match_id, 1);
        }
        assert!(stepper.run_until(Duration::from_secs(600), |s| s.results.len() == n_matches as usize));
        let mut ids: Vec<MatchId> = stepper.results.iter().map(|result| result.match_id).collect();
        ids.sort();
        assert_eq!(ids, (1..=n_matches).map(MatchId).collect::<Vec<_>>(), "one result per match");
        for result in &stepper.results {
            assert_eq!(result.reason, EndReason::Score, "{result:?}");
            let seat_0 = result.seats[0].player_id.unwrap();
            assert_eq!(seat_0, PlayerId(result.match_id.0 * 10), "each result names its own players");
        }
        assert!(stepper.clients.iter().all(|client| client.ended.is_some() && client.closed.is_some()));
    }

    #[test]
    fn twenty_matches_under_loss_all_finish() {
        let mut stepper = Stepper::new(config(), LinkConditions::lossy(), 8);
        for match_id in 1..=20 {
            add_pair(&mut stepper, match_id, 1);
        }
        assert!(stepper.run_until(Duration::from_secs(600), |s| s.clients.iter().all(|c| c.ended.is_some())));
        assert_eq!(stepper.results.len(), 20);
        assert!(stepper.results.iter().all(|result| result.reason == EndReason::Score), "{:?}", stepper.results);
        for client in &stepper.clients {
            let end = client.ended.as_ref().unwrap();
            let result = stepper.results.iter().find(|result| result.match_id == welcome(client).match_id).unwrap();
            assert_eq!((&end.scores, end.winner), (&result.scores, result.winner));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let run = || {
            let mut stepper = Stepper::new(config(), LinkConditions::lossy(), 11);
            add_pair(&mut stepper, 3, 3);
            stepper.run_until(Duration::from_secs(600), |s| s.results.len() == 1);
            let result = stepper.results[0].clone();
            (result.scores, result.duration_ticks, result.input_log_digest, stepper.shard.stats().clone())
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn a_match_still_going_at_its_time_limit_ends_on_the_clock() {
        // Autopilots score about a point a minute: to 99 points the clock ends the match.
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 13);
        let [a, b] = [0, 1].map(|seat| {
            let claims = TokenClaims { points_to_win: 99, time_limit_s: 3, ..claims(1, seat) };
            stepper.add_client(&connect(&claims), true)
        });
        assert!(stepper.run_until(Duration::from_secs(30), |s| s.results.len() == 1), "the clock ends the match");
        let result = &stepper.results[0];
        assert_eq!(result.reason, EndReason::TimeLimit, "{result:?}");
        // Regulation (3 s) plus at most sudden death (1.5 s), from the first countdown.
        let tick_rate = u32::from(config().tick_rate_hz);
        assert!(result.duration_ticks <= 3 * tick_rate + 3 * tick_rate / 2 + 2, "{result:?}");
        let leader = match result.scores[0].cmp(&result.scores[1]) {
            std::cmp::Ordering::Greater => Some(0),
            std::cmp::Ordering::Less => Some(1),
            std::cmp::Ordering::Equal => None,
        };
        assert_eq!(result.winner, leader, "the leader wins, level is a draw: {result:?}");
        for idx in [a, b] {
            let end = stepper.clients[idx].ended.as_ref().unwrap();
            assert_eq!((end.reason, end.winner, &end.scores), (EndReason::TimeLimit, result.winner, &result.scores));
        }
        assert_eq!(stepper.shard.stats().matches_ended_by_reason.get("time_limit"), Some(&1));
    }

    #[test]
    fn a_ping_is_answered_with_the_same_time_and_the_server_tick() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 12);
        let (a, _) = add_pair(&mut stepper, 1, 1);
        assert!(stepper.run_until(Duration::from_secs(5), |s| s.clients[a].session.latest().is_some()));
        stepper.send_control(a, &ClientSession::ping(123_456));
        let pong = |s: &Stepper| {
            s.clients[a].events.iter().find_map(|event| match event {
                ClientEvent::Message(ServerMessage::Pong { client_time_us, server_tick }) => {
                    Some((*client_time_us, *server_tick))
                }
                _ => None,
            })
        };
        assert!(stepper.run_until(Duration::from_millis(100), |s| pong(s).is_some()));
        let (time, tick) = pong(&stepper).unwrap();
        assert_eq!(time, 123_456);
        assert!(tick > 0 && tick <= stepper.shard.tick_number(), "server tick {tick}");
    }
}

/// Every reason a shard refuses a hello, each with the exact reason, the
/// connection closed with no reason beyond the refusal, and nothing held.
mod refusals {
    use super::*;
    use common::stepper::Greeting::{self, Credential, Raw};
    use rally_protocol::PROTOCOL_VERSION;
    use rally_protocol::codec::{MAGIC, encode_frame, encode_hello_frame_with_version};

    /// Client `idx` was refused for `reason` and let go.
    fn assert_refused(stepper: &Stepper, idx: usize, reason: RefuseReason, what: &str) {
        let client = &stepper.clients[idx];
        assert_eq!(client.refusal(), Some(reason), "{what}: {:?}", client.events);
        assert_eq!(client.closed.map(|closed| closed.reason), Some(None), "{what}: closed after the refusal");
        assert!(client.session.welcome().is_none() && client.session.is_over(), "{what}");
    }

    /// A hello frame whose payload is `payload`, as a broken client would write it.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn bad_hellos_and_bad_tokens_are_refused_with_their_reason() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 20);
        let seated = stepper.add_client(&connect(&claims(1, 0)), false);
        // Each case is for a match of its own: a token wrongly let in would create it.
        let good = |match_id| claims(match_id, 0);
        let mut old_hello = Vec::new();
        encode_hello_frame_with_version(0, &connect(&good(100)), &mut old_hello);
        let mut unmagic = Vec::new();
        encode_frame(&connect(&good(101)), &mut unmagic);
        let mut undecodable = MAGIC.to_vec();
        undecodable.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        undecodable.extend_from_slice(&[0xff; 5]);
        let forger = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let token = |claims: TokenClaims| Credential(connect(&claims));
        let cases: Vec<(&str, Greeting, RefuseReason)> = vec![
            ("a hello of protocol 0", Raw(old_hello), RefuseReason::VersionMismatch),
            ("a hello without the magic", Raw(unmagic), RefuseReason::MalformedHello),
            ("a hello too short for a version", Raw(frame(b"RAL")), RefuseReason::MalformedHello),
            ("a hello whose body does not decode", Raw(frame(&undecodable)), RefuseReason::MalformedHello),
            (
                "a token of protocol 0",
                token(TokenClaims { protocol_version: 0, ..good(102) }),
                RefuseReason::VersionMismatch,
            ),
            (
                "a token that is not a token",
                Credential(ClientHello::Connect { token: vec![0; 10] }),
                RefuseReason::TokenMalformed,
            ),
            (
                "a token signed by another key",
                Credential(ClientHello::Connect { token: good(103).sign(&forger).unwrap() }),
                RefuseReason::TokenForged,
            ),
            (
                "an expired token",
                token(TokenClaims { issued_at_ms: EPOCH_MS - 120_000, expires_at_ms: EPOCH_MS - 60_000, ..good(104) }),
                RefuseReason::TokenExpired,
            ),
            (
                "a token issued a minute from now",
                token(TokenClaims { issued_at_ms: EPOCH_MS + 60_000, expires_at_ms: EPOCH_MS + 120_000, ..good(105) }),
                RefuseReason::TokenNotYetValid,
            ),
            (
                "a token for another shard",
                token(TokenClaims { shard: "elsewhere".into(), ..good(106) }),
                RefuseReason::WrongShard,
            ),
            (
                "a token signed by an unknown key",
                token(TokenClaims { key_id: 9, ..good(107) }),
                RefuseReason::UnknownKey,
            ),
        ];
        let refused: Vec<usize> = cases
            .iter()
            .map(|(_, greeting, _)| match greeting {
                Credential(hello) => stepper.add_client(hello, false),
                Raw(bytes) => stepper.add_raw_client(bytes.clone()),
            })
            .collect();
        // Within the clock skew the shard allows, a token from the near future is good.
        let skewed =
            stepper.add_client(&connect(&TokenClaims { issued_at_ms: EPOCH_MS + 4_000, ..claims(2, 0) }), false);
        until_closed(&mut stepper, &refused);
        for ((what, _, reason), &idx) in cases.iter().zip(&refused) {
            assert_refused(&stepper, idx, *reason, what);
        }
        for idx in [seated, skewed] {
            assert_eq!((stepper.clients[idx].welcomes(), stepper.clients[idx].closed), (1, None));
        }
        assert_eq!((stepper.shard.n_matches(), stepper.shard.n_connections()), (2, 2), "refusals hold nothing");
    }

    #[test]
    fn a_token_used_twice_is_refused_and_the_first_connection_keeps_its_seat() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 21);
        let token = connect(&claims(1, 0));
        let first = stepper.add_client(&token, false);
        assert!(stepper.run_until(Duration::from_millis(100), |s| s.clients[first].welcomes() == 1));
        let second = stepper.add_client(&token, false);
        until_closed(&mut stepper, &[second]);
        assert_refused(&stepper, second, RefuseReason::TokenReused, "a token used twice");
        assert_eq!((stepper.clients[first].closed, stepper.shard.n_connections()), (None, 1));
        // Nor does the token take the seat back after a drop: that is what resume is for.
        stepper.drop_client(first);
        stepper.reconnect_client(first, &token);
        until_closed(&mut stepper, &[first]);
        assert_refused(&stepper, first, RefuseReason::TokenReused, "the token again after a drop");
    }

    #[test]
    fn a_seat_held_by_another_player_is_refused_as_seat_taken_even_while_it_is_dropped() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 22);
        let holder = stepper.add_client(&connect(&claims(1, 0)), false);
        assert!(stepper.run_until(Duration::from_millis(100), |s| s.clients[holder].welcomes() == 1));
        let intruder = TokenClaims { player_id: PlayerId(99), nonce: [99; 16], ..claims(1, 0) };
        let live = stepper.add_client(&connect(&intruder), false);
        until_closed(&mut stepper, &[live]);
        assert_refused(&stepper, live, RefuseReason::SeatTaken, "another player's token for a held seat");
        assert_eq!(stepper.clients[holder].closed, None, "the holder keeps the seat");
        stepper.drop_client(holder);
        let dropped = stepper.add_client(&connect(&TokenClaims { nonce: [98; 16], ..intruder }), false);
        until_closed(&mut stepper, &[dropped]);
        assert_refused(&stepper, dropped, RefuseReason::SeatTaken, "another player's token for a dropped seat");
        // The seat is still the holder's to resume.
        stepper.reconnect_client(holder, &resume(&welcome(&stepper.clients[holder])));
        assert!(stepper.run_until(Duration::from_millis(100), |s| s.clients[holder].welcomes() == 2));
    }

    #[test]
    fn tokens_whose_match_settings_conflict_are_refused_as_bad_match_spec() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 23);
        let first = stepper.add_client(&connect(&claims(1, 0)), false);
        assert!(stepper.run_until(Duration::from_millis(100), |s| s.clients[first].welcomes() == 1));
        let cases = [
            ("another points to win than the running match's", TokenClaims { points_to_win: 5, ..claims(1, 1) }),
            ("another seat count than the running match's", TokenClaims { n_seats: 4, ..claims(1, 1) }),
            ("a seat count the game does not play", TokenClaims { n_seats: 3, ..claims(2, 0) }),
            ("no points to win", TokenClaims { points_to_win: 0, ..claims(3, 0) }),
            ("more points to win than the game allows", TokenClaims { points_to_win: 100, ..claims(4, 0) }),
            ("another time limit than the running match's", TokenClaims { time_limit_s: 60, ..claims(1, 1) }),
            ("no time limit", TokenClaims { time_limit_s: 0, ..claims(5, 0) }),
        ];
        let refused: Vec<usize> = cases.iter().map(|(_, claims)| stepper.add_client(&connect(claims), false)).collect();
        until_closed(&mut stepper, &refused);
        for ((what, _), &idx) in cases.iter().zip(&refused) {
            assert_refused(&stepper, idx, RefuseReason::BadMatchSpec, what);
        }
        assert_eq!(stepper.shard.n_matches(), 1, "no match was created for a bad spec");
        // The seat refused for its settings is still open to a token that agrees.
        let second = stepper.add_client(&connect(&claims(1, 1)), false);
        assert!(stepper.run_until(Duration::from_millis(100), |s| s.clients[second].welcomes() == 1));
    }

    #[test]
    fn a_full_shard_refuses_new_matches_as_shard_full_but_fills_running_ones() {
        let mut stepper = Stepper::new(ShardConfig { max_matches: 1, ..config() }, LinkConditions::perfect(), 24);
        let quick = |match_id, seat| connect(&TokenClaims { points_to_win: 1, ..claims(match_id, seat) });
        let a = stepper.add_client(&quick(1, 0), true);
        assert!(stepper.run_until(Duration::from_millis(100), |s| s.clients[a].welcomes() == 1));
        let late_token = quick(2, 0);
        let late = stepper.add_client(&late_token, true);
        until_closed(&mut stepper, &[late]);
        assert_refused(&stepper, late, RefuseReason::ShardFull, "a new match on a full shard");
        let b = stepper.add_client(&quick(1, 1), true);
        assert!(
            stepper.run_until(Duration::from_millis(100), |s| s.clients[b].welcomes() == 1),
            "running matches fill"
        );
        assert!(stepper.run_until(Duration::from_secs(300), |s| s.results.len() == 1));
        // A refusal for capacity does not spend the token: with room again, it is let in.
        stepper.reconnect_client(late, &late_token);
        assert!(stepper.run_until(Duration::from_millis(100), |s| s.clients[late].welcomes() == 1));
        assert_eq!(stepper.shard.n_matches(), 1);
    }

    #[test]
    fn a_finished_match_refuses_tokens_and_resumes_as_match_finished() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 25);
        let (a, _) = add_pair(&mut stepper, 1, 1);
        assert!(stepper.run_until(Duration::from_secs(300), |s| s.results.len() == 1));
        let secret = resume(&welcome(&stepper.clients[a]));
        let fresh = connect(&TokenClaims { nonce: [77; 16], ..claims(1, 0) });
        let late: Vec<usize> = [secret, fresh].iter().map(|hello| stepper.add_client(hello, false)).collect();
        until_closed(&mut stepper, &late);
        assert_refused(&stepper, late[0], RefuseReason::MatchFinished, "a resume into a finished match");
        assert_refused(&stepper, late[1], RefuseReason::MatchFinished, "a fresh token for a finished match");
        assert_eq!(stepper.shard.n_matches(), 0, "the finished match was not created again");
    }

    #[test]
    fn a_resume_with_a_wrong_credential_is_refused_as_resume_refused() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 26);
        let (a, _) = add_pair(&mut stepper, 1, 3);
        assert!(stepper.run_until(Duration::from_millis(100), |s| s.clients[a].welcomes() == 1));
        let real = welcome(&stepper.clients[a]);
        let cases = [
            ("a wrong secret", ClientHello::Resume { match_id: real.match_id, seat: 0, secret: [0; 32] }),
            (
                "the other seat's secret",
                ClientHello::Resume { match_id: real.match_id, seat: 1, secret: real.resume_secret },
            ),
            (
                "a seat the match does not have",
                ClientHello::Resume { match_id: real.match_id, seat: 7, secret: real.resume_secret },
            ),
            ("an unknown match", ClientHello::Resume { match_id: MatchId(999), seat: 0, secret: real.resume_secret }),
        ];
        let refused: Vec<usize> = cases.iter().map(|(_, hello)| stepper.add_client(hello, false)).collect();
        until_closed(&mut stepper, &refused);
        for ((what, _), &idx) in cases.iter().zip(&refused) {
            assert_refused(&stepper, idx, RefuseReason::ResumeRefused, what);
        }
        assert_eq!(stepper.clients[a].closed, None, "a failed resume displaces nobody");
    }

    #[test]
    fn a_resume_after_the_grace_window_is_refused_as_resume_expired() {
        // A waiting match does not forfeit an empty seat, so the seat outlives its window.
        let config = ShardConfig { resume_grace_ticks: 60, ..config() };
        let mut stepper = Stepper::new(config, LinkConditions::perfect(), 27);
        let (early, late) =
            (stepper.add_client(&connect(&claims(1, 0)), false), stepper.add_client(&connect(&claims(2, 0)), false));
        assert!(
            stepper.run_until(Duration::from_millis(100), |s| s.clients[early].welcomes() + s.clients[late].welcomes()
                == 2)
        );
        stepper.drop_client(early);
        stepper.drop_client(late);
        stepper.run_for(Duration::from_millis(500));
        stepper.reconnect_client(early, &resume(&welcome(&stepper.clients[early])));
        assert!(
            stepper.run_until(Duration::from_millis(100), |s| s.clients[early].welcomes() == 2),
            "within the window"
        );
        stepper.run_for(Duration::from_millis(1_000));
        stepper.reconnect_client(late, &resume(&welcome(&stepper.clients[late])));
        until_closed(&mut stepper, &[late]);
        assert_refused(&stepper, late, RefuseReason::ResumeExpired, "a resume 1.5 s after a drop, with a 1 s window");
    }
}

/// Who holds a seat: takeover, resume, leave, drop.
mod seats {
    use super::*;

    #[test]
    fn a_second_credential_for_a_seat_takes_it_over_and_the_old_connection_is_told_replaced() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 30);
        let (first, opponent) = add_pair(&mut stepper, 1, 1);
        until_playing(&mut stepper, first);
        // The same player with a fresh token (another nonce), from another connection.
        let second =
            stepper.add_client(&connect(&TokenClaims { nonce: [55; 16], points_to_win: 1, ..claims(1, 0) }), true);
        assert!(stepper.run_until(Duration::from_millis(100), |s| s.clients[first].closed.is_some()));
        let expect_replaced = |client: &StepClient, what: &str| {
            assert_eq!(client.disconnect(), Some(DisconnectReason::Replaced), "{what}: {:?}", client.events);
            assert_eq!(client.closed.map(|closed| closed.reason), Some(Some(DisconnectReason::Replaced)), "{what}");
            assert!(client.session.is_over(), "{what}");
        };
        expect_replaced(&stepper.clients[first], "the token's first connection");
        assert_eq!(welcome(&stepper.clients[second]).seat, 0);
        assert_eq!(welcome(&stepper.clients[second]).resume_secret, welcome(&stepper.clients[first]).resume_secret);
        // The resume secret takes the seat over just the same.
        let third = stepper.add_client(&resume(&welcome(&stepper.clients[second])), true);
        assert!(stepper.run_until(Duration::from_millis(100), |s| s.clients[second].closed.is_some()));
        expect_replaced(&stepper.clients[second], "the takeover's connection");
        assert_eq!(stepper.shard.n_connections(), 2, "one connection per seat");
        assert!(stepper.run_until(Duration::from_secs(300), |s| s.results.len() == 1));
        let result = &stepper.results[0];
        assert_eq!(result.reason, EndReason::Score, "the seat never stood empty long enough to forfeit: {result:?}");
        assert_eq!(result.seats[0].player_id, Some(PlayerId(10)));
        for idx in [third, opponent] {
            assert_eq!(stepper.clients[idx].ended.as_ref().unwrap().scores, result.scores);
        }
        assert_eq!(stepper.clients[opponent].disconnect(), None);
    }

    #[test]
    fn a_dropped_client_resumes_its_seat_within_the_grace_window() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 3);
        let (a, b) = add_pair(&mut stepper, 9, 3);
        assert!(stepper.run_until(Duration::from_secs(10), |s| s.clients[a].session.latest().is_some()));
        let before = welcome(&stepper.clients[a]);
        stepper.drop_client(a);
        stepper.run_for(Duration::from_secs(5));
        stepper.reconnect_client(a, &resume(&before));
        assert!(stepper.run_until(Duration::from_secs(600), |s| s.results.len() == 1));
        assert_eq!(stepper.results[0].reason, EndReason::Score, "not forfeited: {:?}", stepper.results[0]);
        let after = welcome(&stepper.clients[a]);
        assert_eq!((after.seat, after.player_id, stepper.clients[a].welcomes()), (before.seat, PlayerId(90), 2));
        // The opponent saw the seat go and come back.
        let presence: Vec<bool> = stepper.clients[b]
            .events
            .iter()
            .filter_map(|event| match event {
                ClientEvent::Message(ServerMessage::SeatPresence { seat: 0, connected }) => Some(*connected),
                _ => None,
            })
            .collect();
        assert_eq!(presence, [false, true]);
    }

    #[test]
    fn the_resume_window_starts_when_the_shard_is_told_of_the_drop() {
        // A 1 s window. The client falls silent; its transport tells the shard only
        // 3 s later (an idle timeout), and the window runs from then.
        let mut stepper =
            Stepper::new(ShardConfig { resume_grace_ticks: 60, ..config() }, LinkConditions::perfect(), 33);
        let (a, b) = add_pair(&mut stepper, 6, 3);
        until_playing(&mut stepper, a);
        let before = welcome(&stepper.clients[a]);
        stepper.clients[a].connected = false;
        stepper.run_for(Duration::from_secs(3));
        assert_eq!(stepper.results.len(), 0, "a silent seat the shard was not told of is not forfeited");
        stepper.shard.handle_disconnect(stepper.clients[a].conn);
        stepper.run_for(Duration::from_millis(800));
        stepper.reconnect_client(a, &resume(&before));
        assert!(
            stepper.run_until(Duration::from_millis(100), |s| s.clients[a].welcomes() == 2),
            "3.8 s after the last packet, 0.8 s after the notice: within the window"
        );
        // The opponent saw one drop and one return.
        let presence = stepper.clients[b]
            .events
            .iter()
            .filter(|event| matches!(event, ClientEvent::Message(ServerMessage::SeatPresence { seat: 0, .. })))
            .count();
        assert_eq!(presence, 2);
    }

    #[test]
    fn under_loss_a_dropped_client_resumes_and_the_match_finishes() {
        let mut stepper = Stepper::new(config(), LinkConditions::lossy(), 31);
        let (a, b) = add_pair(&mut stepper, 4, 2);
        until_playing(&mut stepper, a);
        let before = welcome(&stepper.clients[a]);
        stepper.drop_client(a);
        stepper.run_for(Duration::from_secs(3));
        stepper.reconnect_client(a, &resume(&before));
        assert!(stepper.run_until(Duration::from_secs(600), |s| s.clients.iter().all(|c| c.ended.is_some())));
        assert_eq!(stepper.results.len(), 1);
        let result = &stepper.results[0];
        assert_eq!(result.reason, EndReason::Score, "not forfeited: {result:?}");
        assert_eq!(welcome(&stepper.clients[a]).seat, before.seat);
        for idx in [a, b] {
            let end = stepper.clients[idx].ended.as_ref().unwrap();
            assert_eq!((&end.scores, end.winner), (&result.scores, result.winner));
        }
        assert!(stepper.clients[a].down.stats().dropped > 0, "the resumed connection's link was lossy too");
    }

    #[test]
    fn a_player_who_leaves_forfeits_at_once_and_the_opponent_is_told() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 4);
        let (a, b) = add_pair(&mut stepper, 11, 3);
        assert!(stepper.run_until(Duration::from_secs(10), |s| s.clients.iter().all(|c| c.session.latest().is_some())));
        let left_at = stepper.now;
        stepper.send_control(a, &ClientSession::leave());
        // Far inside the resume window a dropped connection would be given.
        let grace = config().resume_grace_ticks / u32::from(config().tick_rate_hz);
        let within = Duration::from_secs(u64::from(grace / 4).max(1));
        assert!(stepper.run_until(within, |s| s.results.len() == 1 && s.clients[b].ended.is_some()), "ended at once");
        let result = &stepper.results[0];
        assert_eq!((result.reason, result.winner), (EndReason::Forfeit, Some(1)), "{result:?}");
        assert!(result.seats[0].forfeited && !result.seats[1].forfeited, "{result:?}");
        let end = stepper.clients[b].ended.as_ref().unwrap();
        assert_eq!((end.reason, end.winner, end.forfeited.clone()), (EndReason::Forfeit, Some(1), vec![0]));
        // The leaver's connection is closed at once, with no match end to read.
        let closed = stepper.clients[a].closed.unwrap();
        assert_eq!(closed.reason, None);
        assert!(closed.at - left_at < Duration::from_millis(50), "closed {:?} after the leave", closed.at - left_at);
        assert!(stepper.clients[a].ended.is_none());
        // Leave ended the seat: in Pong the match with it, so its secret meets the end.
        stepper.reconnect_client(a, &resume(&welcome(&stepper.clients[a])));
        until_closed(&mut stepper, &[a]);
        assert_eq!(stepper.clients[a].refusal(), Some(RefuseReason::MatchFinished));
    }

    #[test]
    fn a_seat_left_empty_past_the_grace_window_forfeits() {
        let mut stepper =
            Stepper::new(ShardConfig { resume_grace_ticks: 120, ..config() }, LinkConditions::perfect(), 4);
        let (a, b) = add_pair(&mut stepper, 5, 3);
        assert!(stepper.run_until(Duration::from_secs(10), |s| s.clients[a].session.latest().is_some()));
        let before = welcome(&stepper.clients[a]);
        stepper.drop_client(a);
        assert!(stepper.run_until(Duration::from_secs(10), |s| s.results.len() == 1));
        let result = &stepper.results[0];
        assert_eq!((result.reason, result.winner), (EndReason::Forfeit, Some(result.seats[1].side)));
        assert!(stepper.clients[b].ended.is_some());
        // Too late to come back: the match is over.
        stepper.reconnect_client(a, &resume(&before));
        until_closed(&mut stepper, &[a]);
        assert_eq!(stepper.clients[a].refusal(), Some(RefuseReason::MatchFinished));
    }

    #[test]
    fn an_undecodable_control_message_ends_the_connection_as_a_protocol_violation() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 32);
        let (a, b) = add_pair(&mut stepper, 1, 1);
        assert!(stepper.run_until(Duration::from_secs(5), |s| s.clients[a].session.latest().is_some()));
        stepper.send_control(a, &[3, 0, 0, 0, 0xff, 0xff, 0xff]);
        until_closed(&mut stepper, &[a]);
        assert_eq!(stepper.clients[a].disconnect(), Some(DisconnectReason::ProtocolViolation));
        let said = stepper.clients[a].events.iter().find_map(|event| match event {
            ClientEvent::Disconnected { message, .. } => Some(message.clone()),
            _ => None,
        });
        assert_eq!(said.as_deref(), Some("a control frame is not a ClientMessage (PROTOCOL.md 5.3)"), "no serde text");
        assert_eq!(
            stepper.clients[a].closed.map(|closed| closed.reason),
            Some(Some(DisconnectReason::ProtocolViolation))
        );
        assert_eq!(stepper.shard.n_connections(), 1);
        // The seat is dropped, not lost: its player may resume.
        stepper.reconnect_client(a, &resume(&welcome(&stepper.clients[a])));
        assert!(stepper.run_until(Duration::from_secs(300), |s| s.results.len() == 1));
        assert_eq!(stepper.results[0].reason, EndReason::Score);
        assert_eq!(stepper.clients[b].disconnect(), None);
    }
}

/// A drain: running matches finish, new ones are refused; at the deadline
/// `abort_all` ends the rest.
mod drain {
    use super::*;
    use rally_protocol::results::MatchResult;

    fn result_of(stepper: &Stepper, match_id: u64) -> &MatchResult {
        stepper.results.iter().find(|result| result.match_id == MatchId(match_id)).unwrap()
    }

    #[test]
    fn running_matches_finish_during_a_drain_and_new_ones_are_refused() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 40);
        let (a, _) = add_pair(&mut stepper, 1, 1);
        let half = stepper.add_client(&connect(&TokenClaims { points_to_win: 1, ..claims(2, 0) }), true);
        assert!(
            stepper
                .run_until(Duration::from_secs(1), |s| s.clients[a].welcomes() == 1 && s.clients[half].welcomes() == 1)
        );
        stepper.shard.begin_drain();
        assert!(stepper.shard.is_draining());
        let refused = stepper.add_client(&connect(&claims(3, 0)), true);
        let other_half = stepper.add_client(&connect(&TokenClaims { points_to_win: 1, ..claims(2, 1) }), true);
        assert!(stepper.run_until(Duration::from_secs(300), |s| s.results.len() == 2));
        assert_eq!(stepper.clients[refused].refusal(), Some(RefuseReason::Draining));
        assert_eq!(stepper.clients[other_half].welcomes(), 1, "a match running at the drain still fills");
        for match_id in [1, 2] {
            assert_eq!(result_of(&stepper, match_id).reason, EndReason::Score, "match {match_id}");
        }
        assert_eq!((stepper.shard.n_matches(), stepper.shard.n_connections()), (0, 0));
    }

    #[test]
    fn at_the_drain_deadline_abort_all_ends_the_rest_with_one_score_per_side() {
        let mut stepper = Stepper::new(config(), LinkConditions::lossy(), 41);
        // Match 1 plays to 99 points (it will not finish); match 2 waits for its second player.
        let (a, b) = add_pair(&mut stepper, 1, 99);
        let waiting = stepper.add_client(&connect(&claims(2, 0)), true);
        assert!(stepper.run_until(Duration::from_secs(120), |s| {
            s.clients[a]
                .events
                .iter()
                .any(|event| matches!(event, ClientEvent::Message(ServerMessage::PointScored { .. })))
        }));
        stepper.shard.begin_drain();
        // The driver's drain timeout, in virtual time.
        stepper.run_for(Duration::from_secs(2));
        assert!(stepper.results.is_empty(), "nothing ended before the deadline");
        let ended_at = stepper.now_ms();
        stepper.shard.abort_all(ended_at);
        until_closed(&mut stepper, &[a, b, waiting]);
        // The control stream is ordered: every point reached the clients before the end.
        let last_scores = stepper.clients[a].events.iter().rev().find_map(|event| match event {
            ClientEvent::Message(ServerMessage::PointScored { scores, .. }) => Some(scores.clone()),
            _ => None,
        });
        assert_eq!(stepper.results.len(), 2);
        for match_id in [1, 2] {
            let result = result_of(&stepper, match_id);
            assert_eq!((result.reason, result.winner), (EndReason::ShardShutdown, None), "match {match_id}");
            assert_eq!(result.ended_at_ms, ended_at);
        }
        assert_eq!(result_of(&stepper, 1).scores, last_scores.unwrap(), "the scores as they stood");
        assert_eq!(result_of(&stepper, 2).scores, [0, 0], "one score per side before any point");
        for idx in [a, b, waiting] {
            let end = stepper.clients[idx].ended.as_ref().unwrap();
            assert_eq!(end.reason, EndReason::ShardShutdown);
            assert_eq!(stepper.clients[idx].closed.map(|closed| closed.reason), Some(None));
        }
        assert_eq!((stepper.shard.n_matches(), stepper.shard.n_connections()), (0, 0));
    }

    #[test]
    fn abort_all_ends_every_match_and_the_shard_plays_on() {
        let mut stepper = Stepper::new(config(), LinkConditions::perfect(), 42);
        let clients: Vec<usize> = (1..=3)
            .flat_map(|match_id| {
                let (a, b) = add_pair(&mut stepper, match_id, 3);
                [a, b]
            })
            .collect();
        assert!(stepper.run_until(Duration::from_secs(5), |s| {
            clients.iter().all(|&idx| s.clients[idx].session.latest().is_some())
        }));
        stepper.shard.abort_all(stepper.now_ms());
        until_closed(&mut stepper, &clients);
        let mut ended: Vec<(MatchId, EndReason)> =
            stepper.results.iter().map(|result| (result.match_id, result.reason)).collect();
        ended.sort_by_key(|(match_id, _)| *match_id);
        assert_eq!(ended, (1..=3).map(|id| (MatchId(id), EndReason::ShardShutdown)).collect::<Vec<_>>());
        for &idx in &clients {
            let end = stepper.clients[idx].ended.as_ref().unwrap();
            let result = result_of(&stepper, welcome(&stepper.clients[idx]).match_id.0);
            assert_eq!((end.reason, &end.scores), (EndReason::ShardShutdown, &result.scores));
            assert_eq!(result.scores.len(), 2, "one score per side: {result:?}");
        }
        // Not draining: a new match is welcomed and plays to its end; the aborted ones stay finished.
        assert!(!stepper.shard.is_draining());
        let (c, _) = add_pair(&mut stepper, 4, 1);
        let again = stepper.add_client(&resume(&welcome(&stepper.clients[clients[0]])), false);
        assert!(stepper.run_until(Duration::from_secs(300), |s| s.results.len() == 4));
        assert_eq!(result_of(&stepper, 4).reason, EndReason::Score);
        assert_eq!(stepper.clients[c].ended.as_ref().unwrap().reason, EndReason::Score);
        assert_eq!(stepper.clients[again].refusal(), Some(RefuseReason::MatchFinished));
    }
}
