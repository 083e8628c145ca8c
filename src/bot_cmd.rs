//! `rally bot`: bots that play through the real protocol (`play`: log in, queue,
//! play, re-queue), and their benchmark (`bench`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rally_bot::bench::{BenchConfig, ShardTarget, Side, run_bench};
use rally_bot::queue::{QueueConfig, QueueStats, run_queue_bot_until};
use rally_bot::tournament::{TournamentBotConfig, run_tournament_bot};
use rally_bot::{BatchWindow, Decider, Difficulty, PolicyKind};
use rally_client::TransportKind;
use rally_client::tls::ServerTrust;

use crate::common::parse_minter;

/// `rally bot` subcommands.
#[derive(Debug, Args)]
pub struct BotArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: BotCommand,
}

/// What `rally bot` does.
#[derive(Debug, Subcommand)]
pub enum BotCommand {
    /// Play matches between two policies through a real shard and report win rate, margin, latency and Elo.
    Bench(BotBenchArgs),
    /// Run N bots that log in at the lobby, queue at the matchmaker, play and queue again.
    Play(BotPlayArgs),
}

/// `rally bot play` flags.
#[derive(Debug, Clone, Args)]
pub struct BotPlayArgs {
    /// The lobby's gRPC address (Auth); several replicas comma-separated
    /// (`http://a:7100,http://b:7100`), which each bot fails over between.
    #[arg(long, default_value = "http://127.0.0.1:7100", env = "RALLY_LOBBY")]
    pub lobby: String,
    /// The matchmaker's gRPC address; several replicas comma-separated.
    #[arg(long, default_value = "http://127.0.0.1:7101", env = "RALLY_MATCHMAKER")]
    pub matchmaker: String,
    /// Bots to run in this process (their decisions are batched together).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// The policy every bot plays: onnx, tracker, predictor or expert.
    #[arg(long, default_value = "onnx", value_parser = parse_policy)]
    pub policy: PolicyKind,
    /// An ONNX model file instead of the built-in one.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Difficulty: perfect, hard, medium or easy (default: the policy's own).
    #[arg(long, value_parser = parse_difficulty)]
    pub difficulty: Option<Difficulty>,
    /// The game mode to queue for.
    #[arg(long, default_value = "pong")]
    pub mode: String,
    /// Bot usernames are `<prefix>-<index>`; accounts are registered on first use.
    #[arg(long, default_value = "bot")]
    pub username_prefix: String,
    /// The bots' password.
    #[arg(long, env = "RALLY_BOT_PASSWORD", default_value = "bot-password-change-me")]
    pub password: String,
    /// Matches each bot plays before it stops (default: until interrupted).
    #[arg(long)]
    pub matches_per_bot: Option<u32>,
    /// New bots started per second (so that logins and handshakes do not all land at once).
    /// A bot refused by the lobby's per-address sign-in limit waits what the
    /// refusal names and tries again; to run more bots from one address than
    /// the limit allows, have the lobby exempt it (`rally lobby --login-limit-exempt`).
    #[arg(long, default_value_t = 100.0)]
    pub ramp_per_sec: f64,
    /// Enter this tournament instead of queueing: each bot registers, checks in,
    /// plays every match it is given and stops when the tournament ends or it is out.
    #[arg(long, value_name = "ID")]
    pub tournament: Option<u64>,
    /// The tournament service's gRPC address (with --tournament).
    #[arg(long, default_value = "http://127.0.0.1:7104", env = "RALLY_TOURNAMENTS")]
    pub tournaments: String,
}

