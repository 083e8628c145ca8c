//! Control messages, one enum per direction and session phase.
//!
//! | phase | client → shard | shard → client |
//! |---|---|---|
//! | handshake | [`ClientHello`] (hello frame) | [`ServerHello`] (hello frame) |
//! | in match | [`ClientMessage`] | [`ServerMessage`] |
//! | ended | — | [`ServerMessage::MatchEnded`], then the stream finishes |
//!
//! All travel as bincode frames through [`crate::codec`]; the field order of
//! each struct is its wire order (PROTOCOL.md lists them).

use serde::{Deserialize, Serialize};

use crate::{MatchId, PlayerId, Schema, Seat, Tick};

/// Length of a resume secret.
pub const RESUME_SECRET_LEN: usize = 32;

/// First message of a client: how it claims a seat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientHello {
    /// A fresh join with a connect token from the matchmaker.
    Connect {
        /// The token bytes (see [`crate::token`]).
        token: Vec<u8>,
    },
    /// Taking a seat back after a dropped connection, within the grace window.
    Resume {
        /// The match.
        match_id: MatchId,
        /// The seat held before.
        seat: Seat,
        /// The secret from [`Welcome::resume_secret`].
        secret: [u8; RESUME_SECRET_LEN],
    },
}

/// The shard's answer to a hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerHello {
    /// The seat is yours; datagrams may flow.
    Welcome(Box<Welcome>),
    /// Refused; the shard closes the connection after sending this.
    Refused(Refusal),
}

/// Everything a client needs to play, sent once per connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The game's name (`"pong"`), so a client can refuse a game it cannot draw.
    pub game: String,
    /// The match joined.
    pub match_id: MatchId,
    /// The player, as named by the token.
    pub player_id: PlayerId,
    /// The seat taken.
    pub seat: Seat,
    /// Seats in the match.
    pub n_seats: u8,
    /// Points to win.
    pub points_to_win: u8,
    /// Simulation ticks per second.
    pub tick_rate_hz: u16,
    /// Snapshots per second sent to this client.
    pub snapshot_rate_hz: u16,
    /// The server tick when this was sent; the client's clock starts here.
    pub server_tick: Tick,
    /// How to decode snapshot bodies.
    pub schema: Schema,
    /// Present this with [`ClientHello::Resume`] to take the seat back after a drop.
    pub resume_secret: [u8; RESUME_SECRET_LEN],
    /// How long after a drop the seat is held, in milliseconds.
    pub resume_grace_ms: u32,
}

/// A refusal with a machine-readable reason and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Why.
    pub reason: RefuseReason,
    /// What to do about it, in words.
    pub message: String,
}

/// Why a hello was refused. On the wire it is its numeric code (a varint
/// `u16`), stable across versions; a code this side does not know decodes as an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
#[repr(u16)]
#[non_exhaustive]
pub enum RefuseReason {
    /// The client speaks another protocol version.
    VersionMismatch = 1,
    /// The hello could not be decoded.
    MalformedHello = 2,
    /// The token is not a token.
    TokenMalformed = 3,
    /// The token's signature does not verify.
    TokenForged = 4,
    /// The token has expired.
    TokenExpired = 5,
    /// The token is not valid yet.
    TokenNotYetValid = 6,
    /// The token is for another shard.
    WrongShard = 7,
    /// The token was already used.
    TokenReused = 8,
    /// The token was signed by a key this shard does not know.
    UnknownKey = 9,
    /// The seat is already held by another connection.
    SeatTaken = 10,
    /// The match has already finished.
    MatchFinished = 11,
    /// The shard is draining and takes no new matches.
    Draining = 12,
    /// The token's match settings conflict with the running match or the game.
    BadMatchSpec = 13,
    /// The resume credential is unknown or wrong.
    ResumeRefused = 14,
    /// The grace window for resuming has passed.
    ResumeExpired = 15,
    /// The shard is at capacity.
    ShardFull = 16,
}

/// A numeric reason code that this version does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown reason code {0}")]
pub struct UnknownCode(pub u16);

macro_rules! wire_codes {
    ($ty:ident { $($variant:ident),+ $(,)? }) => {
        impl From<$ty> for u16 {
            fn from(value: $ty) -> u16 {
                value as u16
            }
        }

        impl TryFrom<u16> for $ty {
            type Error = UnknownCode;

            fn try_from(code: u16) -> Result<Self, UnknownCode> {
                $(if code == $ty::$variant as u16 {
                    return Ok($ty::$variant);
                })+
                Err(UnknownCode(code))
            }
        }
    };
}

wire_codes!(RefuseReason {
    VersionMismatch,
    MalformedHello,
    TokenMalformed,
    TokenForged,
    TokenExpired,
    TokenNotYetValid,
    WrongShard,
    TokenReused,
    UnknownKey,
    SeatTaken,
    MatchFinished,
    Draining,
    BadMatchSpec,
    ResumeRefused,
    ResumeExpired,
    ShardFull,
});

