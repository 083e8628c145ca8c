//! The raw UDP transport: its wire format ([`wire`]), the reliable channel
//! its control stream rides on ([`ReliableChannel`]), and the shard's
//! sans-IO endpoint ([`ServerEndpoint`]), and batched socket IO ([`batch`]).
//! The socket drivers are
//! `rally_server::udp` and `rally_client::udp`; the bytes are in PROTOCOL.md §13.
//!
//! # Threat model
//!
//! Nothing here is encrypted or authenticated beyond the address-bound
//! handshake cookie: anyone on the path reads connect tokens, resume secrets
//! and game traffic, and can inject packets for an address it can see. Use it
//! on a LAN, for bot farms and load tests; players on the internet use QUIC.
//!
//! # Wire format
//!
//! Every packet starts with a kind byte; integers are little-endian. A client
//! first sends [`wire::REQUEST`] padded to [`wire::REQUEST_LEN`] bytes; the
//! shard answers with a smaller [`wire::CHALLENGE`] holding a cookie bound to
//! the source address and a time bucket, and keeps no state. The client then
//! sends [`wire::CONNECT`]: the cookie and its hello frame. Only then does the
//! shard allocate a connection. After that, [`wire::DATAGRAM`] carries game
//! datagrams, [`wire::SEGMENT`] and [`wire::ACK`] the reliable control stream,
//! [`wire::KEEPALIVE`] keeps an idle link open and [`wire::DISCONNECT`] ends it.

pub mod batch;
mod channel;
mod endpoint;
pub mod wire;

pub use channel::ReliableChannel;
pub use endpoint::{BUCKET_SECS, DropReason, EndpointConfig, EndpointEvent, EndpointStats, ServerEndpoint, Transmit};
