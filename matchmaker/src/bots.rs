//! The bot-fill hook. A mode with `bot_fill_after_ms` lets a ticket that has
//! waited that long play against bots in its empty seats, if a [`BotFill`] is
//! installed (the bot crate provides one). The matchmaker asks it for bot
//! player ids, reserves the match as usual, mints each bot seat a connect
//! token, and hands the seat to [`BotFill::seat_assigned`] to go and play.

use rally_protocol::{MatchId, PlayerId, Seat};

/// One bot seat of a matched match: everything a bot needs to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BotSeat {
    /// The match.
    pub match_id: MatchId,
    /// The game mode.
    pub mode: String,
    /// The bot's player id (from [`BotFill::bot_players`]).
    pub player_id: PlayerId,
    /// Its seat.
    pub seat: Seat,
    /// Its side.
    pub side: u8,
    /// The shard's name.
    pub shard_name: String,
    /// The shard's QUIC address.
    pub shard_address: String,
    /// SHA-256 of the shard's certificate (hex).
    pub certificate_sha256: String,
    /// The connect token for the seat.
    pub connect_token: Vec<u8>,
    /// When the token expires, Unix ms.
    pub token_expires_at_ms: u64,
}

/// Fills empty seats with bots.
pub trait BotFill: Send + Sync + std::fmt::Debug + 'static {
    /// `n` bot player ids for a match of `mode` whose players are rated about
    /// `rating`, or `None` when no bot can play now (the tickets keep waiting).
    fn bot_players(&self, mode: &str, n: usize, rating: f64) -> Option<Vec<PlayerId>>;
    /// A bot seat was assigned: connect a bot with its token.
    fn seat_assigned(&self, seat: BotSeat);
    /// The name the match's roster shows for bot `player`.
    fn display_name(&self, player: PlayerId) -> String {
        format!("house-bot-{}", player.0)
    }
}
