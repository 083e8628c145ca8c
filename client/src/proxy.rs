//! A conditioning UDP proxy for real sockets: put it between QUIC (or raw UDP)
//! clients and a shard, and every datagram in each direction goes through a
//! [`Link`] with the given loss, latency, jitter, duplication and reordering.
//!
//! Clients connect to the proxy's address; it keeps one upstream socket per
//! client address so the shard sees distinct peers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

use crate::conditioner::{Link, LinkConditions, LinkStats};

/// A running proxy; dropping it stops forwarding.
#[derive(Debug)]
pub struct UdpProxy {
    local_addr: SocketAddr,
    stats: Arc<Mutex<ProxyStats>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the proxy's links did, both directions summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client → server.
    pub upstream: LinkStats,
    /// Server → client.
    pub downstream: LinkStats,
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UdpProxy {
    /// Listens on an ephemeral loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr, conditions: LinkConditions, seed: u64) -> anyhow::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.context("binding the proxy socket")?);
        let local_addr = front.local_addr()?;
        let stats = Arc::new(Mutex::new(ProxyStats::default()));
        let task = tokio::spawn(run(front, target, conditions, seed, stats.clone()));
        Ok(Self { local_addr, stats, task })
    }

    /// Where clients should connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters so far.
    pub async fn stats(&self) -> ProxyStats {
        *self.stats.lock().await
    }
}

struct Peer {
    back: Arc<UdpSocket>,
    up: Link<Vec<u8>>,
    down: Link<Vec<u8>>,
}

async fn run(
    front: Arc<UdpSocket>,
    target: SocketAddr,
    conditions: LinkConditions,
    seed: u64,
    stats: Arc<Mutex<ProxyStats>>,
) {
    let mut peers: HashMap<SocketAddr, Peer> = HashMap::new();
    let (back_tx, mut back_rx) = tokio::sync::mpsc::unbounded_channel::<(SocketAddr, Vec<u8>)>();
    let mut buf = vec![0u8; 65_536];
    loop {
        let next_due =
            peers.values().flat_map(|peer| [peer.up.next_delivery(), peer.down.next_delivery()]).flatten().min();
        let sleep = async {
            match next_due {
                Some(due) => tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = front.recv_from(&mut buf) => {
                let Ok((n, client)) = received else { return };
                if !peers.contains_key(&client) {
                    let Ok(back) = UdpSocket::bind("127.0.0.1:0").await else { continue };
                    let back = Arc::new(back);
                    tokio::spawn(read_back(back.clone(), client, back_tx.clone()));
                    let peer_seed = seed ^ (peers.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    peers.insert(client, Peer {
                        back,
                        up: Link::new(conditions, peer_seed),
                        down: Link::new(conditions, peer_seed ^ 1),
                    });
                }
                if let Some(peer) = peers.get_mut(&client) {
                    peer.up.push(Instant::now(), buf[..n].to_vec());
                }
            }
            Some((client, bytes)) = back_rx.recv() => {
                if let Some(peer) = peers.get_mut(&client) {
                    peer.down.push(Instant::now(), bytes);
                }
            }
            () = sleep => {}
        }
        let now = Instant::now();
        let mut totals = ProxyStats::default();
        for (client, peer) in &mut peers {
            while let Some(bytes) = peer.up.poll(now) {
                let _ = peer.back.send_to(&bytes, target).await;
            }
            while let Some(bytes) = peer.down.poll(now) {
                let _ = front.send_to(&bytes, client).await;
            }
            add(&mut totals.upstream, peer.up.stats());
            add(&mut totals.downstream, peer.down.stats());
        }
        *stats.lock().await = totals;
    }
}

fn add(total: &mut LinkStats, more: LinkStats) {
    total.sent += more.sent;
    total.dropped += more.dropped;
    total.duplicated += more.duplicated;
    total.reordered += more.reordered;
}

async fn read_back(
    back: Arc<UdpSocket>,
    client: SocketAddr,
    out: tokio::sync::mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = back.recv(&mut buf).await {
        if out.send((client, buf[..n].to_vec())).is_err() {
            return;
        }
    }
}
