//! [`ChatStore`]: chat's tables, access checks, moderation and the live
//! fan-out. The gRPC service and in-process callers (the matchmaker) share it.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sqlx::Row as _;
use tokio::sync::{broadcast, watch};

use super::ChatConfig;
use super::channel::{ChannelRef, truncate};
use crate::db::{Db, now_ms, with_pool, with_tx};
use crate::error::LobbyError;
use crate::limits::{Limiter, LobbyLimitsConfig};
use crate::proto::chat as pb;

/// Sends to channels hashing to the same stripe are serialized in-process, so
/// each channel's messages are published in id order.
const N_SEND_LOCKS: usize = 64;

/// Longest report or mute reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// The caller of a chat operation, as their access token names them.
#[derive(Debug, Clone)]
pub(crate) struct ChatUser {
    /// Player id (the token's subject).
    pub(crate) id: u64,
    /// Username at token issue time; shown as the sender's name.
    pub(crate) name: String,
}

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

/// Counters about the live fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChatStats {
    /// Times a subscriber fell behind its channel's broadcast and caught up from the database.
    pub lag_refills: u64,
    /// Times a subscriber saw an id jump on the broadcast and filled the gap from the database.
    pub gap_refills: u64,
}

/// Chat storage and fan-out. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChatStore {
    pub(super) inner: Arc<ChatInner>,
}

#[derive(Debug)]
pub(super) struct ChatInner {
    pub(super) db: Db,
    pub(super) config: ChatConfig,
    moderator_names: HashSet<String>,
    send_limiter: Limiter<u64>,
    send_locks: Box<[tokio::sync::Mutex<()>]>,
    live: Mutex<HashMap<String, broadcast::Sender<Arc<pb::ChatMessage>>>>,
    /// Who each player blocks, loaded on first use; every load and change
    /// happens under `blocks_write`, so the cache never goes stale.
    blocks: RwLock<HashMap<u64, Arc<HashSet<u64>>>>,
    blocks_write: tokio::sync::Mutex<()>,
    pub(super) closing: watch::Sender<bool>,
    lag_refills: AtomicU64,
    gap_refills: AtomicU64,
}

impl ChatInner {
    fn send_lock(&self, channel_id: &str) -> &tokio::sync::Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        channel_id.hash(&mut hasher);
        &self.send_locks[(hasher.finish() % self.send_locks.len() as u64) as usize]
    }

    /// A receiver of `channel_id`'s live messages from now on.
    pub(super) fn live_receiver(&self, channel_id: &str) -> broadcast::Receiver<Arc<pb::ChatMessage>> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        match live.get(channel_id) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(self.config.broadcast_capacity.max(1));
                live.insert(channel_id.to_owned(), sender);
                receiver
            }
        }
    }

    fn publish(&self, message: pb::ChatMessage) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = live.get(&message.channel_id) {
            if sender.receiver_count() == 0 {
                live.remove(&message.channel_id);
            } else {
                let _ = sender.send(Arc::new(message));
            }
        }
    }

    fn cached_blocks(&self, blocker: u64) -> Option<Arc<HashSet<u64>>> {
        self.blocks.read().unwrap_or_else(PoisonError::into_inner).get(&blocker).cloned()
    }
}

fn db_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// Checks free text: at most `max_chars`, not blank when `required`, and no
/// control characters but newline and tab (PostgreSQL refuses NUL in text).
fn check_text(field: &'static str, text: &str, max_chars: usize, required: bool) -> Result<(), LobbyError> {
    if required && text.trim().is_empty() {
        return Err(LobbyError::invalid(field, "is empty; write at least one visible character"));
    }
    let n_chars = text.chars().count();
    if n_chars > max_chars {
        return Err(LobbyError::invalid(field, format!("is {n_chars} characters; the limit is {max_chars}")));
    }
    if let Some(bad) = text.chars().find(|c| c.is_control() && *c != '\n' && *c != '\t') {
        return Err(LobbyError::invalid(
            field,
            format!("contains the control character {bad:?}; only newline and tab are allowed"),
        ));
    }
    Ok(())
}

