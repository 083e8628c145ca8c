//! The `rally` binary's library: the command line and the code behind each role.
//!
//! `src/main.rs` only parses arguments and calls [`run`]; everything else lives
//! here so it can be tested.

pub mod bench_cmd;
pub mod cli;
pub mod lobby_cmd;
pub mod logging;
pub mod shard_cmd;
pub mod sim_demo;

/// Runs the role the command line names.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Sim(args) => sim_demo::run(args),
        cli::Command::Shard(args) => shard_cmd::run(args),
        cli::Command::BenchShard(args) => bench_cmd::run(args),
        cli::Command::Lobby(args) => lobby_cmd::run(args),
    }
}
