//! Outputs that never destroy: a symlink given as the output stays a symlink (its target gets the
//! audio), `-` pipes a WAV to standard output and reads one from standard input, and a reader
//! that closes the pipe early ends seesay quietly.

mod common;

use std::io::{BufRead, Read};
use std::process::{Command, Stdio};

use common::*;

#[test]
fn a_symlink_given_as_output_stays_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.wav");
    let link = dir.path().join("link.wav");
    std::fs::write(&real, b"old").unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    ok(seesay(&[
        "say",
        "The capital of France is Paris.",
        "-o",
        link.to_str().unwrap(),
    ]));
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_symlink(), "the symlink was replaced");
    let heard = words(&ok(seesay(&["transcribe", real.to_str().unwrap()])));
    assert!(heard.contains(&"paris".to_string()), "{heard:?}");
    // A regular file is replaced whole, and nothing is left beside it.
    ok(seesay(&[
        "say",
        "Good morning.",
        "-o",
        real.to_str().unwrap(),
    ]));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_dash_pipes_speech_into_transcription() {
    let bin = env!("CARGO_BIN_EXE_seesay");
    let mut say = Command::new(bin)
        .args(["say", "The weather is sunny today.", "-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let transcribe = Command::new(bin)
        .args(["transcribe", "-"])
        .stdin(say.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(say.wait().unwrap().success());
    assert!(
        transcribe.status.success(),
        "{}",
        String::from_utf8_lossy(&transcribe.stderr)
    );
    let heard = words(&String::from_utf8_lossy(&transcribe.stdout));
    for w in ["weather", "sunny", "today"] {
        assert!(heard.contains(&w.to_string()), "{heard:?}");
    }
}

#[test]
fn a_closed_pipe_ends_seesay_without_a_panic() {
    let mut list = Command::new(env!("CARGO_BIN_EXE_seesay"))
        .args(["models", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(list.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is gone now (as `head -1` would be).
    let status = list.wait().unwrap();
    let mut err = String::new();
    list.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(first.starts_with("models folder:"), "{first}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        matches!(status.code(), Some(0) | Some(141)),
        "{status:?} {err}"
    );
}

/// A disk that fills up while the WAV is written: a clear error, and no partial file (the old
/// file, if there was one, is kept). The full disk is a file-size limit (`ulimit -f`), which
/// fails writes past it the way a full disk does; and /dev/full, a device written through.
#[test]
fn a_full_disk_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("answer.wav");
    std::fs::write(&out, b"the previous answer").unwrap();
    let text = "This answer is far too long for the little room left on the disk. ".repeat(8);
    let run = Command::new("sh")
        .arg("-c")
        // An ignored SIGXFSZ stays ignored across exec: writes then fail with EFBIG.
        .arg("ulimit -f 64; trap '' XFSZ; exec \"$0\" say \"$1\" -o \"$2\"")
        .args([env!("CARGO_BIN_EXE_seesay"), &text, out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = stderr(&run);
    assert!(
        err.contains("cannot write") && err.contains("answer.wav"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous answer");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["answer.wav"], "a partial file was left");
    let full = seesay(&["say", "Hello there.", "-o", "/dev/full"]);
    assert!(!full.status.success());
    let err = stderr(&full);
    assert!(err.contains("/dev/full") && err.contains("space"), "{err}");
}
