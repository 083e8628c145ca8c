//! Matchmaker replicas that die mid-commit, in memory and on Redis: two
//! engines over one queue, one of them halted dead by the engine's
//! `CommitFault` seam right after reserving a shard slot, or right after
//! claiming the tickets. The survivor heals what is left: no ticket lost,
//! none assigned twice, no slot leaked, and no result for a match that was
//! never made. Also the idempotency key of Enqueue across replicas.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Backend, eventually, matchmaker, shard};
use rally_matchmaker::config::MatchmakerConfig;
use rally_matchmaker::engine::{CommitFault, CommitStep, unix_ms};
use rally_matchmaker::store::IdempotencyKey;
use rally_matchmaker::ticket::{PartyMember, Ticket};
use rally_matchmaker::{EnqueueRequest, Matchmaker, MatchmakerError, TicketId, TicketState};
use rally_protocol::{MatchId, PlayerId};

on_both_backends!(
    a_replica_dead_after_reserving_leaks_no_slot_and_loses_no_ticket,
    a_replica_dead_after_claiming_keeps_its_match,
    a_lost_shard_with_an_unclaimed_reservation_leaves_its_tickets_queued,
    a_claim_after_the_reservations_deadline_is_refused,
    an_idempotency_key_makes_one_ticket_across_replicas,
    a_watch_on_another_replica_sees_the_match_its_peer_made,
);

/// Halts every commit after `step`, as a replica killed there; records the matches it halted.
struct Halt {
    step: CommitStep,
    halted: Mutex<Vec<MatchId>>,
}

impl Halt {
    fn after(step: CommitStep) -> Arc<Self> {
        Arc::new(Self { step, halted: Mutex::new(Vec::new()) })
    }

    fn halted(&self) -> Vec<MatchId> {
        self.halted.lock().unwrap().clone()
    }
}

impl CommitFault for Halt {
    fn halts_after(&self, step: CommitStep, match_id: MatchId) -> bool {
        if step == self.step {
            self.halted.lock().unwrap().push(match_id);
        }
        step == self.step
    }
}

/// Reservations unconfirmed for 300 ms are decided by the next round.
fn config() -> MatchmakerConfig {
    MatchmakerConfig { reservation_confirm_ms: 300, ..MatchmakerConfig::default() }
}

fn pong() -> EnqueueRequest {
    EnqueueRequest { mode: "pong".into(), ..EnqueueRequest::default() }
}

/// Two replicas over the same keys, each with its own connection; the first halts after `step`.
fn replicas(backend: &Backend, step: CommitStep) -> (Matchmaker, Arc<Halt>, Matchmaker) {
    let shared = backend.backends();
    let doomed = matchmaker(config(), shared.clone(), &[]);
    let halt = Halt::after(step);
    doomed.set_commit_fault(halt.clone());
    let survivor = matchmaker(config(), backend.own_connection(&shared), &[]);
    (doomed, halt, survivor)
}

async fn states(mm: &Matchmaker, ids: &[TicketId]) -> Vec<TicketState> {
    let found = mm.backends().tickets.states(ids).await.unwrap();
    found.into_iter().map(|state| state.expect("a known ticket")).collect()
}

fn match_of(state: &TicketState) -> Option<MatchId> {
    match state {
        TicketState::Matched(assignment) => Some(assignment.match_id),
        _ => None,
    }
}

/// Every ticket is in exactly one match, each of whose records on the shard
/// names exactly its tickets, and the shard's reserved count is the number of matches.
async fn assert_each_ticket_in_one_match(mm: &Matchmaker, ids: &[TicketId], shard_name: &str) {
    let mut by_match: HashMap<MatchId, Vec<TicketId>> = HashMap::new();
    for (id, state) in ids.iter().zip(states(mm, ids).await) {
        let match_id = match_of(&state).unwrap_or_else(|| panic!("ticket {id} is not matched: {state:?}"));
        by_match.entry(match_id).or_default().push(*id);
    }
    let entry = mm.backends().registry.shards(unix_ms()).await.unwrap();
    let entry = entry.iter().find(|entry| entry.info.name == shard_name).unwrap();
    assert_eq!(entry.reserved as usize, by_match.len(), "one reserved slot per match, none leaked");
    assert!(by_match.values().all(|tickets| tickets.len() == 2), "{by_match:?}");
}

