//! The live pipeline: audio frames in (a microphone, a recording or a client), spoken answers out
//! (a speaker, a WAV timeline or a client), every stage on its own thread, joined by bounded
//! channels:
//!
//! ```text
//! source ─► vad ─► asr ─► llm (+ splitter) ─► tts ─► sink (speaker / WAV timeline / client)
//!                          ▲
//! frames ─► captioner ─────┘ (the newest caption, as context)
//! ```
//!
//! `messages` are what flows between the stages, `turns` the bookkeeping they share, `listen`
//! the VAD stage (which starts and ends turns), `loops` the other stage threads, `sinks` the
//! three outputs, `metrics` the per-turn figures and `models` what the
//! stages run on. This file wires them.
//!
//! Interruption is by turn number: the VAD starts a new turn when the user starts speaking; every
//! stage drops work of older turns, the LLM stops between two tokens and the sink stops playing.
//! Shutdown is by dropping senders: when the source ends, each stage drains and returns in turn.
//! A stage that fails (or panics) ends the run: everything stops and its error is reported.

#[cfg(test)]
mod ahead_tests;
mod answering;
mod error;
#[cfg(test)]
mod fakes;
mod hands;
mod listen;
#[cfg(test)]
mod listening_tests;
mod loops;
mod messages;
mod metrics;
mod models;
mod seeing;
#[cfg(test)]
mod seeing_tests;
mod sinks;
#[cfg(test)]
mod tests;
mod turns;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

pub use self::error::PipelineError;
use self::listen::{Judging, Listening, Wake};
use self::messages::{Event, Feedback, Heard, Play, Say, Utterance};
pub use self::messages::{ToolCall, TurnMetrics, Update};
pub use self::models::{lock, ChatMaker, Locked, Models, VadMaker, WakeMaker};
use self::turns::{spawn, Context, Turns};
use crate::config::Config;
use crate::media::audio::SAMPLE_RATE;
use crate::media::wav::WavWriter;
use crate::memory::Memory;
use crate::stages::camera::{FrameReceiver, FrameSource};
use crate::stages::echo::{EchoCanceller, EchoReference};
use crate::stages::llm::Conversation;
use crate::stages::mic::{self, AudioFrame, Pace};
use crate::stages::vad::Endpointer;

/// Where the user's voice comes from.
pub enum Input {
    File {
        path: PathBuf,
        pace: Pace,
    },
    Mic,
    /// Frames from elsewhere (a WebSocket client); the input ends when the sender is dropped.
    Frames(Receiver<AudioFrame>),
}

/// Where the answers go.
pub enum Output {
    /// A WAV file holding what a speaker would have played, silences included.
    File(PathBuf),
    Speaker,
    /// `Update::Audio` messages on `RunOptions::updates`, sent as soon as they are synthesised;
    /// the client plays them. A turn counts as playing until its audio's length has passed.
    Client,
}

pub struct RunOptions {
    pub input: Input,
    pub output: Output,
    /// An image, or a folder of images shown one after another, as the camera.
    pub image: Option<PathBuf>,
    /// Pictures from elsewhere (a WebSocket client's camera), captioned as they come.
    pub camera: Option<FrameReceiver>,
    /// A camera (`stages::camera::open`) or any frame source: a picture every
    /// `pipeline.frame_interval_s`, described when the scene changed (`pipeline.scene_change`).
    pub frames: Option<Box<dyn FrameSource>>,
    pub metrics: Option<PathBuf>,
    /// Stop after this many answered turns.
    pub max_turns: Option<usize>,
    /// Where to report what happens, as it happens (speech, transcripts, answer text, audio for
    /// `Output::Client`, per-turn figures).
    pub updates: Option<Sender<Update>>,
    /// Where what the camera showed and what was said is kept, and recalled for each question
    /// (`None`: nothing is kept or recalled).
    pub memory: Option<Arc<Mutex<Memory>>>,
    /// Questions typed by the client, each answered as a turn of its own (as if spoken).
    pub typed: Option<Receiver<String>>,
    /// Called once the input is open, so whatever is said from then on is heard (a microphone
    /// opens after the models have loaded: seconds).
    pub on_listening: Option<Box<dyn FnOnce() + Send>>,
}

