//! `seesay bench`: the real-time factor (processing time / audio time) of speech recognition and
//! synthesis, the prefill and generation speed of the language model and the captioner's time per
//! frame, as medians over several
//! runs after a warm-up. Numbers from debug builds are meaningless: use --release.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::bench_common::{median, TTS_PARAGRAPH};

use seesay::config::Config;
use seesay::media::audio::{self, SAMPLE_RATE};
use seesay::media::image::load_image;
use seesay::stages::asr::{self, Transcriber};
use seesay::stages::camera::SceneChange;
use seesay::stages::llm::{self, Message, Role};
use seesay::stages::tts::{self, Voice};
use seesay::stages::{caption, Cancel};
use seesay::store::Store;
use seesay::text::splitter::split_sentences;
use seesay::text::transcript::plain_text;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Timed runs per stage (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Which stages: asr, tts, llm, vision, all (these four), quality (spoken-assistant
    /// questions to the language model, each answer checked), turn (the end-of-turn decision on
    /// whole questions and fragments), wake (the wake word: detections, false alarms, cost),
    /// memory (embedding time per sentence, search time at 10,000 memories), tools (the
    /// language model's tool calls on 30 requests, scored), hearing (the recogniser on 40
    /// held-out spoken questions at three paces: word errors and time), or pipeline (the live
    /// pipeline in real time; takes about 11 s a turn).
    #[arg(long, default_value = "all")]
    pub stage: String,
    /// Print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Questions asked by `--stage quality` and `--stage turn` (at most 30) and `--stage
    /// pipeline` (the same ones, spoken; more than 30 repeat them) [default: 30]; `--stage
    /// hearing` asks its own (at most 40) [default: 40].
    #[arg(long)]
    pub questions: Option<usize>,
    /// The voice that asks the pipeline's, the turn's and the hearing benchmark's questions:
    /// espeak (espeak-ng, unlike the voice seesay answers with) or piper.
    #[arg(long, default_value = "espeak")]
    pub voice: String,
    /// Print the TTS benchmark paragraph and exit (for scripts/bench-reference).
    #[arg(long)]
    pub print_paragraph: bool,
    /// Print the configured language model's name and exit (for scripts/bench-llm).
    #[arg(long)]
    pub print_llm_model: bool,
    /// Print where the llama-server binary is and exit (for scripts/bench-llm).
    #[arg(long)]
    pub print_llama_server: bool,
    /// `--stage tools`: describe the tools with every request, not only with those whose words
    /// point at one.
    #[arg(long)]
    pub all_tools: bool,
    /// The wake word for `--stage wake` (default hey_jarvis).
    #[arg(long, value_name = "NAME")]
    pub wake_word: Option<String>,
    /// Minutes of other speech and noise for `--stage wake`.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// `--stage pipeline`: ask the questions through `seesay serve` (started for the run) as one
    /// WebSocket conversation, and time the answers' first audio where the client receives it.
    #[arg(long)]
    pub serve: bool,
    /// The language model to measure (default: llm.model).
    #[arg(long, value_name = "NAME")]
    pub llm_model: Option<String>,
}

/// Times `f` once to warm up, then `runs` times; returns the median seconds.
fn time_median(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(&mut times))
}

pub fn run(cfg: &Config, a: BenchArgs) -> Result<()> {
    if print_requested(cfg, &a) {
        return Ok(());
    }
    let mut cfg = cfg.clone();
    if let Some(m) = &a.llm_model {
        cfg.llm.model = m.clone();
    }
    let cfg = &cfg;
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; build with --release for meaningful numbers");
    }
    let report = bench_stages(cfg, &a)?;
    if a.json {
        outln!("{}", serde_json::Value::Object(report));
    }
    Ok(())
}

/// Prints what one of the `--print-*` flags asks for; false if none was given.
fn print_requested(cfg: &Config, a: &BenchArgs) -> bool {
    if a.print_paragraph {
        outln!("{TTS_PARAGRAPH}");
        return true;
    }
    if a.print_llm_model {
        outln!("{}", cfg.llm.model);
        return true;
    }
    if a.print_llama_server {
        outln!(
            "{}",
            seesay::stages::llm::llama::server_binary(&cfg.llm.llama_server).display()
        );
        return true;
    }
    false
}

