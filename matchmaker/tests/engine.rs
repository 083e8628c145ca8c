//! The matchmaker engine on each backend: tickets to assignments with tokens
//! a shard accepts, who plays whom, capacity, expiry, cancel, parties,
//! regions, bots, a lost shard, and replicas racing over one queue.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, matchmaker, minter, shard};
use rally_matchmaker::config::{MatchmakerConfig, ModeConfig, WindowCurve};
use rally_matchmaker::{BotFill, BotSeat, EnqueueRequest, Matchmaker, TicketState};
use rally_protocol::token::TokenVerifier;
use rally_protocol::{MatchId, PlayerId};

on_both_backends!(
    matched_tickets_carry_tokens_the_shard_accepts,
    nearest_ratings_meet_and_windows_widen,
    tickets_wait_without_capacity_and_expire,
    cancel_and_watch_follow_the_ticket,
    parties_and_regions,
    bots_fill_seats_after_the_wait,
    a_lost_shards_matches_are_aborted_and_watchers_told,
    replicas_never_assign_a_ticket_twice_nor_overfill_a_shard,
);

fn config() -> MatchmakerConfig {
    let pong = ModeConfig {
        window: WindowCurve::parse("0:100,10:300").unwrap(),
        region_relax_after_ms: 5_000,
        points_to_win: 3,
        ..ModeConfig::one_vs_one("pong")
    };
    let doubles = ModeConfig { window: WindowCurve::parse("0:500").unwrap(), ..ModeConfig::two_vs_two("doubles") };
    let bots = ModeConfig { bot_fill_after_ms: Some(10_000), ..ModeConfig::one_vs_one("pong-bots") };
    MatchmakerConfig { modes: vec![pong, doubles, bots], ..MatchmakerConfig::default() }
}

fn solo(mode: &str) -> EnqueueRequest {
    EnqueueRequest { mode: mode.into(), ..EnqueueRequest::default() }
}

async fn state(mm: &Matchmaker, player: u64, ticket: rally_matchmaker::TicketId) -> TicketState {
    let (_, receiver) = mm.watch(PlayerId(player), ticket).await.unwrap();
    receiver.borrow().clone().unwrap()
}

fn assignment(state: &TicketState) -> &rally_matchmaker::ticket::Assignment {
    match state {
        TicketState::Matched(assignment) => assignment,
        other => panic!("not matched: {other:?}"),
    }
}

async fn matched_tickets_carry_tokens_the_shard_accepts(backend: &Backend) {
    let backends = backend.backends();
    backends.registry.register(&shard("s1", "eu", 10), 60_000, 0).await.unwrap();
    let mm = matchmaker(config(), backends.clone(), &[]);
    let a = mm.enqueue(PlayerId(1), solo("pong"), 1_000).await.unwrap();
    let b = mm.enqueue(PlayerId(2), solo("pong"), 1_100).await.unwrap();
    let stats = mm.run_round(1_200).await.unwrap();
    assert_eq!((stats.matches, stats.matched_tickets, stats.queued), (1, 2, 2));
    let (state_a, state_b) = (state(&mm, 1, a.id).await, state(&mm, 2, b.id).await);
    let (seat_a, seat_b) = (&assignment(&state_a).seats[0], &assignment(&state_b).seats[0]);
    assert_eq!(assignment(&state_a).match_id, assignment(&state_b).match_id);
    assert_eq!(
        (assignment(&state_a).shard_name.as_str(), assignment(&state_a).shard_address.as_str()),
        ("s1", "127.0.0.1:7777")
    );
    assert_eq!((seat_a.seat, seat_a.side, seat_b.seat, seat_b.side), (0, 0, 1, 1));
    let verifier = TokenVerifier::new("s1", [(1, minter().verifying_key())]);
    let claims = verifier.verify(&seat_b.connect_token, 1_300).unwrap();
    assert_eq!((claims.player_id, claims.seat, claims.n_seats, claims.points_to_win), (PlayerId(2), 1, 2, 3));
    assert_eq!(claims.match_id, assignment(&state_a).match_id);
    assert_eq!(backends.registry.shards(1_300).await.unwrap()[0].reserved, 1);
    // Nothing left to match.
    assert_eq!(mm.run_round(1_300).await.unwrap().matches, 0);
}

