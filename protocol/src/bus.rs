//! The events of rally's bus (`proto/bus.proto`, package `rally.bus.v1`) and
//! the one place they convert between their domain types and protobuf bytes.
//!
//! Each event type implements [`BusEvent`]: [`BusEvent::encode`] writes the
//! current major version, and [`BusEvent::decode`] reads only versions it
//! knows. It reads the version first (every message carries it as field 1,
//! see [`pb::Versioned`]), so a newer producer's event is refused as
//! [`EventDecodeError::UnknownVersion`] even when the rest of it would not
//! decode; garbage and out-of-range values are [`EventDecodeError::Malformed`].
//! Nothing here panics on any input. Fields this build does not know are
//! ignored (protobuf's default), which is what lets a producer add a field
//! without a new version. The compatibility rule is written out at the top of
//! `bus.proto`.

use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::control::EndReason;
use crate::results::{MatchResult, SeatResult};
use crate::{MatchId, PlayerId};

/// The generated messages of `rally.bus.v1`.
#[expect(missing_docs, reason = "generated code; bus.proto documents every field")]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/rally.bus.v1.rs"));
}

/// The major version of `MatchResult` on the bus that this build writes and reads.
pub const MATCH_RESULT_VERSION: u32 = 1;
/// The major version of [`MatchFormed`] this build writes and reads.
pub const MATCH_FORMED_VERSION: u32 = 1;
/// The major version of [`RatingEvent`] this build writes and reads.
pub const RATING_EVENT_VERSION: u32 = 1;

/// Why bytes from the bus were refused. A consumer logs it, counts it under
/// [`EventDecodeError::reason`] and skips (or dead-letters) the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventDecodeError {
    /// The event carries a major version this build does not read: a newer
    /// producer (upgrade this consumer) or one that set none (version 0).
    #[error("{event} version {found} is not one this build reads (it reads {known}); upgrade this consumer")]
    UnknownVersion {
        /// Which event.
        event: &'static str,
        /// The version found.
        found: u32,
        /// The version this build reads.
        known: u32,
    },
    /// The bytes are not the event, or a field is out of its range.
    #[error("malformed {event}: {reason}")]
    Malformed {
        /// Which event.
        event: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl EventDecodeError {
    /// A metric label for the refusal: `unknown_version` or `malformed`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownVersion { .. } => "unknown_version",
            Self::Malformed { .. } => "malformed",
        }
    }
}

/// An event of the bus: one protobuf message with a major version.
pub trait BusEvent: Sized {
    /// Its name in errors and logs.
    const NAME: &'static str;
    /// The major version this build writes and reads.
    const VERSION: u32;
    /// The message bytes, at [`Self::VERSION`].
    fn encode(&self) -> Vec<u8>;
    /// Reads an event of [`Self::VERSION`]; refuses any other version,
    /// garbage, and out-of-range values.
    fn decode(bytes: &[u8]) -> Result<Self, EventDecodeError>;
}

fn malformed(event: &'static str, reason: impl Into<String>) -> EventDecodeError {
    EventDecodeError::Malformed { event, reason: reason.into() }
}

/// Decodes `bytes` as `M` once its version is `known`.
fn decode_versioned<M: prost::Message + Default>(
    event: &'static str,
    known: u32,
    bytes: &[u8],
) -> Result<M, EventDecodeError> {
    let versioned = pb::Versioned::decode(bytes).map_err(|err| malformed(event, err.to_string()))?;
    if versioned.version != known {
        return Err(EventDecodeError::UnknownVersion { event, found: versioned.version, known });
    }
    M::decode(bytes).map_err(|err| malformed(event, err.to_string()))
}

fn narrow<T: TryFrom<u32>>(event: &'static str, field: &str, value: u32) -> Result<T, EventDecodeError> {
    T::try_from(value).map_err(|_| malformed(event, format!("{field} {value} is out of range")))
}

fn end_reason_to_pb(reason: EndReason) -> pb::EndReason {
    match reason {
        EndReason::Score => pb::EndReason::Score,
        EndReason::Forfeit => pb::EndReason::Forfeit,
        EndReason::Abandoned => pb::EndReason::Abandoned,
        EndReason::ShardShutdown => pb::EndReason::ShardShutdown,
        EndReason::TimeLimit => pb::EndReason::TimeLimit,
    }
}