/// `rally bot bench` flags.
#[derive(Debug, Clone, Args)]
pub struct BotBenchArgs {
    /// Side A's policy: onnx, tracker, predictor or expert.
    #[arg(long, default_value = "onnx", value_parser = parse_policy)]
    pub a: PolicyKind,
    /// Side B's policy.
    #[arg(long, default_value = "predictor", value_parser = parse_policy)]
    pub b: PolicyKind,
    /// Side A's difficulty: perfect, hard, medium or easy (default: perfect for onnx/expert, medium for scripted).
    #[arg(long, value_parser = parse_difficulty)]
    pub a_difficulty: Option<Difficulty>,
    /// Side B's difficulty.
    #[arg(long, value_parser = parse_difficulty)]
    pub b_difficulty: Option<Difficulty>,
    /// An ONNX model file for side A instead of the built-in one.
    #[arg(long)]
    pub a_model: Option<PathBuf>,
    /// An ONNX model file for side B instead of the built-in one.
    #[arg(long)]
    pub b_model: Option<PathBuf>,
    /// Matches to play.
    #[arg(long, default_value_t = 100)]
    pub matches: u32,
    /// Matches under way at once.
    #[arg(long, default_value_t = 100)]
    pub concurrency: u32,
    /// Points a side needs to win a match.
    #[arg(long, default_value_t = 5)]
    pub points_to_win: u8,
    /// Tick rate of the embedded shard (60 is the game's; higher plays the same game faster).
    #[arg(long, default_value_t = 60)]
    pub tick_rate: u16,
    /// Snapshot rate of the embedded shard (keep it at half the tick rate: the policies
    /// were trained on a view every second tick).
    #[arg(long)]
    pub snapshot_rate: Option<u16>,
    /// Seed of the bots' aim errors.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Decisions timed one by one in the latency micro-benchmark.
    #[arg(long, default_value_t = 20_000)]
    pub latency_samples: u32,
    /// Give up a match still going after this many seconds (it counts as failed).
    #[arg(long, default_value_t = 600)]
    pub max_match_seconds: u64,
    /// How the bots reach the shard: quic, udp (raw UDP, unencrypted: the
    /// embedded shard then listens on both, and --shard-addr is the shard's --udp-addr),
    /// or memory (the embedded shard in process, no network: the policies alone).
    #[arg(long, default_value = "quic")]
    pub transport: TransportKind,
    /// Play on a running shard at this address instead of an embedded one.
    #[arg(long, requires_all = ["fingerprint", "token_key"])]
    pub shard_addr: Option<SocketAddr>,
    /// SHA-256 of the running shard's certificate.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// The issuer key the running shard trusts, as KEY_ID:SEED_HEX (the 32-byte Ed25519 seed, hex).
    #[arg(long, env = "RALLY_BOT_TOKEN_KEY", hide_env_values = true)]
    pub token_key: Option<String>,
    /// The running shard's name, as tokens must carry it.
    #[arg(long, default_value = "shard-local")]
    pub shard_name: String,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_policy(name: &str) -> Result<PolicyKind, String> {
    PolicyKind::parse(name).ok_or_else(|| format!("unknown policy {name:?}: onnx, tracker, predictor or expert"))
}

fn parse_difficulty(name: &str) -> Result<Difficulty, String> {
    Difficulty::preset(name).ok_or_else(|| format!("unknown difficulty {name:?}: perfect, hard, medium or easy"))
}

/// Runs `rally bot`.
pub fn run(args: BotArgs) -> anyhow::Result<()> {
    match args.command {
        BotCommand::Bench(args) => bench(args),
        BotCommand::Play(args) => play(args),
    }
}

fn play(args: BotPlayArgs) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let policy = args.policy.build(args.model.as_deref())?;
    if let Some(tournament_id) = args.tournament {
        return play_tournament(&args, tournament_id, policy);
    }
    let config = QueueConfig {
        lobby_url: args.lobby.clone(),
        matchmaker_url: args.matchmaker.clone(),
        mode: args.mode.clone(),
        username_prefix: args.username_prefix.clone(),
        password: args.password.clone(),
        difficulty: args.difficulty.unwrap_or(args.policy.default_difficulty()),
        matches_per_bot: args.matches_per_bot,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let decider = Decider::spawn(policy, BatchWindow::default());
        let stats = Arc::new(QueueStats::default());
        let config = Arc::new(config);
        let mut bots = tokio::task::JoinSet::new();
        // Ctrl-C stops the bots cleanly: each cancels a queued ticket and returns.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Registered before the first bot starts, so an early Ctrl-C is not fatal.
        let interrupted = crate::common::shutdown_signal()?;
        tokio::pin!(interrupted);
        let mut stopping = false;
        let mut ramp = tokio::time::interval(Duration::from_secs_f64(1.0 / args.ramp_per_sec.max(0.1)));
        for index in 0..args.count {
            tokio::select! {
                _ = ramp.tick() => {}
                _ = &mut interrupted => {
                    stopping = true;
                    break;
                }
            }
            let (config, handle, stats) = (config.clone(), decider.handle(), stats.clone());
            let mut stop = stop_rx.clone();
            bots.spawn(async move {
                let stop = async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                };
                run_queue_bot_until(&config, index, handle, stats, stop).await
            });
        }
        tracing::info!(bots = bots.len(), policy = args.policy.name(), "bots queueing");
        if stopping {
            tracing::info!("interrupted; stopping the bots");
            let _ = stop_tx.send(true);
        }
        let mut report = tokio::time::interval(Duration::from_secs(10));
        let mut first_error = None;
        loop {
            tokio::select! {
                joined = bots.join_next() => match joined {
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(err))) => {
                        tracing::error!(error = %format!("{err:#}"), "a bot stopped");
                        first_error.get_or_insert(err);
                    }
                    Some(Err(err)) => {
                        first_error.get_or_insert(anyhow::Error::from(err));
                    }
                    None => break,
                },
                _ = report.tick() => tracing::info!(
                    matches = stats.matches.load(Ordering::Relaxed),
                    wins = stats.wins.load(Ordering::Relaxed),
                    failures = stats.failures.load(Ordering::Relaxed),
                    aborted = stats.aborted.load(Ordering::Relaxed),
                    resumed = stats.resumed.load(Ordering::Relaxed),
                    "bots"
                ),
                _ = &mut interrupted, if !stopping => {
                    tracing::info!("interrupted; stopping the bots");
                    stopping = true;
                    let _ = stop_tx.send(true);
                }
            }
        }
        let decided = decider.finish();
        println!(
            "{} matches, {} won, {} failures, {} aborted by the matchmaker, {} seats resumed; \
             {} decisions in {} calls (mean batch {:.1})",
            stats.matches.load(Ordering::Relaxed),
            stats.wins.load(Ordering::Relaxed),
            stats.failures.load(Ordering::Relaxed),
            stats.aborted.load(Ordering::Relaxed),
            stats.resumed.load(Ordering::Relaxed),
            decided.decisions,
            decided.calls,
            decided.batch_sizes.mean()
        );
        first_error.map_or(Ok(()), Err)
    })
}

