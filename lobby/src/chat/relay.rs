//! The chat relay: live messages across lobby replicas over Redis pub/sub.
//!
//! A stored message goes on this process's per-channel broadcast at once and
//! into the relay's queue; the publisher task sends it on one pub/sub channel
//! (`<prefix>:chat:live`) that every replica's subscriber task reads, feeding
//! its own broadcasts. The database stays the source of truth: subscriptions
//! drop duplicates by id and refill gaps from it. Pub/sub is at-most-once, so
//! whenever the subscriber task (re)connects, every live subscription of the
//! process resyncs from the database ([`LiveItem::Resync`]); and a publisher
//! that could not publish a message tells the others to resync its channel
//! once Redis answers again. Neither failure fails a Send: it is stored,
//! counted (`rally_lobby_chat_relay_publish_failures_total`) and logged.
//!
//! The relay also carries "this player's blocks changed", so every replica's
//! block cache follows a Block made on another (and a reconnect clears it).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;

use super::message::ChatMessage;
use super::store::ChatInner;
use crate::replicas::RedisLink;

/// Messages queued for publishing; past that a channel is marked for resync instead.
const QUEUE: usize = 4096;
/// The subscriber's reconnect backoff: doubling from the first to the second.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));
/// How often the subscriber pings its connection (a silent one is replaced).
const PING_EVERY: Duration = Duration::from_secs(5);

/// A stored message on the relay: the relay's own wire type (Redis is not
/// the gRPC API, and chat's protobuf types stay in `service.rs`).
#[derive(Clone, PartialEq, prost::Message)]
struct RelayMessage {
    #[prost(string, tag = "1")]
    channel_id: String,
    #[prost(uint64, tag = "2")]
    message_id: u64,
    #[prost(uint64, tag = "3")]
    sender_id: u64,
    #[prost(string, tag = "4")]
    sender_name: String,
    #[prost(string, tag = "5")]
    body: String,
    #[prost(int64, tag = "6")]
    sent_at_ms: i64,
}

impl From<ChatMessage> for RelayMessage {
    fn from(message: ChatMessage) -> Self {
        Self {
            channel_id: message.channel_id,
            message_id: message.message_id,
            sender_id: message.sender_id,
            sender_name: message.sender_name,
            body: message.body,
            sent_at_ms: message.sent_at_ms,
        }
    }
}

impl From<RelayMessage> for ChatMessage {
    fn from(message: RelayMessage) -> Self {
        Self {
            channel_id: message.channel_id,
            message_id: message.message_id,
            sender_id: message.sender_id,
            sender_name: message.sender_name,
            body: message.body,
            sent_at_ms: message.sent_at_ms,
        }
    }
}

/// What replicas tell each other; one protobuf message per pub/sub payload.
/// Fields are only ever added, so replicas of different versions agree.
#[derive(Clone, PartialEq, prost::Message)]
struct RelayEnvelope {
    /// The publishing replica (its own messages are ignored on the way back).
    #[prost(string, tag = "1")]
    origin: String,
    /// A stored message.
    #[prost(message, optional, tag = "2")]
    message: Option<RelayMessage>,
    /// A channel whose subscribers should refill from the database.
    #[prost(string, tag = "3")]
    resync_channel: String,
    /// A player whose block list changed.
    #[prost(uint64, tag = "4")]
    blocks_changed: u64,
}

/// What the store hands the publisher.
#[derive(Debug)]
pub(super) enum Outgoing {
    Message(ChatMessage),
    BlocksChanged(u64),
}

/// The store's end of the relay.
#[derive(Debug)]
pub(super) struct Relay {
    queue: mpsc::Sender<Outgoing>,
    /// Channels whose messages may not have reached the other replicas.
    unsent: Arc<Mutex<BTreeSet<String>>>,
    failures: Arc<AtomicU64>,
}

/// The relay's tasks, started once the store they feed exists.
#[derive(Debug)]
pub(super) struct RelayTasks {
    link: RedisLink,
    rx: mpsc::Receiver<Outgoing>,
    unsent: Arc<Mutex<BTreeSet<String>>>,
    failures: Arc<AtomicU64>,
}

impl RelayTasks {
    /// Starts the publisher and subscriber tasks; they stop when `closing` turns true.
    pub(super) fn start(self, inner: Weak<ChatInner>, closing: &watch::Sender<bool>) {
        tokio::spawn(publish_loop(self.link.clone(), self.rx, self.unsent, self.failures, closing.subscribe()));
        tokio::spawn(subscribe_loop(self.link, inner, closing.subscribe()));
    }
}

impl Relay {
    /// The relay over `link` and its tasks (not started).
    pub(super) fn new(link: RedisLink) -> (Self, RelayTasks) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let unsent = Arc::new(Mutex::new(BTreeSet::new()));
        let failures = Arc::new(AtomicU64::new(0));
        (Self { queue, unsent: unsent.clone(), failures: failures.clone() }, RelayTasks { link, rx, unsent, failures })
    }

    /// Messages (or resync notices) that could not be published.
    pub(super) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Queues `message` for the other replicas (never waits).
    pub(super) fn publish(&self, message: &ChatMessage) {
        if self.queue.try_send(Outgoing::Message(message.clone())).is_err() {
            count_failure(&self.failures);
            self.unsent.lock().unwrap_or_else(PoisonError::into_inner).insert(message.channel_id.clone());
        }
    }

    /// Tells the other replicas to reload `blocker`'s blocks.
    pub(super) fn blocks_changed(&self, blocker: u64) {
        let _ = self.queue.try_send(Outgoing::BlocksChanged(blocker));
    }
}

