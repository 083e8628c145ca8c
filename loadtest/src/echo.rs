//! The baselines: a bare quinn datagram echo server and a bare raw UDP echo,
//! and clients that send them fixed-size datagrams at a fixed rate.
//!
//! The quinn echo does what a shard's QUIC transport must do at the least —
//! accept, read each datagram, send one back — with the same TLS identity code
//! and the same transport settings as the shard, so the difference between the
//! two is the shard's own work. The raw UDP echo is the same for the raw UDP
//! transport: one socket with the shard's buffer size, `recv_from` then
//! `send_to`, no handshake and no state.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rally_server::tls::{TlsIdentity, TlsSource};
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
        let echo = async {
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
                let _ = socket.send_to(&buf[..n], from).await;
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

/// The raw UDP counterpart of [`client`]: its own socket (as a raw UDP
/// connection has), connected once a probe comes back, then `rate_hz`
/// datagrams a second until [`Phase::Stop`].
pub async fn udp_client(
    target: SocketAddr,
    rate_hz: u32,
    counters: Arc<EchoCounters>,
    mut phase: watch::Receiver<Phase>,
) {
    let socket = match UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await {
        Ok(socket) if socket.connect(target).await.is_ok() => socket,
        _ => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut buf = [0u8; 2048];
    // The probe stands in for a handshake: the echo answered, so the path works.
    let probe = async {
        loop {
            let _ = socket.send(&[0u8; ECHO_PAYLOAD]).await;
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(15), probe).await.is_err() {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
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
                if socket.try_send(&payload).is_ok() && in_window {
                    sent += 1;
                }
            }
            received = socket.recv(&mut buf) => {
                if let Ok(n) = received {
                    echoed += u64::from(n > 0 && buf[0] == IN_WINDOW);
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
            received = socket.recv(&mut buf) => {
                if let Ok(n) = received {
                    echoed += u64::from(n > 0 && buf[0] == IN_WINDOW);
                }
            }
        }
    }
    counters.sent.fetch_add(sent, Ordering::Relaxed);
    counters.echoed.fetch_add(echoed, Ordering::Relaxed);
}