/// Runs the stages `--stage` names, in a fixed order; the report of each, by name.
fn bench_stages(cfg: &Config, a: &BenchArgs) -> Result<serde_json::Map<String, serde_json::Value>> {
    anyhow::ensure!(
        !a.serve || a.stage == "pipeline",
        "--serve goes with --stage pipeline (the conversation through seesay serve)"
    );
    let mut report = serde_json::Map::new();
    report.insert("runs".into(), a.runs.into());
    if a.stage == "asr" || a.stage == "all" {
        report.insert("asr".into(), bench_asr(cfg, a.runs)?);
    }
    if a.stage == "tts" || a.stage == "all" {
        report.insert("tts".into(), bench_tts(cfg, a.runs)?);
    }
    if a.stage == "llm" || a.stage == "all" {
        report.insert("llm".into(), bench_llm(cfg, a.runs)?);
    }
    if a.stage == "vision" || a.stage == "all" {
        report.insert("vision".into(), bench_vision(cfg, a.runs)?);
        report.insert("read".into(), super::bench_read::run(cfg, a.runs)?);
    }
    if a.stage == "memory" {
        report.insert("memory".into(), super::bench_memory::run(cfg, a.runs)?);
    }
    if a.stage == "vision" || a.stage == "all" {
        report.insert("scene_check".into(), bench_scene_check(a.runs)?);
    }
    if a.stage == "tools" {
        report.insert("tools".into(), super::bench_tools::run(cfg, a.all_tools)?);
    }
    if a.stage == "quality" {
        let (right, asked) = super::quality::run(cfg, a.questions.unwrap_or(30))?;
        report.insert(
            "quality".into(),
            serde_json::json!({"right": right, "asked": asked, "model": cfg.llm.model}),
        );
    }
    if a.stage == "wake" {
        let word = a.wake_word.as_deref().unwrap_or("hey_jarvis");
        report.insert("wake".into(), super::bench_wake::run(cfg, word, a.minutes)?);
    }
    if a.stage == "turn" {
        report.insert(
            "turn".into(),
            super::bench_turn::run(cfg, a.questions.unwrap_or(30), &a.voice)?,
        );
    }
    if a.stage == "hearing" {
        report.insert(
            "hearing".into(),
            super::bench_hearing::run(cfg, a.questions.unwrap_or(40), &a.voice)?,
        );
    }
    if a.stage == "pipeline" {
        report.insert(
            "pipeline".into(),
            super::bench_pipeline::run(cfg, a.questions.unwrap_or(30), &a.voice, a.serve)?,
        );
    }
    if report.len() == 1 {
        anyhow::bail!(
            "unknown stage '{}': use asr, tts, llm, vision, all, quality, turn, wake, memory, tools, hearing or pipeline",
            a.stage
        );
    }
    Ok(report)
}

/// `--stage asr`: Whisper on the JFK sample, fitted to the audio and with the full 30 s context.
fn bench_asr(cfg: &Config, runs: usize) -> Result<serde_json::Value> {
    let store = Store::from_config(&cfg.models)?;
    let wav = store.resolve("sample-jfk")?;
    let pcm = audio::read_file(&wav, SAMPLE_RATE)?;
    let audio_s = pcm.len() as f64 / SAMPLE_RATE as f64;
    let mut model = asr::open_whisper(&cfg.asr, &store)?;
    let mut words = String::new();
    let secs = time_median(runs, || {
        words = plain_text(&model.transcribe(&pcm, 0.0)?);
        Ok(())
    })?;
    // Reference in the same process: Whisper's standard 30 s context, as whisper.cpp runs it.
    model.set_fit_audio_context(false);
    let full = time_median(runs, || {
        model.transcribe(&pcm, 0.0).map(|_| ()).map_err(Into::into)
    })?;
    model.set_fit_audio_context(cfg.asr.fit_audio_context);
    eprintln!(
        "asr  {:<22} audio {audio_s:5.1} s  median {:6.0} ms  RTF {:.3}  ({:.0}x real time); \
         full 30 s context {:.0} ms ({:.2}x)",
        model.name(),
        secs * 1000.0,
        secs / audio_s,
        audio_s / secs,
        full * 1000.0,
        full / secs
    );
    Ok(
        serde_json::json!({"model": model.name(), "threads": cfg.asr.threads(), "audio_s": audio_s,
            "median_ms": secs * 1000.0, "rtf": secs / audio_s, "text": words,
            "full_context_median_ms": full * 1000.0}),
    )
}

/// `--stage tts`: Piper on the benchmark paragraph, and on its first sentence alone.
fn bench_tts(cfg: &Config, runs: usize) -> Result<serde_json::Value> {
    let mut voice = tts::open_piper(&cfg.tts, &Store::from_config(&cfg.models)?)?;
    let mut audio_s = 0.0;
    let secs = time_median(runs, || {
        let pcm = tts::speak_all(&mut voice, TTS_PARAGRAPH, 0)?;
        audio_s = pcm.len() as f64 / voice.sample_rate() as f64;
        Ok(())
    })?;
    // First sentence alone: what a listener waits for before speech starts.
    let first = split_sentences(TTS_PARAGRAPH).remove(0);
    let first_s = time_median(runs, || {
        voice.synthesize(&first).map(|_| ()).map_err(Into::into)
    })?;
    eprintln!(
        "tts  {:<22} audio {audio_s:5.1} s  median {:6.0} ms  RTF {:.3}  ({:.0}x real time); first sentence {:.0} ms",
        cfg.tts.voice,
        secs * 1000.0,
        secs / audio_s,
        audio_s / secs,
        first_s * 1000.0
    );
    Ok(
        serde_json::json!({"voice": cfg.tts.voice, "audio_s": audio_s, "median_ms": secs * 1000.0,
            "rtf": secs / audio_s, "first_sentence_ms": first_s * 1000.0}),
    )
}

