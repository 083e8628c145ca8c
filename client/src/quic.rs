//! The QUIC driver around [`ClientSession`]: the handshake, then one task per
//! connection that moves control-stream bytes and datagrams between quinn and
//! the session ([`crate::driver::pump`] does the rest).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rally_protocol::control::ClientHello;
use tokio::sync::mpsc;

use crate::connection::{ConnectConfig, ConnectError, Connection, TransportKind};
use crate::driver::{DriverHandle, DriverPorts, now, pump, wake_at};
use crate::session::{ClientEvent, ClientSession, ClientStats};

/// A client endpoint (one UDP socket) that many connections can share.
pub fn endpoint(client_config: quinn::ClientConfig) -> anyhow::Result<quinn::Endpoint> {
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).context("binding a client UDP socket")?;
    let mut client_config = client_config;
    client_config.transport_config(Arc::new(transport_config()?));
    endpoint.set_default_client_config(client_config);
    Ok(endpoint)
}

/// The `max_ack_delay` the client asks the shard for through the ACK-frequency
/// extension: above the 33 ms between two game datagrams (30 Hz snapshots
/// down, 30 Hz inputs up) with room for a late one, so the shard's ACK of an
/// input can wait for the next snapshot and ride on it instead of going out in
/// an ACK-only packet. The shard asks the client for the same
/// (`rally_server::quic::transport_config`).
///
/// quinn 0.11 caps what it asks for at `max(smoothed RTT, 25 ms)`
/// (`AckFrequencyState::candidate_max_ack_delay`), so on a path faster than
/// 25 ms, loopback included, the shard still acks within 25 ms. Loss recovery
/// waits up to this long more for a tail loss (the PTO adds the peer's
/// `max_ack_delay`); game datagrams are never retransmitted anyway.
pub const ACK_MAX_DELAY: Duration = Duration::from_millis(50);

/// Ack-eliciting packets the shard may receive before it must ACK at once
/// rather than with its next snapshot or after [`ACK_MAX_DELAY`]. quinn's
/// default (1: every second packet) sends an ACK-only packet whenever two
/// inputs arrive between two snapshots, which jitter makes common; a handful
/// still acknowledges a burst (the hello, a large control frame) promptly.
pub const ACK_ELICITING_THRESHOLD: u32 = 8;

/// Packets out of order that make the shard ACK at once: quinn's
/// `packet_threshold` (3) less one, as quinn recommends, so a gap about to be
/// declared lost is reported at once and loss recovery stays as fast.
pub const ACK_REORDERING_THRESHOLD: u32 = 2;

/// The SDK's QUIC transport settings, for any endpoint that plays through
/// rally (the load generator's too):
///
/// - a keep-alive every 2 s and a 10 s idle timeout, so a quiet connection (in a
///   lobby, between matches) stays open and a dead one is noticed;
/// - the ACK-frequency request above, so the shard's ACKs ride on snapshots;
/// - no path-MTU discovery: game datagrams are at most
///   [`rally_protocol::MAX_DATAGRAM`] (1,100) bytes and fit the 1,200-byte
///   initial MTU of every QUIC path, so its probes (padded packets up to 1,452
///   bytes, each eliciting an ACK) would be UDP packets with no game data in them;
/// - a 64 KiB datagram receive queue, the shard's size: hundreds of snapshots,
///   where quinn's default (1.25 MB) only bounds how much a stalled game could pile up.
pub fn transport_config() -> anyhow::Result<quinn::TransportConfig> {
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(ACK_ELICITING_THRESHOLD.into())
        .max_ack_delay(Some(ACK_MAX_DELAY))
        .reordering_threshold(ACK_REORDERING_THRESHOLD.into());
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(Duration::from_secs(2)))
        .max_idle_timeout(Some(Duration::from_secs(10).try_into().context("idle timeout")?))
        .datagram_receive_buffer_size(Some(64 * 1024))
        .mtu_discovery_config(None)
        .ack_frequency_config(Some(ack));
    Ok(transport)
}

/// A failed QUIC handshake: a certificate the client does not trust is a TLS
/// error (QUIC carries TLS alerts as crypto error codes 0x100-0x1ff).
fn handshake_error(err: quinn::ConnectionError) -> ConnectError {
    if let quinn::ConnectionError::TransportError(transport) = &err
        && u64::from(transport.code) & !0xff == 0x100
    {
        return ConnectError::Tls(transport.to_string());
    }
    ConnectError::transport("QUIC handshake", err)
}

pub(crate) async fn connect(
    endpoint: &quinn::Endpoint,
    config: &ConnectConfig,
    credential: &ClientHello,
) -> Result<Connection, ConnectError> {
    let connecting = endpoint
        .connect(config.addr, &config.server_name)
        .map_err(|err| ConnectError::transport("starting the QUIC handshake", err))?;
    let connection = tokio::time::timeout(config.connect_timeout, connecting)
        .await
        .map_err(|_| ConnectError::Timeout("the QUIC handshake"))?
        .map_err(handshake_error)?;
    let (mut send, mut recv) =
        connection.open_bi().await.map_err(|err| ConnectError::transport("opening the control stream", err))?;
    let mut session = ClientSession::new(config.session.clone());
    send.write_all(&session.hello(now(), credential))
        .await
        .map_err(|err| ConnectError::transport("sending the hello", err))?;
    let mut buf = vec![0u8; 4096];
    let welcome = loop {
        let read = tokio::time::timeout(config.connect_timeout, recv.read(&mut buf))
            .await
            .map_err(|_| ConnectError::Timeout("the answer to hello"))?
            .map_err(|err| ConnectError::transport("reading the control stream", err))?;
        let Some(n) = read else { return Err(ConnectError::Closed) };
        session.handle_control(now(), &buf[..n])?;
        match session.poll_event() {
            Some(ClientEvent::Welcomed(welcome)) => break *welcome,
            Some(ClientEvent::Refused(refusal)) => return Err(ConnectError::Refused(refusal)),
            _ => {}
        }
    };
    let quic = connection.clone();
    let driver = DriverHandle::spawn(welcome, |ports, leave| drive(session, connection, send, recv, ports, leave));
    Ok(Connection::new(TransportKind::Quic, driver, Some(quic)))
}

async fn drive(
    mut session: ClientSession,
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ports: DriverPorts,
    mut leave: mpsc::UnboundedReceiver<()>,
) -> ClientStats {
    let mut buf = vec![0u8; 4096];
    let mut stream_open = true;
    loop {
        let wake = wake_at(&session, now());
        tokio::select! {
            datagram = connection.read_datagram() => {
                let Ok(bytes) = datagram else { break };
                session.handle_datagram(now(), &bytes);
            }
            chunk = recv.read(&mut buf), if stream_open => {
                match chunk {
                    Ok(Some(n)) => {
                        if session.handle_control(now(), &buf[..n]).is_err() {
                            break;
                        }
                    }
                    Ok(None) | Err(_) => stream_open = false,
                }
            }
            () = tokio::time::sleep_until(wake) => {}
            request = leave.recv() => {
                if request.is_some() {
                    let _ = send.write_all(&ClientSession::leave()).await;
                    let _ = send.finish();
                }
                break;
            }
        }
        pump(&mut session, now(), &ports, |datagram| {
            let _ = connection.send_datagram(Bytes::from(datagram));
        });
        // The match ended, or the shard finished the control stream: nothing more will come.
        if session.is_over() || !stream_open {
            break;
        }
    }
    connection.close(0u32.into(), b"bye");
    session.stats().clone()
}
