//! A capacity run: for each match count, ramp two-player matches on a shard,
//! hold the load, and measure the shard (metrics endpoint, `/proc`) and the
//! clients; optionally the same load on the bare echo baseline first.
//!
//! Each point starts a fresh child process (shard or echo) pinned to core 0,
//! so counters, histograms and CPU time belong to that point alone. The load
//! generator is this process, pinned to core 1 by the caller.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use rally_client::tls::{ServerTrust, client_config};
use rally_protocol::token::TokenClaims;
use rally_protocol::{MatchId, PROTOCOL_VERSION, PlayerId};
use serde::Serialize;
use tokio::sync::watch;

use crate::Phase;
use crate::echo::{self, EchoCounters};
use crate::players::{self, PlayerCounters, PlayerTarget};
use crate::prometheus::{self, MetricsSnapshot};
use crate::sys::{self, UdpCounters};

/// Tick budget the capacity target allows at p99.
pub const TICK_BUDGET_SECONDS: f64 = 0.004;

/// Snapshots (and inputs) per second per connection in the shard's default config,
/// and so the echo baseline's per-connection rate.
pub const PER_CONNECTION_HZ: u32 = 30;

/// Core the server under test is pinned to; the generator takes [`GENERATOR_CORE`].
pub const SERVER_CORE: usize = 0;
/// Core the load generator is pinned to.
pub const GENERATOR_CORE: usize = 1;

/// The shard under test.
#[derive(Debug, Clone)]
pub enum ShardTarget {
    /// Start `exe shard ...` as a child for each point.
    Spawn {
        /// The `rally` binary.
        exe: PathBuf,
    },
    /// A shard that is already running.
    Remote {
        /// Its QUIC address.
        addr: SocketAddr,
        /// SHA-256 of its certificate.
        fingerprint: String,
        /// Its metrics endpoint, if reachable.
        metrics: Option<SocketAddr>,
        /// Its name, as tokens must carry it.
        name: String,
        /// The issuer key it trusts (key id 1).
        issuer: Box<SigningKey>,
    },
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The shard.
    pub target: ShardTarget,
    /// Match counts to measure, in order.
    pub match_counts: Vec<u32>,
    /// New matches started per second during the ramp.
    pub ramp_per_sec: f64,
    /// Pause between the last connection and the window.
    pub settle: Duration,
    /// The measured window.
    pub hold: Duration,
    /// Run the bare echo baseline at each point too (needs a spawnable binary).
    pub echo_baseline: bool,
    /// Pin child servers to core 0 with `taskset`.
    pub pin: bool,
    /// Client UDP sockets (quinn endpoints) the generator spreads connections over.
    pub client_endpoints: usize,
}

/// What one shard point measured.
#[derive(Debug, Clone, Serialize)]
pub struct ShardPoint {
    /// Matches asked for.
    pub matches: u32,
    /// Connections asked for (two per match).
    pub connections: u64,
    /// Connections welcomed.
    pub connected: u64,
    /// Connections that failed before the welcome.
    pub failed: u64,
    /// Welcomed connections that ended before the window closed.
    pub dropped: u64,
    /// Length of the measured window in seconds.
    pub window_s: f64,
    /// Datagrams the shard received per second (its counter).
    pub datagrams_in_per_s: f64,
    /// Datagrams the shard sent per second (its counter).
    pub datagrams_out_per_s: f64,
    /// In + out.
    pub datagrams_per_s: f64,
    /// Median tick duration in ms, interpolated from histogram buckets.
    pub tick_p50_ms: Option<f64>,
    /// 99th percentile tick duration in ms, interpolated from histogram buckets.
    pub tick_p99_ms: Option<f64>,
    /// Fraction of ticks within the 4 ms budget (exact: 4 ms is a bucket bound).
    pub ticks_within_budget: Option<f64>,
    /// Ticks run in the window.
    pub ticks: u64,
    /// Ticks that started over a tick late.
    pub late_ticks: u64,
    /// Datagrams quinn refused to queue on the shard.
    pub shard_send_dropped: u64,
    /// Datagrams dropped because the shard loop's inbound queue was full.
    pub inbound_dropped: u64,
    /// Datagrams refused by the per-client rate limit.
    pub rate_limited: u64,
    /// Snapshots the clients received in the window.
    pub snapshots: u64,
    /// Snapshots the clients should have received (from snapshot ticks).
    pub snapshots_expected: u64,
    /// 1 − received / expected.
    pub client_loss: f64,
    /// Snapshots received but stale or undecodable.
    pub snapshots_unusable: u64,
    /// Connections silent at the end of the window.
    pub stalled: u64,
    /// Shard process CPU over the window, % of one core.
    pub shard_cpu_pct: Option<f64>,
    /// Load generator CPU over the window, % of one core.
    pub generator_cpu_pct: f64,
    /// UDP packets sent per second system-wide (both directions on loopback).
    pub udp_packets_per_s: f64,
    /// UDP receive-buffer overflows system-wide in the window.
    pub udp_rcvbuf_errors: u64,
    /// p99 ≤ 4 ms, no late ticks, no loss, every connection in.
    pub pass: bool,
}

