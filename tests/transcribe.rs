//! `seesay transcribe` with the real Whisper models that setup fetches.

mod common;

use std::path::Path;

use common::*;

fn write_wav(path: &Path, samples: &[f32], rate: u32, channels: u16, bits: u16) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let full = ((1i64 << (bits - 1)) - 1) as f32;
    for s in samples {
        for _ in 0..channels {
            w.write_sample((s * full) as i32).unwrap();
        }
    }
    w.finalize().unwrap();
}

fn jfk_at(rate: u32) -> Vec<f32> {
    seesay::media::audio::read_file(&model_path("sample-jfk"), rate).unwrap()
}

fn assert_jfk(text: &str) {
    assert_eq!(words(text), words(JFK), "transcript: {text}");
}

#[test]
fn jfk_word_for_word_with_tiny_en() {
    let jfk = model_path("sample-jfk");
    assert_jfk(&ok(seesay(&["transcribe", jfk.to_str().unwrap()])));
}

#[test]
fn jfk_word_for_word_with_base() {
    let jfk = model_path("sample-jfk");
    let out = ok(seesay(&[
        "transcribe",
        "--model",
        "whisper-base",
        jfk.to_str().unwrap(),
    ]));
    assert_jfk(&out);
}

#[test]
fn jfk_word_for_word_with_beam_search_and_a_bad_beam_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("beam.toml");
    let (cfg_arg, jfk) = (cfg.to_str().unwrap(), model_path("sample-jfk"));
    std::fs::write(&cfg, "[asr]\nbeam_size = 4\ntemperature_fallback = true\n").unwrap();
    let args = ["transcribe", "--config", cfg_arg, jfk.to_str().unwrap()];
    assert_jfk(&ok(seesay(&args)));
    std::fs::write(&cfg, "[asr]\nbeam_size = 0\n").unwrap();
    assert_clear_error(&args, &[], "asr.beam_size = 0: use 1 (greedy) to 8");
}

/// `seesay bench --stage hearing` on two of its questions (six recordings, espeak-ng's): each
/// transcribed, its words scored; and the recogniser's settings are the config's.
#[test]
fn the_hearing_benchmark_scores_the_words_it_heard() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("beam.toml");
    std::fs::write(&cfg, "[asr]\nbeam_size = 2\n").unwrap();
    let mut args = vec!["bench", "--stage", "hearing", "--questions", "2", "--json"];
    for config in [None, cfg.to_str()] {
        if let Some(path) = config {
            args.extend(["--config", path]);
        }
        let out = ok(seesay(&args));
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
        let h = &v["hearing"];
        assert_eq!(
            (&h["questions"], &h["recordings"]),
            (&2.into(), &6.into()),
            "{v}"
        );
        // "What is the opposite of cold?" and "Which animal has the longest neck?" at three paces.
        assert_eq!(h["words"], 3 * 12, "{v}");
        assert_eq!(h["beam_size"], if config.is_some() { 2 } else { 1 }, "{v}");
        // Scored against what was said: espeak-ng's voice is hard for tiny.en (greedy, it
        // heard "What is the opposite uncalled?" and 22 of the 36 words wrong here), yet not
        // nothing.
        assert!(h["word_errors"].as_u64().unwrap() < 36, "{v}");
        for m in h["misheard"].as_array().unwrap() {
            let said = m["said"].as_str().unwrap();
            assert!(said.starts_with("What is the opposite") || said.starts_with("Which"));
            assert!(
                m["heard"].is_string() && m["pace"].as_f64().unwrap() > 0.8,
                "{v}"
            );
        }
        assert!(h["transcribe_ms"]["median"].as_f64().unwrap() > 0.0, "{v}");
    }
}

#[test]
fn json_srt_and_vtt_carry_timed_segments() {
    let jfk = model_path("sample-jfk");
    let jfk = jfk.to_str().unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&ok(seesay(&["transcribe", "-f", "json", jfk]))).unwrap();
    assert!((json["duration"].as_f64().unwrap() - 11.0).abs() < 0.1);
    let segs = json["segments"].as_array().unwrap();
    assert!(!segs.is_empty());
    let mut last_end = 0.0;
    for s in segs {
        let (a, b) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(a >= last_end - 0.01 && b > a && b <= 11.1, "{s}");
        last_end = b;
    }
    assert_jfk(json["text"].as_str().unwrap());
    let srt = ok(seesay(&["transcribe", "-f", "srt", jfk]));
    assert!(srt.starts_with("1\n00:00:00,000 --> 00:00:"), "{srt}");
    let vtt = ok(seesay(&["transcribe", "-f", "vtt", jfk]));
    assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> "), "{vtt}");
}

