//! The baselines: a bare quinn datagram echo server and a bare raw UDP echo,
//! and clients that send them fixed-size datagrams at a fixed rate.
//!
//! The quinn echo does what a shard's QUIC transport must do at the least —
//! accept, read each datagram, send one back — with the same TLS identity code
//! and the same transport settings as the shard, so the difference between the
//! two is the shard's own work. The raw UDP echo is the same for the raw UDP
//! transport: one socket with the shard's buffer size, no handshake and no
//! state, and the shard's batched IO (`recvmmsg` in, every echo of the batch
//! out with one `sendmmsg`); its clients are batched the same way, as the
//! harness's swarm is ([`udp_clients`]: every client its own loopback address
//! on one socket).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rally_server::tls::{TlsIdentity, TlsSource};
use rally_transport::udp::batch::{self, RecvBatch, SendBatch};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::Phase;
use crate::game::GameTarget;

/// Which bare echo to compare the shard with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoKind {
    /// A quinn datagram echo (the QUIC transport's floor).
    Quinn,
    /// A raw UDP datagram echo (the raw UDP transport's floor).
    Udp,
}

impl EchoKind {
    /// The name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Quinn => "quinn-echo",
            Self::Udp => "udp-echo",
        }
    }
}

/// Kernel buffer asked for on the raw UDP echo's socket: the shard's size for
/// its own sockets, so neither drops what the other would hold.
const UDP_SOCKET_BUFFER: usize = 4 << 20;

/// Payload bytes of each echo datagram (about a delta snapshot's size).
pub const ECHO_PAYLOAD: usize = 40;

/// Marks a datagram sent during the measured window.
const IN_WINDOW: u8 = 1;

/// The transport settings `rally shard` uses, so the baseline pays the same costs.
fn server_transport() -> anyhow::Result<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(Duration::from_secs(10).try_into().context("idle timeout")?))
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(Some(64 * 1024))
        .datagram_send_buffer_size(64 * 1024);
    Ok(transport)
}

/// Serves the echo on a current-thread runtime until `stop` fires, sending
/// `(address, fingerprint, tid)` on `ready` once bound.
pub fn serve_until(
    data_dir: PathBuf,
    tid: Option<u32>,
    ready: std::sync::mpsc::Sender<anyhow::Result<(std::net::SocketAddr, String, Option<u32>)>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let identity = TlsIdentity::load(&TlsSource::SelfSigned {
        dir: data_dir,
        names: vec!["localhost".into(), "127.0.0.1".into()],
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let server_config = identity.server_config(server_transport()?)?;
        let endpoint = quinn::Endpoint::server(server_config, ([127, 0, 0, 1], 0).into())?;
        let _ = ready.send(Ok((endpoint.local_addr()?, identity.fingerprint(), tid)));
        let accept = async {
            while let Some(incoming) = endpoint.accept().await {
                tokio::spawn(echo_connection(incoming));
            }
        };
        tokio::select! {
            () = accept => {}
            _ = stop => {}
        }
        endpoint.close(0u32.into(), b"echo stopped");
        Ok(())
    })
}

/// Serves the raw UDP echo on a current-thread runtime until `stop` fires,
/// sending `(address, "", tid)` on `ready` once bound.
pub fn serve_udp_until(
    tid: Option<u32>,
    ready: std::sync::mpsc::Sender<anyhow::Result<(SocketAddr, String, Option<u32>)>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .context("creating the echo's UDP socket")?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(UDP_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_SOCKET_BUFFER);
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).context("binding the echo's UDP socket")?;
    socket.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let socket = UdpSocket::from_std(socket.into()).context("registering the echo's UDP socket")?;
        let _ = ready.send(Ok((socket.local_addr()?, String::new(), tid)));
        let io = socket.clone_std()?;
        // As the shard's raw UDP socket (see the batch module).
        let _ = batch::set_dont_fragment(&io);
        let echo = async {
            let mut received = RecvBatch::new(128, batch::DEFAULT_SLOT);
            let mut echoes = SendBatch::with_capacity(128, 128 * ECHO_PAYLOAD);
            loop {
                if socket.readable().await.is_err() {
                    continue;
                }
                while socket.try_io(Interest::READABLE, || batch::recv_batch(&io, &mut received)).is_ok() {
                    for datagram in received.iter() {
                        echoes.push(datagram.from, None, &[datagram.bytes]);
                    }
                    send_all(&socket, &io, &mut echoes).await;
                }
            }
        };
        tokio::select! {
            () = echo => {}
            _ = stop => {}
        }
        Ok(())
    })
}