/// `--stage llm`: prefill and generation speed of the language model (run 0 warms up).
fn bench_llm(cfg: &Config, runs: usize) -> Result<serde_json::Value> {
    let store = Store::from_config(&cfg.models)?;
    let mut llm = llm::open(&cfg.llm, &store)?;
    let cancel = Cancel::new();
    let (mut prefill, mut generate, mut first) = (Vec::new(), Vec::new(), Vec::new());
    let (mut stats, mut answer) = (None, String::new());
    for i in 0..=runs.max(1) {
        // Each run's prompt differs from its first token, so no engine can reuse a cached
        // prefill: every run computes its whole prompt.
        let msgs = [
            Message::new(Role::System, format!("[{i}] {}", cfg.llm.system_prompt)),
            Message::new(
                Role::User,
                "Explain in a few sentences why the sky is blue during the day and red at sunset.",
            ),
        ];
        answer = llm.generate(&msgs, &cancel, &mut |_| {})?.0;
        let s = llm
            .stats()
            .context("this backend reports no token timings")?;
        if i > 0 {
            // Run 0 warms up.
            prefill.push(s.prefilled as f64 / s.prefill_s);
            generate.push(s.generated as f64 / s.generate_s);
            first.push(s.prefill_s * 1000.0);
        }
        stats = Some(s);
    }
    let s = stats.expect("at least one run");
    let (p, g, f) = (
        median(&mut prefill),
        median(&mut generate),
        median(&mut first),
    );
    eprintln!(
        "llm  {:<22} prompt {} tokens: prefill {p:.0} tok/s ({f:.0} ms); generation {g:.0} tok/s ({} tokens)",
        llm.describe(),
        s.prompt_tokens,
        s.generated
    );
    Ok(
        serde_json::json!({"model": llm.describe(), "engine": cfg.llm.engine,
        "threads": seesay::host::thread_count(cfg.llm.threads, seesay::host::Budget::machine().llm),
        "prompt_tokens": s.prompt_tokens, "prefilled": s.prefilled, "generated": s.generated,
        "prefill_tok_s": p, "prefill_ms": f, "generate_tok_s": g, "answer": answer,
        "draft_model": cfg.llm.draft_model}),
    )
}

/// `--stage vision`: the captioner's time per frame on the sample photo, and the photo's decode.
fn bench_vision(cfg: &Config, runs: usize) -> Result<serde_json::Value> {
    let store = Store::from_config(&cfg.models)?;
    let photo = store.resolve("sample-chelsea")?;
    let img = load_image(&photo, cfg.vision.max_side)?;
    let engine = super::chat::llm_for_vision(cfg, &store)?;
    let mut captioner = caption::open(&cfg.vision, &store, engine.as_ref())?;
    let mut caption = String::new();
    let secs = time_median(runs, || {
        caption = captioner.caption(&img)?;
        Ok(())
    })?;
    // The decode of the photo is part of each frame's cost too.
    let decode = time_median(runs, || {
        load_image(&photo, cfg.vision.max_side)?;
        Ok(())
    })?;
    eprintln!(
        "vision {:<20} {}x{} photo: caption {:.0} ms per frame (+ {:.1} ms PNG decode): {caption}",
        captioner.describe(),
        img.width(),
        img.height(),
        secs * 1000.0,
        decode * 1000.0
    );
    Ok(
        serde_json::json!({"captioner": captioner.describe(), "caption_ms": secs * 1000.0,
            "decode_ms": decode * 1000.0, "caption": caption}),
    )
}

/// The 95th percentile (nearest rank).
/// The scene-change check's time per camera frame (a grey thumbnail and its difference from
/// the last described one), at three frame sizes.
fn bench_scene_check(runs: usize) -> Result<serde_json::Value> {
    let mut out = serde_json::Map::new();
    for (w, h) in [(640, 480), (1280, 720), (1920, 1080)] {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 99]));
        let mut scene = SceneChange::new(0.03);
        scene.described(scene.check(&img));
        let secs = time_median(runs.max(20), || {
            std::hint::black_box(scene.check(&img));
            Ok(())
        })?;
        eprintln!(
            "vision scene-change check {w}x{h}: {:.2} ms per frame",
            secs * 1000.0
        );
        out.insert(format!("{w}x{h}_ms"), (secs * 1000.0).into());
    }
    Ok(out.into())
}
