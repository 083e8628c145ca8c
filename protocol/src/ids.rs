//! Identifiers shared by every role. All are plain integers on the wire.

use serde::{Deserialize, Serialize};

/// A simulation tick number. At 60 Hz a `u32` lasts over two years.
pub type Tick = u32;

/// A seat index inside one match, `0..n_seats`.
pub type Seat = u8;

/// Identifies a match across the whole deployment (minted by the matchmaker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MatchId(pub u64);

/// Identifies a player account across the whole deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PlayerId(pub u64);

impl std::fmt::Display for MatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "m{:016x}", self.0)
    }
}

impl std::fmt::Display for PlayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}
