//! What the harness reads from the OS: process CPU time, system UDP counters,
//! client sockets with large buffers, and core pinning through `taskset`.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use rally_client::tls::{ServerTrust, client_config};

use crate::report::SystemUdp;

/// Socket buffer size asked for on the generator's client sockets. Linux caps it
/// at `net.core.rmem_max`; a burst of one snapshot per connection must fit.
const CLIENT_SOCKET_BUFFER: usize = 4 << 20;

/// CPU time (user + system) a process has used so far; `None` if it is gone or this is not Linux.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields after it are space-separated.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / clock_ticks_per_second()))
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// System-wide UDP counters from `/proc/net/snmp` (every packet on loopback is
/// counted once out and once in).
#[derive(Debug, Clone, Copy, Default)]
pub struct UdpCounters {
    /// Datagrams sent by every UDP socket.
    pub out_datagrams: u64,
    /// Datagrams dropped because a socket's receive buffer was full.
    pub rcvbuf_errors: u64,
}

impl UdpCounters {
    /// Reads the counters now; zeros where unavailable.
    pub fn read() -> Self {
        let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else { return Self::default() };
        let mut udp = snmp.lines().filter(|line| line.starts_with("Udp:"));
        let (Some(names), Some(values)) = (udp.next(), udp.next()) else { return Self::default() };
        let field = |wanted: &str| {
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(name, _)| *name == wanted)
                .and_then(|(_, value)| value.parse().ok())
                .unwrap_or(0)
        };
        Self { out_datagrams: field("OutDatagrams"), rcvbuf_errors: field("RcvbufErrors") }
    }

    /// What changed since `start`, `window_s` seconds ago; `None` where the
    /// counters could not be read (all zero).
    pub fn since(&self, start: &Self, window_s: f64) -> Option<SystemUdp> {
        if self.out_datagrams == 0 && self.rcvbuf_errors == 0 {
            return None;
        }
        Some(SystemUdp {
            packets_out_per_s: self.out_datagrams.saturating_sub(start.out_datagrams) as f64 / window_s.max(1e-9),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(start.rcvbuf_errors),
        })
    }
}

/// Whether `taskset` can be run here.
pub fn has_taskset() -> bool {
    Command::new("taskset").arg("--version").output().is_ok_and(|out| out.status.success())
}

/// Pins every thread of this process to `core` (threads created later inherit it).
pub fn pin_self(core: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &core.to_string(), &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset")?;
    anyhow::ensure!(status.success(), "taskset could not pin the load generator to core {core}");
    Ok(())
}

/// A UDP socket for client connections with large kernel buffers, wrapped in a
/// quinn endpoint with `client_config` as its default.
pub fn client_endpoint(client_config: quinn::ClientConfig) -> anyhow::Result<quinn::Endpoint> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .context("creating a client UDP socket")?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(CLIENT_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(CLIENT_SOCKET_BUFFER);
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).context("binding a client UDP socket")?;
    let mut endpoint =
        quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket.into(), Arc::new(quinn::TokioRuntime))
            .context("creating a client endpoint")?;
    endpoint.set_default_client_config(client_config);
    Ok(endpoint)
}

/// `count` (at least one) client endpoints trusting the server whose
/// certificate has SHA-256 `fingerprint`, with the generator's transport settings.
pub fn client_endpoints(fingerprint: &str, count: usize) -> anyhow::Result<Vec<quinn::Endpoint>> {
    let mut client = client_config(&ServerTrust::Fingerprint(fingerprint.to_owned()))?;
    client.transport_config(Arc::new(client_transport()?));
    (0..count.max(1)).map(|_| client_endpoint(client.clone())).collect()
}

/// The generator's client transport: the SDK's.
pub fn client_transport() -> anyhow::Result<quinn::TransportConfig> {
    // The SDK's own settings (ACK frequency, no path-MTU probes), so the
    // generator's clients ask the shard for what a game's would.
    rally_client::quic::transport_config()
}

/// The calling thread's kernel id (Linux); `None` elsewhere.
pub fn current_tid() -> Option<u32> {
    // `/proc/thread-self` links to `PID/task/TID`.
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// CPU time (user + system) thread `tid` of this process has used so far.
pub fn thread_cpu(tid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / clock_ticks_per_second()))
}

/// Pins one thread (by kernel id) to `core`.
pub fn pin_thread(tid: u32, core: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-p", "-c", &core.to_string(), &tid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset")?;
    anyhow::ensure!(status.success(), "taskset could not pin thread {tid} to core {core}");
    Ok(())
}

/// Cores this process could use when it first asked: read once, because
/// [`pin_self`] narrows the process's affinity to one core, after which the
/// OS would answer 1 (a sweep's second point then ran shard and clients on
/// one core, unpinned).
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}
