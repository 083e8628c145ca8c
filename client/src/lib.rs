//! The rally client SDK: what every game client, the bot and the load harness
//! use to play on a shard.
//!
//! [`session::ClientSession`] is sans-IO: handshake, clock sync to the server
//! tick, redundant inputs, snapshot acks and delta decoding, its own
//! deadlines and events. [`Connection`] drives one over QUIC ([`quic`]), raw
//! UDP ([`udp`]: LAN, bot farms, load tests) or the in-memory link
//! ([`memory`]), chosen by a [`Transport`]; the drivers are only IO, and a
//! failed connect is a typed [`ConnectError`]. [`prediction`] and
//! [`interpolation`] turn snapshots into what a game draws: the local
//! player's predicted state and remote state in the recent past.
//! [`conditioner`] (from `rally-transport`) simulates bad networks for tests
//! and the harness, in memory or, through [`proxy`], between real sockets.
//!
//! It knows no game: the game's rules enter only through a
//! [`prediction::Predictor`] and the schema sent in the welcome.

pub mod clock;
pub mod connection;
mod driver;
pub mod interpolation;
pub mod memory;
pub mod prediction;
pub mod proxy;
pub mod quic;
pub mod session;
pub mod tls;
pub mod udp;
pub mod view;

pub use connection::{ConnectConfig, ConnectError, Connection, Transport, TransportKind};
pub use rally_transport::conditioner;
pub use session::{ClientEvent, ClientSession, ClientStats, SessionConfig};