async fn nearest_ratings_meet_and_windows_widen(backend: &Backend) {
    let backends = backend.backends();
    backends.registry.register(&shard("s1", "eu", 100), 600_000, 0).await.unwrap();
    let ratings = [(1, 1500.0), (2, 1580.0), (3, 1450.0), (4, 1750.0)];
    let mm = matchmaker(config(), backends, &ratings);
    let mut tickets = HashMap::new();
    for (player, at) in [(1, 0), (2, 10), (3, 20), (4, 30)] {
        tickets.insert(player, mm.enqueue(PlayerId(player), solo("pong"), at).await.unwrap().id);
    }
    assert_eq!(mm.run_round(1_000).await.unwrap().matches, 1);
    let match_of = |state: TicketState| match state {
        TicketState::Matched(assignment) => Some(assignment.match_id),
        _ => None,
    };
    let m1 = match_of(state(&mm, 1, tickets[&1]).await);
    assert!(m1.is_some() && m1 == match_of(state(&mm, 3, tickets[&3]).await), "1500 meets 1450, the nearest");
    assert_eq!(state(&mm, 2, tickets[&2]).await, TicketState::Queued);
    // 1580 and 1750 are 170 apart: the window (100 → 300 over 10 s) allows it at 3.5 s.
    assert_eq!(mm.run_round(3_000).await.unwrap().matches, 0);
    assert_eq!(mm.run_round(4_000).await.unwrap().matches, 1);
    assert!(match_of(state(&mm, 4, tickets[&4]).await).is_some());
}

async fn tickets_wait_without_capacity_and_expire(backend: &Backend) {
    let backends = backend.backends();
    let mm = matchmaker(config(), backends.clone(), &[]);
    let a = mm.enqueue(PlayerId(1), solo("pong"), 0).await.unwrap();
    mm.enqueue(PlayerId(2), solo("pong"), 0).await.unwrap();
    let stats = mm.run_round(100).await.unwrap();
    assert_eq!((stats.matches, stats.no_capacity), (0, 1), "no shard at all");
    backends.registry.register(&shard("full", "eu", 0), 600_000, 0).await.unwrap();
    backends.registry.register(&shard("draining", "eu", 10), 600_000, 0).await.unwrap();
    backends.registry.set_draining("draining", true).await.unwrap();
    assert_eq!(mm.run_round(200).await.unwrap().no_capacity, 1, "full and draining shards are skipped");
    assert_eq!(state(&mm, 1, a.id).await, TicketState::Queued);
    // Unmatched past the mode's TTL (120 s): expired, and told so.
    let stats = mm.run_round(120_001).await.unwrap();
    assert_eq!(stats.expired, 2);
    assert_eq!(state(&mm, 1, a.id).await, TicketState::Expired);
    assert!(backends.tickets.queued("pong").await.unwrap().is_empty());
}

async fn cancel_and_watch_follow_the_ticket(backend: &Backend) {
    let backends = backend.backends();
    backends.registry.register(&shard("s1", "eu", 10), 600_000, 0).await.unwrap();
    let mm = matchmaker(config(), backends, &[]);
    let a = mm.enqueue(PlayerId(1), solo("pong"), 0).await.unwrap();
    let (_, mut watcher) = mm.watch(PlayerId(1), a.id).await.unwrap();
    assert_eq!(*watcher.borrow_and_update(), Some(TicketState::Queued));
    let err = mm.cancel(PlayerId(2), a.id).await.unwrap_err();
    assert!(matches!(err, rally_matchmaker::MatchmakerError::PermissionDenied(_)), "{err}");
    assert!(mm.watch(PlayerId(2), a.id).await.is_err());
    assert_eq!(mm.cancel(PlayerId(1), a.id).await.unwrap(), TicketState::Cancelled);
    watcher.changed().await.unwrap();
    assert_eq!(*watcher.borrow(), Some(TicketState::Cancelled));
    // A cancelled ticket is never matched.
    mm.enqueue(PlayerId(3), solo("pong"), 0).await.unwrap();
    assert_eq!(mm.run_round(100).await.unwrap().matches, 0);
    // A matched ticket cannot be cancelled.
    let b = mm.enqueue(PlayerId(4), solo("pong"), 10).await.unwrap();
    assert_eq!(mm.run_round(200).await.unwrap().matches, 1);
    assert!(matches!(mm.cancel(PlayerId(4), b.id).await.unwrap(), TicketState::Matched(_)));
    let unknown = mm.cancel(PlayerId(1), rally_matchmaker::TicketId(12345)).await.unwrap_err();
    assert!(matches!(unknown, rally_matchmaker::MatchmakerError::NotFound(_)));
}

