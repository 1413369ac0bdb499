//! The command line: arguments in, commands run, results on stdout and one-line errors out.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::asr::{self, WhisperModel};
use crate::audio;
use crate::config::Config;
use crate::models::{FileState, Store};
use crate::transcript::{self, Format};
use crate::tts::{self, PiperVoice};

/// seesay: a local voice-and-vision assistant. It listens, looks and talks back, on this machine.
#[derive(Debug, Parser)]
#[command(name = "seesay", version, about)]
pub struct Cli {
    /// Config file (TOML). Default: $SEESAY_CONFIG, else ~/.config/seesay/config.toml if present.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The live conversation: listen (microphone or recording), answer, speak, with barge-in and
    /// per-turn latency. With no microphone and no arguments: the bundled recording and photo.
    Run(RunArgs),
    /// Transcribe audio files (WAV, FLAC, MP3, OGG; any rate and channel count).
    Transcribe(TranscribeArgs),
    /// Speak text (an argument, or standard input) to a WAV file or the speakers.
    Say(SayArgs),
    /// Ask the language model; the answer streams to standard output. With no prompt on a
    /// terminal: an interactive chat that remembers the conversation.
    Chat(ChatArgs),
    /// Describe images in a sentence or two (offline: EfficientNet-Lite0 labels; or BLIP, or a
    /// remote vision model, per the config's [vision] section).
    Describe(DescribeArgs),
    /// Serve the models over the network: OpenAI-compatible HTTP endpoints, Prometheus metrics,
    /// and the Wyoming protocol for Home Assistant.
    Serve(ServeArgs),
    /// Fetch, check and import models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure speed: real-time factors of speech recognition and synthesis (release builds only).
    Bench(crate::bench::BenchArgs),
}

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
    /// Write one JSON object per answered turn (transcript, answer, latencies) to this file.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Feed a recording as fast as the pipeline takes it instead of in real time (the output's
    /// timing then no longer matches the input's).
    #[arg(long)]
    pub fast: bool,
    /// Let the user interrupt an answer by speaking (default: pipeline.barge_in).
    #[arg(long)]
    pub barge_in: bool,
    /// Stop after this many answered turns.
    #[arg(long, value_name = "N")]
    pub max_turns: Option<usize>,
}

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

#[derive(Debug, Args)]
pub struct SayArgs {
    /// Text to speak. Without it, standard input is read.
    pub text: Option<String>,
    /// Write a WAV file instead of playing on the speakers.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Piper voice: a name from `seesay models list` or an .onnx file.
    #[arg(long)]
    pub voice: Option<String>,
    /// Speaking rate (1 normal, 2 twice as fast).
    #[arg(long)]
    pub rate: Option<f32>,
    /// Output device name for playback (default: the system's).
    #[arg(long, default_value = "")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The question. Without it: interactive on a terminal, else standard input.
    pub prompt: Option<String>,
    /// Local GGUF model (a name from `seesay models list` or a file).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Backend: local or openai.
    #[arg(long)]
    pub backend: Option<String>,
    /// Sampling temperature (0: always the most likely token).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Longest answer, in tokens.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// An image the question is about: its description enters the model's context.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub speech: SpeechArgs,
}

/// Speaking a text answer as it is produced.
#[derive(Debug, Args)]
pub struct SpeechArgs {
    /// Speak the answer on the speakers, sentence by sentence as it is written.
    #[arg(long)]
    pub speak: bool,
    /// Speak the answer into this WAV file instead of the speakers.
    #[arg(long = "speak-to", value_name = "FILE")]
    pub speak_to: Option<PathBuf>,
    /// Output device name for --speak (default: the system's).
    #[arg(long, default_value = "")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP address (default: server.listen, 127.0.0.1:8000).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Wyoming address (default: server.wyoming_listen, 127.0.0.1:10300); "off" turns it off.
    #[arg(long, value_name = "ADDR")]
    pub wyoming: Option<String>,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Image files or folders of images (PNG, JPEG, WebP, BMP, GIF).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Captioner: efficientnet, blip or openai (default: vision.backend).
    #[arg(long)]
    pub backend: Option<String>,
    #[command(flatten)]
    pub speech: SpeechArgs,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the models seesay knows, and which are present.
    List,
    /// Download, convert and verify models (default: the default set).
    Fetch {
        /// Model names; none means every default model.
        names: Vec<String>,
        /// Fetch every model in the manifest.
        #[arg(long)]
        all: bool,
    },
    /// Check present models against their sha256.
    Verify {
        /// Model names; none means every model that is present.
        names: Vec<String>,
    },
    /// Convert your own CTranslate2 / faster-whisper Whisper folder to a whisper.cpp ggml file.
    Import {
        /// Folder with model.bin (or model.bin.part1..N) and vocabulary.txt/json.
        dir: PathBuf,
        /// Output file.
        #[arg(long, short)]
        output: PathBuf,
        /// Weight precision: f16 or q8_0.
        #[arg(long, default_value = "q8_0")]
        quantize: String,
    },
    /// Print where a model's file is.
    Path { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML.
    Show,
}

pub fn run(cli: Cli) -> Result<()> {
    let cfg = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Run(a) => run_turn(&cfg, a),
        Command::Transcribe(a) => transcribe(cfg, a),
        Command::Say(a) => say(cfg, a),
        Command::Chat(a) => chat(cfg, a),
        Command::Describe(a) => describe(cfg, a),
        Command::Serve(a) => {
            let mut cfg = cfg;
            if let Some(l) = a.listen {
                cfg.server.listen = l;
            }
            if let Some(w) = a.wyoming {
                cfg.server.wyoming_listen = if w == "off" { String::new() } else { w };
            }
            crate::server::serve(cfg)
        }
        Command::Models(m) => models(&cfg, m),
        Command::Config(ConfigCommand::Show) => {
            print!("{}", cfg.to_toml());
            Ok(())
        }
        Command::Bench(a) => crate::bench::run(&cfg, a),
    }
}