/// What one echo point measured.
#[derive(Debug, Clone, Serialize)]
pub struct EchoPoint {
    /// Connections asked for.
    pub connections: u64,
    /// Connections established.
    pub connected: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Length of the measured window in seconds.
    pub window_s: f64,
    /// Datagrams the echo received plus sent per second (from the clients' counts).
    pub datagrams_per_s: f64,
    /// 1 − echoed / sent.
    pub loss: f64,
    /// Echo process CPU over the window, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Load generator CPU over the window, % of one core.
    pub generator_cpu_pct: f64,
    /// UDP packets sent per second system-wide.
    pub udp_packets_per_s: f64,
    /// UDP receive-buffer overflows system-wide in the window.
    pub udp_rcvbuf_errors: u64,
}

/// One row of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// The shard's numbers.
    pub shard: ShardPoint,
    /// The echo's numbers at the same load, when asked for.
    pub echo: Option<EchoPoint>,
    /// Shard datagrams/s over echo datagrams/s at the same offered load.
    pub rate_ratio: Option<f64>,
    /// Shard datagrams per CPU-second over echo datagrams per CPU-second: an
    /// estimate of the ratio of the two saturation rates.
    pub efficiency_ratio: Option<f64>,
}

/// A finished run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Rows in the order measured.
    pub rows: Vec<BenchRow>,
    /// The most matches that passed every criterion.
    pub max_passing_matches: Option<u32>,
}

/// A child server process, killed when dropped.
struct ChildServer {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    line: String,
    dir: PathBuf,
}

impl ChildServer {
    /// Starts `exe args`, pinned if asked, and waits for a stdout line starting with `ready_prefix`.
    fn start(exe: &Path, args: &[String], pin: bool, ready_prefix: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("rally-bench-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir)?;
        let stderr = std::fs::File::create(dir.join("stderr.log"))?;
        let mut command = if pin {
            let mut command = Command::new("taskset");
            command.args(["-c", &SERVER_CORE.to_string()]).arg(exe);
            command
        } else {
            Command::new(exe)
        };
        let mut child = command
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().context("child stdout")?);
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line)? == 0 {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                bail!("the server exited before it was ready: {}", log.trim());
            }
            if line.starts_with(ready_prefix) {
                break;
            }
        }
        Ok(Self { child, _stdout: stdout, line: line.trim().to_owned(), dir })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads `shard NAME listening on ADDR (QUIC), metrics on http://ADDR/metrics, certificate sha256 HEX`.
fn parse_shard_line(line: &str) -> anyhow::Result<(SocketAddr, SocketAddr, String)> {
    let quic = between(line, " listening on ", " (QUIC)").context("no QUIC address")?;
    let metrics = between(line, "metrics on http://", "/metrics").context("no metrics address")?;
    let fingerprint = line.rsplit_once("certificate sha256 ").context("no fingerprint")?.1;
    Ok((quic.parse()?, metrics.parse()?, fingerprint.trim().to_owned()))
}

/// Reads `echo listening on ADDR, certificate sha256 HEX`.
fn parse_echo_line(line: &str) -> anyhow::Result<(SocketAddr, String)> {
    let addr = between(line, "echo listening on ", ",").context("no echo address")?;
    let fingerprint = line.rsplit_once("certificate sha256 ").context("no fingerprint")?.1;
    Ok((addr.parse()?, fingerprint.trim().to_owned()))
}

