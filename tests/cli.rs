//! The command line as a Unix tool: one-line errors with their cause once, `--version` with the
//! commit, completions and a man page from the argument definitions, secrets masked in
//! `config show`, no colour codes in a log written to a file, no ALSA library noise.

mod common;

use std::time::Duration;

use common::{ok, seesay, seesay_env, stderr, stdout};

#[test]
fn an_error_names_its_cause_once_on_one_line() {
    let o = seesay(&["transcribe", "/nonexistent/question.wav"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("/nonexistent/question.wav"), "{err}");
    assert_eq!(
        lines[0].matches("No such file or directory").count(),
        1,
        "the cause is said once: {err}"
    );
}

#[test]
fn version_names_the_commit_and_the_features() {
    let out = ok(seesay(&["--version"]));
    assert!(out.starts_with("seesay 0."), "{out}");
    assert!(out.contains("features: "), "{out}");
    // Built from a git checkout (the tests always are): the commit HEAD had at build time.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git runs");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(head.len(), 12, "git rev-parse: {head:?}");
    assert!(
        out.contains(&format!("commit {head}")),
        "{out} (HEAD {head})"
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_arguments() {
    let bash = ok(seesay(&["completions", "bash"]));
    assert!(bash.contains("_seesay()"), "{bash}");
    // Subcommands and their flags are in it.
    assert!(bash.contains("transcribe") && bash.contains("--wake-word"));
    let zsh = ok(seesay(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef seesay"), "{zsh}");
    let man = ok(seesay(&["man"]));
    assert!(man.contains(".TH seesay"), "{man}");
    assert!(man.contains("transcribe"), "{man}");
    let o = seesay(&["completions", "tcsh"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn config_show_masks_secrets_and_names_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seesay.toml");
    std::fs::write(
        &file,
        "[server]\napi_key = \"sk-do-not-print\"\n[llm]\nmax_tokens = 99\n",
    )
    .unwrap();
    let out = ok(seesay(&[
        "--config",
        file.to_str().unwrap(),
        "config",
        "show",
    ]));
    assert!(!out.contains("sk-do-not-print"), "{out}");
    assert!(out.contains("api_key = \"********\""), "{out}");
    assert!(out.contains("max_tokens = 99"), "{out}");
    assert!(
        out.starts_with(&format!("# read from {}", file.display())),
        "{out}"
    );
    // The XDG config home is honoured.
    let xdg = dir.path().join("xdg");
    std::fs::create_dir_all(xdg.join("seesay")).unwrap();
    std::fs::write(xdg.join("seesay/config.toml"), "[llm]\nmax_tokens = 77\n").unwrap();
    let o = seesay_env(
        &["config", "show"],
        &[
            ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
            ("SEESAY_CONFIG", ""),
        ],
        None,
        Duration::from_secs(30),
    );
    let out = ok(o);
    assert!(out.contains("max_tokens = 77"), "{out}");
    assert!(out.contains("xdg/seesay/config.toml"), "{out}");
}

#[test]
fn a_log_written_to_a_file_has_no_colour_codes_and_json_is_one_object_a_line() {
    // stderr is a pipe here, as it is when a service's log goes to a file.
    let o = seesay(&["-v", "transcribe", "/nonexistent.wav"]);
    let err = stderr(&o);
    assert!(
        !err.contains('\u{1b}'),
        "ANSI codes in a piped log: {err:?}"
    );
    let o = seesay(&["-v", "--log-format", "json", "models", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let logs = stderr(&o);
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some(), "{l}");
    }
    assert!(!stdout(&o).is_empty());
}

#[test]
fn no_alsa_library_noise_when_a_device_is_probed() {
    // No PulseAudio daemon for this process and no sound card (as on CI and in containers):
    // ALSA's library would print its own "ALSA lib ..." lines while cpal probes the devices.
    let dir = tempfile::tempdir().unwrap();
    let o = seesay_env(
        &["say", "Hello."],
        &[
            ("XDG_RUNTIME_DIR", dir.path().to_str().unwrap()),
            ("PULSE_SERVER", "unix:/nonexistent/pulse"),
        ],
        None,
        Duration::from_secs(120),
    );
    let err = stderr(&o);
    assert!(!err.contains("ALSA lib"), "{err}");
    if !o.status.success() {
        // No speaker: one clear line of seesay's.
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: "), "{err}");
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(probe) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        panic!("systemd-analyze is missing: scripts/setup --test installs systemd");
    };
    assert!(probe.status.success());
    // Checked as installed: the binary where the unit expects it is this build's.
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/seesay.service"),
    )
    .unwrap();
    assert!(unit.contains("DynamicUser=yes") && unit.contains("ProtectSystem=strict"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seesay.service");
    std::fs::write(
        &file,
        unit.replace("/usr/local/bin/seesay", env!("CARGO_BIN_EXE_seesay")),
    )
    .unwrap();
    let o = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
