//! `rally shard`: one match shard serving QUIC, with metrics, results and
//! drain, and the agent `--redis-url` runs to register it in the shard
//! registry and publish its results, and (`--agones`) its bridge to the
//! Agones SDK sidecar.

mod agones;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use rally_matchmaker::RedisConnection;
use rally_matchmaker::redis::{RedisBus, RedisRegistry};
use rally_matchmaker::registry::{ShardInfo, ShardLoad};
use rally_matchmaker::shard_agent::{self, AgentReport, ShardAgentConfig};
use rally_protocol::results::MatchResult;
use rally_server::ConnectionLimits;
use rally_server::ServeConfig;
use rally_server::ShardConfig;
use rally_server::ShardHandle;
use rally_server::tls::TlsSource;
use rally_sim::game::LifecycleConfig;
use rally_sim::pong::PongWorld;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::common::{READY_JSON_HELP, ReadyLine, parse_token_keys, shutdown_signal};

/// `rally shard` flags.
#[derive(Debug, Clone, Args)]
pub struct ShardArgs {
    /// UDP address for QUIC.
    #[arg(long, default_value = "127.0.0.1:7777", env = "RALLY_SHARD_LISTEN")]
    pub listen: SocketAddr,
    /// Also serve raw UDP on this address: unencrypted (tokens and traffic are
    /// readable on the path), for LAN play, bot farms and load tests. Off by default.
    #[arg(long, env = "RALLY_SHARD_UDP_ADDR")]
    pub udp_addr: Option<SocketAddr>,
    /// The shard's name: connect tokens must name it.
    #[arg(long, default_value = "shard-local", env = "RALLY_SHARD_NAME")]
    pub name: String,
    /// Directory for the development certificate, results and replays.
    #[arg(long, default_value = "data", env = "RALLY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// TLS certificate chain (PEM). Without it a self-signed one is kept in the data dir.
    #[arg(long, requires = "key", env = "RALLY_SHARD_CERT")]
    pub cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "cert", env = "RALLY_SHARD_KEY")]
    pub key: Option<PathBuf>,
    /// Token issuer public key as `KEY_ID:HEX` (32-byte Ed25519, hex); repeat to rotate keys.
    #[arg(long = "token-key", env = "RALLY_TOKEN_KEYS", value_delimiter = ',')]
    pub token_keys: Vec<String>,
    /// Prometheus metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9600", env = "RALLY_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
    /// Simulation ticks per second.
    #[arg(long, default_value_t = 60)]
    pub tick_rate: u16,
    /// Snapshots per second per client (must divide the tick rate).
    #[arg(long, default_value_t = 30)]
    pub snapshot_rate: u16,
    /// Most matches at once.
    #[arg(long, default_value_t = 5_000)]
    pub max_matches: usize,
    /// Seconds a dropped player's seat is held for a reconnect (then the seat forfeits).
    #[arg(long, default_value_t = 10.0)]
    pub resume_grace: f64,
    /// Seconds for every seat of a new match to show up before it is abandoned.
    #[arg(long, default_value_t = 30.0)]
    pub fill_timeout: f64,
    /// Seconds running matches may play on after SIGTERM before they are cut short.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Sustained input datagrams per second a client may send before being throttled.
    #[arg(long, default_value_t = 120)]
    pub max_datagram_rate: u32,
    /// Append each match result as a JSON line here (default: <data-dir>/results.jsonl).
    #[arg(long)]
    pub results_file: Option<PathBuf>,
    /// Write each match's replay (input log) into this directory.
    #[arg(long)]
    pub replay_dir: Option<PathBuf>,
    /// Register in the shard registry on this Redis and publish results to its
    /// results stream (as well as the results file), for `rally matchmaker --redis-url`.
    #[arg(long, env = "RALLY_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (the matchmaker's must match).
    #[arg(long, default_value = "rally", env = "RALLY_REDIS_PREFIX")]
    pub redis_prefix: String,
    /// The region this shard registers in.
    #[arg(long, default_value = "local", env = "RALLY_REGION")]
    pub region: String,
    /// `host:port` players reach this shard at [default: the bound --listen address].
    #[arg(long, env = "RALLY_SHARD_PUBLIC_ADDR")]
    pub public_addr: Option<String>,
    /// Print the machine-readable ready line instead of the banner.
    #[arg(long, help = READY_JSON_HELP)]
    pub ready_json: bool,
    /// Run as an Agones GameServer through the SDK sidecar (AGONES_SDK_GRPC_PORT): labels, the
    /// `matches` Counter (capacity --max-matches), Ready once listening, health pings while the
    /// tick loop advances, Allocated while holding matches, Shutdown after the drain. The public
    /// address is the GameServer's node address and the host port of its port named `quic`.
    #[arg(long, env = "RALLY_AGONES")]
    pub agones: bool,
}

