//! The command line: arguments in, commands run, results on stdout and one-line errors out. One
//! file per command, each owning its arguments; the library does the work.

/// `println!` for the commands' results: a reader that went away (`seesay models list | head -1`)
/// ends the program quietly (status 141, as a shell reports a broken pipe), instead of the panic
/// `println!` gives.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(141);
        }
    }};
}

/// `print!` with `outln!`'s handling of a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout();
        if write!(stdout, $($arg)*).and_then(|_| stdout.flush()).is_err() {
            std::process::exit(141);
        }
    }};
}

mod bench;
mod bench_common;
mod bench_hearing;
mod bench_memory;
mod bench_pipeline;
mod bench_read;
mod bench_serve;
mod bench_tools;
mod bench_turn;
mod bench_wake;
mod chat;
mod memory;
mod models;
mod quality;
mod read;
mod run;
mod serve;
mod speech;
mod transcribe;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use seesay::config::Config;

/// `--version`: the crate's version, the commit it was built from and the features built in.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SEESAY_GIT_COMMIT"),
    ", features: ",
    env!("SEESAY_FEATURES"),
    ")"
);

/// seesay: a local voice-and-vision assistant. It listens, looks and talks back, on this machine.
#[derive(Debug, Parser)]
#[command(name = "seesay", version = VERSION, about)]
pub struct Cli {
    /// Config file (TOML). Default: $SEESAY_CONFIG, else ~/.config/seesay/config.toml if present.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log lines as text (coloured only on a terminal) or as JSON objects, one a line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The live conversation: listen (microphone or recording), answer, speak, with barge-in and
    /// per-turn latency. With no microphone and no arguments: the bundled recording and photo.
    Run(run::RunArgs),
    /// Transcribe audio files (WAV, FLAC, MP3, OGG; any rate and channel count).
    Transcribe(transcribe::TranscribeArgs),
    /// Speak text (an argument, or standard input) to a WAV file or the speakers.
    Say(speech::SayArgs),
    /// Ask the language model; the answer streams to standard output. With no prompt on a
    /// terminal: an interactive chat that remembers the conversation.
    Chat(chat::ChatArgs),
    /// Describe images in a sentence or two (offline: EfficientNet-Lite0 labels; or BLIP, or a
    /// remote vision model, per the config's [vision] section).
    Describe(chat::DescribeArgs),
    /// Read the text in images (OCR, PP-OCRv4): line by line in reading order, or as JSON with
    /// boxes and confidences.
    Read(read::ReadArgs),
    /// Serve the models over the network: OpenAI-compatible HTTP endpoints, Prometheus metrics,
    /// and the Wyoming protocol for Home Assistant.
    Serve(serve::ServeArgs),
    /// Fetch, check and import models.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// What seesay remembers: add notes, search by meaning, list, forget, count.
    Memory(memory::MemoryArgs),
    /// Show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure speed: real-time factors of speech recognition and synthesis (release builds only).
    Bench(bench::BenchArgs),
    /// Print a shell completion script (e.g. `seesay completions bash > ~/.local/share/bash-completion/completions/seesay`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `seesay man | man -l -`.
    Man,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets masked, after a comment naming the
    /// file it was read from.
    Show,
}

pub fn run(cli: Cli) -> Result<()> {
    // Commands that need no configuration: they describe the command line itself.
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "seesay", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
            return Ok(());
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            out!("{}", String::from_utf8_lossy(&page));
            return Ok(());
        }
        _ => {}
    }
    let source = Config::source(cli.config.as_deref());
    let cfg = Config::load(cli.config.as_deref())?;
    // The one thread there is yet: the time to set what libraries read from the environment.
    seesay::stages::tts::export_espeak_data(&cfg.tts.espeak_data);
    match cli.command {
        Command::Run(a) => run::run(cfg, a),
        Command::Transcribe(a) => transcribe::transcribe(cfg, a),
        Command::Say(a) => speech::say(cfg, a),
        Command::Chat(a) => chat::chat(cfg, a),
        Command::Describe(a) => chat::describe(cfg, a),
        Command::Read(a) => read::read(cfg, a),
        Command::Serve(a) => serve::serve(cfg, a),
        Command::Models(m) => models::models(&cfg, m),
        Command::Memory(a) => memory::memory(&cfg, a),
        Command::Config(ConfigCommand::Show) => {
            match source {
                Some(path) => outln!("# read from {}", path.display()),
                None => outln!("# no config file: the built-in defaults"),
            }
            out!("{}", cfg.to_toml_masked());
            Ok(())
        }
        Command::Bench(a) => bench::run(&cfg, a),
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    }
}

/// An error and its causes on one line, each cause once: many errors already say their cause
/// ("cannot read x: No such file"), and printing the chain again would repeat it.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(text.as_str()) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}
