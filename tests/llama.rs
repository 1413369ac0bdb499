//! The llama.cpp engine and the remote backend against a real `llama-server` (built by
//! scripts/setup from the pinned llama.cpp source): answers, the quality bench's first three
//! questions, the candle engine beside it, a server that dies and is restarted, and one that is
//! never left behind when seesay is killed.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{free_port, Killed};
use common::*;
use seesay::stages::llm::remote::RemoteModel;
use seesay::stages::llm::{ChatModel, Finish, LlmConfig, Message, Role};
use seesay::stages::Cancel;

fn llama_server() -> String {
    ok(seesay(&["bench", "--print-llama-server"]))
        .trim()
        .to_string()
}

#[test]
fn the_default_model_answers_three_spoken_questions() {
    let out = ok(seesay_env(
        &["bench", "--stage", "quality", "--questions", "3"],
        &[],
        None,
        Duration::from_secs(180),
    ));
    assert!(out.contains("quality: 3 of 3 right"), "{out}");
}

#[test]
fn the_candle_engine_answers_too() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("candle.toml");
    std::fs::write(
        &cfg,
        "[llm]\nengine = \"candle\"\nmodel = \"smollm2-135m\"\n\
         system_prompt = \"You are a concise assistant. Answer factual questions directly.\"\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = ok(seesay(&[
        "--config",
        cfg,
        "chat",
        "What is the capital of France?",
    ]));
    assert!(out.contains("Paris"), "{out}");
}

#[test]
fn the_remote_backend_talks_to_a_real_llama_server() {
    let port = free_port();
    let server = Killed(
        Command::new(llama_server())
            .args(["--model", model_path("smollm2-135m").to_str().unwrap()])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--ctx-size", "2048", "--threads", "2", "--no-webui"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("llama-server starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while ureq::get(&format!("{base}/health")).call().is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "llama-server never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cfg = LlmConfig {
        backend: "openai".into(),
        base_url: format!("{base}/v1"),
        system_prompt: "You are a concise assistant. Answer factual questions directly.".into(),
        max_tokens: 32,
        ..LlmConfig::default()
    };
    let mut m = RemoteModel::new(&cfg).unwrap();
    let msgs = [
        Message::new(Role::System, cfg.system_prompt.clone()),
        Message::new(Role::User, "What is the capital of France?"),
    ];
    let mut chunks = Vec::new();
    let (answer, finish) = m
        .generate(&msgs, &Cancel::new(), &mut |c| chunks.push(c.to_string()))
        .unwrap();
    assert!(answer.contains("Paris"), "{answer}");
    assert!(chunks.len() > 1, "the answer came in one piece: {chunks:?}");
    assert_eq!(chunks.concat().trim(), answer);
    assert!(matches!(finish, Finish::Stop | Finish::Length));
    // llama-server reports its own timings, which the benchmark reads.
    let s = m.stats().expect("timings from llama-server");
    assert!(s.prefilled > 10 && s.generated > 2, "{s:?}");
    // Cancelling stops reading the stream at once: after the chunk that cancelled, only the word
    // in progress is flushed.
    let cancel = Cancel::new();
    let mut n = 0;
    let (_, finish) = m
        .generate(&msgs, &cancel, &mut |_| {
            n += 1;
            cancel.cancel();
        })
        .unwrap();
    assert_eq!(finish, Finish::Cancelled);
    assert!(n <= 2, "{n} chunks after cancelling");
    drop(server);
}

/// The pids of `pid`'s children (started by any of its threads).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie is dead too.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
}

/// Waits for `seesay serve` to have started its llama-server; returns the server's pid.
fn llama_child(seesay: u32) -> u32 {
    let t = Instant::now();
    loop {
        let found = children(seesay).into_iter().find(|&c| {
            std::fs::read_to_string(format!("/proc/{c}/comm"))
                .is_ok_and(|n| n.trim() == "llama-server")
        });
        if let Some(pid) = found {
            return pid;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no llama-server child"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn chat(port: u16) -> String {
    let body = r#"{"messages": [{"role": "user", "content": "What is the capital of France?"}]}"#;
    ureq::post(&format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .set("Content-Type", "application/json")
        .send_string(body)
        .map(|r| r.into_string().unwrap())
        .unwrap_or_else(|e| panic!("chat failed: {e}"))
}

#[test]
fn a_dead_llama_server_is_restarted_and_none_outlives_seesay() {
    let port = free_port();
    let mut serve = Killed(
        Command::new(env!("CARGO_BIN_EXE_seesay"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--wyoming",
                "off",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = serve.0.id();
    let t = Instant::now();
    while ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .is_err()
    {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "seesay serve never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(chat(port).contains("Paris"));

    // The engine dies: the next request waits for its restart and is answered.
    let first = llama_child(pid);
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let t = Instant::now();
    while alive(first) {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(chat(port).contains("Paris"));
    let second = llama_child(pid);
    assert_ne!(first, second);

    // seesay is killed outright: the kernel takes its llama-server with it.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = serve.0.wait();
    let t = Instant::now();
    while alive(second) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "llama-server {second} outlived seesay"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The prompt with the tools described is kept warm in a slot of its own, a piece at a time
/// (`warm_up_piece`), beside the plain one: questions after either prompt compute only their
/// own tokens.
#[test]
fn a_second_prompt_is_prefilled_in_pieces_beside_the_first() {
    use seesay::stages::llm::Engine;
    let cfg = LlmConfig {
        model: "smollm2-135m".into(),
        max_tokens: 2,
        ..LlmConfig::default()
    };
    let store = seesay::store::Store::from_config(&Default::default()).unwrap();
    let engine = Engine::load(&cfg, &store, 1).unwrap();
    let mut llm = engine.chat(&cfg).unwrap();
    let turns = [
        Message::new(Role::User, "Hello there."),
        Message::new(Role::Assistant, "Hello! How can I help?"),
    ];
    let with = |system: String| {
        let mut m = vec![Message::new(Role::System, system)];
        m.extend(turns.iter().cloned());
        m
    };
    let plain = with("You are a brief assistant.".into());
    let tools = with(format!(
        "You are a brief assistant with tools. {}",
        (1..=40)
            .map(|i| format!("Tool number {i} sets timer {i} when asked."))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    llm.warm_up(&plain).unwrap();
    let mut pieces = 1;
    while !llm.warm_up_piece(&tools, 32).unwrap() {
        pieces += 1;
        assert!(pieces < 100, "the prompt never came to an end");
    }
    assert!(
        pieces >= 5,
        "a 400-token prompt in pieces of 32: {pieces} pieces"
    );
    // Both stay cached: a question after either computes only its own tokens.
    for system in [&tools, &plain] {
        let mut msgs = system.clone();
        msgs.push(Message::new(Role::User, "What is two plus two?"));
        llm.generate(&msgs, &Cancel::new(), &mut |_| {}).unwrap();
        let s = llm.stats().unwrap();
        assert!(
            s.prompt_tokens > 40 && s.prefilled < 25,
            "only the question is computed: {s:?}"
        );
    }
}