/// Resolves once `closing` turns true.
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

fn count_failure(failures: &AtomicU64) {
    failures.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("rally_lobby_chat_relay_publish_failures_total").increment(1);
}

fn channel_name(link: &RedisLink) -> String {
    link.key("chat:live")
}

async fn publish_envelope(link: &RedisLink, envelope: &RelayEnvelope) -> Result<(), String> {
    let mut conn = link.conn();
    let payload = envelope.encode_to_vec();
    link.run(redis::cmd("PUBLISH").arg(channel_name(link)).arg(payload).query_async::<i64>(&mut conn)).await?;
    Ok(())
}

async fn publish_loop(
    link: RedisLink,
    mut rx: mpsc::Receiver<Outgoing>,
    unsent: Arc<Mutex<BTreeSet<String>>>,
    failures: Arc<AtomicU64>,
    mut closing: watch::Receiver<bool>,
) {
    let origin = link.replica_id().to_owned();
    let mut failing = false;
    loop {
        let next = tokio::select! {
            _ = closed(&mut closing) => return,
            next = tokio::time::timeout(Duration::from_secs(1), rx.recv()) => next,
        };
        let envelope = match next {
            Ok(None) => return,
            Ok(Some(Outgoing::Message(message))) => Some(RelayEnvelope {
                origin: origin.clone(),
                message: Some(message.into()),
                ..RelayEnvelope::default()
            }),
            Ok(Some(Outgoing::BlocksChanged(blocker))) => {
                Some(RelayEnvelope { origin: origin.clone(), blocks_changed: blocker, ..RelayEnvelope::default() })
            }
            Err(_) => None,
        };
        let mut published = false;
        if let Some(envelope) = envelope {
            match publish_envelope(&link, &envelope).await {
                Ok(()) => published = true,
                Err(err) => {
                    count_failure(&failures);
                    if let Some(message) = &envelope.message {
                        unsent.lock().unwrap_or_else(PoisonError::into_inner).insert(message.channel_id.clone());
                    }
                    if !failing {
                        failing = true;
                        tracing::error!(
                            error = %err,
                            "chat relay: cannot publish to Redis; messages are stored and reach this replica's \
                             subscribers, other replicas' subscribers get them once Redis is back"
                        );
                    }
                    continue;
                }
            }
        }
        // Whatever could not be published: the others refill those channels.
        let pending: Vec<String> = unsent.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect();
        for channel_id in pending {
            let resync =
                RelayEnvelope { origin: origin.clone(), resync_channel: channel_id.clone(), ..Default::default() };
            if publish_envelope(&link, &resync).await.is_err() {
                break;
            }
            unsent.lock().unwrap_or_else(PoisonError::into_inner).remove(&channel_id);
        }
        if failing && published && unsent.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
            failing = false;
            tracing::info!("chat relay: publishing to Redis again; other replicas resynced the channels they missed");
        }
    }
}

/// Connects a pub/sub connection and subscribes to the chat channel.
async fn connect(link: &RedisLink) -> Result<redis::aio::PubSub, String> {
    let connecting = async {
        let mut pubsub = link.client().get_async_pubsub().await?;
        pubsub.subscribe(channel_name(link)).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(Duration::from_secs(2), connecting).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("no answer within 2 s".to_owned()),
    }
}

async fn subscribe_loop(link: RedisLink, inner: Weak<ChatInner>, mut closing: watch::Receiver<bool>) {
    let mut backoff = BACKOFF.0;
    let mut failing = false;
    loop {
        match connect(&link).await {
            Ok(pubsub) => {
                backoff = BACKOFF.0;
                let Some(store) = inner.upgrade() else { return };
                if failing {
                    tracing::info!(
                        "chat relay: subscribed to Redis again; live subscriptions resync from the database"
                    );
                }
                // Anything published before this point was missed: refill.
                store.relay_connected();
                drop(store);
                let (mut sink, mut stream) = pubsub.split();
                let mut ping = tokio::time::interval(PING_EVERY);
                ping.tick().await;
                loop {
                    tokio::select! {
                        _ = closed(&mut closing) => return,
                        _ = ping.tick() => {
                            let pinged = tokio::time::timeout(Duration::from_secs(2), sink.ping::<redis::Value>()).await;
                            if !matches!(pinged, Ok(Ok(_))) {
                                break;
                            }
                        }
                        received = stream.next() => {
                            let Some(received) = received else { break };
                            let Some(store) = inner.upgrade() else { return };
                            receive(&store, link.replica_id(), received.get_payload_bytes());
                        }
                    }
                }
                tracing::warn!("chat relay: lost the Redis pub/sub connection; reconnecting");
                failing = true;
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(error = %err, "chat relay: cannot subscribe to Redis; retrying with backoff");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = closed(&mut closing) => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// Applies one payload from another replica; bad bytes are dropped and counted.
fn receive(store: &ChatInner, own_id: &str, payload: &[u8]) {
    let envelope = match RelayEnvelope::decode(payload) {
        Ok(envelope) => envelope,
        Err(err) => {
            metrics::counter!("rally_lobby_chat_relay_bad_payloads_total").increment(1);
            tracing::debug!(error = %err, "chat relay: dropped an undecodable payload");
            return;
        }
    };
    if envelope.origin == own_id {
        return;
    }
    if let Some(message) = envelope.message {
        store.publish_local(message.into());
    }
    if !envelope.resync_channel.is_empty() {
        store.resync_channel(&envelope.resync_channel);
    }
    if envelope.blocks_changed != 0 {
        store.moderation.forget_blocks(envelope.blocks_changed);
    }
}
