//! The in-memory link's shard side: each dialed connection gets a task that,
//! like a QUIC connection task, reads the hello and later frames from the
//! client's control bytes, gates its datagrams with the same
//! [`ConnectionLimits`], and feeds the shard loop, which answers through a
//! [`MemoryLink`]. No sockets: a game can embed a shard, and the conformance
//! suite runs the same behaviours on this link as on QUIC and raw UDP. The
//! link's messages and the [`MemoryDial`] trait are `rally_transport::memory`.

use bytes::Bytes;
use rally_protocol::codec::{FrameReader, encode_frame};
use rally_protocol::control::{DisconnectReason, ServerMessage};
use rally_transport::memory::{ClientToShard, DialError, MemoryDial, MemoryEnds, ShardToClient};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::driver::{ConnIds, ConnLink, Inbound, Outbound};
use std::sync::Arc;

use crate::export::InboundCounters;
use crate::limits::{Admit, ConnectionLimits, DatagramGate};
use crate::shard::ConnId;

/// Opens in-memory connections to one running shard; from
/// [`crate::ShardHandle::memory_dialer`].
#[derive(Debug)]
pub struct MemoryDialer {
    inbound: mpsc::Sender<Inbound>,
    limits: ConnectionLimits,
    ids: ConnIds,
    metrics: Arc<InboundCounters>,
    span: tracing::Span,
}

impl MemoryDialer {
    pub(crate) fn new(
        inbound: mpsc::Sender<Inbound>,
        limits: ConnectionLimits,
        ids: ConnIds,
        metrics: Arc<InboundCounters>,
        span: tracing::Span,
    ) -> Self {
        Self { inbound, limits, ids, metrics, span }
    }
}

impl MemoryDial for MemoryDialer {
    fn dial(&self) -> Result<MemoryEnds, DialError> {
        if self.inbound.is_closed() {
            return Err(DialError::ShardStopped);
        }
        let conn = self.ids.next();
        let (to_shard, from_client) = mpsc::unbounded_channel();
        let (to_client, from_shard) = mpsc::unbounded_channel();
        let span = tracing::debug_span!(parent: &self.span, "conn", id = conn.0, transport = "memory");
        let task = run_connection(
            conn,
            from_client,
            to_client,
            self.inbound.clone(),
            self.limits.clone(),
            self.metrics.clone(),
        );
        tokio::spawn(task.instrument(span));
        Ok(MemoryEnds { to_shard, from_shard })
    }
}

/// How the shard loop reaches one in-memory connection.
#[derive(Debug, Clone)]
struct MemoryLink {
    to_client: mpsc::UnboundedSender<ShardToClient>,
}

impl ConnLink for MemoryLink {
    fn send_datagram(&self, bytes: Vec<u8>) -> bool {
        self.to_client.send(ShardToClient::Datagram(bytes)).is_ok()
    }

    fn send_control(&self, outbound: Outbound) {
        let _ = match outbound {
            Outbound::Frame(frame) => self.to_client.send(ShardToClient::Frame(frame)),
            Outbound::Close(_) => self.to_client.send(ShardToClient::Closed),
        };
    }
}

async fn run_connection(
    conn: ConnId,
    mut from_client: mpsc::UnboundedReceiver<ClientToShard>,
    to_client: mpsc::UnboundedSender<ShardToClient>,
    inbound: mpsc::Sender<Inbound>,
    limits: ConnectionLimits,
    metrics: Arc<InboundCounters>,
) {
    let mut reader = FrameReader::new();
    let mut greeted = false;
    let mut gate = DatagramGate::new(&limits, Instant::now().into_std());
    let handshake = tokio::time::sleep(limits.handshake_timeout);
    tokio::pin!(handshake);
    loop {
        let message = tokio::select! {
            message = from_client.recv() => message,
            () = &mut handshake, if !greeted => {
                let _ = to_client.send(ShardToClient::Closed);
                return;
            }
        };
        let Some(message) = message else { break };
        match message {
            ClientToShard::Control(bytes) => {
                reader.push(&bytes);
                loop {
                    let payload = match reader.poll_frame() {
                        Ok(Some(payload)) => payload,
                        Ok(None) => break,
                        Err(_) => {
                            let _ = to_client.send(ShardToClient::Closed);
                            let _ = inbound.send(Inbound::Disconnect { conn }).await;
                            return;
                        }
                    };
                    let message = if greeted {
                        Inbound::Message { conn, payload }
                    } else {
                        greeted = true;
                        Inbound::Hello { conn, payload, link: Box::new(MemoryLink { to_client: to_client.clone() }) }
                    };
                    if inbound.send(message).await.is_err() {
                        return;
                    }
                }
            }
            ClientToShard::Datagram(bytes) if greeted => {
                let verdict = gate.admit(Instant::now().into_std(), bytes.len());
                metrics.datagram(bytes.len(), verdict);
                match verdict {
                    Admit::Pass => {
                        if inbound.try_send(Inbound::Datagram { conn, bytes: Bytes::from(bytes) }).is_err() {
                            metrics.inbound_dropped();
                        }
                    }
                    Admit::Oversized | Admit::Throttled => {}
                    Admit::Disconnect => {
                        let mut frame = Vec::new();
                        let message = limits.flood_message();
                        encode_frame(
                            &ServerMessage::Disconnect { reason: DisconnectReason::RateLimited, message },
                            &mut frame,
                        );
                        let _ = to_client.send(ShardToClient::Frame(frame));
                        let _ = to_client.send(ShardToClient::Closed);
                        break;
                    }
                }
            }
            ClientToShard::Datagram(_) => {}
        }
    }
    if greeted {
        let _ = inbound.send(Inbound::Disconnect { conn }).await;
    }
}