async fn a_replica_dead_after_reserving_leaks_no_slot_and_loses_no_ticket(backend: &Backend) {
    let (doomed, halt, survivor) = replicas(backend, CommitStep::Reserved);
    // Room for one match: the dead replica's reservation would block it for good.
    doomed.backends().registry.register(&shard("s", "eu", 1), 60_000, unix_ms()).await.unwrap();
    let a = doomed.enqueue(PlayerId(1), pong(), unix_ms()).await.unwrap().id;
    let b = doomed.enqueue(PlayerId(2), pong(), unix_ms()).await.unwrap().id;
    let stats = doomed.run_round(unix_ms()).await.unwrap();
    assert_eq!((stats.matches, halt.halted().len()), (0, 1), "the commit stopped after reserving");
    assert_eq!(states(&survivor, &[a, b]).await, [TicketState::Queued, TicketState::Queued]);
    let stats = survivor.run_round(unix_ms()).await.unwrap();
    assert_eq!((stats.matches, stats.no_capacity), (0, 1), "the slot is held until its deadline");

    // Past the deadline, the survivor drops the reservation and matches the tickets itself.
    let dropped = Arc::new(AtomicUsize::new(0));
    eventually("the survivor matches the dead replica's tickets", || {
        let (survivor, dropped) = (survivor.clone(), dropped.clone());
        async move {
            let stats = survivor.run_round(unix_ms()).await.unwrap();
            dropped.fetch_add(stats.dropped_overdue, Ordering::Relaxed);
            stats.matches == 1
        }
    })
    .await;
    assert_eq!(dropped.load(Ordering::Relaxed), 1);
    assert_each_ticket_in_one_match(&survivor, &[a, b], "s").await;
    let matched = match_of(&states(&survivor, &[a]).await[0]).unwrap();
    assert!(!halt.halted().contains(&matched), "the tickets are in the survivor's match, not the dead one's");
    // Nothing is left to decide or to match.
    let stats = survivor.run_round(unix_ms() + 1_000).await.unwrap();
    assert_eq!((stats.matches, stats.dropped_overdue, stats.confirmed_overdue), (0, 0, 0));
}

async fn a_replica_dead_after_claiming_keeps_its_match(backend: &Backend) {
    let (doomed, halt, survivor) = replicas(backend, CommitStep::Claimed);
    doomed.backends().registry.register(&shard("s", "eu", 1), 60_000, unix_ms()).await.unwrap();
    let a = doomed.enqueue(PlayerId(1), pong(), unix_ms()).await.unwrap().id;
    let b = doomed.enqueue(PlayerId(2), pong(), unix_ms()).await.unwrap().id;
    doomed.run_round(unix_ms()).await.unwrap();
    let halted = halt.halted();
    assert_eq!(halted.len(), 1);
    // A watcher on the survivor sees the dead replica's assignment.
    let (_, watch) = survivor.watch(PlayerId(1), a).await.unwrap();
    assert_eq!(watch.borrow().as_ref().and_then(match_of), Some(halted[0]));

    let confirmed = Arc::new(AtomicUsize::new(0));
    eventually("the survivor confirms the claimed match", || {
        let (survivor, confirmed) = (survivor.clone(), confirmed.clone());
        async move {
            let stats = survivor.run_round(unix_ms()).await.unwrap();
            confirmed.fetch_add(stats.confirmed_overdue, Ordering::Relaxed) + stats.confirmed_overdue == 1
        }
    })
    .await;
    assert_each_ticket_in_one_match(&survivor, &[a, b], "s").await;
    assert_eq!(match_of(&states(&survivor, &[b]).await[0]), Some(halted[0]));
    let stats = survivor.run_round(unix_ms() + 1_000).await.unwrap();
    assert_eq!((stats.matches, stats.confirmed_overdue, stats.dropped_overdue), (0, 0, 0));
}

async fn a_lost_shard_with_an_unclaimed_reservation_leaves_its_tickets_queued(backend: &Backend) {
    let (doomed, halt, survivor) = replicas(backend, CommitStep::Reserved);
    let registry = doomed.backends().registry.clone();
    registry.register(&shard("brief", "eu", 1), 200, unix_ms()).await.unwrap();
    let a = doomed.enqueue(PlayerId(1), pong(), unix_ms()).await.unwrap().id;
    let b = doomed.enqueue(PlayerId(2), pong(), unix_ms()).await.unwrap().id;
    doomed.run_round(unix_ms()).await.unwrap();
    assert_eq!(halt.halted().len(), 1);
    // The shard stops heartbeating and is reaped with the reservation on it.
    eventually("the shard is reaped", || {
        let (survivor, registry) = (survivor.clone(), registry.clone());
        async move {
            survivor.run_round(unix_ms()).await.unwrap();
            registry.shards(unix_ms()).await.unwrap().is_empty()
        }
    })
    .await;
    assert_eq!(states(&survivor, &[a, b]).await, [TicketState::Queued, TicketState::Queued], "not aborted");
    // A new shard gets the tickets.
    registry.register(&shard("fresh", "eu", 1), 60_000, unix_ms()).await.unwrap();
    eventually("the tickets are matched on the new shard", || {
        let survivor = survivor.clone();
        async move { survivor.run_round(unix_ms()).await.unwrap().matches == 1 }
    })
    .await;
    assert_each_ticket_in_one_match(&survivor, &[a, b], "fresh").await;
}

