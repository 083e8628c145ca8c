//! Tickets and their states: what a player asked for, and what became of it.
//! Stored as JSON in the ticket store, so they survive across replicas.

use std::fmt;
use std::str::FromStr;

use rally_protocol::{MatchId, PlayerId, Seat};
use serde::{Deserialize, Serialize};

use crate::proto::matchmaker as pb;

/// A ticket's id: 64 random bits, written as 16 lower-case hex digits (so
/// lexicographic order is numeric order, which the Redis queue relies on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TicketId(pub u64);

impl TicketId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for TicketId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 16 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(format!("{text:?} is not a ticket id (16 hex digits)"));
        }
        u64::from_str_radix(text, 16).map(Self).map_err(|err| err.to_string())
    }
}

/// One player on a ticket, with the rating read at enqueue time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartyMember {
    /// The player.
    pub player_id: PlayerId,
    /// Their Glicko-2 rating when the ticket was made.
    pub rating: f64,
    /// Their display name (the access token's `name` at enqueue time).
    #[serde(default)]
    pub display_name: String,
}

/// A request to be matched: one player or a party, for one mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// The id.
    pub id: TicketId,
    /// The game mode.
    pub mode: String,
    /// The players, the one who enqueued first. They land on one side.
    pub players: Vec<PartyMember>,
    /// Preferred region, if any.
    pub region: Option<String>,
    /// When it was queued, Unix ms.
    pub enqueued_at_ms: u64,
    /// When it expires if still queued, Unix ms.
    pub expires_at_ms: u64,
}

impl Ticket {
    /// The party's rating: the mean of its members'.
    pub fn rating(&self) -> f64 {
        if self.players.is_empty() {
            return 0.0;
        }
        self.players.iter().map(|member| member.rating).sum::<f64>() / self.players.len() as f64
    }

    /// Whether `player` is on this ticket.
    pub fn has_player(&self, player: PlayerId) -> bool {
        self.players.iter().any(|member| member.player_id == player)
    }

    /// How long it has waited at `now_ms`.
    pub fn waited_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.enqueued_at_ms)
    }
}

/// One seat given to a player of a matched ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatAssignment {
    /// The player.
    pub player_id: PlayerId,
    /// Their seat.
    pub seat: Seat,
    /// Their side.
    pub side: u8,
    /// The signed connect token.
    pub connect_token: Vec<u8>,
    /// When the token expires, Unix ms.
    pub token_expires_at_ms: u64,
}

/// One seat of a match as every player of it sees it (no token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterSeat {
    /// Who sits there (a house bot's account for a bot).
    pub player_id: PlayerId,
    /// Their display name.
    pub display_name: String,
    /// The seat.
    pub seat: Seat,
    /// Its side.
    pub side: u8,
    /// Whether a bot plays it.
    pub bot: bool,
}

/// Where a matched ticket plays.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The match.
    pub match_id: MatchId,
    /// The game mode.
    pub mode: String,
    /// The shard's name (tokens carry it).
    pub shard_name: String,
    /// The shard's QUIC address, `host:port`.
    pub shard_address: String,
    /// SHA-256 of the shard's certificate (hex).
    pub certificate_sha256: String,
    /// The ticket's seats.
    pub seats: Vec<SeatAssignment>,
    /// Every seat of the match, in seat order: who plays whom.
    #[serde(default)]
    pub roster: Vec<RosterSeat>,
    /// When it was matched, Unix ms.
    pub matched_at_ms: u64,
}

/// What became of a ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketState {
    /// Waiting in the queue.
    Queued,
    /// Matched and assigned a shard.
    Matched(Assignment),
    /// Cancelled by a player.
    Cancelled,
    /// Expired in the queue.
    Expired,
    /// Its match's shard failed before the match ended; the players may enqueue again.
    Aborted {
        /// The match that was lost.
        match_id: MatchId,
        /// What happened.
        reason: String,
    },
}

impl TicketState {
    /// Whether nothing more will happen to the ticket (except an abort after a match).
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Queued | Self::Matched(_))
    }

    /// The wire form.
    pub fn to_update(&self, ticket: TicketId, enqueued_at_ms: u64, now_ms: u64) -> pb::TicketUpdate {
        let mut update = pb::TicketUpdate {
            ticket_id: ticket.to_string(),
            waited_ms: now_ms.saturating_sub(enqueued_at_ms) as i64,
            ..pb::TicketUpdate::default()
        };
        let state = match self {
            Self::Queued => pb::TicketState::Queued,
            Self::Matched(assignment) => {
                update.waited_ms = assignment.matched_at_ms.saturating_sub(enqueued_at_ms) as i64;
                update.assignment = Some(pb::Assignment {
                    match_id: assignment.match_id.0,
                    shard_name: assignment.shard_name.clone(),
                    shard_address: assignment.shard_address.clone(),
                    certificate_sha256: assignment.certificate_sha256.clone(),
                    mode: assignment.mode.clone(),
                    seats: assignment
                        .seats
                        .iter()
                        .map(|seat| pb::SeatAssignment {
                            player_id: seat.player_id.0,
                            seat: u32::from(seat.seat),
                            side: u32::from(seat.side),
                            connect_token: seat.connect_token.clone(),
                            token_expires_at_ms: seat.token_expires_at_ms as i64,
                        })
                        .collect(),
                    roster: assignment
                        .roster
                        .iter()
                        .map(|seat| pb::MatchSeat {
                            player_id: seat.player_id.0,
                            display_name: seat.display_name.clone(),
                            seat: u32::from(seat.seat),
                            side: u32::from(seat.side),
                            bot: seat.bot,
                        })
                        .collect(),
                });
                pb::TicketState::Matched
            }
            Self::Cancelled => {
                update.reason = "cancelled by a player".into();
                pb::TicketState::Cancelled
            }
            Self::Expired => {
                update.reason = "no match was found before the ticket expired; enqueue again".into();
                pb::TicketState::Expired
            }
            Self::Aborted { reason, .. } => {
                update.reason = reason.clone();
                pb::TicketState::Aborted
            }
        };
        update.state = state as i32;
        update
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_ids_round_trip_and_sort_like_numbers() {
        let id = TicketId(0xab);
        assert_eq!(id.to_string(), "00000000000000ab");
        assert_eq!("00000000000000ab".parse::<TicketId>(), Ok(id));
        assert!("xyz".parse::<TicketId>().is_err());
        assert!("+0000000000000ab".parse::<TicketId>().is_err());
        assert!(TicketId(2).to_string() < TicketId(10).to_string());
    }
}
