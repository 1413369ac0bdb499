//! `seesay serve` with clients nobody here wrote: the official `openai` Python package and the
//! `wyoming` Python package (installed by scripts/test into a virtual environment named by
//! $SEESAY_TEST_PYTHON), plus raw HTTP and TCP for the bad inputs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
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
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let (http, wyoming) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_seesay"))
            .args([
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
    let metrics = ureq::get(&s.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
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
    let models = ureq::get(&s.url("/v1/models"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(models.contains("whisper-1"), "{models}");
    let metrics = ureq::get(&s.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(metrics.contains("status=\"415\""), "{metrics}");
}

#[test]
fn a_token_is_required_when_auth_is_on() {
    let s = Server::start(&[("SEESAY_API_KEY", "s3cret")]);
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
}
