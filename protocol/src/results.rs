//! The record a shard emits when a match ends, consumed by the results bus
//! (lobby ratings, tournaments, the ledger); idempotent by `match_id`. On the
//! bus it travels as the versioned protobuf message of `proto/bus.proto`
//! (conversions in [`crate::bus`]); on disk (a shard's `results.jsonl`) as
//! JSON, which is what the serde derives are for.

use serde::{Deserialize, Serialize};

use crate::control::EndReason;
use crate::{MatchId, PlayerId, Seat};

/// One seat of a finished match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatResult {
    /// The seat index.
    pub seat: Seat,
    /// Who held it (from the connect token); `None` if nobody ever joined.
    pub player_id: Option<PlayerId>,
    /// The side (team) the seat played for.
    pub side: u8,
    /// Whether this seat forfeited.
    pub forfeited: bool,
}

/// The outcome of one match, emitted exactly once per match id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchResult {
    /// The match.
    pub match_id: MatchId,
    /// The game played (`"pong"`).
    pub game: String,
    /// The shard that ran it.
    pub shard: String,
    /// Every seat, in seat order.
    pub seats: Vec<SeatResult>,
    /// Points per side.
    pub scores: Vec<u32>,
    /// The winning side, `None` for no winner.
    pub winner: Option<u8>,
    /// Why it ended.
    pub reason: EndReason,
    /// Simulated ticks from creation to end.
    pub duration_ticks: u32,
    /// Tick rate, so `duration_ticks` converts to seconds.
    pub tick_rate_hz: u16,
    /// Wall clock at creation, Unix milliseconds.
    pub started_at_ms: u64,
    /// Wall clock at the end, Unix milliseconds.
    pub ended_at_ms: u64,
    /// SHA-256 of the match's input log (hex): replaying that log reproduces this result.
    pub input_log_digest: String,
}

impl MatchResult {
    /// The players on the winning side, in seat order.
    pub fn winners(&self) -> impl Iterator<Item = PlayerId> + '_ {
        self.seats.iter().filter(|seat| Some(seat.side) == self.winner).filter_map(|seat| seat.player_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip_through_json_and_name_winners() {
        let result = MatchResult {
            match_id: MatchId(9),
            game: "pong".into(),
            shard: "shard-a".into(),
            seats: vec![
                SeatResult { seat: 0, player_id: Some(PlayerId(1)), side: 0, forfeited: false },
                SeatResult { seat: 1, player_id: Some(PlayerId(2)), side: 1, forfeited: false },
            ],
            scores: vec![5, 3],
            winner: Some(0),
            reason: EndReason::Score,
            duration_ticks: 3600,
            tick_rate_hz: 60,
            started_at_ms: 1,
            ended_at_ms: 60_001,
            input_log_digest: "ab".repeat(32),
        };
        let json = serde_json::to_string(&result).unwrap();
        assert_eq!(serde_json::from_str::<MatchResult>(&json).unwrap(), result);
        assert_eq!(result.winners().collect::<Vec<_>>(), [PlayerId(1)]);
    }
}