async fn parties_and_regions(backend: &Backend) {
    let backends = backend.backends();
    backends.registry.register(&shard("eu-1", "eu", 10), 600_000, 0).await.unwrap();
    backends.registry.register(&shard("us-1", "us", 50), 600_000, 0).await.unwrap();
    let mm = matchmaker(config(), backends, &[]);
    // Doubles: a party of two against two solos.
    let party = EnqueueRequest { party: vec![PlayerId(2)], ..solo("doubles") };
    let p = mm.enqueue(PlayerId(1), party, 0).await.unwrap();
    let s3 = mm.enqueue(PlayerId(3), solo("doubles"), 1).await.unwrap();
    mm.enqueue(PlayerId(4), solo("doubles"), 2).await.unwrap();
    let too_big = EnqueueRequest { party: vec![PlayerId(6), PlayerId(7)], ..solo("doubles") };
    assert!(mm.enqueue(PlayerId(5), too_big, 0).await.is_err());
    let twice = EnqueueRequest { party: vec![PlayerId(5)], ..solo("doubles") };
    assert!(mm.enqueue(PlayerId(5), twice, 0).await.is_err());
    assert!(mm.enqueue(PlayerId(5), solo("no-such-mode"), 0).await.is_err());
    assert_eq!(mm.run_round(100).await.unwrap().matches, 1);
    let party_state = state(&mm, 2, p.id).await; // any member may watch
    let seats = &assignment(&party_state).seats;
    assert_eq!(seats.iter().map(|seat| (seat.player_id.0, seat.side)).collect::<Vec<_>>(), [(1, 0), (2, 0)]);
    assert_eq!(assignment(&state(&mm, 3, s3.id).await).seats[0].side, 1);
    // Regions: eu tickets meet in eu at once; an eu and a us ticket only after relaxing.
    let eu = |_player: u64| EnqueueRequest { region: Some("eu".into()), ..solo("pong") };
    let by_latency = EnqueueRequest { latencies_ms: vec![("us".into(), 90), ("eu".into(), 20)], ..solo("pong") };
    let e1 = mm.enqueue(PlayerId(10), eu(10), 0).await.unwrap();
    mm.enqueue(PlayerId(11), by_latency, 0).await.unwrap();
    assert_eq!(mm.run_round(100).await.unwrap().matches, 1);
    assert_eq!(
        assignment(&state(&mm, 10, e1.id).await).shard_name,
        "eu-1",
        "the region's shard, though us-1 is emptier"
    );
    let _ = eu;
    let us = EnqueueRequest { region: Some("us".into()), ..solo("pong") };
    let e2 = mm.enqueue(PlayerId(12), EnqueueRequest { region: Some("eu".into()), ..solo("pong") }, 0).await.unwrap();
    mm.enqueue(PlayerId(13), us, 1).await.unwrap();
    assert_eq!(mm.run_round(1_000).await.unwrap().matches, 0, "strict regions differ");
    assert_eq!(mm.run_round(5_001).await.unwrap().matches, 1, "relaxed after 5 s");
    assert_eq!(assignment(&state(&mm, 12, e2.id).await).shard_name, "eu-1", "the anchor's region still preferred");
}

