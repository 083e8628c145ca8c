//! The `rally` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = rally::cli::Cli::parse();
    // Log lines would scribble over the terminal client's screen.
    let level = if matches!(cli.command, rally::cli::Command::Play(_)) { "off" } else { cli.log_level.as_str() };
    rally::logging::init(cli.log_format, level);
    match rally::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
