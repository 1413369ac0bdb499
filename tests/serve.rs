//! `seesay serve` with clients nobody here wrote: the official `openai` Python package and the
//! `wyoming` Python package (installed by scripts/test into a virtual environment named by
//! $SEESAY_TEST_PYTHON), plus raw HTTP and TCP for the bad inputs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `seesay serve`, killed when dropped.
struct Server {
    child: Child,
    http: u16,
    wyoming: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Server {
        Server::start_with(env, "")
    }

    /// With `config` as the configuration file.
    fn start_with(env: &[(&str, &str)], config: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, config).unwrap();
        let (http, wyoming) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_seesay"))
            .args([
                "--config",
                cfg.to_str().unwrap(),
                "serve",
                "--listen",
                &format!("127.0.0.1:{http}"),
                "--wyoming",
                &format!("127.0.0.1:{wyoming}"),
            ])
            .env("RUST_LOG", "seesay=info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let s = Server {
            child,
            http,
            wyoming,
            log,
            _dir: dir,
        };
        let t = Instant::now();
        while ureq::get(&s.url("/healthz")).call().is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "server did not start: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// The body of a GET that must succeed.
    fn get(&self, path: &str) -> String {
        ureq::get(&self.url(path))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Python script with the test environment's interpreter; returns stdout.
fn python(script: &str, args: &[&str]) -> String {
    let py = std::env::var("SEESAY_TEST_PYTHON").expect(
        "SEESAY_TEST_PYTHON is not set: run the tests through scripts/test, which installs the openai and wyoming packages",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.py");
    std::fs::write(&file, script).unwrap();
    let out = Command::new(py).arg(&file).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

const OPENAI_CLIENT: &str = r#"
import base64, sys, concurrent.futures
from openai import OpenAI
base, jfk, cat, out = sys.argv[1:5]
client = OpenAI(base_url=base, api_key="unused")
with open(jfk, "rb") as f:
    print("TRANSCRIPT:", client.audio.transcriptions.create(model="whisper-1", file=f).text)
with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="The weather is sunny today.", response_format="wav") as r:
    r.stream_to_file(out)
uri = "data:image/png;base64," + base64.b64encode(open(cat, "rb").read()).decode()
stream = client.chat.completions.create(model="smollm2-135m", stream=True, messages=[{"role": "user", "content": [
    {"type": "text", "text": "What animal is this?"},
    {"type": "image_url", "image_url": {"url": uri}}]}])
print("CHUNKS:", sum(1 for _ in [print("CHAT:", c.choices[0].delta.content or "") for c in stream]))
def one(_):
    with open(jfk, "rb") as f:
        return client.audio.transcriptions.create(model="whisper-1", file=f).text
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    for t in pool.map(one, range(8)):
        print("PARALLEL:", t)
"#;

#[test]
fn the_openai_python_client_transcribes_speaks_and_chats() {
    let s = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let speech = dir.path().join("speech.wav");
    let out = python(
        OPENAI_CLIENT,
        &[
            &s.url("/v1"),
            model_path("sample-jfk").to_str().unwrap(),
            model_path("sample-chelsea").to_str().unwrap(),
            speech.to_str().unwrap(),
        ],
    );
    let line = |p: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.strip_prefix(p).map(|x| x.trim().to_string()))
            .collect()
    };
    let transcript = &line("TRANSCRIPT:")[0];
    assert!(
        word_errors(&words(JFK), &words(transcript)) <= 1,
        "{transcript}"
    );
    let heard = words(&ok(seesay(&["transcribe", speech.to_str().unwrap()])));
    assert!(
        heard.contains(&"weather".into()) && heard.contains(&"sunny".into()),
        "{heard:?}"
    );
    let chat = line("CHAT:").concat();
    assert!(
        line("CHAT:").len() > 2,
        "the answer was not streamed: {out}"
    );
    assert!(chat.to_lowercase().contains("cat"), "{chat}");
    let parallel = line("PARALLEL:");
    assert_eq!(parallel.len(), 8);
    for t in &parallel {
        assert!(word_errors(&words(JFK), &words(t)) <= 1, "{t}");
    }
    // One process, each model loaded once, eight transcriptions observed.
    assert_eq!(s.log().matches("models loaded").count(), 1, "{}", s.log());
    let metrics = s.get("/metrics");
    assert!(
        metrics.contains("seesay_stage_seconds_count{stage=\"asr\"} 9"),
        "{metrics}"
    );
}

const WYOMING_CLIENT: &str = r#"
import asyncio, sys, wave
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioStart, AudioChunk, AudioStop
from wyoming.tts import Synthesize

async def main(port, jfk):
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Describe().event())
        info = Info.from_event(await c.read_event())
        print("ASR:", info.asr[0].name, "TTS:", info.tts[0].voices[0].name)
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Transcribe(language="en").event())
        with wave.open(jfk, "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            await c.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
            while True:
                data = w.readframes(1024)
                if not data:
                    break
                await c.write_event(AudioChunk(rate=rate, width=width, channels=channels, audio=data).event())
        await c.write_event(AudioStop().event())
        while True:
            ev = await c.read_event()
            if Transcript.is_type(ev.type):
                print("TRANSCRIPT:", Transcript.from_event(ev).text)
                break
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Synthesize(text="Good morning. The garden lights are on.").event())
        audio, rate = b"", 0
        while True:
            ev = await c.read_event()
            if AudioStart.is_type(ev.type):
                rate = AudioStart.from_event(ev).rate
            elif AudioChunk.is_type(ev.type):
                audio += AudioChunk.from_event(ev).audio
            elif AudioStop.is_type(ev.type):
                break
        with wave.open(sys.argv[3], "wb") as w:
            w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate); w.writeframes(audio)
        print("AUDIO:", len(audio))

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"#;

