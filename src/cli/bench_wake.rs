//! `seesay bench --stage wake`: the wake word (`--wake-word`, default hey_jarvis) spoken by
//! espeak-ng and Piper at several speeds and levels must be detected; minutes of other speech
//! (the quality questions read one after another, the bundled recording) and of noise must not
//! be; and what listening costs per second of audio.

use std::time::Instant;

use anyhow::Result;

use seesay::config::Config;
use seesay::media::audio::SAMPLE_RATE;
use seesay::stages::wake::{OpenWakeWord, WakeDetector};
use seesay::store::Store;

use seesay::text::splitter::split_sentences;

use super::bench_common::{QuestionVoice, TTS_PARAGRAPH};
use super::quality::QUESTIONS;

/// Whether `audio` holds the wake word (fed in 80 ms chunks, as a microphone would).
fn detects(w: &mut OpenWakeWord, audio: &[f32], threshold: f32) -> Result<usize> {
    w.reset();
    let mut hits = 0;
    for chunk in audio.chunks(1280) {
        if w.push(chunk)? >= threshold {
            hits += 1;
            w.reset();
        }
    }
    Ok(hits)
}

/// The wake phrase of a built-in model, as spoken.
pub fn phrase(word: &str) -> String {
    word.replace('_', " ")
}

pub fn run(cfg: &Config, word: &str, minutes: f64) -> Result<serde_json::Value> {
    let store = Store::from_config(&cfg.models)?;
    let mut w = OpenWakeWord::open(word, &store)?;
    let threshold = cfg.pipeline.wake_threshold;
    let silence = |s: f64| vec![0.0f32; (s * SAMPLE_RATE as f64) as usize];
    let text = phrase(word);
    let (mut said, mut heard) = (0, 0);
    for voice in ["espeak", "piper"] {
        let mut v = QuestionVoice::new(cfg, voice)?;
        for speed in [0.85f32, 1.0, 1.2] {
            for level in [0.3f32, 1.0] {
                let pcm = v.say_at(&format!("{text}."), speed)?;
                let mut audio = silence(1.0);
                audio.extend(pcm.iter().map(|s| s * level));
                audio.extend(silence(1.0));
                let hit = detects(&mut w, &audio, threshold)? > 0;
                said += 1;
                heard += usize::from(hit);
                eprintln!(
                    "  {voice:<6} speed {speed:.2} level {level:.1}: {}",
                    if hit { "detected" } else { "MISSED" }
                );
            }
        }
    }
    // Other speech (jfk.wav, then read sentences), then white noise, until `minutes` of audio.
    let mut other: Vec<f32> =
        seesay::media::audio::read_file(&store.resolve("sample-jfk")?, SAMPLE_RATE)?;
    let want = (minutes * 60.0 * SAMPLE_RATE as f64) as usize;
    // Up to three quarters of it speech: the questions and the TTS benchmark's paragraph, in
    // both voices, at three speeds.
    let paragraph = split_sentences(TTS_PARAGRAPH);
    let texts: Vec<&str> = QUESTIONS
        .iter()
        .map(|(q, _)| *q)
        .chain(paragraph.iter().map(String::as_str))
        .collect();
    'fill: for speed in [1.0f32, 0.85, 1.2] {
        for voice in ["piper", "espeak"] {
            let mut v = QuestionVoice::new(cfg, voice)?;
            for text in &texts {
                other.extend(v.say_at(text, speed)?);
                other.extend(silence(0.3));
                if other.len() >= want * 3 / 4 {
                    break 'fill;
                }
            }
        }
    }
    let speech_s = other.len() as f64 / SAMPLE_RATE as f64;
    let mut x = 12345u32;
    while other.len() < want {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        other.push(((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2);
    }
    let t = Instant::now();
    let false_hits = detects(&mut w, &other, threshold)?;
    let secs = t.elapsed().as_secs_f64();
    let audio_s = other.len() as f64 / SAMPLE_RATE as f64;
    eprintln!(
        "wake {word}: detected {heard}/{said} spoken; {false_hits} false detections in {:.1} min ({speech_s:.0} s of speech, the rest white noise); {:.1} ms per second of audio ({:.3} of a core)",
        audio_s / 60.0,
        secs * 1000.0 / audio_s,
        secs / audio_s
    );
    Ok(serde_json::json!({
        "word": word, "detected": heard, "spoken": said, "false_detections": false_hits,
        "other_audio_s": audio_s, "ms_per_audio_s": secs * 1000.0 / audio_s,
    }))
}
