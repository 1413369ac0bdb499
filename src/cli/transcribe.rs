//! `seesay transcribe FILE...`: audio files in, transcripts (text, JSON, SRT, WebVTT) out.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use seesay::config::Config;
use seesay::media::audio::{AudioError, AudioReader, SAMPLE_RATE};
use seesay::stages::asr::{self, Transcriber};
use seesay::store::Store;
use seesay::text::transcript::{self, Format, Segment};

#[derive(Debug, Args)]
pub struct TranscribeArgs {
    /// Audio files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "text")]
    pub format: Format,
    /// Whisper model: a name from `seesay models list` or a ggml file.
    #[arg(long, short)]
    pub model: Option<String>,
    /// Spoken language code (en, de, ...) or "auto".
    #[arg(long, short)]
    pub language: Option<String>,
    /// CPU threads (0: all cores).
    #[arg(long, short)]
    pub threads: Option<usize>,
}

pub fn transcribe(mut cfg: Config, a: TranscribeArgs) -> Result<()> {
    if let Some(m) = a.model {
        cfg.asr.model = m;
    }
    if let Some(l) = a.language {
        cfg.asr.language = l;
    }
    if let Some(t) = a.threads {
        cfg.asr.threads = t;
    }
    let mut model = asr::open(&cfg.asr, &Store::from_config(&cfg.models)?)?;
    let many = a.files.len() > 1;
    let mut failed = 0;
    for path in &a.files {
        match transcribe_file(&mut *model, path, cfg.asr.window_seconds) {
            Ok((duration, segments)) => {
                let name = path.display().to_string();
                let out = transcript::render(a.format, &name, duration, &segments);
                if many && a.format == Format::Text {
                    out!("{name}: {out}");
                } else {
                    out!("{out}");
                }
            }
            // One file: its error is the command's, said once.
            Err(e) if !many => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("error: {}", super::one_line(&e));
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} files could not be transcribed",
            a.files.len()
        );
    }
    Ok(())
}

/// Transcribes one file as it is decoded, window by window; returns (seconds, segments).
fn transcribe_file(
    model: &mut dyn Transcriber,
    path: &Path,
    window_seconds: f32,
) -> Result<(f64, Vec<Segment>)> {
    let mut reader = AudioReader::open(path, SAMPLE_RATE)?;
    tracing::debug!(
        file = %path.display(),
        rate = reader.source_rate,
        channels = reader.source_channels,
        "decoding"
    );
    let progress = progress_spinner(path);
    let chunks = std::iter::from_fn(|| reader.next_chunk().transpose());
    let result = asr::transcribe_stream::<anyhow::Error>(
        model,
        window_seconds,
        chunks.map(|c: Result<Vec<f32>, AudioError>| c.map_err(Into::into)),
        |done| {
            if let Some(p) = &progress {
                p.set_message(format!("{done:.0} s transcribed"));
            }
        },
    );
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    result
}

fn progress_spinner(path: &Path) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let p = indicatif::ProgressBar::new_spinner();
    p.set_prefix(path.display().to_string());
    p.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})").ok()?,
    );
    p.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(p)
}
