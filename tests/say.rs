//! `seesay say` with the real Piper voice, checked by ear: Whisper transcribes what it said.

mod common;

use common::*;

const SENTENCES: [&str; 6] = [
    "The quick brown fox jumps over the lazy dog.",
    "Can you tell me where the nearest train station is?",
    "There are 12 months in a year and 7 days in a week.",
    "Please turn off the lights in the kitchen before you go to bed.",
    "After a long day at the office, she walked slowly through the quiet park, listening to the birds and thinking about the summer holidays she had planned with her family.",
    "The meeting starts at 10 o'clock tomorrow morning.",
];

#[test]
fn round_trip_word_error_rate_is_at_most_ten_percent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut errors, mut total) = (0, 0);
    let mut report = String::new();
    for (i, s) in SENTENCES.iter().enumerate() {
        let wav = dir.path().join(format!("s{i}.wav"));
        ok(seesay(&["say", s, "-o", wav.to_str().unwrap()]));
        let heard = ok(seesay(&["transcribe", wav.to_str().unwrap()]));
        let (r, h) = (words(s), words(&heard));
        let e = word_errors(&r, &h);
        report += &format!("{e}/{}: {s:?} -> {:?}\n", r.len(), heard.trim());
        errors += e;
        total += r.len();
    }
    let wer = errors as f64 / total as f64;
    eprintln!("{report}WER {:.1}% ({errors}/{total})", wer * 100.0);
    assert!(
        wer <= 0.10,
        "word error rate {:.1}% > 10%:\n{report}",
        wer * 100.0
    );
}

#[test]
fn say_reads_standard_input_and_writes_a_wav() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("stdin.wav");
    let o = seesay_env(
        &["say", "-o", wav.to_str().unwrap(), "--rate", "1.5"],
        &[],
        Some("Hello there. How are you today?"),
        std::time::Duration::from_secs(120),
    );
    ok(o);
    let r = hound::WavReader::open(&wav).unwrap();
    assert_eq!(r.spec().sample_rate, 22_050);
    let secs = r.duration() as f64 / 22_050.0;
    assert!((0.8..4.0).contains(&secs), "{secs} s of speech");
}

#[test]
fn say_refuses_bad_input_clearly() {
    for (args, stdin, expect) in [
        (
            vec!["say", "-o", "/tmp/x.wav"],
            Some("   "),
            "nothing to say",
        ),
        (
            vec!["say", "...", "-o", "/tmp/x.wav"],
            None,
            "nothing to say",
        ),
        (
            vec!["say", "hi", "--rate", "0", "-o", "/tmp/x.wav"],
            None,
            "out of range",
        ),
        (
            vec![
                "say",
                "hi",
                "--voice",
                "/nope/voice.onnx",
                "-o",
                "/tmp/x.wav",
            ],
            None,
            "/nope/voice.onnx",
        ),
    ] {
        assert_clear_error_in(&args, &[], stdin, expect);
    }
}

#[test]
fn a_missing_onnxruntime_is_an_error_not_a_hang() {
    let env = [("ORT_DYLIB_PATH", "/nope/libonnxruntime.so")];
    assert_clear_error(
        &["say", "hi", "-o", "/tmp/x.wav"],
        &env,
        "onnxruntime library /nope/libonnxruntime.so not found",
    );
}
