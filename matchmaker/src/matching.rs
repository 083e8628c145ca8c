//! The matching function: queued tickets in, proposed matches out. Pure and
//! deterministic: the same queue at the same `now_ms` always gives the same
//! matches, so tests can say who plays whom.
//!
//! The oldest unmatched ticket is the anchor. Its rating window (from the
//! mode's curve and its wait) bounds the candidates; candidates are tried
//! nearest rating first (ties: older first) and packed onto sides, a party
//! always on one side. A ticket with a region preference only meets its own
//! region until it has waited `region_relax_after_ms`. When the anchor cannot
//! fill every seat but has waited `bot_fill_after_ms` and bots are available,
//! the missing seats become bot seats. Otherwise the anchor waits for the next
//! round and the next oldest ticket becomes the anchor. In a house-bot mode
//! ([`ModeConfig::house_bots`]) a ticket meets no other ticket: every seat
//! not on it is a bot seat, as soon as bots are available.

use std::collections::BTreeMap;

use rally_protocol::Seat;

use crate::config::ModeConfig;
use crate::ticket::Ticket;

/// Who sits in a proposed seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupant {
    /// The `member`-th player of the ticket at `ticket` (an index into the queue given).
    Player {
        /// Index of the ticket in the slice passed to [`propose`].
        ticket: usize,
        /// Index of the player on that ticket.
        member: usize,
    },
    /// A bot fills the seat.
    Bot,
}

/// One seat of a proposed match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProposedSeat {
    /// The seat number (side = seat % sides).
    pub seat: Seat,
    /// The side.
    pub side: u8,
    /// Who takes it.
    pub occupant: Occupant,
}

/// A match the queue allows, before a shard is reserved.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The tickets in it (indices into the slice passed to [`propose`]), anchor first.
    pub tickets: Vec<usize>,
    /// Every seat, in seat order.
    pub seats: Vec<ProposedSeat>,
    /// The region to prefer for the shard.
    pub region: Option<String>,
    /// Whether a shard in another region is acceptable.
    pub any_region: bool,
}

impl Proposal {
    /// How many seats are bots.
    pub fn n_bots(&self) -> usize {
        self.seats.iter().filter(|seat| seat.occupant == Occupant::Bot).count()
    }
}

/// Ratings in thousandths, so the index key is an exact integer.
fn rating_key(rating: f64) -> i64 {
    (rating * 1000.0).round() as i64
}

/// Proposes matches among `queue` (tickets of `mode` only) at `now_ms`.
/// Tickets are taken oldest first by `(enqueued_at_ms, id)` whatever the
/// slice order; expired tickets and parties too big for a side are left out.
pub fn propose(mode: &ModeConfig, queue: &[&Ticket], now_ms: u64, bots_available: bool) -> Vec<Proposal> {
    let mut order: Vec<usize> = (0..queue.len())
        .filter(|&idx| {
            let ticket = queue[idx];
            !ticket.players.is_empty()
                && ticket.players.len() <= usize::from(mode.seats_per_side.min(mode.max_party))
                && ticket.expires_at_ms > now_ms
        })
        .collect();
    order.sort_by_key(|&idx| (queue[idx].enqueued_at_ms, queue[idx].id));
    // Unmatched tickets by (rating, age rank).
    let mut index: BTreeMap<(i64, usize), usize> =
        order.iter().enumerate().map(|(rank, &idx)| ((rating_key(queue[idx].rating()), rank), idx)).collect();
    let strict_region =
        |ticket: &Ticket| ticket.region.is_some() && ticket.waited_ms(now_ms) < mode.region_relax_after_ms;
    let n_sides = usize::from(mode.n_sides);
    let seats_per_side = usize::from(mode.seats_per_side);
    let mut proposals = Vec::new();
    for (rank, &anchor) in order.iter().enumerate() {
        let anchor_ticket = queue[anchor];
        let anchor_key = (rating_key(anchor_ticket.rating()), rank);
        if index.remove(&anchor_key).is_none() {
            continue; // already matched
        }
        let wait = anchor_ticket.waited_ms(now_ms);
        let window = rating_key(mode.window.window(wait));
        let anchor_strict = strict_region(anchor_ticket);
        let mut free = vec![seats_per_side; n_sides];
        free[0] -= anchor_ticket.players.len();
        let mut members: Vec<(usize, usize)> = vec![(anchor, 0)];
        let mut taken_keys: Vec<(i64, usize)> = Vec::new();
        let mut remaining: usize = free.iter().sum();

        let mut below = index.range(..anchor_key).rev().peekable();
        let mut above = index.range(anchor_key..).peekable();
        // A house-bot mode looks at no other ticket.
        while remaining > 0 && !mode.house_bots {
            let distance = |key: &(i64, usize)| (key.0 - anchor_key.0).abs();
            let pick_below = match (below.peek(), above.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((low, _)), Some((high, _))) => (distance(low), low.1) <= (distance(high), high.1),
            };
            let (key, &candidate) = if pick_below { below.next() } else { above.next() }.expect("peeked");
            if distance(key) > window {
                // Everything further out on this side is further still; drain it.
                if pick_below {
                    below.by_ref().for_each(drop);
                } else {
                    above.by_ref().for_each(drop);
                }
                continue;
            }
            let ticket = queue[candidate];
            if anchor_strict && ticket.region != anchor_ticket.region {
                continue;
            }
            if strict_region(ticket) && ticket.region != anchor_ticket.region {
                continue;
            }
            // One player on two tickets never plays against (or with) themselves.
            let shares_player = members
                .iter()
                .any(|&(member, _)| queue[member].players.iter().any(|player| ticket.has_player(player.player_id)));
            if shares_player {
                continue;
            }
            let size = ticket.players.len();
            let Some(side) = free.iter().position(|&seats| seats >= size) else { continue };
            free[side] -= size;
            remaining -= size;
            members.push((candidate, side));
            taken_keys.push(*key);
        }
        drop(below);
        drop(above);

        let bots_allowed =
            bots_available && (mode.house_bots || mode.bot_fill_after_ms.is_some_and(|after| wait >= after));
        if remaining > 0 && !bots_allowed {
            index.insert(anchor_key, anchor);
            continue;
        }
        for key in &taken_keys {
            index.remove(key);
        }
        // Seats: side s holds seats s, s + n_sides, s + 2·n_sides, …
        let mut next_slot = vec![0usize; n_sides];
        let mut seats = Vec::with_capacity(n_sides * seats_per_side);
        for &(ticket, side) in &members {
            for member in 0..queue[ticket].players.len() {
                let seat = side + n_sides * next_slot[side];
                next_slot[side] += 1;
                seats.push(ProposedSeat {
                    seat: seat as Seat,
                    side: side as u8,
                    occupant: Occupant::Player { ticket, member },
                });
            }
        }
        for (side, used) in next_slot.iter().enumerate() {
            for slot in *used..seats_per_side {
                let seat = side + n_sides * slot;
                seats.push(ProposedSeat { seat: seat as Seat, side: side as u8, occupant: Occupant::Bot });
            }
        }
        seats.sort_by_key(|seat| seat.seat);
        proposals.push(Proposal {
            tickets: members.iter().map(|&(ticket, _)| ticket).collect(),
            seats,
            region: anchor_ticket.region.clone(),
            any_region: !anchor_strict,
        });
    }
    proposals
}