/// `rally bot play --tournament ID`: every bot enters the tournament and plays it out.
fn play_tournament(args: &BotPlayArgs, tournament_id: u64, policy: Box<dyn rally_bot::Policy>) -> anyhow::Result<()> {
    let config = TournamentBotConfig {
        lobby_url: args.lobby.clone(),
        tournaments_url: args.tournaments.clone(),
        tournament_id,
        username_prefix: args.username_prefix.clone(),
        password: args.password.clone(),
        difficulty: args.difficulty.unwrap_or(args.policy.default_difficulty()),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let decider = Decider::spawn(policy, BatchWindow::default());
        let stats = Arc::new(QueueStats::default());
        let config = Arc::new(config);
        let mut bots = tokio::task::JoinSet::new();
        for index in 0..args.count {
            let (config, handle, stats) = (config.clone(), decider.handle(), stats.clone());
            bots.spawn(async move { run_tournament_bot(&config, index, handle, stats).await });
        }
        let interrupted = crate::common::shutdown_signal()?;
        tokio::pin!(interrupted);
        let mut stopping = false;
        let mut first_error = None;
        loop {
            tokio::select! {
                joined = bots.join_next() => match joined {
                    Some(Ok(Ok(report))) => println!(
                        "{} ({}): {} matches, {} won; {:?}",
                        report.username, report.player_id, report.matches, report.wins, report.end
                    ),
                    Some(Ok(Err(err))) => {
                        tracing::error!(error = %format!("{err:#}"), "a bot stopped");
                        first_error.get_or_insert(err);
                    }
                    Some(Err(err)) if err.is_cancelled() => {}
                    Some(Err(err)) => {
                        first_error.get_or_insert(anyhow::Error::from(err));
                    }
                    None => break,
                },
                _ = &mut interrupted, if !stopping => {
                    tracing::info!("interrupted; the bots leave the tournament to its no-show rule");
                    stopping = true;
                    bots.abort_all();
                }
            }
        }
        let _ = decider.finish();
        println!(
            "tournament {tournament_id}: {} matches played, {} won, {} failures",
            stats.matches.load(Ordering::Relaxed),
            stats.wins.load(Ordering::Relaxed),
            stats.failures.load(Ordering::Relaxed)
        );
        first_error.map_or(Ok(()), Err)
    })
}

fn bench(args: BotBenchArgs) -> anyhow::Result<()> {
    if args.matches == 0 {
        bail!("--matches must be at least 1");
    }
    let target = match args.shard_addr {
        Some(addr) => {
            let spec = args.token_key.as_deref().context("--shard-addr needs --token-key KEY_ID:SEED_HEX")?;
            ShardTarget::Remote {
                addr,
                name: args.shard_name.clone(),
                trust: ServerTrust::Fingerprint(args.fingerprint.clone().unwrap_or_default()),
                minter: Box::new(parse_minter(spec).context("--token-key")?),
            }
        }
        None => ShardTarget::Embedded {
            tick_rate_hz: args.tick_rate,
            snapshot_rate_hz: args.snapshot_rate.unwrap_or((args.tick_rate / 2).max(1)),
        },
    };
    let side = |policy: PolicyKind, difficulty: Option<Difficulty>, model: Option<PathBuf>| Side {
        policy,
        difficulty: difficulty.unwrap_or(policy.default_difficulty()),
        model,
    };
    let config = BenchConfig {
        a: side(args.a, args.a_difficulty, args.a_model.clone()),
        b: side(args.b, args.b_difficulty, args.b_model.clone()),
        matches: args.matches,
        concurrency: args.concurrency,
        points_to_win: args.points_to_win,
        seed: args.seed,
        target,
        window: BatchWindow::default(),
        latency_samples: args.latency_samples,
        max_match: Duration::from_secs(args.max_match_seconds.max(1)),
        transport: args.transport,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(run_bench(config))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