fn between<'a>(line: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &line[line.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A shard ready for one point.
struct LiveShard {
    addr: SocketAddr,
    fingerprint: String,
    metrics: Option<SocketAddr>,
    name: String,
    issuer: SigningKey,
    pid: Option<u32>,
    _child: Option<ChildServer>,
}

fn live_shard(config: &BenchConfig, matches: u32) -> anyhow::Result<LiveShard> {
    match &config.target {
        ShardTarget::Remote { addr, fingerprint, metrics, name, issuer } => Ok(LiveShard {
            addr: *addr,
            fingerprint: fingerprint.clone(),
            metrics: *metrics,
            name: name.clone(),
            issuer: (**issuer).clone(),
            pid: None,
            _child: None,
        }),
        ShardTarget::Spawn { exe } => {
            let issuer = SigningKey::generate(&mut rand::rngs::OsRng);
            let name = "bench-shard".to_owned();
            let args: Vec<String> = [
                "--log-level",
                "warn",
                "shard",
                "--listen",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
                "--name",
                &name,
                "--token-key",
                &format!("1:{}", hex(issuer.verifying_key().as_bytes())),
                "--max-matches",
                &(matches as usize * 2).max(5_000).to_string(),
            ]
            .iter()
            .map(|arg| (*arg).to_owned())
            .collect();
            let child = ChildServer::start(exe, &args, config.pin, "shard ")?;
            let (addr, metrics, fingerprint) = parse_shard_line(&child.line)?;
            Ok(LiveShard {
                addr,
                fingerprint,
                metrics: Some(metrics),
                name,
                issuer,
                pid: Some(child.pid()),
                _child: Some(child),
            })
        }
    }
}

fn client_endpoints(fingerprint: &str, count: usize) -> anyhow::Result<Vec<quinn::Endpoint>> {
    let mut client = client_config(&ServerTrust::Fingerprint(fingerprint.to_owned()))?;
    client.transport_config(Arc::new(sys::client_transport()?));
    (0..count.max(1)).map(|_| sys::client_endpoint(client.clone())).collect()
}

/// CPU and system counters at one instant.
struct Mark {
    at: Instant,
    server_cpu: Option<Duration>,
    generator_cpu: Option<Duration>,
    udp: UdpCounters,
}

impl Mark {
    fn now(server_pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            server_cpu: server_pid.and_then(sys::process_cpu),
            generator_cpu: sys::process_cpu(std::process::id()),
            udp: UdpCounters::read(),
        }
    }

    /// (window seconds, server CPU %, generator CPU %, UDP packets/s, rcvbuf errors) since `start`.
    fn since(&self, start: &Mark) -> (f64, Option<f64>, f64, f64, u64) {
        let window = self.at.duration_since(start.at).as_secs_f64().max(1e-9);
        let pct = |a: Option<Duration>, b: Option<Duration>| Some(100.0 * b?.saturating_sub(a?).as_secs_f64() / window);
        (
            window,
            pct(start.server_cpu, self.server_cpu),
            pct(start.generator_cpu, self.generator_cpu).unwrap_or(f64::NAN),
            self.udp.out_datagrams.saturating_sub(start.udp.out_datagrams) as f64 / window,
            self.udp.rcvbuf_errors.saturating_sub(start.udp.rcvbuf_errors),
        )
    }
}