/// Loads the configured Whisper model.
pub fn load_whisper(cfg: &Config) -> Result<WhisperModel> {
    let store = Store::from_config(&cfg.models)?;
    let path = store.resolve(&cfg.asr.model)?;
    Ok(WhisperModel::load(&path, &cfg.asr)?)
}

/// Sets up onnxruntime and espeak-ng, then loads the configured Piper voice.
pub fn load_voice(cfg: &Config) -> Result<PiperVoice> {
    let store = Store::from_config(&cfg.models)?;
    let runtime = if !cfg.tts.onnxruntime.is_empty() {
        crate::config::expand_home(&cfg.tts.onnxruntime)
    } else if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        PathBuf::from(p)
    } else {
        store.resolve("onnxruntime")?
    };
    tts::init_onnxruntime(&runtime)?;
    tts::locate_espeak_data(&cfg.tts.espeak_data)?;
    let voice = store.resolve(&cfg.tts.voice)?;
    Ok(PiperVoice::load(&voice, &cfg.tts)?)
}

/// Transcribes one file, window by window; returns (duration in seconds, segments).
pub fn transcribe_file(
    model: &mut WhisperModel,
    path: &Path,
    window_seconds: f32,
) -> Result<(f64, Vec<asr::Segment>)> {
    let mut reader = audio::AudioReader::open(path, asr::SAMPLE_RATE)?;
    tracing::debug!(
        file = %path.display(),
        rate = reader.source_rate,
        channels = reader.source_channels,
        "decoding"
    );
    let progress = progress_spinner(path);
    let mut windower = asr::Windower::new(window_seconds);
    let mut segments = Vec::new();
    let mut samples = 0usize;
    while let Some(chunk) = reader.next_chunk()? {
        samples += chunk.len();
        for (start, window) in windower.push(&chunk) {
            segments.extend(model.transcribe(&window, start)?);
            if let Some(p) = &progress {
                p.set_message(format!(
                    "{:.0} s transcribed",
                    start + window.len() as f64 / asr::SAMPLE_RATE as f64
                ));
            }
        }
    }
    if let Some((start, window)) = windower.finish() {
        segments.extend(model.transcribe(&window, start)?);
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    Ok((samples as f64 / asr::SAMPLE_RATE as f64, segments))
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

fn transcribe(mut cfg: Config, a: TranscribeArgs) -> Result<()> {
    if let Some(m) = a.model {
        cfg.asr.model = m;
    }
    if let Some(l) = a.language {
        cfg.asr.language = l;
    }
    if let Some(t) = a.threads {
        cfg.asr.threads = t;
    }
    let mut model = load_whisper(&cfg)?;
    let many = a.files.len() > 1;
    let mut failed = 0;
    for path in &a.files {
        match transcribe_file(&mut model, path, cfg.asr.window_seconds) {
            Ok((duration, segments)) => {
                let name = path.display().to_string();
                let out = transcript::render(a.format, &name, duration, &segments);
                if many && a.format == Format::Text {
                    print!("{name}: {out}");
                } else {
                    print!("{out}");
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
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

/// Synthesises `text` sentence by sentence, with the configured pause after each.
pub fn speak_text(voice: &mut PiperVoice, text: &str, silence_ms: u32) -> Result<Vec<f32>> {
    let sentences = tts::split_sentences(text);
    if sentences.is_empty() {
        bail!("nothing to say: the text has no words");
    }
    let gap = vec![0.0; (voice.sample_rate as u64 * silence_ms as u64 / 1000) as usize];
    let mut all = Vec::new();
    for s in &sentences {
        let t = std::time::Instant::now();
        let pcm = voice.synthesize(s)?;
        tracing::debug!(sentence = %s, ms = t.elapsed().as_millis() as u64, secs = pcm.len() as f64 / voice.sample_rate as f64, "synthesised");
        all.extend(pcm);
        all.extend_from_slice(&gap);
    }
    Ok(all)
}

fn say(mut cfg: Config, a: SayArgs) -> Result<()> {
    if let Some(v) = a.voice {
        cfg.tts.voice = v;
    }
    if let Some(r) = a.rate {
        cfg.tts.rate = r;
    }
    let text = match a.text {
        Some(t) => t,
        None => {
            let mut t = String::new();
            std::io::stdin()
                .read_to_string(&mut t)
                .context("reading text from standard input")?;
            t
        }
    };
    if text.trim().is_empty() {
        bail!("nothing to say: give the text as an argument or on standard input");
    }
    let mut voice = load_voice(&cfg)?;
    let pcm = speak_text(&mut voice, &text, cfg.tts.sentence_silence_ms)?;
    match a.output {
        Some(path) => {
            audio::write_wav(&path, &pcm, voice.sample_rate)?;
            eprintln!(
                "wrote {} ({:.1} s of speech)",
                path.display(),
                pcm.len() as f64 / voice.sample_rate as f64
            );
        }
        None => crate::speaker::play(&pcm, voice.sample_rate, &a.device)?,
    }
    Ok(())
}

fn chat(mut cfg: Config, a: ChatArgs) -> Result<()> {
    use std::io::{BufRead, Write};
    let llm = &mut cfg.llm;
    if let Some(m) = a.model {
        llm.model = m;
    }
    if let Some(b) = a.backend {
        llm.backend = b;
    }
    if let Some(t) = a.temperature {
        llm.temperature = t;
    }
    if let Some(n) = a.max_tokens {
        llm.max_tokens = n;
    }
    if let Some(s) = a.system {
        llm.system_prompt = s;
    }
    let interactive = a.prompt.is_none() && std::io::stdin().is_terminal();
    let one_shot = match a.prompt {
        Some(p) => Some(p),
        None if interactive => None,
        None => {
            let mut t = String::new();
            std::io::stdin()
                .read_to_string(&mut t)
                .context("reading the prompt from standard input")?;
            Some(t)
        }
    };
    if let Some(p) = &one_shot {
        if p.trim().is_empty() {
            return Err(crate::llm::LlmError::EmptyPrompt.into());
        }
    }
    let store = Store::from_config(&cfg.models)?;
    let scene = match &a.image {
        Some(path) => Some(caption_image(&cfg, &store, path)?),
        None => None,
    };
    let mut speech = Speech::start(&cfg, &a.speech)?;
    let mut model = crate::llm::open(&cfg.llm, &store)?;
    let mut conv = crate::llm::Conversation::new(&cfg.llm);
    conv.set_scene(scene);
    let cancel = crate::llm::Cancel::new();
    let describe = model.describe();
    let mut ask = |conv: &mut crate::llm::Conversation, q: &str| -> Result<()> {
        let msgs = conv.prompt_for(model.as_mut(), q)?;
        let mut out = std::io::stdout().lock();
        let mut splitter = crate::splitter::SentenceSplitter::new(4);
        let (answer, finish) = model.generate(&msgs, &cancel, &mut |chunk| {
            let _ = out.write_all(chunk.as_bytes());
            let _ = out.flush();
            if let Some(s) = &speech {
                splitter.push(chunk).into_iter().for_each(|p| s.say(p));
            }
        })?;
        if let Some(s) = &speech {
            splitter.finish().into_iter().for_each(|p| s.say(p));
        }
        let _ = writeln!(out);
        if finish == crate::llm::Finish::Length {
            tracing::warn!("answer cut at llm.max_tokens ({})", cfg.llm.max_tokens);
        }
        conv.record(q, &answer);
        Ok(())
    };
    if let Some(p) = one_shot {
        ask(&mut conv, &p)?;
        return match speech.take() {
            Some(s) => s.finish(),
            None => Ok(()),
        };
    }
    eprintln!("chatting with {describe} (empty line or Ctrl-D to quit)");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return match speech.take() {
                Some(s) => s.finish(),
                None => Ok(()),
            };
        }
        if let Err(e) = ask(&mut conv, &line) {
            eprintln!("error: {e:#}");
        }
    }
}

/// Describes one image with the configured captioner, logging how long it took.
fn caption_image(cfg: &Config, store: &Store, path: &Path) -> Result<String> {
    let img = crate::caption::load_image(path, cfg.vision.max_side)?;
    let mut captioner = crate::caption::open(&cfg.vision, store)?;
    let t = std::time::Instant::now();
    let caption = captioner.caption(&img)?;
    tracing::debug!(image = %path.display(), ms = t.elapsed().as_millis() as u64, %caption, "captioned");
    Ok(caption)
}

fn describe(mut cfg: Config, a: DescribeArgs) -> Result<()> {
    if let Some(b) = a.backend {
        cfg.vision.backend = b;
    }
    let mut files = Vec::new();
    for p in &a.images {
        files.extend(crate::camera::image_files(p)?);
    }
    let store = Store::from_config(&cfg.models)?;
    let speech = Speech::start(&cfg, &a.speech)?;
    let mut captioner = crate::caption::open(&cfg.vision, &store)?;
    let mut failed = 0;
    for f in &files {
        let result = crate::caption::load_image(f, cfg.vision.max_side).and_then(|img| {
            let t = std::time::Instant::now();
            let c = captioner.caption(&img);
            tracing::debug!(image = %f.display(), ms = t.elapsed().as_millis() as u64, "captioned");
            c
        });
        match result {
            Ok(text) => {
                if files.len() > 1 {
                    println!("{}: {text}", f.display());
                } else {
                    println!("{text}");
                }
                if let Some(s) = &speech {
                    crate::tts::split_sentences(&text)
                        .into_iter()
                        .for_each(|p| s.say(p));
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if let Some(s) = speech {
        s.finish()?;
    }
    if failed > 0 {
        bail!("{failed} of {} images could not be described", files.len());
    }
    Ok(())
}

/// Speech for text commands: a thread that synthesises each sentence as it arrives and plays it,
/// or collects it for a WAV file.
struct Speech {
    tx: crossbeam_channel::Sender<String>,
    worker: std::thread::JoinHandle<Result<()>>,
}

impl Speech {
    fn start(cfg: &Config, a: &SpeechArgs) -> Result<Option<Speech>> {
        if !a.speak && a.speak_to.is_none() {
            return Ok(None);
        }
        let mut voice = load_voice(cfg)?;
        let (tx, rx) = crossbeam_channel::bounded::<String>(16);
        let out = a.speak_to.clone();
        let device = a.device.clone();
        let gap_ms = cfg.tts.sentence_silence_ms;
        let worker =
            std::thread::Builder::new()
                .name("tts".into())
                .spawn(move || -> Result<()> {
                    let rate = voice.sample_rate;
                    let gap = vec![0.0; (rate as u64 * gap_ms as u64 / 1000) as usize];
                    let mut all = Vec::new();
                    for sentence in rx {
                        let mut pcm = voice.synthesize(&sentence)?;
                        pcm.extend_from_slice(&gap);
                        match &out {
                            Some(_) => all.extend(pcm),
                            None => crate::speaker::play(&pcm, rate, &device)?,
                        }
                    }
                    if let Some(path) = &out {
                        if all.is_empty() {
                            bail!("nothing was said, so {} was not written", path.display());
                        }
                        audio::write_wav(path, &all, rate)?;
                        eprintln!(
                            "wrote {} ({:.1} s of speech)",
                            path.display(),
                            all.len() as f64 / rate as f64
                        );
                    }
                    Ok(())
                })?;
        Ok(Some(Speech { tx, worker }))
    }

    fn say(&self, sentence: String) {
        // A failed send means the speech thread stopped with an error, reported by finish().
        let _ = self.tx.send(sentence);
    }

    fn finish(self) -> Result<()> {
        drop(self.tx);
        self.worker
            .join()
            .map_err(|_| anyhow::anyhow!("the speech thread panicked"))?
    }
}

/// The live pipeline: a microphone (or a recording) in, spoken answers out, with the latency of
/// each turn.
fn run_turn(cfg: &Config, a: RunArgs) -> Result<()> {
    use crate::pipeline::{Input, Output, RunOptions};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let mut cfg = cfg.clone();
    if a.barge_in {
        cfg.pipeline.barge_in = true;
    }
    let store = Store::from_config(&cfg.models)?;
    let pace = if a.fast {
        crate::mic::Pace::Fast
    } else {
        crate::mic::Pace::Realtime
    };
    let mut image = a.image;
    let input = match a.input {
        Some(path) => Input::File { path, pace },
        None if a.live || crate::mic::has_microphone() => Input::Mic,
        None => {
            eprintln!("no microphone: answering the bundled recording (jfk.wav), with the bundled photo as the camera");
            if image.is_none() {
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
    if matches!(input, Input::Mic) {
        eprintln!("listening (Ctrl-C to stop)");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let abort = Arc::new(AtomicBool::new(false));
    // Ctrl-C sets a flag the pipeline polls; no thread waits on the signal.
    signal_hook::flag::register(signal_hook::consts::SIGINT, abort.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, abort.clone())?;
    let out_path = match &output {
        Output::File(p) => Some(p.clone()),
        _ => None,
    };
    let summary = crate::pipeline::run(
        &cfg,
        RunOptions {
            input,
            output,
            image,
            metrics: a.metrics,
            max_turns: a.max_turns,
            camera: None,
            updates: None,
        },
        stop,
        abort,
    )?;
    for t in &summary.turns {
        println!("heard:  {}", t.transcript);
        let cut = if t.interrupted { " [interrupted]" } else { "" };
        println!("answer: {}{cut}", t.answer);
        println!(
            "timing: from the end of speech: endpoint {:.0} ms, transcript {:.0} ms, first token {:.0} ms, first audio {:.0} ms (voice to voice)",
            t.endpoint_ms, t.transcript_ms, t.first_token_ms, t.voice_to_voice_ms
        );
    }
    if summary.turns.is_empty() {
        println!("heard:  (no speech)");
    }
    if summary.mic_dropped > 0 {
        eprintln!(
            "warning: {} microphone buffers were dropped (the pipeline fell behind)",
            summary.mic_dropped
        );
    }
    if let Some(p) = out_path {
        println!("wrote:  {} ({:.1} s)", p.display(), summary.output_s);
    }
    Ok(())
}

fn models(cfg: &Config, cmd: ModelsCommand) -> Result<()> {
    let store = Store::from_config(&cfg.models)?;
    match cmd {
        ModelsCommand::List => {
            println!("models folder: {}", store.dir.display());
            println!("download cache: {}", store.downloads.display());
            for m in &store.manifest.model {
                let present = m.outputs.iter().all(|o| store.dir.join(&o.file).is_file());
                println!(
                    "{:<18} {:<8} {:<8} {:<8} {}",
                    m.name,
                    m.kind,
                    if m.default { "default" } else { "" },
                    if present { "present" } else { "missing" },
                    m.about
                );
            }
            Ok(())
        }
        ModelsCommand::Fetch { names, all } => {
            let names: Vec<String> = if all {
                store
                    .manifest
                    .model
                    .iter()
                    .map(|m| m.name.clone())
                    .collect()
            } else if names.is_empty() {
                store
                    .manifest
                    .defaults()
                    .iter()
                    .map(|m| m.name.clone())
                    .collect()
            } else {
                names
            };
            store.fetch(&names)?;
            Ok(())
        }
        ModelsCommand::Verify { names } => {
            let entries: Vec<_> = if names.is_empty() {
                store.manifest.model.iter().collect()
            } else {
                names
                    .iter()
                    .map(|n| store.manifest.get(n))
                    .collect::<Result<_, _>>()?
            };
            let mut bad = 0;
            for e in entries {
                for (path, state) in store.verify(e)? {
                    let word = match &state {
                        FileState::Ok => "ok".to_string(),
                        FileState::Missing if names.is_empty() => continue,
                        FileState::Missing => "MISSING".to_string(),
                        FileState::Corrupt { actual } => format!("CORRUPT (sha256 {actual})"),
                    };
                    if state != FileState::Ok {
                        bad += 1;
                    }
                    println!("{:<18} {word:<8} {}", e.name, path.display());
                }
            }
            if bad > 0 {
                bail!("{bad} model files failed verification: run `seesay models fetch` to repair them");
            }
            Ok(())
        }
        ModelsCommand::Import {
            dir,
            output,
            quantize,
        } => {
            let q: crate::import::Quantize = quantize.parse()?;
            let mel = store.path_of("whisper-assets")?;
            let h = crate::import::convert_ct2_dir(&dir, &mel, q, &output)?;
            eprintln!(
                "wrote {} ({} encoder / {} decoder layers, width {}, {q})",
                output.display(),
                h.n_audio_layer,
                h.n_text_layer,
                h.n_audio_state
            );
            Ok(())
        }
        ModelsCommand::Path { name } => {
            println!("{}", store.resolve(&name)?.display());
            Ok(())
        }
    }
}