/// What a run produced.
pub struct RunSummary {
    pub turns: Vec<TurnMetrics>,
    /// Seconds of output written (file output only).
    pub output_s: f64,
    /// Microphone buffers dropped because the pipeline fell behind.
    pub mic_dropped: u64,
}

/// Loads the models, then runs the pipeline until the input ends (or the microphone is stopped
/// by `stop`).
pub fn run(
    cfg: &Config,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
) -> Result<RunSummary, PipelineError> {
    // Load everything before the first frame, so a missing model fails at once.
    let t_load = Instant::now();
    let seeing = opts.image.is_some() || opts.camera.is_some() || opts.frames.is_some();
    let models = Models::load(cfg, seeing, 1)?;
    tracing::info!(ms = t_load.elapsed().as_millis() as u64, "models loaded");
    run_with(cfg, &models, opts, stop, abort)
}

/// Runs the pipeline on models already loaded (and perhaps shared with other pipelines).
pub fn run_with(
    cfg: &Config,
    models: &Models,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
) -> Result<RunSummary, PipelineError> {
    let vad = (models.vad)()?;
    if matches!(opts.output, Output::Client) && opts.updates.is_none() {
        return Err(PipelineError::Options(
            "client output needs an updates channel",
        ));
    }
    let metrics_file = open_metrics(&opts)?;
    // Opened first: a path that cannot be written fails before any work is done.
    let wav_out = match &opts.output {
        Output::File(path) => Some(WavWriter::create(path, models.voice_rate, None)?),
        _ => None,
    };
    let (cx, collector) = start_context(&opts, stop.clone(), abort, metrics_file)?;

    // A description of the first picture before anything is heard, then the rest in the
    // background. Whether the model may `look`: there is a picture to describe.
    let camera = opts.image.is_some() || opts.frames.is_some() || opts.camera.is_some();
    let eyes = seeing::Eyes {
        image: opts.image,
        source: opts.frames,
        pictures: opts.camera,
    };
    let mut stages: Vec<JoinHandle<Option<()>>> = seeing::start_seeing(cfg, models, eyes, &cx)?;

    let (tx_frames, rx_frames) = crossbeam_channel::bounded::<AudioFrame>(64);
    let mic_dropped = Arc::new(AtomicU64::new(0));
    // A live microphone and speaker: what the speaker plays is taken out of the microphone.
    let echo = (matches!(opts.input, Input::Mic)
        && matches!(opts.output, Output::Speaker)
        && cfg.pipeline.echo_cancel)
        .then(|| Arc::new(EchoReference::default()));
    if echo.is_some() {
        tracing::info!("echo cancellation on (WebRTC AEC3)");
    }
    let input = Sources {
        stop: stop.clone(),
        mic_dropped: mic_dropped.clone(),
        echo: echo.clone(),
    };
    let (source, rx_frames) = input.start(cfg, opts.input, &cx, tx_frames, rx_frames)?;
    if let Some(say) = opts.on_listening {
        say();
    }
    let mut listening = listening(cfg, models, vad, echo.is_some())?;
    listening.typed = opts.typed.unwrap_or_else(crossbeam_channel::never);
    let rx_play = start_stages(cfg, models, listening, rx_frames, camera, &cx, &mut stages)?;
    let sink = start_sink(
        cfg,
        models,
        opts.output,
        opts.max_turns,
        wav_out,
        echo,
        rx_play,
        &cx,
    )?;

    let (written, file) = sink.join().ok().flatten().unwrap_or_default();
    // The conversation is over: a camera (which never ends by itself) and its captioner stop.
    cx.shut_down();
    match source.map(JoinHandle::join) {
        None | Some(Ok(Ok(()))) => {}
        Some(Ok(Err(e))) => cx.fail(e.into()),
        Some(Err(_)) => cx.fail(PipelineError::Panicked("audio source")),
    }
    for h in stages {
        // Failures were recorded by the stage itself (see `spawn`).
        let _ = h.join();
    }
    let failure = lock(&cx.failure).take();
    drop(cx);
    let turns = collector
        .join()
        .map_err(|_| PipelineError::Panicked("metrics"))?;
    if let Some(e) = failure {
        return Err(e); // an unfinished file is removed; the old one stays
    }
    if let Some(file) = file {
        file.finish()?;
    }
    Ok(RunSummary {
        turns,
        output_s: written as f64 / models.voice_rate as f64,
        mic_dropped: mic_dropped.load(Ordering::Relaxed),
    })
}