#[test]
fn the_wyoming_python_client_transcribes_and_synthesizes() {
    let s = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let said = dir.path().join("said.wav");
    let out = python(
        WYOMING_CLIENT,
        &[
            &s.wyoming.to_string(),
            model_path("sample-jfk").to_str().unwrap(),
            said.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("ASR: seesay-whisper TTS: piper-joe-medium"),
        "{out}"
    );
    let transcript = out
        .lines()
        .find_map(|l| l.strip_prefix("TRANSCRIPT:"))
        .unwrap();
    assert!(
        word_errors(&words(JFK), &words(transcript)) <= 1,
        "{transcript}"
    );
    let heard = words(&ok(seesay(&["transcribe", said.to_str().unwrap()])));
    for w in ["morning", "garden", "lights"] {
        assert!(heard.contains(&w.into()), "{heard:?}");
    }
}

fn status_of(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[test]
fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let s = Server::start(&[]);
    let transcriptions = s.url("/v1/audio/transcriptions");
    // Wrong content type.
    let (code, body) = status_of(
        ureq::post(&transcriptions)
            .set("Content-Type", "application/json")
            .send_string("{}"),
    );
    assert_eq!(code, 415, "{body}");
    assert!(
        body.contains("\"error\"") && body.contains("multipart/form-data"),
        "{body}"
    );
    // 50 MB over the 25 MB limit.
    let big = vec![b'a'; 50 << 20];
    let (code, body) = status_of(
        ureq::post(&transcriptions)
            .set("Content-Type", "multipart/form-data; boundary=XYZ")
            .send_bytes(&big),
    );
    assert!(code == 413 || code == 0, "{code} {body}");
    // A truncated multipart body.
    let cut = "--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....";
    let (code, body) = status_of(
        ureq::post(&transcriptions)
            .set("Content-Type", "multipart/form-data; boundary=XYZ")
            .send_string(cut),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("multipart"), "{body}");
    // Not audio.
    let form = "--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nhello\r\n--XYZ--\r\n";
    let (code, body) = status_of(
        ureq::post(&transcriptions)
            .set("Content-Type", "multipart/form-data; boundary=XYZ")
            .send_string(form),
    );
    assert_eq!(code, 400, "{body}");
    // Chat with an image URL seesay would have to fetch, and bad JSON.
    let chat = s.url("/v1/chat/completions");
    let remote_image = serde_json::json!({
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://example.com/cat.png"}},
            {"type": "text", "text": "hi"}]}]
    });
    let (code, body) = status_of(
        ureq::post(&chat)
            .set("Content-Type", "application/json")
            .send_string(&remote_image.to_string()),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("data: URI"), "{body}");
    let (code, _) = status_of(
        ureq::post(&chat)
            .set("Content-Type", "application/json")
            .send_string("{\"messages\": ["),
    );
    assert_eq!(code, 400);

    // Wyoming: a header promising more payload than follows closes that connection only.
    let mut sock = TcpStream::connect(("127.0.0.1", s.wyoming)).unwrap();
    sock.write_all(b"{\"type\": \"audio-chunk\", \"payload_length\": 100000}\nshort")
        .unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    // Garbage instead of JSON, too.
    let mut sock = TcpStream::connect(("127.0.0.1", s.wyoming)).unwrap();
    sock.write_all(b"this is not json\n").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest);
    assert!(rest.is_empty());
    let mut sock = TcpStream::connect(("127.0.0.1", s.wyoming)).unwrap();
    sock.write_all(b"{\"type\": \"describe\"}\n").unwrap();
    let mut reader = std::io::BufReader::new(sock);
    let mut header = String::new();
    std::io::BufRead::read_line(&mut reader, &mut header).unwrap();
    assert!(header.contains("\"info\""), "{header}");

    // Still serving.
    let models = s.get("/v1/models");
    assert!(models.contains("whisper-1"), "{models}");
    let metrics = s.get("/metrics");
    assert!(metrics.contains("status=\"415\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_auth_is_on() {
    let s = Server::start_with(
        &[("SEESAY_API_KEY", "s3cret")],
        "[server]\nmax_sessions = 1\nrequest_timeout_s = 3\n",
    );
    assert_eq!(status_of(ureq::get(&s.url("/healthz")).call()).0, 200);
    let (code, body) = status_of(ureq::get(&s.url("/v1/models")).call());
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("bearer token"), "{body}");
    let (code, _) = status_of(
        ureq::get(&s.url("/v1/models"))
            .set("Authorization", "Bearer wrong")
            .call(),
    );
    assert_eq!(code, 401);
    let (code, _) = status_of(
        ureq::get(&s.url("/v1/models"))
            .set("Authorization", "Bearer s3cret")
            .call(),
    );
    assert_eq!(code, 200);
    assert_eq!(status_of(ureq::get(&s.url("/metrics")).call()).0, 401);
    // The page loads without the token; its conversation needs it (as ?token=: browsers cannot
    // set headers on a WebSocket), and only server.max_sessions conversations run at once.
    assert_eq!(status_of(ureq::get(&s.url("/")).call()).0, 200);
    let refused = |r: Result<_, tokio_tungstenite::tungstenite::Error>| match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
        Ok(_) => 101,
    };
    let url = format!("ws://127.0.0.1:{}/v1/conversation", s.http);
    assert_eq!(refused(tokio_tungstenite::connect_async(&url).await), 401);
    let wrong = format!("{url}?token=nope");
    assert_eq!(refused(tokio_tungstenite::connect_async(&wrong).await), 401);
    let mut one = connect(&s, "?token=s3cret").await;
    let mut heard = Heard::default();
    read_until(&mut one, &mut heard, Duration::from_secs(10), |h| {
        !h.of("ready").is_empty()
    })
    .await;
    let again = format!("{url}?token=s3cret");
    assert_eq!(refused(tokio_tungstenite::connect_async(&again).await), 429);
    // A conversation whose client goes quiet is closed (server.request_timeout_s), and the slot
    // comes back.
    read_until(&mut one, &mut heard, Duration::from_secs(20), |h| {
        h.closed.is_some()
    })
    .await;
    let (code, reason) = heard.closed.unwrap();
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("request_timeout_s"), "{reason}");
    drop(one);
    let t = Instant::now();
    while refused(tokio_tungstenite::connect_async(&again).await) != 101 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The conversation over WebSocket.

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a conversation client has received so far.
#[derive(Default)]
struct Heard {
    events: Vec<serde_json::Value>,
    /// Bytes of answer audio per turn.
    audio: std::collections::BTreeMap<u64, usize>,
    closed: Option<(u16, String)>,
}

