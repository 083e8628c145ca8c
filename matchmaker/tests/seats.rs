//! One seat per player, on each backend: a repeated Enqueue gets its ticket
//! back, any other conflict is `AlreadyExists` naming the ticket (and the
//! match, for a seat), racing Enqueues make one ticket, a match's seats are
//! freed once its result is on the bus; house-bot modes seat a bot, never a
//! person, and every assignment lists the whole roster.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::sync::{Arc, Mutex};

use common::{Backend, eventually, matchmaker, shard};
use rally_matchmaker::config::{MatchmakerConfig, ModeConfig};
use rally_matchmaker::ticket::RosterSeat;
use rally_matchmaker::{BotFill, BotSeat, EnqueueRequest, Matchmaker, MatchmakerError, TicketId, TicketState};
use rally_protocol::control::EndReason;
use rally_protocol::results::{MatchResult, SeatResult};
use rally_protocol::{MatchId, PlayerId};

on_both_backends!(
    a_queued_player_gets_their_ticket_back_and_is_put_on_no_other,
    a_seated_player_is_pointed_to_their_match_until_it_ends,
    racing_enqueues_of_one_player_make_one_ticket,
    a_house_bot_mode_seats_a_bot_never_a_person,
);

fn config() -> MatchmakerConfig {
    MatchmakerConfig {
        modes: vec![
            ModeConfig::one_vs_one("pong"),
            ModeConfig::two_vs_two("doubles"),
            ModeConfig::against_house_bot("pong-bot"),
        ],
        ..MatchmakerConfig::default()
    }
}

fn request(mode: &str, party: &[u64]) -> EnqueueRequest {
    EnqueueRequest {
        mode: mode.into(),
        party: party.iter().map(|&id| PlayerId(id)).collect(),
        display_names: [1, 2, 3, 4].iter().map(|&id| (PlayerId(id), format!("name-{id}"))).collect(),
        ..EnqueueRequest::default()
    }
}

