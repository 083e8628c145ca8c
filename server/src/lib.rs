//! The rally match shard: runs many matches of one game in one ECS world at a
//! fixed tick and serves their players over QUIC, optionally raw UDP, and an
//! in-memory link for clients in the same process.
//!
//! [`shard::Shard`] is the sans-IO core (seats, tokens, jitter buffers,
//! snapshots, results); [`quic`] is the IO driver around it (endpoint,
//! connection tasks, the tick loop, drain); [`udp`] feeds the same loop from
//! raw UDP and [`memory`] from in-process channels; [`ops`] serves metrics and health.
//! The shard never names the game: it is generic over [`rally_sim::game::Game`].

mod input;
pub mod memory;
mod nonce;
pub mod ops;
pub mod quic;
pub mod shard;
pub mod tls;
pub mod udp;

pub use shard::{ConnId, Shard, ShardConfig, ShardEvent, ShardStats, Transmit};
