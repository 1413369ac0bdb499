//! Echo cancellation on open speakers, through real audio devices: a PulseAudio server of the
//! test's own whose "room" (a loopback, 50 ms late, at 60 % level, with a little noise) brings
//! seesay's answer back into its microphone. With echo cancellation, barge-in is on and a long
//! answer plays to its end; a question spoken over it still interrupts it and is answered.
//! Without echo cancellation, seesay hears itself during the answer.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pulse::Pulse;
use common::*;

/// The room: what the speaker plays comes back into the microphone, late, softer, over noise.
fn room(pulse: &Pulse, dir: &Path) -> std::process::Child {
    let loaded = pulse
        .cmd("pactl")
        .args([
            "load-module",
            "module-loopback",
            "source=spk.monitor",
            "sink=mic",
            "latency_msec=50",
        ])
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{loaded:?}");
    let inputs = String::from_utf8(
        pulse
            .cmd("pactl")
            .args(["list", "short", "sink-inputs"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for line in inputs.lines() {
        let id = line.split_whitespace().next().unwrap();
        pulse
            .cmd("pactl")
            .args(["set-sink-input-volume", id, "60%"])
            .status()
            .unwrap();
    }
    let noise = dir.join("noise.wav");
    seesay::media::wav::write_wav(&noise, &white_noise(16_000 * 120, 0.01, 3), 16_000).unwrap();
    pulse
        .cmd("paplay")
        .args(["--device=mic", noise.to_str().unwrap()])
        .spawn()
        .unwrap()
}

/// Runs `seesay run --live` with `config`, asks the long question, and (if given) speaks
/// `interjection` `after` seconds later; returns the per-turn metrics and the log.
fn conversation(
    config: &str,
    interjection: Option<(&str, f64)>,
) -> (Vec<serde_json::Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let ask = |name: &str, text: &str| {
        let wav = dir.path().join(name);
        ok(seesay(&["say", text, "-o", wav.to_str().unwrap()]));
        wav
    };
    let question = ask("q1.wav", "Tell me about the history of France.");
    let second = interjection.map(|(text, after)| (ask("q2.wav", text), after));
    let pulse = Pulse::start(dir.path());
    let mut noise = room(&pulse, dir.path());
    let m = dir.path().join("m.jsonl");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut env = pulse.seesay_env();
    // Info, not debug: the child's stderr is read only when it ends, and a full pipe would stall it.
    env.push(("RUST_LOG".into(), "seesay=info".into()));
    let turns = if second.is_some() { "2" } else { "1" };
    let recording = pulse.recordings();
    let (m2, cfg2) = (m.display().to_string(), cfg.display().to_string());
    let run = std::thread::spawn(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args = [
            "--config",
            &cfg2,
            "run",
            "--live",
            "--max-turns",
            turns,
            "--metrics",
            &m2,
        ];
        seesay_env(&args, &env, None, Duration::from_secs(150))
    });
    // The question as soon as seesay has opened the microphone (after loading its models).
    pulse.wait_for_recording(recording);
    let play = |wav: &Path| {
        assert!(pulse
            .cmd("paplay")
            .args(["--device=mic", wav.to_str().unwrap()])
            .status()
            .unwrap()
            .success());
    };
    play(&question);
    if let Some((wav, after)) = &second {
        std::thread::sleep(Duration::from_secs_f64(*after));
        play(wav);
    }
    let output = run.join().unwrap();
    let _ = noise.kill();
    let _ = noise.wait();
    let log = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{log}");
    (metrics(&m), log)
}

const LONG: &str = "[llm]\nmax_tokens = 50\n[tts]\nnoise_scale = 0.3\nnoise_w = 0.3\n";

#[test]
fn with_echo_cancellation_a_long_answer_plays_to_its_end() {
    let (turns, log) = conversation(LONG, None);
    assert!(log.contains("echo cancellation on"), "{log}");
    assert_eq!(turns.len(), 1, "{log}");
    let t = &turns[0];
    assert_eq!(t["interrupted"], false, "{t}");
    assert!(t["answer_audio_s"].as_f64().unwrap() >= 10.0, "{t}");
    eprintln!(
        "speech during the answer, with echo cancellation: {}",
        t["speech_during_answer"]
    );
    assert_eq!(t["speech_during_answer"], 0, "{t}");
}

#[test]
fn without_echo_cancellation_seesay_hears_itself() {
    let config = format!("{LONG}[pipeline]\necho_cancel = false\nbarge_in = true\n");
    let (turns, log) = conversation(&config, None);
    assert!(!log.contains("echo cancellation on"), "{log}");
    // Its own voice comes back as speech during the answer: it hears itself (and either
    // interrupts itself or recognises its own words).
    let t = &turns[0];
    eprintln!("without echo cancellation: {t}");
    assert!(t["speech_during_answer"].as_u64().unwrap() >= 1, "{t}");
}

#[test]
fn with_echo_cancellation_a_question_over_the_answer_interrupts_it() {
    let (turns, log) = conversation(LONG, Some(("How many legs does a spider have?", 5.0)));
    assert_eq!(turns.len(), 2, "{log}");
    // The log (info) says what the speech over the answer was heard as, and taken for.
    assert_eq!(turns[0]["interrupted"], true, "{}\n{log}", turns[0]);
    let heard = words(turns[1]["transcript"].as_str().unwrap());
    assert!(heard.contains(&"spider".into()), "{heard:?}");
    let answer = words(turns[1]["answer"].as_str().unwrap());
    assert!(
        answer.contains(&"eight".into()) || answer.contains(&"8".into()),
        "{}",
        turns[1]
    );
}
