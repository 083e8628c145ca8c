//! The ticket store, in memory and on Redis: queue order, all-or-nothing
//! claims (one winner among concurrent claimers), finishing queued tickets.

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

mod common;

use std::sync::Arc;

use common::Backend;
use rally_matchmaker::ticket::PartyMember;
use rally_matchmaker::{Ticket, TicketId, TicketState, TicketStore};
use rally_protocol::{MatchId, PlayerId};

on_both_backends!(queue_order_claims_and_finishing, concurrent_claims_have_one_winner);

fn ticket(id: u64, enqueued_at_ms: u64) -> Ticket {
    Ticket {
        id: TicketId(id),
        mode: "pong".into(),
        players: vec![PartyMember { player_id: PlayerId(id), rating: 1500.0, display_name: String::new() }],
        region: Some("eu".into()),
        enqueued_at_ms,
        expires_at_ms: enqueued_at_ms + 60_000,
    }
}

fn aborted(match_id: u64) -> TicketState {
    TicketState::Aborted { match_id: MatchId(match_id), reason: "test".into() }
}

async fn queue_order_claims_and_finishing(backend: &Backend) {
    let store = backend.backends().tickets;
    for (id, at) in [(3, 10), (1, 20), (2, 10), (4, 30)] {
        store.insert(&ticket(id, at), None).await.unwrap();
    }
    let ids = |ids: &[u64]| ids.iter().map(|&id| TicketId(id)).collect::<Vec<_>>();
    assert_eq!(store.queued("pong").await.unwrap(), ids(&[2, 3, 1, 4]), "by enqueue time, then id");
    assert!(store.queued("other").await.unwrap().is_empty());
    assert_eq!(store.tickets(&ids(&[1, 99])).await.unwrap(), [Some(ticket(1, 20)), None]);

    // All or nothing: 1 and 2 go; then {2, 3} fails because 2 is taken, and 3 stays queued.
    assert!(store.claim("pong", &[(TicketId(1), aborted(7)), (TicketId(2), aborted(7))]).await.unwrap());
    assert!(!store.claim("pong", &[(TicketId(3), aborted(8)), (TicketId(2), aborted(8))]).await.unwrap());
    assert_eq!(store.queued("pong").await.unwrap(), ids(&[3, 4]));
    assert_eq!(store.states(&ids(&[2, 3, 99])).await.unwrap(), [Some(aborted(7)), Some(TicketState::Queued), None]);

    assert_eq!(store.finish("pong", TicketId(3), TicketState::Cancelled).await.unwrap(), Some(TicketState::Cancelled));
    assert_eq!(store.finish("pong", TicketId(3), TicketState::Expired).await.unwrap(), Some(TicketState::Cancelled));
    assert_eq!(store.finish("pong", TicketId(1), TicketState::Cancelled).await.unwrap(), Some(aborted(7)), "claimed");
    assert_eq!(store.finish("pong", TicketId(99), TicketState::Cancelled).await.unwrap(), None);
    assert_eq!(store.queued("pong").await.unwrap(), ids(&[4]));

    store.set_states(&[(TicketId(1), aborted(9))]).await.unwrap();
    assert_eq!(store.states(&ids(&[1])).await.unwrap(), [Some(aborted(9))]);
}

async fn concurrent_claims_have_one_winner(backend: &Backend) {
    let store: Arc<dyn TicketStore> = backend.backends().tickets;
    for id in 1..=3 {
        store.insert(&ticket(id, 0), None).await.unwrap();
    }
    // Sixteen claimers, each wanting ticket 1 and one other: exactly one wins.
    let mut tasks = tokio::task::JoinSet::new();
    for claimer in 0..16u64 {
        let store = store.clone();
        tasks.spawn(async move {
            let other = TicketId(2 + claimer % 2);
            store.claim("pong", &[(TicketId(1), aborted(claimer)), (other, aborted(claimer))]).await.unwrap()
        });
    }
    let wins = tasks.join_all().await.into_iter().filter(|won| *won).count();
    assert_eq!(wins, 1);
    assert_eq!(store.queued("pong").await.unwrap().len(), 1);
}
