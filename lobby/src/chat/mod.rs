//! `rally.chat.v1.Chat`: public, match and direct channels; history; resumable
//! subscriptions; moderation (length limit, send rate limit, blocks, mutes by
//! moderators, a word filter, reports).
//!
//! Owns the `chat_*` tables and reads no other service's: a player is the id
//! and name in their access token. Messages are stored (in a transaction that
//! also allocates the channel's next id) before Send returns and before they
//! are fanned out over a per-channel broadcast in each lobby process. Several
//! lobby processes may serve one database: with Redis configured
//! ([`crate::replicas`]) the `relay` publishes every stored message on Redis
//! pub/sub and feeds the other processes' broadcasts, and after its pub/sub
//! connection (re)connects every live subscription refills from the database,
//! so no acknowledged message is missed however Redis fails. Without Redis
//! the fan-out is in-process, and one lobby process must serve the database.
//!
//! A Send with an idempotency key claims it (`chat_send_keys`) in the
//! message's own transaction, so a retry on any replica returns the first
//! message. Presence ([`crate::presence`]) counts Subscribe streams and Chat
//! calls; the send limit is shared across replicas ([`crate::limits`]).
//!
//! Choices worth knowing:
//! - A direct message to someone who blocked you (or whom you blocked) is
//!   refused with `PERMISSION_DENIED` and not stored, so the sender knows it
//!   was not delivered.
//! - In public and match channels a blocked player's messages are stored and
//!   seen by everyone else; only the blocker's History and Subscribe skip them.
//! - Moderators are the players granted the role in the database (`rally
//!   admin grant moderator`, [`crate::roles`], or [`ChatStore::set_moderator`]),
//!   never a username: whoever registers a name gets no role with it.
//!
//! Modules: `channel` (channel ids), `message` (the domain values the store
//! speaks), `store` (channels, members, messages, live fan-out), `relay`
//! (live fan-out across replicas over Redis), `moderation`
//! (text and rate limits, blocks, mutes, moderators, reports), `filter` (the
//! word filter moderation applies), `text` (the rules for bodies and reasons
//! that `chat.proto` states), `subscription` (one Subscribe stream) and
//! `service` (the gRPC boundary, the only one that sees protobuf types).

mod channel;
mod filter;
mod message;
mod moderation;
mod relay;
mod service;
mod store;
mod subscription;
mod text;

use std::time::Duration;

use crate::presence::PresenceConfig;

pub use channel::{ChannelRef, MAX_PUBLIC_NAME_LEN};
pub use filter::WordFilter;
pub use moderation::{ChatReport, MAX_REASON_CHARS};
pub use service::ChatService;
pub use store::{ChatStats, ChatStore, MAX_HISTORY_PAGE};

/// Chat settings. The send rate limit is
/// [`LobbyLimitsConfig::chat_send_per_account`](crate::limits::LobbyLimitsConfig::chat_send_per_account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    /// Longest message body, in characters.
    pub max_message_chars: usize,
    /// Words masked in message bodies.
    pub word_filter: WordFilter,
    /// Messages a channel's live broadcast holds for slow subscribers; one
    /// that falls further behind catches up from the database.
    pub broadcast_capacity: usize,
    /// Messages queued per subscriber stream before its reader waits.
    pub subscriber_buffer: usize,
    /// Longest mute a moderator may impose.
    pub max_mute: Duration,
    /// Who counts as online, and for how long a crashed replica's players linger.
    pub presence: PresenceConfig,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            max_message_chars: 500,
            word_filter: WordFilter::default(),
            broadcast_capacity: 1024,
            subscriber_buffer: 64,
            max_mute: Duration::from_secs(30 * 24 * 3600),
            presence: PresenceConfig::default(),
        }
    }
}
