//! The fuzz targets (fuzz/targets.rs) over the committed seed corpus and every input a fuzzer
//! ever crashed on (fuzz/regressions/TARGET/): none may panic. `scripts/fuzz` does the fuzzing.

#![allow(dead_code)] // targets.rs also serves the fuzz binaries

include!("../fuzz/targets.rs");

use std::path::Path;

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn every_seed_and_every_past_crash_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut seeds = 0;
    for (name, target) in TARGETS {
        let here = files(&root.join("corpus").join(name));
        assert!(!here.is_empty(), "fuzz/corpus/{name} has no seeds");
        seeds += here.len();
        for file in here
            .into_iter()
            .chain(files(&root.join("regressions").join(name)))
        {
            let data = std::fs::read(&file).unwrap();
            let caught = std::panic::catch_unwind(|| target(&data));
            assert!(caught.is_ok(), "{name} panicked on {}", file.display());
        }
    }
    assert!(seeds >= TARGETS.len());
}

/// The seeds are real examples of their formats, so fuzzing starts from inputs that parse.
#[test]
fn the_seeds_parse() {
    let seed = |t: &str, f: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus")
                .join(t)
                .join(f),
        )
        .unwrap()
    };
    let pcm = seesay::media::audio::decode_bytes(
        seed("audio_decode", "pcm16-stereo.wav"),
        "a.wav",
        16_000,
    )
    .unwrap();
    assert_eq!(pcm.len(), 400); // 200 frames at 8 kHz
    let t = seesay::store::import_ct2::read_ct2(&seed("ct2_model", "tiny.bin")[..]).unwrap();
    assert_eq!(t["encoder/conv1/weight"].data, vec![1.0, 2.0, 1.5, 2.0]);
    let g = seed("gguf_model", "tiny.gguf");
    let (_, tensors) =
        seesay::store::ggml::read_gguf(&mut std::io::Cursor::new(g), Path::new("t.gguf")).unwrap();
    assert_eq!(tensors.len(), 1);
    let p = seesay::store::import_pth::read_legacy_pth_from(
        &seed("pth_model", "tiny.pth")[..],
        Path::new("t.pth"),
    )
    .unwrap();
    assert_eq!(p.len(), 2);
    let image = seed("ws_message", "image.json");
    seesay::server::client::client_message(std::str::from_utf8(&image).unwrap(), 64).unwrap();
    let req = serde_json::from_slice(&seed("chat_request", "image.json")).unwrap();
    let (msgs, images) = seesay::server::openai::chat_messages(&req).unwrap();
    assert_eq!((msgs.len(), images.len()), (1, 1));
}