async fn echo_connection(incoming: quinn::Incoming) {
    let Ok(connection) = incoming.await else { return };
    while let Ok(bytes) = connection.read_datagram().await {
        if connection.send_datagram(bytes).is_err() {
            break;
        }
    }
}

/// Counters shared by every echo client of a run.
#[derive(Debug, Default)]
pub struct EchoCounters {
    /// Connections established.
    pub connected: AtomicU64,
    /// Connections that failed to establish.
    pub failed: AtomicU64,
    /// Datagrams sent during the window.
    pub sent: AtomicU64,
    /// Echoes received of datagrams sent during the window.
    pub echoed: AtomicU64,
}

impl EchoCounters {
    /// Connections that have finished connecting, either way.
    pub fn settled(&self) -> u64 {
        self.connected.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

/// Sends `rate_hz` datagrams a second until [`Phase::Stop`], then waits a moment
/// for the last echoes.
pub async fn client(
    endpoint: quinn::Endpoint,
    target: GameTarget,
    rate_hz: u32,
    counters: Arc<EchoCounters>,
    mut phase: watch::Receiver<Phase>,
) {
    let connecting = match endpoint.connect(target.addr, &target.server_name) {
        Ok(connecting) => connecting,
        Err(_) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let Ok(Ok(connection)) = tokio::time::timeout(Duration::from_secs(15), connecting).await else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate_hz.max(1))));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut sent, mut echoed) = (0u64, 0u64);
    let mut in_window = false;
    loop {
        tokio::select! {
            changed = phase.changed() => {
                match if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Stop } {
                    Phase::Hold => in_window = true,
                    Phase::Ramp => {}
                    Phase::Stop => break,
                }
            }
            _ = ticker.tick() => {
                let mut payload = [0u8; ECHO_PAYLOAD];
                payload[0] = if in_window { IN_WINDOW } else { 0 };
                if connection.send_datagram(Bytes::copy_from_slice(&payload)).is_ok() && in_window {
                    sent += 1;
                }
            }
            datagram = connection.read_datagram() => {
                match datagram {
                    Ok(bytes) => echoed += u64::from(bytes.first() == Some(&IN_WINDOW)),
                    Err(_) => break,
                }
            }
        }
    }
    // Echoes of the last datagrams are still on their way back.
    let drain = tokio::time::sleep(Duration::from_millis(500));
    tokio::pin!(drain);
    loop {
        tokio::select! {
            _ = &mut drain => break,
            datagram = connection.read_datagram() => match datagram {
                Ok(bytes) => echoed += u64::from(bytes.first() == Some(&IN_WINDOW)),
                Err(_) => break,
            },
        }
    }
    counters.sent.fetch_add(sent, Ordering::Relaxed);
    counters.echoed.fetch_add(echoed, Ordering::Relaxed);
    connection.close(0u32.into(), b"load test over");
}

/// The first address of the raw UDP echo's clients (one each, counted up).
const FIRST_CLIENT_ADDRESS: u32 = u32::from_be_bytes([127, 96, 0, 1]);

/// Gives the std socket behind a registered tokio socket, for the batched calls.
trait CloneStd {
    fn clone_std(&self) -> anyhow::Result<std::net::UdpSocket>;
}

impl CloneStd for UdpSocket {
    fn clone_std(&self) -> anyhow::Result<std::net::UdpSocket> {
        let fd = std::os::fd::AsFd::as_fd(self).try_clone_to_owned().context("duplicating the UDP socket")?;
        Ok(std::net::UdpSocket::from(fd))
    }
}

/// Sends everything `batch` holds, waiting out a full socket buffer.
async fn send_all(socket: &UdpSocket, io: &std::net::UdpSocket, batch: &mut SendBatch) {
    while !batch.is_empty() {
        match socket.try_io(Interest::WRITABLE, || batch::send_batch(io, batch)) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    batch.clear();
                }
            }
            Err(_) => batch.clear(),
        }
    }
}

