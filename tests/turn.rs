//! End of turn with the real models, in real time: a question with a pause in the middle is one
//! turn (spoken by Piper and by espeak-ng, whose prosody Smart Turn judges differently), and the
//! bundled jfk.wav is not cut after "And so my fellow Americans" (where Kennedy pauses).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const RATE: usize = 16_000;

/// `text` spoken by espeak-ng or Piper, as 16 kHz samples.
fn speak(dir: &Path, voice: &str, text: &str) -> Vec<f32> {
    let wav = dir.join("part.wav");
    match voice {
        "espeak" => {
            let status = Command::new("espeak-ng")
                .args(["-v", "en-us", "-s", "165", "-w"])
                .arg(&wav)
                .arg(text)
                .status()
                .expect("espeak-ng (scripts/setup --test installs it)");
            assert!(status.success());
        }
        _ => {
            ok(seesay(&["say", text, "-o", wav.to_str().unwrap()]));
        }
    }
    seesay::media::audio::read_file(&wav, RATE as u32).unwrap()
}

/// Runs `input` through `seesay run FLAGS` in real time, answers at most `max_tokens` long;
/// returns the per-turn metrics.
fn run_with(dir: &Path, input: &Path, max_tokens: u32, flags: &[&str]) -> Vec<serde_json::Value> {
    let config = format!("[llm]\nmax_tokens = {max_tokens}\n");
    run_file(dir, input, &config, flags).2
}

fn run(dir: &Path, input: &Path) -> Vec<serde_json::Value> {
    run_with(dir, input, 24, &[])
}

fn paused_question_is_one_turn(voice: &str) {
    let dir = tempfile::tempdir().unwrap();
    let silence = |s: f64| vec![0.0f32; (s * RATE as f64) as usize];
    let mut pcm = silence(0.5);
    pcm.extend(speak(dir.path(), voice, "What is the capital of"));
    pcm.extend(silence(0.7));
    pcm.extend(speak(dir.path(), voice, "Germany?"));
    pcm.extend(silence(5.0));
    let input = dir.path().join("question.wav");
    seesay::media::wav::write_wav(&input, &pcm, RATE as u32).unwrap();
    let turns = run(dir.path(), &input);
    assert_eq!(turns.len(), 1, "{voice}: {turns:?}");
    let t = &turns[0];
    let heard = words(t["transcript"].as_str().unwrap());
    assert!(
        heard.contains(&"capital".into()) && heard.contains(&"germany".into()),
        "{voice}: {t}"
    );
    assert!(
        words(t["answer"].as_str().unwrap()).contains(&"berlin".into()),
        "{voice}: {t}"
    );
}

#[test]
fn a_question_with_a_pause_inside_is_one_turn_piper() {
    paused_question_is_one_turn("piper");
}

#[test]
fn a_question_with_a_pause_inside_is_one_turn_espeak() {
    paused_question_is_one_turn("espeak");
}

#[test]
fn kennedy_is_not_cut_off_after_fellow_americans() {
    let dir = tempfile::tempdir().unwrap();
    let turns = run(dir.path(), &model_path("sample-jfk"));
    assert_eq!(turns.len(), 1, "{turns:?}");
    let heard = words(turns[0]["transcript"].as_str().unwrap());
    assert!(
        heard.starts_with(&["and".into(), "so".into()]) && heard.ends_with(&["country".into()]),
        "{heard:?}"
    );
    // The recording ends a second after the question: its answer is still timed in real time,
    // as a microphone's silence would go on (it was played out the moment the input ended, and
    // its first audio counted before its first token).
    let t = &turns[0];
    let ms = |key: &str| t[key].as_f64().unwrap();
    assert!(ms("voice_to_voice_ms") > ms("first_token_ms"), "{t}");
    assert_ne!(t["ended_by"], "input end", "{t}");
}

/// A long answer, and `reply` spoken over it by `voice` 2.5 s after the question, with barge-in;
/// the turns, and the end of what seesay logged (its decisions about the speech over the answer,
/// for a failure to show).
fn spoken_over(voice: &str, reply: &str) -> (Vec<serde_json::Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let silence = |s: f64| vec![0.0f32; (s * RATE as f64) as usize];
    let mut pcm = silence(0.5);
    pcm.extend(speak(
        dir.path(),
        "piper",
        "Tell me about the history of France.",
    ));
    pcm.extend(silence(2.5));
    pcm.extend(speak(dir.path(), voice, reply));
    pcm.extend(silence(8.0));
    let input = dir.path().join("input.wav");
    seesay::media::wav::write_wav(&input, &pcm, RATE as u32).unwrap();
    let turns = run_with(dir.path(), &input, 60, &["--barge-in"]);
    (turns, log_tail(dir.path(), 40))
}

/// (Piper's "Mm-hmm." does not sound like a hum: Whisper tiny.en hears "in a month", which
/// are words. espeak-ng hums it, and Piper's "Uh-huh." is heard as "Uh.")
#[test]
fn a_backchannel_does_not_interrupt_but_words_do() {
    for (voice, backchannel) in [("espeak", "Mm-hmm."), ("piper", "Uh-huh.")] {
        let (turns, log) = spoken_over(voice, backchannel);
        assert_eq!(turns.len(), 1, "{voice} {backchannel}: {turns:?}\n{log}");
        assert_eq!(turns[0]["interrupted"], false, "{}\n{log}", turns[0]);
    }
    // Interrupted while it speaks (turn_done, interrupted), or, on a machine slow enough that
    // the answer has not begun 2.5 s later, before its first word (turn_dropped: no figures).
    let (turns, log) = spoken_over("piper", "Wait, stop.");
    let (last, before) = turns.split_last().expect("a turn");
    assert!(before.len() <= 1, "{turns:?}\n{log}");
    assert!(
        before.iter().all(|t| t["interrupted"] == true),
        "{turns:?}\n{log}"
    );
    assert!(
        words(last["transcript"].as_str().unwrap()).contains(&"stop".into()),
        "{last}\n{log}"
    );
}
