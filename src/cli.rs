//! The command line: one binary, one subcommand per role.

use clap::{Parser, Subcommand};

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
    Sim(crate::sim_demo::SimArgs),
    /// Run a match shard: many matches at a fixed tick, players over QUIC.
    Shard(crate::shard_cmd::ShardArgs),
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
    Play(crate::play::PlayCommandArgs),
    /// Operator commands on the lobby's database: grant and revoke roles (moderator).
    Admin(crate::admin_cmd::AdminArgs),
    /// The tournament results log: verify it (with --replay, every match re-simulated), print a match's proof, witness it.
    Ledger(crate::ledger_cmd::LedgerArgs),
    /// Tournaments: create, list, show (the bracket in the terminal), join and watch.
    Tournament(crate::tournament_cmd::TournamentArgs),
    /// Probe a running role once (an ops endpoint over HTTP or grpc.health.v1): exit 0 when healthy, for HEALTHCHECKs.
    Health(crate::health_cmd::HealthArgs),
}
