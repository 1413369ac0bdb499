//! The `seesay` binary: parse arguments, start logging, hand over to the command (`cli/`), which
//! calls into the library.

mod cli;

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    seesay::host::limit_malloc_arenas();
    let cli = cli::Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "seesay=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        cli::LogFormat::Json => logs.json().init(),
        // Colour codes only where a person reads them: not in a file or a pipe.
        cli::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    // ALSA's library prints its own lines ("cannot find card '0'") to stderr while devices are
    // probed; seesay says in one line of its own what it found.
    seesay::stages::device::quiet_alsa();
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
