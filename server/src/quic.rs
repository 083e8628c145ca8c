//! The QUIC transport of the shard: a quinn endpoint (TLS 1.3 only, ALPN
//! `rally/1`) and one task per connection that reads the hello and later
//! frames from the control stream, gates datagrams with the connection's
//! [`ConnectionLimits`], and feeds the shard loop ([`crate::driver`]). The loop
//! sends datagrams straight through the connection's handle and control
//! frames through the task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rally_protocol::codec::{FrameReader, encode_frame};
use rally_protocol::control::{DisconnectReason, ServerMessage};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::driver::{ConnIds, ConnLink, Inbound, Outbound, ServeConfig};
use crate::export::InboundCounters;
use crate::limits::{Admit, ConnectionLimits, DatagramGate};
use crate::shard::ConnId;
use crate::tls::TlsIdentity;

/// QUIC application close code for a broken protocol. Close codes are the
/// [`DisconnectReason`] codes; 0 is a normal end.
const PROTOCOL_VIOLATION: u32 = DisconnectReason::ProtocolViolation as u32;

/// How long the shard waits for a client to close after the control stream
/// ends, before it closes the connection itself.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Kernel socket buffer asked for on the shard's UDP sockets (Linux caps it at
/// `net.core.rmem_max`/`wmem_max`). The default ~208 KiB holds ~2,000 small
/// packets: a few milliseconds of traffic at a thousand matches, so any stall of
/// the shard's thread (a long tick, the scheduler) overflowed it and lost inputs.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Binds a UDP socket with enlarged kernel buffers (QUIC and raw UDP alike).
pub(crate) fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(err) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::warn!(%err, "could not enlarge the UDP receive buffer");
    }
    if let Err(err) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::warn!(%err, "could not enlarge the UDP send buffer");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The `max_ack_delay` each end asks its peer for through the ACK-frequency
/// extension: above the 33 ms between two game datagrams (30 Hz inputs up, 30
/// Hz snapshots down) with room for a late one, so the ACK of a datagram can
/// wait for the next datagram going the other way and ride on it instead of
/// going out in an ACK-only packet. The client SDK asks the shard for the same
/// (`rally_client::quic::transport_config`).
///
/// quinn 0.11 caps what it asks for at `max(smoothed RTT, 25 ms)`
/// (`AckFrequencyState::candidate_max_ack_delay`, after the draft's advice that
/// it stay below the RTT), so on a path faster than 25 ms, loopback included,
/// the peer still acks within 25 ms: an ACK then rides along only when the
/// other way's next datagram is due within 25 ms of the one it acknowledges.
/// Loss recovery waits up to this long more for a tail loss (the PTO adds the
/// peer's `max_ack_delay`); game datagrams are never retransmitted anyway, and
/// control-stream frames are rare and small.
pub const ACK_MAX_DELAY: Duration = Duration::from_millis(50);

/// Ack-eliciting packets the peer may receive before it must ACK at once
/// rather than at its next packet or after [`ACK_MAX_DELAY`]. quinn's
/// default (1, RFC 9000's every second packet) sends an ACK-only packet
/// whenever two game datagrams arrive between two of the peer's own, which
/// scheduling jitter on a busy host makes common; a handful lets the ACK wait
/// for the next datagram out while still acknowledging a burst (a large
/// control frame) promptly enough for congestion control.
pub const ACK_ELICITING_THRESHOLD: u32 = 8;

/// Packets out of order that make the peer ACK at once: quinn's own
/// `packet_threshold` (3) less one, as quinn recommends, so a gap that is
/// about to be declared lost is reported at once and loss recovery is as fast
/// as without the extension.
pub const ACK_REORDERING_THRESHOLD: u32 = 2;

/// The shard's QUIC transport settings, tuned for many connections that each
/// carry small game datagrams at 30 Hz each way:
///
/// - the ACK-frequency request above, so ACKs ride on game datagrams;
/// - no path-MTU discovery: game datagrams are at most
///   [`rally_protocol::MAX_DATAGRAM`] (1,100) bytes and fit the 1,200-byte
///   initial MTU every QUIC path has, so its probes (padded packets up to
///   1,452 bytes, and the ACKs they elicit) would be UDP packets that carry no
///   game data for no gain;
/// - one bidirectional stream (the control stream), no unidirectional ones;
/// - small datagram queues: 64 KiB each way is hundreds of snapshots or inputs,
///   far more than one tick's worth, and bounds a slow connection's memory.
pub fn transport_config(idle_timeout: Duration) -> anyhow::Result<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(idle_timeout.try_into().context("idle timeout out of range")?))
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(Some(64 * 1024))
        .datagram_send_buffer_size(64 * 1024)
        .mtu_discovery_config(None)
        .ack_frequency_config(Some(ack_frequency()));
    Ok(transport)
}