impl Heard {
    fn of(&self, kind: &str) -> Vec<&serde_json::Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }
    fn turn_done(&self, turn: u64) -> Option<&serde_json::Value> {
        self.of("turn_done").into_iter().find(|e| e["turn"] == turn)
    }
}

async fn connect(s: &Server, query: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{}/v1/conversation{query}", s.http);
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Reads messages into `heard` until `done` says so (or `limit` passes: then it fails).
async fn read_until(
    ws: &mut Ws,
    heard: &mut Heard,
    limit: Duration,
    done: impl Fn(&Heard) -> bool,
) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let t = Instant::now();
    while !done(heard) {
        let left = limit.checked_sub(t.elapsed()).unwrap_or_default();
        let msg = match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(_) => {
                heard.closed.get_or_insert((1006, String::new()));
                break;
            }
            Err(_) => panic!("timed out; received so far: {:#?}", heard.events),
        };
        match msg {
            Message::Text(t) => heard.events.push(serde_json::from_str(&t).unwrap()),
            Message::Binary(b) => {
                let turn = u32::from_le_bytes(b[..4].try_into().unwrap()) as u64;
                *heard.audio.entry(turn).or_default() += b.len() - 4;
            }
            Message::Close(f) => {
                heard.closed = Some(f.map_or((1005, String::new()), |f| {
                    (f.code.into(), f.reason.to_string())
                }));
                break;
            }
            _ => {}
        }
    }
}

