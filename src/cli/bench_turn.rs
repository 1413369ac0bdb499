//! `seesay bench --stage turn`: how well and how fast the end of a turn is judged. Each question
//! of the quality set is spoken whole (its turn is over) and without its last word (a fragment:
//! "What is the capital of"), by espeak-ng or Piper, and judged as the pipeline judges a pause:
//! Smart Turn on the sound, the language model on the transcript, combined by `turn::decide`.
//! Reports how many whole questions would end at once, how many fragments would be cut off
//! (each signal alone, and combined), and what each step costs.

use std::time::Instant;

use anyhow::Result;

use seesay::config::Config;
use seesay::media::audio::SAMPLE_RATE;
use seesay::stages::asr::{self, Transcriber};
use seesay::stages::llm::{self, open_ended, Conversation};
use seesay::stages::turn::{self, SmartTurn, TurnDetector};
use seesay::store::Store;
use seesay::text::transcript::plain_text;

use super::bench_common::{median, QuestionVoice};
use super::quality::QUESTIONS;

pub fn run(cfg: &Config, questions: usize, voice: &str) -> Result<serde_json::Value> {
    let store = Store::from_config(&cfg.models)?;
    let mut smart = SmartTurn::open(&cfg.turn, &cfg.tts.onnxruntime, &store)?;
    let mut recogniser = asr::open_whisper(&cfg.asr, &store)?;
    let mut model = llm::open(&cfg.llm, &store)?;
    let mut conv = Conversation::new(&cfg.llm);
    let mut speak = QuestionVoice::new(cfg, voice)?;
    let silence = |ms: usize| vec![0.0f32; ms * SAMPLE_RATE as usize / 1000];
    // [whole, fragment] x [audio alone, text alone, combined]: judged complete.
    let mut said_complete = [[0usize; 3]; 2];
    let (mut audio_ms, mut asr_ms, mut llm_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut cases = Vec::new();
    let n = questions.clamp(1, QUESTIONS.len());
    for (q, _) in &QUESTIONS[..n] {
        let words: Vec<&str> = q.split_whitespace().collect();
        let fragment = words[..words.len() - 1].join(" ");
        for (kind, text) in [(0, q.to_string()), (1, fragment)] {
            // As the pipeline has it at a pause: pre-roll, the speech, the pause so far.
            let mut pcm = silence(200);
            pcm.extend(speak.say(&text)?);
            pcm.extend(silence(cfg.turn.pause_ms as usize));
            let t = Instant::now();
            let audio_p = smart.complete(&pcm)?;
            audio_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            let heard = plain_text(&recogniser.transcribe(&pcm, 0.0)?);
            asr_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            let msgs = conv.prompt_for(model.as_mut(), open_ended(&heard))?;
            let text_p = model.end_of_turn(&msgs)?;
            llm_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            let verdict = turn::decide(&cfg.turn, Some(audio_p), text_p);
            cases.push(
                serde_json::json!({"text": text, "heard": heard, "whole": kind == 0,
                "audio_p": audio_p, "text_p": text_p, "complete": verdict.complete}),
            );
            for (i, p) in [Some(audio_p), text_p, Some(verdict.score)]
                .iter()
                .enumerate()
            {
                let threshold = if i == 2 { cfg.turn.threshold } else { 0.5 };
                said_complete[kind][i] += usize::from(p.is_some_and(|p| p >= threshold));
            }
            eprintln!(
                "  {:<9} audio {audio_p:.3}  text {}  -> {:.3} {:<10} {text:?} heard {heard:?}",
                ["whole", "fragment"][kind],
                text_p.map_or("  -  ".into(), |p| format!("{p:.3}")),
                verdict.score,
                if verdict.complete { "over" } else { "goes on" },
            );
        }
    }
    let names = ["audio", "text", "combined"];
    for (i, name) in names.iter().enumerate() {
        eprintln!(
            "turn {name:<9} whole questions ended at once: {:>2}/{n}   fragments cut off: {:>2}/{n}",
            said_complete[0][i], said_complete[1][i]
        );
    }
    let (a, s, l) = (
        median(&mut audio_ms),
        median(&mut asr_ms),
        median(&mut llm_ms),
    );
    eprintln!(
        "turn cost per pause (median): smart turn {a:.0} ms, transcript {s:.0} ms, language model {l:.0} ms"
    );
    let by_signal = |kind: usize| -> serde_json::Value {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.to_string(), said_complete[kind][i].into()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    Ok(serde_json::json!({
        "voice": voice, "questions": n,
        "whole_ended": by_signal(0), "fragments_cut": by_signal(1),
        "smart_turn_ms": a, "transcript_ms": s, "llm_ms": l, "cases": cases,
    }))
}
