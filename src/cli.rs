//! The command line: one binary, one subcommand per role.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;

/// rally: an authoritative real-time game server platform.
#[derive(Debug, Parser)]
#[command(name = "rally", version, about, long_about = None)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text", env = "RALLY_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", env = "RALLY_LOG")]
    pub log_level: String,
    /// The role to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every role of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the simulation headless: scripted players in many matches, or replay a recorded match.
    Sim(SimArgs),
    /// Run a match shard: many matches at a fixed tick, players over QUIC.
    Shard(crate::shard_cmd::ShardArgs),
    /// Measure shard capacity: ramp matches of real QUIC clients, hold, report tick times and loss.
    BenchShard(crate::bench_cmd::BenchShardArgs),
    /// Load-test with real SDK clients: scenarios, link conditioner, thresholds, JSON/HTML reports.
    Loadtest(crate::loadtest_cmd::LoadtestArgs),
    /// Run the lobby: accounts (Auth) and profiles/ratings (Profile) over gRPC.
    Lobby(crate::lobby_cmd::LobbyArgs),
    /// Run the matchmaker: tickets, ratings windows, shard assignment with connect tokens, over gRPC.
    Matchmaker(crate::matchmaker_cmd::MatchmakerArgs),
    /// Bots: benchmark policies against each other through a real shard.
    Bot(crate::bot_cmd::BotArgs),
    /// Run the whole platform in one process: lobby, matchmaker, a shard and bots playing.
    Up(crate::up_cmd::UpArgs),
    /// Play Pong in the terminal against people or bots: log in, chat, queue, play.
    Play(crate::play::net::PlayArgs),
}

/// `rally sim`: the headless simulation demo and replay tool.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimArgs {
    /// Replay instead of running the demo.
    #[command(subcommand)]
    pub command: Option<SimCommand>,
    /// Matches kept running at once in one world.
    #[arg(long, default_value_t = 10_000)]
    pub matches: u32,
    /// Wall-clock seconds to run for (ticks run as fast as the machine allows).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seed for match seeds and player behaviour; the same seed gives the same matches.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Points a side needs to win.
    #[arg(long, default_value_t = 5)]
    pub points_to_win: u8,
    /// Seats per match (2, or 4 for doubles).
    #[arg(long, default_value_t = 2)]
    pub seats: u8,
    /// Write the input log of every finished match into this directory.
    #[arg(long)]
    pub record_dir: Option<PathBuf>,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Subcommands of `rally sim`.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Replay a recorded input log and print its outcome and final hash.
    Replay {
        /// The `.replay` file written by `--record-dir` or by a shard.
        file: PathBuf,
        /// Print every tick's hash.
        #[arg(long)]
        hashes: bool,
    },
}