fn already_exists(result: Result<rally_matchmaker::Ticket, MatchmakerError>) -> String {
    match result {
        Err(MatchmakerError::AlreadyExists(message)) => message,
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
}

async fn state(mm: &Matchmaker, player: u64, ticket: TicketId) -> TicketState {
    let (_, receiver) = mm.watch(PlayerId(player), ticket).await.unwrap();
    receiver.borrow().clone().unwrap()
}

async fn a_queued_player_gets_their_ticket_back_and_is_put_on_no_other(backend: &Backend) {
    let mm = matchmaker(config(), backend.backends(), &[]);
    let first = mm.enqueue(PlayerId(1), request("pong", &[]), 0).await.unwrap();
    let again = mm.enqueue(PlayerId(1), request("pong", &[]), 10).await.unwrap();
    assert_eq!(again.id, first.id, "the same request repeated is the same ticket");
    assert_eq!(mm.backends().tickets.queued("pong").await.unwrap(), [first.id]);

    let elsewhere = already_exists(mm.enqueue(PlayerId(1), request("doubles", &[]), 20).await);
    assert!(elsewhere.contains(&first.id.to_string()) && elsewhere.contains("pong"), "{elsewhere}");
    // Another player cannot put a queued player on a party ticket.
    let party = already_exists(mm.enqueue(PlayerId(2), request("doubles", &[1]), 30).await);
    assert!(party.contains("party member 1") && party.contains(&first.id.to_string()), "{party}");
    assert!(mm.backends().tickets.queued("doubles").await.unwrap().is_empty(), "nothing was queued");
    // Player 2 was not claimed by the refused ticket.
    mm.enqueue(PlayerId(2), request("pong", &[]), 40).await.unwrap();

    mm.cancel(PlayerId(1), first.id).await.unwrap();
    let after_cancel = mm.enqueue(PlayerId(1), request("doubles", &[]), 50).await.unwrap();
    assert_ne!(after_cancel.id, first.id);
}

fn ended(match_id: MatchId, players: &[u64]) -> MatchResult {
    MatchResult {
        match_id,
        game: "pong".into(),
        shard: "s1".into(),
        seats: players
            .iter()
            .enumerate()
            .map(|(seat, &player)| SeatResult {
                seat: seat as u8,
                player_id: Some(PlayerId(player)),
                side: seat as u8,
                forfeited: false,
            })
            .collect(),
        scores: vec![5, 3],
        winner: Some(0),
        reason: EndReason::Score,
        duration_ticks: 600,
        tick_rate_hz: 60,
        started_at_ms: 0,
        ended_at_ms: 10_000,
        input_log_digest: String::new(),
    }
}

async fn a_seated_player_is_pointed_to_their_match_until_it_ends(backend: &Backend) {
    let backends = backend.backends();
    backends.registry.register(&shard("s1", "eu", 10), 600_000, 0).await.unwrap();
    let mm = matchmaker(config(), backends.clone(), &[]);
    let a = mm.enqueue(PlayerId(1), request("pong", &[]), 0).await.unwrap();
    mm.enqueue(PlayerId(2), request("pong", &[]), 0).await.unwrap();
    assert_eq!(mm.run_round(100).await.unwrap().matches, 1);
    let TicketState::Matched(assignment) = state(&mm, 1, a.id).await else { panic!("not matched") };

    // Seated: the same request again, or another mode, names the match and the ticket to watch.
    for mode in ["pong", "doubles"] {
        let seated = already_exists(mm.enqueue(PlayerId(1), request(mode, &[]), 200).await);
        assert!(seated.contains(&assignment.match_id.to_string()) && seated.contains(&a.id.to_string()), "{seated}");
    }
    assert!(mm.backends().tickets.queued("pong").await.unwrap().is_empty(), "no second ticket");
    // A result for another match frees nothing.
    mm.match_ended(&ended(MatchId(assignment.match_id.0 ^ 1), &[1, 2])).await.unwrap();
    already_exists(mm.enqueue(PlayerId(1), request("pong", &[]), 300).await);

    // The match's result on the bus frees both seats, through the engine's seat consumer.
    let engine = mm.start();
    backends.bus.publish(&ended(assignment.match_id, &[1, 2])).await.unwrap();
    eventually("player 1's seat is freed", || async {
        mm.enqueue(PlayerId(1), request("pong", &[]), 400).await.is_ok()
    })
    .await;
    let again = mm.enqueue(PlayerId(2), request("pong", &[]), 400).await.unwrap();
    assert_ne!(again.id, a.id);
    engine.stop().await;
}

async fn racing_enqueues_of_one_player_make_one_ticket(backend: &Backend) {
    let backends = backend.backends();
    // Eight replicas, each with its own connection, all enqueueing player 1 at once.
    let replicas: Vec<Matchmaker> =
        (0..8).map(|_| matchmaker(config(), backend.own_connection(&backends), &[])).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for replica in replicas {
        tasks.spawn(async move { replica.enqueue(PlayerId(1), request("pong", &[]), 0).await.unwrap().id });
    }
    let ids = common::within(tasks.join_all()).await;
    assert!(ids.iter().all(|id| *id == ids[0]), "one ticket for all: {ids:?}");
    assert_eq!(backends.tickets.queued("pong").await.unwrap(), [ids[0]]);
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

    fn display_name(&self, player: PlayerId) -> String {
        format!("robot-{}", player.0)
    }
}

async fn a_house_bot_mode_seats_a_bot_never_a_person(backend: &Backend) {
    let backends = backend.backends();
    backends.registry.register(&shard("s1", "eu", 10), 600_000, 0).await.unwrap();
    let mm = matchmaker(config(), backends.clone(), &[]);
    match mm.enqueue(PlayerId(1), request("pong-bot", &[]), 0).await {
        Err(MatchmakerError::FailedPrecondition(message)) => {
            assert!(message.contains("pong-bot") && message.contains("house bots"), "{message}");
        }
        other => panic!("a bot mode without bots must refuse: {other:?}"),
    }
    let bots = Arc::new(Bots::default());
    mm.set_bot_fill(bots.clone());
    // Two people queueing within 50 ms each meet a bot, not each other.
    let a = mm.enqueue(PlayerId(1), request("pong-bot", &[]), 0).await.unwrap();
    let b = mm.enqueue(PlayerId(2), request("pong-bot", &[]), 50).await.unwrap();
    assert_eq!(mm.run_round(60).await.unwrap().matches, 2);
    for (player, ticket) in [(1, a.id), (2, b.id)] {
        let TicketState::Matched(assignment) = state(&mm, player, ticket).await else { panic!("not matched") };
        let bot = bots.seats.lock().unwrap().iter().find(|seat| seat.match_id == assignment.match_id).cloned();
        let bot = bot.expect("a bot seat in the match");
        assert_eq!(
            assignment.roster,
            [
                RosterSeat {
                    player_id: PlayerId(player),
                    display_name: format!("name-{player}"),
                    seat: 0,
                    side: 0,
                    bot: false
                },
                RosterSeat {
                    player_id: bot.player_id,
                    display_name: format!("robot-{}", bot.player_id.0),
                    seat: 1,
                    side: 1,
                    bot: true
                },
            ]
        );
    }
    // The wire form carries the roster too.
    let TicketState::Matched(assignment) = state(&mm, 1, a.id).await else { panic!("not matched") };
    let update = TicketState::Matched(assignment).to_update(a.id, 0, 100);
    let roster = update.assignment.unwrap().roster;
    assert_eq!(
        roster.iter().map(|seat| (seat.display_name.as_str(), seat.bot)).collect::<Vec<_>>(),
        [("name-1", false), ("robot-1000000", true)]
    );
}
