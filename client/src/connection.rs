//! One connection type over every transport, so games, bots and the harness
//! pick QUIC, raw UDP or the in-memory link with a value, not with a second
//! code path.
//!
//! Every driver wraps the same [`ClientSession`](crate::session::ClientSession):
//! everything above the transport (clock sync, inputs, snapshots, events) is
//! identical, and a match can hold players of all of them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rally_protocol::Input;
use rally_protocol::control::{ClientHello, Welcome};

use crate::memory::{MemoryConnection, MemoryTransport};
use crate::quic::{ConnectConfig, GameConnection};
use crate::session::{ClientEvent, ClientStats};
use crate::udp::UdpConnection;

/// The transports a shard speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// QUIC (quinn): encrypted, the default for players.
    Quic,
    /// Raw UDP: unencrypted; LAN play, bot farms and load tests.
    Udp,
    /// The in-memory link: client and shard in one process, no sockets.
    Memory,
}

impl TransportKind {
    /// The name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Udp => "udp",
            Self::Memory => "memory",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TransportKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quic" => Ok(Self::Quic),
            "udp" => Ok(Self::Udp),
            "memory" => Ok(Self::Memory),
            other => Err(format!("unknown transport {other:?}: use quic, udp or memory")),
        }
    }
}

/// How to reach a shard: the QUIC endpoint to share between connections, raw
/// UDP (one socket per connection), or an in-process shard's dialer.
#[derive(Clone, Debug)]
pub enum Transport {
    /// QUIC through this client endpoint.
    Quic(quinn::Endpoint),
    /// Raw UDP; [`ConnectConfig::addr`] is then the shard's `--udp-addr`.
    Udp,
    /// The in-memory link to a shard in this process; [`ConnectConfig::addr`] is ignored.
    Memory(MemoryTransport),
}

impl Transport {
    /// Which transport this is.
    pub fn kind(&self) -> TransportKind {
        match self {
            Self::Quic(_) => TransportKind::Quic,
            Self::Udp => TransportKind::Udp,
            Self::Memory(_) => TransportKind::Memory,
        }
    }
}

/// A live connection to a shard seat over either transport.
#[derive(Debug)]
pub enum Connection {
    /// Over QUIC.
    Quic(GameConnection),
    /// Over raw UDP.
    Udp(UdpConnection),
    /// Over the in-memory link.
    Memory(MemoryConnection),
}

impl Connection {
    /// Connects, says hello with `credential`, and waits for the welcome. A
    /// refusal is a [`crate::quic::Refused`] error on both transports.
    pub async fn connect(
        transport: &Transport,
        config: &ConnectConfig,
        credential: &ClientHello,
    ) -> anyhow::Result<Self> {
        Ok(match transport {
            Transport::Quic(endpoint) => Self::Quic(GameConnection::connect(endpoint, config, credential).await?),
            Transport::Udp => Self::Udp(UdpConnection::connect(config, credential).await?),
            Transport::Memory(memory) => Self::Memory(MemoryConnection::connect(memory, config, credential).await?),
        })
    }

    /// Which transport carries it.
    pub fn kind(&self) -> TransportKind {
        match self {
            Self::Quic(_) => TransportKind::Quic,
            Self::Udp(_) => TransportKind::Udp,
            Self::Memory(_) => TransportKind::Memory,
        }
    }

    /// The shard's welcome (seat, tick rate, schema, resume secret).
    pub fn welcome(&self) -> &Welcome {
        match self {
            Self::Quic(connection) => connection.welcome(),
            Self::Udp(connection) => connection.welcome(),
            Self::Memory(connection) => connection.welcome(),
        }
    }

    /// The credential that takes this seat back after a dropped connection.
    pub fn resume_credential(&self) -> ClientHello {
        match self {
            Self::Quic(connection) => connection.resume_credential(),
            Self::Udp(connection) => connection.resume_credential(),
            Self::Memory(connection) => connection.resume_credential(),
        }
    }

    /// Sets the intent sent from the next tick on.
    pub fn set_input(&self, input: Input) {
        match self {
            Self::Quic(connection) => connection.set_input(input),
            Self::Udp(connection) => connection.set_input(input),
            Self::Memory(connection) => connection.set_input(input),
        }
    }

    /// The next event; `None` once the connection is closed and all events are read.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        match self {
            Self::Quic(connection) => connection.next_event().await,
            Self::Udp(connection) => connection.next_event().await,
            Self::Memory(connection) => connection.next_event().await,
        }
    }

    /// Leaves the match for good.
    pub fn leave(&self) {
        match self {
            Self::Quic(connection) => connection.leave(),
            Self::Udp(connection) => connection.leave(),
            Self::Memory(connection) => connection.leave(),
        }
    }

    /// The transport's RTT estimate, where it keeps one (QUIC does; raw UDP
    /// leaves RTT to the session's pings).
    pub fn transport_rtt(&self) -> Option<Duration> {
        match self {
            Self::Quic(connection) => Some(connection.rtt()),
            Self::Udp(_) | Self::Memory(_) => None,
        }
    }

    /// Why the transport closed, for error messages (QUIC's close reason;
    /// raw UDP has none beyond its events).
    pub fn close_reason(&self) -> Option<String> {
        match self {
            Self::Quic(connection) => connection.connection().close_reason().map(|reason| reason.to_string()),
            Self::Udp(_) | Self::Memory(_) => None,
        }
    }

    /// Drops the connection abruptly, as a lost network would (no goodbye).
    pub fn abort(self) {
        match self {
            Self::Quic(connection) => connection.abort(),
            Self::Udp(connection) => connection.abort(),
            Self::Memory(connection) => connection.abort(),
        }
    }

    /// Waits for the driver to stop and returns its counters.
    pub async fn finish(self) -> ClientStats {
        match self {
            Self::Quic(connection) => connection.finish().await,
            Self::Udp(connection) => connection.finish().await,
            Self::Memory(connection) => connection.finish().await,
        }
    }
}

impl From<GameConnection> for Connection {
    fn from(connection: GameConnection) -> Self {
        Self::Quic(connection)
    }
}

impl From<UdpConnection> for Connection {
    fn from(connection: UdpConnection) -> Self {
        Self::Udp(connection)
    }
}

impl From<MemoryConnection> for Connection {
    fn from(connection: MemoryConnection) -> Self {
        Self::Memory(connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names_round_trip_and_unknown_ones_say_what_to_use() {
        for kind in [TransportKind::Quic, TransportKind::Udp, TransportKind::Memory] {
            assert_eq!(kind.name().parse::<TransportKind>(), Ok(kind));
        }
        let error = "tcp".parse::<TransportKind>().unwrap_err();
        assert!(error.contains("\"tcp\"") && error.contains("quic, udp or memory"), "{error}");
    }
}