async fn a_claim_after_the_reservations_deadline_is_refused(backend: &Backend) {
    let tickets = backend.backends().tickets;
    let ticket = Ticket {
        id: TicketId(7),
        mode: "pong".into(),
        players: vec![PartyMember { player_id: PlayerId(7), rating: 1500.0, display_name: String::new() }],
        region: None,
        enqueued_at_ms: unix_ms(),
        expires_at_ms: unix_ms() + 60_000,
    };
    tickets.insert(&ticket, None).await.unwrap();
    let claim = [(TicketId(7), TicketState::Cancelled)];
    // A deadline long past, on either clock.
    assert!(!tickets.claim_by("pong", &claim, 1, unix_ms()).await.unwrap());
    assert_eq!(tickets.states(&[TicketId(7)]).await.unwrap(), [Some(TicketState::Queued)]);
    assert!(tickets.claim_by("pong", &claim, unix_ms() + 60_000, unix_ms()).await.unwrap());
    assert_eq!(tickets.states(&[TicketId(7)]).await.unwrap(), [Some(TicketState::Cancelled)]);
}

async fn an_idempotency_key_makes_one_ticket_across_replicas(backend: &Backend) {
    let shared = backend.backends();
    let one = matchmaker(config(), shared.clone(), &[]);
    let two = matchmaker(config(), backend.own_connection(&shared), &[]);
    let key = IdempotencyKey::new("0f8c2a-retry-me").unwrap();
    let keyed = |mode: &str| EnqueueRequest { mode: mode.into(), idempotency_key: Some(key.clone()), ..pong() };
    let first = one.enqueue(PlayerId(1), keyed("pong"), unix_ms()).await.unwrap();
    // The retry of a request whose answer was lost, on the other replica: the same ticket.
    let again = two.enqueue(PlayerId(1), keyed("pong"), unix_ms()).await.unwrap();
    assert_eq!(again.id, first.id);
    // The same key for another request is refused, naming the key.
    match two.enqueue(PlayerId(1), keyed("pong-doubles"), unix_ms()).await {
        Err(MatchmakerError::FailedPrecondition(message)) => {
            assert!(message.contains("0f8c2a-retry-me") && message.contains("different Enqueue"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Keys are per player: another player's equal key makes its own ticket.
    let other = two.enqueue(PlayerId(2), keyed("pong"), unix_ms()).await.unwrap();
    assert_ne!(other.id, first.id);

    // Once matched, a retry still answers with the ticket, where a keyless
    // Enqueue meets the seat rule.
    shared.registry.register(&shard("s", "eu", 1), 60_000, unix_ms()).await.unwrap();
    assert_eq!(one.run_round(unix_ms()).await.unwrap().matches, 1);
    assert_eq!(two.enqueue(PlayerId(1), keyed("pong"), unix_ms()).await.unwrap().id, first.id);
    assert!(matches!(two.enqueue(PlayerId(1), pong(), unix_ms()).await, Err(MatchmakerError::AlreadyExists(_))));

    for bad in ["", "has space", "é", &"k".repeat(65)] {
        assert!(IdempotencyKey::new(bad).is_err(), "{bad:?}");
    }
    assert!(IdempotencyKey::new(&"k".repeat(64)).is_ok());
}

async fn a_watch_on_another_replica_sees_the_match_its_peer_made(backend: &Backend) {
    let shared = backend.backends();
    let maker = matchmaker(config(), shared.clone(), &[]);
    let watcher = matchmaker(config(), backend.own_connection(&shared), &[]);
    shared.registry.register(&shard("s", "eu", 1), 60_000, unix_ms()).await.unwrap();
    let a = maker.enqueue(PlayerId(1), pong(), unix_ms()).await.unwrap().id;
    maker.enqueue(PlayerId(2), pong(), unix_ms()).await.unwrap();
    // The client's stream moved to the watcher replica while the ticket was queued.
    let (_, mut watch) = watcher.watch(PlayerId(1), a).await.unwrap();
    assert_eq!(*watch.borrow_and_update(), Some(TicketState::Queued));
    assert_eq!(maker.run_round(unix_ms()).await.unwrap().matches, 1);
    // The watcher's poller re-reads the store and passes the match on.
    watcher.poll_watched().await.unwrap();
    assert!(watch.has_changed().unwrap(), "the poll told the watcher");
    let matched = watch.borrow().as_ref().and_then(match_of);
    assert_eq!(matched, match_of(&states(&maker, &[a]).await[0]));
    assert!(matched.is_some());
}