#[cfg(test)]
mod tests {
    use rally_protocol::PlayerId;

    use super::*;
    use crate::config::WindowCurve;
    use crate::ticket::{PartyMember, TicketId};

    fn ticket(id: u64, ratings: &[f64], enqueued_at_ms: u64, region: Option<&str>) -> Ticket {
        Ticket {
            id: TicketId(id),
            mode: "pong".into(),
            players: ratings
                .iter()
                .enumerate()
                .map(|(idx, &rating)| PartyMember {
                    player_id: PlayerId(id * 10 + idx as u64),
                    rating,
                    display_name: String::new(),
                })
                .collect(),
            region: region.map(str::to_owned),
            enqueued_at_ms,
            expires_at_ms: enqueued_at_ms + 1_000_000,
        }
    }

    fn mode() -> ModeConfig {
        ModeConfig {
            window: WindowCurve::parse("0:100,10:300,30:1000").unwrap(),
            region_relax_after_ms: 5_000,
            ..ModeConfig::one_vs_one("pong")
        }
    }

    /// The ticket ids of each proposal, anchor first.
    fn pairs(proposals: &[Proposal], queue: &[&Ticket]) -> Vec<Vec<u64>> {
        proposals.iter().map(|p| p.tickets.iter().map(|&idx| queue[idx].id.0).collect()).collect()
    }

    #[test]
    fn the_oldest_ticket_meets_its_nearest_rating() {
        let tickets = [
            ticket(1, &[1500.0], 0, None),
            ticket(2, &[1580.0], 10, None),
            ticket(3, &[1450.0], 20, None),
            ticket(4, &[1900.0], 30, None),
        ];
        let queue: Vec<&Ticket> = tickets.iter().collect();
        let proposals = propose(&mode(), &queue, 1_000, false);
        // 1 (1500) takes 3 (1450, 50 away) over 2 (80 away); 2 and 4 are 320 apart.
        assert_eq!(pairs(&proposals, &queue), [vec![1, 3]]);
        assert_eq!(proposals[0].seats.len(), 2);
        assert_eq!(proposals[0].seats[1].occupant, Occupant::Player { ticket: 2, member: 0 });
    }

