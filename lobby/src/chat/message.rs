//! Chat's domain values: who is asking, a stored message and a page of
//! history. The store and the live fan-out speak these; `service.rs` turns
//! them into protobuf messages at the gRPC boundary.

/// The caller of a chat operation, as their access token names them.
#[derive(Debug, Clone)]
pub(crate) struct ChatUser {
    /// Player id (the token's subject).
    pub(crate) id: u64,
    /// Username at token issue time; shown as the sender's name.
    pub(crate) name: String,
}

/// A stored message, as History returns it and Subscribe streams it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChatMessage {
    /// The canonical id of its channel.
    pub(crate) channel_id: String,
    /// Its id within the channel: 1, 2, 3, … in storage order.
    pub(crate) message_id: u64,
    /// Who sent it.
    pub(crate) sender_id: u64,
    /// The sender's username when they sent it.
    pub(crate) sender_name: String,
    /// The body after the word filter.
    pub(crate) body: String,
    /// Unix milliseconds when it was stored.
    pub(crate) sent_at_ms: i64,
}

/// One page of a channel's history, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryPage {
    /// The messages, newest first.
    pub(crate) messages: Vec<ChatMessage>,
    /// The `before_id` of the next (older) page; 0 when there is none.
    pub(crate) next_before_id: u64,
}
