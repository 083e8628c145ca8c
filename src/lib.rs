//! The `rally` binary's library: the command line and the code behind each role.
//!
//! `src/main.rs` only parses arguments and calls [`run`]; everything else lives
//! here so it can be tested.
//!
//! One module per role (`*_cmd`, [`sim_demo`], [`play`]), each owning its
//! flags; [`cli`] gathers them into the command line; [`common`] holds what
//! several roles share. A role module depends on [`common`] and on no other
//! role module.

pub mod admin_cmd;
pub mod bot_cmd;
pub mod cli;
pub mod common;
pub mod health_cmd;
pub mod ledger_cmd;
pub mod loadtest_cmd;
pub mod lobby_cmd;
pub mod logging;
pub mod matchmaker_cmd;
pub mod play;
pub mod shard_cmd;
pub mod sim_demo;
pub mod tournament_cmd;
pub mod up_cmd;

/// Runs the role the command line names.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Sim(args) => sim_demo::run(args),
        cli::Command::Shard(args) => shard_cmd::run(args),
        cli::Command::Loadtest(args) => loadtest_cmd::run(args),
        cli::Command::Lobby(args) => lobby_cmd::run(args),
        cli::Command::Matchmaker(args) => matchmaker_cmd::run(args),
        cli::Command::Bot(args) => bot_cmd::run(args),
        cli::Command::Play(args) => play_cmd(args),
        cli::Command::Up(args) => up_cmd::run(args),
        cli::Command::Admin(args) => admin_cmd::run(args),
        cli::Command::Ledger(args) => ledger_cmd::run(args),
        cli::Command::Tournament(args) => tournament_cmd::run(args),
        cli::Command::Health(args) => health_cmd::run(args),
    }
}

/// `rally play`: the terminal client, on a runtime of its own.
fn play_cmd(args: play::PlayCommandArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(play::run(args))
}
