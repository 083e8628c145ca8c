//! [`ChatStore`]: channels, membership, messages and the live fan-out, in
//! domain types ([`ChannelRef`], [`ChatMessage`]); moderation's rules live in
//! [`Moderation`], which the store asks before it stores a message. The gRPC
//! service and in-process callers (the matchmaker) share it.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::Row as _;
use tokio::sync::{broadcast, watch};

use super::ChatConfig;
use super::channel::{ChannelRef, JoinedChannel};
use super::message::{ChatMessage, ChatUser, HistoryPage};
use super::moderation::{ChatReport, Moderation};
use super::relay::Relay;
use crate::db::{Db, db_id, now_ms, with_pool, with_tx};
use crate::error::LobbyError;
use crate::idempotency::IdempotencyKey;
use crate::limits::LobbyLimitsConfig;
use crate::presence::Presence;
use crate::profile::ProfileStore;
use crate::replicas::RedisLink;

/// Largest History `page_size`.
pub const MAX_HISTORY_PAGE: u32 = 100;

/// Sends to channels hashing to the same stripe are serialized in-process, so
/// each channel's messages are published in id order.
const N_SEND_LOCKS: usize = 64;

/// Counters about the live fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChatStats {
    /// Times a subscriber fell behind its channel's broadcast and caught up from the database.
    pub lag_refills: u64,
    /// Times a subscriber saw an id jump on the broadcast and filled the gap from the database.
    pub gap_refills: u64,
    /// Times a subscriber refilled from the database because the relay
    /// (re)connected or another replica could not publish to its channel.
    pub resync_refills: u64,
    /// Times the relay's Redis pub/sub connection was (re)established.
    pub relay_connects: u64,
    /// Messages stored here that could not be published to the other
    /// replicas (they resync those channels once Redis answers).
    pub relay_publish_failures: u64,
}

/// What a channel's live broadcast carries.
#[derive(Debug, Clone)]
pub(super) enum LiveItem {
    /// A stored message.
    Message(Arc<ChatMessage>),
    /// Messages may have been missed: refill from the database.
    Resync,
}

/// Chat storage and fan-out. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChatStore {
    pub(super) inner: Arc<ChatInner>,
}

#[derive(Debug)]
pub(super) struct ChatInner {
    pub(super) db: Db,
    /// Asked whether a player named by id exists (Profile owns that).
    profiles: ProfileStore,
    pub(super) config: ChatConfig,
    pub(super) moderation: Moderation,
    send_locks: Box<[tokio::sync::Mutex<()>]>,
    live: Mutex<HashMap<String, broadcast::Sender<LiveItem>>>,
    /// Live delivery to other replicas (with Redis).
    relay: Option<Relay>,
    pub(super) presence: Presence,
    pub(super) closing: watch::Sender<bool>,
    lag_refills: AtomicU64,
    gap_refills: AtomicU64,
    pub(super) resync_refills: AtomicU64,
    relay_connects: AtomicU64,
}

impl ChatInner {
    fn send_lock(&self, channel_id: &str) -> &tokio::sync::Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        channel_id.hash(&mut hasher);
        &self.send_locks[(hasher.finish() % self.send_locks.len() as u64) as usize]
    }

    /// A receiver of `channel_id`'s live messages from now on.
    pub(super) fn live_receiver(&self, channel_id: &str) -> broadcast::Receiver<LiveItem> {
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

    /// Hands a message stored here to this process's subscribers and the other replicas'.
    fn publish(&self, message: ChatMessage) {
        if let Some(relay) = &self.relay {
            relay.publish(&message);
        }
        self.publish_local(message);
    }

    /// Hands `message` to this process's subscribers of its channel.
    pub(super) fn publish_local(&self, message: ChatMessage) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = live.get(&message.channel_id) {
            if sender.receiver_count() == 0 {
                live.remove(&message.channel_id);
            } else {
                let _ = sender.send(LiveItem::Message(Arc::new(message)));
            }
        }
    }

    /// Makes the subscribers of `channel_id` refill from the database.
    pub(super) fn resync_channel(&self, channel_id: &str) {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = live.get(channel_id) {
            let _ = sender.send(LiveItem::Resync);
        }
    }

    /// The relay (re)subscribed: whatever other replicas published meanwhile
    /// was missed, so every subscription refills and block caches reload.
    pub(super) fn relay_connected(&self) {
        self.relay_connects.fetch_add(1, Ordering::Relaxed);
        self.moderation.forget_all_blocks();
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        for sender in live.values() {
            let _ = sender.send(LiveItem::Resync);
        }
    }

    /// Tells the other replicas that `blocker`'s blocks changed.
    pub(super) fn blocks_changed(&self, blocker: u64) {
        if let Some(relay) = &self.relay {
            relay.blocks_changed(blocker);
        }
    }
}

