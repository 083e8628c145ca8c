//! The rally match shard: runs many matches of one game in one ECS world at a
//! fixed tick and serves their players over QUIC.
//!
//! [`shard::Shard`] is the sans-IO core (seats, tokens, jitter buffers,
//! snapshots, results); [`quic`] is the IO driver around it (endpoint,
//! connection tasks, the tick loop, drain); [`ops`] serves metrics and health.
//! The shard never names the game: it is generic over [`rally_sim::game::Game`].

mod input;
mod nonce;
pub mod ops;
pub mod quic;
pub mod shard;
pub mod tls;

pub use shard::{ConnId, Shard, ShardConfig, ShardEvent, ShardStats, Transmit};