fn end_reason_from_pb(value: i32) -> Result<EndReason, EventDecodeError> {
    match pb::EndReason::try_from(value) {
        Ok(pb::EndReason::Score) => Ok(EndReason::Score),
        Ok(pb::EndReason::Forfeit) => Ok(EndReason::Forfeit),
        Ok(pb::EndReason::Abandoned) => Ok(EndReason::Abandoned),
        Ok(pb::EndReason::ShardShutdown) => Ok(EndReason::ShardShutdown),
        Ok(pb::EndReason::TimeLimit) => Ok(EndReason::TimeLimit),
        Ok(pb::EndReason::Unspecified) | Err(_) => {
            Err(malformed(<MatchResult as BusEvent>::NAME, format!("end reason {value} is not one this build knows")))
        }
    }
}

impl BusEvent for MatchResult {
    const NAME: &'static str = "MatchResult";
    const VERSION: u32 = MATCH_RESULT_VERSION;

    fn encode(&self) -> Vec<u8> {
        pb::MatchResult {
            version: Self::VERSION,
            match_id: self.match_id.0,
            game: self.game.clone(),
            shard: self.shard.clone(),
            seats: self
                .seats
                .iter()
                .map(|seat| pb::SeatResult {
                    seat: u32::from(seat.seat),
                    player_id: seat.player_id.map(|player| player.0),
                    side: u32::from(seat.side),
                    forfeited: seat.forfeited,
                })
                .collect(),
            scores: self.scores.clone(),
            winner: self.winner.map(u32::from),
            reason: end_reason_to_pb(self.reason).into(),
            duration_ticks: self.duration_ticks,
            tick_rate_hz: u32::from(self.tick_rate_hz),
            started_at_ms: self.started_at_ms,
            ended_at_ms: self.ended_at_ms,
            input_log_digest: self.input_log_digest.clone(),
        }
        .encode_to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, EventDecodeError> {
        const NAME: &str = <MatchResult as BusEvent>::NAME;
        let message: pb::MatchResult = decode_versioned(NAME, Self::VERSION, bytes)?;
        let seats = message
            .seats
            .iter()
            .map(|seat| {
                Ok(SeatResult {
                    seat: narrow(NAME, "seat", seat.seat)?,
                    player_id: seat.player_id.map(PlayerId),
                    side: narrow(NAME, "side", seat.side)?,
                    forfeited: seat.forfeited,
                })
            })
            .collect::<Result<Vec<_>, EventDecodeError>>()?;
        Ok(Self {
            match_id: MatchId(message.match_id),
            seats,
            scores: message.scores,
            winner: message.winner.map(|side| narrow(NAME, "winner", side)).transpose()?,
            reason: end_reason_from_pb(message.reason)?,
            duration_ticks: message.duration_ticks,
            tick_rate_hz: narrow(NAME, "tick_rate_hz", message.tick_rate_hz)?,
            started_at_ms: message.started_at_ms,
            ended_at_ms: message.ended_at_ms,
            input_log_digest: message.input_log_digest,
            game: message.game,
            shard: message.shard,
        })
    }
}

/// A match was formed (its tickets claimed, its shard reserved): the
/// matchmaker announces it and the lobby opens the match's chat channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchFormed {
    /// The format version, [`MATCH_FORMED_VERSION`] (also the version of the
    /// JSON entries older releases wrote).
    pub v: u32,
    /// The match.
    pub match_id: MatchId,
    /// Its game mode.
    pub mode: String,
    /// The shard that plays it.
    pub shard: String,
    /// Its players, bots left out.
    pub players: Vec<PlayerId>,
    /// When it was formed, Unix ms.
    pub formed_at_ms: u64,
}

impl MatchFormed {
    /// What a reader is handed for an entry it cannot read (a newer format,
    /// corruption): no players, so following it does nothing.
    pub fn skipped() -> Self {
        Self {
            v: 0,
            match_id: MatchId(0),
            mode: String::new(),
            shard: String::new(),
            players: Vec::new(),
            formed_at_ms: 0,
        }
    }
}

impl BusEvent for MatchFormed {
    const NAME: &'static str = "MatchFormed";
    const VERSION: u32 = MATCH_FORMED_VERSION;

