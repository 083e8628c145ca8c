//! `rally loadtest`: the bundled load harness — scenarios of real SDK clients
//! with a link conditioner, thresholds that set the exit code, and JSON/HTML
//! reports; `merge` combines the reports of several harness processes.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use rally_client::TransportKind;
use rally_client::conditioner::LinkConditions;
use rally_loadtest::config::{LoadConfig, parse_duration, parse_probability};
use rally_loadtest::connect::{self, ClientDriver, ConnectConfig, RemoteShard, ShardTarget};
use rally_loadtest::echo::EchoKind;
use rally_loadtest::platform::{self, PlatformConfig, PlatformScenario, PlatformTarget};
use rally_loadtest::report::{self, Report, parse_thresholds};
use rally_loadtest::services::ServicesConfig;
use rally_loadtest::spread::{self, SpreadConfig, SpreadRemote, SpreadShard};
use rally_loadtest::stack::EmbeddedShardConfig;
use rally_loadtest::sweep;

use crate::common::parse_minter;

/// `rally loadtest` subcommands.
#[derive(Debug, Args)]
pub struct LoadtestArgs {
    /// What to run.
    #[command(subcommand)]
    pub command: LoadtestCommand,
}

/// The scenarios and tools of the harness.
#[derive(Debug, Subcommand)]
pub enum LoadtestCommand {
    /// Shard capacity: token → connect → play two-player matches, bypassing lobby and matchmaker;
    /// `--sweep` runs it at several loads and prints one capacity table.
    Connect(ConnectArgs),
    /// Chat: subscribers on one public channel and senders posting to it, through the lobby's Chat gRPC.
    Chat(ChatArgs),
    /// Ticket storm: log in, then Enqueue → WatchTicket until assigned, again and again.
    Matchmaker(ServicesArgs),
    /// The whole flow: register/login → enqueue → play a whole match → again.
    Full(FullArgs),
    /// Merge the JSON reports of harness processes that ran together into one report.
    Merge(MergeArgs),
    /// List the metrics `--threshold` can name.
    Metrics,
}

/// Flags every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Clients to start.
    #[arg(long, default_value_t = 100)]
    pub clients: u64,
    /// Clients started per second.
    #[arg(long, default_value_t = 50.0)]
    pub ramp: f64,
    /// How long to hold the load after the ramp (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Seed of match ids, tokens and the link conditioner.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Pass/fail criterion, e.g. 'rtt_p99<50ms', 'errors==0', 'tick_p99<=4ms'; repeat for more.
    /// Any violated threshold makes the exit code non-zero. `rally loadtest metrics` lists the names.
    #[arg(long = "threshold", value_name = "EXPR")]
    pub thresholds: Vec<String>,
    /// Link conditioner: probability each datagram is dropped, each way (0.05 or 5%).
    #[arg(long, default_value = "0", value_parser = parse_probability)]
    pub loss: f64,
    /// Link conditioner: one-way delay (e.g. 50ms).
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub latency: Duration,
    /// Link conditioner: the delay varies uniformly within ± this.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub jitter: Duration,
    /// Link conditioner: probability a datagram is delivered twice.
    #[arg(long, default_value = "0", value_parser = parse_probability)]
    pub duplicate: f64,
    /// Link conditioner: probability a datagram is held back so later ones overtake it.
    #[arg(long, default_value = "0", value_parser = parse_probability)]
    pub reorder: f64,
    /// Client UDP sockets the QUIC connections are spread over (raw UDP connections each have their own).
    #[arg(long, default_value_t = 1)]
    pub endpoints: usize,
    /// Write the full report as JSON here (input of `rally loadtest merge`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the HTML report (one file, SVG plots) here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// No live progress line (it is also off when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Do not pin the harness to core 1 and the embedded servers to core 0.
    #[arg(long)]
    pub no_pin: bool,
}

impl CommonArgs {
    fn load_config(&self) -> anyhow::Result<LoadConfig> {
        anyhow::ensure!(
            self.ramp > 0.0 && self.ramp.is_finite(),
            "--ramp must be a positive number of clients per second"
        );
        anyhow::ensure!(self.clients > 0, "--clients must be at least 1");
        Ok(LoadConfig {
            clients: self.clients,
            ramp_per_sec: self.ramp,
            duration: self.duration,
            seed: self.seed,
            conditions: LinkConditions {
                loss: self.loss,
                latency: self.latency,
                jitter: self.jitter,
                duplicate: self.duplicate,
                reorder: self.reorder,
            },
            thresholds: parse_thresholds(&self.thresholds)?,
            progress: !self.no_progress && std::io::stderr().is_terminal(),
            pin: !self.no_pin,
            endpoints: self.endpoints.max(1),
        })
    }
}

