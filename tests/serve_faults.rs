//! `seesay serve` when things go wrong: SIGTERM in the middle of a turn, a second signal, readers
//! too slow for the audio, clients that hang up mid-answer or mid-upload, a model file removed
//! while serving.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::server::*;
use common::*;

/// The count of a stage in the server's metrics (0 before its first use).
fn stage_count(s: &Server, stage: &str) -> u64 {
    let m = s.get("/metrics");
    let key = format!("seesay_stage_seconds_count{{stage=\"{stage}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn active(s: &Server) -> u64 {
    let m = s.get("/metrics");
    m.lines()
        .find_map(|l| l.strip_prefix("seesay_active_sessions "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Starts a streamed speech request on a raw socket, reads its first bytes, and returns the
/// socket without reading more: a reader too slow for the audio.
fn slow_speech(s: &Server, text: &str) -> TcpStream {
    let body = serde_json::json!({"input": text, "response_format": "pcm"}).to_string();
    let mut sock = TcpStream::connect(("127.0.0.1", s.http)).unwrap();
    // A small receive window, so what the kernels buffer is small beside the answer.
    let size: libc::c_int = 4096;
    let set = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0);
    write!(
        sock,
        "POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut first = [0u8; 1024];
    sock.read_exact(&mut first).unwrap();
    assert!(
        first.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    sock
}

/// Waits until `ok` holds (up to `limit`).
fn eventually(limit: Duration, what: &str, ok: impl Fn() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn slow_and_vanishing_clients_hold_nothing() {
    let s = Server::start_with(
        &[],
        "[server]\nmax_concurrent = 2\nrequest_timeout_s = 60\n",
    );
    let text = "This is one more sentence for a reader that does not keep up. ".repeat(60);
    // A reader too slow for the audio: synthesis waits for it (a few sentences ahead at most)
    // instead of filling memory with the whole answer.
    let slow = slow_speech(&s, &text);
    let sentences = 60;
    let t = Instant::now();
    let mut last = stage_count(&s, "tts");
    loop {
        std::thread::sleep(Duration::from_secs(3));
        let now = stage_count(&s, "tts");
        assert!(
            now < sentences,
            "all {now} sentences were synthesised for a stalled reader"
        );
        if now <= last + 1 {
            break; // stalled with the reader
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "synthesis never waited: {now}"
        );
        last = now;
    }
    // The stream holds its slot: with a second one open, a third request is refused, while
    // health and metrics still answer.
    let slow2 = slow_speech(&s, &text);
    let full = ureq::get(&s.url("/v1/models")).call();
    let Err(ureq::Error::Status(429, resp)) = full else {
        panic!("not refused: {full:?}")
    };
    assert_eq!(resp.header("Retry-After"), Some("2"));
    assert_eq!(status_of(ureq::get(&s.url("/healthz")).call()).0, 200);
    // Said once in the log, however many are refused.
    let _ = ureq::get(&s.url("/v1/models")).call();
    assert_eq!(s.log().matches("over capacity").count(), 1, "{}", s.log());
    // Both hang up mid-answer: the slots come back and the work stops.
    drop((slow, slow2));
    eventually(Duration::from_secs(10), "slots back", || {
        status_of(ureq::get(&s.url("/v1/models")).call()).0 == 200
    });
    let c = stage_count(&s, "tts");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        stage_count(&s, "tts") <= c + 1,
        "synthesis went on for nobody"
    );
    // Mid-upload: a body promised but cut short.
    let mut sock = TcpStream::connect(("127.0.0.1", s.http)).unwrap();
    write!(
        sock,
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: 1000000\r\n\r\n--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
    )
    .unwrap();
    sock.write_all(&[0u8; 10_000]).unwrap();
    drop(sock);
    // Mid-answer of a streamed chat: the first chunk read, then gone.
    let body = serde_json::json!({"messages": [{"role": "user", "content": "Count from one to one hundred."}], "stream": true, "max_tokens": 200}).to_string();
    let mut sock = TcpStream::connect(("127.0.0.1", s.http)).unwrap();
    write!(
        sock,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 256];
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    sock.read_exact(&mut first).unwrap();
    drop(sock);
    // Nothing is left running: only the metrics request itself is active.
    eventually(Duration::from_secs(15), "all requests over", || {
        active(&s) == 1
    });
    let (code, _) = status_of(
        ureq::post(&s.url("/v1/audio/speech"))
            .set("Content-Type", "application/json")
            .send_string("{\"input\": \"Still here.\"}"),
    );
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_turn_finishes_it_and_exits_0() {
    let mut s = Server::start_with(
        &[],
        "[llm]\nmax_tokens = 48\n[server]\nshutdown_timeout_s = 30\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let (wav, _) = questions(dir.path(), &[("What is the capital of France?", 0.4)], 1.2);
    let q = seesay::media::audio::read_file(&wav, 16_000).unwrap();
    let mut ws = connect(&s, "").await;
    let mut heard = Heard::default();
    read_until(&mut ws, &mut heard, Duration::from_secs(10), |h| {
        !h.of("ready").is_empty()
    })
    .await;
    send_audio(&mut ws, &q).await;
    read_until(&mut ws, &mut heard, Duration::from_secs(60), |h| {
        !h.of("transcript").is_empty()
    })
    .await;
    let turn = heard.of("transcript")[0]["turn"].as_u64().unwrap();
    let t = Instant::now();
    s.signal(libc::SIGTERM);
    read_until(&mut ws, &mut heard, Duration::from_secs(60), |h| {
        h.closed.is_some()
    })
    .await;
    // The turn in progress was answered, the client told, the conversation closed (going away).
    assert!(!heard.of("shutting_down").is_empty(), "{:?}", heard.events);
    let done = heard
        .turn_done(turn)
        .unwrap_or_else(|| panic!("{:?}", heard.events));
    assert!(!done["answer"].as_str().unwrap().is_empty(), "{done}");
    assert!(heard.audio.get(&turn).is_some_and(|&n| n > 10_000));
    assert_eq!(heard.closed.as_ref().unwrap().0, 1001, "{:?}", heard.closed);
    let status = s
        .wait_exit(Duration::from_secs(40))
        .expect("the server did not exit");
    assert_eq!(status.code(), Some(0), "{}", s.log());
    assert!(t.elapsed() < Duration::from_secs(35), "{:?}", t.elapsed());
    assert!(s.log().contains("shutting down"), "{}", s.log());
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut s = Server::start_with(&[], "[server]\nshutdown_timeout_s = 120\n");
    // Work that will not finish by itself: a stream nobody reads.
    let _slow = slow_speech(&s, &"A sentence nobody will hear. ".repeat(100));
    s.signal(libc::SIGINT);
    // The first signal waits for the work (up to two minutes)...
    assert!(s.wait_exit(Duration::from_secs(2)).is_none(), "{}", s.log());
    // ...new requests are no longer taken...
    eventually(Duration::from_secs(5), "the port closed", || {
        TcpStream::connect(("127.0.0.1", s.http)).is_err()
    });
    // ...and the second one ends it now.
    let t = Instant::now();
    s.signal(libc::SIGINT);
    let status = s.wait_exit(Duration::from_secs(5)).expect("still running");
    assert!(!status.success());
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_file_removed_while_serving_fails_that_conversation_only() {
    // A models folder of links to the real models, so one can be taken away.
    let dir = tempfile::tempdir().unwrap();
    let real = model_path("silero-vad");
    // The store keeps each kind in a folder of its own: models/vad/silero_vad.onnx.
    let store = real.parent().unwrap().parent().unwrap().to_path_buf();
    for entry in std::fs::read_dir(&store).unwrap().flatten() {
        std::os::unix::fs::symlink(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let relative = real.strip_prefix(&store).unwrap();
    let top = dir.path().join(relative.components().next().unwrap());
    let cfg = format!(
        "[models]\ndir = \"{}\"\n[server]\nmax_sessions = 2\n",
        dir.path().display()
    );
    let s = Server::start_with(&[], &cfg);
    // The first conversation has the VAD loaded at start; the next loads its own: remove it.
    let mut first = connect(&s, "").await;
    let mut heard = Heard::default();
    read_until(&mut first, &mut heard, Duration::from_secs(10), |h| {
        !h.of("ready").is_empty()
    })
    .await;
    std::fs::remove_file(&top).unwrap();
    let mut second = connect(&s, "").await;
    let mut heard = Heard::default();
    read_until(&mut second, &mut heard, Duration::from_secs(20), |h| {
        h.closed.is_some()
    })
    .await;
    let errors = heard.of("error");
    assert_eq!(errors.len(), 1, "{:?}", heard.events);
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("vad") || message.contains("VAD"),
        "{message}"
    );
    assert_eq!(heard.closed.unwrap().0, 1011);
    // The server goes on: requests, and the first conversation.
    let models = s.get("/v1/models");
    assert!(models.contains("whisper-1"));
    let (code, _) = status_of(
        ureq::post(&s.url("/v1/audio/speech"))
            .set("Content-Type", "application/json")
            .send_string("{\"input\": \"Still here.\"}"),
    );
    assert_eq!(code, 200);
    send_audio(&mut first, &[0.0; 16_000]).await;
}