    fn encode(&self) -> Vec<u8> {
        pb::MatchFormed {
            version: Self::VERSION,
            match_id: self.match_id.0,
            mode: self.mode.clone(),
            shard: self.shard.clone(),
            players: self.players.iter().map(|player| player.0).collect(),
            formed_at_ms: self.formed_at_ms,
        }
        .encode_to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, EventDecodeError> {
        let message: pb::MatchFormed = decode_versioned(Self::NAME, Self::VERSION, bytes)?;
        Ok(Self {
            v: message.version,
            match_id: MatchId(message.match_id),
            mode: message.mode,
            shard: message.shard,
            players: message.players.into_iter().map(PlayerId).collect(),
            formed_at_ms: message.formed_at_ms,
        })
    }
}

/// A player's Glicko-2 rating after the lobby applied a match result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatingChanged {
    /// The player.
    pub player_id: PlayerId,
    /// Glicko-2 rating.
    pub rating: f64,
    /// Glicko-2 rating deviation.
    pub deviation: f64,
    /// Glicko-2 volatility.
    pub volatility: f64,
    /// Rated matches applied to the player so far: this rating's per-player
    /// version (a read model keeps the highest). At least 1.
    pub rated_games: u64,
    /// The match whose result the lobby had just applied when it published
    /// this, for tracing (the rating may include a later one: `rated_games` orders them).
    pub match_id: Option<MatchId>,
}

/// An entry of the ratings stream, from the lobby to the matchmaker's read model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RatingEvent {
    /// A player's new rating.
    Changed(RatingChanged),
    /// A player's account is gone: refuse them from now on.
    AccountDeleted {
        /// The player.
        player_id: PlayerId,
    },
}

impl RatingEvent {
    /// The player it is about.
    pub fn player_id(&self) -> PlayerId {
        match self {
            Self::Changed(changed) => changed.player_id,
            Self::AccountDeleted { player_id } => *player_id,
        }
    }
}

impl BusEvent for RatingEvent {
    const NAME: &'static str = "RatingEvent";
    const VERSION: u32 = RATING_EVENT_VERSION;

