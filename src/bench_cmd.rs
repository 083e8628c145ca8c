//! `rally bench-shard`: shard capacity on this machine — matches per core at the
//! tick budget, against a bare quinn echo baseline in the same run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use ed25519_dalek::SigningKey;
use rally_loadtest::bench::{self, BenchConfig, GENERATOR_CORE, ShardTarget};
use rally_loadtest::sys;

/// What to compare the shard with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// A bare quinn datagram echo server with the same connections and rates.
    QuinnEcho,
}

/// `rally bench-shard` flags.
#[derive(Debug, Clone, Args)]
pub struct BenchShardArgs {
    /// Two-player matches to run (ignored with --sweep).
    #[arg(long, default_value_t = 1_000)]
    pub matches: u32,
    /// Comma-separated match counts to measure one after another, e.g. 250,500,1000.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<u32>,
    /// New matches started per second during the ramp.
    #[arg(long, default_value_t = 250.0)]
    pub ramp_per_sec: f64,
    /// Seconds of measured load at each point.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Seconds between the last connection and the measured window.
    #[arg(long, default_value_t = 3.0)]
    pub settle_seconds: f64,
    /// Also measure this baseline at each point.
    #[arg(long, value_enum)]
    pub baseline: Option<Baseline>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A running shard's QUIC address (default: start `rally shard` for each point).
    #[arg(long, requires_all = ["fingerprint", "issuer_key_hex"])]
    pub shard_addr: Option<SocketAddr>,
    /// SHA-256 of the running shard's certificate.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// Seed (32 bytes, hex) of the issuer key the running shard trusts as key id 1.
    #[arg(long)]
    pub issuer_key_hex: Option<String>,
    /// The running shard's metrics address (tick and datagram numbers need it).
    #[arg(long)]
    pub shard_metrics: Option<SocketAddr>,
    /// The running shard's name, as tokens must carry it.
    #[arg(long, default_value = "shard-local")]
    pub shard_name: String,
    /// Do not pin the server to core 0 and the generator to core 1.
    #[arg(long)]
    pub no_pin: bool,
    /// Client UDP sockets the generator spreads its connections over.
    #[arg(long, default_value_t = 1)]
    pub client_endpoints: usize,
    /// Serve the echo baseline and nothing else (started by the benchmark itself).
    #[arg(long, hide = true)]
    pub serve_echo: bool,
    /// Data directory of the echo baseline (its self-signed certificate).
    #[arg(long, hide = true)]
    pub data_dir: Option<PathBuf>,
}

/// Runs the benchmark (or, with the hidden `--serve-echo`, the echo server).
pub fn run(args: BenchShardArgs) -> anyhow::Result<()> {
    if args.serve_echo {
        let dir = args.data_dir.unwrap_or_else(|| std::env::temp_dir().join("rally-echo"));
        return rally_loadtest::echo::serve(dir);
    }
    let target = match &args.shard_addr {
        Some(addr) => {
            let seed = crate::shard_cmd::decode_hex(args.issuer_key_hex.as_deref().unwrap_or_default())
                .context("--issuer-key-hex is not hex")?;
            let seed: [u8; 32] =
                seed.try_into().map_err(|_| anyhow::anyhow!("--issuer-key-hex must be 32 bytes (64 hex digits)"))?;
            ShardTarget::Remote {
                addr: *addr,
                fingerprint: args.fingerprint.clone().unwrap_or_default(),
                metrics: args.shard_metrics,
                name: args.shard_name.clone(),
                issuer: Box::new(SigningKey::from_bytes(&seed)),
            }
        }
        None => ShardTarget::Spawn { exe: std::env::current_exe().context("locating the rally binary")? },
    };
    let pin = !args.no_pin && sys::has_taskset();
    if pin {
        sys::pin_self(GENERATOR_CORE)?;
    } else if !args.no_pin {
        tracing::warn!("taskset not found: the server and the load generator share cores");
    }
    let config = BenchConfig {
        target,
        match_counts: if args.sweep.is_empty() { vec![args.matches] } else { args.sweep.clone() },
        ramp_per_sec: args.ramp_per_sec,
        settle: Duration::from_secs_f64(args.settle_seconds),
        hold: Duration::from_secs_f64(args.seconds),
        echo_baseline: args.baseline == Some(Baseline::QuinnEcho),
        pin,
        client_endpoints: args.client_endpoints,
    };
    let report = bench::run(&config)?;
    print!("{}", bench::render_table(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
