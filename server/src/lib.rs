//! The rally match shard: runs many matches of one game in one ECS world at a
//! fixed tick and serves their players over QUIC, optionally raw UDP, and an
//! in-memory link for clients in the same process.
//!
//! [`shard::Shard`] is the sans-IO core (seats, tokens, jitter buffers,
//! snapshots, results); it reports plain [`ShardStats`] and never touches a
//! metrics facade. [`driver`] is the one transport-agnostic loop around it
//! (the tick, drain, results, the export of its stats), fed by each
//! transport's connection tasks: [`quic`], [`udp`] (around the sans-IO
//! endpoint of `rally-transport`) and [`memory`]. [`ops`] serves metrics and
//! health. The shard never names the game: it is generic over
//! [`rally_sim::game::Game`]. It does not depend on the client SDK: what both
//! ends of a link share is `rally-transport`.

pub mod driver;
mod export;
mod input;
pub mod limits;
pub mod memory;
mod nonce;
pub mod ops;
pub mod quic;
pub mod shard;
pub mod stats;
pub mod tls;
pub mod udp;

pub use driver::{ServeConfig, ShardHandle, ShardLive, ShardReport, start};
pub use limits::ConnectionLimits;
pub use shard::{ConnId, Shard, ShardConfig, ShardEvent, Transmit};
pub use stats::{InputCounts, ShardStats, ValueCounts};
