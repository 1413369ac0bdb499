//! `seesay bench --stage pipeline`: the quality benchmark's questions, spoken (espeak-ng or
//! Piper), through the live pipeline in real time: in this process (file in, file out), or with
//! `--serve` through `seesay serve`'s WebSocket conversation (`bench_serve`). Reports the median
//! and 95th percentile of each latency figure, a line per turn, how often the answer written
//! ahead was used, and how many answers were right.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;

use seesay::config::Config;
use seesay::media::audio::SAMPLE_RATE;
use seesay::pipeline::{self, Input, Output, RunOptions, TurnMetrics};
use seesay::stages::mic::Pace;

use super::bench_common::{median, p95, QuestionVoice};
use super::quality::{is_right, QUESTIONS};

/// A question and the words that make its answer right.
type Question = (&'static str, &'static [&'static str]);

/// Runs `turns` spoken questions and reports their figures (see the module's comment).
pub fn run(cfg: &Config, turns: usize, voice_name: &str, serve: bool) -> Result<serde_json::Value> {
    let turns = turns.clamp(1, 64);
    let questions: Vec<Question> = (0..turns).map(|i| QUESTIONS[i % QUESTIONS.len()]).collect();
    let input = spoken(cfg, &questions, voice_name)?;
    let mut cfg = cfg.clone();
    // Short answers (cut at a sentence), so each fits in the gap before the next question.
    cfg.llm.max_tokens = 24;
    eprintln!(
        "pipeline: {turns} spoken questions in real time ({:.0} s){}...",
        input.len() as f64 / SAMPLE_RATE as f64,
        if serve { ", through seesay serve" } else { "" }
    );
    let mut figures = serde_json::Map::new();
    let turns_done = match serve {
        true => {
            let served = super::bench_serve::run(&cfg, &input, questions.len())?;
            let mut xs = served.first_audio_ms;
            figures.insert(
                "client_voice_to_voice_ms".into(),
                percentiles("client_voice_to_voice_ms", &mut xs),
            );
            served.turns
        }
        false => in_process(&cfg, input)?,
    };
    report(&turns_done, &questions, voice_name, figures, serve)
}

/// The questions, spoken one after another with room for an answer after each: 16 kHz audio.
fn spoken(cfg: &Config, questions: &[Question], voice_name: &str) -> Result<Vec<f32>> {
    let gap = |s: f64| vec![0.0f32; (s * SAMPLE_RATE as f64) as usize];
    let mut input = gap(1.0);
    let mut speak = QuestionVoice::new(cfg, voice_name)?;
    for (q, _) in questions {
        input.extend(speak.say(q)?);
        // Room for a short answer before the next question (half duplex).
        input.extend(gap(9.0));
    }
    Ok(input)
}

/// The turns of `seesay run` (in this process) on `input`, in real time.
fn in_process(cfg: &Config, input: Vec<f32>) -> Result<Vec<TurnMetrics>> {
    // A folder of this run's own, removed when dropped.
    let dir = tempfile::Builder::new().prefix("seesay-bench-").tempdir()?;
    let wav = dir.path().join("questions.wav");
    seesay::media::wav::write_wav(&wav, &input, SAMPLE_RATE)?;
    let summary = pipeline::run(
        cfg,
        RunOptions {
            input: Input::File {
                path: wav,
                pace: Pace::Realtime,
            },
            output: Output::File(dir.path().join("answers.wav")),
            image: None,
            metrics: None,
            max_turns: None,
            camera: None,
            frames: None,
            updates: None,
            // The benchmark measures the conversation itself, the same run after run.
            memory: None,
            typed: None,
            on_listening: None,
        },
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    Ok(summary?.turns)
}

/// Median and 95th percentile of `xs`, printed under `name` and as JSON.
fn percentiles(name: &str, xs: &mut [f64]) -> serde_json::Value {
    let (m, p) = (median(&mut xs.to_vec()), p95(xs));
    eprintln!("pipeline {name:<25} median {m:>5.0} ms   p95 {p:>5.0} ms");
    serde_json::json!({"median": m, "p95": p})
}

/// The report: each latency figure's median and 95th percentile, a line per turn, how the
/// answers written ahead went, and how many answers were right.
fn report(
    turns: &[TurnMetrics],
    questions: &[Question],
    voice_name: &str,
    mut figures: serde_json::Map<String, serde_json::Value>,
    served: bool,
) -> Result<serde_json::Value> {
    let col = |f: fn(&TurnMetrics) -> f64| -> Vec<f64> { turns.iter().map(f).collect() };
    for (name, mut xs) in [
        ("endpoint_ms", col(|t| t.endpoint_ms)),
        ("decision_ms", col(|t| t.decision_ms)),
        ("transcript_ms", col(|t| t.transcript_ms)),
        ("first_token_ms", col(|t| t.first_token_ms)),
        ("first_audio_ready_ms", col(|t| t.first_audio_ready_ms)),
        ("voice_to_voice_ms", col(|t| t.voice_to_voice_ms)),
    ] {
        figures.insert(name.into(), percentiles(name, &mut xs));
    }
    print_turns(turns);
    figures.insert("preemptive".into(), preemptive_counts(turns));
    let by_model = turns.iter().filter(|t| t.ended_by == "model").count();
    figures.insert("ended_by_model".into(), by_model.into());
    let right = turns
        .iter()
        .zip(questions)
        .filter(|(t, (_, accepted))| is_right(&t.answer, accepted))
        .count();
    eprintln!(
        "pipeline answered {} of {} questions ({voice_name} voice), {right} answers right",
        turns.len(),
        questions.len()
    );
    figures.insert("answered".into(), turns.len().into());
    figures.insert("right".into(), right.into());
    figures.insert("voice".into(), voice_name.into());
    figures.insert("asked".into(), questions.len().into());
    figures.insert("served".into(), served.into());
    Ok(serde_json::Value::Object(figures))
}

/// One line a turn: what was heard and answered, how soon, and how the turn ended.
fn print_turns(turns: &[TurnMetrics]) {
    for t in turns {
        eprintln!(
            "  turn {}: {:?} -> {:?} ({:.0} ms; ended by {}, endpoint {:.0} ms{})",
            t.turn,
            t.transcript,
            t.answer,
            t.voice_to_voice_ms,
            t.ended_by,
            t.endpoint_ms,
            t.preemptive
                .as_ref()
                .map(|p| format!("; answer ahead {p}"))
                .unwrap_or_default()
        );
    }
}

/// How many turns' answers written ahead were used, redone and dropped, printed and as JSON.
fn preemptive_counts(turns: &[TurnMetrics]) -> serde_json::Value {
    let count = |what: &str| {
        turns
            .iter()
            .filter(|t| t.preemptive.as_deref() == Some(what))
            .count()
    };
    let (used, redone, dropped) = (count("used"), count("redone"), count("dropped"));
    eprintln!("pipeline answers written ahead: {used} used, {redone} redone, {dropped} dropped");
    serde_json::json!({"used": used, "redone": redone, "dropped": dropped})
}
