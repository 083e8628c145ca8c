//! The in-memory link: a client in the same process as the shard, no sockets.
//!
//! Control bytes and datagrams travel over channels between a client driver
//! (`rally_client::memory`) and a connection task in the shard
//! (`rally_server::memory`, which implements [`MemoryDial`]). Everything
//! above the link is the same session as over QUIC and raw UDP, so the
//! conformance suite runs on it too, and a game can embed a shard for offline
//! play without a network stack.
//!
//! Optionally the link is conditioned in-process ([`ConditionedLinks`]):
//! datagrams get the full [`LinkConditions`] (loss, jitter, duplication,
//! reordering); control bytes only the base latency, since the link is
//! reliable and ordered for them as a QUIC stream is. The links take the time
//! from their caller, so they run under tokio's paused clock as under the
//! stepper's.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::conditioner::{Link, LinkConditions};

/// Client → shard over an in-memory link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientToShard {
    /// Control-stream bytes: length-prefixed frames, the hello first.
    Control(Vec<u8>),
    /// One game datagram.
    Datagram(Vec<u8>),
}

/// Shard → client over an in-memory link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardToClient {
    /// One length-prefixed control frame.
    Frame(Vec<u8>),
    /// One game datagram.
    Datagram(Vec<u8>),
    /// The shard closed the connection; nothing follows.
    Closed,
}

/// The client's ends of one in-memory connection. Dropping `to_shard` is the
/// client hanging up.
#[derive(Debug)]
pub struct MemoryEnds {
    /// What the client sends.
    pub to_shard: mpsc::UnboundedSender<ClientToShard>,
    /// What the shard sends.
    pub from_shard: mpsc::UnboundedReceiver<ShardToClient>,
}

/// Why a dial failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The shard behind the dialer has stopped.
    #[error("the shard has stopped")]
    ShardStopped,
}

/// Opens in-memory connections to a shard; the shard's handle implements it.
pub trait MemoryDial: Send + Sync + fmt::Debug {
    /// A new connection, not yet greeted.
    fn dial(&self) -> Result<MemoryEnds, DialError>;
}

/// An in-memory transport: where to dial, and the network to pretend.
#[derive(Clone, Debug)]
pub struct MemoryTransport {
    /// The shard's dialer.
    pub dialer: Arc<dyn MemoryDial>,
    /// Conditions applied in both directions.
    pub conditions: LinkConditions,
    /// Seeds the conditioner (each connection adds its own offset).
    pub seed: u64,
}

impl MemoryTransport {
    /// A perfect in-memory link to the shard behind `dialer`.
    pub fn new(dialer: Arc<dyn MemoryDial>) -> Self {
        Self { dialer, conditions: LinkConditions::perfect(), seed: 0 }
    }

    /// The same link under `conditions`.
    pub fn conditioned(mut self, conditions: LinkConditions, seed: u64) -> Self {
        self.conditions = conditions;
        self.seed = seed;
        self
    }
}

/// The four conditioned directions of one in-memory connection.
#[derive(Debug)]
pub struct ConditionedLinks {
    /// Client → shard datagrams.
    pub up: Link<Vec<u8>>,
    /// Shard → client datagrams.
    pub down: Link<Vec<u8>>,
    /// Client → shard control bytes (latency only).
    pub control_up: Link<Vec<u8>>,
    /// Shard → client control frames (latency only).
    pub control_down: Link<Vec<u8>>,
}

impl ConditionedLinks {
    /// Links under `conditions`, their randomness seeded by `seed`.
    pub fn new(conditions: LinkConditions, seed: u64) -> Self {
        let reliable = LinkConditions { latency: conditions.latency, ..LinkConditions::perfect() };
        Self {
            up: Link::new(conditions, seed.wrapping_mul(4)),
            down: Link::new(conditions, seed.wrapping_mul(4).wrapping_add(1)),
            control_up: Link::new(reliable, seed.wrapping_mul(4).wrapping_add(2)),
            control_down: Link::new(reliable, seed.wrapping_mul(4).wrapping_add(3)),
        }
    }

    /// When the next packet in any direction is due.
    pub fn next_delivery(&self) -> Option<Instant> {
        [
            self.up.next_delivery(),
            self.down.next_delivery(),
            self.control_up.next_delivery(),
            self.control_down.next_delivery(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Takes what the shard sent at `now` into the downlinks; false once the shard closed.
    pub fn push_down(&mut self, now: Instant, message: Option<ShardToClient>) -> bool {
        match message {
            Some(ShardToClient::Frame(bytes)) => self.control_down.push(now, bytes),
            Some(ShardToClient::Datagram(bytes)) => self.down.push(now, bytes),
            Some(ShardToClient::Closed) | None => return false,
        }
        true
    }

    /// Hands the shard whatever the uplinks deliver by `now`; false once the shard is gone.
    pub fn deliver_up(&mut self, now: Instant, to_shard: &mpsc::UnboundedSender<ClientToShard>) -> bool {
        let mut open = true;
        while let Some(bytes) = self.control_up.poll(now) {
            open &= to_shard.send(ClientToShard::Control(bytes)).is_ok();
        }
        while let Some(datagram) = self.up.poll(now) {
            open &= to_shard.send(ClientToShard::Datagram(datagram)).is_ok();
        }
        open
    }
}