fn secs_to_ticks(seconds: f64, tick_rate: u16) -> u32 {
    (seconds * f64::from(tick_rate)).round().clamp(1.0, f64::from(u32::MAX)) as u32
}

impl ShardArgs {
    /// The serve config these flags describe.
    pub fn serve_config(&self) -> anyhow::Result<ServeConfig> {
        let token_keys = parse_token_keys(&self.token_keys)?;
        if token_keys.is_empty() {
            bail!(
                "no token issuer key: pass --token-key KEY_ID:HEX with the public key of whoever mints \
                 connect tokens (the matchmaker prints it at start)"
            );
        }
        let tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => TlsSource::Files { cert: cert.clone(), key: key.clone() },
            _ => TlsSource::SelfSigned {
                dir: self.data_dir.clone(),
                names: vec!["localhost".into(), self.listen.ip().to_string()],
            },
        };
        let lifecycle = LifecycleConfig {
            fill_timeout_ticks: secs_to_ticks(self.fill_timeout, self.tick_rate),
            ..LifecycleConfig::default()
        };
        let shard = ShardConfig {
            name: self.name.clone(),
            tick_rate_hz: self.tick_rate,
            snapshot_rate_hz: self.snapshot_rate,
            lifecycle,
            resume_grace_ticks: secs_to_ticks(self.resume_grace, self.tick_rate),
            max_matches: self.max_matches,
            rng_seed: rand::random(),
            ..ShardConfig::default()
        };
        shard.validate().map_err(anyhow::Error::msg)?;
        Ok(ServeConfig {
            listen: self.listen,
            tls,
            shard,
            token_keys,
            limits: ConnectionLimits { datagrams_per_second: self.max_datagram_rate, ..ConnectionLimits::default() },
            replay_dir: self.replay_dir.clone(),
            drain_timeout: Duration::from_secs_f64(self.drain_timeout),
            max_catchup_ticks: 5,
            udp_listen: self.udp_addr,
        })
    }
}

