//! Silero VAD on real audio: the speech in jfk.wav is found, silence and noise are not speech.

mod common;

use common::*;
use seesay::stages::vad::{Endpointer, SileroVad, SpeechDetector, VadConfig, VadEvent, FRAME};

fn events(vad: &mut SileroVad, pcm: &[f32]) -> Vec<VadEvent> {
    vad.reset();
    let mut ep = Endpointer::new(&VadConfig::default());
    let mut out = Vec::new();
    for frame in pcm.chunks_exact(FRAME) {
        let p = vad.step(frame).unwrap();
        out.extend(ep.push(frame, p));
    }
    out.extend(ep.flush());
    out
}

#[test]
fn speech_is_found_and_silence_and_noise_are_not() {
    seesay::host::init_onnxruntime(&model_path("onnxruntime")).unwrap();
    let mut vad = SileroVad::load(&model_path("silero-vad")).unwrap();
    let jfk = seesay::media::audio::read_file(&model_path("sample-jfk"), 16_000).unwrap();
    let ev = events(&mut vad, &jfk);
    let starts: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            VadEvent::Start { start } => Some(*start),
            _ => None,
        })
        .collect();
    let ends: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            VadEvent::End { speech_end, .. } => Some(*speech_end),
            _ => None,
        })
        .collect();
    assert!(
        !starts.is_empty() && starts.len() == ends.len(),
        "{starts:?} {ends:?}"
    );
    // Kennedy starts speaking at about 0.3 s and stops at about 10.6 s (of 11.0 s).
    let s = starts[0] as f32 / 16_000.0;
    let e = *ends.last().unwrap() as f32 / 16_000.0;
    assert!((0.0..1.0).contains(&s), "speech starts at {s} s");
    assert!((9.8..11.0).contains(&e), "speech ends at {e} s");

    let silence = vec![0.0f32; 16_000 * 5];
    assert!(events(&mut vad, &silence).is_empty());
    // -30 dBFS white noise (a cheap deterministic generator).
    let noise = white_noise(16_000 * 5, 0.11, 12345);
    assert!(events(&mut vad, &noise).is_empty());
}
