//! The rally client SDK: what every game client, the bot and the load harness
//! use to play on a shard.
//!
//! [`session::ClientSession`] is sans-IO: handshake, clock sync to the server
//! tick, redundant inputs, snapshot acks and delta decoding. [`quic`] drives it
//! over quinn and [`udp`] over raw UDP (LAN, bot farms, load tests);
//! [`connection::Connection`] is either, chosen by a [`connection::Transport`].
//! [`prediction`] and [`interpolation`] turn snapshots into what a
//! game draws: the local player's predicted state and remote state in the
//! recent past. [`conditioner`] simulates bad networks for tests and the
//! harness, in memory or, through [`proxy`], between real sockets.
//!
//! It knows no game: the game's rules enter only through a
//! [`prediction::Predictor`] and the schema sent in the welcome.

pub mod clock;
pub mod conditioner;
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

pub use connection::{Connection, Transport, TransportKind};
pub use session::{ClientEvent, ClientSession, ClientStats, SessionConfig};