/// Runs the shard until SIGTERM/SIGINT, then drains.
pub fn run(args: ShardArgs) -> anyhow::Result<()> {
    let config = args.serve_config()?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    if let Some(dir) = &args.replay_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let results_path = args.results_file.clone().unwrap_or_else(|| args.data_dir.join("results.jsonl"));
    // One thread: the shard is designed to saturate one core; run more shards for more cores.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Install the recorder before anything registers a metric handle.
    rally_server::ops::prometheus();
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        // Under Agones the sidecar must answer before anything binds: no sidecar, no shard.
        let mut agones_run = if args.agones { Some(agones::AgonesRun::connect().await?) } else { None };
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let shard = rally_server::start::<PongWorld>(config, results_tx).await?;
        let metrics = rally_server::ops::serve(args.metrics_addr, shard.readiness.clone()).await?;
        let public_addr = match &agones_run {
            Some((_, game_server)) => Some(agones::public_addr(game_server, args.public_addr.as_deref())?),
            None => args.public_addr.clone(),
        };
        let (results_rx, agent) = match &args.redis_url {
            Some(url) => {
                // Before the writer appends anything: what a previous process
                // recorded lately, for the agent to settle before registering.
                let recovered = recent_results(&results_path, Duration::from_secs(120));
                let (rx, agent) = start_shard_agent(
                    url,
                    &args.redis_prefix,
                    &args.region,
                    public_addr.as_deref(),
                    args.max_matches,
                    &shard,
                    results_rx,
                    recovered,
                )?;
                (rx, Some(agent))
            }
            None => (results_rx, None),
        };
        let writer = tokio::spawn(write_results(results_rx, results_path));
        let agones_run = match agones_run.take() {
            Some((mut run, _)) => {
                let config = rally_agones::BridgeConfig::new(args.max_matches, env!("CARGO_PKG_VERSION"), &args.region);
                run.start(&shard, config).await?;
                tracing::info!(public_addr = public_addr.as_deref().unwrap_or_default(), "Agones GameServer Ready");
                Some(run)
            }
            None => None,
        };
        if args.ready_json {
            ReadyLine::with_shard("shard", &shard, metrics).print()?;
        } else {
            println!(
                "shard {} listening on {} (QUIC), metrics on http://{metrics}/metrics, certificate sha256 {}",
                shard.name, shard.local_addr, shard.fingerprint
            );
            if let Some(udp_addr) = shard.udp_addr {
                println!("shard {} also serving raw UDP (unencrypted) on {udp_addr}", shard.name);
            }
        }
        shutdown.await;
        tracing::info!("shutdown requested; draining");
        if let Some(agent) = &agent {
            agent.drain();
        }
        shard.drain();
        let report = shard.wait().await?;
        let written = writer.await.context("results writer panicked")??;
        if let Some(agent) = agent {
            let agent = agent.wait().await?;
            tracing::info!(published = agent.published, unpublished = agent.unpublished, "registry agent stopped");
            if !args.ready_json {
                println!("registry: {} results published, {} unpublished", agent.published, agent.unpublished);
            }
        }
        // Last: Agones deletes the pod once told, so every result is on disk and published first.
        if let Some(agones_run) = agones_run {
            agones_run.shutdown().await?;
        }
        tracing::info!(
            ticks = report.ticks,
            late_ticks = report.late_ticks,
            matches_ended = report.stats.matches_ended,
            cut_short = report.aborted_matches,
            results_written = written,
            "shard stopped"
        );
        if !args.ready_json {
            println!(
                "shard stopped: {} ticks, {} late, {} matches ended ({} cut short), {written} results written",
                report.ticks, report.late_ticks, report.stats.matches_ended, report.aborted_matches
            );
        }
        Ok(())
    })
}

/// Appends results as JSON lines, flushed and synced one by one: a result the
/// shard reported is on disk before the next is taken.
pub async fn write_results(mut results: mpsc::UnboundedReceiver<MatchResult>, path: PathBuf) -> anyhow::Result<u64> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening results file {}", path.display()))?;
    let mut written = 0;
    while let Some(result) = results.recv().await {
        let mut line = serde_json::to_vec(&result)?;
        line.push(b'\n');
        file.write_all(&line).with_context(|| format!("writing {}", path.display()))?;
        file.sync_data()?;
        written += 1;
    }
    Ok(written)
}

/// A shard's agent running next to `rally shard --redis-url`.
#[derive(Debug)]
pub struct ShardAgentRun {
    draining: watch::Sender<bool>,
    task: JoinHandle<AgentReport>,
}

impl ShardAgentRun {
    /// Marks the shard draining in the registry.
    pub fn drain(&self) {
        let _ = self.draining.send(true);
    }

    /// Waits until every result was published (the shard's channel closed) and the shard deregistered.
    pub async fn wait(self) -> anyhow::Result<AgentReport> {
        self.task.await.context("shard agent panicked")
    }
}

/// Most bytes read back from the end of a results file at start.
const RECOVER_TAIL_BYTES: u64 = 4 << 20;

/// The results in the last [`RECOVER_TAIL_BYTES`] of the results file at
/// `path` that ended within `window` of now: what a previous process of this
/// shard recorded shortly before it stopped, which it may not have published
/// (killed between the two). A missing file is none; a torn or foreign line is
/// skipped with a warning.
pub fn recent_results(path: &std::path::Path, window: Duration) -> Vec<MatchResult> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let start = len.saturating_sub(RECOVER_TAIL_BYTES);
    let mut tail = Vec::new();
    if file.seek(SeekFrom::Start(start)).and_then(|_| file.read_to_end(&mut tail)).is_err() {
        tracing::warn!(path = %path.display(), "could not read the results file back; nothing recovered from it");
        return Vec::new();
    }
    let cutoff = rally_matchmaker::engine::unix_ms().saturating_sub(window.as_millis() as u64);
    let mut lines = tail.split(|byte| *byte == b'\n');
    if start > 0 {
        lines.next(); // the partial line the tail starts in
    }
    lines
        .filter(|line| !line.is_empty())
        .filter_map(|line| match serde_json::from_slice::<MatchResult>(line) {
            Ok(result) => Some(result),
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "skipping an unreadable line of the results file");
                None
            }
        })
        .filter(|result| result.ended_at_ms >= cutoff)
        .collect()
}