/// Waits until `settled()` reaches `want` or the deadline passes.
async fn wait_settled(settled: impl Fn() -> u64, want: u64, deadline: tokio::time::Instant) {
    while settled() < want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_shard_point(config: &BenchConfig, matches: u32) -> anyhow::Result<ShardPoint> {
    let shard = live_shard(config, matches)?;
    let endpoints = client_endpoints(&shard.fingerprint, config.client_endpoints)?;
    let target = PlayerTarget { addr: shard.addr, server_name: "localhost".into() };
    let counters = Arc::new(PlayerCounters::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let connections = u64::from(matches) * 2;
    let match_base: u64 = rand::random::<u64>() >> 20;
    let ramp_start = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / config.ramp_per_sec.max(1.0));
    let mut tasks = Vec::with_capacity(connections as usize);
    for match_idx in 0..u64::from(matches) {
        tokio::time::sleep_until(ramp_start + period * match_idx as u32).await;
        let now = unix_ms();
        for seat in 0..2u8 {
            let mut nonce = [0u8; 16];
            rand::Rng::fill(&mut rand::thread_rng(), &mut nonce);
            let claims = TokenClaims {
                protocol_version: PROTOCOL_VERSION,
                key_id: 1,
                player_id: PlayerId((match_base + match_idx) * 2 + u64::from(seat)),
                match_id: MatchId(match_base + match_idx),
                seat,
                n_seats: 2,
                // As many points as the game allows, so matches outlast the run.
                points_to_win: rally_sim::pong::MAX_POINTS_TO_WIN,
                issued_at_ms: now,
                expires_at_ms: now + 600_000,
                nonce,
                shard: shard.name.clone(),
            };
            let token = claims.sign(&shard.issuer).context("signing a token")?;
            let endpoint = endpoints[(match_idx as usize * 2 + usize::from(seat)) % endpoints.len()].clone();
            tasks.push(tokio::spawn(players::play(
                endpoint,
                target.clone(),
                token,
                counters.clone(),
                phase_rx.clone(),
            )));
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    wait_settled(|| counters.settled(), connections, deadline).await;
    tokio::time::sleep(config.settle).await;

    let before_metrics = scrape_optional(shard.metrics).await;
    let before = Mark::now(shard.pid);
    let _ = phase_tx.send(Phase::Hold);
    tokio::time::sleep(config.hold).await;
    let after = Mark::now(shard.pid);
    let after_metrics = scrape_optional(shard.metrics).await;
    let _ = phase_tx.send(Phase::Stop);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    drop(shard);

    let (window_s, shard_cpu_pct, generator_cpu_pct, udp_packets_per_s, udp_rcvbuf_errors) = after.since(&before);
    let (m0, m1) = (before_metrics.unwrap_or_default(), after_metrics.unwrap_or_default());
    let delta = |name: &str| (m1.value(name) - m0.value(name)).max(0.0);
    let ticks_hist =
        prometheus::bucket_delta(&m0.buckets("rally_shard_tick_seconds"), &m1.buckets("rally_shard_tick_seconds"));
    let datagrams_in_per_s = delta("rally_shard_datagrams_in_total") / window_s;
    let datagrams_out_per_s = delta("rally_shard_datagrams_out_total") / window_s;
    let snapshots = counters.snapshots.load(Ordering::Relaxed);
    let snapshots_expected = counters.snapshots_expected.load(Ordering::Relaxed);
    let mut point = ShardPoint {
        matches,
        connections,
        connected: counters.connected.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        dropped: counters.dropped.load(Ordering::Relaxed),
        window_s,
        datagrams_in_per_s,
        datagrams_out_per_s,
        datagrams_per_s: datagrams_in_per_s + datagrams_out_per_s,
        tick_p50_ms: prometheus::quantile(&ticks_hist, 0.5).map(|s| s * 1e3),
        tick_p99_ms: prometheus::quantile(&ticks_hist, 0.99).map(|s| s * 1e3),
        ticks_within_budget: prometheus::fraction_at_most(&ticks_hist, TICK_BUDGET_SECONDS),
        ticks: ticks_hist.last().map_or(0, |(_, count)| *count as u64),
        late_ticks: delta("rally_shard_late_ticks_total") as u64,
        shard_send_dropped: delta("rally_shard_datagrams_dropped_total") as u64,
        inbound_dropped: delta("rally_shard_inbound_dropped_total") as u64,
        rate_limited: delta("rally_shard_rate_limited_datagrams_total") as u64,
        snapshots,
        snapshots_expected,
        client_loss: if snapshots_expected == 0 { 1.0 } else { 1.0 - snapshots as f64 / snapshots_expected as f64 },
        snapshots_unusable: counters.snapshots_unusable.load(Ordering::Relaxed),
        stalled: counters.stalled.load(Ordering::Relaxed),
        shard_cpu_pct,
        generator_cpu_pct,
        udp_packets_per_s,
        udp_rcvbuf_errors,
        pass: false,
    };
    point.pass = point.connected == connections
        && point.failed == 0
        && point.dropped == 0
        && point.ticks_within_budget.is_some_and(|within| within >= 0.99)
        && point.late_ticks == 0
        && point.snapshots_expected > 0
        && point.snapshots == point.snapshots_expected
        && point.snapshots_unusable == 0
        && point.shard_send_dropped == 0
        && point.inbound_dropped == 0
        && point.rate_limited == 0;
    Ok(point)
}

async fn scrape_optional(addr: Option<SocketAddr>) -> Option<MetricsSnapshot> {
    match prometheus::scrape(addr?).await {
        Ok(snapshot) => Some(snapshot),
        Err(err) => {
            tracing::warn!(%err, "could not scrape the shard's metrics");
            None
        }
    }
}

async fn run_echo_point(config: &BenchConfig, exe: &Path, connections: u64) -> anyhow::Result<EchoPoint> {
    let args = vec!["--log-level".to_owned(), "warn".to_owned(), "bench-shard".to_owned(), "--serve-echo".to_owned()];
    let child = ChildServer::start(exe, &args, config.pin, "echo listening on ")?;
    let (addr, fingerprint) = parse_echo_line(&child.line)?;
    let endpoints = client_endpoints(&fingerprint, config.client_endpoints)?;
    let target = PlayerTarget { addr, server_name: "localhost".into() };
    let counters = Arc::new(EchoCounters::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let ramp_start = tokio::time::Instant::now();
    // The same connection ramp as the shard's (two per match).
    let period = Duration::from_secs_f64(0.5 / config.ramp_per_sec.max(1.0));
    let mut tasks = Vec::with_capacity(connections as usize);
    for conn_idx in 0..connections {
        tokio::time::sleep_until(ramp_start + period * conn_idx as u32).await;
        let endpoint = endpoints[conn_idx as usize % endpoints.len()].clone();
        tasks.push(tokio::spawn(echo::client(
            endpoint,
            target.clone(),
            PER_CONNECTION_HZ,
            counters.clone(),
            phase_rx.clone(),
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    wait_settled(|| counters.settled(), connections, deadline).await;
    tokio::time::sleep(config.settle).await;
    let before = Mark::now(Some(child.pid()));
    let _ = phase_tx.send(Phase::Hold);
    tokio::time::sleep(config.hold).await;
    let after = Mark::now(Some(child.pid()));
    let _ = phase_tx.send(Phase::Stop);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    drop(child);
    let (window_s, server_cpu_pct, generator_cpu_pct, udp_packets_per_s, udp_rcvbuf_errors) = after.since(&before);
    let sent = counters.sent.load(Ordering::Relaxed);
    let echoed = counters.echoed.load(Ordering::Relaxed);
    Ok(EchoPoint {
        connections,
        connected: counters.connected.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        window_s,
        datagrams_per_s: (sent + echoed) as f64 / window_s,
        loss: if sent == 0 { 1.0 } else { 1.0 - echoed as f64 / sent as f64 },
        server_cpu_pct,
        generator_cpu_pct,
        udp_packets_per_s,
        udp_rcvbuf_errors,
    })
}

/// Runs every point on a current-thread runtime (the generator has one core;
/// one thread avoids cross-thread wakeups) and returns the report.
pub fn run(config: &BenchConfig) -> anyhow::Result<BenchReport> {
    let echo_exe = match (&config.target, config.echo_baseline) {
        (ShardTarget::Spawn { exe }, true) => Some(exe.clone()),
        (ShardTarget::Remote { .. }, true) => {
            Some(std::env::current_exe().context("locating this binary for the echo baseline")?)
        }
        (_, false) => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut rows = Vec::new();
        for &matches in &config.match_counts {
            let echo = match &echo_exe {
                Some(exe) => {
                    let point = run_echo_point(config, exe, u64::from(matches) * 2).await?;
                    print_echo(&point);
                    Some(point)
                }
                None => None,
            };
            let shard = run_shard_point(config, matches).await?;
            print_shard(&shard);
            let rate_ratio = echo.as_ref().map(|echo| shard.datagrams_per_s / echo.datagrams_per_s);
            let efficiency_ratio = echo.as_ref().and_then(|echo| {
                let shard_per_cpu = shard.datagrams_per_s / shard.shard_cpu_pct?;
                let echo_per_cpu = echo.datagrams_per_s / echo.server_cpu_pct?;
                Some(shard_per_cpu / echo_per_cpu)
            });
            rows.push(BenchRow { shard, echo, rate_ratio, efficiency_ratio });
        }
        let max_passing_matches = rows.iter().filter(|row| row.shard.pass).map(|row| row.shard.matches).max();
        Ok(BenchReport { rows, max_passing_matches })
    })
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.digits$}"))
}

fn print_echo(point: &EchoPoint) {
    println!(
        "  echo  {:>5} conns: {:>8.0} dgram/s, loss {:.4}%, echo cpu {}%, generator cpu {:.0}%, udp pkts/s {:.0}, rcvbuf errors {}",
        point.connected,
        point.datagrams_per_s,
        point.loss * 100.0,
        opt(point.server_cpu_pct, 0),
        point.generator_cpu_pct,
        point.udp_packets_per_s,
        point.udp_rcvbuf_errors,
    );
}

fn print_shard(point: &ShardPoint) {
    println!(
        "  shard {:>5} matches: {:>8.0} dgram/s, tick p99 {} ms, late {}, loss {:.4}%, shard cpu {}%, generator cpu {:.0}%, udp pkts/s {:.0}, {}",
        point.matches,
        point.datagrams_per_s,
        opt(point.tick_p99_ms, 2),
        point.late_ticks,
        point.client_loss * 100.0,
        opt(point.shard_cpu_pct, 0),
        point.generator_cpu_pct,
        point.udp_packets_per_s,
        if point.pass { "PASS" } else { "FAIL" },
    );
}

/// The human-readable table of a report.
pub fn render_table(report: &BenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>7} {:>6} {:>9} {:>7} {:>7} {:>5} {:>8} {:>6} {:>6} {:>9} {:>6} {:>8} {:>6} {:>6} {:>5}",
        "matches",
        "conns",
        "dgram/s",
        "p50 ms",
        "p99 ms",
        "late",
        "loss %",
        "shard%",
        "gen%",
        "udp pk/s",
        "result",
        "echo/s",
        "echo%",
        "ratio",
        "eff"
    );
    for row in &report.rows {
        let shard = &row.shard;
        let _ = writeln!(
            out,
            "{:>7} {:>6} {:>9.0} {:>7} {:>7} {:>5} {:>8.4} {:>6} {:>6.0} {:>9.0} {:>6} {:>8} {:>6} {:>6} {:>5}",
            shard.matches,
            shard.connected,
            shard.datagrams_per_s,
            opt(shard.tick_p50_ms, 2),
            opt(shard.tick_p99_ms, 2),
            shard.late_ticks,
            shard.client_loss * 100.0,
            opt(shard.shard_cpu_pct, 0),
            shard.generator_cpu_pct,
            shard.udp_packets_per_s,
            if shard.pass { "PASS" } else { "FAIL" },
            opt(row.echo.as_ref().map(|echo| echo.datagrams_per_s), 0),
            opt(row.echo.as_ref().and_then(|echo| echo.server_cpu_pct), 0),
            opt(row.rate_ratio, 2),
            opt(row.efficiency_ratio, 2),
        );
    }
    let _ = writeln!(
        out,
        "most matches passing (p99 <= 4 ms, 0 late ticks, 0 loss): {}",
        report.max_passing_matches.map_or_else(|| "none".to_owned(), |matches| matches.to_string())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_parse() {
        let line = "shard bench-shard listening on 127.0.0.1:4433 (QUIC), metrics on http://127.0.0.1:9000/metrics, certificate sha256 abcd";
        let (quic, metrics, fingerprint) = parse_shard_line(line).unwrap();
        assert_eq!(quic, SocketAddr::from(([127, 0, 0, 1], 4433)));
        assert_eq!(metrics, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(fingerprint, "abcd");
        let (echo, fingerprint) = parse_echo_line("echo listening on 127.0.0.1:5000, certificate sha256 ef").unwrap();
        assert_eq!(echo, SocketAddr::from(([127, 0, 0, 1], 5000)));
        assert_eq!(fingerprint, "ef");
    }
}
