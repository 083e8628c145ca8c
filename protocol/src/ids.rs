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

/// Decimal, as the matchmaker's API and the results bus print match ids, so one id
/// reads the same in a shard's refusal, a log line and an API response.
impl std::fmt::Display for MatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::fmt::Display for PlayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_ids_print_in_decimal_as_the_api_does() {
        assert_eq!(MatchId(300).to_string(), "300");
        assert_eq!(MatchId(u64::MAX).to_string(), "18446744073709551615");
    }
}