/// Streams 16 kHz audio as 16-bit PCM in 100 ms messages (faster than real time).
async fn send_audio(ws: &mut Ws, pcm: &[f32]) {
    use futures_util::SinkExt;
    for chunk in pcm.chunks(1600) {
        let bytes: Vec<u8> = chunk
            .iter()
            .flat_map(|v| ((v.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
            .collect();
        ws.send(tokio_tungstenite::tungstenite::Message::Binary(
            bytes.into(),
        ))
        .await
        .unwrap();
    }
}

/// A client that cannot be understood gets a reason and its connection closed.
async fn garbage_closes(s: &Server, msg: tokio_tungstenite::tungstenite::Message, code: u16) {
    use futures_util::SinkExt;
    let mut ws = connect(s, "").await;
    ws.send(msg).await.unwrap();
    let mut heard = Heard::default();
    read_until(&mut ws, &mut heard, Duration::from_secs(20), |h| {
        h.closed.is_some()
    })
    .await;
    let (got, reason) = heard.closed.clone().unwrap();
    assert_eq!(got, code, "{reason} {:?}", heard.events);
    let errors = heard.of("error");
    assert_eq!(errors.len(), 1, "{:?}", heard.events);
    assert!(!errors[0]["message"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_conversation_answers_sees_and_is_interrupted() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = Server::start_with(&[], "[llm]\nmax_tokens = 48\n");
    let dir = tempfile::tempdir().unwrap();
    let spoken = |text: &str| {
        let (wav, _) = questions(dir.path(), &[(text, 0.4)], 1.2);
        seesay::audio::read_file(&wav, 16_000).unwrap()
    };
    let q1 = spoken("What is the capital of France?");
    let q2 = spoken("Tell me about this animal.");

    let mut ws = connect(&s, "?barge_in=true").await;
    let mut heard = Heard::default();
    read_until(&mut ws, &mut heard, Duration::from_secs(10), |h| {
        !h.of("ready").is_empty()
    })
    .await;
    let ready = heard.of("ready")[0].clone();
    assert_eq!(ready["input_sample_rate"], 16000, "{ready}");
    let out_rate = ready["output_sample_rate"].as_u64().unwrap() as usize;

    // Garbage on other connections closes those only.
    garbage_closes(&s, Message::Text("this is not json".into()), 1007).await;
    garbage_closes(&s, Message::Binary(vec![1, 2, 3].into()), 1007).await;
    garbage_closes(&s, Message::Text("{\"type\": \"dance\"}".into()), 1003).await;
    let broken_image = "{\"type\": \"image\", \"data\": \"data:image/png;base64,AAAA\"}";
    garbage_closes(&s, Message::Text(broken_image.into()), 1007).await;
    // Over server.max_message_mb (4): the server stops reading and closes; the client sees the
    // close, or a reset while it is still sending the rest.
    let mut big = connect(&s, "").await;
    if big
        .send(Message::Binary(vec![0u8; 5 << 20].into()))
        .await
        .is_ok()
    {
        let mut heard = Heard::default();
        read_until(&mut big, &mut heard, Duration::from_secs(20), |h| {
            h.closed.is_some()
        })
        .await;
        let code = heard.closed.unwrap().0;
        assert!(code == 1002 || code == 1006, "{code}");
    }
    drop(big);

    // A camera snapshot: the page's way of showing seesay something.
    let png = std::fs::read(model_path("sample-chelsea")).unwrap();
    let uri = format!("data:image/png;base64,{}", base64_encode(&png));
    let image = serde_json::json!({"type": "image", "data": uri});
    ws.send(Message::Text(image.to_string().into()))
        .await
        .unwrap();
    read_until(&mut ws, &mut heard, Duration::from_secs(30), |h| {
        !h.of("caption").is_empty()
    })
    .await;

    // A question: its transcript, the answer as text and as audio.
    send_audio(&mut ws, &q1).await;
    read_until(&mut ws, &mut heard, Duration::from_secs(60), |h| {
        h.audio.contains_key(&1)
    })
    .await;
    let transcript = heard.of("transcript")[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let w = words(&transcript);
    assert!(
        w.contains(&"capital".to_string()) && w.contains(&"france".to_string()),
        "{transcript}"
    );
    assert!(!heard.of("answer").is_empty());
    assert_eq!(heard.of("speech_started")[0]["turn"], 1);

    // The second question while the first answer is still playing: barge-in.
    send_audio(&mut ws, &q2).await;
    read_until(&mut ws, &mut heard, Duration::from_secs(90), |h| {
        h.turn_done(2).is_some()
    })
    .await;
    assert_eq!(heard.of("speech_started")[1]["turn"], 2);
    let first = heard
        .turn_done(1)
        .expect("turn 1 is reported when interrupted");
    assert_eq!(first["interrupted"], true, "{first}");
    let played = first["answer_audio_s"].as_f64().unwrap();
    let sent = heard.audio[&1] as f64 / 2.0 / out_rate as f64;
    assert!(played < sent, "interrupted at {played} s of {sent} s sent");
    let second = heard.turn_done(2).unwrap();
    eprintln!(
        "turn 1: {first}\nturn 2: {second}\ncaption: {}",
        heard.of("caption")[0]
    );
    assert_eq!(second["interrupted"], false, "{second}");
    assert!(heard.audio[&2] > 0);
    for key in ["transcript_ms", "first_token_ms", "voice_to_voice_ms"] {
        let v = second[key].as_f64().unwrap();
        assert!(v > 0.0 && v < 60_000.0, "{key} = {v}: {second}");
    }
    assert!(heard.closed.is_none(), "{:?}", heard.closed);
    ws.close(None).await.unwrap();

    // Half duplex: while the answer plays (by the server's model of the client's playback),
    // speech is not listened to, so the same interruption is not heard at all.
    let mut ws = connect(&s, "?barge_in=false").await;
    let mut heard = Heard::default();
    send_audio(&mut ws, &q1).await;
    read_until(&mut ws, &mut heard, Duration::from_secs(60), |h| {
        h.audio.contains_key(&1)
    })
    .await;
    send_audio(&mut ws, &q2).await;
    read_until(&mut ws, &mut heard, Duration::from_secs(60), |h| {
        h.turn_done(1).is_some()
    })
    .await;
    let only = heard.turn_done(1).unwrap();
    assert_eq!(only["interrupted"], false, "{only}");
    let spoken = heard.audio[&1] as f64 / 2.0 / out_rate as f64;
    assert!(
        (only["answer_audio_s"].as_f64().unwrap() - spoken).abs() < 0.01,
        "{only}"
    );
    assert_eq!(heard.of("speech_started").len(), 1, "{:?}", heard.events);
    ws.close(None).await.unwrap();

    // The server is still serving, and counted the conversation.
    let metrics = s.get("/metrics");
    assert!(
        metrics.contains("stage=\"conversation_voice_to_voice\""),
        "{metrics}"
    );
    assert!(metrics.contains("seesay_conversations"), "{metrics}");
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------
// The web page, in headless Chromium (Debian's `chromium`, installed by scripts/test) with a WAV
// file as its microphone, driven over the DevTools protocol.

/// A DevTools protocol connection to one page.
struct DevTools {
    ws: Ws,
    id: u64,
}

impl DevTools {
    async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use futures_util::{SinkExt, StreamExt};
        self.id += 1;
        let msg = serde_json::json!({"id": self.id, "method": method, "params": params});
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Text(
                msg.to_string().into(),
            ))
            .await
            .unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .unwrap()
                .unwrap();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(m.to_text().unwrap_or("")) {
                if v["id"] == self.id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; returns its value.
    async fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({"expression": expr, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }
}

/// Where tests leave files for people to look at: $SEESAY_TEST_ARTIFACTS, or test-artifacts/.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("SEESAY_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Kills the browser when the test ends, however it ends.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_talks_in_headless_chromium() {
    let chromium = std::env::var("SEESAY_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let s = Server::start_with(&[], "[llm]\nmax_tokens = 48\n");
    let dir = tempfile::tempdir().unwrap();
    let (question, _) = questions(dir.path(), &[("What is the capital of France?", 1.5)], 5.0);
    let profile = dir.path().join("profile");
    let child = Command::new(&chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            &format!(
                "--use-file-for-fake-audio-capture={}%noloop",
                question.display()
            ),
            "--autoplay-policy=no-user-gesture-required",
            "--remote-debugging-port=0",
            &format!("--user-data-dir={}", profile.display()),
            "--window-size=1000,900",
            &s.url("/?autostart=1"),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("chromium.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {chromium} ({e}): scripts/test installs Debian's chromium")
        });
    let _browser = Browser(child);
    // Chromium writes the DevTools port it picked into the profile.
    let t = Instant::now();
    let port = loop {
        if let Ok(text) = std::fs::read_to_string(profile.join("DevToolsActivePort")) {
            if let Some(p) = text.lines().next().and_then(|l| l.parse::<u16>().ok()) {
                break p;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "chromium did not start: {}",
            std::fs::read_to_string(dir.path().join("chromium.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let pages: serde_json::Value = serde_json::from_str(
        &ureq::get(&format!("http://127.0.0.1:{port}/json/list"))
            .call()
            .unwrap()
            .into_string()
            .unwrap(),
    )
    .unwrap();
    let page = pages
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "page")
        .unwrap_or_else(|| panic!("no page: {pages}"));
    let url = page["webSocketDebuggerUrl"].as_str().unwrap();
    let mut dt = DevTools {
        ws: tokio_tungstenite::connect_async(url).await.unwrap().0,
        id: 0,
    };

    // Wait for the answer: the transcript on the page, its audio received, its figures shown.
    let t = Instant::now();
    let mut snapped = false;
    let state = loop {
        let state: serde_json::Value = serde_json::from_str(
            dt.eval("JSON.stringify(window.seesay)")
                .await
                .as_str()
                .unwrap_or("{}"),
        )
        .unwrap();
        if !snapped && state["status"] == "listening" {
            // The fake camera's picture, through the snapshot button.
            dt.eval("document.getElementById('snap').click()").await;
            snapped = true;
        }
        let answered = state["turns"]
            .as_object()
            .is_some_and(|t| t.values().any(|t| !t["done"].is_null()));
        if answered && state["captions"].as_array().is_some_and(|c| !c.is_empty()) {
            break state;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "no answer on the page: {state}\nserver log:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let shot = dt
        .call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png"}),
        )
        .await;
    let png = base64_decode(shot["data"].as_str().unwrap());
    let path = artifacts().join("web-page.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!(
        "screenshot: {} ({} bytes)\npage state: {state}",
        path.display(),
        png.len()
    );

    let turns = state["turns"].as_object().unwrap();
    let (_, turn) = turns.iter().find(|(_, t)| !t["done"].is_null()).unwrap();
    let heard = words(turn["transcript"].as_str().unwrap());
    assert!(
        heard.contains(&"capital".to_string()) && heard.contains(&"france".to_string()),
        "{turn}"
    );
    assert!(turn["audioBytes"].as_u64().unwrap() > 10_000, "{turn}");
    assert!(
        !turn["answer"].as_str().unwrap().trim().is_empty(),
        "{turn}"
    );
    let shown = dt
        .eval("document.querySelector('.turn .figures').textContent")
        .await;
    assert!(shown.as_str().unwrap().contains("first audio"), "{shown}");
    assert_eq!(state["errors"], serde_json::json!([]), "{state}");
    assert!(png.starts_with(b"\x89PNG"));
    // Stop: the page hangs up and the server ends the conversation.
    assert_eq!(
        s.get("/metrics").matches("seesay_conversations 1").count(),
        1
    );
    dt.eval("document.getElementById('talk').click()").await;
    let t = Instant::now();
    while !s.get("/metrics").contains("seesay_conversations 0")
        || dt.eval("window.seesay.status").await != "disconnected"
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the conversation did not end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}