    #[test]
    fn the_same_queue_in_any_order_gives_the_same_matches() {
        let tickets: Vec<Ticket> =
            (0..200).map(|idx| ticket(idx, &[1500.0 + ((idx * 37) % 400) as f64], idx * 3, None)).collect();
        let forward: Vec<&Ticket> = tickets.iter().collect();
        let backward: Vec<&Ticket> = tickets.iter().rev().collect();
        let a = pairs(&propose(&mode(), &forward, 5_000, false), &forward);
        let b = pairs(&propose(&mode(), &backward, 5_000, false), &backward);
        assert_eq!(a, b);
        assert!(a.len() >= 90, "{}", a.len());
        let mut seen: Vec<u64> = a.iter().flatten().copied().collect();
        let before = seen.len();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), before, "a ticket was proposed twice");
    }

    #[test]
    fn the_window_widens_with_wait() {
        let tickets = [ticket(1, &[1500.0], 0, None), ticket(2, &[1750.0], 0, None)];
        let queue: Vec<&Ticket> = tickets.iter().collect();
        assert!(propose(&mode(), &queue, 1_000, false).is_empty(), "250 apart, window 100 at first");
        // At 8 s the window is 100 + 0.8·200 = 260.
        assert_eq!(pairs(&propose(&mode(), &queue, 8_000, false), &queue), [vec![1, 2]]);
    }

    #[test]
    fn region_preference_relaxes_with_wait() {
        let tickets = [ticket(1, &[1500.0], 0, Some("eu")), ticket(2, &[1500.0], 0, Some("us"))];
        let queue: Vec<&Ticket> = tickets.iter().collect();
        assert!(propose(&mode(), &queue, 1_000, false).is_empty());
        let relaxed = propose(&mode(), &queue, 5_000, false);
        assert_eq!(pairs(&relaxed, &queue), [vec![1, 2]]);
        assert_eq!((relaxed[0].region.as_deref(), relaxed[0].any_region), (Some("eu"), true));
        // A same-region ticket is met at once, with a strict region.
        let tickets = [ticket(1, &[1500.0], 0, Some("eu")), ticket(2, &[1510.0], 0, Some("eu"))];
        let queue: Vec<&Ticket> = tickets.iter().collect();
        let strict = propose(&mode(), &queue, 1_000, false);
        assert_eq!((pairs(&strict, &queue), strict[0].any_region), (vec![vec![1, 2]], false));
    }

    #[test]
    fn parties_stay_on_one_side() {
        let doubles = ModeConfig { window: WindowCurve::parse("0:1000").unwrap(), ..ModeConfig::two_vs_two("d") };
        let tickets = [
            ticket(1, &[1500.0, 1500.0], 0, None), // a party of two
            ticket(2, &[1500.0], 1, None),
            ticket(3, &[1510.0, 1490.0], 2, None), // another party
            ticket(4, &[1500.0], 3, None),
        ];
        let queue: Vec<&Ticket> = tickets.iter().collect();
        let proposals = propose(&doubles, &queue, 10, false);
        // Equal ratings: older first. Solo 2 goes opposite the party; party 3 no
        // longer fits anywhere, so solo 4 completes the match.
        assert_eq!(pairs(&proposals, &queue), [vec![1, 2, 4]]);
        let seats = &proposals[0].seats;
        let side_of = |ticket: usize| -> Vec<u8> {
            seats
                .iter()
                .filter(|seat| matches!(seat.occupant, Occupant::Player { ticket: t, .. } if t == ticket))
                .map(|seat| seat.side)
                .collect()
        };
        assert_eq!((side_of(0), side_of(1), side_of(3)), (vec![0, 0], vec![1], vec![1]));
        assert_eq!(seats.iter().map(|seat| seat.seat).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(seats.iter().all(|seat| seat.side == seat.seat % 2));
        // Two parties alone fill both sides.
        let parties: Vec<&Ticket> = vec![&tickets[0], &tickets[2]];
        let proposals = propose(&doubles, &parties, 10, false);
        assert_eq!(pairs(&proposals, &parties), [vec![1, 3]]);
        // The two solo tickets were left; with a third solo they would not fit a party's side.
        let too_big = ticket(9, &[1500.0, 1500.0, 1500.0], 0, None);
        assert!(propose(&doubles, &[&too_big], 10, true).is_empty(), "a party larger than a side is never matched");
    }

    #[test]
    fn bots_fill_seats_only_after_the_wait_and_when_available() {
        let with_bots = ModeConfig { bot_fill_after_ms: Some(20_000), ..mode() };
        let tickets = [ticket(1, &[1500.0], 0, None)];
        let queue: Vec<&Ticket> = tickets.iter().collect();
        assert!(propose(&with_bots, &queue, 19_999, true).is_empty());
        assert!(propose(&with_bots, &queue, 20_000, false).is_empty(), "no bot hook");
        let proposals = propose(&with_bots, &queue, 20_000, true);
        assert_eq!(proposals.len(), 1);
        assert_eq!(proposals[0].n_bots(), 1);
        assert_eq!(proposals[0].seats[1].occupant, Occupant::Bot);
        assert!(propose(&mode(), &queue, 1_000_000, true).is_empty(), "the mode does not allow bots");
    }

    #[test]
    fn expired_tickets_are_never_proposed() {
        let mut old = ticket(1, &[1500.0], 0, None);
        old.expires_at_ms = 500;
        let tickets = [old, ticket(2, &[1500.0], 0, None)];
        let queue: Vec<&Ticket> = tickets.iter().collect();
        assert!(propose(&mode(), &queue, 1_000, false).is_empty());
    }
}
