//! Channel ids: `public:<name>`, `match:<match id>` and `dm:<low>:<high>`.
//! Parsing accepts only the canonical spelling, so one channel has one id.

use crate::error::LobbyError;

/// Longest public channel name.
pub const MAX_PUBLIC_NAME_LEN: usize = 32;

/// A parsed, canonical channel id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChannelRef {
    /// A public channel anyone may join, by lowercase name.
    Public(String),
    /// The channel of one match; only its players are members.
    Match(u64),
    /// The direct channel between two players (`low < high`).
    Direct {
        /// The smaller player id.
        low: u64,
        /// The larger player id.
        high: u64,
    },
}

impl ChannelRef {
    /// The public channel `name` (1 to 32 of `[a-z0-9_-]`, case-insensitive).
    pub fn public(name: &str) -> Result<Self, LobbyError> {
        let n_chars = name.chars().count();
        if !(1..=MAX_PUBLIC_NAME_LEN).contains(&n_chars) {
            return Err(LobbyError::invalid(
                "public_name",
                format!("must be 1 to {MAX_PUBLIC_NAME_LEN} characters (got {n_chars})"),
            ));
        }
        if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
            return Err(LobbyError::invalid(
                "public_name",
                format!("may only contain letters, digits, '_' and '-' (found {bad:?})"),
            ));
        }
        Ok(Self::Public(name.to_ascii_lowercase()))
    }

    /// The direct channel between `a` and `b`, the same whichever order they come in.
    pub fn direct(a: u64, b: u64) -> Result<Self, LobbyError> {
        if a == 0 || b == 0 {
            return Err(LobbyError::invalid("direct_with", "player id 0 is not a player"));
        }
        if a == b {
            return Err(LobbyError::invalid("direct_with", "a direct channel needs another player, not yourself"));
        }
        Ok(Self::Direct { low: a.min(b), high: a.max(b) })
    }

    /// Parses a channel id as [`ChannelRef::id`] writes it.
    pub fn parse(channel_id: &str) -> Result<Self, LobbyError> {
        let malformed = || {
            LobbyError::invalid(
                "channel_id",
                format!(
                    "{:?} is not a channel id (public:<name>, match:<id> or dm:<id>:<id>, as Chat.Join returns them)",
                    truncate(channel_id, 80)
                ),
            )
        };
        if channel_id.is_empty() {
            return Err(LobbyError::invalid("channel_id", "is empty"));
        }
        if channel_id.len() > 64 {
            return Err(malformed());
        }
        let parsed = if let Some(name) = channel_id.strip_prefix("public:") {
            Self::public(name).map_err(|_| malformed())?
        } else if let Some(id) = channel_id.strip_prefix("match:") {
            Self::Match(id.parse().map_err(|_| malformed())?)
        } else if let Some(pair) = channel_id.strip_prefix("dm:") {
            let (a, b) = pair.split_once(':').ok_or_else(malformed)?;
            Self::direct(a.parse().map_err(|_| malformed())?, b.parse().map_err(|_| malformed())?)
                .map_err(|_| malformed())?
        } else {
            return Err(malformed());
        };
        if parsed.id() != channel_id {
            return Err(malformed());
        }
        Ok(parsed)
    }

    /// The canonical id string.
    pub fn id(&self) -> String {
        match self {
            Self::Public(name) => format!("public:{name}"),
            Self::Match(match_id) => format!("match:{match_id}"),
            Self::Direct { low, high } => format!("dm:{low}:{high}"),
        }
    }

    /// The kind as stored in `chat_channels.kind`.
    pub(crate) fn kind_str(&self) -> &'static str {
        match self {
            Self::Public(_) => "public",
            Self::Match(_) => "match",
            Self::Direct { .. } => "direct",
        }
    }

    /// The name shown to `viewer`: the public name, the match id, or the other player's id.
    pub fn display_name(&self, viewer: u64) -> String {
        match self {
            Self::Public(name) => name.clone(),
            Self::Match(match_id) => match_id.to_string(),
            Self::Direct { low, high } => (if *low == viewer { *high } else { *low }).to_string(),
        }
    }

    /// In a direct channel, the player other than `me`.
    pub fn other_player(&self, me: u64) -> Option<u64> {
        match self {
            Self::Direct { low, high } if *low == me => Some(*high),
            Self::Direct { low, high } if *high == me => Some(*low),
            _ => None,
        }
    }
}

/// A channel as a Join left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinedChannel {
    /// The channel.
    pub(crate) channel: ChannelRef,
    /// Its newest message's id (0 when there is none yet).
    pub(crate) last_message_id: u64,
}

/// At most `max_chars` characters of `text`, for error messages.
pub(crate) fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((idx, _)) => &text[..idx],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_only_canonical_spellings_parse() {
        for channel in [
            ChannelRef::public("Lobby").expect("public"),
            ChannelRef::Match(42),
            ChannelRef::direct(9, 3).expect("direct"),
        ] {
            assert_eq!(ChannelRef::parse(&channel.id()).expect("parses"), channel);
        }
        assert_eq!(ChannelRef::direct(9, 3).expect("direct").id(), "dm:3:9");
        assert_eq!(ChannelRef::public("Lobby").expect("public").id(), "public:lobby");
        for bad in [
            "",
            "lobby",
            "public:",
            "public:Lobby",
            "public:a b",
            "match:",
            "match:007",
            "match:-1",
            "match:1;DROP TABLE chat_messages",
            "dm:9:3",
            "dm:3:3",
            "dm:0:3",
            "dm:3",
            "dm:3:9:1",
            "dm:+3:9",
        ] {
            assert!(ChannelRef::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(ChannelRef::parse(&"x".repeat(10_000)).is_err());
    }

    #[test]
    fn direct_channels_name_the_other_player() {
        let channel = ChannelRef::direct(5, 2).expect("direct");
        assert_eq!(channel.other_player(5), Some(2));
        assert_eq!(channel.other_player(2), Some(5));
        assert_eq!(channel.other_player(7), None);
        assert_eq!(channel.display_name(2), "5");
    }
}
