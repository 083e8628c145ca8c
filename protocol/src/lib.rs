//! Wire contracts of rally: everything two roles must agree on byte for byte.
//!
//! This crate holds the control messages (bincode 2, behind [`codec`]), the
//! hand-packed datagrams of the fast path ([`datagram`]), the schema-driven
//! snapshot delta encoding ([`snapshot`]) and the Ed25519 connect tokens
//! ([`token`]), and the versioned protobuf events of the Redis bus between
//! roles ([`bus`], `proto/bus.proto`). It does no IO and reads no clock: time
//! is always an argument.
//!
//! It does not know any game. Games describe their state as a [`Schema`] of
//! integer fields and their input as one byte per tick.
//!
//! Every decoder of untrusted bytes returns a [`DecodeError`] instead of
//! panicking, and checks each length against a limit before allocating.
//! PROTOCOL.md at the repository root documents every byte.

mod bits;
pub mod bus;
pub mod codec;
pub mod control;
pub mod datagram;
mod error;
mod ids;
pub mod results;
pub mod snapshot;
pub mod token;
mod varint;

pub use error::DecodeError;
pub use ids::{MatchId, PlayerId, Seat, Tick};
pub use snapshot::{FieldSpec, Prediction, Schema, SchemaError, Snapshot};

/// Version of the wire protocol. Both peers must speak the same one; the
/// handshake refuses a mismatch with [`control::RefuseReason::VersionMismatch`].
/// Version 2 added the match time limit (the token's `time_limit_s`, the
/// `TimeLimit` end reason).
pub const PROTOCOL_VERSION: u16 = 2;

/// ALPN protocol id of rally's QUIC transport. It names the framing, not the
/// protocol version: the hello preamble (PROTOCOL.md 4.2) never changes, so it
/// stays `rally/1` and a peer of another version is refused in-band with
/// `VersionMismatch` rather than by a failed TLS handshake.
pub const ALPN: &[u8] = b"rally/1";

/// Largest datagram either side sends. quinn reported 1162 bytes of datagram
/// room on loopback; 1100 leaves margin for path MTU variation.
pub const MAX_DATAGRAM: usize = 1100;

/// One player's input for one tick. Its meaning belongs to the game (Pong: paddle intent).
pub type Input = u8;