/// `rally loadtest connect` flags.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Points a side needs to win; 99 (the most) keeps matches running for minutes.
    #[arg(long, default_value_t = rally_sim::pong::MAX_POINTS_TO_WIN)]
    pub points_to_win: u8,
    /// Matches each pair of clients plays back to back (default: play until the run ends).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// The transport clients play over: quic, or udp (raw UDP: unencrypted; the embedded
    /// shard then also listens on raw UDP on loopback).
    #[arg(long, default_value = "quic")]
    pub transport: TransportKind,
    /// Also measure this baseline first, with the same connections and rate, and print shard/baseline
    /// (quinn-echo for QUIC runs, udp-echo for raw UDP runs).
    #[arg(long, value_enum)]
    pub baseline: Option<EchoBaseline>,
    /// A running shard's QUIC address (default: start one in this process, on its own core).
    #[arg(long, requires_all = ["token_key", "fingerprint"])]
    pub shard: Option<SocketAddr>,
    /// The running shard's raw UDP address (its --udp-addr), for --transport udp.
    #[arg(long, requires = "shard")]
    pub shard_udp: Option<SocketAddr>,
    /// The issuer key the running shard trusts, as KEY_ID:SEED_HEX (the 32-byte Ed25519 seed, hex).
    #[arg(long, env = "RALLY_LOADTEST_TOKEN_KEY", hide_env_values = true)]
    pub token_key: Option<String>,
    /// SHA-256 of the running shard's certificate (it prints it at start).
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// The running shard's name, as tokens must carry it.
    #[arg(long, default_value = "shard-local")]
    pub shard_name: String,
    /// The running shard's metrics address (tick figures need it).
    #[arg(long)]
    pub shard_metrics: Option<SocketAddr>,
    /// The running shard's process id, when it runs on this machine: its RSS before and after the
    /// ramp gives the memory per connection; with --processes the parent also reads its CPU time.
    #[arg(long, requires = "shard")]
    pub shard_pid: Option<u32>,
    /// Embedded shard: simulation ticks per second.
    #[arg(long, default_value_t = 60)]
    pub tick_rate: u16,
    /// Embedded shard: snapshots per second per client.
    #[arg(long, default_value_t = 30)]
    pub snapshot_rate: u16,
    /// Capacity sweep: run once per client count (comma-separated, two clients a match, e.g.
    /// 500,1000,1500,2000) instead of --clients, each on a fresh embedded shard, and print one table.
    /// Each point is judged by the --threshold flags, or without any by the capacity criteria
    /// (errors==0, snapshot_loss==0, late_ticks==0, shard_dropped==0, ticks_within_budget>=99%);
    /// --json writes every point's report. The exit code is 0 whichever points fail.
    #[arg(long, value_delimiter = ',', value_name = "CLIENTS", conflicts_with = "clients")]
    pub sweep: Vec<u64>,
    /// Spread the clients over this many child processes of this program (each `rally loadtest
    /// connect --shard …` with its share of the clients and the ramp, its own seed, on a core of
    /// its own where there are enough) and merge their reports. The shard is embedded in this
    /// process (on the first core it may use) unless --shard names one.
    #[arg(long, value_name = "N", conflicts_with_all = ["sweep", "baseline"])]
    pub processes: Option<usize>,
    /// What runs the clients: auto (the swarm for raw UDP to a loopback shard, the SDK
    /// otherwise), sdk (one SDK connection task and socket per client), or swarm (raw UDP
    /// only: every client on one task over one socket, batched system calls).
    #[arg(long, value_enum, default_value = "auto")]
    pub driver: DriverArg,
}

/// `--driver`: what runs a `connect` run's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverArg {
    /// The swarm for raw UDP to a loopback shard, the SDK otherwise.
    Auto,
    /// One SDK connection per client.
    Sdk,
    /// Every raw UDP client in one batched task.
    Swarm,
}

impl DriverArg {
    fn driver(self) -> ClientDriver {
        match self {
            Self::Auto => ClientDriver::Auto,
            Self::Sdk => ClientDriver::Sdk,
            Self::Swarm => ClientDriver::Swarm,
        }
    }
}