wire_codes!(DisconnectReason { RateLimited, Idle, Replaced, ShuttingDown, ProtocolViolation });

impl RefuseReason {
    /// A short snake_case label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::VersionMismatch => "version_mismatch",
            Self::MalformedHello => "malformed_hello",
            Self::TokenMalformed => "token_malformed",
            Self::TokenForged => "token_forged",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::WrongShard => "wrong_shard",
            Self::TokenReused => "token_reused",
            Self::UnknownKey => "unknown_key",
            Self::SeatTaken => "seat_taken",
            Self::MatchFinished => "match_finished",
            Self::Draining => "draining",
            Self::BadMatchSpec => "bad_match_spec",
            Self::ResumeRefused => "resume_refused",
            Self::ResumeExpired => "resume_expired",
            Self::ShardFull => "shard_full",
        }
    }
}

/// Client → shard after the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// Clock sync probe; answered by [`ServerMessage::Pong`].
    Ping {
        /// The client's clock in microseconds, echoed back.
        client_time_us: u64,
    },
    /// The player leaves for good; the seat counts as empty from now on.
    Leave,
}

/// Lifecycle phase of a match as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MatchPhase {
    /// Waiting for every seat to connect.
    Waiting,
    /// Counting down to a serve.
    Countdown,
    /// Ball in play.
    Playing,
    /// Over.
    Finished,
}

/// Why a match ended, on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EndReason {
    /// A side reached the points to win.
    Score,
    /// A seat stayed empty past the timeout.
    Forfeit,
    /// Never filled, or everyone left: no winner.
    Abandoned,
    /// The shard shut down before the match could finish.
    ShardShutdown,
    /// The clock ran out: the side leading at the time limit or scoring first in
    /// sudden death won, or nobody did (level at the end of sudden death).
    TimeLimit,
}

impl EndReason {
    /// Whether the game ended the match by its own rules (points or the clock),
    /// as opposed to being cut short by a forfeit, an abandonment or a shutdown.
    pub fn ended_by_the_rules(self) -> bool {
        matches!(self, Self::Score | Self::TimeLimit)
    }
}

/// The final word on a match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchEnd {
    /// The tick it ended.
    pub tick: Tick,
    /// Points per side.
    pub scores: Vec<u32>,
    /// The winning side, if any.
    pub winner: Option<u8>,
    /// Why.
    pub reason: EndReason,
    /// Seats that forfeited.
    pub forfeited: Vec<Seat>,
}

/// Why the shard is closing a connection that had been welcomed. On the wire
/// it is its numeric code, stable across versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
#[repr(u16)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// Too many datagrams or control messages.
    RateLimited = 1,
    /// Nothing received for too long.
    Idle = 2,
    /// The same seat was resumed on another connection.
    Replaced = 3,
    /// The shard is shutting down.
    ShuttingDown = 4,
    /// The client broke the protocol (undecodable control messages).
    ProtocolViolation = 5,
}