/// The ACK-frequency request of [`transport_config`].
pub fn ack_frequency() -> quinn::AckFrequencyConfig {
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(ACK_ELICITING_THRESHOLD.into())
        .max_ack_delay(Some(ACK_MAX_DELAY))
        .reordering_threshold(ACK_REORDERING_THRESHOLD.into());
    ack
}

/// The shard's QUIC endpoint and its accept loop.
#[derive(Debug)]
pub(crate) struct QuicListener {
    endpoint: quinn::Endpoint,
}

impl QuicListener {
    /// Binds `config.listen` and starts accepting connections for the loop behind `inbound`.
    pub(crate) fn bind(
        config: &ServeConfig,
        identity: &TlsIdentity,
        inbound: mpsc::Sender<Inbound>,
        ids: ConnIds,
        metrics: Arc<InboundCounters>,
        span: tracing::Span,
    ) -> anyhow::Result<Self> {
        let server_config = identity.server_config(transport_config(config.limits.idle_timeout)?)?;
        let socket =
            bind_udp(config.listen).with_context(|| format!("binding the QUIC endpoint on {}", config.listen))?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .context("starting the QUIC endpoint")?;
        tokio::spawn(accept_loop(endpoint.clone(), inbound, config.limits.clone(), ids, metrics).instrument(span));
        Ok(Self { endpoint })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Lets connection tasks flush their last frames and close on their own
    /// for up to `grace`, then closes whatever is left.
    pub(crate) async fn close(self, grace: Duration) {
        let _ = tokio::time::timeout(grace, self.endpoint.wait_idle()).await;
        self.endpoint.close(0u32.into(), b"shard stopped");
        self.endpoint.wait_idle().await;
    }
}

/// How the loop reaches one QUIC connection.
struct QuicLink {
    connection: quinn::Connection,
    control: mpsc::UnboundedSender<Outbound>,
}

impl ConnLink for QuicLink {
    fn send_datagram(&self, bytes: Vec<u8>) -> bool {
        self.connection.send_datagram(Bytes::from(bytes)).is_ok()
    }

    fn send_control(&self, outbound: Outbound) {
        let _ = self.control.send(outbound);
    }

