//! Playback through a real ALSA device: cpal opens ALSA's `default` PCM, which an `.asoundrc`
//! written here routes through ALSA's `file` plugin into a WAV file (over the `null` device, so
//! no sound card is needed). What seesay played must be the speech, at the device's rate.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::*;

#[test]
fn say_plays_through_an_alsa_device() {
    let models = stdout(&seesay(&["models", "list"]));
    let models_dir = models
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("models folder: ")
        .to_string();
    let home = tempfile::tempdir().unwrap();
    let played = home.path().join("played.wav");
    std::fs::write(
        home.path().join(".asoundrc"),
        format!(
            "pcm.!default {{\n type file\n slave.pcm \"null\"\n file \"{}\"\n format \"wav\"\n}}\n",
            played.display()
        ),
    )
    .unwrap();
    let text = "Hello there, this is a test of the speakers.";
    let env = [
        ("HOME", home.path().to_str().unwrap()),
        ("SEESAY_MODELS_DIR", models_dir.as_str()),
    ];
    ok(seesay_env(
        &["say", text],
        &env,
        None,
        Duration::from_secs(60),
    ));

    // The same sentence written to a file, for its length (VITS durations vary by a few percent).
    let direct = home.path().join("direct.wav");
    ok(seesay_env(
        &["say", text, "-o", direct.to_str().unwrap()],
        &env,
        None,
        Duration::from_secs(60),
    ));
    let direct_secs = {
        let r = hound::WavReader::open(&direct).unwrap();
        r.duration() as f64 / r.spec().sample_rate as f64
    };

    let mut r = hound::WavReader::open(&played).expect("ALSA wrote a WAV file");
    let spec = r.spec();
    let frames: Vec<f64> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(|s| s.unwrap() as f64).collect(),
        hound::SampleFormat::Int => {
            let full = (1i64 << (spec.bits_per_sample - 1)) as f64;
            r.samples::<i32>()
                .map(|s| s.unwrap() as f64 / full)
                .collect()
        }
    };
    let ch = spec.channels as usize;
    let last_loud = frames
        .chunks(ch)
        .rposition(|f| f.iter().any(|v| v.abs() > 0.05))
        .expect("the played audio has sound in it");
    let played_secs = last_loud as f64 / spec.sample_rate as f64;
    assert!(
        (played_secs - direct_secs).abs() < 0.25 * direct_secs,
        "played {played_secs:.2} s of speech at {} Hz, the WAV has {direct_secs:.2} s",
        spec.sample_rate
    );
}
