//! The language model: the real default GGUF model, bad model files, and the remote backend
//! against a small fake OpenAI-compatible server written here.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use seesay::stages::llm::{ChatModel, Finish, LlmConfig, LlmError, Message, Role};
use seesay::stages::Cancel;

#[test]
fn the_default_model_knows_the_capital_of_france() {
    let out = ok(seesay(&["chat", "What is the capital of France?"]));
    assert!(out.contains("Paris"), "answer: {out}");
}

#[test]
fn cancelling_stops_within_one_token() {
    let cfg = LlmConfig {
        max_tokens: 200,
        system_prompt: "You are a concise assistant. Answer factual questions directly.".into(),
        ..LlmConfig::default()
    };
    let mut model =
        seesay::stages::llm::local::LocalModel::load(&model_path("smollm2-135m"), &cfg).unwrap();
    let msgs = [
        Message::new(Role::System, cfg.system_prompt.clone()),
        Message::new(
            Role::User,
            "Write a long story about a dragon who learns to cook.",
        ),
    ];
    let cancel = Cancel::new();
    let mut seen = String::new();
    let mut at_cancel = None;
    let (answer, finish) = model
        .generate(&msgs, &cancel, &mut |chunk| {
            seen.push_str(chunk);
            if at_cancel.is_none() && seen.split_whitespace().count() >= 5 {
                cancel.cancel();
                at_cancel = Some(seen.clone());
            }
        })
        .unwrap();
    assert_eq!(finish, Finish::Cancelled);
    let at_cancel = at_cancel.expect("the story ran past five words");
    // At most one more token after the cancel: at most one more (partial) word.
    let extra = answer.split_whitespace().count() - at_cancel.split_whitespace().count();
    assert!(
        extra <= 1,
        "{extra} more words after cancelling: {at_cancel:?} -> {answer:?}"
    );
    // The stage is free at once: the next question is answered normally.
    let (again, finish) = model
        .generate(
            &msgs[..1]
                .iter()
                .cloned()
                .chain([Message::new(Role::User, "What is 2 + 2?")])
                .collect::<Vec<_>>(),
            &Cancel::new(),
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(finish, Finish::Stop, "{again}");
}

#[test]
fn bad_prompts_and_models_get_clear_errors() {
    assert_clear_error(&["chat", "   "], &[], "empty prompt");
    assert_clear_error(&["chat", "--max-tokens", "0", "hi"], &[], "llm.max_tokens");
    assert_clear_error(&["chat", "--temperature=-3", "hi"], &[], "llm.temperature");
    let dir = tempfile::tempdir().unwrap();
    // A well-formed GGUF file of an architecture seesay does not run.
    let path = dir.path().join("mamba.gguf");
    let arch = candle_core::quantized::gguf_file::Value::String("mamba".into());
    let mut f = std::fs::File::create(&path).unwrap();
    candle_core::quantized::gguf_file::write(&mut f, &[("general.architecture", &arch)], &[])
        .unwrap();
    drop(f);
    let p = path.to_str().unwrap();
    // candle, the in-process engine, knows its architectures; llama.cpp's server says why it
    // cannot load the file (and is not restarted forever).
    let candle = dir.path().join("candle.toml");
    std::fs::write(&candle, "[llm]\nengine = \"candle\"\n").unwrap();
    let candle = candle.to_str().unwrap();
    assert_clear_error(
        &["--config", candle, "chat", "-m", p, "hi"],
        &[],
        "architecture 'mamba' is not supported",
    );
    assert_clear_error(
        &["chat", "-m", p, "hi"],
        &[],
        "llama-server could not start",
    );
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF but not really").unwrap();
    for engine in [&["--config", candle][..], &[]] {
        let args: Vec<&str> = engine
            .iter()
            .copied()
            .chain(["chat", "-m", junk.to_str().unwrap(), "hi"])
            .collect();
        assert_clear_error(&args, &[], "not a GGUF file");
    }
    // A prompt longer than the context window is refused, not truncated.
    let long = "word ".repeat(3000);
    assert_clear_error(&["chat", &long], &[], "context window");
}

fn remote(base_url: String, timeout_s: u64) -> seesay::stages::llm::remote::RemoteModel {
    let cfg = LlmConfig {
        backend: "openai".into(),
        base_url,
        remote_model: "tiny".into(),
        timeout_s,
        ..LlmConfig::default()
    };
    seesay::stages::llm::remote::RemoteModel::new(&cfg).unwrap()
}

#[test]
fn remote_backend_streams_server_sent_events() {
    let (tx, rx) = std::sync::mpsc::channel();
    let url = common::fake_server(move |sock, body| {
        tx.send(body).unwrap();
        let mut out = String::from("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
        for piece in ["The cap", "ital is", " Par", "is."] {
            out +=
                &format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{piece}\"}}}}]}}\n\n");
        }
        out += "data: [DONE]\n\n";
        sock.write_all(out.as_bytes()).unwrap();
    });
    let mut m = remote(url, 5);
    let mut chunks = Vec::new();
    let (answer, finish) = m
        .generate(
            &[Message::new(Role::User, "Capital of France?")],
            &Cancel::new(),
            &mut |c| chunks.push(c.to_string()),
        )
        .unwrap();
    assert_eq!(answer, "The capital is Paris.");
    assert_eq!(finish, Finish::Stop);
    assert_eq!(chunks, ["The ", "capital ", "is ", "Paris."]);
    let sent: serde_json::Value = serde_json::from_str(&rx.recv().unwrap()).unwrap();
    assert_eq!(sent["model"], "tiny");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["messages"][0]["role"], "user");
}

/// Asks the remote backend "hi" and expects an error.
fn ask_failing(url: String, timeout_s: u64) -> LlmError {
    remote(url, timeout_s)
        .generate(
            &[Message::new(Role::User, "hi")],
            &Cancel::new(),
            &mut |_| {},
        )
        .unwrap_err()
}

#[test]
fn remote_errors_and_hangs_are_clear() {
    let url = common::fake_server(|sock, _| {
        let body = r#"{"error":{"message":"model overloaded","type":"server_error"}}"#;
        let head = format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        sock.write_all((head + body).as_bytes()).unwrap();
    });
    let err = ask_failing(url, 5);
    assert!(
        matches!(err, LlmError::Remote { .. })
            && err.to_string().contains("HTTP 500: model overloaded"),
        "{err}"
    );

    let url = common::fake_server(|_sock, _| std::thread::sleep(Duration::from_secs(5)));
    let t = std::time::Instant::now();
    let err = ask_failing(url, 1);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "gave up after {:?}",
        t.elapsed()
    );
    assert!(
        err.to_string().contains("timed out") || err.to_string().contains("Timeout"),
        "{err}"
    );
}

#[test]
fn chat_speaks_its_answer_as_it_streams() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("answer.wav").display().to_string();
    let printed = ok(seesay(&[
        "chat",
        "--speak-to",
        &wav,
        "What is the capital of France?",
    ]));
    let heard = ok(seesay(&["transcribe", &wav]));
    assert!(words(&printed).contains(&"paris".to_string()), "{printed}");
    assert!(words(&heard).contains(&"paris".to_string()), "{heard}");
}