    fn rtt(&self) -> Option<Duration> {
        Some(self.connection.rtt())
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    inbound: mpsc::Sender<Inbound>,
    limits: ConnectionLimits,
    ids: ConnIds,
    metrics: Arc<InboundCounters>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let conn = ids.next();
        let span = tracing::debug_span!("conn", id = conn.0, transport = "quic", remote = %incoming.remote_address());
        tokio::spawn(run_connection(incoming, conn, inbound.clone(), limits.clone(), metrics.clone()).instrument(span));
    }
}

async fn run_connection(
    incoming: quinn::Incoming,
    conn: ConnId,
    inbound: mpsc::Sender<Inbound>,
    limits: ConnectionLimits,
    metrics: Arc<InboundCounters>,
) {
    let deadline = Instant::now() + limits.handshake_timeout;
    let connection = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(err)) => {
            tracing::debug!(%err, "QUIC handshake failed");
            return;
        }
        Err(_) => return,
    };
    let Ok(Ok((mut send, mut recv))) = tokio::time::timeout_at(deadline, connection.accept_bi()).await else {
        connection.close(PROTOCOL_VIOLATION.into(), b"no control stream");
        return;
    };
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 4096];
    let hello = loop {
        match reader.poll_frame() {
            Ok(Some(frame)) => break frame,
            Ok(None) => {}
            Err(_) => {
                connection.close(PROTOCOL_VIOLATION.into(), b"oversized control frame");
                return;
            }
        }
        match tokio::time::timeout_at(deadline, recv.read(&mut buf)).await {
            Ok(Ok(Some(n))) => reader.push(&buf[..n]),
            _ => {
                connection.close(PROTOCOL_VIOLATION.into(), b"no hello");
                return;
            }
        }
    };
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let link = Box::new(QuicLink { connection: connection.clone(), control: control_tx });
    if inbound.send(Inbound::Hello { conn, payload: hello, link }).await.is_err() {
        return;
    }
    let mut gate = DatagramGate::new(&limits, Instant::now().into_std());
    // Frames the client pipelined behind the hello in the same read are handed
    // on now, not when more bytes arrive.
    let mut stream_open = match forward_frames(&mut reader, conn, &inbound, &connection).await {
        Forwarded::Open => true,
        Forwarded::Broken => false,
        Forwarded::LoopGone => return,
    };
    loop {
        tokio::select! {
            datagram = connection.read_datagram() => {
                let Ok(bytes) = datagram else { break };
                let verdict = gate.admit(Instant::now().into_std(), bytes.len());
                metrics.datagram(bytes.len(), verdict);
                match verdict {
                    Admit::Pass => {
                        if inbound.try_send(Inbound::Datagram { conn, bytes }).is_err() {
                            metrics.inbound_dropped();
                        }
                    }
                    Admit::Oversized | Admit::Throttled => {}
                    Admit::Disconnect => {
                        tracing::info!("disconnecting a client that floods datagrams");
                        let mut frame = Vec::new();
                        let message = limits.flood_message();
                        encode_frame(&ServerMessage::Disconnect { reason: DisconnectReason::RateLimited, message }, &mut frame);
                        let _ = send.write_all(&frame).await;
                        close_after_flush(&connection, &mut send, Some(DisconnectReason::RateLimited)).await;
                        break;
                    }
                }
            }
            chunk = recv.read(&mut buf), if stream_open => {
                match chunk {
                    Ok(Some(n)) => {
                        reader.push(&buf[..n]);
                        match forward_frames(&mut reader, conn, &inbound, &connection).await {
                            Forwarded::Open => {}
                            Forwarded::Broken => stream_open = false,
                            Forwarded::LoopGone => return,
                        }
                    }
                    Ok(None) => stream_open = false,
                    Err(_) => break,
                }
            }
            outbound = control_rx.recv() => {
                match outbound {
                    Some(Outbound::Frame(frame)) => {
                        if send.write_all(&frame).await.is_err() {
                            break;
                        }
                    }
                    Some(Outbound::Close(reason)) => {
                        close_after_flush(&connection, &mut send, reason).await;
                        break;
                    }
                    None => break,
                }
            }
        }
    }
    let _ = inbound.send(Inbound::Disconnect { conn }).await;
}

/// What became of the control stream after [`forward_frames`].
enum Forwarded {
    /// Every complete frame went to the loop.
    Open,
    /// A frame was over the limit: the connection is closed.
    Broken,
    /// The shard loop has stopped.
    LoopGone,
}

/// Hands every complete frame in `reader` to the shard loop.
async fn forward_frames(
    reader: &mut FrameReader,
    conn: ConnId,
    inbound: &mpsc::Sender<Inbound>,
    connection: &quinn::Connection,
) -> Forwarded {
    loop {
        match reader.poll_frame() {
            Ok(Some(payload)) => {
                if inbound.send(Inbound::Message { conn, payload }).await.is_err() {
                    return Forwarded::LoopGone;
                }
            }
            Ok(None) => return Forwarded::Open,
            Err(_) => {
                connection.close(PROTOCOL_VIOLATION.into(), b"oversized control frame");
                return Forwarded::Broken;
            }
        }
    }
}

/// Finishes the control stream and lets the client close the connection once
/// it has read to the end of it; only a client that does not within
/// [`CLOSE_GRACE`] is closed on with the reason's code. Closing first would
/// race the client's reads: QUIC discards stream data a peer has received
/// but not yet read when the connection closes, so a busy client would lose
/// the final `Ended` or `Disconnect` frame.
async fn close_after_flush(
    connection: &quinn::Connection,
    send: &mut quinn::SendStream,
    reason: Option<DisconnectReason>,
) {
    let _ = send.finish();
    if tokio::time::timeout(CLOSE_GRACE, connection.closed()).await.is_err() {
        let code = reason.map_or(0u32, |reason| u32::from(u16::from(reason)));
        connection.close(code.into(), b"closed by shard");
    }
}
