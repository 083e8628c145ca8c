//! Chat moderation: what a message may say (the text rules of `text.rs`, the
//! word filter), how fast a player may send, who blocks whom, who is muted,
//! who may mute, and reports. Owns `chat_blocks`, `chat_mutes`,
//! `chat_moderators` and `chat_reports`.
//!
//! [`Moderation`] decides; the store asks it before a message is stored and
//! when a subscriber's message is delivered.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use sqlx::Row as _;

use super::ChatConfig;
use super::channel::{ChannelRef, truncate};
use super::filter::WordFilter;
use super::message::ChatUser;
use super::text::check_text;
use crate::db::{Db, db_id, now_ms, with_pool};
use crate::error::LobbyError;
use crate::limits::{LobbyLimitsConfig, SharedLimiter};
use crate::replicas::RedisLink;

/// Longest report or mute reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// A stored report of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatReport {
    /// The report's id.
    pub id: i64,
    /// Who reported.
    pub reporter_id: u64,
    /// The reported message's channel.
    pub channel_id: String,
    /// The reported message.
    pub message_id: u64,
    /// The reporter's words.
    pub reason: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// Chat's rules and the state behind them.
#[derive(Debug)]
pub(super) struct Moderation {
    db: Db,
    max_message_chars: usize,
    max_mute: Duration,
    word_filter: WordFilter,
    send_limiter: SharedLimiter<u64>,
    /// Who each player blocks, loaded on first use; every load and change
    /// happens under `blocks_write`, so the cache never goes stale here, and
    /// a change on another replica arrives over the relay and drops the entry.
    blocks: RwLock<HashMap<u64, Arc<HashSet<u64>>>>,
    blocks_write: tokio::sync::Mutex<()>,
}

impl Moderation {
    pub(super) fn new(db: Db, config: &ChatConfig, limits: &LobbyLimitsConfig, redis: Option<&RedisLink>) -> Self {
        Self {
            db,
            max_message_chars: config.max_message_chars,
            max_mute: config.max_mute,
            word_filter: config.word_filter.clone(),
            send_limiter: SharedLimiter::new(
                "this account's chat messages",
                "chat-send",
                limits.chat_send_per_account,
                redis,
            ),
            blocks: RwLock::new(HashMap::new()),
            blocks_write: tokio::sync::Mutex::new(()),
        }
    }

    /// Checks a message body (not blank, within the length limit, no control
    /// characters) and returns it with filtered words masked.
    pub(super) fn screen_body(&self, body: &str) -> Result<String, LobbyError> {
        check_text("body", body, self.max_message_chars, true)?;
        Ok(self.word_filter.mask(body).into_owned())
    }

    /// Whether `sender` may send to `channel` now: not muted, neither side of
    /// a direct channel blocking the other, and within the send rate limit
    /// (checked last, so a refused send costs no token).
    pub(super) async fn check_send(&self, sender: u64, channel: &ChannelRef) -> Result<(), LobbyError> {
        self.check_not_muted(sender).await?;
        if let Some(other) = channel.other_player(sender) {
            if self.block_set(sender).await?.contains(&other) {
                return Err(LobbyError::PermissionDenied(format!(
                    "you blocked player {other}; Chat.Unblock them to message them"
                )));
            }
            if self.block_set(other).await?.contains(&sender) {
                return Err(LobbyError::PermissionDenied(format!(
                    "player {other} does not accept direct messages from you; the message was not sent"
                )));
            }
        }
        self.send_limiter.check(&sender).await
    }