    fn encode(&self) -> Vec<u8> {
        let event = match self {
            Self::Changed(changed) => pb::rating_event::Event::RatingChanged(pb::RatingChanged {
                player_id: changed.player_id.0,
                rating: changed.rating,
                deviation: changed.deviation,
                volatility: changed.volatility,
                rated_games: changed.rated_games,
                match_id: changed.match_id.map_or(0, |match_id| match_id.0),
            }),
            Self::AccountDeleted { player_id } => {
                pb::rating_event::Event::AccountDeleted(pb::AccountDeleted { player_id: player_id.0 })
            }
        };
        pb::RatingEvent { version: Self::VERSION, event: Some(event) }.encode_to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, EventDecodeError> {
        let message: pb::RatingEvent = decode_versioned(Self::NAME, Self::VERSION, bytes)?;
        match message.event {
            Some(pb::rating_event::Event::RatingChanged(changed)) => {
                let finite = [changed.rating, changed.deviation, changed.volatility].iter().all(|x| x.is_finite());
                if !finite {
                    return Err(malformed(Self::NAME, "a rating, deviation or volatility is not finite"));
                }
                if changed.rated_games == 0 {
                    return Err(malformed(Self::NAME, "rated_games is 0 (a rating change counts at least one game)"));
                }
                Ok(Self::Changed(RatingChanged {
                    player_id: PlayerId(changed.player_id),
                    rating: changed.rating,
                    deviation: changed.deviation,
                    volatility: changed.volatility,
                    rated_games: changed.rated_games,
                    match_id: (changed.match_id != 0).then_some(MatchId(changed.match_id)),
                }))
            }
            Some(pb::rating_event::Event::AccountDeleted(deleted)) => {
                Ok(Self::AccountDeleted { player_id: PlayerId(deleted.player_id) })
            }
            None => Err(malformed(Self::NAME, "no event, or one of a kind this build does not know")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> MatchResult {
        MatchResult {
            match_id: MatchId(9),
            game: "pong".into(),
            shard: "shard-a".into(),
            seats: vec![
                SeatResult { seat: 0, player_id: Some(PlayerId(1)), side: 0, forfeited: false },
                SeatResult { seat: 1, player_id: None, side: 1, forfeited: true },
            ],
            scores: vec![5, 3],
            winner: Some(0),
            reason: EndReason::TimeLimit,
            duration_ticks: 3600,
            tick_rate_hz: 60,
            started_at_ms: 1,
            ended_at_ms: 60_001,
            input_log_digest: "ab".repeat(32),
        }
    }

    fn changed() -> RatingEvent {
        RatingEvent::Changed(RatingChanged {
            player_id: PlayerId(7),
            rating: 1612.5,
            deviation: 80.25,
            volatility: 0.059_99,
            rated_games: 3,
            match_id: Some(MatchId(9)),
        })
    }

    #[test]
    fn every_event_round_trips_through_protobuf() {
        let mut result = result();
        assert_eq!(MatchResult::decode(&result.encode()), Ok(result.clone()));
        result.winner = None;
        result.reason = EndReason::Abandoned;
        assert_eq!(MatchResult::decode(&result.encode()), Ok(result));
        let formed = MatchFormed {
            v: MATCH_FORMED_VERSION,
            match_id: MatchId(4),
            mode: "pong-doubles".into(),
            shard: "s".into(),
            players: vec![PlayerId(1), PlayerId(2)],
            formed_at_ms: 77,
        };
        assert_eq!(MatchFormed::decode(&formed.encode()), Ok(formed));
        assert_eq!(RatingEvent::decode(&changed().encode()), Ok(changed()));
        let deleted = RatingEvent::AccountDeleted { player_id: PlayerId(8) };
        assert_eq!(RatingEvent::decode(&deleted.encode()), Ok(deleted));
    }

    #[test]
    fn an_unknown_version_is_refused_not_misread() {
        let newer = pb::MatchResult { version: 2, match_id: 9, ..Default::default() }.encode_to_vec();
        assert_eq!(
            MatchResult::decode(&newer),
            Err(EventDecodeError::UnknownVersion { event: "MatchResult", found: 2, known: 1 })
        );
        // Version 0 is a producer that set none.
        let unversioned = pb::MatchFormed { version: 0, match_id: 4, ..Default::default() }.encode_to_vec();
        assert!(matches!(MatchFormed::decode(&unversioned), Err(EventDecodeError::UnknownVersion { found: 0, .. })));
        // A version 2 whose field 2 became a string: still refused by version, not as garbage.
        let mut changed_layout = pb::Versioned { version: 2 }.encode_to_vec();
        changed_layout.extend_from_slice(&[0x12, 0x03, b'a', b'b', b'c']);
        let err = RatingEvent::decode(&changed_layout).unwrap_err();
        assert_eq!(err.reason(), "unknown_version");
        assert!(err.to_string().contains("RatingEvent version 2 is not one this build reads"), "{err}");
    }

    #[test]
    fn fields_a_newer_minor_producer_added_are_ignored() {
        let mut bytes = changed().encode();
        // Field 99, varint 5: unknown to this build.
        bytes.extend_from_slice(&[0x98, 0x06, 0x05]);
        assert_eq!(RatingEvent::decode(&bytes), Ok(changed()));
    }

    #[test]
    fn garbage_and_out_of_range_values_are_refused_without_panicking() {
        for garbage in [&b"\xff\xff\xff"[..], b"{\"match_id\":1}", &[0x0a, 0x20, 1]] {
            assert_eq!(MatchResult::decode(garbage).unwrap_err().reason(), "malformed");
            assert_eq!(MatchFormed::decode(garbage).unwrap_err().reason(), "malformed");
            assert_eq!(RatingEvent::decode(garbage).unwrap_err().reason(), "malformed");
        }
        let bad_seat = pb::MatchResult {
            version: 1,
            reason: pb::EndReason::Score.into(),
            tick_rate_hz: 60,
            seats: vec![pb::SeatResult { seat: 256, ..Default::default() }],
            ..Default::default()
        };
        assert!(MatchResult::decode(&bad_seat.encode_to_vec()).unwrap_err().to_string().contains("seat 256"));
        let unknown_reason = pb::MatchResult { version: 1, reason: 42, tick_rate_hz: 60, ..Default::default() };
        assert!(
            MatchResult::decode(&unknown_reason.encode_to_vec()).unwrap_err().to_string().contains("end reason 42")
        );
        let empty = pb::RatingEvent { version: 1, event: None }.encode_to_vec();
        assert_eq!(RatingEvent::decode(&empty).unwrap_err().reason(), "malformed");
        let not_finite = RatingEvent::Changed(RatingChanged {
            rating: f64::NAN,
            ..match changed() {
                RatingEvent::Changed(changed) => changed,
                RatingEvent::AccountDeleted { .. } => unreachable!(),
            }
        });
        assert_eq!(RatingEvent::decode(&not_finite.encode()).unwrap_err().reason(), "malformed");
    }

    proptest::proptest! {
        #[test]
        fn no_bytes_make_a_decoder_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = MatchResult::decode(&bytes);
            let _ = MatchFormed::decode(&bytes);
            let _ = RatingEvent::decode(&bytes);
        }
    }
}
