//! One connection type over every transport, so games, bots and the harness
//! pick QUIC, raw UDP or the in-memory link with a value, not with a second
//! code path.
//!
//! Every transport's driver wraps the same [`ClientSession`](crate::session::ClientSession)
//! in a task behind one [`DriverHandle`]: everything above the transport
//! (clock sync, inputs, snapshots, events) is identical, and a match can hold
//! players of all of them.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use rally_protocol::control::{ClientHello, Refusal, Welcome};
use rally_protocol::{DecodeError, Input};
use rally_transport::memory::MemoryTransport;

use crate::driver::DriverHandle;
use crate::session::{ClientEvent, ClientStats, SessionConfig};

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

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct ConnectConfig {
    /// The shard's address (QUIC, or raw UDP for [`Transport::Udp`]).
    pub addr: SocketAddr,
    /// The name the certificate must be valid for (QUIC; ignored when pinning by fingerprint).
    pub server_name: String,
    /// Session settings.
    pub session: SessionConfig,
    /// Give up if the handshake takes longer.
    pub connect_timeout: Duration,
}

impl ConnectConfig {
    /// Defaults for a shard at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            server_name: "localhost".into(),
            session: SessionConfig::default(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a connection to a shard seat was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The shard refused the hello; the refusal says why and what to do.
    #[error("the shard refused the connection ({}): {}", .0.reason.label(), .0.message)]
    Refused(Refusal),
    /// No answer in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The shard's certificate was not the one trusted (QUIC).
    #[error("TLS: {0}")]
    Tls(String),
    /// The network or the transport failed.
    #[error("{what}: {detail}")]
    Transport {
        /// The step that failed.
        what: &'static str,
        /// What the transport said.
        detail: String,
    },
    /// The shard closed the connection without answering the hello.
    #[error("the shard closed the connection without answering the hello")]
    Closed,
    /// The shard's answer did not decode.
    #[error("undecodable answer to hello: {0}")]
    Protocol(#[from] DecodeError),
}

impl ConnectError {
    pub(crate) fn transport(what: &'static str, detail: impl fmt::Display) -> Self {
        Self::Transport { what, detail: detail.to_string() }
    }

    /// The refusal, when the shard refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Refused(refusal) => Some(refusal),
            _ => None,
        }
    }
}

/// A live connection to a shard seat over any transport.
#[derive(Debug)]
pub struct Connection {
    kind: TransportKind,
    driver: DriverHandle,
    /// The QUIC connection, for its RTT and close reason.
    quic: Option<quinn::Connection>,
}

impl Connection {
    /// Connects, says hello with `credential`, and waits for the welcome.
    pub async fn connect(
        transport: &Transport,
        config: &ConnectConfig,
        credential: &ClientHello,
    ) -> Result<Self, ConnectError> {
        match transport {
            Transport::Quic(endpoint) => crate::quic::connect(endpoint, config, credential).await,
            Transport::Udp => crate::udp::connect(config, credential).await,
            Transport::Memory(memory) => crate::memory::connect(memory, config, credential).await,
        }
    }

    pub(crate) fn new(kind: TransportKind, driver: DriverHandle, quic: Option<quinn::Connection>) -> Self {
        Self { kind, driver, quic }
    }

    /// Which transport carries it.
    pub fn kind(&self) -> TransportKind {
        self.kind
    }

    /// The shard's welcome (seat, tick rate, schema, resume secret).
    pub fn welcome(&self) -> &Welcome {
        self.driver.welcome()
    }

    /// The credential that takes this seat back after a dropped connection.
    pub fn resume_credential(&self) -> ClientHello {
        self.driver.resume_credential()
    }

    /// Sets the intent sent from the next tick on.
    pub fn set_input(&self, input: Input) {
        self.driver.set_input(input);
    }

    /// The next event; `None` once the connection is closed and all events are read.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.driver.next_event().await
    }

    /// Leaves the match for good.
    pub fn leave(&self) {
        self.driver.leave();
    }

    /// The transport's RTT estimate, where it keeps one (QUIC does; raw UDP
    /// and the in-memory link leave RTT to the session's pings).
    pub fn transport_rtt(&self) -> Option<Duration> {
        self.quic.as_ref().map(quinn::Connection::rtt)
    }

    /// The QUIC connection underneath (its path counters, datagram limits), over QUIC only.
    pub fn quic_connection(&self) -> Option<&quinn::Connection> {
        self.quic.as_ref()
    }

    /// Why the transport closed, for error messages (QUIC's close reason;
    /// the other transports say it in their events).
    pub fn close_reason(&self) -> Option<String> {
        self.quic.as_ref().and_then(quinn::Connection::close_reason).map(|reason| reason.to_string())
    }

    /// Drops the connection abruptly, as a lost network would (no goodbye).
    pub fn abort(self) {
        self.driver.abort();
        if let Some(quic) = &self.quic {
            quic.close(0u32.into(), b"aborted");
        }
    }

    /// Waits for the driver to stop and returns its counters.
    pub async fn finish(self) -> ClientStats {
        self.driver.finish().await
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