/// The metrics file, created (empty) before the run starts.
fn open_metrics(
    opts: &RunOptions,
) -> Result<Option<std::io::BufWriter<std::fs::File>>, PipelineError> {
    let Some(p) = &opts.metrics else {
        return Ok(None);
    };
    let file = std::fs::File::create(p).map_err(|error| PipelineError::Metrics {
        path: p.clone(),
        error,
    })?;
    Ok(Some(std::io::BufWriter::new(file)))
}

/// What the stages share, and the thread that collects their events into per-turn figures.
fn start_context(
    opts: &RunOptions,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    metrics_file: Option<std::io::BufWriter<std::fs::File>>,
) -> Result<(Arc<Context>, JoinHandle<Vec<TurnMetrics>>), PipelineError> {
    let (tx_ev, rx_ev) = crossbeam_channel::unbounded::<Event>();
    let cx = Arc::new(Context {
        turns: Turns::default(),
        input_pos: AtomicU64::new(0),
        stop,
        abort,
        scene: Mutex::new(None),
        picture: Mutex::new(None),
        speaking: Mutex::new(String::new()),
        t0: Instant::now(),
        events: tx_ev,
        updates: opts.updates.clone(),
        failure: Mutex::new(None),
        order: Mutex::new(()),
        memory: opts.memory.clone(),
        ahead: Mutex::new(None),
    });
    let (updates, t0) = (opts.updates.clone(), cx.t0);
    let collector = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || metrics::collect(rx_ev, metrics_file, updates, t0))
        .map_err(|error| PipelineError::Spawn {
            name: "metrics",
            error,
        })?;
    Ok((cx, collector))
}

/// What an audio source needs besides its input.
struct Sources {
    stop: Arc<AtomicBool>,
    mic_dropped: Arc<AtomicU64>,
    echo: Option<Arc<EchoReference>>,
}

impl Sources {
    /// Starts the source thread (none for frames from a client, which come on their own
    /// channel); returns it and the channel the VAD stage reads.
    #[allow(clippy::type_complexity)]
    fn start(
        self,
        cfg: &Config,
        input: Input,
        cx: &Arc<Context>,
        tx_frames: Sender<AudioFrame>,
        rx_frames: Receiver<AudioFrame>,
    ) -> Result<
        (
            Option<JoinHandle<Result<(), mic::MicError>>>,
            Receiver<AudioFrame>,
        ),
        PipelineError,
    > {
        let source = match input {
            Input::File { path, pace } => mic::file_source(
                &path,
                pace,
                Duration::from_secs(1),
                {
                    let cx = cx.clone();
                    move || cx.turns.idle()
                },
                self.stop,
                tx_frames,
            )?,
            Input::Mic => mic::mic_source(
                &cfg.pipeline.input_device,
                self.stop,
                self.mic_dropped,
                self.echo.map(EchoCanceller::new).transpose()?,
                tx_frames,
            )?,
            Input::Frames(rx) => return Ok((None, rx)),
        };
        Ok((Some(source), rx_frames))
    }
}

/// The VAD stage's settings: the end of turn, the wake word, barge-in.
fn listening(
    cfg: &Config,
    models: &Models,
    vad: Box<dyn crate::stages::vad::SpeechDetector>,
    echo_cancelled: bool,
) -> Result<Listening, PipelineError> {
    let semantic = cfg.turn.semantic;
    let ep = match semantic {
        true => Endpointer::with_pause(&cfg.vad, cfg.turn.pause_ms, cfg.turn.max_silence_ms),
        false => Endpointer::new(&cfg.vad),
    };
    let wake = match cfg.pipeline.wake_word.as_str() {
        "" => None,
        word => Some(Wake {
            detector: (models.wake)(word)?,
            word: word.to_string(),
            threshold: cfg.pipeline.wake_threshold,
            follow_up: (cfg.pipeline.follow_up_s.max(0.0) * SAMPLE_RATE as f32) as u64,
            awake_until: 0,
        }),
    };
    Ok(Listening {
        wake,
        vad,
        ep,
        barge_in: cfg.pipeline.barge_in.allowed(echo_cancelled),
        turn: semantic.then(|| Judging {
            cfg: cfg.turn.clone(),
            model: models.turn.clone(),
            reads: false, // known once the language model is made (`start_stages`)
        }),
        typed: crossbeam_channel::never(),
    })
}