/// A bare echo to compare the shard with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EchoBaseline {
    /// A bare quinn datagram echo server with the same connections and rates.
    QuinnEcho,
    /// A bare raw UDP datagram echo with the same connections and rates.
    UdpEcho,
}

/// Where the services are (default: lobby, matchmaker and a shard in this process).
#[derive(Debug, Clone, Args)]
pub struct ServicesArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// A running lobby's gRPC URL (with --matchmaker; default: start the stack
    /// in this process); several replicas comma-separated (`http://a:7100,http://b:7100`),
    /// spread over by the clients, which fail over between them.
    #[arg(long, requires = "matchmaker")]
    pub lobby: Option<String>,
    /// A running matchmaker's gRPC URL; several replicas comma-separated.
    #[arg(long, requires = "lobby")]
    pub matchmaker: Option<String>,
    /// A running shard's metrics address, to read tick figures from.
    #[arg(long)]
    pub shard_metrics: Option<SocketAddr>,
    /// Embedded stack: points a side needs to win.
    #[arg(long, default_value_t = 3)]
    pub points_to_win: u8,
    /// Embedded stack: hash passwords with the production argon2id costs (default: cheap, so
    /// logins do not dominate; `lobby/examples/login_storm.rs` measures hashing).
    #[arg(long)]
    pub real_password_hashing: bool,
}

/// `rally loadtest chat` flags.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// Services and shared flags.
    #[command(flatten)]
    pub services: ServicesArgs,
    /// Clients that send (the others subscribe).
    #[arg(long, default_value_t = 10)]
    pub senders: u64,
    /// Messages per second per sender.
    #[arg(long, default_value_t = 1.0)]
    pub message_rate: f64,
}

/// `rally loadtest full` flags.
#[derive(Debug, Clone, Args)]
pub struct FullArgs {
    /// Services and shared flags.
    #[command(flatten)]
    pub services: ServicesArgs,
    /// Matches each client plays (default: play until the run ends).
    #[arg(long)]
    pub rounds: Option<u32>,
}

/// `rally loadtest merge` flags.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// JSON reports written with --json by harness processes of the same run.
    #[arg(required = true, num_args = 1..)]
    pub reports: Vec<PathBuf>,
    /// Thresholds to check on the merged figures (default: those of the inputs).
    #[arg(long = "threshold", value_name = "EXPR")]
    pub thresholds: Vec<String>,
    /// Write the merged JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the merged HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

