//! The in-memory link's shard side: each dialed connection gets a task that,
//! like a QUIC connection task, reads the hello and later frames from the
//! client's control bytes, rate-limits its datagrams with the same
//! [`ConnectionLimits`], and feeds the shard loop. The shard loop answers
//! through a [`MemoryLink`]. No sockets: a game can embed a shard, and the
//! conformance suite runs the same behaviours on this link as on QUIC and
//! raw UDP.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use governor::{Quota, RateLimiter};
use rally_client::memory::{ClientToShard, MemoryDial, MemoryEnds, ShardToClient};
use rally_protocol::codec::{FrameReader, encode_frame};
use rally_protocol::control::{DisconnectReason, ServerMessage};
use tokio::sync::mpsc;

use crate::quic::{ConnectionLimits, Inbound, Outbound};
use crate::shard::ConnId;

/// In-memory connection ids carry this bit, so they never collide with QUIC's or raw UDP's.
const MEMORY_CONN_BIT: u64 = 1 << 62;

/// Opens in-memory connections to one running shard; from
/// [`crate::quic::ShardHandle::memory_dialer`].
#[derive(Debug)]
pub struct MemoryDialer {
    inbound: mpsc::Sender<Inbound>,
    limits: ConnectionLimits,
    next_id: AtomicU64,
}

impl MemoryDialer {
    pub(crate) fn new(inbound: mpsc::Sender<Inbound>, limits: ConnectionLimits) -> Self {
        Self { inbound, limits, next_id: AtomicU64::new(1) }
    }
}

impl MemoryDial for MemoryDialer {
    fn dial(&self) -> anyhow::Result<MemoryEnds> {
        if self.inbound.is_closed() {
            anyhow::bail!("the shard has stopped");
        }
        let conn = ConnId(MEMORY_CONN_BIT | self.next_id.fetch_add(1, Ordering::Relaxed));
        let (to_shard, from_client) = mpsc::unbounded_channel();
        let (to_client, from_shard) = mpsc::unbounded_channel();
        tokio::spawn(run_connection(conn, from_client, to_client, self.inbound.clone(), self.limits.clone()));
        Ok(MemoryEnds { to_shard, from_shard })
    }
}

/// How the shard loop reaches one in-memory connection.
#[derive(Debug, Clone)]
pub(crate) struct MemoryLink {
    to_client: mpsc::UnboundedSender<ShardToClient>,
}

impl MemoryLink {
    pub(crate) fn send_datagram(&self, bytes: Vec<u8>) -> bool {
        self.to_client.send(ShardToClient::Datagram(bytes)).is_ok()
    }

    pub(crate) fn send_control(&self, outbound: Outbound) {
        let _ = match outbound {
            Outbound::Frame(frame) => self.to_client.send(ShardToClient::Frame(frame)),
            Outbound::Close(_) => self.to_client.send(ShardToClient::Closed),
        };
    }
}

/// Whether `conn` is an in-memory connection; for tests telling transports apart.
pub fn is_memory_conn(conn: ConnId) -> bool {
    conn.0 & MEMORY_CONN_BIT != 0 && conn.0 & (1 << 63) == 0
}

async fn run_connection(
    conn: ConnId,
    mut from_client: mpsc::UnboundedReceiver<ClientToShard>,
    to_client: mpsc::UnboundedSender<ShardToClient>,
    inbound: mpsc::Sender<Inbound>,
    limits: ConnectionLimits,
) {
    let link = MemoryLink { to_client: to_client.clone() };
    let mut reader = FrameReader::new();
    let mut greeted = false;
    let quota = Quota::per_second(NonZeroU32::new(limits.datagrams_per_second.max(1)).expect("max(1) is non-zero"))
        .allow_burst(NonZeroU32::new(limits.datagram_burst.max(1)).expect("max(1) is non-zero"));
    let limiter = RateLimiter::direct(quota);
    let mut violations = 0u32;
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
                        Inbound::MemoryHello { conn, payload, link: link.clone() }
                    };
                    if inbound.send(message).await.is_err() {
                        return;
                    }
                }
            }
            ClientToShard::Datagram(bytes) if greeted => {
                if limiter.check().is_err() {
                    violations += 1;
                    metrics::counter!("rally_shard_rate_limited_datagrams_total").increment(1);
                    if violations > limits.max_rate_violations {
                        metrics::counter!("rally_shard_disconnects_total", "reason" => "rate_limited").increment(1);
                        let mut frame = Vec::new();
                        let message = format!("over {} datagrams per second", limits.datagrams_per_second);
                        encode_frame(
                            &ServerMessage::Disconnect { reason: DisconnectReason::RateLimited, message },
                            &mut frame,
                        );
                        let _ = to_client.send(ShardToClient::Frame(frame));
                        let _ = to_client.send(ShardToClient::Closed);
                        break;
                    }
                    continue;
                }
                if inbound.try_send(Inbound::Datagram { conn, bytes: Bytes::from(bytes) }).is_err() {
                    metrics::counter!("rally_shard_inbound_dropped_total").increment(1);
                }
            }
            ClientToShard::Datagram(_) => {}
        }
    }
    if greeted {
        let _ = inbound.send(Inbound::Disconnect { conn }).await;
    }
}

/// A dialer shared by every client of one shard.
pub(crate) fn shared(inbound: mpsc::Sender<Inbound>, limits: ConnectionLimits) -> Arc<MemoryDialer> {
    Arc::new(MemoryDialer::new(inbound, limits))
}