/// Shard → client after the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// Answer to [`ClientMessage::Ping`].
    Pong {
        /// Echo of the client's clock.
        client_time_us: u64,
        /// The server's current tick when the ping was handled.
        server_tick: Tick,
    },
    /// The match changed phase.
    Phase {
        /// Tick of the change.
        tick: Tick,
        /// New phase.
        phase: MatchPhase,
    },
    /// A side scored.
    PointScored {
        /// Tick of the point.
        tick: Tick,
        /// Side that scored.
        side: u8,
        /// Points per side after it.
        scores: Vec<u32>,
    },
    /// Another seat connected or dropped.
    SeatPresence {
        /// Which seat.
        seat: Seat,
        /// Whether it is connected now.
        connected: bool,
    },
    /// The match is over; nothing follows but the end of the stream.
    MatchEnded(MatchEnd),
    /// The connection is being closed for a reason.
    Disconnect {
        /// Why.
        reason: DisconnectReason,
        /// Details for people.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{FrameReader, Hello, decode_payload, encode_frame, encode_hello_frame};
    use crate::{FieldSpec, PROTOCOL_VERSION};
    use proptest::prelude::*;

    fn welcome() -> Welcome {
        Welcome {
            game: "pong".into(),
            match_id: MatchId(7),
            player_id: PlayerId(42),
            seat: 1,
            n_seats: 2,
            points_to_win: 5,
            tick_rate_hz: 60,
            snapshot_rate_hz: 30,
            server_tick: 1234,
            schema: Schema::new(vec![FieldSpec::unsigned("x", 13)]).unwrap(),
            resume_secret: [3; RESUME_SECRET_LEN],
            resume_grace_ms: 10_000,
        }
    }

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(message: &T) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_frame(message, &mut bytes);
        let mut reader = FrameReader::new();
        reader.push(&bytes);
        let payload = reader.poll_frame().unwrap().unwrap();
        assert_eq!(&decode_payload::<T>(&payload).unwrap(), message);
        payload
    }

    #[test]
    fn golden_bytes_are_pinned() {
        // Each pair: the message and its bincode payload. A change here is a protocol change.
        assert_eq!(round_trip(&ClientHello::Connect { token: vec![0xAB, 0xCD] }), [0, 2, 0xAB, 0xCD]);
        let resume = ClientHello::Resume { match_id: MatchId(300), seat: 1, secret: [7; 32] };
        let mut expected = vec![1, 251, 44, 1, 1];
        expected.extend_from_slice(&[7; 32]);
        assert_eq!(round_trip(&resume), expected);
        assert_eq!(round_trip(&ClientMessage::Ping { client_time_us: 5 }), [0, 5]);
        assert_eq!(round_trip(&ClientMessage::Leave), [1]);
        let refusal = ServerHello::Refused(Refusal { reason: RefuseReason::TokenExpired, message: "x".into() });
        assert_eq!(round_trip(&refusal), [1, 5, 1, b'x'], "TokenExpired is code 5");
        assert_eq!(round_trip(&ServerMessage::Pong { client_time_us: 1, server_tick: 2 }), [0, 1, 2]);
        assert_eq!(round_trip(&ServerMessage::Phase { tick: 3, phase: MatchPhase::Playing }), [1, 3, 2]);
        assert_eq!(
            round_trip(&ServerMessage::PointScored { tick: 3, side: 1, scores: vec![0, 1] }),
            [2, 3, 1, 2, 0, 1]
        );
        assert_eq!(round_trip(&ServerMessage::SeatPresence { seat: 1, connected: false }), [3, 1, 0]);
        let end =
            MatchEnd { tick: 9, scores: vec![5, 2], winner: Some(0), reason: EndReason::Score, forfeited: vec![] };
        assert_eq!(round_trip(&ServerMessage::MatchEnded(end)), [4, 9, 2, 5, 2, 1, 0, 0, 0]);
        let draw =
            MatchEnd { tick: 9, scores: vec![1, 1], winner: None, reason: EndReason::TimeLimit, forfeited: vec![] };
        assert_eq!(round_trip(&ServerMessage::MatchEnded(draw)), [4, 9, 2, 1, 1, 0, 4, 0], "TimeLimit is variant 4");
        let kick = ServerMessage::Disconnect { reason: DisconnectReason::Idle, message: String::new() };
        assert_eq!(round_trip(&kick), [5, 2, 0], "Idle is code 2");
        assert!(decode_payload::<ServerMessage>(&[5, 99, 0]).is_err(), "unknown codes are refused");
        let welcome_payload = round_trip(&ServerHello::Welcome(Box::new(welcome())));
        assert_eq!(&welcome_payload[..8], [0, 4, b'p', b'o', b'n', b'g', 7, 42]);
    }

    #[test]
    fn hello_frames_expose_the_version_first() {
        let mut bytes = Vec::new();
        encode_hello_frame(&ClientHello::Connect { token: vec![1] }, &mut bytes);
        let hello = Hello::parse(&bytes[4..]).unwrap();
        assert_eq!(hello.version, PROTOCOL_VERSION);
        assert_eq!(hello.decode::<ClientHello>().unwrap(), ClientHello::Connect { token: vec![1] });
    }

    #[test]
    fn an_invalid_schema_in_a_welcome_is_refused() {
        let mut payload = Vec::new();
        encode_frame(&ServerHello::Welcome(Box::new(welcome())), &mut payload);
        // The schema's single field has 13 bits; make it 40.
        let at = payload.iter().rposition(|&b| b == 13).unwrap();
        payload[at] = 40;
        assert!(matches!(decode_payload::<ServerHello>(&payload[4..]), Err(crate::DecodeError::Control(_))));
    }

    proptest! {
        #[test]
        fn garbage_control_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_payload::<ClientHello>(&bytes);
            let _ = decode_payload::<ServerHello>(&bytes);
            let _ = decode_payload::<ClientMessage>(&bytes);
            let _ = decode_payload::<ServerMessage>(&bytes);
        }

        #[test]
        fn client_hellos_round_trip(token in proptest::collection::vec(any::<u8>(), 0..300), id in any::<u64>(), seat in any::<u8>()) {
            round_trip(&ClientHello::Connect { token });
            round_trip(&ClientHello::Resume { match_id: MatchId(id), seat, secret: [seat; 32] });
        }

        #[test]
        fn server_messages_round_trip(tick in any::<u32>(), scores in proptest::collection::vec(any::<u32>(), 0..4), time in any::<u64>()) {
            round_trip(&ServerMessage::Pong { client_time_us: time, server_tick: tick });
            round_trip(&ServerMessage::PointScored { tick, side: 0, scores: scores.clone() });
            round_trip(&ServerMessage::MatchEnded(MatchEnd { tick, scores, winner: None, reason: EndReason::Abandoned, forfeited: vec![1] }));
        }
    }
}