#[derive(Debug, Default)]
struct Bots {
    seats: Mutex<Vec<BotSeat>>,
}

impl BotFill for Bots {
    fn bot_players(&self, _mode: &str, n: usize, _rating: f64) -> Option<Vec<PlayerId>> {
        Some((0..n as u64).map(|idx| PlayerId(1_000_000 + idx)).collect())
    }

    fn seat_assigned(&self, seat: BotSeat) {
        self.seats.lock().unwrap().push(seat);
    }
}

async fn bots_fill_seats_after_the_wait(backend: &Backend) {
    let backends = backend.backends();
    backends.registry.register(&shard("s1", "eu", 10), 600_000, 0).await.unwrap();
    let mm = matchmaker(config(), backends, &[]);
    let lonely = mm.enqueue(PlayerId(1), solo("pong-bots"), 0).await.unwrap();
    assert_eq!(mm.run_round(20_000).await.unwrap().matches, 0, "no bot hook installed");
    let bots = Arc::new(Bots::default());
    mm.set_bot_fill(bots.clone());
    assert_eq!(mm.run_round(5_000).await.unwrap().matches, 0, "not waited long enough");
    assert_eq!(mm.run_round(10_000).await.unwrap().matches, 1);
    let human = state(&mm, 1, lonely.id).await;
    let seats = bots.seats.lock().unwrap().clone();
    assert_eq!(seats.len(), 1);
    assert_eq!(
        (seats[0].player_id, seats[0].seat, seats[0].match_id),
        (PlayerId(1_000_000), 1, assignment(&human).match_id)
    );
    let verifier = TokenVerifier::new("s1", [(1, minter().verifying_key())]);
    assert_eq!(verifier.verify(&seats[0].connect_token, 10_001).unwrap().player_id, PlayerId(1_000_000));
}