#[test]
fn any_rate_channel_count_and_bit_depth() {
    let dir = tempfile::tempdir().unwrap();
    let low = dir.path().join("jfk-8k-stereo.wav");
    write_wav(&low, &jfk_at(8_000), 8_000, 2, 16);
    let hi = dir.path().join("jfk-48k-24bit.wav");
    write_wav(&hi, &jfk_at(48_000), 48_000, 1, 24);
    let out = ok(seesay(&[
        "transcribe",
        low.to_str().unwrap(),
        hi.to_str().unwrap(),
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    // Telephone-band audio may lose a word; full band must be exact.
    let low_text = lines[0].split_once(": ").unwrap().1;
    assert!(
        word_errors(&words(JFK), &words(low_text)) <= 2,
        "8 kHz: {low_text}"
    );
    assert_jfk(lines[1].split_once(": ").unwrap().1);
}

#[test]
fn long_input_streams_through_windows() {
    // Four copies of jfk.wav with 3 s pauses: 56 s, so it crosses the 30 s window.
    let jfk = jfk_at(16_000);
    let mut long = Vec::new();
    for _ in 0..4 {
        long.extend_from_slice(&jfk);
        long.extend(std::iter::repeat_n(0.0, 48_000));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.wav");
    write_wav(&path, &long, 16_000, 1, 16);
    let json: serde_json::Value = serde_json::from_str(&ok(seesay(&[
        "transcribe",
        "-f",
        "json",
        path.to_str().unwrap(),
    ])))
    .unwrap();
    let text = words(json["text"].as_str().unwrap()).join(" ");
    assert_eq!(
        text.matches("ask not what your country can do for you")
            .count(),
        4,
        "{text}"
    );
    let last = json["segments"].as_array().unwrap().last().unwrap()["end"]
        .as_f64()
        .unwrap();
    assert!(last > 45.0 && last <= 56.1, "last segment ends at {last}");
}

#[test]
fn silence_and_faint_noise_give_no_text() {
    let dir = tempfile::tempdir().unwrap();
    let silence = dir.path().join("silence.wav");
    write_wav(&silence, &vec![0.0; 16_000 * 5], 16_000, 1, 16);
    // Faint hiss at about -50 dBFS (deterministic pseudo-random).
    let mut x = 12345u32;
    let hiss: Vec<f32> = (0..16_000 * 5)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((x >> 16) as f32 / 32768.0 - 1.0) * 0.005
        })
        .collect();
    let noise = dir.path().join("hiss.wav");
    write_wav(&noise, &hiss, 16_000, 1, 16);
    let out = ok(seesay(&[
        "transcribe",
        silence.to_str().unwrap(),
        noise.to_str().unwrap(),
    ]));
    for line in out.lines() {
        assert!(
            line.split_once(": ").unwrap().1.trim().is_empty(),
            "invented text: {out}"
        );
    }
}

#[test]
fn bad_audio_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    std::fs::write(p("empty.wav"), b"").unwrap();
    let jfk = std::fs::read(model_path("sample-jfk")).unwrap();
    std::fs::write(p("truncated.wav"), &jfk[..30]).unwrap();
    // A JPEG's start of image, JFIF header and some entropy-coded bytes.
    let mut jpeg = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
    ];
    jpeg.extend((0..2000u32).map(|i| (i * 31 % 251) as u8));
    std::fs::write(p("photo.jpg"), &jpeg).unwrap();
    std::fs::copy(p("photo.jpg"), p("photo-named.wav")).unwrap();
    write_wav(Path::new(&p("zero.wav")), &[], 16_000, 1, 16);

    assert_clear_error(&["transcribe", &p("missing.wav")], &[], "No such file");
    assert_clear_error(&["transcribe", &p("empty.wav")], &[], "the file is empty");
    assert_clear_error(&["transcribe", &p("truncated.wav")], &[], "truncated.wav");
    assert_clear_error(
        &["transcribe", &p("photo.jpg")],
        &[],
        "not a recognised audio file",
    );
    assert_clear_error(
        &["transcribe", &p("photo-named.wav")],
        &[],
        "photo-named.wav",
    );
    assert_clear_error(
        &["transcribe", &p("zero.wav")],
        &[],
        "contains no audio samples",
    );
}