impl ChatStore {
    pub(crate) fn new(db: Db, config: ChatConfig, limits: &LobbyLimitsConfig) -> Self {
        let moderator_names = config.moderators.iter().map(|name| name.trim().to_ascii_lowercase()).collect();
        Self {
            inner: Arc::new(ChatInner {
                db,
                moderator_names,
                send_limiter: Limiter::new("this account's chat messages", limits.chat_send_per_account),
                send_locks: (0..N_SEND_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
                live: Mutex::new(HashMap::new()),
                blocks: RwLock::new(HashMap::new()),
                blocks_write: tokio::sync::Mutex::new(()),
                closing: watch::Sender::new(false),
                lag_refills: AtomicU64::new(0),
                gap_refills: AtomicU64::new(0),
                config,
            }),
        }
    }

    /// The id of match `match_id`'s channel (`match:<id>`).
    pub fn match_channel_id(match_id: u64) -> String {
        ChannelRef::Match(match_id).id()
    }

    /// Creates match `match_id`'s channel with `players` as its only members
    /// and returns its id. Idempotent: calling again adds any new players.
    /// The matchmaker calls this in-process when it forms a match.
    pub async fn create_match_channel(&self, match_id: u64, players: &[u64]) -> Result<String, LobbyError> {
        if let Some(zero) = players.iter().find(|player| **player == 0) {
            return Err(LobbyError::invalid("players", format!("player id {zero} is not a player")));
        }
        let channel = ChannelRef::Match(match_id);
        self.ensure_channel(&channel, players).await?;
        Ok(channel.id())
    }

    /// Grants or revokes the moderator role (Mute, Unmute) for `player_id`.
    pub async fn set_moderator(&self, player_id: u64, moderator: bool) -> Result<(), LobbyError> {
        with_pool!(&self.inner.db, |pool| {
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

    /// The newest `limit` reports, newest first.
    pub async fn reports(&self, limit: u32) -> Result<Vec<ChatReport>, LobbyError> {
        with_pool!(&self.inner.db, |pool| {
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

    /// The live fan-out's counters.
    pub fn stats(&self) -> ChatStats {
        ChatStats {
            lag_refills: self.inner.lag_refills.load(Ordering::Relaxed),
            gap_refills: self.inner.gap_refills.load(Ordering::Relaxed),
        }
    }

    /// Ends every open Subscribe stream (with UNAVAILABLE, so clients resume)
    /// and refuses new ones. [`LobbyHandle::shutdown`](crate::LobbyHandle::shutdown) calls it.
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    pub(super) fn count_lag(&self) {
        self.inner.lag_refills.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_gap(&self) {
        self.inner.gap_refills.fetch_add(1, Ordering::Relaxed);
    }

    /// Creates `channel` if needed, adds `members`, and returns its newest message id.
    async fn ensure_channel(&self, channel: &ChannelRef, members: &[u64]) -> Result<u64, LobbyError> {
        let id = channel.id();
        let name = match channel {
            ChannelRef::Public(name) => name.clone(),
            ChannelRef::Match(match_id) => match_id.to_string(),
            ChannelRef::Direct { low, high } => format!("{low}:{high}"),
        };
        let now = now_ms();
        with_tx!(&self.inner.db, |tx| {
            sqlx::query(
                "INSERT INTO chat_channels (channel_id, kind, name, last_message_id, created_at_ms) \
                 VALUES ($1, $2, $3, 0, $4) ON CONFLICT DO NOTHING",
            )
            .bind(&id)
            .bind(channel.kind_str())
            .bind(&name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for member in members {
                sqlx::query(
                    "INSERT INTO chat_members (channel_id, player_id, joined_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&id)
                .bind(db_id(*member))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let row = sqlx::query("SELECT last_message_id FROM chat_channels WHERE channel_id = $1")
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
            Ok(row.try_get::<i64, _>("last_message_id")? as u64)
        })
    }

    /// The newest message id of `channel_id`, or None when there is no such channel.
    pub(super) async fn last_message_id(&self, channel_id: &str) -> Result<Option<u64>, LobbyError> {
        with_pool!(&self.inner.db, |pool| {
            let row = sqlx::query("SELECT last_message_id FROM chat_channels WHERE channel_id = $1")
                .bind(channel_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|row| row.try_get::<i64, _>("last_message_id")).transpose()?.map(|id| id as u64))
        })
    }

    /// Checks that `channel` exists and `player` is a member; returns its newest message id.
    pub(super) async fn access(&self, channel: &ChannelRef, player: u64) -> Result<u64, LobbyError> {
        let id = channel.id();
        let row: Option<(i64, i64)> = with_pool!(&self.inner.db, |pool| {
            let row = sqlx::query(
                "SELECT c.last_message_id, (SELECT COUNT(*) FROM chat_members m \
                 WHERE m.channel_id = c.channel_id AND m.player_id = $2) AS member \
                 FROM chat_channels c WHERE c.channel_id = $1",
            )
            .bind(&id)
            .bind(db_id(player))
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                Some(row) => Some((row.try_get("last_message_id")?, row.try_get("member")?)),
                None => None,
            })
        })?;
        let Some((last_message_id, member)) = row else {
            let hint = match channel {
                ChannelRef::Public(name) => format!("join it with Chat.Join {{ public_name: {name:?} }}"),
                ChannelRef::Match(_) => "match channels exist once the match is formed".to_owned(),
                ChannelRef::Direct { .. } => "open it with Chat.Join { direct_with: <player id> }".to_owned(),
            };
            return Err(LobbyError::NotFound(format!("no channel {id}; {hint}")));
        };
        if member == 0 {
            return Err(LobbyError::PermissionDenied(match channel {
                ChannelRef::Public(_) => format!("you have not joined {id}; call Chat.Join first"),
                ChannelRef::Match(match_id) => format!("{id} is only for the players of match {match_id}"),
                ChannelRef::Direct { .. } => format!("{id} is a direct channel between two other players"),
            }));
        }
        Ok(last_message_id as u64)
    }

    pub(crate) async fn join(
        &self,
        user: &ChatUser,
        target: Option<pb::join_request::Target>,
    ) -> Result<pb::Channel, LobbyError> {
        use pb::join_request::Target;
        let channel = match target {
            None => {
                return Err(LobbyError::invalid("target", "set one of public_name, direct_with or channel_id"));
            }
            Some(Target::PublicName(name)) => ChannelRef::public(&name)?,
            Some(Target::DirectWith(other)) => ChannelRef::direct(user.id, other)?,
            Some(Target::ChannelId(id)) => ChannelRef::parse(&id)?,
        };
        let last_message_id = match &channel {
            ChannelRef::Public(_) => self.ensure_channel(&channel, &[user.id]).await?,
            ChannelRef::Direct { low, high } => {
                if channel.other_player(user.id).is_none() {
                    return Err(LobbyError::PermissionDenied(format!(
                        "{} is a direct channel between two other players",
                        channel.id()
                    )));
                }
                self.ensure_channel(&channel, &[*low, *high]).await?
            }
            ChannelRef::Match(_) => self.access(&channel, user.id).await?,
        };
        Ok(pb::Channel {
            channel_id: channel.id(),
            kind: channel.kind() as i32,
            name: channel.display_name(user.id),
            last_message_id,
        })
    }

    pub(crate) async fn leave(&self, user: &ChatUser, channel_id: &str) -> Result<(), LobbyError> {
        let channel = ChannelRef::parse(channel_id)?;
        if !matches!(channel, ChannelRef::Public(_)) {
            return Err(LobbyError::FailedPrecondition(format!(
                "{channel_id} is a match or direct channel, which cannot be left; Chat.Block a player to stop their messages"
            )));
        }
        if self.last_message_id(channel_id).await?.is_none() {
            return Err(LobbyError::NotFound(format!("no channel {channel_id}")));
        }
        with_pool!(&self.inner.db, |pool| {
            sqlx::query("DELETE FROM chat_members WHERE channel_id = $1 AND player_id = $2")
                .bind(channel_id)
                .bind(db_id(user.id))
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Refuses a send from a muted player, saying until when.
    async fn check_not_muted(&self, player: u64) -> Result<(), LobbyError> {
        let until: Option<i64> = with_pool!(&self.inner.db, |pool| {
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

    pub(crate) async fn send(
        &self,
        user: &ChatUser,
        channel_id: &str,
        body: &str,
    ) -> Result<pb::ChatMessage, LobbyError> {
        let channel = ChannelRef::parse(channel_id)?;
        check_text("body", body, self.inner.config.max_message_chars, true)?;
        let body = self.inner.config.word_filter.mask(body).into_owned();
        self.access(&channel, user.id).await?;
        self.check_not_muted(user.id).await?;
        if let Some(other) = channel.other_player(user.id) {
            if self.block_set(user.id).await?.contains(&other) {
                return Err(LobbyError::PermissionDenied(format!(
                    "you blocked player {other}; Chat.Unblock them to message them"
                )));
            }
            if self.block_set(other).await?.contains(&user.id) {
                return Err(LobbyError::PermissionDenied(format!(
                    "player {other} does not accept direct messages from you; the message was not sent"
                )));
            }
        }
        self.inner.send_limiter.check(&user.id)?;

        let id = channel.id();
        // Held until the message is published, so subscribers see ids in order.
        let _ordered = self.inner.send_lock(&id).lock().await;
        let sent_at_ms = now_ms();
        let message_id: i64 = with_tx!(&self.inner.db, |tx| {
            // The row lock (PostgreSQL) or the write lock (SQLite) taken here
            // serializes concurrent senders, so ids are gapless and increasing,
            // and an id is visible only once every smaller one is committed.
            let row = sqlx::query(
                "UPDATE chat_channels SET last_message_id = last_message_id + 1 WHERE channel_id = $1 \
                 RETURNING last_message_id",
            )
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(LobbyError::NotFound(format!("no channel {id}")));
            };
            let message_id: i64 = row.try_get("last_message_id")?;
            sqlx::query(
                "INSERT INTO chat_messages (channel_id, message_id, sender_id, sender_name, body, sent_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&id)
            .bind(message_id)
            .bind(db_id(user.id))
            .bind(&user.name)
            .bind(&body)
            .bind(sent_at_ms)
            .execute(&mut *tx)
            .await?;
            Ok(message_id)
        })?;
        let message = pb::ChatMessage {
            channel_id: id,
            message_id: message_id as u64,
            sender_id: user.id,
            sender_name: user.name.clone(),
            body,
            sent_at_ms,
        };
        self.inner.publish(message.clone());
        Ok(message)
    }

    /// Up to `limit` messages of `channel_id` with `after < id < before`, oldest first.
    pub(super) async fn messages_between(
        &self,
        channel_id: &str,
        after: u64,
        before: u64,
        limit: u32,
    ) -> Result<Vec<pb::ChatMessage>, LobbyError> {
        with_pool!(&self.inner.db, |pool| {
            let rows = sqlx::query(
                "SELECT message_id, sender_id, sender_name, body, sent_at_ms FROM chat_messages \
                 WHERE channel_id = $1 AND message_id > $2 AND message_id < $3 ORDER BY message_id ASC LIMIT $4",
            )
            .bind(channel_id)
            .bind(db_id(after))
            .bind(db_id(before))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            let mut messages = Vec::with_capacity(rows.len());
            for row in rows {
                messages.push(pb::ChatMessage {
                    channel_id: channel_id.to_owned(),
                    message_id: row.try_get::<i64, _>("message_id")? as u64,
                    sender_id: row.try_get::<i64, _>("sender_id")? as u64,
                    sender_name: row.try_get("sender_name")?,
                    body: row.try_get("body")?,
                    sent_at_ms: row.try_get("sent_at_ms")?,
                });
            }
            Ok(messages)
        })
    }

    pub(crate) async fn history(
        &self,
        user: &ChatUser,
        request: &pb::HistoryRequest,
    ) -> Result<pb::HistoryResponse, LobbyError> {
        let channel = ChannelRef::parse(&request.channel_id)?;
        let page_size = match request.page_size {
            0 => 50,
            1..=100 => i64::from(request.page_size),
            n => return Err(LobbyError::invalid("page_size", format!("must be at most 100 (got {n})"))),
        };
        let last_message_id = self.access(&channel, user.id).await?;
        if request.before_id > last_message_id + 1 {
            return Err(LobbyError::invalid(
                "before_id",
                format!(
                    "{} is past {}'s newest message ({last_message_id}); pass 0 or a next_before_id from a previous page",
                    request.before_id, request.channel_id
                ),
            ));
        }
        let before = if request.before_id == 0 { i64::MAX } else { db_id(request.before_id) };
        let id = channel.id();
        let mut messages: Vec<pb::ChatMessage> = with_pool!(&self.inner.db, |pool| {
            let rows = sqlx::query(
                "SELECT message_id, sender_id, sender_name, body, sent_at_ms FROM chat_messages \
                 WHERE channel_id = $1 AND message_id < $2 \
                 AND sender_id NOT IN (SELECT blocked_id FROM chat_blocks WHERE blocker_id = $3) \
                 ORDER BY message_id DESC LIMIT $4",
            )
            .bind(&id)
            .bind(before)
            .bind(db_id(user.id))
            .bind(page_size + 1)
            .fetch_all(pool)
            .await?;
            let mut messages = Vec::with_capacity(rows.len());
            for row in rows {
                messages.push(pb::ChatMessage {
                    channel_id: id.clone(),
                    message_id: row.try_get::<i64, _>("message_id")? as u64,
                    sender_id: row.try_get::<i64, _>("sender_id")? as u64,
                    sender_name: row.try_get("sender_name")?,
                    body: row.try_get("body")?,
                    sent_at_ms: row.try_get("sent_at_ms")?,
                });
            }
            Ok(messages)
        })?;
        let has_more = messages.len() as i64 > page_size;
        messages.truncate(page_size as usize);
        let next_before_id = match messages.last() {
            Some(oldest) if has_more => oldest.message_id,
            _ => 0,
        };
        Ok(pb::HistoryResponse { messages, next_before_id })
    }

    /// Who `blocker` blocks (cached).
    pub(super) async fn block_set(&self, blocker: u64) -> Result<Arc<HashSet<u64>>, LobbyError> {
        if let Some(set) = self.inner.cached_blocks(blocker) {
            return Ok(set);
        }
        let _writer = self.inner.blocks_write.lock().await;
        if let Some(set) = self.inner.cached_blocks(blocker) {
            return Ok(set);
        }
        self.load_blocks(blocker).await
    }

    /// Reads `blocker`'s blocks from the database into the cache. Callers hold `blocks_write`.
    async fn load_blocks(&self, blocker: u64) -> Result<Arc<HashSet<u64>>, LobbyError> {
        let blocked: HashSet<u64> = with_pool!(&self.inner.db, |pool| {
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
        self.inner.blocks.write().unwrap_or_else(PoisonError::into_inner).insert(blocker, blocked.clone());
        Ok(blocked)
    }

    pub(crate) async fn set_blocked(&self, user: &ChatUser, player_id: u64, blocked: bool) -> Result<(), LobbyError> {
        if player_id == 0 {
            return Err(LobbyError::invalid("player_id", "is required"));
        }
        if player_id == user.id {
            return Err(LobbyError::invalid("player_id", "is your own id; you cannot block yourself"));
        }
        let _writer = self.inner.blocks_write.lock().await;
        with_pool!(&self.inner.db, |pool| {
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

    async fn is_moderator(&self, user: &ChatUser) -> Result<bool, LobbyError> {
        if self.inner.moderator_names.contains(&user.name.to_ascii_lowercase()) {
            return Ok(true);
        }
        with_pool!(&self.inner.db, |pool| {
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

    pub(crate) async fn mute(&self, user: &ChatUser, request: &pb::MuteRequest) -> Result<i64, LobbyError> {
        self.require_moderator(user, "mute players").await?;
        if request.player_id == 0 {
            return Err(LobbyError::invalid("player_id", "is required"));
        }
        let max_ms = u64::try_from(self.inner.config.max_mute.as_millis()).unwrap_or(u64::MAX);
        if request.duration_ms == 0 || request.duration_ms > max_ms {
            return Err(LobbyError::invalid(
                "duration_ms",
                format!("must be 1 to {max_ms} ms (got {})", request.duration_ms),
            ));
        }
        check_text("reason", &request.reason, MAX_REASON_CHARS, false)?;
        let until = now_ms().saturating_add(db_id(request.duration_ms));
        with_pool!(&self.inner.db, |pool| {
            sqlx::query(
                "INSERT INTO chat_mutes (player_id, until_ms, muted_by, reason) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (player_id) DO UPDATE SET until_ms = excluded.until_ms, \
                 muted_by = excluded.muted_by, reason = excluded.reason",
            )
            .bind(db_id(request.player_id))
            .bind(until)
            .bind(db_id(user.id))
            .bind(&request.reason)
            .execute(pool)
            .await?;
            Ok(())
        })?;
        tracing::info!(moderator = user.id, player = request.player_id, until_ms = until, "chat mute");
        Ok(until)
    }

    pub(crate) async fn unmute(&self, user: &ChatUser, player_id: u64) -> Result<(), LobbyError> {
        self.require_moderator(user, "unmute players").await?;
        if player_id == 0 {
            return Err(LobbyError::invalid("player_id", "is required"));
        }
        with_pool!(&self.inner.db, |pool| {
            sqlx::query("DELETE FROM chat_mutes WHERE player_id = $1").bind(db_id(player_id)).execute(pool).await?;
            Ok(())
        })
    }

    pub(crate) async fn report(&self, user: &ChatUser, request: &pb::ReportRequest) -> Result<bool, LobbyError> {
        let channel = ChannelRef::parse(&request.channel_id)?;
        check_text("reason", &request.reason, MAX_REASON_CHARS, true)?;
        let last_message_id = self.access(&channel, user.id).await?;
        if request.message_id == 0 || request.message_id > last_message_id {
            return Err(LobbyError::NotFound(format!(
                "no message {} in {} (its ids run from 1 to {last_message_id})",
                request.message_id,
                truncate(&request.channel_id, 64)
            )));
        }
        let id = channel.id();
        with_pool!(&self.inner.db, |pool| {
            let inserted = sqlx::query(
                "INSERT INTO chat_reports (reporter_id, channel_id, message_id, reason, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(db_id(user.id))
            .bind(&id)
            .bind(db_id(request.message_id))
            .bind(&request.reason)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected();
            Ok(inserted == 1)
        })
    }
}
