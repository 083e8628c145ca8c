//! `rally shard`: one match shard serving QUIC, with metrics, results and drain.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use ed25519_dalek::VerifyingKey;
use rally_protocol::results::MatchResult;
use rally_server::ShardConfig;
use rally_server::quic::{ConnectionLimits, ServeConfig};
use rally_server::tls::TlsSource;
use rally_sim::game::LifecycleConfig;
use rally_sim::pong::PongWorld;
use tokio::sync::mpsc;

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
}

/// Parses `KEY_ID:HEX` issuer keys.
pub fn parse_token_keys(specs: &[String]) -> anyhow::Result<Vec<(u8, VerifyingKey)>> {
    specs
        .iter()
        .map(|spec| {
            let (id, hex) = spec.split_once(':').with_context(|| format!("token key {spec:?} is not KEY_ID:HEX"))?;
            let id: u8 = id.parse().with_context(|| format!("key id {id:?} is not 0-255"))?;
            let bytes = decode_hex(hex).with_context(|| format!("token key {id} is not hex"))?;
            let bytes: [u8; 32] =
                bytes.try_into().map_err(|_| anyhow::anyhow!("token key {id} must be 32 bytes (64 hex digits)"))?;
            let key =
                VerifyingKey::from_bytes(&bytes).with_context(|| format!("token key {id} is not an Ed25519 key"))?;
            Ok((id, key))
        })
        .collect()
}

/// Lower-case hex decoding.
pub fn decode_hex(hex: &str) -> anyhow::Result<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        bail!("odd number of hex digits");
    }
    (0..hex.len()).step_by(2).map(|at| Ok(u8::from_str_radix(&hex[at..at + 2], 16)?)).collect()
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
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let shard = rally_server::quic::start::<PongWorld>(config, results_tx).await?;
        let metrics = rally_server::ops::serve(args.metrics_addr, shard.readiness.clone()).await?;
        println!(
            "shard {} listening on {} (QUIC), metrics on http://{metrics}/metrics, certificate sha256 {}",
            shard.name, shard.local_addr, shard.fingerprint
        );
        if let Some(udp_addr) = shard.udp_addr {
            println!("shard {} also serving raw UDP (unencrypted) on {udp_addr}", shard.name);
        }
        let (results_rx, agent) = match &args.redis_url {
            Some(url) => {
                let (rx, agent) = crate::matchmaker_cmd::start_shard_agent(
                    url,
                    &args.redis_prefix,
                    &args.region,
                    args.public_addr.as_deref(),
                    args.max_matches,
                    &shard,
                    results_rx,
                )?;
                (rx, Some(agent))
            }
            None => (results_rx, None),
        };
        let writer = tokio::spawn(write_results(results_rx, results_path));
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
            println!("registry: {} results published, {} unpublished", agent.published, agent.unpublished);
        }
        println!(
            "shard stopped: {} ticks, {} late, {} matches ended ({} cut short), {written} results written",
            report.ticks, report.late_ticks, report.stats.matches_ended, report.aborted_matches
        );
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

/// Registers SIGTERM and SIGINT handlers now and returns a future that
/// resolves on either. Register before announcing readiness: a signal that
/// arrives before its handler exists would kill the process undrained.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