#[test]
fn language_and_model_mistakes_get_clear_errors() {
    let jfk = model_path("sample-jfk");
    let jfk = jfk.to_str().unwrap();
    assert_clear_error(&["transcribe", "-l", "fr", jfk], &[], "English-only");
    assert_clear_error(
        &["transcribe", "-m", "whisper-base", "-l", "xx", jfk],
        &[],
        "unknown language",
    );
    assert_clear_error(
        &["transcribe", "-m", "no-such-model", jfk],
        &[],
        "unknown model",
    );
    // A file that is not a Whisper model at all.
    assert_clear_error(
        &["transcribe", "-m", jfk, jfk],
        &[],
        "cannot load Whisper model",
    );
}

#[test]
fn missing_and_corrupt_models_say_how_to_fix_them() {
    let jfk = model_path("sample-jfk");
    let jfk = jfk.to_str().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let env = [("SEESAY_MODELS_DIR", empty.path().to_str().unwrap())];
    assert_clear_error(
        &["transcribe", jfk],
        &env,
        "seesay models fetch whisper-tiny.en",
    );

    let bad = tempfile::tempdir().unwrap();
    let src = model_path("whisper-tiny.en");
    let dst = bad.path().join(src.file_name().unwrap());
    let mut bytes = std::fs::read(&src).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 64].iter_mut().for_each(|b| *b ^= 0x5A);
    std::fs::write(&dst, bytes).unwrap();
    let env = [("SEESAY_MODELS_DIR", bad.path().to_str().unwrap())];
    assert_clear_error(&["transcribe", jfk], &env, "is corrupt");
    assert_clear_error(
        &["models", "verify", "whisper-tiny.en"],
        &env,
        "failed verification",
    );
}

#[test]
fn flac_ogg_and_mp3_decode() {
    // sox (installed by scripts/setup) encodes jfk.wav; seesay must decode each back to the words.
    let jfk = model_path("sample-jfk");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, extra) in [
        ("jfk.flac", vec![]),
        ("jfk.ogg", vec!["-r", "44100", "-c", "2"]),
        ("jfk.mp3", vec!["-r", "22050"]),
    ] {
        let out = dir.path().join(name);
        let status = std::process::Command::new("sox")
            .arg(&jfk)
            .args(&extra)
            .arg(&out)
            .status()
            .expect("sox runs (scripts/setup installs it)");
        assert!(status.success(), "sox could not write {name}");
        files.push(out.to_str().unwrap().to_string());
    }
    let mut args = vec!["transcribe"];
    args.extend(files.iter().map(String::as_str));
    let out = ok(seesay(&args));
    assert_eq!(out.lines().count(), 3, "{out}");
    for line in out.lines() {
        let (name, text) = line.split_once(": ").unwrap();
        assert_eq!(words(text), words(JFK), "{name}: {text}");
    }
}

/// A speculative transcript is stopped as soon as it no longer matters (the recogniser is then
/// free for the one that does), and one that is not stopped is exactly the plain transcript.
#[test]
fn a_transcription_stops_when_cancelled_and_only_then() {
    use seesay::stages::asr::{AsrConfig, AsrError, Transcriber, WhisperModel};
    use seesay::stages::Cancel;
    let cfg = AsrConfig::default();
    let mut model = WhisperModel::load(&model_path("whisper-tiny.en"), &cfg).unwrap();
    let jfk = jfk_at(16_000);
    let plain = model.transcribe(&jfk, 0.0).unwrap();
    let go_on = Cancel::new();
    let spoken = model.transcribe_unless(&jfk, 0.0, &go_on).unwrap();
    assert_eq!(format!("{spoken:?}"), format!("{plain:?}"));
    // Cancelled before it begins, and while it runs (11 s of audio take far longer than 5 ms).
    let stop = Cancel::new();
    stop.cancel();
    assert!(matches!(
        model.transcribe_unless(&jfk, 0.0, &stop),
        Err(AsrError::Stopped)
    ));
    let stop = Cancel::new();
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            stop.cancel();
        })
    };
    let t = std::time::Instant::now();
    let stopped = model.transcribe_unless(&jfk, 0.0, &stop);
    stopper.join().unwrap();
    assert!(
        matches!(stopped, Err(AsrError::Stopped)),
        "{stopped:?} after {:?}",
        t.elapsed()
    );
    // And the model is whole afterwards.
    let again = model.transcribe(&jfk, 0.0).unwrap();
    assert_eq!(format!("{again:?}"), format!("{plain:?}"));
}