/// The answer to a retried Send: the first message when the retry asks for
/// the same thing, FAILED_PRECONDITION when the key was used for another.
fn same_send(
    key: &IdempotencyKey,
    first: ChatMessage,
    channel_id: &str,
    body: &str,
) -> Result<ChatMessage, LobbyError> {
    if first.channel_id != channel_id || first.body != body {
        return Err(LobbyError::FailedPrecondition(format!(
            "idempotency key {key} was used for a different message (message {} in {}); choose a new key \
             for a new message",
            first.message_id, first.channel_id
        )));
    }
    Ok(first)
}

/// Reads a `chat_messages` row of `channel_id`.
fn message_from_row<R>(channel_id: &str, row: &R) -> Result<ChatMessage, sqlx::Error>
where
    R: sqlx::Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ChatMessage {
        channel_id: channel_id.to_owned(),
        message_id: row.try_get::<i64, _>("message_id")? as u64,
        sender_id: row.try_get::<i64, _>("sender_id")? as u64,
        sender_name: row.try_get("sender_name")?,
        body: row.try_get("body")?,
        sent_at_ms: row.try_get("sent_at_ms")?,
    })
}

impl ChatStore {
    /// Chat on `db`; with `redis`, live delivery, presence and the send
    /// limit span every replica on that Redis.
    pub(crate) fn new(
        db: Db,
        profiles: ProfileStore,
        config: ChatConfig,
        limits: &LobbyLimitsConfig,
        redis: Option<&RedisLink>,
    ) -> Self {
        let (relay, relay_tasks) = redis.map(|link| Relay::new(link.clone())).unzip();
        let inner = Arc::new(ChatInner {
            profiles,
            moderation: Moderation::new(db.clone(), &config, limits, redis),
            db,
            send_locks: (0..N_SEND_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            live: Mutex::new(HashMap::new()),
            relay,
            presence: Presence::new(config.presence, redis.cloned()),
            closing: watch::Sender::new(false),
            lag_refills: AtomicU64::new(0),
            gap_refills: AtomicU64::new(0),
            resync_refills: AtomicU64::new(0),
            relay_connects: AtomicU64::new(0),
            config,
        });
        if let Some(tasks) = relay_tasks {
            tasks.start(Arc::downgrade(&inner), &inner.closing);
        }
        Self { inner }
    }

    /// Who is online (see [`Presence`]).
    pub fn presence(&self) -> &Presence {
        &self.inner.presence
    }

    /// The id of match `match_id`'s channel (`match:<id>`).
    pub fn match_channel_id(match_id: u64) -> String {
        ChannelRef::Match(match_id).id()
    }

    /// Creates match `match_id`'s channel with `players` as its only members
    /// and returns its id. Idempotent: calling again adds any new players.
    /// The lobby's follower of the matchmaker's match-formed events calls it
    /// when a match forms (`rally_matchmaker::lobby_results::follow_matches`).
    pub async fn create_match_channel(&self, match_id: u64, players: &[u64]) -> Result<String, LobbyError> {
        if let Some(zero) = players.iter().find(|player| **player == 0) {
            return Err(LobbyError::invalid("players", format!("player id {zero} is not a player")));
        }
        let channel = ChannelRef::Match(match_id);
        self.ensure_channel(&channel, players).await?;
        Ok(channel.id())
    }

    /// Marks match `match_id`'s channel ended (read-only: Send is refused,
    /// History still answers), creating it with `players` first if its
    /// match-formed event never arrived. Idempotent; the first end time stays.
    pub async fn end_match_channel(&self, match_id: u64, players: &[u64]) -> Result<(), LobbyError> {
        let players: Vec<u64> = players.iter().copied().filter(|player| *player != 0).collect();
        let channel = ChannelRef::Match(match_id);
        self.ensure_channel(&channel, &players).await?;
        let id = channel.id();
        let now = now_ms();
        with_pool!(&self.inner.db, |pool| {
            sqlx::query("UPDATE chat_channels SET ended_at_ms = $2 WHERE channel_id = $1 AND ended_at_ms IS NULL")
                .bind(&id)
                .bind(now)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Whether match `match_id`'s channel has ended (false when it does not exist).
    pub async fn match_channel_ended(&self, match_id: u64) -> Result<bool, LobbyError> {
        let id = ChannelRef::Match(match_id).id();
        with_pool!(&self.inner.db, |pool| {
            let row = sqlx::query("SELECT ended_at_ms FROM chat_channels WHERE channel_id = $1")
                .bind(&id)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(row) => row.try_get::<Option<i64>, _>("ended_at_ms")?.is_some(),
                None => false,
            })
        })
    }

    /// Grants or revokes the moderator role (Mute, Unmute) for `player_id`.
    pub async fn set_moderator(&self, player_id: u64, moderator: bool) -> Result<(), LobbyError> {
        self.inner.moderation.set_moderator(player_id, moderator).await
    }

    /// The newest `limit` reports, newest first.
    pub async fn reports(&self, limit: u32) -> Result<Vec<ChatReport>, LobbyError> {
        self.inner.moderation.reports(limit).await
    }

    /// The live fan-out's counters.
    pub fn stats(&self) -> ChatStats {
        ChatStats {
            lag_refills: self.inner.lag_refills.load(Ordering::Relaxed),
            gap_refills: self.inner.gap_refills.load(Ordering::Relaxed),
            resync_refills: self.inner.resync_refills.load(Ordering::Relaxed),
            relay_connects: self.inner.relay_connects.load(Ordering::Relaxed),
            relay_publish_failures: self.inner.relay.as_ref().map_or(0, Relay::failures),
        }
    }

    /// Ends every open Subscribe stream (with UNAVAILABLE, so clients resume)
    /// and refuses new ones, stops the relay, and withdraws this process's
    /// players from presence. [`LobbyHandle::shutdown`](crate::LobbyHandle::shutdown) calls it.
    pub async fn close(&self) {
        self.inner.closing.send_replace(true);
        self.inner.presence.withdraw().await;
    }

    pub(super) fn count_lag(&self) {
        self.inner.lag_refills.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_resync(&self) {
        self.inner.resync_refills.fetch_add(1, Ordering::Relaxed);
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

    /// Joins a public channel (creating it), opens a direct channel with the
    /// other player, or checks access to a match channel.
    pub(crate) async fn join(&self, user: &ChatUser, channel: ChannelRef) -> Result<JoinedChannel, LobbyError> {
        let last_message_id = match &channel {
            ChannelRef::Public(_) => self.ensure_channel(&channel, &[user.id]).await?,
            ChannelRef::Direct { low, high } => {
                let Some(other) = channel.other_player(user.id) else {
                    return Err(LobbyError::PermissionDenied(format!(
                        "{} is a direct channel between two other players",
                        channel.id()
                    )));
                };
                // Never for an id nobody holds yet: whoever registers it
                // later would find messages sent before they existed.
                self.inner.profiles.require_player(other).await?;
                self.ensure_channel(&channel, &[*low, *high]).await?
            }
            ChannelRef::Match(_) => self.access(&channel, user.id).await?,
        };
        Ok(JoinedChannel { channel, last_message_id })
    }

    /// Leaves a public channel.
    pub(crate) async fn leave(&self, user: &ChatUser, channel: &ChannelRef) -> Result<(), LobbyError> {
        let channel_id = channel.id();
        if !matches!(channel, ChannelRef::Public(_)) {
            return Err(LobbyError::FailedPrecondition(format!(
                "{channel_id} is a match or direct channel, which cannot be left; Chat.Block a player to stop their messages"
            )));
        }
        if self.last_message_id(&channel_id).await?.is_none() {
            return Err(LobbyError::NotFound(format!("no channel {channel_id}")));
        }
        with_pool!(&self.inner.db, |pool| {
            sqlx::query("DELETE FROM chat_members WHERE channel_id = $1 AND player_id = $2")
                .bind(&channel_id)
                .bind(db_id(user.id))
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Stores `body` (after moderation) as `user`'s next message in `channel`
    /// and publishes it to live subscribers. With `key`, a retry returns the
    /// message that key first stored (see `chat.proto`).
    pub(crate) async fn send(
        &self,
        user: &ChatUser,
        channel: &ChannelRef,
        body: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<ChatMessage, LobbyError> {
        let moderation = &self.inner.moderation;
        let body = moderation.screen_body(body)?;
        let id = channel.id();
        if let Some(key) = key
            && let Some(first) = self.keyed_message(user.id, key).await?
        {
            return same_send(key, first, &id, &body);
        }
        // A match's channel is read-only once the match has ended (a retry
        // of a send stored before that still gets its message, above).
        if let ChannelRef::Match(match_id) = channel
            && self.match_channel_ended(*match_id).await?
        {
            return Err(LobbyError::FailedPrecondition(format!(
                "match {match_id} has ended; its channel is read-only"
            )));
        }
        self.access(channel, user.id).await?;
        moderation.check_send(user.id, channel).await?;

        // Held until the message is published, so subscribers see ids in order.
        let _ordered = self.inner.send_lock(&id).lock().await;
        let sent_at_ms = now_ms();
        let message_id: Option<i64> = with_tx!(&self.inner.db, |tx| {
            if let Some(key) = key {
                // Claimed first: a concurrent retry (on any replica) waits
                // here for this transaction and then finds the key taken.
                let claimed = sqlx::query(
                    "INSERT INTO chat_send_keys (sender_id, idempotency_key, channel_id, message_id) \
                     VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
                )
                .bind(db_id(user.id))
                .bind(key.as_str())
                .bind(&id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if claimed == 0 {
                    return Ok(None);
                }
            }
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
            if let Some(key) = key {
                sqlx::query("UPDATE chat_send_keys SET message_id = $3 WHERE sender_id = $1 AND idempotency_key = $2")
                    .bind(db_id(user.id))
                    .bind(key.as_str())
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(Some(message_id))
        })?;
        let Some(message_id) = message_id else {
            // Lost a race with a retry of the same key: answer what it stored.
            let key = key.ok_or_else(|| LobbyError::Internal("a keyless send found its key taken".into()))?;
            let first = self.keyed_message(user.id, key).await?.ok_or_else(|| {
                LobbyError::Internal(format!("idempotency key {key} is claimed but names no message"))
            })?;
            return same_send(key, first, &id, &body);
        };
        let message = ChatMessage {
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

    /// The message `sender` first stored with `key`, if any.
    async fn keyed_message(&self, sender: u64, key: &IdempotencyKey) -> Result<Option<ChatMessage>, LobbyError> {
        with_pool!(&self.inner.db, |pool| {
            let row = sqlx::query(
                "SELECT k.channel_id, m.message_id, m.sender_id, m.sender_name, m.body, m.sent_at_ms \
                 FROM chat_send_keys k JOIN chat_messages m \
                 ON m.channel_id = k.channel_id AND m.message_id = k.message_id \
                 WHERE k.sender_id = $1 AND k.idempotency_key = $2",
            )
            .bind(db_id(sender))
            .bind(key.as_str())
            .fetch_optional(pool)
            .await?;
            match row {
                Some(row) => {
                    let channel_id: String = row.try_get("channel_id")?;
                    Ok(Some(message_from_row(&channel_id, &row)?))
                }
                None => Ok(None),
            }
        })
    }

    /// Up to `limit` messages of `channel_id` with `after < id < before`, oldest first.
    pub(super) async fn messages_between(
        &self,
        channel_id: &str,
        after: u64,
        before: u64,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, LobbyError> {
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
            for row in &rows {
                messages.push(message_from_row(channel_id, row)?);
            }
            Ok(messages)
        })
    }

    /// A page of `channel`'s messages older than `before_id` (0: from the
    /// newest), newest first, without those of players `user` blocks.
    /// `page_size` 0 means 50; at most [`MAX_HISTORY_PAGE`].
    pub(crate) async fn history(
        &self,
        user: &ChatUser,
        channel: &ChannelRef,
        before_id: u64,
        page_size: u32,
    ) -> Result<HistoryPage, LobbyError> {
        let page_size = match page_size {
            0 => 50,
            1..=MAX_HISTORY_PAGE => i64::from(page_size),
            n => {
                return Err(LobbyError::invalid("page_size", format!("must be at most {MAX_HISTORY_PAGE} (got {n})")));
            }
        };
        let id = channel.id();
        self.access(channel, user.id).await?;
        let before = if before_id == 0 { i64::MAX } else { db_id(before_id) };
        let mut messages: Vec<ChatMessage> = with_pool!(&self.inner.db, |pool| {
            // Blocks are moderation's table, but they are filtered here, in
            // the query, so that a page is full even when many are skipped.
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
            for row in &rows {
                messages.push(message_from_row(&id, row)?);
            }
            Ok(messages)
        })?;
        let has_more = messages.len() as i64 > page_size;
        messages.truncate(page_size as usize);
        let next_before_id = match messages.last() {
            Some(oldest) if has_more => oldest.message_id,
            _ => 0,
        };
        Ok(HistoryPage { messages, next_before_id })
    }

    /// `NOT_FOUND` for a non-zero id no account holds (0 is left to the
    /// callee's own "is required" answer).
    async fn require_other_player(&self, player_id: u64) -> Result<(), LobbyError> {
        if player_id == 0 { Ok(()) } else { self.inner.profiles.require_player(player_id).await }
    }

    /// Blocks (or unblocks) `player_id` for `user`.
    pub(crate) async fn set_blocked(&self, user: &ChatUser, player_id: u64, blocked: bool) -> Result<(), LobbyError> {
        self.require_other_player(player_id).await?;
        self.inner.moderation.set_blocked(user, player_id, blocked).await?;
        self.inner.blocks_changed(user.id);
        Ok(())
    }

    /// A moderator mutes `player_id` for `duration`; returns when it ends (Unix ms).
    pub(crate) async fn mute(
        &self,
        moderator: &ChatUser,
        player_id: u64,
        duration: Duration,
        reason: &str,
    ) -> Result<i64, LobbyError> {
        self.require_other_player(player_id).await?;
        self.inner.moderation.mute(moderator, player_id, duration, reason).await
    }

    /// A moderator lifts `player_id`'s mute.
    pub(crate) async fn unmute(&self, moderator: &ChatUser, player_id: u64) -> Result<(), LobbyError> {
        self.require_other_player(player_id).await?;
        self.inner.moderation.unmute(moderator, player_id).await
    }

    /// Reports message `message_id` of `channel`, which `user` must be able to
    /// read; false when they had reported it before.
    pub(crate) async fn report(
        &self,
        user: &ChatUser,
        channel: &ChannelRef,
        message_id: u64,
        reason: &str,
    ) -> Result<bool, LobbyError> {
        let moderation = &self.inner.moderation;
        moderation.check_report_reason(reason)?;
        let last_message_id = self.access(channel, user.id).await?;
        moderation.report(user, channel, last_message_id, message_id, reason).await
    }
}