/// Starts the VAD, ASR, LLM and TTS stages; returns the channel of audio to play.
fn start_stages(
    cfg: &Config,
    models: &Models,
    mut listening: Listening,
    rx_frames: Receiver<AudioFrame>,
    camera: bool,
    cx: &Arc<Context>,
    stages: &mut Vec<JoinHandle<Option<()>>>,
) -> Result<Receiver<Play>, PipelineError> {
    let llm = (models.llm)()?;
    if let Some(judging) = &mut listening.turn {
        judging.reads = llm.reads_turns();
    }
    let (tx_utt, rx_utt) = crossbeam_channel::bounded::<Utterance>(2);
    let (tx_heard, rx_heard) = crossbeam_channel::bounded::<Heard>(2);
    let (tx_say, rx_say) = crossbeam_channel::bounded::<Say>(16);
    let (tx_play, rx_play) = crossbeam_channel::bounded::<Play>(16);
    let (tx_hint, rx_hint) = crossbeam_channel::bounded::<Feedback>(64);
    let cx2 = cx.clone();
    stages.push(spawn("vad", cx, move || {
        listen::vad_loop(listening, rx_frames, rx_hint, tx_utt, cx2)
    })?);
    let (asr, cx2, hints) = (models.asr.clone(), cx.clone(), tx_hint.clone());
    stages.push(spawn("asr", cx, move || {
        loops::asr_loop(asr, rx_utt, tx_heard, hints, cx2)
    })?);
    // The tools are described in the system prompt of the questions that may need one
    // (`Hands::routed`); the rest are read against the prompt prefilled without them.
    let hands = hands::Hands::new(cfg, cx, camera);
    let mut conv = Conversation::new(&cfg.llm);
    conv.set_tools(hands.tools.system_prompt());
    let answering = answering::Answering {
        llm,
        hands,
        cores: models.asr.clone(),
        conv,
        first_clause_words: cfg.pipeline.first_clause_words,
        answer_ahead: cfg.pipeline.preemptive_answer,
        judge_turns: cfg.turn.semantic,
        tx: tx_say,
        hints: tx_hint,
        cx: cx.clone(),
    };
    stages.push(spawn("llm", cx, move || {
        answering::llm_loop(answering, rx_heard)
    })?);
    let gap = cfg.tts.sentence_silence_ms;
    let (voice, cx2) = (models.voice.clone(), cx.clone());
    stages.push(spawn("tts", cx, move || {
        loops::tts_loop(voice, gap, rx_say, tx_play, cx2)
    })?);
    Ok(rx_play)
}

/// What the sink thread returns: samples written, and the WAV file to finish (file output).
type SinkEnd = Option<(usize, Option<WavWriter>)>;

/// Starts the output: a WAV timeline, a client, or the speaker.
#[allow(clippy::too_many_arguments)]
fn start_sink(
    cfg: &Config,
    models: &Models,
    output: Output,
    max: Option<usize>,
    wav_out: Option<WavWriter>,
    echo: Option<Arc<EchoReference>>,
    rx_play: Receiver<Play>,
    cx: &Arc<Context>,
) -> Result<JoinHandle<SinkEnd>, PipelineError> {
    let rate = models.voice_rate;
    let cx2 = cx.clone();
    Ok(match output {
        Output::File(_) => {
            let file = wav_out.expect("opened for file output");
            spawn("sink", cx, move || {
                sinks::timeline_loop(rate, max, file, rx_play, cx2).map(|(n, f)| (n, Some(f)))
            })?
        }
        Output::Client => spawn("client", cx, move || {
            sinks::client_loop(rate, max, rx_play, cx2).map(|n| (n, None))
        })?,
        Output::Speaker => {
            let dev = cfg.pipeline.output_device.clone();
            spawn("speaker", cx, move || {
                sinks::speaker_loop(rate, dev, echo, max, rx_play, cx2).map(|n| (n, None))
            })?
        }
    })
}
