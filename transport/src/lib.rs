//! What both ends of a rally link share, one transport per module, as
//! lightyear lays out its transports: the raw UDP wire format, its stateless
//! cookie handshake, the sans-IO server endpoint and the [`udp::ReliableChannel`]
//! ([`udp`]), the in-memory link between a client and a shard in one process
//! ([`memory`]), and the seeded link conditioner that tests and the harness
//! put between them ([`conditioner`]).
//!
//! It holds no socket drivers: `rally-server` and `rally-client` wrap these
//! sans-IO pieces in their own tasks, so the same handshake, channel and
//! conditioner run under real sockets, tokio's paused clock and the stepper's
//! virtual time. Time always comes in as an argument; the one clock read here
//! is [`unix_ms`], for the drivers.

pub mod conditioner;
pub mod memory;
pub mod udp;

/// Milliseconds since the Unix epoch: the wall clock connect tokens are dated
/// by. The one place the platform reads it; sans-IO cores take it as an argument.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}