async fn a_lost_shards_matches_are_aborted_and_watchers_told(backend: &Backend) {
    let backends = backend.backends();
    backends.registry.register(&shard("doomed", "eu", 10), 1_000, 0).await.unwrap();
    let mm = matchmaker(config(), backends.clone(), &[]);
    backends.bus.ensure_group("audit").await.unwrap();
    let a = mm.enqueue(PlayerId(1), solo("pong"), 0).await.unwrap();
    mm.enqueue(PlayerId(2), solo("pong"), 0).await.unwrap();
    assert_eq!(mm.run_round(100).await.unwrap().matches, 1);
    let (_, mut watcher) = mm.watch(PlayerId(1), a.id).await.unwrap();
    let match_id = assignment(watcher.borrow_and_update().as_ref().unwrap()).match_id;
    // The shard stops heartbeating; the next round past its TTL reaps it. (On
    // Redis leases run on Redis's own clock: wait until the entry lapsed there.)
    let registry = backends.registry.clone();
    common::eventually("the shard's entry lapses", || async { registry.shards(5_000).await.unwrap().is_empty() }).await;
    let stats = mm.run_round(5_000).await.unwrap();
    assert_eq!(stats.aborted_matches, 1);
    watcher.changed().await.unwrap();
    match watcher.borrow().clone().unwrap() {
        TicketState::Aborted { match_id: lost, reason } => {
            assert_eq!(lost, match_id);
            assert!(reason.contains("doomed") && reason.contains("enqueue again"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let reported = backends.bus.read_new("audit", "t", 10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(reported.len(), 1);
    let result = &reported[0].result;
    assert_eq!((result.match_id, result.winner), (match_id, None));
    assert!(rally_matchmaker::engine::is_aborted(result));
    let mut players: Vec<PlayerId> = result.seats.iter().filter_map(|seat| seat.player_id).collect();
    players.sort();
    assert_eq!(players, [PlayerId(1), PlayerId(2)]);
    // The players may queue again.
    assert!(mm.enqueue(PlayerId(1), solo("pong"), 6_000).await.is_ok());
    assert!(mm.run_round(7_000).await.unwrap().aborted_matches == 0, "reaped once");
}

async fn replicas_never_assign_a_ticket_twice_nor_overfill_a_shard(backend: &Backend) {
    const TICKETS: u64 = 10_000;
    const REPLICAS: usize = 4;
    let backends = backend.backends();
    // 4 000 slots for 5 000 possible matches: capacity runs out under the race.
    for shard_idx in 0..4 {
        backends.registry.register(&shard(&format!("s{shard_idx}"), "eu", 1_000), 600_000, 0).await.unwrap();
    }
    let wide = ModeConfig { window: WindowCurve::parse("0:2000").unwrap(), ..ModeConfig::one_vs_one("pong") };
    let replica_config = MatchmakerConfig { modes: vec![wide], ..MatchmakerConfig::default() };
    // Each replica has its own Redis connection, as separate processes would.
    let replicas: Vec<Matchmaker> =
        (0..REPLICAS).map(|_| matchmaker(replica_config.clone(), backend.own_connection(&backends), &[])).collect();
    // Tickets arrive through every replica while all of them run rounds.
    let mut tasks = tokio::task::JoinSet::new();
    for (replica_idx, replica) in replicas.iter().enumerate() {
        let replica = replica.clone();
        tasks.spawn(async move {
            let mut tickets = Vec::new();
            let mut stats = Vec::new();
            let mut player = replica_idx as u64;
            while player < TICKETS {
                for _ in 0..250 {
                    if player >= TICKETS {
                        break;
                    }
                    let ticket = replica.enqueue(PlayerId(player + 1), solo("pong"), 1_000).await.unwrap();
                    tickets.push(ticket.id);
                    player += REPLICAS as u64;
                }
                stats.push(replica.run_round(2_000).await.unwrap());
            }
            for _ in 0..3 {
                stats.push(replica.run_round(2_000).await.unwrap());
            }
            (tickets, stats)
        });
    }
    let outcomes = common::within(tasks.join_all()).await;
    let all: Vec<rally_matchmaker::TicketId> = outcomes.iter().flat_map(|(tickets, _)| tickets.clone()).collect();
    assert_eq!(all.len() as u64, TICKETS);
    let conflicts: usize = outcomes.iter().flat_map(|(_, stats)| stats).map(|stats| stats.conflicts).sum();
    let made: usize = outcomes.iter().flat_map(|(_, stats)| stats).map(|stats| stats.matches).sum();
    let states = backends.tickets.states(&all).await.unwrap();
    let mut seats_of_match: HashMap<MatchId, Vec<PlayerId>> = HashMap::new();
    let mut per_shard: HashMap<String, HashSet<MatchId>> = HashMap::new();
    let mut queued = 0;
    for state in states {
        match state.unwrap() {
            TicketState::Matched(assignment) => {
                per_shard.entry(assignment.shard_name.clone()).or_default().insert(assignment.match_id);
                seats_of_match
                    .entry(assignment.match_id)
                    .or_default()
                    .extend(assignment.seats.iter().map(|s| s.player_id));
            }
            TicketState::Queued => queued += 1,
            other => panic!("{other:?}"),
        }
    }
    // Each match has exactly two distinct players and each player one match.
    assert!(seats_of_match.values().all(|players| players.len() == 2 && players[0] != players[1]));
    let players: Vec<PlayerId> = seats_of_match.values().flatten().copied().collect();
    assert_eq!(players.iter().collect::<HashSet<_>>().len(), players.len(), "a ticket was assigned twice");
    assert_eq!(seats_of_match.len(), made, "every committed match is in the tickets' states");
    assert_eq!(seats_of_match.len(), 4_000, "all capacity used, none beyond");
    assert_eq!(queued, TICKETS as usize - 8_000);
    let shards = backends.registry.shards(2_000).await.unwrap();
    for entry in &shards {
        assert_eq!(entry.reserved, 1_000, "{}", entry.info.name);
        assert_eq!(per_shard[&entry.info.name].len(), 1_000);
    }
    eprintln!("{REPLICAS} replicas: {made} matches, {conflicts} lost races");
}
