//! The rally load harness: many real QUIC clients on one core against a shard,
//! and the bare quinn datagram echo the shard is compared with.
//!
//! [`bench`] runs a capacity point or a sweep: it starts the shard (or the echo)
//! as a child process pinned to its own core, ramps client connections, holds the
//! load, and measures both sides — the shard through its Prometheus endpoint
//! ([`prometheus`]) and `/proc`, the clients through their own counters
//! ([`players`], [`echo`]). It plays no game well: inputs are scripted, because
//! the point is the transport and tick cost, not the rallies.

pub mod bench;
pub mod echo;
pub mod players;
pub mod prometheus;
pub mod sys;

/// Which part of a run the clients are in. Clients count only during `Hold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connections are being opened; nothing is counted.
    Ramp,
    /// The measured window.
    Hold,
    /// The window is over: clients finish their accounting and close.
    Stop,
}