/// Runs a `rally loadtest` subcommand; violated thresholds are an error (exit code 1).
pub fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    match args.command {
        LoadtestCommand::Connect(args) if !args.sweep.is_empty() => {
            let config = connect_config(&args)?;
            println!("{}", sweep::render_header());
            let report = sweep::run(&config, &args.sweep, |point| println!("{}", sweep::render_row(point)))?;
            print!("\n{}", sweep::render_table(&report));
            if let Some(path) = &args.common.html {
                std::fs::write(path, rally_loadtest::html::render_sweep(&report))
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("HTML report: {}", path.display());
            }
            if let Some(path) = &args.common.json {
                std::fs::write(path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("JSON report: {}", path.display());
            }
            Ok(())
        }
        LoadtestCommand::Connect(args) if args.processes.is_some() => {
            let config = spread_config(&args)?;
            let report = spread::run(&config)?;
            finish(&report, args.common.json.as_deref(), args.common.html.as_deref())
        }
        LoadtestCommand::Connect(args) => {
            let config = connect_config(&args)?;
            let report = connect::run(&config)?;
            finish(&report, args.common.json.as_deref(), args.common.html.as_deref())
        }
        LoadtestCommand::Chat(args) => {
            let scenario = PlatformScenario::Chat { senders: args.senders, rate_per_sec: args.message_rate };
            run_platform(&args.services, scenario)
        }
        LoadtestCommand::Matchmaker(args) => run_platform(&args, PlatformScenario::Matchmaker),
        LoadtestCommand::Full(args) => run_platform(&args.services, PlatformScenario::Full { rounds: args.rounds }),
        LoadtestCommand::Merge(args) => {
            let thresholds = parse_thresholds(&args.thresholds)?;
            let reports = args
                .reports
                .iter()
                .map(|path| {
                    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_slice::<Report>(&bytes)
                        .with_context(|| format!("{} is not a rally loadtest JSON report", path.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let merged = Report::merge(reports, &thresholds)?;
            finish(&merged, args.json.as_deref(), args.html.as_deref())
        }
        LoadtestCommand::Metrics => {
            for info in report::metric_catalog() {
                let unit = info.kind.unit();
                println!("{:<28} {:<6} {}", info.name, unit, info.help);
            }
            Ok(())
        }
    }
}

fn run_platform(args: &ServicesArgs, scenario: PlatformScenario) -> anyhow::Result<()> {
    let target = match (&args.lobby, &args.matchmaker) {
        (Some(lobby), Some(matchmaker)) => PlatformTarget::Remote {
            lobby_url: lobby.clone(),
            matchmaker_url: matchmaker.clone(),
            shard_metrics: args.shard_metrics,
        },
        _ => PlatformTarget::Embedded {
            shard: EmbeddedShardConfig::default(),
            services: ServicesConfig {
                points_to_win: args.points_to_win,
                real_password_hashing: args.real_password_hashing,
            },
        },
    };
    let config = PlatformConfig { load: args.common.load_config()?, scenario, target };
    let report = platform::run(&config)?;
    finish(&report, args.common.json.as_deref(), args.common.html.as_deref())
}

fn connect_config(args: &ConnectArgs) -> anyhow::Result<ConnectConfig> {
    let shard = match args.shard {
        Some(addr) => {
            let spec = args.token_key.as_deref().context("--shard needs --token-key KEY_ID:SEED_HEX")?;
            let minter = parse_minter(spec).context("--token-key")?;
            ShardTarget::Remote(Box::new(RemoteShard {
                addr,
                udp_addr: args.shard_udp,
                fingerprint: args.fingerprint.clone().unwrap_or_default(),
                metrics: args.shard_metrics,
                name: args.shard_name.clone(),
                minter,
                pid: args.shard_pid,
            }))
        }
        None => ShardTarget::Embedded(EmbeddedShardConfig {
            tick_rate_hz: args.tick_rate,
            snapshot_rate_hz: args.snapshot_rate,
            ..EmbeddedShardConfig::default()
        }),
    };
    Ok(ConnectConfig {
        load: args.common.load_config()?,
        shard,
        points_to_win: args.points_to_win,
        rounds: args.rounds,
        transport: args.transport,
        baseline: args.baseline.map(|baseline| match baseline {
            EchoBaseline::QuinnEcho => EchoKind::Quinn,
            EchoBaseline::UdpEcho => EchoKind::Udp,
        }),
        driver: args.driver.driver(),
    })
}

fn spread_config(args: &ConnectArgs) -> anyhow::Result<SpreadConfig> {
    let shard = match args.shard {
        Some(addr) => {
            let token_key = args.token_key.clone().context("--shard needs --token-key KEY_ID:SEED_HEX")?;
            // Checked here so a bad key fails before any child starts.
            parse_minter(&token_key).context("--token-key")?;
            SpreadShard::Remote(SpreadRemote {
                addr,
                udp_addr: args.shard_udp,
                fingerprint: args.fingerprint.clone().unwrap_or_default(),
                metrics: args.shard_metrics,
                name: args.shard_name.clone(),
                token_key,
                pid: args.shard_pid,
            })
        }
        None => SpreadShard::Embedded(EmbeddedShardConfig {
            tick_rate_hz: args.tick_rate,
            snapshot_rate_hz: args.snapshot_rate,
            ..EmbeddedShardConfig::default()
        }),
    };
    let mut load = args.common.load_config()?;
    // The children draw no progress; the parent has none to draw.
    load.progress = false;
    Ok(SpreadConfig {
        program: std::env::current_exe().context("finding this program to start the children")?,
        processes: args.processes.unwrap_or(1),
        load,
        shard,
        points_to_win: args.points_to_win,
        rounds: args.rounds,
        transport: args.transport,
        extra_args: vec!["--driver".into(), args.driver.driver().name().to_owned()],
    })
}

/// Prints the summary, writes the files, and turns violated thresholds into an error.
fn finish(report: &Report, json: Option<&std::path::Path>, html: Option<&std::path::Path>) -> anyhow::Result<()> {
    print!("{}", report::render_text(report));
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("JSON report: {}", path.display());
    }
    if let Some(path) = html {
        std::fs::write(path, rally_loadtest::html::render(report))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("HTML report: {}", path.display());
    }
    report.check_thresholds()?;
    Ok(())
}