/// The raw UDP counterpart of [`client`], `connections` of them started at
/// `ramp_per_sec`, all in this one task: each its own loopback address (as a
/// raw UDP connection has its own address) on one socket, connected once a
/// probe comes back, then `rate_hz` datagrams a second until [`Phase::Stop`];
/// sends and receives batched, as the harness's swarm does for the shard.
pub async fn udp_clients(
    target: SocketAddr,
    connections: u64,
    ramp_per_sec: f64,
    rate_hz: u32,
    counters: Arc<EchoCounters>,
    mut phase: watch::Receiver<Phase>,
) -> anyhow::Result<()> {
    anyhow::ensure!(target.ip().is_loopback() && target.is_ipv4(), "the raw UDP echo runs on IPv4 loopback");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(4 * UDP_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(4 * UDP_SOCKET_BUFFER);
    socket.bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into())?;
    socket.set_nonblocking(true)?;
    let socket: std::net::UdpSocket = socket.into();
    batch::enable_local_addresses(&socket)?;
    let _ = batch::set_dont_fragment(&socket);
    let io = socket.try_clone()?;
    let socket = UdpSocket::from_std(socket)?;
    let start = tokio::time::Instant::now().into_std();
    let ramp = Duration::from_secs_f64(1.0 / ramp_per_sec.max(0.001));
    let period = Duration::from_secs_f64(1.0 / f64::from(rate_hz.max(1)));
    let probe_every = Duration::from_millis(200);
    // Per client: connected yet; the deadline of its next send is in the heap.
    let mut connected = vec![false; connections as usize];
    let mut timers: BinaryHeap<Reverse<(std::time::Instant, u32)>> =
        (0..connections as u32).map(|idx| Reverse((start + ramp.mul_f64(f64::from(idx)), idx))).collect();
    let mut out = SendBatch::with_capacity(1024, 1024 * ECHO_PAYLOAD);
    let mut received = RecvBatch::new(128, batch::DEFAULT_SLOT);
    let (mut sent, mut echoed, mut in_window, mut stopping) = (0u64, 0u64, false, None);
    loop {
        let wake = timers.peek().map_or(start + Duration::from_secs(3600), |Reverse((at, _))| *at);
        let wake = stopping.unwrap_or(wake);
        tokio::select! {
            changed = phase.changed(), if stopping.is_none() => {
                match if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Stop } {
                    Phase::Hold => in_window = true,
                    Phase::Ramp => {}
                    // Echoes of the last datagrams are still on their way back.
                    Phase::Stop => stopping = Some(std::time::Instant::now() + Duration::from_millis(500)),
                }
            }
            ready = socket.readable() => {
                if ready.is_ok() {
                    while socket.try_io(Interest::READABLE, || batch::recv_batch(&io, &mut received)).is_ok() {
                        for datagram in received.iter() {
                            let Some(std::net::IpAddr::V4(to)) = datagram.to else { continue };
                            let idx = u32::from(to).wrapping_sub(FIRST_CLIENT_ADDRESS) as usize;
                            let Some(seen) = connected.get_mut(idx) else { continue };
                            if !*seen {
                                *seen = true;
                                counters.connected.fetch_add(1, Ordering::Relaxed);
                            }
                            echoed += u64::from(datagram.bytes.first() == Some(&IN_WINDOW));
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
        let now = std::time::Instant::now();
        if stopping.is_some_and(|until| now >= until) {
            break;
        }
        while stopping.is_none()
            && let Some(&Reverse((at, idx))) = timers.peek()
            && at <= now
        {
            timers.pop();
            let mut payload = [0u8; ECHO_PAYLOAD];
            let next = if connected[idx as usize] {
                payload[0] = if in_window { IN_WINDOW } else { 0 };
                sent += u64::from(in_window);
                at + period
            } else if now >= start + ramp.mul_f64(f64::from(idx)) + Duration::from_secs(15) {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            } else {
                // The probe stands in for a handshake: once it is echoed, the path works.
                at + probe_every
            };
            out.push(target, Some(std::net::IpAddr::V4(Ipv4Addr::from(FIRST_CLIENT_ADDRESS + idx))), &[&payload]);
            timers.push(Reverse((next.max(now), idx)));
        }
        send_all(&socket, &io, &mut out).await;
    }
    counters.sent.fetch_add(sent, Ordering::Relaxed);
    counters.echoed.fetch_add(echoed, Ordering::Relaxed);
    Ok(())
}
