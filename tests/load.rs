//! `seesay serve` under load, in real time: two WebSocket conversations at once (one with
//! barge-in), each asking four questions 8 s apart, while another client keeps sending
//! transcription, speech and streamed chat requests, and a third conversation is refused. Every
//! admitted conversation must get at least three answered turns, every turn heard must end
//! (answered or dropped with a reason), the conversation past `server.max_sessions` gets 429
//! with Retry-After, and every API request must succeed or be refused (429/503), never fail.
//!
//! Two, not four: on two cores, four conversations beside the API load got their first audio
//! 5-12 s after they stopped speaking (measured 2026-12-05), and a barge-in conversation's
//! next question, 8 s on, then cut its unanswered turn: past capacity the server must refuse,
//! not slow everyone down.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const QUESTIONS: [&str; 4] = [
    "What is the capital of Italy?",
    "How many legs does a spider have?",
    "What do bees make?",
    "What is the largest ocean on Earth?",
];

/// The four questions, each starting 8 s after the one before, then 6 s of quiet.
fn recording(dir: &std::path::Path) -> Vec<f32> {
    let mut pcm: Vec<f32> = Vec::new();
    for (i, q) in QUESTIONS.iter().enumerate() {
        let sub = dir.join(format!("q{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let (wav, _) = questions(&sub, &[(q, 0.0)], 0.0);
        let start = (1.0 + 8.0 * i as f64) * 16_000.0;
        pcm.resize(start as usize, 0.0);
        pcm.extend(seesay::media::audio::read_file(&wav, 16_000).unwrap());
    }
    pcm.resize(pcm.len() + 6 * 16_000, 0.0);
    pcm
}

/// Turns of one conversation that were heard (a transcript came) and that ended (done or
/// dropped), as the client saw them.
#[derive(Default)]
struct Turns {
    heard: HashSet<u64>,
    ended: HashSet<u64>,
    answered: usize,
}

impl Turns {
    fn see(&mut self, e: &serde_json::Value) {
        let turn = e["turn"].as_u64().unwrap_or(0);
        match e["type"].as_str() {
            Some("transcript") => {
                self.heard.insert(turn);
            }
            Some("turn_done") => {
                self.answered += 1;
                self.ended.insert(turn);
            }
            Some("turn_dropped") => {
                self.ended.insert(turn);
            }
            _ => {}
        }
    }

    /// Every question answered, or at least every turn heard has ended.
    fn settled(&self) -> bool {
        self.answered >= QUESTIONS.len() || self.heard.is_subset(&self.ended)
    }
}

/// One conversation: streams `pcm` in real time (20 ms messages) while collecting what the
/// server says; returns the events.
async fn converse(s: &Server, query: &str, pcm: Vec<f32>) -> Vec<serde_json::Value> {
    let ws = connect(s, query).await;
    let (mut tx, mut rx) = ws.split();
    let turns = Arc::new(Mutex::new(Turns::default()));
    let seen = turns.clone();
    let reader = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(Ok(msg)) = rx.next().await {
            if let Message::Text(t) = msg {
                let e = serde_json::from_str::<serde_json::Value>(&t).unwrap();
                seen.lock().unwrap().see(&e);
                events.push(e);
            }
        }
        events
    });
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for chunk in pcm.chunks(320) {
        tick.tick().await;
        let bytes: Vec<u8> = chunk
            .iter()
            .flat_map(|v| ((v.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
            .collect();
        if tx.send(Message::Binary(bytes.into())).await.is_err() {
            break;
        }
    }
    // The last questions of four conversations end within a second and two cores answer them
    // one after another: each turn heard gets the time to end (done or dropped), up to 40 s; one
    // that never does is a vanished turn, which the caller reports.
    let t = Instant::now();
    while !turns.lock().unwrap().settled() && t.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tx.send(Message::Close(None)).await;
    tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the server closed the conversation")
        .unwrap()
}

/// Transcription, speech and streamed chat requests, one every 2 s until `done`; returns
/// (succeeded, refused, failed) with the failures' statuses.
fn api_load(s_http: u16, done: Arc<AtomicBool>) -> (usize, usize, Vec<String>) {
    let base = format!("http://127.0.0.1:{s_http}");
    let jfk = std::fs::read(model_path("sample-jfk")).unwrap();
    let (mut ok, mut refused, mut failed) = (0, 0, Vec::new());
    let mut i = 0;
    while !done.load(Ordering::Acquire) {
        let r = match i % 3 {
            0 => {
                let boundary = "XyZ";
                let mut body = format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"jfk.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
                )
                .into_bytes();
                body.extend(&jfk);
                body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
                ureq::post(&format!("{base}/v1/audio/transcriptions"))
                    .set("Content-Type", &format!("multipart/form-data; boundary={boundary}"))
                    .send_bytes(&body)
            }
            1 => ureq::post(&format!("{base}/v1/audio/speech"))
                .set("Content-Type", "application/json")
                .send_string(r#"{"input": "The weather is fine today."}"#),
            _ => ureq::post(&format!("{base}/v1/chat/completions"))
                .set("Content-Type", "application/json")
                .send_string(
                    r#"{"stream": true, "messages": [{"role": "user", "content": "Name a color."}]}"#,
                ),
        };
        match r {
            Ok(resp) => match resp.into_string() {
                Ok(body) if !body.contains("\"error\"") => ok += 1,
                Ok(body) => failed.push(body.chars().take(200).collect()),
                Err(e) => failed.push(e.to_string()),
            },
            Err(ureq::Error::Status(429 | 503, _)) => refused += 1,
            Err(e) => failed.push(e.to_string()),
        }
        i += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
    (ok, refused, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conversations_up_to_capacity_are_answered_and_one_more_is_refused() {
    let s = Server::start_with(&[], "[server]\nmax_sessions = 2\n[llm]\nmax_tokens = 32\n");
    let dir = tempfile::tempdir().unwrap();
    let pcm = recording(dir.path());
    let done = Arc::new(AtomicBool::new(false));
    let api = {
        let (port, done) = (s.http, done.clone());
        std::thread::spawn(move || api_load(port, done))
    };
    let started = Instant::now();
    let mut convs = Vec::new();
    for (i, query) in ["?barge_in=true", "?barge_in=false"].iter().enumerate() {
        // The conversations start 0.4 s apart, so their questions do not all end at once.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (s, pcm) = (&s, pcm.clone());
        convs.push(async move {
            let events = converse(s, query, pcm).await;
            (i, query.to_string(), events)
        });
    }
    // Once both are talking, a third is refused at once, and told when to try again.
    let third = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let url = format!("ws://127.0.0.1:{}/v1/conversation", s.http);
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
                resp.status().as_u16(),
                resp.headers().get("retry-after").cloned(),
            ),
            Err(e) => panic!("the third conversation: {e}"),
            Ok(_) => (101, None),
        }
    };
    let (results, third) = tokio::join!(futures_util::future::join_all(convs), third);
    assert_eq!(third.0, 429, "a conversation past server.max_sessions");
    assert_eq!(third.1.as_ref().and_then(|v| v.to_str().ok()), Some("2"));
    done.store(true, Ordering::Release);
    let (ok, refused, failed) = api.join().unwrap();
    let mut report = Vec::new();
    for (i, query, events) in &results {
        let turns: Vec<String> = events
            .iter()
            .filter(|e| e["type"] == "turn_done")
            .map(|e| format!("{:?} -> {:?}", e["transcript"], e["answer"]))
            .collect();
        report.push(format!(
            "conversation {i} ({query}): {} turns: {turns:?}",
            turns.len()
        ));
    }
    let mut v2v: Vec<f64> = results
        .iter()
        .flat_map(|(_, _, events)| events.iter())
        .filter_map(|e| e["voice_to_voice_ms"].as_f64())
        .collect();
    v2v.sort_by(f64::total_cmp);
    eprintln!("voice to voice, ms: {v2v:.0?}");
    eprintln!(
        "{}\nAPI: {ok} answered, {refused} refused, {} failed; {:.0} s",
        report.join("\n"),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    for (i, _, events) in &results {
        let mut turns = Turns::default();
        events.iter().for_each(|e| turns.see(e));
        let vanished: Vec<&u64> = turns.heard.difference(&turns.ended).collect();
        assert!(
            vanished.is_empty(),
            "conversation {i}: turns {vanished:?} were heard and never ended: {events:?}"
        );
        let answered = turns.answered;
        let log = s.log();
        let tail: Vec<&str> = log.lines().rev().take(400).collect();
        assert!(
            answered >= 3,
            "conversation {i} answered {answered} turns:\n{}\nits events: {events:?}\nthe server's log, last lines first:\n{}",
            report.join("\n"),
            tail.join("\n")
        );
    }
    assert!(failed.is_empty(), "API requests failed: {failed:?}");
    assert!(ok >= 3, "only {ok} API requests were answered");
}