/// Registers `shard` in the Redis registry at `redis_url` and publishes its
/// results to the Redis bus, first settling `recovered` (see
/// [`ShardAgentConfig::recovered`]). Returns a receiver that still gets every
/// result (for the results file) and the agent.
#[expect(clippy::too_many_arguments, reason = "one call site, each argument a plain setting")]
pub fn start_shard_agent(
    redis_url: &str,
    redis_prefix: &str,
    region: &str,
    public_addr: Option<&str>,
    capacity: usize,
    shard: &ShardHandle,
    mut results: mpsc::UnboundedReceiver<MatchResult>,
    recovered: Vec<MatchResult>,
) -> anyhow::Result<(mpsc::UnboundedReceiver<MatchResult>, ShardAgentRun)> {
    let redis = RedisConnection::connect_lazy(redis_url, redis_prefix)?.with_role("the shard agent");
    let info = ShardInfo {
        name: shard.name.clone(),
        address: public_addr.map_or_else(|| shard.local_addr.to_string(), str::to_owned),
        region: region.to_owned(),
        capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        certificate_sha256: shard.fingerprint.clone(),
        // This process's own: a restart registers a new one, which settles the old one's matches.
        incarnation: ShardInfo::new_incarnation(),
    };
    let (file_tx, file_rx) = mpsc::unbounded_channel();
    let (agent_tx, agent_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(result) = results.recv().await {
            let _ = file_tx.send(result.clone());
            let _ = agent_tx.send(result);
        }
    });
    let live = shard.live.clone();
    let load: shard_agent::LoadProbe =
        Arc::new(move || ShardLoad { matches: live.matches(), players: live.connections() });
    let (draining, draining_rx) = watch::channel(false);
    let task = tokio::spawn(shard_agent::run(
        Arc::new(RedisRegistry::new(redis.clone())),
        Arc::new(RedisBus::new(redis)),
        ShardAgentConfig { recovered, ..ShardAgentConfig::new(info) },
        agent_rx,
        load,
        draining_rx,
    ));
    Ok((file_rx, ShardAgentRun { draining, task }))
}

#[cfg(test)]
mod tests {
    use rally_protocol::MatchId;
    use rally_protocol::control::EndReason;

    use super::*;

    fn result(match_id: u64, ended_at_ms: u64) -> MatchResult {
        MatchResult {
            match_id: MatchId(match_id),
            game: "pong".into(),
            shard: "s".into(),
            seats: Vec::new(),
            scores: vec![0, 0],
            winner: None,
            reason: EndReason::Score,
            duration_ticks: 0,
            tick_rate_hz: 60,
            started_at_ms: ended_at_ms,
            ended_at_ms,
            input_log_digest: String::new(),
        }
    }

    #[test]
    fn recent_results_are_read_back_past_old_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        assert!(recent_results(&path, Duration::from_secs(120)).is_empty(), "no file, nothing");
        let now = rally_matchmaker::engine::unix_ms();
        let mut text = String::new();
        for line in [result(1, now - 600_000), result(2, now - 1_000), result(3, now)] {
            text.push_str(&serde_json::to_string(&line).unwrap());
            text.push('\n');
        }
        text.push_str("{\"match_id\": 4, \"torn"); // killed mid-write
        std::fs::write(&path, text).unwrap();
        let ids: Vec<u64> =
            recent_results(&path, Duration::from_secs(120)).iter().map(|result| result.match_id.0).collect();
        assert_eq!(ids, [2, 3], "the old one is outside the window, the torn one unreadable");
    }
}