    /// Refuses a send from a muted player, saying until when.
    async fn check_not_muted(&self, player: u64) -> Result<(), LobbyError> {
        let until: Option<i64> = with_pool!(&self.db, |pool| {
            let row = sqlx::query("SELECT until_ms FROM chat_mutes WHERE player_id = $1")
                .bind(db_id(player))
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|row| row.try_get::<i64, _>("until_ms")).transpose()?)
        })?;
        let now = now_ms();
        match until {
            Some(until) if until > now => Err(LobbyError::PermissionDenied(format!(
                "you are muted by a moderator until {until} (Unix ms, {} s from now)",
                (until - now + 999) / 1000
            ))),
            _ => Ok(()),
        }
    }

    /// Drops `blocker`'s cached blocks (they changed on another replica).
    pub(super) fn forget_blocks(&self, blocker: u64) {
        self.blocks.write().unwrap_or_else(PoisonError::into_inner).remove(&blocker);
    }

    /// Drops every cached block list (changes may have been missed).
    pub(super) fn forget_all_blocks(&self) {
        self.blocks.write().unwrap_or_else(PoisonError::into_inner).clear();
    }

    fn cached_blocks(&self, blocker: u64) -> Option<Arc<HashSet<u64>>> {
        self.blocks.read().unwrap_or_else(PoisonError::into_inner).get(&blocker).cloned()
    }

    /// Who `blocker` blocks (cached).
    pub(super) async fn block_set(&self, blocker: u64) -> Result<Arc<HashSet<u64>>, LobbyError> {
        if let Some(set) = self.cached_blocks(blocker) {
            return Ok(set);
        }
        let _writer = self.blocks_write.lock().await;
        if let Some(set) = self.cached_blocks(blocker) {
            return Ok(set);
        }
        self.load_blocks(blocker).await
    }

    /// Reads `blocker`'s blocks from the database into the cache. Callers hold `blocks_write`.
    async fn load_blocks(&self, blocker: u64) -> Result<Arc<HashSet<u64>>, LobbyError> {
        let blocked: HashSet<u64> = with_pool!(&self.db, |pool| {
            let rows = sqlx::query("SELECT blocked_id FROM chat_blocks WHERE blocker_id = $1")
                .bind(db_id(blocker))
                .fetch_all(pool)
                .await?;
            let mut blocked = HashSet::with_capacity(rows.len());
            for row in rows {
                blocked.insert(row.try_get::<i64, _>("blocked_id")? as u64);
            }
            Ok(blocked)
        })?;
        let blocked = Arc::new(blocked);
        self.blocks.write().unwrap_or_else(PoisonError::into_inner).insert(blocker, blocked.clone());
        Ok(blocked)
    }

    /// Blocks (or unblocks) `player_id` for `user`.
    pub(super) async fn set_blocked(&self, user: &ChatUser, player_id: u64, blocked: bool) -> Result<(), LobbyError> {
        if player_id == 0 {
            return Err(LobbyError::invalid("player_id", "is required"));
        }
        if player_id == user.id {
            return Err(LobbyError::invalid("player_id", "is your own id; you cannot block yourself"));
        }
        let _writer = self.blocks_write.lock().await;
        with_pool!(&self.db, |pool| {
            if blocked {
                sqlx::query(
                    "INSERT INTO chat_blocks (blocker_id, blocked_id, created_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(db_id(user.id))
                .bind(db_id(player_id))
                .bind(now_ms())
                .execute(pool)
                .await?;
            } else {
                sqlx::query("DELETE FROM chat_blocks WHERE blocker_id = $1 AND blocked_id = $2")
                    .bind(db_id(user.id))
                    .bind(db_id(player_id))
                    .execute(pool)
                    .await?;
            }
            Ok(())
        })?;
        self.load_blocks(user.id).await?;
        Ok(())
    }

    /// Grants or revokes the moderator role for `player_id`.
    pub(super) async fn set_moderator(&self, player_id: u64, moderator: bool) -> Result<(), LobbyError> {
        with_pool!(&self.db, |pool| {
            if moderator {
                sqlx::query(
                    "INSERT INTO chat_moderators (player_id, granted_at_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(db_id(player_id))
                .bind(now_ms())
                .execute(pool)
                .await?;
            } else {
                sqlx::query("DELETE FROM chat_moderators WHERE player_id = $1")
                    .bind(db_id(player_id))
                    .execute(pool)
                    .await?;
            }
            Ok(())
        })
    }

    /// Whether `user` holds the moderator role in the database (granted with
    /// `rally admin grant moderator`); the name in their token plays no part.
    async fn is_moderator(&self, user: &ChatUser) -> Result<bool, LobbyError> {
        with_pool!(&self.db, |pool| {
            let row = sqlx::query("SELECT player_id FROM chat_moderators WHERE player_id = $1")
                .bind(db_id(user.id))
                .fetch_optional(pool)
                .await?;
            Ok(row.is_some())
        })
    }

    async fn require_moderator(&self, user: &ChatUser, what: &str) -> Result<(), LobbyError> {
        if self.is_moderator(user).await? {
            Ok(())
        } else {
            Err(LobbyError::PermissionDenied(format!("only moderators may {what}")))
        }
    }

    /// `moderator` mutes `player_id` for `duration`; returns when the mute ends (Unix ms).
    pub(super) async fn mute(
        &self,
        moderator: &ChatUser,
        player_id: u64,
        duration: Duration,
        reason: &str,
    ) -> Result<i64, LobbyError> {
        self.require_moderator(moderator, "mute players").await?;
        if player_id == 0 {
            return Err(LobbyError::invalid("player_id", "is required"));
        }
        if duration.is_zero() || duration > self.max_mute {
            return Err(LobbyError::invalid(
                "duration_ms",
                format!("must be 1 to {} ms (got {})", self.max_mute.as_millis(), duration.as_millis()),
            ));
        }
        check_text("reason", reason, MAX_REASON_CHARS, false)?;
        let until = now_ms().saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX));
        with_pool!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO chat_mutes (player_id, until_ms, muted_by, reason) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (player_id) DO UPDATE SET until_ms = excluded.until_ms, \
                 muted_by = excluded.muted_by, reason = excluded.reason",
            )
            .bind(db_id(player_id))
            .bind(until)
            .bind(db_id(moderator.id))
            .bind(reason)
            .execute(pool)
            .await?;
            Ok(())
        })?;
        tracing::info!(moderator = moderator.id, player = player_id, until_ms = until, "chat mute");
        Ok(until)
    }

    /// `moderator` lifts `player_id`'s mute.
    pub(super) async fn unmute(&self, moderator: &ChatUser, player_id: u64) -> Result<(), LobbyError> {
        self.require_moderator(moderator, "unmute players").await?;
        if player_id == 0 {
            return Err(LobbyError::invalid("player_id", "is required"));
        }
        with_pool!(&self.db, |pool| {
            sqlx::query("DELETE FROM chat_mutes WHERE player_id = $1").bind(db_id(player_id)).execute(pool).await?;
            Ok(())
        })
    }

    /// Checks a report's reason before the store checks the reporter's access.
    pub(super) fn check_report_reason(&self, reason: &str) -> Result<(), LobbyError> {
        check_text("reason", reason, MAX_REASON_CHARS, true)
    }

    /// Stores `reporter`'s report of message `message_id` in `channel`, whose
    /// newest id is `last_message_id`; false when they had reported it before.
    pub(super) async fn report(
        &self,
        reporter: &ChatUser,
        channel: &ChannelRef,
        last_message_id: u64,
        message_id: u64,
        reason: &str,
    ) -> Result<bool, LobbyError> {
        let id = channel.id();
        if message_id == 0 || message_id > last_message_id {
            return Err(LobbyError::NotFound(format!(
                "no message {message_id} in {} (its ids run from 1 to {last_message_id})",
                truncate(&id, 64)
            )));
        }
        with_pool!(&self.db, |pool| {
            let inserted = sqlx::query(
                "INSERT INTO chat_reports (reporter_id, channel_id, message_id, reason, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(db_id(reporter.id))
            .bind(&id)
            .bind(db_id(message_id))
            .bind(reason)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected();
            Ok(inserted == 1)
        })
    }

    /// The newest `limit` reports, newest first.
    pub(super) async fn reports(&self, limit: u32) -> Result<Vec<ChatReport>, LobbyError> {
        with_pool!(&self.db, |pool| {
            let rows = sqlx::query(
                "SELECT id, reporter_id, channel_id, message_id, reason, created_at_ms FROM chat_reports \
                 ORDER BY id DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            let mut reports = Vec::with_capacity(rows.len());
            for row in rows {
                reports.push(ChatReport {
                    id: row.try_get("id")?,
                    reporter_id: row.try_get::<i64, _>("reporter_id")? as u64,
                    channel_id: row.try_get("channel_id")?,
                    message_id: row.try_get::<i64, _>("message_id")? as u64,
                    reason: row.try_get("reason")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                });
            }
            Ok(reports)
        })
    }
}
