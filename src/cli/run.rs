//! `seesay run`: the live conversation. A microphone (or a recording) in, spoken answers out (the
//! speaker, or a WAV file for recordings), and each turn's transcript, answer and latency printed.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use clap::Args;

use seesay::config::{BargeIn, Config};
use seesay::pipeline::{self, Input, Output, RunOptions};
use seesay::stages::camera;
use seesay::stages::device::has_microphone;
use seesay::stages::mic::Pace;
use seesay::store::Store;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Answer a recording instead of the microphone. Without it: the microphone if there is one,
    /// else the bundled recording (jfk.wav) with the bundled photo (chelsea.png) as the camera.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Listen to the microphone (an error if there is none).
    #[arg(long, conflicts_with = "input")]
    pub live: bool,
    /// Write what the speaker would have played, silences included, to this WAV file instead of
    /// playing it. Default for recordings: reply.wav.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// An image, or a folder of images shown in turn, as what the camera sees.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<PathBuf>,
    /// Watch a V4L2 camera: a device path, or an index N for /dev/videoN (no value:
    /// /dev/video0). A picture every pipeline.frame_interval_s, described when the scene has
    /// changed (default: pipeline.camera).
    #[arg(long, value_name = "DEVICE", num_args = 0..=1, default_missing_value = "/dev/video0", conflicts_with = "image")]
    pub camera: Option<String>,
    /// Write one JSON object per answered turn (transcript, answer, latencies) to this file.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Feed a recording as fast as the pipeline takes it instead of in real time (the output's
    /// timing then no longer matches the input's).
    #[arg(long)]
    pub fast: bool,
    /// Let the user interrupt an answer by speaking (default: pipeline.barge_in, "auto": on
    /// with a microphone and a speaker whose echo is cancelled).
    #[arg(long, conflicts_with = "half_duplex")]
    pub barge_in: bool,
    /// Never interrupt: a question asked during an answer is answered after it.
    #[arg(long)]
    pub half_duplex: bool,
    /// Answer only what follows this wake word (alexa, hey_jarvis, hey_mycroft, hey_rhasspy,
    /// okay_nabu or a .tflite path), and follow-ups (default: pipeline.wake_word).
    #[arg(long, value_name = "NAME")]
    pub wake_word: Option<String>,
    /// Stop after this many answered turns.
    #[arg(long, value_name = "N")]
    pub max_turns: Option<usize>,
    /// Keep nothing of this run (what the camera showed, what was said) and recall nothing
    /// (memory.enabled = false does the same for good).
    #[arg(long)]
    pub no_memory: bool,
}

pub fn run(mut cfg: Config, a: RunArgs) -> Result<()> {
    apply_flags(&mut cfg, &a);
    // Opened before any model loads: a missing or busy camera fails at once.
    let frames = match cfg.pipeline.camera.as_str() {
        _ if a.image.is_some() => None,
        "" => None,
        spec => Some(camera::open(spec)?),
    };
    let store = Store::from_config(&cfg.models)?;
    let memory =
        super::chat::open_memory(&cfg, &store, a.no_memory, None)?.map(|m| Arc::new(Mutex::new(m)));
    let pace = if a.fast { Pace::Fast } else { Pace::Realtime };
    let mut image = a.image;
    let input = match a.input {
        Some(path) => Input::File { path, pace },
        None if a.live || has_microphone() => Input::Mic,
        None => {
            match frames.is_some() {
                true => eprintln!("no microphone: answering the bundled recording (jfk.wav)"),
                false => eprintln!("no microphone: answering the bundled recording (jfk.wav), with the bundled photo as the camera"),
            }
            if image.is_none() && frames.is_none() {
                image = Some(store.resolve("sample-chelsea")?);
            }
            Input::File {
                path: store.resolve("sample-jfk")?,
                pace,
            }
        }
    };
    let output = match (&a.output, &input) {
        (Some(p), _) => Output::File(p.clone()),
        (None, Input::File { .. }) => Output::File(PathBuf::from("reply.wav")),
        (None, _) => Output::Speaker,
    };
    // "listening" once the microphone is open (after the models load): speech before is not heard.
    let live = matches!(input, Input::Mic);
    if live {
        eprintln!("loading the models ...");
    }
    let on_listening = live
        .then(|| Box::new(|| eprintln!("listening (Ctrl-C to stop)")) as Box<dyn FnOnce() + Send>);
    let stop = Arc::new(AtomicBool::new(false));
    let abort = Arc::new(AtomicBool::new(false));
    // Ctrl-C sets a flag the pipeline polls; no thread waits on the signal.
    signal_hook::flag::register(signal_hook::consts::SIGINT, abort.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, abort.clone())?;
    let out_path = match &output {
        Output::File(p) => Some(p.clone()),
        _ => None,
    };
    let summary = pipeline::run(
        &cfg,
        RunOptions {
            input,
            output,
            image,
            metrics: a.metrics,
            max_turns: a.max_turns,
            camera: None,
            frames,
            updates: None,
            memory,
            typed: None,
            on_listening,
        },
        stop,
        abort,
    )?;
    report(&summary, out_path);
    Ok(())
}

/// The command line's settings over the configuration's.
fn apply_flags(cfg: &mut Config, a: &RunArgs) {
    if a.barge_in {
        cfg.pipeline.barge_in = BargeIn::On;
    }
    if a.half_duplex {
        cfg.pipeline.barge_in = BargeIn::Off;
    }
    if let Some(w) = &a.wake_word {
        cfg.pipeline.wake_word = w.clone();
    }
    if let Some(c) = &a.camera {
        cfg.pipeline.camera = c.clone();
    }
}

/// What was heard and answered, with each turn's timing; dropped audio; the file written.
fn report(summary: &pipeline::RunSummary, out_path: Option<PathBuf>) {
    for t in &summary.turns {
        outln!("heard:  {}", t.transcript);
        let cut = if t.interrupted { " [interrupted]" } else { "" };
        outln!("answer: {}{cut}", t.answer);
        outln!(
            "timing: from the end of speech: endpoint {:.0} ms, transcript {:.0} ms, first token {:.0} ms, first audio {:.0} ms (voice to voice)",
            t.endpoint_ms, t.transcript_ms, t.first_token_ms, t.voice_to_voice_ms
        );
    }
    if summary.turns.is_empty() {
        outln!("heard:  (no speech)");
    }
    if summary.mic_dropped > 0 {
        eprintln!(
            "warning: {} microphone buffers were dropped (the pipeline fell behind)",
            summary.mic_dropped
        );
    }
    if let Some(p) = out_path {
        outln!("wrote:  {} ({:.1} s)", p.display(), summary.output_s);
    }
}
