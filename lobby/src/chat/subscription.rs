//! One Subscribe stream: stored messages after the client's id, then live
//! ones, in id order, with no gap and no duplicate.
//!
//! The stream subscribes to the channel's broadcast *before* it reads where the
//! backlog ends, so a message stored in between arrives on the broadcast and
//! is dropped there by id if the replay already had it. A broadcast that ran
//! ahead of a slow reader (`Lagged`) or an id that jumps is filled in from the
//! database, which holds every message before it is published. Messages of
//! other replicas arrive over the relay in any interleaving, which the same
//! rules put in order; a [`LiveItem::Resync`] (the relay reconnected, so
//! pub/sub may have dropped some) refills from the database too.

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::Instrument as _;

use super::channel::ChannelRef;
use super::message::{ChatMessage, ChatUser};
use super::store::{ChatStore, LiveItem};
use crate::error::LobbyError;
use crate::presence::PresenceGuard;

/// Messages read from the database per query while catching up.
const REFILL_PAGE: u32 = 256;

/// What a Subscribe stream yields.
pub(crate) type SubscribeItem = Result<ChatMessage, LobbyError>;

fn shutting_down() -> LobbyError {
    LobbyError::Unavailable(
        "the lobby is shutting down; subscribe again with after_id set to the last message id you received".into(),
    )
}

/// Why a subscription ended.
enum Stop {
    /// The client went away; nothing to tell it.
    ClientGone,
    /// End the stream with this error.
    Failed(LobbyError),
}

struct Subscription {
    store: ChatStore,
    viewer: u64,
    channel_id: String,
    /// The newest id delivered or skipped (blocked sender) so far.
    last_seen: u64,
    live: broadcast::Receiver<LiveItem>,
    tx: mpsc::Sender<SubscribeItem>,
    closing: watch::Receiver<bool>,
    /// Keeps the viewer online while the stream is open.
    _presence: PresenceGuard,
}

impl ChatStore {
    /// Starts a subscription task, in the caller's span, and returns the
    /// receiving end of its stream.
    pub(crate) async fn subscribe(
        &self,
        user: &ChatUser,
        channel: &ChannelRef,
        after_id: Option<u64>,
    ) -> Result<mpsc::Receiver<SubscribeItem>, LobbyError> {
        let closing = self.inner.closing.subscribe();
        if *closing.borrow() {
            return Err(LobbyError::Unavailable("the lobby is shutting down; subscribe again shortly".into()));
        }
        self.access(channel, user.id).await?;
        // Load the viewer's blocks now, not on the stream's first message.
        self.inner.moderation.block_set(user.id).await?;
        let id = channel.id();
        // Order matters: live first, then where the stored messages end.
        let live = self.inner.live_receiver(&id);
        let last_message_id =
            self.last_message_id(&id).await?.ok_or_else(|| LobbyError::NotFound(format!("no channel {id}")))?;
        // A cursor past the newest message (a client that kept an id from a
        // database since reset, or a guess) starts at the newest: only new
        // messages, as when it is unset.
        let start = after_id.map_or(last_message_id, |after| after.min(last_message_id));
        let (tx, rx) = mpsc::channel(self.inner.config.subscriber_buffer.max(1));
        let subscription = Subscription {
            store: self.clone(),
            viewer: user.id,
            channel_id: id,
            last_seen: start,
            live,
            tx,
            closing,
            _presence: self.inner.presence.hold(user.id),
        };
        tokio::spawn(subscription.run().instrument(tracing::Span::current()));
        Ok(rx)
    }
}

impl Subscription {
    async fn run(mut self) {
        if let Err(Stop::Failed(status)) = self.pump().await {
            let _ = self.tx.send(Err(status)).await;
        }
    }

    async fn pump(&mut self) -> Result<(), Stop> {
        self.refill(u64::MAX).await?;
        loop {
            let received = tokio::select! {
                () = self.tx.closed() => return Err(Stop::ClientGone),
                _ = self.closing.changed() => return Err(Stop::Failed(shutting_down())),
                received = self.live.recv() => received,
            };
            match received {
                Ok(LiveItem::Resync) => {
                    self.store.count_resync();
                    self.refill(u64::MAX).await?;
                }
                Ok(LiveItem::Message(message)) => {
                    let id = message.message_id;
                    if id <= self.last_seen {
                        continue;
                    }
                    if id > self.last_seen + 1 {
                        self.store.count_gap();
                        self.refill(id).await?;
                    }
                    self.deliver(&message).await?;
                }
                Err(RecvError::Lagged(_)) => {
                    self.store.count_lag();
                    self.refill(u64::MAX).await?;
                }
                Err(RecvError::Closed) => return Err(Stop::Failed(shutting_down())),
            }
        }
    }

    /// Sends `message` unless its sender is blocked by the viewer.
    async fn deliver(&mut self, message: &ChatMessage) -> Result<(), Stop> {
        self.last_seen = message.message_id;
        let blocked = self.store.inner.moderation.block_set(self.viewer).await.map_err(Stop::Failed)?;
        if blocked.contains(&message.sender_id) {
            return Ok(());
        }
        tokio::select! {
            sent = self.tx.send(Ok(message.clone())) => sent.map_err(|_| Stop::ClientGone),
            _ = self.closing.changed() => Err(Stop::Failed(shutting_down())),
        }
    }

    /// Delivers the stored messages after `last_seen` and before `before`.
    async fn refill(&mut self, before: u64) -> Result<(), Stop> {
        loop {
            let page = self
                .store
                .messages_between(&self.channel_id, self.last_seen, before, REFILL_PAGE)
                .await
                .map_err(Stop::Failed)?;
            let complete = page.len() < REFILL_PAGE as usize;
            for message in &page {
                self.deliver(message).await?;
            }
            if complete {
                return Ok(());
            }
        }
    }
}
